//! The reference forward pass over the canonical layout, reproducing HF transformers' ViT/DeiT
//! numerics (`modeling_vit.py` / `modeling_deit.py` in eager mode): patch embedding, class (and distillation) token, position
//! embeddings (optionally interpolated), pre-LN blocks, eager attention with softmax in f32,
//! GELU, final LayerNorm, then the head or pooler. f16/bf16 weights are computed in f32.
//!
//! Performance: [`Model::load`] borrows f32 weights straight from the memory-mapped
//! safetensors file (nothing is copied; other dtypes are converted once), every sample's tokens
//! are stacked into one matrix so each linear layer is one product, the products are split over
//! output columns and attention over (sample, head) pairs on a thread pool of
//! [`Model::set_threads`] threads (default: one per available core), and the activation
//! buffers are allocated once per call. When the pool leaves a core free, the first pass maps the
//! weights file in on that core ahead of the layers that read it (`Model::start_prefetch`).

use std::path::Path;

use ndarray::{Array2, Array3};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, ViTConfig};
use crate::source::{self, Limits, OpenOptions, TensorSource};
use crate::tensor::DType;

mod budget;
pub(crate) mod interp;
mod load;
pub(crate) mod ops;
mod output;
mod relpos;
mod run;
#[cfg(test)]
mod side_props;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod tiny;
mod weights;

pub use interp::PosInterp;
pub use output::Output;
use weights::{Weights, P};

/// Options for [`Model::forward`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions {
    /// Accept inputs whose size differs from `image_size`, resampling the position grid.
    pub interpolate_pos_encoding: bool,
    /// Which resampling algorithm to use.
    pub pos_interp: PosInterp,
    /// The budgets a forward pass is checked against before it allocates
    /// ([`Limits::forward_tokens`], [`Limits::forward_bytes`]).
    pub limits: Limits,
    /// Which output [`verify_model`](crate::verify_model) compares (`None`: logits when the
    /// model has a head, else `last_hidden_state`); see [`ForwardOutput::select`].
    pub compare: Option<Output>,
    /// Skip what only `last_hidden_state` needs: when every other output reads only the leading
    /// tokens (the class token, and DeiT's distillation token: ViT and DeiT heads and poolers,
    /// BEiT pooling the class token, DINOv2's pooler, CLIP), the last layer runs for those
    /// tokens alone (about 1/12 of a ViT-B pass less) and [`ForwardOutput::last_hidden_state`] is
    /// empty (`[B, 0, D]`). No effect on models whose outputs read every token (mean pooling,
    /// MAP heads, DINOv2's classifier, masked-image modelling, no head at all).
    pub heads_only: bool,
}

/// What a forward pass produced.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// `[B, T, D]` after the final LayerNorm.
    pub last_hidden_state: Array3<f32>,
    /// `[B, K]` for models with a head (DeiT with teacher: the average of both heads).
    pub logits: Option<Array2<f32>>,
    /// DeiT with teacher: the class-token head alone.
    pub cls_logits: Option<Array2<f32>>,
    /// DeiT with teacher: the distillation-token head alone.
    pub distillation_logits: Option<Array2<f32>>,
    /// `[B, R]` pooler output when the model has a pooler: ViT's `tanh(dense(x[:, 0]))`;
    /// BEiT's `LayerNorm(mean(x[:, 1:]))` with mean pooling, else its class token.
    pub pooler_output: Option<Array2<f32>>,
    /// `[B, N, V]` masked-image-modelling logits over every patch token
    /// (`BeitForMaskedImageModeling`).
    pub token_logits: Option<Array3<f32>>,
    /// `[B, projection_dim]` CLIP's projected image embedding.
    pub image_embeds: Option<Array2<f32>>,
}

/// A linear layer's parameters: weight `[out, in]`, optional bias `[out]`.
#[derive(Clone, Copy)]
struct Linear {
    w: P,
    b: Option<P>,
    out: usize,
    inp: usize,
}

/// A LayerNorm's weight and bias.
#[derive(Clone, Copy)]
struct Norm {
    w: P,
    b: P,
}

struct Layer {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
    /// Layer scale of the attention and MLP branches (`lambda_1`, `lambda_2`).
    lambda: Option<[P; 2]>,
    /// The layer's own relative position bias table.
    relative: Option<P>,
}

