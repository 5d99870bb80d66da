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

use std::collections::BTreeSet;
use std::path::Path;

use ndarray::{concatenate, s, Array2, Array3, ArrayView1, ArrayView2, ArrayView4, Axis};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, disk_name, Activation, Architecture, ViTConfig};
use crate::progress::{NoProgress, Progress, Stage};
use crate::source::{self, Limits, OpenOptions, TensorSource};
use crate::tensor::DType;

mod budget;
pub(crate) mod interp;
pub(crate) mod ops;
#[cfg(test)]
mod side_props;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod tiny;
mod weights;

pub use interp::PosInterp;
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
    /// `[B, R]` pooler output (`tanh(dense(x[:, 0]))`) when the model has a pooler.
    pub pooler_output: Option<Array2<f32>>,
}

impl ForwardOutput {
    /// The primary output: logits when there is a head, else `last_hidden_state` as `[B, T·D]`
    /// flattened per sample, with its shape.
    pub fn primary(&self) -> (Vec<usize>, Vec<f32>) {
        match &self.logits {
            Some(l) => (l.shape().to_vec(), l.iter().copied().collect()),
            None => (
                self.last_hidden_state.shape().to_vec(),
                self.last_hidden_state.iter().copied().collect(),
            ),
        }
    }
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
    pos: P,
    pos_rows: usize,
    patch: Linear,
    layers: Vec<Layer>,
    ln: Norm,
    pooler: Option<Linear>,
    heads: Vec<Linear>,
    /// The least precise dtype the weights were stored in (see [`Model::weight_dtype`]).
    weight_dtype: DType,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

struct Loader<'a> {
    src: &'a dyn TensorSource,
    arch: Architecture,
    weights: Weights,
    /// Names of the tensors the model uses.
    used: BTreeSet<String>,
}

