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
//! buffers are allocated once per call.

use std::path::Path;

use ndarray::{concatenate, s, Array2, Array3, ArrayView1, ArrayView2, ArrayView4, Axis};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, Activation, ModelType, ViTConfig};
use crate::progress::{NoProgress, Progress, Stage};
use crate::source::{self, Limits, OpenOptions, TensorSource};
use crate::tensor::DType;

mod budget;
pub(crate) mod interp;
mod load;
pub(crate) mod ops;
mod output;
mod relpos;
#[cfg(test)]
mod side_props;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod tiny;
mod weights;

pub use interp::PosInterp;
pub use output::Output;
use weights::{Resolved, Weights, P};

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

/// A canonical ViT/DeiT model loaded for the reference forward pass (weights in f32).
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
    cls: P,
    dist: Option<P>,
    /// Absolute position embeddings (`pos_rows` rows), when the model has them.
    pos: Option<P>,
    pos_rows: usize,
    patch: Linear,
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
}

/// `p` as a `[rows, cols]` matrix.
fn mat<'a>(w: &Resolved<'a>, p: P, rows: usize, cols: usize) -> Result<ArrayView2<'a, f32>> {
    ArrayView2::from_shape((rows, cols), w.get(p)).map_err(|e| {
        ErrorKind::InvalidLayout {
            reason: format!("parameter of {rows}x{cols}: {e}"),
        }
        .into()
    })
}

/// `p` as a vector of `n`.
fn vector<'a>(w: &Resolved<'a>, p: P, n: usize) -> Result<&'a [f32]> {
    let v = w.get(p);
    if v.len() != n {
        return Err(ErrorKind::InvalidLayout {
            reason: format!("parameter of {} values, expected {n}", v.len()),
        }
        .into());
    }
    Ok(v)
}

/// Linear layer `l` into `y`, as one product of an [`ops::linears`] group.
fn product<'a>(
    w: &Resolved<'a>,
    l: &Linear,
    y: ndarray::ArrayViewMut2<'a, f32>,
) -> Result<ops::Product<'a>> {
    Ok(ops::Product {
        w: mat(w, l.w, l.out, l.inp)?,
        b: match l.b {
            Some(b) => Some(vector(w, b, l.out)?),
            None => None,
        },
        y,
    })
}

/// The values of a standard-layout activation matrix.
fn slice(a: &Array2<f32>) -> Result<&[f32]> {
    a.as_slice().ok_or_else(not_contiguous)
}

/// The values of a standard-layout activation matrix, mutably.
fn slice_mut(a: &mut Array2<f32>) -> Result<&mut [f32]> {
    a.as_slice_mut().ok_or_else(not_contiguous)
}

fn not_contiguous() -> Error {
    ErrorKind::InvalidLayout {
        reason: "activations are not contiguous".into(),
    }
    .into()
}

