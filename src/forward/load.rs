//! Building a [`Model`] from canonical tensors: every size in the config checked against the
//! tensors before any of them sizes an allocation, each parameter found by its canonical name
//! (from [`model::names`]), and every tensor required to have a place.

use std::collections::BTreeSet;

use super::weights::{Weights, P};
use super::{least_precise, Layer, Linear, Model, Norm};
use crate::error::{Error, ErrorKind, Result};
use crate::model::names::{self, LayerPart};
use crate::model::{
    self, disk_name, Architecture, Mlp, ModelType, Pooling, RelativePosition, ViTConfig,
};
use crate::source::TensorSource;

pub(super) struct Loader<'a> {
    pub(super) src: &'a dyn TensorSource,
    pub(super) arch: Architecture,
    pub(super) weights: Weights,
    /// Names of the tensors the model uses.
    pub(super) used: BTreeSet<String>,
}

impl Loader<'_> {
    pub(super) fn name(&self, canonical: &str) -> Option<String> {
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

    fn not_found(&self, canonical: &str) -> Error {
        ErrorKind::TensorNotFound {
            name: disk_name(self.arch, canonical),
        }
        .into()
    }

    /// Checks every size in `config` against the shapes of the tensors present, before any of
    /// them sizes an allocation; returns the position-embedding rows (0 without them).
    pub(super) fn check(&self, config: &ViTConfig) -> Result<usize> {
        let cfg_err = |reason: String| -> Error { ErrorKind::Config { reason }.into() };
        let family = config.architecture.family();
        let patch = names::weight(names::patch(family));
        let shape = self.shape(&patch).ok_or_else(|| self.not_found(&patch))?;
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
            let family = config.architecture.family();
            let (fc1, halve) = match config.encoder.mlp {
                Mlp::Standard => (
                    names::weight(&names::layer_of(family, 0, LayerPart::Intermediate)),
                    1,
                ),
                Mlp::SwiGlu => (
                    names::weight(&names::layer_of(family, 0, LayerPart::GatedIn)),
                    2,
                ),
            };
            let m = self
                .shape(&fc1)
                .and_then(|s| s.first().copied())
                .map(|m| m / halve)
                .ok_or_else(|| self.not_found(&fc1))?;
            if config.intermediate_size != m {
                return Err(model::mismatch(
                    "intermediate_size",
                    config.intermediate_size,
                    m,
                ));
            }
            let flags = config.encoder.qkv_bias.flags();
            for (part, want) in [LayerPart::Query, LayerPart::Key, LayerPart::Value]
                .into_iter()
                .zip(flags)
            {
                let held = self
                    .name(&names::bias(&names::layer_of(family, 0, part)))
                    .is_some();
                if held != want {
                    return Err(model::mismatch(
                        "qkv_bias",
                        usize::from(want),
                        usize::from(held),
                    ));
                }
            }
        }
        if model::classifies(self.arch) {
            let head = names::weight(names::CLASSIFIER);
            let k = self
                .shape(&head)
                .and_then(|s| s.first().copied())
                .ok_or_else(|| self.not_found(&head))?;
            model::check_classes(k)?;
            if config.num_labels() != k {
                return Err(model::mismatch("id2label", config.num_labels(), k));
            }
        }
        if let (Some(r), Some(rows)) = (
            config.pooler_output_size,
            self.shape(&names::weight(names::POOLER_DENSE))
                .and_then(|s| s.first().copied()),
        ) {
            if r != rows {
                return Err(model::mismatch("pooler_output_size", r, rows));
            }
        }
        if self.arch == Architecture::BeitForMaskedImageModeling {
            let head = names::weight(names::LM_HEAD);
            let v = self
                .shape(&head)
                .and_then(|s| s.first().copied())
                .ok_or_else(|| self.not_found(&head))?;
            if config.vocab_size != Some(v) {
                return Err(model::mismatch(
                    "vocab_size",
                    config.vocab_size.unwrap_or(0),
                    v,
                ));
            }
        }
        for table in model::relative_tables(config) {
            match self.shape(&table).as_deref() {
                Some(&[rows, h]) if h == config.num_attention_heads => {
                    model::check_relative_rows(config, &table, rows)?;
                }
                Some(&[_, h]) => {
                    return Err(model::mismatch(
                        "num_attention_heads",
                        config.num_attention_heads,
                        h,
                    ))
                }
                Some(other) => {
                    return Err(cfg_err(format!(
                        "{table} has shape {other:?}, expected [rows, num_attention_heads]"
                    )))
                }
                None => return Err(self.not_found(&table)),
            }
        }
        if !config.encoder.absolute_position {
            config.tokens()?;
            return Ok(0);
        }
        let pos = names::position_embeddings(family);
        let rows = match (self.shape(pos).as_deref(), family.is_clip_style()) {
            (Some(&[1, rows, dd]), false) if dd == d => rows,
            (Some(&[rows, dd]), true) if dd == d => rows,
            (Some(other), _) => {
                return Err(cfg_err(format!(
                    "{pos} has shape {other:?}, expected [{}tokens, {d}]",
                    if family.is_clip_style() { "" } else { "1, " }
                )))
            }
            (None, _) => return Err(self.not_found(pos)),
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
            .filter_map(|t| names::layer_index(t.name.strip_prefix(prefix).unwrap_or(&t.name)))
            .max()
            .map_or(0, |i| i.saturating_add(1))
    }

    pub(super) fn param(&mut self, canonical: &str, shape: &[usize]) -> Result<P> {
        let name = self
            .name(canonical)
            .ok_or_else(|| self.not_found(canonical))?;
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
            w: self.param(&names::weight(base), &[out, inp])?,
            b: if bias {
                Some(self.param(&names::bias(base), &[out])?)
            } else {
                None
            },
            out,
            inp,
        })
    }

    fn norm(&mut self, base: &str, d: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.param(&names::weight(base), &[d])?,
            b: self.param(&names::bias(base), &[d])?,
        })
    }

    /// SigLIP's attention-pooling head: the probe, the packed q/k/v projection (split into
    /// three `[D, D]` linears), the output projection, its LayerNorm and MLP.
    fn map_head(&mut self, config: &ViTConfig) -> Result<super::MapHead> {
        let (d, m) = (config.hidden_size, config.intermediate_size);
        let probe = self.param(names::MAP_PROBE, &[1, 1, d])?;
        let in_w = self.param(names::MAP_IN_PROJ_WEIGHT, &[d.saturating_mul(3), d])?;
        let in_b = self.param(names::MAP_IN_PROJ_BIAS, &[d.saturating_mul(3)])?;
        Ok(super::MapHead {
            probe,
            in_w,
            in_b,
            out: self.linear(names::MAP_OUT_PROJ, d, d, true)?,
            norm: self.norm(names::MAP_NORM, d)?,
            fc1: self.linear(names::MAP_FC1, m, d, true)?,
            fc2: self.linear(names::MAP_FC2, d, m, true)?,
        })
    }

    fn layer(&mut self, config: &ViTConfig, i: usize, rel_rows: usize) -> Result<Layer> {
        let (d, m) = (config.hidden_size, config.intermediate_size);
        let e = config.encoder;
        let [qb, kb, vb] = e.qkv_bias.flags();
        let family = config.architecture.family();
        let part = |p| names::layer_of(family, i, p);
        let (fc1, fc2) = match e.mlp {
            Mlp::Standard => (
                self.linear(&part(LayerPart::Intermediate), m, d, true)?,
                self.linear(&part(LayerPart::Output), d, m, true)?,
            ),
            Mlp::SwiGlu => (
                self.linear(&part(LayerPart::GatedIn), m.saturating_mul(2), d, true)?,
                self.linear(&part(LayerPart::GatedOut), d, m, true)?,
            ),
        };
        Ok(Layer {
            ln1: self.norm(&part(LayerPart::NormBefore), d)?,
            q: self.linear(&part(LayerPart::Query), d, d, qb)?,
            k: self.linear(&part(LayerPart::Key), d, d, kb)?,
            v: self.linear(&part(LayerPart::Value), d, d, vb)?,
            o: self.linear(&part(LayerPart::AttentionOutput), d, d, true)?,
            ln2: self.norm(&part(LayerPart::NormAfter), d)?,
            fc1,
            fc2,
            lambda: if e.layer_scale {
                Some([
                    self.param(&part(LayerPart::Lambda1), &[d])?,
                    self.param(&part(LayerPart::Lambda2), &[d])?,
                ])
            } else {
                None
            },
            relative: if e.relative_position == RelativePosition::PerLayer {
                Some(self.param(
                    &part(LayerPart::RelativePositionBias),
                    &[rel_rows, config.num_attention_heads],
                )?)
            } else {
                None
            },
        })
    }
}