impl Loader<'_> {
    fn name(&self, canonical: &str) -> Option<String> {
        let disk = disk_name(self.arch, canonical);
        [disk, canonical.to_string()]
            .into_iter()
            .find(|n| self.src.info(n).is_some())
    }

    /// The shape of a canonical tensor, when the source holds it.
    fn shape(&self, canonical: &str) -> Option<Vec<usize>> {
        self.name(canonical)
            .and_then(|n| self.src.info(&n))
            .map(|i| i.shape.clone())
    }

    /// Checks every size in `config` against the shapes of the tensors present, before any of
    /// them sizes an allocation; returns the position-embedding rows.
    fn check(&self, config: &ViTConfig) -> Result<usize> {
        let cfg_err = |reason: String| -> Error { ErrorKind::Config { reason }.into() };
        let patch = "embeddings.patch_embeddings.projection.weight";
        let shape = self.shape(patch).ok_or_else(|| ErrorKind::TensorNotFound {
            name: disk_name(self.arch, patch),
        })?;
        let [d, c, ph, pw] = shape[..] else {
            return Err(cfg_err(format!(
                "{patch} has shape {shape:?}, expected [hidden_size, num_channels, patch_size, patch_size]"
            )));
        };
        if d == 0 || c == 0 || ph == 0 || pw == 0 {
            return Err(cfg_err(format!(
                "zero-sized patch embedding kernel {shape:?}"
            )));
        }
        for (field, config, tensors) in [
            ("hidden_size", config.hidden_size, d),
            ("num_channels", config.num_channels, c),
            ("patch_size", config.patch_size, ph),
            ("patch_size", config.patch_size, pw),
            ("num_hidden_layers", config.num_hidden_layers, self.layers()),
        ] {
            if config != tensors {
                return Err(model::mismatch(field, config, tensors));
            }
        }
        if config.num_hidden_layers > 0 {
            let fc1 = "encoder.layer.0.intermediate.dense.weight";
            let m = self
                .shape(fc1)
                .and_then(|s| s.first().copied())
                .ok_or_else(|| ErrorKind::TensorNotFound {
                    name: disk_name(self.arch, fc1),
                })?;
            if config.intermediate_size != m {
                return Err(model::mismatch(
                    "intermediate_size",
                    config.intermediate_size,
                    m,
                ));
            }
        }
        let bias = self
            .name("encoder.layer.0.attention.attention.query.bias")
            .is_some();
        if config.num_hidden_layers > 0 && bias != config.qkv_bias {
            return Err(model::mismatch(
                "qkv_bias",
                usize::from(config.qkv_bias),
                usize::from(bias),
            ));
        }
        match self.arch {
            Architecture::ViTForImageClassification
            | Architecture::DeiTForImageClassificationWithTeacher => {
                let k = self
                    .shape("classifier.weight")
                    .and_then(|s| s.first().copied())
                    .ok_or_else(|| ErrorKind::TensorNotFound {
                        name: disk_name(self.arch, "classifier.weight"),
                    })?;
                model::check_classes(k)?;
                if config.num_labels() != k {
                    return Err(model::mismatch("id2label", config.num_labels(), k));
                }
            }
            _ => {}
        }
        if let (Some(r), Some(rows)) = (
            config.pooler_output_size,
            self.shape("pooler.dense.weight")
                .and_then(|s| s.first().copied()),
        ) {
            if r != rows {
                return Err(model::mismatch("pooler_output_size", r, rows));
            }
        }
        let pos = "embeddings.position_embeddings";
        let rows = match self.shape(pos).as_deref() {
            Some(&[1, rows, dd]) if dd == d => rows,
            Some(other) => {
                return Err(cfg_err(format!(
                    "{pos} has shape {other:?}, expected [1, tokens, {d}]"
                )))
            }
            None => {
                return Err(ErrorKind::TensorNotFound {
                    name: disk_name(self.arch, pos),
                }
                .into())
            }
        };
        model::check_positions(config, rows)?;
        Ok(rows)
    }

    /// The number of encoder layers the source holds tensors for: one past the highest
    /// `encoder.layer.{i}` index (gaps are found when the layers are read).
    fn layers(&self) -> usize {
        let prefix = self.arch.prefix();
        self.src
            .tensors()
            .iter()
            .filter_map(|t| {
                let name = t.name.strip_prefix(prefix).unwrap_or(&t.name);
                let rest = name.strip_prefix("encoder.layer.")?;
                let (i, _) = rest.split_once('.')?;
                i.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |i| i.saturating_add(1))
    }

    fn param(&mut self, canonical: &str, shape: &[usize]) -> Result<P> {
        let name = self
            .name(canonical)
            .ok_or_else(|| ErrorKind::TensorNotFound {
                name: disk_name(self.arch, canonical),
            })?;
        let t = self
            .src
            .read(&name)
            .map_err(|e| e.with_tensor(name.clone()))?;
        self.used.insert(name.clone());
        if t.shape != shape {
            return Err(Error::from(ErrorKind::Config {
                reason: format!("{name} has shape {:?}, config implies {shape:?}", t.shape),
            }));
        }
        if !t.dtype.is_float() {
            return Err(Error::from(ErrorKind::UnsupportedDType {
                dtype: t.dtype.name().to_string(),
            })
            .with_tensor(name));
        }
        self.weights.add(self.src, &name, t)
    }

    fn linear(&mut self, base: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            w: self.param(&format!("{base}.weight"), &[out, inp])?,
            b: if bias {
                Some(self.param(&format!("{base}.bias"), &[out])?)
            } else {
                None
            },
            out,
            inp,
        })
    }

    fn norm(&mut self, base: &str, d: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.param(&format!("{base}.weight"), &[d])?,
            b: self.param(&format!("{base}.bias"), &[d])?,
        })
    }
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

