//! [`ViTConfig`]: the HF `config.json` of a canonical checkpoint, for every family (ViT, DeiT,
//! BEiT), and the [`Encoder`] features the one configurable encoder runs.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{
    architectures_err, cfg_err, check_num_labels, check_pooler_act, default_labels, eps_value,
    parse_id2label, short, Activation, Architecture, ModelType,
};
use crate::error::Result;
use crate::mapping::dims::Bindings;

/// Relative position bias (BEiT): none, one table per layer, or one table shared by all layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RelativePosition {
    /// No relative position bias.
    #[default]
    None,
    /// `use_relative_position_bias`: each layer has its own table.
    PerLayer,
    /// `use_shared_relative_position_bias`: one table for every layer.
    Shared,
}

/// Which of the attention's query, key and value projections have a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QkvBias {
    /// All three (ViT `qkv_bias = true`).
    #[default]
    All,
    /// None (ViT `qkv_bias = false`).
    None,
    /// Query and value only (BEiT, whose key projection has no bias).
    QueryValue,
}

impl QkvBias {
    /// Whether query, key and value have a bias, in that order.
    pub fn flags(self) -> [bool; 3] {
        match self {
            QkvBias::All => [true; 3],
            QkvBias::None => [false; 3],
            QkvBias::QueryValue => [true, false, true],
        }
    }
}

/// What the sequence is pooled into before a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Pooling {
    /// The class token after the final LayerNorm (ViT, DeiT; BEiT with `use_mean_pooling =
    /// false`).
    #[default]
    ClassToken,
    /// The mean of the patch tokens, then `pooler.layernorm`; the body has no final LayerNorm
    /// (BEiT `use_mean_pooling`).
    MeanPatchTokens,
    /// The class token through `post_layernorm`; the last hidden state is not normalised (CLIP).
    ClassTokenPostNorm,
    /// Multi-head attention pooling: a learned probe attends over the normalised tokens, then a
    /// residual MLP (SigLIP's `head`).
    Map,
}

/// The MLP of each block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mlp {
    /// `fc2(act(fc1(x)))` with the config's `hidden_act`.
    #[default]
    Standard,
    /// SwiGLU: `down(silu(gate(x)) · up(x))`, gate and up packed in one `[2·M, D]` projection
    /// (DINOv2 `use_swiglu_ffn`).
    SwiGlu,
}

/// The encoder features of a model: what the one configurable encoder computes beyond the
/// sizes. Each HF architecture is one combination of them; [`Encoder::of`] gives a family's
/// defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Encoder {
    /// Learned absolute position embeddings added to the tokens.
    pub absolute_position: bool,
    /// Relative position bias added to the attention scores.
    pub relative_position: RelativePosition,
    /// Layer scale: each residual branch is multiplied by a learned `[D]` vector
    /// (`lambda_1`/`lambda_2`).
    pub layer_scale: bool,
    /// Which of q, k, v have biases.
    pub qkv_bias: QkvBias,
    /// Pooling before the head.
    pub pooling: Pooling,
    /// A mask token is stored (BEiT, DINOv2 `use_mask_token`).
    pub mask_token: bool,
    /// Register tokens inserted after the class token (DINOv2 with registers).
    pub registers: usize,
    /// The MLP kind.
    pub mlp: Mlp,
    /// A class token leads the sequence (not in SigLIP).
    pub class_token: bool,
    /// A LayerNorm on the embeddings before the first layer (CLIP's `pre_layrnorm`).
    pub pre_norm: bool,
}