impl Model {
    pub(super) fn build(
        src: &dyn TensorSource,
        mut config: ViTConfig,
        weights: Weights,
    ) -> Result<Model> {
        let mut l = Loader {
            src,
            arch: config.architecture,
            weights,
            used: BTreeSet::new(),
        };
        let pos_rows = l.check(&config)?;
        let d = config.hidden_size;
        let p = config.patch_size;
        let c = config.num_channels;
        let e = config.encoder;
        let arch = config.architecture;
        let rel_rows = model::relative_position_rows(config.grid()).unwrap_or(0);
        let family = arch.family();
        let cls = match (e.class_token, family) {
            (false, _) => None,
            (true, ModelType::ClipVision) => Some(l.param(names::cls_token(family), &[d])?),
            (true, _) => Some(l.param(names::cls_token(family), &[1, 1, d])?),
        };
        let dist = if arch.prefix_tokens() == 2 {
            Some(l.param(names::DISTILLATION_TOKEN, &[1, 1, d])?)
        } else {
            None
        };
        if e.mask_token {
            // Used only with `bool_masked_pos`, which the reference pass does not take.
            if arch.family().is_dinov2() {
                l.param(names::MASK_TOKEN, &[1, d])?;
            } else {
                l.param(names::MASK_TOKEN, &[1, 1, d])?;
            }
        }
        let registers = if e.registers > 0 {
            Some(l.param(names::REGISTER_TOKENS, &[1, e.registers, d])?)
        } else {
            None
        };
        let pos = match (e.absolute_position, family.is_clip_style()) {
            (false, _) => None,
            (true, true) => Some(l.param(names::position_embeddings(family), &[pos_rows, d])?),
            (true, false) => Some(l.param(names::position_embeddings(family), &[1, pos_rows, d])?),
        };
        let patch = Linear {
            w: l.param(&names::weight(names::patch(family)), &[d, c, p, p])?,
            // CLIP's patch convolution has no bias.
            b: if family == ModelType::ClipVision {
                None
            } else {
                Some(l.param(&names::bias(names::patch(family)), &[d])?)
            },
            out: d,
            inp: c.saturating_mul(p).saturating_mul(p),
        };
        let pre_norm = if e.pre_norm {
            Some(l.norm(names::PRE_NORM, d)?)
        } else {
            None
        };
        let shared_relative = if e.relative_position == RelativePosition::Shared {
            Some(l.param(
                names::SHARED_RELATIVE_POSITION_BIAS,
                &[rel_rows, config.num_attention_heads],
            )?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            layers.push(l.layer(&config, i, rel_rows)?);
        }
        let mim = arch == Architecture::BeitForMaskedImageModeling;
        let ln = if e.final_norm() && !mim {
            Some(l.norm(names::final_norm(family), d)?)
        } else {
            None
        };
        // CLIP normalises only the pooled class token, then projects it.
        let post_norm = if e.pooling == Pooling::ClassTokenPostNorm {
            Some(l.norm(names::final_norm(family), d)?)
        } else {
            None
        };
        let projection = match config.projection_dim {
            Some(pd) if arch == Architecture::ClipVisionModelWithProjection => {
                Some(l.linear(names::VISUAL_PROJECTION, pd, d, false)?)
            }
            _ => None,
        };
        let map_head = if e.pooling == Pooling::Map {
            Some(l.map_head(&config)?)
        } else {
            None
        };
        let pooler_dense = names::weight(names::POOLER_DENSE);
        let pooler = match l.name(&pooler_dense).and_then(|n| src.info(&n)) {
            Some(info) if arch.family() != ModelType::Beit => {
                let r = info.shape.first().copied().unwrap_or(d);
                config.pooler_output_size = Some(r);
                Some(l.linear(names::POOLER_DENSE, r, d, true)?)
            }
            _ if arch.family() != ModelType::Beit => {
                config.pooler_output_size = None;
                None
            }
            _ => None,
        };
        // BEiT's mean-pooling norm: always in the classifier; in a backbone when it was saved
        // with its pooler.
        let has_norm = l.name(&names::weight(names::POOLER_NORM)).is_some();
        let pooler_norm = if e.pooling == Pooling::MeanPatchTokens
            && !mim
            && (arch == Architecture::BeitForImageClassification || has_norm)
        {
            Some(l.norm(names::POOLER_NORM, d)?)
        } else {
            None
        };
        if arch.family() == ModelType::Beit {
            config.pooler_output_size = pooler_norm.is_some().then_some(d);
        }
        let k = config.num_labels();
        let heads = match arch {
            Architecture::ViTForImageClassification | Architecture::BeitForImageClassification => {
                vec![l.linear(names::CLASSIFIER, k, d, true)?]
            }
            Architecture::DeiTForImageClassificationWithTeacher => vec![
                l.linear(names::CLASSIFIER, k, d, true)?,
                l.linear(names::DISTILLATION_CLASSIFIER, k, d, true)?,
            ],
            // DINOv2's classifier reads [class token, mean patch token].
            Architecture::Dinov2ForImageClassification
            | Architecture::Dinov2WithRegistersForImageClassification => {
                vec![l.linear(names::CLASSIFIER, k, d.saturating_mul(2), true)?]
            }
            _ => Vec::new(),
        };
        let lm_head = if mim {
            let vocab = config.vocab_size.unwrap_or(0);
            Some((
                l.norm(names::FINAL_NORM, d)?,
                l.linear(names::LM_HEAD, vocab, d, true)?,
            ))
        } else {
            None
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
            registers,
            pre_norm,
            post_norm,
            projection,
            map_head,
            shared_relative,
            layers,
            ln,
            pooler,
            pooler_norm,
            heads,
            lm_head,
            threads: 0,
            pool: None,
            prefetch: std::sync::Mutex::new(None),
        };
        model.set_threads(0);
        Ok(model)
    }
}
