//! The user's `config.json` fields (option `config`, or the `config.json` beside an `hf`/`flax`
//! input) applied over an inferred [`ViTConfig`]: sizes and features the tensors fix must agree,
//! the rest fills in what they do not record.

use serde_json::{Map, Value};

use super::{
    architectures_err, cfg_err, check_pooler_act, eps_value, mismatch, parse_id2label, short,
    Architecture, InferenceNotes, Mlp, ModelType, Pooling, QkvBias, RelativePosition, ViTConfig,
};
use crate::error::Result;

/// The families' feature fields: checked against the tensors (BEiT's `use_*`, DINOv2's SwiGLU and
/// registers, the masked-image-modelling vocabulary), and taken from the `config.json` beside an
/// `hf`/`flax` input.
pub(crate) const FEATURE_FIELDS: &[&str] = &[
    "vocab_size",
    "use_mask_token",
    "use_absolute_position_embeddings",
    "use_relative_position_bias",
    "use_shared_relative_position_bias",
    "use_mean_pooling",
    "layer_scale_init_value",
    "mlp_ratio",
    "use_swiglu_ffn",
    "num_register_tokens",
];

/// The `config.json` fields [`apply_user_config`] models (besides [`FEATURE_FIELDS`]); others
/// are copied verbatim.
const MODELLED: &[&str] = &[
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "patch_size",
    "num_channels",
    "num_attention_heads",
    "image_size",
    "layer_norm_eps",
    "hidden_act",
    "id2label",
    "label2id",
    "architectures",
    "model_type",
    "qkv_bias",
    "pooler_output_size",
    "pooler_act",
    "num_labels",
    "dtype",
    "torch_dtype",
    "layerscale_value",
    "apply_layernorm",
    "reshape_hidden_states",
    "drop_path_rate",
];

