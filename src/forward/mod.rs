//! The reference forward pass over the canonical layout, reproducing HF transformers' ViT/DeiT
//! numerics (layouts.md §1.6): patch embedding, class (and distillation) token, position
//! embeddings (optionally interpolated), pre-LN blocks, eager attention with softmax in f32,
//! GELU, final LayerNorm, then the head or pooler. f16/bf16 weights are computed in f32.

use std::path::Path;

use ndarray::{concatenate, s, Array1, Array2, Array3, ArrayView4, Axis};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{disk_name, Architecture, ViTConfig};
use crate::progress::{NoProgress, Progress, Stage};
use crate::source::{self, TensorSource};
use crate::tensor::{cast_float, DType};

pub(crate) mod interp;
pub(crate) mod ops;

pub use interp::PosInterp;

/// Options for [`Model::forward`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions {
    /// Accept inputs whose size differs from `image_size`, resampling the position grid.
    pub interpolate_pos_encoding: bool,
    /// Which resampling algorithm to use.
    pub pos_interp: PosInterp,
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

struct Linear {
    w: Array2<f32>,
    b: Option<Array1<f32>>,
}

struct Layer {
    ln1: (Array1<f32>, Array1<f32>),
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: (Array1<f32>, Array1<f32>),
    fc1: Linear,
    fc2: Linear,
}

/// A canonical ViT/DeiT model loaded for the reference forward pass (weights in f32).
///
/// ```
/// use vit_convert::{verify::Array, ForwardOptions, Model};
/// let model = Model::load("fixtures/convert/dino_backbone/hf".as_ref())?;
/// let x = Array::read_npy("fixtures/convert/dino_backbone/io/input.npy".as_ref())?;
/// let out = model.forward(x.as_nchw()?, &ForwardOptions::default())?;
/// // A headless backbone: no logits; the primary output is last_hidden_state [B, T, D].
/// assert!(out.logits.is_none());
/// assert_eq!(out.last_hidden_state.shape()[2], model.config().hidden_size);
/// # Ok::<(), vit_convert::Error>(())
/// ```
pub struct Model {
    config: ViTConfig,
    cls: Array1<f32>,
    dist: Option<Array1<f32>>,
    pos: Array2<f32>,
    patch: Linear,
    layers: Vec<Layer>,
    ln: (Array1<f32>, Array1<f32>),
    pooler: Option<Linear>,
    heads: Vec<Linear>,
}

struct Loader<'a> {
    src: &'a dyn TensorSource,
    arch: Architecture,
}

impl Loader<'_> {
    fn name(&self, canonical: &str) -> Option<String> {
        let disk = disk_name(self.arch, canonical);
        [disk, canonical.to_string()]
            .into_iter()
            .find(|n| self.src.info(n).is_some())
    }

    fn array(&self, canonical: &str, shape: &[usize]) -> Result<ndarray::ArrayD<f32>> {
        let name = self
            .name(canonical)
            .ok_or_else(|| ErrorKind::TensorNotFound {
                name: disk_name(self.arch, canonical),
            })?;
        let t = self
            .src
            .read(&name)
            .map_err(|e| e.with_tensor(name.clone()))?;
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
        let t = cast_float(t, DType::F32);
        let values: Vec<f32> = t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        ndarray::ArrayD::from_shape_vec(shape.to_vec(), values).map_err(|e| {
            Error::from(ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })
            .with_tensor(name)
        })
    }

    fn vec(&self, canonical: &str, n: usize) -> Result<Array1<f32>> {
        Ok(self
            .array(canonical, &[n])?
            .into_dimensionality()
            .map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?)
    }

    fn mat(&self, canonical: &str, r: usize, c: usize) -> Result<Array2<f32>> {
        Ok(self
            .array(canonical, &[r, c])?
            .into_dimensionality()
            .map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?)
    }

    fn linear(&self, base: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            w: self.mat(&format!("{base}.weight"), out, inp)?,
            b: if bias {
                Some(self.vec(&format!("{base}.bias"), out)?)
            } else {
                None
            },
        })
    }

    fn ln(&self, base: &str, d: usize) -> Result<(Array1<f32>, Array1<f32>)> {
        Ok((
            self.vec(&format!("{base}.weight"), d)?,
            self.vec(&format!("{base}.bias"), d)?,
        ))
    }
}