impl Encoder {
    /// The features of a family's plain configuration: ViT/DeiT (absolute positions, q/k/v
    /// biases, class token), BEiT as its conversions default (relative position bias per layer,
    /// layer scale, q/v biases, mean pooling), DINOv2 (absolute positions, layer scale, a mask
    /// token; registers and SwiGLU as the weights say).
    pub fn of(family: ModelType) -> Encoder {
        match family {
            ModelType::Beit => Encoder {
                absolute_position: false,
                relative_position: RelativePosition::PerLayer,
                layer_scale: true,
                qkv_bias: QkvBias::QueryValue,
                pooling: Pooling::MeanPatchTokens,
                mask_token: false,
                registers: 0,
                mlp: Mlp::Standard,
                class_token: true,
                pre_norm: false,
            },
            ModelType::ClipVision | ModelType::SiglipVision => Encoder {
                absolute_position: true,
                relative_position: RelativePosition::None,
                layer_scale: false,
                qkv_bias: QkvBias::All,
                pooling: if family == ModelType::ClipVision {
                    Pooling::ClassTokenPostNorm
                } else {
                    Pooling::Map
                },
                mask_token: false,
                registers: 0,
                mlp: Mlp::Standard,
                class_token: family == ModelType::ClipVision,
                pre_norm: family == ModelType::ClipVision,
            },
            ModelType::Dinov2 | ModelType::Dinov2WithRegisters => Encoder {
                absolute_position: true,
                relative_position: RelativePosition::None,
                layer_scale: true,
                qkv_bias: QkvBias::All,
                pooling: Pooling::ClassToken,
                mask_token: true,
                registers: 0,
                mlp: Mlp::Standard,
                class_token: true,
                pre_norm: false,
            },
            ModelType::Vit | ModelType::Deit => Encoder {
                absolute_position: true,
                relative_position: RelativePosition::None,
                layer_scale: false,
                qkv_bias: QkvBias::All,
                pooling: Pooling::ClassToken,
                mask_token: false,
                registers: 0,
                mlp: Mlp::Standard,
                class_token: true,
                pre_norm: false,
            },
        }
    }

    /// Whether the body ends with a LayerNorm over every token (`layernorm`): not with mean
    /// pooling, whose norm is the pooler's.
    pub fn final_norm(self) -> bool {
        matches!(self.pooling, Pooling::ClassToken | Pooling::Map)
    }
}

/// DINOv2's MLP width for a hidden size and `mlp_ratio`, as transformers computes it:
/// `int(D · ratio)`, and for SwiGLU two thirds of that rounded up to a multiple of 8.
pub(crate) fn dinov2_mlp_width(d: usize, ratio: f64, mlp: Mlp) -> Option<usize> {
    if !(ratio.is_finite() && ratio > 0.0) {
        return None;
    }
    let h = (d as f64 * ratio).floor();
    if h > (1u64 << 40) as f64 {
        return None;
    }
    let h = h as usize;
    Some(match mlp {
        Mlp::Standard => h,
        Mlp::SwiGlu => (h * 2 / 3).div_ceil(8) * 8,
    })
}

/// The `mlp_ratio` that gives MLP width `m` at hidden size `d` ([`dinov2_mlp_width`]):
/// `m / d` for the standard MLP; for SwiGLU the smallest `h / d` (an integer when one fits)
/// whose two thirds round up to `m`. `None` when no ratio gives `m`.
pub(crate) fn dinov2_mlp_ratio(d: usize, m: usize, mlp: Mlp) -> Option<f64> {
    if d == 0 {
        return None;
    }
    let fits = |r: f64| dinov2_mlp_width(d, r, mlp) == Some(m);
    let candidates: Vec<usize> = match mlp {
        Mlp::Standard => vec![m],
        // h·2/3 rounded up to 8 is m for h within a few of 1.5·m.
        Mlp::SwiGlu => {
            let c = m.checked_mul(3)? / 2;
            (c.saturating_sub(16)..=c.saturating_add(16)).collect()
        }
    };
    // An integer ratio first (what DINOv2's configs say: 4), then an exact fraction.
    candidates
        .iter()
        .filter(|&&h| h % d == 0)
        .map(|&h| (h / d) as f64)
        .chain(candidates.iter().map(|&h| h as f64 / d as f64))
        .find(|&r| fits(r))
}

/// The rows of a relative position bias table for a `w × w` patch grid: `(2w-1)² + 3` (every
/// 2-D offset, plus class-to-token, token-to-class and class-to-class).
pub fn relative_position_rows(w: usize) -> Option<usize> {
    let side = w.checked_mul(2)?.checked_sub(1)?;
    side.checked_mul(side)?.checked_add(3)
}

/// The patch grid side `w` whose relative position bias table has `rows` rows.
pub fn relative_position_grid(rows: usize) -> Option<usize> {
    let side = super::square_root(rows.checked_sub(3)?)?;
    if side % 2 == 0 {
        return None;
    }
    Some(side.div_ceil(2)).filter(|&w| w > 0)
}