/// [`ops::attention`] over standard-layout activation matrices `[rows, d]`, with an optional
/// additive bias `[heads, t, t]` on the scores.
fn attention(
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    heads: usize,
    t: usize,
    bias: Option<&[f32]>,
    out: &mut Array2<f32>,
) -> Result<()> {
    let d = q.ncols();
    ops::attention(
        slice(q)?,
        slice(k)?,
        slice(v)?,
        (d, heads, t),
        bias,
        slice_mut(out)?,
    )
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
        let src = source::open_with(&weights, opts)?;
        let mut model = Model::build(src.as_ref(), config, Weights::new(true))
            .map_err(|e| e.with_path(&weights))?;
        model.weights.keep_source(src);
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

    /// The number of threads [`Model::forward`] uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of weights held in memory; the rest is read in place from the mapped file.
    pub fn resident_weight_bytes(&self) -> usize {
        self.weights.owned_bytes()
    }

    /// The absolute position embeddings for an `h × w` input (`pos` as stored): as stored at
    /// the model's size, else resampled as transformers does (ViT/DeiT only with
    /// `interpolate_pos_encoding`; BEiT at every size, as `BeitEmbeddings` always does).
    fn position_embeddings(
        &self,
        pos: ArrayView2<f32>,
        h: usize,
        w: usize,
        opts: &ForwardOptions,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let p = cfg.patch_size;
        let prefix = cfg.architecture.prefix_tokens();
        let n_pos = pos.nrows().saturating_sub(prefix);
        let (gh, gw) = (h / p, w / p);
        if !self.any_size(opts) {
            if h != cfg.image_size || w != cfg.image_size {
                return Err(size_needs_interpolation(h, w, cfg.image_size));
            }
            return Ok(pos.to_owned());
        }
        if gh * gw == n_pos && h == w {
            return Ok(pos.to_owned());
        }
        let s = model::square_root(n_pos)
            .filter(|&s| s > 0)
            .ok_or_else(|| ErrorKind::Config {
                reason: format!("{n_pos} position rows do not form a square grid"),
            })?;
        let d = cfg.hidden_size;
        let grid: Vec<f32> = pos.slice(s![prefix.., ..]).iter().copied().collect();
        let out = interp::bicubic_grid(&grid, (s, s), (gh, gw), d, opts.pos_interp);
        let out =
            Array2::from_shape_vec((gh * gw, d), out).map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?;
        Ok(
            concatenate(Axis(0), &[pos.slice(s![..prefix, ..]), out.view()]).map_err(|e| {
                ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                }
            })?,
        )
    }

    /// Whether inputs of another size than `image_size` run: with `interpolate_pos_encoding`,
    /// and always for BEiT (transformers' BEiT resamples its position embeddings and relative
    /// position bias for every input size).
    fn any_size(&self, opts: &ForwardOptions) -> bool {
        opts.interpolate_pos_encoding || self.config.architecture.family() == ModelType::Beit
    }

    /// Runs the model on a batch `[B, C, H, W]` of float32 pixels.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidOption`] when the channel count differs, or the size differs from
    /// `image_size` without `interpolate_pos_encoding` (as HF does).
    pub fn forward(&self, pixels: ArrayView4<f32>, opts: &ForwardOptions) -> Result<ForwardOutput> {
        self.forward_with_progress(pixels, opts, &NoProgress)
    }

    /// [`Model::forward`], reporting each encoder layer run to `progress` ([`Stage::Forward`]:
    /// `layers × batch` units).
    ///
    /// ```
    /// use vit_convert::{forward::ForwardOptions, progress::NoProgress, verify::F32Array, Model};
    /// let model = Model::load("fixtures/convert/timm_vit/hf")?;
    /// let x = F32Array::read_npy("fixtures/convert/timm_vit/io/input.npy")?;
    /// let out = model.forward_with_progress(x.as_nchw()?, &ForwardOptions::default(), &NoProgress)?;
    /// assert_eq!(out.logits.map(|l| l.ncols()), Some(5));
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn forward_with_progress(
        &self,
        pixels: ArrayView4<f32>,
        opts: &ForwardOptions,
        progress: &dyn Progress,
    ) -> Result<ForwardOutput> {
        budget::check_forward_tokens(&self.config, pixels.dim(), &opts.limits)?;
        budget::check_forward_bytes(&self.config, pixels.dim(), &opts.limits)?;
        let w = self.weights.resolve()?;
        match &self.pool {
            Some(pool) => pool.install(|| self.run(&w, pixels, opts, progress)),
            None => self.run(&w, pixels, opts, progress),
        }
    }

    /// `x · Wᵀ + b` (then `act`) for one of the model's linear layers, into `y`.
    fn linear(
        &self,
        w: &Resolved<'_>,
        l: &Linear,
        x: ArrayView2<f32>,
        act: Option<Activation>,
        y: ndarray::ArrayViewMut2<f32>,
    ) -> Result<()> {
        ops::linears(x, vec![product(w, l, y)?], act)
    }

    /// The residual connection `x += y` (when given), then `hn = LayerNorm(x)` with `nm`.
    fn add_norm(
        &self,
        w: &Resolved<'_>,
        nm: Option<&Norm>,
        x: &mut Array2<f32>,
        y: Option<&Array2<f32>>,
        hn: &mut Array2<f32>,
    ) -> Result<()> {
        let d = self.config.hidden_size;
        let y = match y {
            Some(y) => Some(slice(y)?),
            None => None,
        };
        let Some(nm) = nm else {
            // No norm (BEiT with mean pooling ends without one): `hn = x += y`.
            let x = slice_mut(x)?;
            if let Some(y) = y {
                for (a, b) in x.iter_mut().zip(y) {
                    *a += b;
                }
            }
            slice_mut(hn)?.copy_from_slice(x);
            return Ok(());
        };
        let (nw, nb) = (vector(w, nm.w, d)?, vector(w, nm.b, d)?);
        let eps = self.config.layer_norm_eps;
        ops::add_layer_norm(slice_mut(x)?, y, nw, nb, eps, slice_mut(hn)?)
    }

    /// A head or the pooler on `tokens` (`[samples, in]`).
    fn head(&self, w: &Resolved<'_>, l: &Linear, tokens: &Array2<f32>) -> Result<Array2<f32>> {
        let mut y = Array2::zeros((tokens.nrows(), l.out));
        self.linear(w, l, tokens.view(), None, y.view_mut())?;
        Ok(y)
    }

    fn run(
        &self,
        w: &Resolved<'_>,
        pixels: ArrayView4<f32>,
        opts: &ForwardOptions,
        progress: &dyn Progress,
    ) -> Result<ForwardOutput> {
        let cfg = &self.config;
        let (b, c, h, wd) = pixels.dim();
        if c != cfg.num_channels {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "input has {c} channels, the model expects {}",
                    cfg.num_channels
                ),
            }
            .into());
        }
        let p = cfg.patch_size;
        let (gh, gw) = (h / p, wd / p);
        if gh == 0 || gw == 0 {
            return Err(ErrorKind::InvalidOption {
                reason: format!("input {h}x{wd} is smaller than one {p}x{p} patch"),
            }
            .into());
        }
        if !self.any_size(opts) && (h != cfg.image_size || wd != cfg.image_size) {
            return Err(size_needs_interpolation(h, wd, cfg.image_size));
        }
        let d = cfg.hidden_size;
        let pos = match self.pos {
            Some(pp) => {
                Some(self.position_embeddings(mat(w, pp, self.pos_rows, d)?, h, wd, opts)?)
            }
            None => None,
        };
        let t = gh * gw + cfg.architecture.prefix_tokens();
        let x = self.embed(w, pixels, pos.as_ref(), t)?;
        let last = self.encoder(w, x, t, b, (gh, gw), progress)?;
        let heads = self.heads(w, &last, t)?;
        let last_hidden_state =
            last.into_shape_with_order((b, t, d))
                .map_err(|e| ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                })?;
        progress.finish();
        Ok(ForwardOutput {
            last_hidden_state,
            logits: heads.logits,
            cls_logits: heads.cls_logits,
            distillation_logits: heads.distillation_logits,
            pooler_output: heads.pooler_output,
            token_logits: heads.token_logits,
        })
    }

    /// The embeddings: per sample, `[cls, (dist,) conv(patches) + bias] (+ pos)`, stacked into
    /// one `[samples × t, D]` matrix (`pos`, when given, has one row per token).
    fn embed(
        &self,
        w: &Resolved<'_>,
        pixels: ArrayView4<f32>,
        pos: Option<&Array2<f32>>,
        t: usize,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let (b, _, h, wd) = pixels.dim();
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let prefix = cfg.architecture.prefix_tokens();
        let n = (h / p) * (wd / p);
        if n + prefix != t || pos.is_some_and(|pos| pos.nrows() != t) {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "{} tokens but {} position embeddings",
                    n + prefix,
                    pos.map_or(t, Array2::nrows)
                ),
            }
            .into());
        }
        let too_big = || -> Error {
            ErrorKind::InvalidOption {
                reason: format!("a batch of {b} images of {h}x{wd} is too large"),
            }
            .into()
        };
        let rows = b.checked_mul(t).ok_or_else(too_big)?;
        let patch_rows = b.checked_mul(n).ok_or_else(too_big)?;

        let mut patches = Array2::<f32>::zeros((patch_rows, self.patch.inp));
        for (s, block) in patches.axis_chunks_iter_mut(Axis(0), n.max(1)).enumerate() {
            ops::patches(pixels.index_axis(Axis(0), s), p, block);
        }
        let mut emb = Array2::<f32>::zeros((patch_rows, d));
        self.linear(w, &self.patch, patches.view(), None, emb.view_mut())?;
        drop(patches);
        let cls = vector(w, self.cls, d)?;
        let dist = match self.dist {
            Some(dt) => Some(vector(w, dt, d)?),
            None => None,
        };
        let mut x = Array2::<f32>::zeros((rows, d));
        for (mut block, e) in x
            .axis_chunks_iter_mut(Axis(0), t.max(1))
            .zip(emb.axis_chunks_iter(Axis(0), n.max(1)))
        {
            block.row_mut(0).assign(&ArrayView1::from(cls));
            if let Some(dt) = dist {
                block.row_mut(1).assign(&ArrayView1::from(dt));
            }
            block.slice_mut(s![prefix.., ..]).assign(&e);
            if let Some(pos) = pos {
                block += pos;
            }
        }
        Ok(x)
    }

    /// The relative position bias `[H, t, t]` of `table` for a `grid` input.
    fn relative_bias(&self, w: &Resolved<'_>, table: P, grid: (usize, usize)) -> Result<Vec<f32>> {
        let cfg = &self.config;
        relpos::bias(w.get(table), cfg.num_attention_heads, cfg.grid(), grid)
    }

    /// The encoder over the embeddings `x` (`b` samples of `t` tokens from a `grid` of
    /// patches): the pre-LN blocks, then the final LayerNorm when the model has one. Returns the
    /// last hidden state, `[b × t, D]`.
    fn encoder(
        &self,
        w: &Resolved<'_>,
        mut x: Array2<f32>,
        t: usize,
        b: usize,
        grid: (usize, usize),
        progress: &dyn Progress,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let (rows, d) = x.dim();
        let act = cfg.hidden_act;
        let heads = cfg.num_attention_heads;
        let mut hn = Array2::<f32>::zeros((rows, d));
        let mut q = Array2::<f32>::zeros((rows, d));
        let mut k = Array2::<f32>::zeros((rows, d));
        let mut v = Array2::<f32>::zeros((rows, d));
        let mut a = Array2::<f32>::zeros((rows, d));
        let mut y = Array2::<f32>::zeros((rows, d));
        let mut inter = Array2::<f32>::zeros((rows, cfg.intermediate_size));
        let shared = match self.shared_relative {
            Some(table) => Some(self.relative_bias(w, table, grid)?),
            None => None,
        };
        let layers = u64::try_from(self.layers.len()).unwrap_or(u64::MAX);
        let samples = u64::try_from(b).unwrap_or(u64::MAX);
        progress.start(Stage::Forward, layers.saturating_mul(samples));
        if let Some(first) = self.layers.first() {
            self.add_norm(w, Some(&first.ln1), &mut x, None, &mut hn)?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let own = match l.relative {
                Some(table) => Some(self.relative_bias(w, table, grid)?),
                None => None,
            };
            // q, k and v in one parallel region.
            let qkv = vec![
                product(w, &l.q, q.view_mut())?,
                product(w, &l.k, k.view_mut())?,
                product(w, &l.v, v.view_mut())?,
            ];
            ops::linears(hn.view(), qkv, None)?;
            let bias = own.as_deref().or(shared.as_deref());
            attention(&q, &k, &v, heads, t, bias, &mut a)?;
            self.linear(w, &l.o, a.view(), None, y.view_mut())?;
            if let Some([l1, _]) = l.lambda {
                scale_rows(&mut y, vector(w, l1, d)?)?;
            }
            self.add_norm(w, Some(&l.ln2), &mut x, Some(&y), &mut hn)?;
            self.linear(w, &l.fc1, hn.view(), Some(act), inter.view_mut())?;
            self.linear(w, &l.fc2, inter.view(), None, y.view_mut())?;
            if let Some([_, l2]) = l.lambda {
                scale_rows(&mut y, vector(w, l2, d)?)?;
            }
            // The residual add, fused with the next layer's first LayerNorm (or the final one).
            let next = match self.layers.get(i + 1) {
                Some(nl) => Some(&nl.ln1),
                None => self.ln.as_ref(),
            };
            self.add_norm(w, next, &mut x, Some(&y), &mut hn)?;
            progress.advance(samples);
        }
        // The last layer's residual add already applied the final LayerNorm into `hn`.
        if self.layers.is_empty() {
            self.add_norm(w, self.ln.as_ref(), &mut x, None, &mut hn)?;
        }
        Ok(hn)
    }

    /// The pooler and the heads on the last hidden state (`t` tokens per sample).
    fn heads(&self, w: &Resolved<'_>, last: &Array2<f32>, t: usize) -> Result<Heads> {
        let d = self.config.hidden_size;
        let mut out = Heads::default();
        if let Some(pl) = &self.pooler {
            let mut o = self.head(w, pl, &token_rows(last.view(), 0, t))?;
            o.mapv_inplace(f32::tanh);
            out.pooler_output = Some(o);
        }
        // What the classifier reads: BEiT's pooled output (the normed mean of the patch tokens,
        // or the class token), else the class (or distillation) token.
        let pooled = match &self.pooler_norm {
            Some(nm) => {
                let mean =
                    mean_patch_tokens(last.view(), self.config.architecture.prefix_tokens(), t);
                let mut normed = Array2::<f32>::zeros(mean.dim());
                let mut x = mean;
                self.add_norm(w, Some(nm), &mut x, None, &mut normed)?;
                Some(normed)
            }
            // BEiT without mean pooling pools the class token; the masked-image-modelling class
            // has no pooler.
            None if self.config.architecture.family() == ModelType::Beit
                && self.lm_head.is_none() =>
            {
                Some(token_rows(last.view(), 0, t))
            }
            None => None,
        };
        if let Some(pooled) = &pooled {
            out.pooler_output = Some(pooled.clone());
        }
        let mut head_out = Vec::with_capacity(self.heads.len());
        for (j, hd) in self.heads.iter().enumerate() {
            let input = match &pooled {
                Some(p) => p.clone(),
                None => token_rows(last.view(), j, t),
            };
            head_out.push(self.head(w, hd, &input)?);
        }
        match head_out.len() {
            1 => out.logits = head_out.pop(),
            2 => {
                let dist = head_out.pop();
                let cls = head_out.pop();
                if let (Some(a), Some(bb)) = (&cls, &dist) {
                    out.logits = Some((a + bb) / 2.0);
                }
                out.cls_logits = cls;
                out.distillation_logits = dist;
            }
            _ => {}
        }
        if let Some((nm, lm)) = &self.lm_head {
            // lm_head(layernorm(x))[:, 1:]: every patch token, per sample.
            let mut x = last.clone();
            let mut normed = Array2::<f32>::zeros(x.dim());
            self.add_norm(w, Some(nm), &mut x, None, &mut normed)?;
            let b = last.nrows() / t.max(1);
            let n = t - 1;
            let mut patches = Array2::<f32>::zeros((b * n, d));
            for (mut dst, src) in patches
                .axis_chunks_iter_mut(Axis(0), n.max(1))
                .zip(normed.axis_chunks_iter(Axis(0), t.max(1)))
            {
                dst.assign(&src.slice(s![1.., ..]));
            }
            let mut y = Array2::zeros((b * n, lm.out));
            self.linear(w, lm, patches.view(), None, y.view_mut())?;
            out.token_logits = Some(y.into_shape_with_order((b, n, lm.out)).map_err(|e| {
                ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                }
            })?);
        }
        Ok(out)
    }
}