/// SigLIP's multi-head attention pooling head.
#[derive(Clone, Copy)]
struct MapHead {
    /// The probe `[1, 1, D]`.
    probe: P,
    /// The packed q/k/v projection `[3·D, D]` and its bias `[3·D]`.
    in_w: P,
    in_b: P,
    out: Linear,
    norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// A canonical model loaded for the reference forward pass (weights in f32).
///
/// ```
/// use vit_convert::{forward::ForwardOptions, verify::F32Array, Model};
/// let model = Model::load("fixtures/convert/dino_backbone/hf")?;
/// let x = F32Array::read_npy("fixtures/convert/dino_backbone/io/input.npy")?;
/// let out = model.forward(x.as_nchw()?, &ForwardOptions::default())?;
/// // A headless backbone: no logits; the primary output is last_hidden_state [B, T, D].
/// assert!(out.logits.is_none());
/// assert_eq!(out.last_hidden_state.shape()[2], model.config().hidden_size);
/// # Ok::<(), vit_convert::Error>(())
/// ```
pub struct Model {
    config: ViTConfig,
    weights: Weights,
    /// The class token (none in SigLIP).
    cls: Option<P>,
    dist: Option<P>,
    /// Absolute position embeddings (`pos_rows` rows), when the model has them.
    pos: Option<P>,
    pos_rows: usize,
    patch: Linear,
    /// DINOv2's register tokens `[1, R, D]`.
    registers: Option<P>,
    /// CLIP's LayerNorm on the embeddings.
    pre_norm: Option<Norm>,
    /// CLIP's LayerNorm on the pooled class token.
    post_norm: Option<Norm>,
    /// CLIP's projection (`image_embeds`).
    projection: Option<Linear>,
    /// SigLIP's pooling head.
    map_head: Option<MapHead>,
    /// The relative position bias table every layer shares.
    shared_relative: Option<P>,
    layers: Vec<Layer>,
    /// The final LayerNorm (none with mean pooling).
    ln: Option<Norm>,
    /// ViT's pooler (dense + tanh on the class token).
    pooler: Option<Linear>,
    /// BEiT's pooler (LayerNorm of the mean patch token).
    pooler_norm: Option<Norm>,
    heads: Vec<Linear>,
    /// The masked-image-modelling head: its LayerNorm and `lm_head`.
    lm_head: Option<(Norm, Linear)>,
    /// The least precise dtype the weights were stored in (see [`Model::weight_dtype`]).
    weight_dtype: DType,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    /// Maps the weights file in ahead of the first pass that leaves a core free (see
    /// [`Model::start_prefetch`]); taken by the first that does.
    prefetch: std::sync::Mutex<Option<crate::mmap::Prefetch>>,
}

/// The least precise of float `dtypes` by significand bits (bf16 < f16 < f32 < f64); F32 when
/// there is none.
fn least_precise(dtypes: impl Iterator<Item = DType>) -> DType {
    let bits = |d: DType| match d {
        DType::BF16 => 8,
        DType::F16 => 11,
        DType::F64 => 53,
        _ => 24,
    };
    dtypes
        .filter(|d| d.is_float())
        .min_by_key(|&d| bits(d))
        .unwrap_or(DType::F32)
}

/// Threads used when none are set: one per available core.
/// The most threads a forward pass spawns (`--threads`, `VIT_CONVERT_THREADS` and
/// [`Model::set_threads`] are capped to it): a huge count spawned threads for minutes.
pub const MAX_THREADS: usize = 256;

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses the text of a model folder's `config.json`, as [`Model::load`] does.
pub(crate) fn parse_config(text: &str) -> Result<ViTConfig> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Error::from(ErrorKind::Config {
            reason: e.to_string(),
        })
    })?;
    ViTConfig::from_json(&v)
}

impl Model {
    /// Loads `model.safetensors` and `config.json` from a folder written by `convert`
    /// (or by transformers' `save_pretrained`). f32 weights stay in the memory-mapped file and
    /// are read in place.
    ///
    /// # Errors
    /// I/O, format and config errors; a tensor whose shape disagrees with the config.
    pub fn load(dir: impl AsRef<Path>) -> Result<Model> {
        Model::load_with(dir, &OpenOptions::default())
    }