/// The relative position index of a `gh × gw` patch grid: `(N+1)²` table rows, row-major over
/// (query token, key token), token 0 being the class token.
pub fn relative_position_index(gh: usize, gw: usize) -> Vec<usize> {
    let n = gh * gw;
    let t = n + 1;
    let side_w = 2 * gw - 1;
    let offsets = (2 * gh - 1) * side_w;
    let mut index = vec![0usize; t * t];
    for i in 0..n {
        let (yi, xi) = (i / gw, i % gw);
        for j in 0..n {
            let (yj, xj) = (j / gw, j % gw);
            let dy = yi + gh - 1 - yj;
            let dx = xi + gw - 1 - xj;
            index[(i + 1) * t + j + 1] = dy * side_w + dx;
        }
    }
    for j in 0..t {
        index[j] = offsets; // class to token
        index[j * t] = offsets + 1; // token to class
    }
    index[0] = offsets + 2; // class to class
    index
}

/// The HF config of a canonical checkpoint (ViT, DeiT or BEiT).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ViTConfig {
    /// Model class.
    pub architecture: Architecture,
    /// D.
    pub hidden_size: usize,
    /// L.
    pub num_hidden_layers: usize,
    /// H.
    pub num_attention_heads: usize,
    /// M.
    pub intermediate_size: usize,
    /// P.
    pub patch_size: usize,
    /// Input resolution (square).
    pub image_size: usize,
    /// C.
    pub num_channels: usize,
    /// The encoder's features (position, layer scale, biases, pooling).
    pub encoder: Encoder,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Activation.
    pub hidden_act: Activation,
    /// Class labels (index → name); empty for headless models.
    pub id2label: BTreeMap<usize, String>,
    /// Pooler output size when a pooler exists.
    pub pooler_output_size: Option<usize>,
    /// The masked-image-modelling vocabulary (`lm_head` rows; BEiT).
    pub vocab_size: Option<usize>,
    /// CLIP's `projection_dim` (`visual_projection` rows) when the tower has a projection.
    pub projection_dim: Option<usize>,
    /// dtype name of the weights (`float32`, `float16`, `bfloat16`).
    pub dtype: String,
    /// Fields copied verbatim from a user `--config` file that are not modelled above.
    pub extra: Map<String, Value>,
}

/// `layer_scale_init_value` written for models with layer scale: the value BEiT was trained with
/// (it only initialises the lambdas; the weights hold the trained ones).
const LAYER_SCALE_INIT: f64 = 0.1;

/// `vocab_size` written when the model has no masked-image-modelling head (BeitConfig's default).
const BEIT_VOCAB: usize = 8192;