/// [`ops::attention`] over standard-layout activation matrices `[rows, d]`.
fn attention(
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    heads: usize,
    t: usize,
    out: &mut Array2<f32>,
) -> Result<()> {
    let d = q.ncols();
    ops::attention(
        slice(q)?,
        slice(k)?,
        slice(v)?,
        d,
        heads,
        t,
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

    fn build(src: &dyn TensorSource, mut config: ViTConfig, weights: Weights) -> Result<Model> {
        let mut l = Loader {
            src,
            arch: config.architecture,
            weights,
            used: BTreeSet::new(),
        };
        let pos_rows = l.check(&config)?;
        let d = config.hidden_size;
        let m = config.intermediate_size;
        let p = config.patch_size;
        let c = config.num_channels;
        let cls = l.param("embeddings.cls_token", &[1, 1, d])?;
        let dist = if config.architecture.prefix_tokens() == 2 {
            Some(l.param("embeddings.distillation_token", &[1, 1, d])?)
        } else {
            None
        };
        let pos = l.param("embeddings.position_embeddings", &[1, pos_rows, d])?;
        let patch = Linear {
            w: l.param(
                "embeddings.patch_embeddings.projection.weight",
                &[d, c, p, p],
            )?,
            b: Some(l.param("embeddings.patch_embeddings.projection.bias", &[d])?),
            out: d,
            inp: c.saturating_mul(p).saturating_mul(p),
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let base = format!("encoder.layer.{i}");
            let att = format!("{base}.attention.attention");
            layers.push(Layer {
                ln1: l.norm(&format!("{base}.layernorm_before"), d)?,
                q: l.linear(&format!("{att}.query"), d, d, config.qkv_bias)?,
                k: l.linear(&format!("{att}.key"), d, d, config.qkv_bias)?,
                v: l.linear(&format!("{att}.value"), d, d, config.qkv_bias)?,
                o: l.linear(&format!("{base}.attention.output.dense"), d, d, true)?,
                ln2: l.norm(&format!("{base}.layernorm_after"), d)?,
                fc1: l.linear(&format!("{base}.intermediate.dense"), m, d, true)?,
                fc2: l.linear(&format!("{base}.output.dense"), d, m, true)?,
            });
        }
        let ln = l.norm("layernorm", d)?;
        let pooler = match l.name("pooler.dense.weight").and_then(|n| src.info(&n)) {
            Some(info) => {
                let r = info.shape.first().copied().unwrap_or(d);
                config.pooler_output_size = Some(r);
                Some(l.linear("pooler.dense", r, d, true)?)
            }
            None => {
                config.pooler_output_size = None;
                None
            }
        };
        let k = config.num_labels();
        let heads = match config.architecture {
            Architecture::ViTForImageClassification => vec![l.linear("classifier", k, d, true)?],
            Architecture::DeiTForImageClassificationWithTeacher => vec![
                l.linear("classifier", k, d, true)?,
                l.linear("distillation_classifier", k, d, true)?,
            ],
            _ => Vec::new(),
        };
        // Every tensor must have its place: a config that leaves some out (fewer layers, no
        // head) would silently compute another model.
        if let Some(unused) = src.tensors().iter().find(|t| !l.used.contains(&t.name)) {
            return Err(ErrorKind::Config {
                reason: format!(
                    "tensor {} has no place in a {} with this config",
                    unused.name,
                    config.architecture.name()
                ),
            }
            .into());
        }
        let weight_dtype = least_precise(
            src.tensors()
                .iter()
                .filter(|t| l.used.contains(&t.name))
                .map(|t| t.dtype),
        );
        let mut model = Model {
            config,
            weight_dtype,
            weights: l.weights,
            cls,
            dist,
            pos,
            pos_rows,
            patch,
            layers,
            ln,
            pooler,
            heads,
            threads: 0,
            pool: None,
        };
        model.set_threads(0);
        Ok(model)
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
        if !opts.interpolate_pos_encoding {
            if h != cfg.image_size || w != cfg.image_size {
                return Err(ErrorKind::InvalidOption {
                    reason: format!(
                        "input image size ({h}*{w}) doesn't match model ({}*{}); set option `interpolate_pos_encoding`",
                        cfg.image_size, cfg.image_size
                    ),
                }
                .into());
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
        if gh == 0 || gw == 0 {
            return Err(ErrorKind::InvalidOption {
                reason: format!("input {h}x{w} is smaller than one {p}x{p} patch"),
            }
            .into());
        }
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
        nm: &Norm,
        x: &mut Array2<f32>,
        y: Option<&Array2<f32>>,
        hn: &mut Array2<f32>,
    ) -> Result<()> {
        let d = self.config.hidden_size;
        let y = match y {
            Some(y) => Some(slice(y)?),
            None => None,
        };
        let (nw, nb) = (vector(w, nm.w, d)?, vector(w, nm.b, d)?);
        let eps = self.config.layer_norm_eps;
        ops::add_layer_norm(slice_mut(x)?, y, nw, nb, eps, slice_mut(hn)?)
    }

    /// A head or the pooler on rows `token`, `token + t`, … of `x` (one per sample).
    fn head(
        &self,
        w: &Resolved<'_>,
        l: &Linear,
        x: ArrayView2<f32>,
        token: usize,
        t: usize,
    ) -> Result<Array2<f32>> {
        let samples = x.nrows() / t.max(1);
        let mut tokens = Array2::<f32>::zeros((samples, l.inp));
        for (mut dst, sample) in tokens
            .rows_mut()
            .into_iter()
            .zip(x.axis_chunks_iter(Axis(0), t.max(1)))
        {
            if let Some(row) = sample.rows().into_iter().nth(token) {
                dst.assign(&row);
            }
        }
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
        let d = cfg.hidden_size;
        let pos = self.position_embeddings(mat(w, self.pos, self.pos_rows, d)?, h, wd, opts)?;
        let t = pos.nrows();
        let x = self.embed(w, pixels, &pos)?;
        let last = self.encoder(w, x, t, b, progress)?;
        let (pooler_output, logits, cls_logits, distillation_logits) = self.heads(w, &last, t)?;
        let last_hidden_state =
            last.into_shape_with_order((b, t, d))
                .map_err(|e| ErrorKind::InvalidLayout {
                    reason: e.to_string(),
                })?;
        progress.finish();
        Ok(ForwardOutput {
            last_hidden_state,
            logits,
            cls_logits,
            distillation_logits,
            pooler_output,
        })
    }

    /// The embeddings: per sample, `[cls, (dist,) conv(patches) + bias] + pos`, stacked into one
    /// `[samples × tokens, D]` matrix (`pos` has one row per token).
    fn embed(
        &self,
        w: &Resolved<'_>,
        pixels: ArrayView4<f32>,
        pos: &Array2<f32>,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let (b, _, h, wd) = pixels.dim();
        let d = cfg.hidden_size;
        let t = pos.nrows();
        let p = cfg.patch_size;
        let prefix = cfg.architecture.prefix_tokens();
        let n = (h / p) * (wd / p);
        if n + prefix != t {
            return Err(ErrorKind::InvalidLayout {
                reason: format!("{} tokens but {t} position embeddings", n + prefix),
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

        // Embeddings: [cls, (dist,) conv(patches) + bias] + position embeddings, per sample.
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
            block += pos;
        }
        Ok(x)
    }

    /// The encoder over the embeddings `x` (`b` samples of `t` tokens): the pre-LN blocks, then
    /// the final LayerNorm. Returns the last hidden state, `[b × t, D]`.
    fn encoder(
        &self,
        w: &Resolved<'_>,
        mut x: Array2<f32>,
        t: usize,
        b: usize,
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
        let layers = u64::try_from(self.layers.len()).unwrap_or(u64::MAX);
        let samples = u64::try_from(b).unwrap_or(u64::MAX);
        progress.start(Stage::Forward, layers.saturating_mul(samples));
        if let Some(first) = self.layers.first() {
            self.add_norm(w, &first.ln1, &mut x, None, &mut hn)?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            // q, k and v in one parallel region.
            let qkv = vec![
                product(w, &l.q, q.view_mut())?,
                product(w, &l.k, k.view_mut())?,
                product(w, &l.v, v.view_mut())?,
            ];
            ops::linears(hn.view(), qkv, None)?;
            attention(&q, &k, &v, heads, t, &mut a)?;
            self.linear(w, &l.o, a.view(), None, y.view_mut())?;
            self.add_norm(w, &l.ln2, &mut x, Some(&y), &mut hn)?;
            self.linear(w, &l.fc1, hn.view(), Some(act), inter.view_mut())?;
            self.linear(w, &l.fc2, inter.view(), None, y.view_mut())?;
            // The residual add, fused with the next layer's first LayerNorm (or the final one).
            let next = self.layers.get(i + 1).map_or(&self.ln, |nl| &nl.ln1);
            self.add_norm(w, next, &mut x, Some(&y), &mut hn)?;
            progress.advance(samples);
        }
        // The last layer's residual add already applied the final LayerNorm into `hn`.
        if self.layers.is_empty() {
            self.add_norm(w, &self.ln, &mut x, None, &mut hn)?;
        }
        Ok(hn)
    }

    /// The pooler and the heads on the last hidden state (`t` tokens per sample): pooler output,
    /// logits, and for a distilled DeiT the class and distillation logits (`logits` is their
    /// mean).
    #[allow(clippy::type_complexity)]
    fn heads(
        &self,
        w: &Resolved<'_>,
        last: &Array2<f32>,
        t: usize,
    ) -> Result<(
        Option<Array2<f32>>,
        Option<Array2<f32>>,
        Option<Array2<f32>>,
        Option<Array2<f32>>,
    )> {
        let pooler_output = match &self.pooler {
            Some(pl) => {
                let mut o = self.head(w, pl, last.view(), 0, t)?;
                o.mapv_inplace(f32::tanh);
                Some(o)
            }
            None => None,
        };
        let mut head_out = Vec::with_capacity(self.heads.len());
        for (j, hd) in self.heads.iter().enumerate() {
            head_out.push(self.head(w, hd, last.view(), j, t)?);
        }
        let (logits, cls_logits, distillation_logits) = match head_out.len() {
            1 => (head_out.pop(), None, None),
            2 => {
                let dist = head_out.pop();
                let cls = head_out.pop();
                let avg = match (&cls, &dist) {
                    (Some(a), Some(bb)) => Some((a + bb) / 2.0),
                    _ => None,
                };
                (avg, cls, dist)
            }
            _ => (None, None, None),
        };
        Ok((pooler_output, logits, cls_logits, distillation_logits))
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