    /// [`Model::load`], reading `config.json` and the weights as `opts` says (their limits,
    /// mapping or reading).
    ///
    /// # Errors
    /// As [`Model::load`].
    pub fn load_with(dir: impl AsRef<Path>, opts: &OpenOptions) -> Result<Model> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = model::read_config_file(&cfg_path, &opts.limits)?;
        let config = parse_config(&text).map_err(|e| e.with_path(&cfg_path))?;
        let weights = dir.join("model.safetensors");
        let bytes = opts.file_bytes(&weights)?;
        let prefetch = bytes.prefetcher();
        let src = source::open_bytes_with(bytes, opts).map_err(|e| e.with_path(&weights))?;
        let mut model = Model::build(src.as_ref(), config, Weights::new(true))
            .map_err(|e| e.with_path(&weights))?;
        model.weights.keep_source(src);
        model.prefetch = std::sync::Mutex::new(prefetch);
        Ok(model)
    }

    /// Builds a model from any source holding canonical tensors (with or without the `vit.` /
    /// `deit.` prefix) and its config. A pooler is used when the source holds one. The weights
    /// are copied (as f32) out of `src`.
    ///
    /// # Errors
    /// A missing tensor, or one whose shape disagrees with the config.
    pub fn from_source(src: &dyn TensorSource, config: ViTConfig) -> Result<Model> {
        Model::build(src, config, Weights::new(false))
    }

    /// The least precise float dtype the weights were stored in (`BF16` when any weight was
    /// bf16, then `F16`, `F32`, `F64`). The forward pass computes in f32 whatever it is; the
    /// rounding of 16-bit weights is why [`Tolerance::for_model`](crate::Tolerance::for_model)
    /// widens the default tolerance for them.
    ///
    /// ```
    /// use vit_convert::{DType, Model};
    /// let model = Model::load("fixtures/convert/timm_vit/hf")?;
    /// assert_eq!(model.weight_dtype(), DType::F32);
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    pub fn weight_dtype(&self) -> DType {
        self.weight_dtype
    }

    /// The model's config.
    pub fn config(&self) -> &ViTConfig {
        &self.config
    }

    /// Sets how many threads [`Model::forward`] uses; `0` means one per available core (the
    /// default), and more than [`MAX_THREADS`] means [`MAX_THREADS`]. Results do not depend on
    /// the thread count.
    ///
    /// ```
    /// use vit_convert::{forward::MAX_THREADS, Model};
    /// let mut model = Model::load("fixtures/convert/deit_distilled/hf")?;
    /// model.set_threads(usize::MAX); // `--threads 99999999999` must not spawn until it fails
    /// assert_eq!(model.threads(), MAX_THREADS);
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    pub fn set_threads(&mut self, threads: usize) {
        let n = if threads == 0 {
            default_threads()
        } else {
            threads
        }
        .min(MAX_THREADS);
        if self.pool.is_some() && n == self.threads {
            return;
        }
        self.threads = n;
        // Without a pool of its own (threads could not be spawned) the pass runs on rayon's
        // global pool, with the same results.
        self.pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("vit-forward-{i}"))
            .build()
            .ok();
    }

    /// Starts mapping the weights file in on a thread of its own (once; mapped weights only) when
    /// the pass leaves a core free. Measured on 2 cores, ViT-B/16, batch 1: one compute thread
    /// runs 3–6 % faster with it; two run 1–3 % slower (the prefetch takes a core from them), so
    /// a pass using every core leaves the pages to fault in as it reads them (BENCHMARKS.md).
    pub(crate) fn start_prefetch(&self) {
        let Ok(mut pending) = self.prefetch.lock() else {
            return;
        };
        // The core count (cgroup files on Linux) is read only while a prefetch is pending.
        if pending.is_some() && self.threads < default_threads() {
            if let Some(p) = pending.take() {
                let _ = p.start();
            }
        }
    }

    /// The number of threads [`Model::forward`] uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of weights held in memory; the rest is read in place from the mapped file.
    pub fn resident_weight_bytes(&self) -> usize {
        self.weights.owned_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::F32Array;

    fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/convert/timm_vit")
            .join(rel)
    }

    #[test]
    fn forward_results_do_not_depend_on_the_thread_count() {
        let mut model = Model::load(fixture("hf")).unwrap();
        let input = F32Array::read_npy(fixture("io/batch5.npy")).unwrap();
        let opts = ForwardOptions::default();
        let mut outs = Vec::new();
        for n in [1, 3] {
            model.set_threads(n);
            assert_eq!(model.threads(), n);
            outs.push(model.forward(input.as_nchw().unwrap(), &opts).unwrap());
        }
        assert_eq!(outs[0].last_hidden_state, outs[1].last_hidden_state);
        assert_eq!(outs[0].logits, outs[1].logits);
    }

    #[test]
    fn loaded_f32_weights_are_read_in_place_and_copied_from_borrowed_sources() {
        let dir = fixture("hf");
        let mapped = Model::load(&dir).unwrap();
        assert_eq!(mapped.resident_weight_bytes(), 0);
        let src = source::open(dir.join("model.safetensors")).unwrap();
        let copied = Model::from_source(src.as_ref(), mapped.config().clone()).unwrap();
        assert!(copied.resident_weight_bytes() > 0);
        let input = F32Array::read_npy(fixture("io/input.npy")).unwrap();
        let opts = ForwardOptions::default();
        let a = mapped.forward(input.as_nchw().unwrap(), &opts).unwrap();
        let b = copied.forward(input.as_nchw().unwrap(), &opts).unwrap();
        assert_eq!(a.logits, b.logits);
    }

    /// The weights file is mapped in ahead of the first pass that leaves a core free, once;
    /// never for a pass on every core, nor for weights read into memory.
    #[test]
    fn the_first_pass_that_leaves_a_core_free_starts_the_prefetch_once() {
        let pending = |m: &Model| m.prefetch.lock().unwrap().is_some();
        let input = F32Array::read_npy(fixture("io/input.npy")).unwrap();
        let opts = ForwardOptions::default();
        let mut model = Model::load(fixture("hf")).unwrap();
        assert!(pending(&model));
        model.set_threads(0);
        let all = model.forward(input.as_nchw().unwrap(), &opts).unwrap();
        assert!(pending(&model), "every core computes: nothing started");
        if default_threads() > 1 {
            model.set_threads(1);
            let one = model.forward(input.as_nchw().unwrap(), &opts).unwrap();
            assert!(!pending(&model), "a core is free: started");
            assert_eq!(one.logits, all.logits);
        }
        let read = OpenOptions {
            mmap: false,
            ..OpenOptions::default()
        };
        assert!(!pending(&Model::load_with(fixture("hf"), &read).unwrap()));
    }

    /// The tiny BEiT runs at every input grid, the relative position bias resampled to it, and
    /// the result does not depend on `interpolate_pos_encoding` (transformers' BEiT ignores it).
    #[test]
    fn tiny_beit_runs_at_every_grid() {
        let cfg = ViTConfig::from_json(&tiny::tiny_beit_config()).unwrap();
        let model = Model::from_source(&tiny::tiny_beit_source(), cfg).unwrap();
        for (h, w) in [(4, 4), (2, 2), (6, 4), (4, 10), (7, 7)] {
            let x = ndarray::Array4::from_shape_fn((2, 3, h, w), |(b, c, y, xx)| {
                ((b * 7 + c * 5 + y * 3 + xx) % 11) as f32 / 11.0 - 0.5
            });
            let mut outs = Vec::new();
            for interpolate in [false, true] {
                let opts = ForwardOptions {
                    interpolate_pos_encoding: interpolate,
                    ..Default::default()
                };
                let out = model.forward(x.view(), &opts).unwrap();
                let (gh, gw) = (h / 2, w / 2);
                assert_eq!(out.last_hidden_state.dim(), (2, gh * gw + 1, 4));
                assert!(out.logits.as_ref().unwrap().iter().all(|v| v.is_finite()));
                outs.push(out.logits.unwrap());
            }
            assert_eq!(outs[0], outs[1]);
        }
        let x = ndarray::Array4::<f32>::zeros((1, 3, 1, 4));
        let e = model.forward(x.view(), &Default::default()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }), "{e}");
    }

    #[test]
    fn weight_dtype_is_the_least_precise_float() {
        use DType::*;
        assert_eq!(least_precise([F32, BF16, F16].into_iter()), BF16);
        assert_eq!(least_precise([F64, F16, F32].into_iter()), F16);
        assert_eq!(least_precise([F64, F32].into_iter()), F32);
        assert_eq!(least_precise([F64, I64].into_iter()), F64);
        assert_eq!(least_precise([I64].into_iter()), F32);
    }
}