impl ViTConfig {
    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// Whether the model has a pooler.
    pub fn has_pooler(&self) -> bool {
        self.pooler_output_size.is_some()
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The patch grid side at `image_size`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// The `config.json` document.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architectures".into(), json!([self.architecture.name()]));
        m.insert("model_type".into(), json!(self.architecture.model_type()));
        m.insert("hidden_size".into(), json!(self.hidden_size));
        m.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        m.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        m.insert("intermediate_size".into(), json!(self.intermediate_size));
        m.insert("hidden_act".into(), json!(self.hidden_act.name()));
        m.insert("hidden_dropout_prob".into(), json!(0.0));
        m.insert("attention_probs_dropout_prob".into(), json!(0.0));
        m.insert("initializer_range".into(), json!(0.02));
        m.insert("layer_norm_eps".into(), json!(self.layer_norm_eps));
        m.insert("image_size".into(), json!(self.image_size));
        m.insert("patch_size".into(), json!(self.patch_size));
        m.insert("num_channels".into(), json!(self.num_channels));
        match self.architecture.family() {
            ModelType::Beit => self.beit_fields(&mut m),
            ModelType::Dinov2 | ModelType::Dinov2WithRegisters => self.dinov2_fields(&mut m),
            ModelType::ClipVision | ModelType::SiglipVision => self.tower_fields(&mut m),
            ModelType::Vit | ModelType::Deit => {
                m.insert(
                    "qkv_bias".into(),
                    json!(self.encoder.qkv_bias == super::QkvBias::All),
                );
                m.insert("encoder_stride".into(), json!(self.patch_size));
                m.insert("pooler_act".into(), json!("tanh"));
                m.insert(
                    "pooler_output_size".into(),
                    json!(self.pooler_output_size.unwrap_or(self.hidden_size)),
                );
            }
        }
        if !self.id2label.is_empty() {
            let id2label: Map<String, Value> = self
                .id2label
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect();
            let label2id: Map<String, Value> = self
                .id2label
                .iter()
                .map(|(k, v)| (v.clone(), json!(k)))
                .collect();
            m.insert("id2label".into(), Value::Object(id2label));
            m.insert("label2id".into(), Value::Object(label2id));
        }
        m.insert("dtype".into(), json!(self.dtype));
        m.insert("torch_dtype".into(), json!(self.dtype));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// The `Dinov2Config` / `Dinov2WithRegistersConfig` fields: the MLP size as `mlp_ratio`
    /// (DINOv2 configs have no `intermediate_size`), SwiGLU, layer scale, registers, mask token.
    fn dinov2_fields(&self, m: &mut Map<String, Value>) {
        let e = &self.encoder;
        m.remove("intermediate_size");
        m.insert(
            "mlp_ratio".into(),
            dinov2_mlp_ratio(self.hidden_size, self.intermediate_size, e.mlp).map_or(
                Value::Null,
                // An integer ratio is written as one (`4`), as transformers' configs hold it.
                |r| match (r.fract() == 0.0, u64::try_from(r as i64)) {
                    (true, Ok(n)) => json!(n),
                    _ => json!(r),
                },
            ),
        );
        m.insert("qkv_bias".into(), json!(e.qkv_bias == QkvBias::All));
        m.insert("layerscale_value".into(), json!(1.0));
        m.insert("drop_path_rate".into(), json!(0.0));
        m.insert("use_swiglu_ffn".into(), json!(e.mlp == Mlp::SwiGlu));
        m.insert("apply_layernorm".into(), json!(true));
        m.insert("reshape_hidden_states".into(), json!(true));
        if self.architecture.family() == ModelType::Dinov2WithRegisters {
            m.insert("num_register_tokens".into(), json!(e.registers));
        } else {
            m.insert("use_mask_token".into(), json!(e.mask_token));
        }
    }

    /// The `CLIPVisionConfig` / `SiglipVisionConfig` fields (their dropout is `attention_dropout`).
    fn tower_fields(&self, m: &mut Map<String, Value>) {
        m.remove("hidden_dropout_prob");
        m.remove("attention_probs_dropout_prob");
        m.insert("attention_dropout".into(), json!(0.0));
        if self.architecture.family() == ModelType::ClipVision {
            m.insert("initializer_factor".into(), json!(1.0));
            // CLIPVisionConfig's default when the tower has no projection.
            m.insert(
                "projection_dim".into(),
                json!(self.projection_dim.unwrap_or(512)),
            );
        } else {
            m.insert(
                "vision_use_head".into(),
                json!(self.encoder.pooling == Pooling::Map),
            );
        }
    }

    /// The `BeitConfig` fields that describe the encoder's features.
    fn beit_fields(&self, m: &mut Map<String, Value>) {
        let e = &self.encoder;
        m.insert(
            "vocab_size".into(),
            json!(self.vocab_size.unwrap_or(BEIT_VOCAB)),
        );
        m.insert("use_mask_token".into(), json!(e.mask_token));
        m.insert(
            "use_absolute_position_embeddings".into(),
            json!(e.absolute_position),
        );
        m.insert(
            "use_relative_position_bias".into(),
            json!(e.relative_position == RelativePosition::PerLayer),
        );
        m.insert(
            "use_shared_relative_position_bias".into(),
            json!(e.relative_position == RelativePosition::Shared),
        );
        m.insert(
            "layer_scale_init_value".into(),
            json!(if e.layer_scale { LAYER_SCALE_INIT } else { 0.0 }),
        );
        m.insert(
            "use_mean_pooling".into(),
            json!(e.pooling == Pooling::MeanPatchTokens),
        );
        // BeitConfig's defaults for the rest (training and segmentation settings the weights do
        // not record), so the file reads as transformers writes one.
        m.insert("drop_path_rate".into(), json!(0.1));
        m.insert("pool_scales".into(), json!([1, 2, 3, 6]));
        m.insert("use_auxiliary_head".into(), json!(true));
        m.insert("auxiliary_loss_weight".into(), json!(0.4));
        m.insert("auxiliary_channels".into(), json!(256));
        m.insert("auxiliary_num_convs".into(), json!(1));
        m.insert("auxiliary_concat_input".into(), json!(false));
        m.insert("semantic_loss_ignore_index".into(), json!(255));
        m.insert("add_fpn".into(), json!(false));
        m.insert("reshape_hidden_states".into(), json!(true));
    }

    /// Reads an HF `config.json` document.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when a required field is missing or has
    /// the wrong type.
    pub fn from_json(v: &Value) -> Result<ViTConfig> {
        let obj = v
            .as_object()
            .ok_or_else(|| cfg_err("config.json is not an object"))?;
        let uint = |k: &str| -> Result<usize> {
            match obj.get(k) {
                None | Some(Value::Null) => Err(cfg_err(format!("field `{k}` is missing"))),
                Some(v) => v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "field `{k}` must be a non-negative integer, got {}",
                            short(v)
                        ))
                    }),
            }
        };
        let flag = |k: &str, default: bool| -> Result<bool> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| {
                    cfg_err(format!(
                        "field `{k}` must be true or false, got {}",
                        short(v)
                    ))
                }),
            }
        };
        let side = |k: &str| -> Result<usize> {
            match obj.get(k) {
                Some(Value::Array(a)) if a.len() == 2 && a.first() == a.get(1) => a
                    .first()
                    .and_then(Value::as_u64)
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| cfg_err(format!("field `{k}` is not an integer pair"))),
                Some(Value::Array(_)) => Err(cfg_err(format!("non-square `{k}` is not supported"))),
                _ => uint(k),
            }
        };
        let architecture = read_architecture(obj)?;
        let num_labels = match obj.get("num_labels") {
            None | Some(Value::Null) => None,
            Some(_) => Some(uint("num_labels")?),
        };
        let id2label = match (obj.get("id2label"), num_labels) {
            (None | Some(Value::Null), None) => BTreeMap::new(),
            // transformers makes `LABEL_{i}` names from `num_labels` alone.
            (None | Some(Value::Null), Some(n)) => default_labels(n, "")?,
            (Some(Value::Object(m)), _) => parse_id2label(m, "")?,
            (Some(v), _) => {
                return Err(cfg_err(format!(
                    "field `id2label` must be an object, got {}",
                    short(v)
                )))
            }
        };
        check_num_labels(num_labels, id2label.len(), "")?;
        let hidden_size = uint("hidden_size")?;
        let family = architecture.family();
        let (encoder, pooler_output_size, vocab_size) = match family {
            ModelType::ClipVision | ModelType::SiglipVision => {
                if family == ModelType::SiglipVision && !flag("vision_use_head", true)? {
                    return Err(cfg_err(
                        "`vision_use_head` false (a SigLIP tower without its pooling head) is not supported",
                    ));
                }
                (Encoder::of(family), None, None)
            }
            ModelType::Beit => {
                let shared = flag("use_shared_relative_position_bias", false)?;
                let per_layer = flag("use_relative_position_bias", false)?;
                let layer_scale = match obj.get("layer_scale_init_value") {
                    None | Some(Value::Null) => true,
                    Some(v) => {
                        v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                            cfg_err(format!(
                                "field `layer_scale_init_value` must be a number, got {}",
                                short(v)
                            ))
                        })? > 0.0
                    }
                };
                let mean = flag("use_mean_pooling", true)?;
                let encoder = Encoder {
                    absolute_position: flag("use_absolute_position_embeddings", false)?,
                    relative_position: match (shared, per_layer) {
                        (true, _) => RelativePosition::Shared,
                        (false, true) => RelativePosition::PerLayer,
                        (false, false) => RelativePosition::None,
                    },
                    layer_scale,
                    qkv_bias: QkvBias::QueryValue,
                    pooling: if mean {
                        Pooling::MeanPatchTokens
                    } else {
                        Pooling::ClassToken
                    },
                    mask_token: flag("use_mask_token", false)?,
                    registers: 0,
                    mlp: Mlp::Standard,
                    class_token: true,
                    pre_norm: false,
                };
                let vocab = match obj.get("vocab_size") {
                    None | Some(Value::Null) => BEIT_VOCAB,
                    Some(_) => uint("vocab_size")?,
                };
                // The mean-pooling norm, unless the model was saved without its pooler (the
                // loader drops it when the weights hold none).
                let pooler = (encoder.pooling == Pooling::MeanPatchTokens
                    && architecture != Architecture::BeitForMaskedImageModeling)
                    .then_some(hidden_size);
                (encoder, pooler, Some(vocab))
            }
            ModelType::Dinov2 | ModelType::Dinov2WithRegisters => {
                let mut encoder = Encoder::of(family);
                if !flag("qkv_bias", true)? {
                    encoder.qkv_bias = QkvBias::None;
                }
                if flag("use_swiglu_ffn", false)? {
                    encoder.mlp = Mlp::SwiGlu;
                }
                if family == ModelType::Dinov2WithRegisters {
                    encoder.registers = match obj.get("num_register_tokens") {
                        None | Some(Value::Null) => 4,
                        Some(_) => uint("num_register_tokens")?,
                    };
                } else {
                    encoder.mask_token = flag("use_mask_token", true)?;
                }
                (encoder, None, None)
            }
            ModelType::Vit | ModelType::Deit => {
                check_pooler_act(obj.get("pooler_act"), "")?;
                let pooler = match obj.get("pooler_output_size") {
                    Some(Value::Null) | None => hidden_size,
                    Some(_) => uint("pooler_output_size")?,
                };
                let mut encoder = Encoder::of(family);
                if !flag("qkv_bias", true)? {
                    encoder.qkv_bias = QkvBias::None;
                }
                (encoder, Some(pooler), None)
            }
        };
        let layer_norm_eps = match obj.get("layer_norm_eps") {
            // The families' config defaults.
            None | Some(Value::Null) => match family {
                ModelType::ClipVision => 1e-5,
                ModelType::SiglipVision | ModelType::Dinov2 | ModelType::Dinov2WithRegisters => {
                    1e-6
                }
                _ => 1e-12,
            },
            Some(v) => eps_value(v, "")?,
        };
        let intermediate_size = if family.is_dinov2() {
            let ratio = match obj.get("mlp_ratio") {
                None | Some(Value::Null) => 4.0,
                Some(v) => v.as_f64().ok_or_else(|| {
                    cfg_err(format!(
                        "field `mlp_ratio` must be a number, got {}",
                        short(v)
                    ))
                })?,
            };
            dinov2_mlp_width(hidden_size, ratio, encoder.mlp).ok_or_else(|| {
                cfg_err(format!(
                    "field `mlp_ratio` {ratio} gives no MLP width for hidden_size {hidden_size}"
                ))
            })?
        } else {
            uint("intermediate_size")?
        };
        let cfg = ViTConfig {
            architecture,
            hidden_size,
            num_hidden_layers: uint("num_hidden_layers")?,
            num_attention_heads: uint("num_attention_heads")?,
            intermediate_size,
            patch_size: side("patch_size")?,
            image_size: side("image_size")?,
            num_channels: match obj.get("num_channels") {
                None | Some(Value::Null) => 3,
                Some(_) => uint("num_channels")?,
            },
            encoder,
            layer_norm_eps,
            hidden_act: match obj.get("hidden_act") {
                None | Some(Value::Null) => match family {
                    ModelType::ClipVision => Activation::QuickGelu,
                    ModelType::SiglipVision => Activation::GeluPytorchTanh,
                    _ => Activation::Gelu,
                },
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "field `hidden_act` must be a string, got {}",
                            short(v)
                        ))
                    })?
                    .parse()?,
            },
            id2label,
            pooler_output_size,
            vocab_size,
            projection_dim: match (architecture, obj.get("projection_dim")) {
                (Architecture::ClipVisionModelWithProjection, None | Some(Value::Null)) => {
                    Some(512)
                }
                (Architecture::ClipVisionModelWithProjection, Some(_)) => {
                    Some(uint("projection_dim")?)
                }
                _ => None,
            },
            dtype: obj
                .get("dtype")
                .or_else(|| obj.get("torch_dtype"))
                .and_then(Value::as_str)
                .unwrap_or("float32")
                .to_string(),
            extra: Map::new(),
        };
        cfg.tokens()?;
        Ok(cfg)
    }

    /// Checks the config is consistent in itself — every size at least 1, `hidden_size`
    /// divisible by `num_attention_heads`, `image_size` a multiple of `patch_size`, a finite
    /// non-negative `layer_norm_eps` — and returns the tokens per image it implies (patches plus
    /// class/distillation tokens), computed with checked arithmetic.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming the field and its value.
    pub fn tokens(&self) -> Result<usize> {
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
            ("num_channels", self.num_channels),
        ] {
            if v == 0 {
                return Err(cfg_err(format!("`{field}` is 0")));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(cfg_err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.image_size % self.patch_size != 0 || self.image_size < self.patch_size {
            return Err(cfg_err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if !self.layer_norm_eps.is_finite() || self.layer_norm_eps < 0.0 {
            return Err(cfg_err(format!(
                "layer_norm_eps {} is not a finite non-negative number",
                self.layer_norm_eps
            )));
        }
        let grid = self.grid();
        grid.checked_mul(grid)
            .and_then(|n| n.checked_add(self.architecture.prefix_tokens()))
            .and_then(|n| n.checked_add(self.encoder.registers))
            .filter(|_| relative_position_rows(grid).is_some())
            .ok_or_else(|| {
                cfg_err(format!(
                    "image_size {} with patch_size {} gives more tokens than fit in memory",
                    self.image_size, self.patch_size
                ))
            })
    }

    /// The symbol values tables use (`D`, `M`, `H`, `hd`, `P`, `C`, `N`, `T`, `K`, `R`, `F`,
    /// `RB`, `V`, `NR`, `G`), for running tables backwards.
    pub(crate) fn symbol_bindings(&self) -> Bindings {
        let mut b = Bindings::new();
        let grid = self.grid();
        let patches = grid.saturating_mul(grid);
        b.insert("D".into(), self.hidden_size);
        b.insert("M".into(), self.intermediate_size);
        b.insert("H".into(), self.num_attention_heads);
        b.insert("hd".into(), self.head_dim());
        b.insert("P".into(), self.patch_size);
        b.insert("C".into(), self.num_channels);
        b.insert("N".into(), patches);
        b.insert(
            "T".into(),
            patches.saturating_add(self.architecture.prefix_tokens()),
        );
        b.insert("K".into(), self.num_labels());
        let r = self.pooler_output_size.unwrap_or(self.hidden_size);
        b.insert("R".into(), r);
        b.insert(
            "F".into(),
            if self.architecture.family().is_dinov2() {
                // DINOv2's classifier reads [class token, mean patch token].
                self.hidden_size.saturating_mul(2)
            } else if self.has_pooler() {
                r
            } else {
                self.hidden_size
            },
        );
        if let Some(rows) = relative_position_rows(grid) {
            b.insert("RB".into(), rows);
        }
        if let Some(v) = self.vocab_size {
            b.insert("V".into(), v);
        }
        b.insert("NR".into(), self.encoder.registers);
        b.insert("G".into(), self.intermediate_size);
        b.insert("M2".into(), self.intermediate_size);
        if let Some(pd) = self.projection_dim {
            b.insert("PD".into(), pd);
        }
        b
    }
}

/// The model class a `config.json` names (`architectures`, else `model_type`).
fn read_architecture(obj: &Map<String, Value>) -> Result<Architecture> {
    let arch_name = match obj.get("architectures") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => match a.first() {
            None => None,
            Some(Value::String(n)) => Some(n.as_str()),
            Some(_) => return Err(architectures_err(obj.get("architectures"), "")),
        },
        v => return Err(architectures_err(v, "")),
    };
    Ok(match arch_name {
        Some(n) => Architecture::from_name(n)
            .ok_or_else(|| cfg_err(format!("unsupported architecture {n:?}")))?,
        None => match obj.get("model_type").and_then(Value::as_str) {
            Some("deit") => Architecture::DeiTModel,
            Some("beit") => Architecture::BeitModel,
            Some("dinov2") => Architecture::Dinov2Model,
            Some("dinov2_with_registers") => Architecture::Dinov2WithRegistersModel,
            Some("clip_vision_model") => Architecture::ClipVisionModel,
            Some("siglip_vision_model") => Architecture::SiglipVisionModel,
            _ => Architecture::ViTModel,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_rows_and_grid_invert_each_other() {
        for w in 1..40 {
            let rows = relative_position_rows(w).unwrap();
            assert_eq!(relative_position_grid(rows), Some(w));
        }
        assert_eq!(relative_position_rows(14), Some(732));
        for bad in [0, 2, 3, 5, 7, 13, 731] {
            assert_eq!(relative_position_grid(bad), None, "{bad}");
        }
    }
}