/// What [`Model::heads`] computed.
#[derive(Default)]
struct Heads {
    pooler_output: Option<Array2<f32>>,
    logits: Option<Array2<f32>>,
    cls_logits: Option<Array2<f32>>,
    distillation_logits: Option<Array2<f32>>,
    token_logits: Option<Array3<f32>>,
}

/// The error for an input of another size than the model's, without interpolation.
fn size_needs_interpolation(h: usize, w: usize, size: usize) -> Error {
    ErrorKind::InvalidOption {
        reason: format!(
            "input image size ({h}*{w}) doesn't match model ({size}*{size}); set option `interpolate_pos_encoding`"
        ),
    }
    .into()
}

/// Row `token` of each sample's `t` rows of `x`, as `[samples, D]`.
fn token_rows(x: ArrayView2<f32>, token: usize, t: usize) -> Array2<f32> {
    let samples = x.nrows() / t.max(1);
    let mut out = Array2::<f32>::zeros((samples, x.ncols()));
    for (mut dst, sample) in out
        .rows_mut()
        .into_iter()
        .zip(x.axis_chunks_iter(Axis(0), t.max(1)))
    {
        if let Some(row) = sample.rows().into_iter().nth(token) {
            dst.assign(&row);
        }
    }
    out
}

/// The mean of each sample's tokens after the first `prefix`, as `[samples, D]` (summed in
/// order, as torch's `mean(1)` over a contiguous tensor does on one thread).
fn mean_patch_tokens(x: ArrayView2<f32>, prefix: usize, t: usize) -> Array2<f32> {
    let samples = x.nrows() / t.max(1);
    let mut out = Array2::<f32>::zeros((samples, x.ncols()));
    let n = t.saturating_sub(prefix).max(1) as f32;
    for (mut dst, sample) in out
        .rows_mut()
        .into_iter()
        .zip(x.axis_chunks_iter(Axis(0), t.max(1)))
    {
        for row in sample.slice(s![prefix.., ..]).rows() {
            dst += &row;
        }
        dst.mapv_inplace(|v| v / n);
    }
    out
}

/// `y[r, :] *= scale` for every row (layer scale).
fn scale_rows(y: &mut Array2<f32>, scale: &[f32]) -> Result<()> {
    let d = scale.len();
    for row in slice_mut(y)?.chunks_exact_mut(d.max(1)) {
        for (v, s) in row.iter_mut().zip(scale) {
            *v *= s;
        }
    }
    Ok(())
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