impl Model {
    /// Loads `model.safetensors` and `config.json` from a folder written by `convert`
    /// (or by transformers' `save_pretrained`).
    ///
    /// # Errors
    /// I/O, format and config errors; a tensor whose shape disagrees with the config.
    pub fn load(dir: &Path) -> Result<Model> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::from(ErrorKind::io("read", e)).with_path(&cfg_path))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::from(ErrorKind::Config {
                reason: e.to_string(),
            })
            .with_path(&cfg_path)
        })?;
        let config = ViTConfig::from_json(&v).map_err(|e| e.with_path(&cfg_path))?;
        let weights = dir.join("model.safetensors");
        let src = source::open(&weights)?;
        Model::from_source(src.as_ref(), config).map_err(|e| e.with_path(&weights))
    }

    /// Builds a model from any source holding canonical tensors (with or without the `vit.` /
    /// `deit.` prefix) and its config. A pooler is used when the source holds one.
    ///
    /// # Errors
    /// A missing tensor, or one whose shape disagrees with the config.
    pub fn from_source(src: &dyn TensorSource, mut config: ViTConfig) -> Result<Model> {
        let l = Loader {
            src,
            arch: config.architecture,
        };
        let d = config.hidden_size;
        let m = config.intermediate_size;
        let p = config.patch_size;
        let c = config.num_channels;
        if config.num_attention_heads == 0 || d % config.num_attention_heads != 0 || p == 0 {
            return Err(ErrorKind::Config {
                reason: format!(
                    "hidden_size {d} is not divisible by num_attention_heads {} (or patch_size is 0)",
                    config.num_attention_heads
                ),
            }
            .into());
        }
        let pos_rows = l
            .name("embeddings.position_embeddings")
            .and_then(|n| src.info(&n))
            .and_then(|i| i.shape.get(1).copied())
            .ok_or_else(|| ErrorKind::TensorNotFound {
                name: "embeddings.position_embeddings".into(),
            })?;
        let cls = l
            .array("embeddings.cls_token", &[1, 1, d])?
            .into_shape_with_order(d);
        let cls = cls.map_err(|e| ErrorKind::InvalidLayout {
            reason: e.to_string(),
        })?;
        let dist = if config.architecture.prefix_tokens() == 2 {
            Some(
                l.array("embeddings.distillation_token", &[1, 1, d])?
                    .into_shape_with_order(d)
                    .map_err(|e| ErrorKind::InvalidLayout {
                        reason: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        let pos = l
            .array("embeddings.position_embeddings", &[1, pos_rows, d])?
            .into_shape_with_order((pos_rows, d))
            .map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?;
        let patch_w = l
            .array(
                "embeddings.patch_embeddings.projection.weight",
                &[d, c, p, p],
            )?
            .into_shape_with_order((d, c * p * p))
            .map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?;
        let patch = Linear {
            w: patch_w,
            b: Some(l.vec("embeddings.patch_embeddings.projection.bias", d)?),
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let base = format!("encoder.layer.{i}");
            let att = format!("{base}.attention.attention");
            layers.push(Layer {
                ln1: l.ln(&format!("{base}.layernorm_before"), d)?,
                q: l.linear(&format!("{att}.query"), d, d, config.qkv_bias)?,
                k: l.linear(&format!("{att}.key"), d, d, config.qkv_bias)?,
                v: l.linear(&format!("{att}.value"), d, d, config.qkv_bias)?,
                o: l.linear(&format!("{base}.attention.output.dense"), d, d, true)?,
                ln2: l.ln(&format!("{base}.layernorm_after"), d)?,
                fc1: l.linear(&format!("{base}.intermediate.dense"), m, d, true)?,
                fc2: l.linear(&format!("{base}.output.dense"), d, m, true)?,
            });
        }
        let ln = l.ln("layernorm", d)?;
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
        Ok(Model {
            config,
            cls,
            dist,
            pos,
            patch,
            layers,
            ln,
            pooler,
            heads,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &ViTConfig {
        &self.config
    }

    fn position_embeddings(
        &self,
        h: usize,
        w: usize,
        opts: &ForwardOptions,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let p = cfg.patch_size;
        let prefix = cfg.architecture.prefix_tokens();
        let n_pos = self.pos.nrows() - prefix;
        let (gh, gw) = (h / p, w / p);
        if !opts.interpolate_pos_encoding {
            if h != cfg.image_size || w != cfg.image_size {
                return Err(ErrorKind::InvalidOption {
                    reason: format!(
                        "input image size ({h}*{w}) doesn't match model ({}*{}); use --interpolate-pos-encoding",
                        cfg.image_size, cfg.image_size
                    ),
                }
                .into());
            }
            return Ok(self.pos.clone());
        }
        if gh * gw == n_pos && h == w {
            return Ok(self.pos.clone());
        }
        let s = (n_pos as f64).sqrt().round() as usize;
        if s * s != n_pos {
            return Err(ErrorKind::Config {
                reason: format!("{n_pos} position rows do not form a square grid"),
            }
            .into());
        }
        if gh == 0 || gw == 0 {
            return Err(ErrorKind::InvalidOption {
                reason: format!("input {h}x{w} is smaller than one {p}x{p} patch"),
            }
            .into());
        }
        let d = cfg.hidden_size;
        let grid: Vec<f32> = self.pos.slice(s![prefix.., ..]).iter().copied().collect();
        let out = interp::bicubic_grid(&grid, (s, s), (gh, gw), d, opts.pos_interp);
        let out =
            Array2::from_shape_vec((gh * gw, d), out).map_err(|e| ErrorKind::InvalidLayout {
                reason: e.to_string(),
            })?;
        Ok(
            concatenate(Axis(0), &[self.pos.slice(s![..prefix, ..]), out.view()]).map_err(|e| {
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
    /// use vit_convert::{verify::Array, ForwardOptions, Model, NoProgress};
    /// let model = Model::load("fixtures/convert/timm_vit/hf".as_ref())?;
    /// let x = Array::read_npy("fixtures/convert/timm_vit/io/input.npy".as_ref())?;
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
        let cfg = &self.config;
        let (b, c, h, w) = pixels.dim();
        if c != cfg.num_channels {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "input has {c} channels, the model expects {}",
                    cfg.num_channels
                ),
            }
            .into());
        }
        let pos = self.position_embeddings(h, w, opts)?;
        let t = pos.nrows();
        let d = cfg.hidden_size;
        let mut hidden = Array3::<f32>::zeros((b, t, d));
        let mut pooled = self
            .pooler
            .as_ref()
            .map(|p| Array2::<f32>::zeros((b, p.w.nrows())));
        let k = cfg.num_labels();
        let mut head_out: Vec<Array2<f32>> =
            self.heads.iter().map(|_| Array2::zeros((b, k))).collect();
        let layers = u64::try_from(self.layers.len()).unwrap_or(u64::MAX);
        progress.start(
            Stage::Forward,
            layers.saturating_mul(u64::try_from(b).unwrap_or(u64::MAX)),
        );
        for i in 0..b {
            let x = self.sample(pixels.index_axis(Axis(0), i), &pos, progress)?;
            if let (Some(p), Some(out)) = (&self.pooler, pooled.as_mut()) {
                out.row_mut(i).assign(&ops::pooler(
                    x.row(0),
                    &p.w,
                    p.b.as_ref().unwrap_or(&Array1::zeros(p.w.nrows())),
                ));
            }
            for (j, (head, out)) in self.heads.iter().zip(head_out.iter_mut()).enumerate() {
                let tok = x.row(j).insert_axis(Axis(0));
                out.row_mut(i)
                    .assign(&ops::linear(tok, &head.w, head.b.as_ref()).row(0));
            }
            hidden.index_axis_mut(Axis(0), i).assign(&x);
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
        progress.finish();
        Ok(ForwardOutput {
            last_hidden_state: hidden,
            logits,
            cls_logits,
            distillation_logits,
            pooler_output: pooled,
        })
    }

    fn sample(
        &self,
        img: ndarray::ArrayView3<f32>,
        pos: &Array2<f32>,
        progress: &dyn Progress,
    ) -> Result<Array2<f32>> {
        let cfg = &self.config;
        let patches = ops::patch_embed(
            img,
            &self.patch.w,
            self.patch
                .b
                .as_ref()
                .unwrap_or(&Array1::zeros(cfg.hidden_size)),
            cfg.patch_size,
        );
        let mut rows = vec![self.cls.view().insert_axis(Axis(0))];
        if let Some(dt) = &self.dist {
            rows.push(dt.view().insert_axis(Axis(0)));
        }
        rows.push(patches.view());
        let mut x = concatenate(Axis(0), &rows).map_err(|e| ErrorKind::InvalidLayout {
            reason: e.to_string(),
        })?;
        if x.nrows() != pos.nrows() {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "{} tokens but {} position embeddings",
                    x.nrows(),
                    pos.nrows()
                ),
            }
            .into());
        }
        x += pos;
        let eps = cfg.layer_norm_eps;
        let act: fn(f32) -> f32 = match cfg.hidden_act.as_str() {
            "gelu" => ops::gelu_erf,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => ops::gelu_tanh,
            other => {
                return Err(ErrorKind::Config {
                    reason: format!("unsupported hidden_act `{other}`"),
                }
                .into())
            }
        };
        for layer in &self.layers {
            let hn = ops::layer_norm(x.view(), &layer.ln1.0, &layer.ln1.1, eps);
            let q = ops::linear(hn.view(), &layer.q.w, layer.q.b.as_ref());
            let k = ops::linear(hn.view(), &layer.k.w, layer.k.b.as_ref());
            let v = ops::linear(hn.view(), &layer.v.w, layer.v.b.as_ref());
            let a = ops::attention(&q, &k, &v, cfg.num_attention_heads);
            x += &ops::linear(a.view(), &layer.o.w, layer.o.b.as_ref());
            let hn = ops::layer_norm(x.view(), &layer.ln2.0, &layer.ln2.1, eps);
            let mut inter = ops::linear(hn.view(), &layer.fc1.w, layer.fc1.b.as_ref());
            inter.mapv_inplace(act);
            x += &ops::linear(inter.view(), &layer.fc2.w, layer.fc2.b.as_ref());
            progress.advance(1);
        }
        Ok(ops::layer_norm(x.view(), &self.ln.0, &self.ln.1, eps))
    }
}