pub(super) fn apply_user_config(
    cfg: &mut ViTConfig,
    user: &Map<String, Value>,
    notes: &mut InferenceNotes,
) -> Result<()> {
    // A null field is as good as absent.
    let user: Map<String, Value> = user
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let user = &user;
    let check_usize =
        |key: &'static str, slot: &mut usize, inferred_from_tensors: bool| -> Result<()> {
            if let Some(v) = user.get(key) {
                // `patch_size` and `image_size` may be written as a square pair `[n, n]`.
                let x = match v.as_array().map(Vec::as_slice) {
                    Some([a, b]) if a == b => a.as_u64(),
                    _ => v.as_u64(),
                }
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| {
                    cfg_err(format!(
                        "option `config`: `{key}` must be a non-negative integer, got {}",
                        short(v)
                    ))
                })?;
                if inferred_from_tensors && x != *slot {
                    return Err(mismatch(key, x, *slot));
                }
                *slot = x;
            }
            Ok(())
        };
    check_usize("hidden_size", &mut cfg.hidden_size, true)?;
    check_usize("num_hidden_layers", &mut cfg.num_hidden_layers, true)?;
    check_usize("intermediate_size", &mut cfg.intermediate_size, true)?;
    check_usize("patch_size", &mut cfg.patch_size, true)?;
    check_usize("num_channels", &mut cfg.num_channels, true)?;
    check_usize("num_attention_heads", &mut cfg.num_attention_heads, false)?;
    check_usize("image_size", &mut cfg.image_size, false)?;
    if let Some(v) = user.get("layer_norm_eps") {
        cfg.layer_norm_eps = eps_value(v, "option `config`: ")?;
    }
    check_features(cfg, user)?;
    if let Some(v) = user.get("hidden_act") {
        cfg.hidden_act = v
            .as_str()
            .ok_or_else(|| cfg_err("option `config`: `hidden_act` must be a string"))?
            .parse()?;
    }
    check_pooler_act(user.get("pooler_act"), "option `config`: ")?;
    if let Some(v) = user.get("id2label") {
        let m = v
            .as_object()
            .ok_or_else(|| cfg_err("option `config`: `id2label` must be an object"))?;
        let labels = parse_id2label(m, "option `config`: ")?;
        if labels.len() != cfg.id2label.len() {
            return Err(mismatch("id2label", labels.len(), cfg.id2label.len()));
        }
        cfg.id2label = labels;
    }
    let mut num_labels = cfg.id2label.len();
    check_usize("num_labels", &mut num_labels, true)?;
    // Checked against the pooler's rows when the tensors hold a pooler.
    let mut pooler = cfg.pooler_output_size.unwrap_or(0);
    check_usize(
        "pooler_output_size",
        &mut pooler,
        cfg.pooler_output_size.is_some(),
    )?;
    if cfg.architecture == Architecture::BeitForMaskedImageModeling {
        let mut vocab = cfg.vocab_size.unwrap_or(0);
        check_usize("vocab_size", &mut vocab, true)?;
    }
    check_class_names(cfg, user)?;
    if cfg.hidden_size % cfg.num_attention_heads.max(1) != 0 || cfg.num_attention_heads == 0 {
        return Err(cfg_err(
            "option `config`: hidden_size is not divisible by num_attention_heads",
        ));
    }
    for (k, v) in user {
        if !MODELLED.contains(&k.as_str()) && !FEATURE_FIELDS.contains(&k.as_str()) {
            cfg.extra.insert(k.clone(), v.clone());
        }
    }
    notes.notes.push(format!(
        "config fields applied: {}",
        user.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    Ok(())
}

/// The user's feature flags must agree with what the tensors hold (`qkv_bias`, BEiT's
/// `use_*`): a disagreement would describe another model.
fn check_features(cfg: &ViTConfig, user: &Map<String, Value>) -> Result<()> {
    let e = cfg.encoder;
    let beit = cfg.architecture.family() == ModelType::Beit;
    let held: Vec<(&'static str, bool)> = if beit {
        vec![
            ("use_mask_token", e.mask_token),
            ("use_absolute_position_embeddings", e.absolute_position),
            (
                "use_relative_position_bias",
                e.relative_position == RelativePosition::PerLayer,
            ),
            (
                "use_shared_relative_position_bias",
                e.relative_position == RelativePosition::Shared,
            ),
            ("use_mean_pooling", e.pooling == Pooling::MeanPatchTokens),
        ]
    } else if cfg.architecture.family().is_dinov2() {
        let mut v = vec![
            ("qkv_bias", e.qkv_bias == QkvBias::All),
            ("use_swiglu_ffn", e.mlp == Mlp::SwiGlu),
        ];
        if cfg.architecture.family() == ModelType::Dinov2 {
            v.push(("use_mask_token", e.mask_token));
        }
        v
    } else {
        vec![("qkv_bias", e.qkv_bias == QkvBias::All)]
    };
    for (key, tensors) in held {
        if let Some(v) = user.get(key) {
            let b = v.as_bool().ok_or_else(|| {
                cfg_err(format!(
                    "option `config`: `{key}` must be true or false, got {}",
                    short(v)
                ))
            })?;
            if b != tensors {
                return Err(mismatch(key, usize::from(b), usize::from(tensors)));
            }
        }
    }
    if cfg.architecture.family().is_dinov2() {
        if let Some(v) = user.get("mlp_ratio") {
            let r = v.as_f64().ok_or_else(|| {
                cfg_err(format!(
                    "option `config`: `mlp_ratio` must be a number, got {}",
                    short(v)
                ))
            })?;
            let m = super::dinov2_mlp_width(cfg.hidden_size, r, e.mlp).unwrap_or(0);
            if m != cfg.intermediate_size {
                return Err(mismatch("mlp_ratio", m, cfg.intermediate_size));
            }
        }
        if let Some(v) = user.get("num_register_tokens") {
            let n = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    cfg_err(format!(
                        "option `config`: `num_register_tokens` must be a non-negative integer, got {}",
                        short(v)
                    ))
                })?;
            if n != e.registers {
                return Err(mismatch("num_register_tokens", n, e.registers));
            }
        }
    }
    if let Some(v) = user.get("layer_scale_init_value").filter(|_| beit) {
        let x = v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
            cfg_err(format!(
                "option `config`: `layer_scale_init_value` must be a number, got {}",
                short(v)
            ))
        })?;
        if (x > 0.0) != e.layer_scale {
            return Err(mismatch(
                "layer_scale_init_value",
                usize::from(x > 0.0),
                usize::from(e.layer_scale),
            ));
        }
    }
    Ok(())
}

/// The user's `architectures` and `model_type` must name what the tensors make.
fn check_class_names(cfg: &ViTConfig, user: &Map<String, Value>) -> Result<()> {
    match user.get("architectures") {
        None => {}
        Some(Value::Array(a)) => match a.first() {
            None => {}
            Some(Value::String(n)) if n == cfg.architecture.name() => {}
            Some(Value::String(n)) => {
                return Err(cfg_err(format!(
                    "option `config`: `architectures` names {:?}, the tensors make a {}",
                    n.chars().take(40).collect::<String>(),
                    cfg.architecture.name()
                )))
            }
            Some(_) => {
                return Err(architectures_err(
                    user.get("architectures"),
                    "option `config`: ",
                ))
            }
        },
        v => return Err(architectures_err(v, "option `config`: ")),
    }
    if let Some(v) = user.get("model_type") {
        if v.as_str() != Some(cfg.architecture.model_type()) {
            return Err(cfg_err(format!(
                "option `config`: `model_type` is {}, the tensors make a {:?} model",
                short(v),
                cfg.architecture.model_type()
            )));
        }
    }
    Ok(())
}
