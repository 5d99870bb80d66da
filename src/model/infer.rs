//! Config inference: the architecture and [`ViTConfig`] that canonical tensors imply, the user's
//! overrides applied and checked, and the exact tensor names a config implies.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::config::{dinov2_mlp_ratio, relative_position_grid, relative_position_rows};
use super::names::{self, LayerPart};
use super::{
    cfg_err, check_classes, mismatch, short, square_root, Activation, Architecture,
    ConfigOverrides, Encoder, InferenceNotes, Mlp, ModelType, Pooling, QkvBias, RelativePosition,
    ViTConfig,
};
use crate::error::Result;
use crate::tensor::TensorInfo;

/// The model family canonical names imply when the table does not say (the `hf` table reads
/// every family): DINOv2 when its layer names or register tokens are present, BEiT when a name
/// only BEiT has is present (layer scale, relative position
/// bias, the mean-pooling norm, the masked-image-modelling head, a mask token, or a query bias
/// without a key bias), else ViT.
pub(crate) fn family_of(names: &BTreeSet<String>) -> ModelType {
    let has = |n: &str| names.contains(n);
    let q_bias = names::bias(&names::layer(0, LayerPart::Query));
    let k_bias = names::bias(&names::layer(0, LayerPart::Key));
    let beit_only = [
        names::layer(0, LayerPart::Lambda1),
        names::layer(0, LayerPart::RelativePositionBias),
        names::SHARED_RELATIVE_POSITION_BIAS.to_string(),
        names::weight(names::POOLER_NORM),
        names::weight(names::LM_HEAD),
        names::MASK_TOKEN.to_string(),
    ];
    let dinov2_only = [
        names::weight(&names::layer_of(
            ModelType::Dinov2,
            0,
            LayerPart::NormBefore,
        )),
        names::layer_of(ModelType::Dinov2, 0, LayerPart::Lambda1),
        names::REGISTER_TOKENS.to_string(),
    ];
    let tower = names::weight(&names::layer_of(
        ModelType::ClipVision,
        0,
        LayerPart::NormBefore,
    ));
    if has(&tower) {
        // CLIP-style names: a class embedding makes CLIP, its absence SigLIP.
        if has(names::cls_token(ModelType::ClipVision)) {
            ModelType::ClipVision
        } else {
            ModelType::SiglipVision
        }
    } else if dinov2_only.iter().any(|n| has(n)) {
        ModelType::Dinov2
    } else if beit_only.iter().any(|n| has(n)) || (has(&q_bias) && !has(&k_bias)) {
        ModelType::Beit
    } else {
        ModelType::Vit
    }
}

/// The architecture a set of canonical tensor names implies within a family, plus tensors to
/// drop (with why).
pub(crate) fn architecture_of(
    family: ModelType,
    names: &BTreeSet<String>,
) -> (Architecture, Vec<(String, String)>) {
    let has = |n: &str| names.contains(n);
    let classifier = names::weight(names::CLASSIFIER);
    let mut drop = Vec::new();
    let arch = match family {
        ModelType::ClipVision => {
            if has(&names::weight(names::VISUAL_PROJECTION)) {
                Architecture::ClipVisionModelWithProjection
            } else {
                Architecture::ClipVisionModel
            }
        }
        ModelType::SiglipVision => Architecture::SiglipVisionModel,
        ModelType::Dinov2 | ModelType::Dinov2WithRegisters => {
            // Register tokens make the registers class, whatever the table said.
            match (has(names::REGISTER_TOKENS), has(&classifier)) {
                (true, true) => Architecture::Dinov2WithRegistersForImageClassification,
                (true, false) => Architecture::Dinov2WithRegistersModel,
                (false, true) => Architecture::Dinov2ForImageClassification,
                (false, false) => Architecture::Dinov2Model,
            }
        }
        ModelType::Beit => {
            if has(&names::weight(names::LM_HEAD)) {
                Architecture::BeitForMaskedImageModeling
            } else if has(&classifier) {
                Architecture::BeitForImageClassification
            } else {
                Architecture::BeitModel
            }
        }
        ModelType::Vit | ModelType::Deit => {
            if has(names::DISTILLATION_TOKEN) {
                if has(&names::weight(names::DISTILLATION_CLASSIFIER)) {
                    Architecture::DeiTForImageClassificationWithTeacher
                } else {
                    Architecture::DeiTModel
                }
            } else if has(&classifier) && has(&names::weight(names::POOLER_DENSE)) {
                // A representation (pre-logits) layer feeds the original head; HF's classifier
                // reads the raw class token, so the faithful export is ViTModel + pooler without
                // the head.
                for n in [classifier.clone(), names::bias(names::CLASSIFIER)] {
                    if has(&n) {
                        drop.push((
                            n,
                            "the head follows a pre-logits layer, which ViTForImageClassification cannot represent; exported as ViTModel with pooler".to_string(),
                        ));
                    }
                }
                Architecture::ViTModel
            } else if has(&classifier) {
                Architecture::ViTForImageClassification
            } else {
                Architecture::ViTModel
            }
        }
    };
    (arch, drop)
}

/// The encoder features canonical tensors of `arch` hold.
fn encoder_of(arch: Architecture, get: &dyn Fn(&str) -> bool) -> Encoder {
    let family = arch.family();
    let mut e = Encoder::of(family);
    let q_bias = get(&names::bias(&names::layer(0, LayerPart::Query)));
    let k_bias = get(&names::bias(&names::layer(0, LayerPart::Key)));
    match family {
        ModelType::ClipVision | ModelType::SiglipVision => {}
        ModelType::Dinov2 | ModelType::Dinov2WithRegisters => {
            e.qkv_bias = if q_bias || k_bias {
                QkvBias::All
            } else {
                QkvBias::None
            };
            e.mask_token = get(names::MASK_TOKEN) || family == ModelType::Dinov2WithRegisters;
            if get(&names::weight(&names::layer_of(
                family,
                0,
                LayerPart::GatedIn,
            ))) {
                e.mlp = Mlp::SwiGlu;
            }
            // The count comes from the tensor's shape (set by `infer_config`).
            e.registers = usize::from(get(names::REGISTER_TOKENS));
        }
        ModelType::Beit => {
            e.absolute_position = get(names::POSITION_EMBEDDINGS);
            e.relative_position = if get(names::SHARED_RELATIVE_POSITION_BIAS) {
                RelativePosition::Shared
            } else if get(&names::layer(0, LayerPart::RelativePositionBias)) {
                RelativePosition::PerLayer
            } else {
                RelativePosition::None
            };
            e.layer_scale = get(&names::layer(0, LayerPart::Lambda1));
            // The masked-image-modelling class has no pooler and no body norm; otherwise a
            // body `layernorm` means class-token pooling.
            e.pooling = if arch != Architecture::BeitForMaskedImageModeling
                && get(&names::weight(names::FINAL_NORM))
            {
                Pooling::ClassToken
            } else {
                Pooling::MeanPatchTokens
            };
            e.mask_token = get(names::MASK_TOKEN);
        }
        ModelType::Vit | ModelType::Deit => {
            e.qkv_bias = if q_bias || k_bias {
                QkvBias::All
            } else {
                QkvBias::None
            };
        }
    }
    e
}

/// What a table tells config inference (besides the tensors).
pub(crate) struct TableFacts {
    /// `layer_norm_eps`.
    pub(crate) eps: f64,
    /// `hidden_act`.
    pub(crate) hidden_act: Activation,
    /// The head count read from a shape symbol, if the table can tell.
    pub(crate) heads: Option<usize>,
}

/// Infers the config from canonical tensors, the table's model facts and the user's overrides.
pub(crate) fn infer_config(
    arch: Architecture,
    tensors: &[TensorInfo],
    facts: &TableFacts,
    overrides: &ConfigOverrides,
) -> Result<(ViTConfig, InferenceNotes)> {
    let get = |n: &str| tensors.iter().find(|t| t.name == n);
    let present = |n: &str| get(n).is_some();
    let mut notes = InferenceNotes::default();
    let family = arch.family();
    let patch_name = names::weight(names::patch(family));
    let patch = get(&patch_name).ok_or_else(|| cfg_err(format!("{patch_name} is missing")))?;
    let (d, c, ph) = patch_geometry(patch)?;
    let layers = (0..)
        .take_while(|&i| {
            present(&names::weight(&names::layer_of(
                family,
                i,
                LayerPart::NormBefore,
            )))
        })
        .count();
    let mut encoder = encoder_of(arch, &present);
    // The MLP width: fc1's rows, or half the packed SwiGLU projection's.
    let (fc1, halve) = match encoder.mlp {
        Mlp::SwiGlu => (
            names::weight(&names::layer_of(family, 0, LayerPart::GatedIn)),
            2,
        ),
        Mlp::Standard => (
            names::weight(&names::layer_of(family, 0, LayerPart::Intermediate)),
            1,
        ),
    };
    let inter = get(&fc1)
        .and_then(|t| t.shape.first().copied())
        .map(|m| m / halve)
        .ok_or_else(|| cfg_err(format!("{fc1} is missing")))?;
    if let Some(r) = get(names::REGISTER_TOKENS) {
        encoder.registers = match r.shape[..] {
            [1, n, dd] if dd == d && n > 0 => n,
            _ => {
                return Err(cfg_err(format!(
                    "{} has shape {:?}, expected [1, registers, {d}]",
                    names::REGISTER_TOKENS,
                    r.shape
                )))
            }
        };
    }
    // BEiT-like weights with neither a position table nor a relative position bias carry their
    // positions in rotary embeddings (timm's EVA-style `vit_*_rope_*`, DINOv3), which the
    // checkpoint does not store and HF BEiT cannot compute: converting them would silently drop
    // every position.
    if family == ModelType::Beit
        && !encoder.absolute_position
        && encoder.relative_position == RelativePosition::None
    {
        return Err(crate::error::ErrorKind::Mapping {
            table: String::new(),
            file: String::new(),
            line: 0,
            problem: crate::vocab::MappingError::Absent {
                feature: "rotary position embeddings (RoPE ViT, EVA, DINOv3): no position table and no relative position bias".to_string(),
                tensor: names::layer(0, LayerPart::RelativePositionBias),
            },
        }
        .into());
    }
    let relative = relative_table(&encoder, tensors)?;
    let table_heads = match (facts.heads, relative) {
        (Some(h), Some((_, rh))) if h != rh => return Err(mismatch("num_attention_heads", h, rh)),
        (Some(h), _) | (None, Some((_, h))) => Some(h),
        (None, None) => None,
    };
    let heads = head_count(d, table_heads, relative.is_some(), overrides, &mut notes)?;
    let positions = get(names::position_embeddings(family)).map(|pos| position_rows(family, pos));
    let image_size = match (positions, relative) {
        (Some(rows), _) => {
            let patches = rows
                .checked_sub(arch.prefix_tokens())
                .ok_or_else(|| cfg_err(format!("position embeddings have only {rows} rows")))?;
            square_root(patches).and_then(|grid| grid.checked_mul(ph))
        }
        (None, Some((rows, _))) => relative_position_grid(rows).and_then(|w| w.checked_mul(ph)),
        (None, None) => None,
    };
    let k = num_labels(arch, tensors)?;
    let id2label = (0..k).map(|i| (i, format!("LABEL_{i}"))).collect();
    let pooler = match family {
        // BEiT's pooler (mean pooling) is a LayerNorm of width D; a backbone may come without.
        ModelType::Beit => get(&names::weight(names::POOLER_NORM)).map(|_| d),
        _ => get(&names::weight(names::POOLER_DENSE)).and_then(|t| t.shape.first().copied()),
    };
    if arch == Architecture::BeitModel
        && encoder.pooling == Pooling::MeanPatchTokens
        && pooler.is_none()
    {
        notes.notes.push(
            "no pooler: load with BeitModel.from_pretrained(dir, add_pooling_layer=False)"
                .to_string(),
        );
    }
    let vocab_size = match family {
        ModelType::Beit => Some(
            get(&names::weight(names::LM_HEAD))
                .and_then(|t| t.shape.first().copied())
                .unwrap_or(8192),
        ),
        _ => None,
    };
    let projection_dim = get(&names::weight(names::VISUAL_PROJECTION))
        .filter(|_| arch == Architecture::ClipVisionModelWithProjection)
        .and_then(|t| t.shape.first().copied());
    let mut cfg = ViTConfig {
        architecture: arch,
        projection_dim,
        hidden_size: d,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: inter,
        patch_size: ph,
        image_size: image_size.unwrap_or(0),
        num_channels: c,
        encoder,
        layer_norm_eps: facts.eps,
        hidden_act: overrides.hidden_act.unwrap_or(facts.hidden_act),
        id2label,
        pooler_output_size: pooler,
        vocab_size,
        dtype: config_dtype(family, tensors).to_string(),
        extra: Map::new(),
    };
    if let Some(user) = &overrides.config {
        super::user::apply_user_config(&mut cfg, user, &mut notes)?;
    }
    if family.is_dinov2() && classifies(arch) {
        let head = names::weight(names::CLASSIFIER);
        let inputs = get(&head).and_then(|t| t.shape.get(1).copied());
        if inputs != Some(d.saturating_mul(2)) {
            return Err(cfg_err(format!(
                "a head on {} inputs: {} reads [class token, mean patch token] ({} inputs); a head on the class token alone (timm's) has no place there — convert the backbone with option `drop_head`",
                inputs.unwrap_or(0),
                arch.name(),
                d.saturating_mul(2)
            )));
        }
    }
    if family.is_dinov2() && dinov2_mlp_ratio(d, inter, cfg.encoder.mlp).is_none() {
        return Err(cfg_err(format!(
            "an MLP of width {inter} at hidden size {d} has no `mlp_ratio` transformers' DINOv2 can express"
        )));
    }
    if cfg.image_size == 0 {
        let what = match positions {
            Some(rows) => format!(
                "{} patch positions do not form a square grid",
                rows.saturating_sub(arch.prefix_tokens())
            ),
            None => "the model has neither position embeddings nor a relative position bias table to tell the image size".to_string(),
        };
        return Err(cfg_err(format!(
            "{what}; give image_size with option `config`"
        )));
    }
    check_geometry(&cfg, tensors)?;
    Ok((cfg, notes))
}

/// The rows of a family's position table (`[1, T, D]`, or `[T, D]` in CLIP-style towers).
pub(crate) fn position_rows(family: ModelType, pos: &TensorInfo) -> usize {
    let axis = if family.is_clip_style() { 0 } else { 1 };
    pos.shape.get(axis).copied().unwrap_or(0)
}

/// The relative position bias table's rows and heads (layer 0's or the shared one), checked to
/// be `[(2w-1)² + 3, H]`.
fn relative_table(encoder: &Encoder, tensors: &[TensorInfo]) -> Result<Option<(usize, usize)>> {
    let name = match encoder.relative_position {
        RelativePosition::None => return Ok(None),
        RelativePosition::PerLayer => names::layer(0, LayerPart::RelativePositionBias),
        RelativePosition::Shared => names::SHARED_RELATIVE_POSITION_BIAS.to_string(),
    };
    let Some(t) = tensors.iter().find(|t| t.name == name) else {
        return Ok(None);
    };
    match t.shape[..] {
        [rows, heads] if heads > 0 && relative_position_grid(rows).is_some() => {
            Ok(Some((rows, heads)))
        }
        _ => Err(cfg_err(format!(
            "{name} has shape {:?}, expected [(2·grid-1)² + 3, num_attention_heads]",
            t.shape
        ))),
    }
}

/// The hidden size, channel count and patch size from the patch embedding kernel `[D, C, P, P]`.
fn patch_geometry(patch: &TensorInfo) -> Result<(usize, usize, usize)> {
    let [d, c, ph, pw] = patch.shape[..] else {
        return Err(cfg_err(format!(
            "patch embedding has shape {:?}, expected [D, C, P, P]",
            patch.shape
        )));
    };
    if ph != pw {
        return Err(cfg_err(format!(
            "non-square patches {ph}x{pw} are not supported"
        )));
    }
    if d == 0 || c == 0 || ph == 0 {
        return Err(cfg_err(format!(
            "zero-sized patch embedding kernel {:?}",
            patch.shape
        )));
    }
    Ok((d, c, ph))
}

/// The head count: from the tensors (when the table's shape symbols or a relative position bias
/// table can tell), else option `num_heads` or the config's `num_attention_heads`, else hidden
/// size / 64; how it was found goes into `notes`. It must divide the hidden size `d`.
fn head_count(
    d: usize,
    heads_from_tensors: Option<usize>,
    from_bias_table: bool,
    overrides: &ConfigOverrides,
    notes: &mut InferenceNotes,
) -> Result<usize> {
    let config_heads = match overrides
        .config
        .as_ref()
        .and_then(|c| c.get("num_attention_heads"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|h| usize::try_from(h).ok())
                .ok_or_else(|| {
                    cfg_err(format!(
                        "option `config`: `num_attention_heads` must be a non-negative integer, got {}",
                        short(v)
                    ))
                })?,
        ),
    };
    let source = if from_bias_table {
        "the relative position bias table's shape"
    } else {
        "the attention kernel shapes"
    };
    let heads = match (heads_from_tensors, overrides.num_heads.or(config_heads)) {
        (Some(h), Some(o)) if h != o => {
            return Err(cfg_err(format!(
                "option `num_heads` {o} contradicts the {h} heads in {source}"
            )))
        }
        (Some(h), _) => {
            notes
                .notes
                .push(format!("num_attention_heads = {h} (from {source})"));
            h
        }
        (None, Some(o)) => {
            notes.notes.push(format!(
                "num_attention_heads = {o} (from {})",
                if overrides.num_heads.is_some() {
                    "option `num_heads`"
                } else {
                    "the config: option `config` or config.json beside the input"
                }
            ));
            o
        }
        (None, None) => {
            if d % 64 != 0 || d == 0 {
                return Err(cfg_err(format!(
                    "cannot infer the head count (num_attention_heads): hidden size {d} is not a multiple of 64; set option `num_heads`"
                )));
            }
            notes.notes.push(format!(
                "num_attention_heads = {} (assumed hidden_size/64; the checkpoint does not record it — set option `num_heads` if wrong)",
                d / 64
            ));
            d / 64
        }
    };
    if heads == 0 || d % heads != 0 {
        return Err(cfg_err(format!(
            "hidden_size {d} is not divisible by num_attention_heads {heads}"
        )));
    }
    Ok(heads)
}

/// The class count of the architecture's classifier (0 without one), checked.
fn num_labels(arch: Architecture, tensors: &[TensorInfo]) -> Result<usize> {
    if !classifies(arch) {
        return Ok(0);
    }
    let head = names::weight(names::CLASSIFIER);
    let k = tensors
        .iter()
        .find(|t| t.name == head)
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0);
    check_classes(k)?;
    Ok(k)
}

/// Whether the class has a classifier over labels (`id2label`).
pub(crate) fn classifies(arch: Architecture) -> bool {
    matches!(
        arch,
        Architecture::ViTForImageClassification
            | Architecture::DeiTForImageClassificationWithTeacher
            | Architecture::BeitForImageClassification
            | Architecture::Dinov2ForImageClassification
            | Architecture::Dinov2WithRegistersForImageClassification
    )
}

/// The config's `dtype`: the first layer norm's.
fn config_dtype(family: ModelType, tensors: &[TensorInfo]) -> &'static str {
    let ln = names::weight(&names::layer_of(family, 0, LayerPart::NormBefore));
    match tensors.iter().find(|t| t.name == ln).map(|t| t.dtype) {
        Some(crate::DType::F16) => "float16",
        Some(crate::DType::BF16) => "bfloat16",
        Some(crate::DType::F64) => "float64",
        _ => "float32",
    }
}

/// Checks `config` in itself ([`ViTConfig::tokens`]) and that its `image_size` / `patch_size`
/// give the position embedding rows and relative position bias rows the tensors hold.
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) naming `image_size`, `patch_size` and both
/// counts.
pub(crate) fn check_geometry(config: &ViTConfig, tensors: &[TensorInfo]) -> Result<()> {
    let shape = |n: &str| tensors.iter().find(|t| t.name == n).map(|t| &t.shape);
    let family = config.architecture.family();
    let axis = if family.is_clip_style() { 0 } else { 1 };
    if let Some(rows) = shape(names::position_embeddings(family)).and_then(|s| s.get(axis)) {
        check_positions(config, *rows)?;
    } else {
        config.tokens()?;
    }
    for name in relative_tables(config) {
        if let Some(rows) = shape(&name).and_then(|s| s.first()) {
            check_relative_rows(config, &name, *rows)?;
        }
    }
    Ok(())
}

/// The relative position bias tables a config implies.
pub(crate) fn relative_tables(config: &ViTConfig) -> Vec<String> {
    match config.encoder.relative_position {
        RelativePosition::None => Vec::new(),
        RelativePosition::Shared => vec![names::SHARED_RELATIVE_POSITION_BIAS.to_string()],
        RelativePosition::PerLayer => (0..config.num_hidden_layers)
            .map(|i| names::layer(i, LayerPart::RelativePositionBias))
            .collect(),
    }
}

/// A relative position bias table of `rows` rows must fit the config's patch grid.
pub(crate) fn check_relative_rows(config: &ViTConfig, name: &str, rows: usize) -> Result<()> {
    let grid = config.grid();
    let want = relative_position_rows(grid);
    if want != Some(rows) {
        let held = relative_position_grid(rows)
            .and_then(|w| w.checked_mul(config.patch_size))
            .map_or(String::new(), |s| format!(", i.e. image_size {s}"));
        return Err(cfg_err(format!(
            "image_size {} with patch_size {} gives a {grid}x{grid} grid, whose relative position bias has {} rows; {name} holds {rows}{held}",
            config.image_size,
            config.patch_size,
            want.map_or_else(|| "too many".to_string(), |w| w.to_string())
        )));
    }
    Ok(())
}

/// Checks `config` in itself ([`ViTConfig::tokens`]) and that its `image_size` / `patch_size`
/// give the `rows` position embeddings the tensors hold.
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) naming `image_size`, `patch_size` and both
/// position counts.
pub(crate) fn check_positions(config: &ViTConfig, rows: usize) -> Result<()> {
    // Register tokens have no position.
    let tokens = config.tokens()? - config.encoder.registers;
    if tokens != rows {
        let held = rows
            .checked_sub(config.architecture.prefix_tokens())
            .and_then(square_root)
            .filter(|&g| g > 0)
            .and_then(|g| g.checked_mul(config.patch_size))
            .map_or(String::new(), |s| format!(", i.e. image_size {s}"));
        return Err(cfg_err(format!(
            "image_size {} with patch_size {} gives {tokens} positions, the weights hold {rows}{held}",
            config.image_size, config.patch_size
        )));
    }
    Ok(())
}

/// The exact set of canonical tensor names a config implies (unprefixed; heads as is).
pub(crate) fn expected_names(cfg: &ViTConfig) -> BTreeSet<String> {
    let e = cfg.encoder;
    let arch = cfg.architecture;
    let mut s = BTreeSet::new();
    let module = |s: &mut BTreeSet<String>, base: &str, bias: bool| {
        s.insert(names::weight(base));
        if bias {
            s.insert(names::bias(base));
        }
    };
    let family = arch.family();
    if e.class_token {
        s.insert(names::cls_token(family).to_string());
    }
    if arch.prefix_tokens() == 2 {
        s.insert(names::DISTILLATION_TOKEN.to_string());
    }
    if e.mask_token {
        s.insert(names::MASK_TOKEN.to_string());
    }
    if e.registers > 0 {
        s.insert(names::REGISTER_TOKENS.to_string());
    }
    if e.absolute_position {
        s.insert(names::position_embeddings(family).to_string());
    }
    // CLIP's patch convolution has no bias.
    module(
        &mut s,
        names::patch(family),
        family != ModelType::ClipVision,
    );
    if e.pre_norm {
        module(&mut s, names::PRE_NORM, true);
    }
    let [qb, kb, vb] = e.qkv_bias.flags();
    for i in 0..cfg.num_hidden_layers {
        let part = |p| names::layer_of(family, i, p);
        module(&mut s, &part(LayerPart::NormBefore), true);
        module(&mut s, &part(LayerPart::Query), qb);
        module(&mut s, &part(LayerPart::Key), kb);
        module(&mut s, &part(LayerPart::Value), vb);
        module(&mut s, &part(LayerPart::AttentionOutput), true);
        module(&mut s, &part(LayerPart::NormAfter), true);
        match e.mlp {
            Mlp::Standard => {
                module(&mut s, &part(LayerPart::Intermediate), true);
                module(&mut s, &part(LayerPart::Output), true);
            }
            Mlp::SwiGlu => {
                module(&mut s, &part(LayerPart::GatedIn), true);
                module(&mut s, &part(LayerPart::GatedOut), true);
            }
        }
        if e.layer_scale {
            s.insert(part(LayerPart::Lambda1));
            s.insert(part(LayerPart::Lambda2));
        }
    }
    s.extend(relative_tables(cfg));
    // The body's final norm, or the masked-image-modelling head's norm (same name, top level).
    if e.final_norm()
        || arch == Architecture::BeitForMaskedImageModeling
        || e.pooling == Pooling::ClassTokenPostNorm
    {
        module(&mut s, names::final_norm(family), true);
    }
    if arch == Architecture::ClipVisionModelWithProjection {
        module(&mut s, names::VISUAL_PROJECTION, false);
    }
    if e.pooling == Pooling::Map {
        s.insert(names::MAP_PROBE.to_string());
        s.insert(names::MAP_IN_PROJ_WEIGHT.to_string());
        s.insert(names::MAP_IN_PROJ_BIAS.to_string());
        for m in [
            names::MAP_OUT_PROJ,
            names::MAP_NORM,
            names::MAP_FC1,
            names::MAP_FC2,
        ] {
            module(&mut s, m, true);
        }
    }
    let beit = arch.family() == ModelType::Beit;
    if cfg.has_pooler() && !beit {
        module(&mut s, names::POOLER_DENSE, true);
    }
    // BEiT's mean-pooling norm: BeitForImageClassification always has it, a BeitModel backbone
    // when it was saved with its pooler.
    if e.pooling == Pooling::MeanPatchTokens
        && (arch == Architecture::BeitForImageClassification
            || (arch == Architecture::BeitModel && cfg.has_pooler()))
    {
        module(&mut s, names::POOLER_NORM, true);
    }
    if classifies(arch) {
        module(&mut s, names::CLASSIFIER, true);
    }
    if arch == Architecture::DeiTForImageClassificationWithTeacher {
        module(&mut s, names::DISTILLATION_CLASSIFIER, true);
    }
    if arch == Architecture::BeitForMaskedImageModeling {
        module(&mut s, names::LM_HEAD, true);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn config() -> ViTConfig {
        ViTConfig::from_json(&json!({
            "architectures": ["ViTModel"], "hidden_size": 8, "num_hidden_layers": 0,
            "num_attention_heads": 1, "intermediate_size": 4, "patch_size": 8, "image_size": 32
        }))
        .unwrap()
    }

    #[test]
    fn positions_that_hold_no_patch_name_no_image_size() {
        for rows in [0, 1] {
            let e = check_positions(&config(), rows).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("gives 17 positions, the weights hold {rows}"))
                    && !msg.contains("i.e."),
                "{msg}"
            );
        }
        let msg = check_positions(&config(), 65).unwrap_err().to_string();
        assert!(
            msg.ends_with("the weights hold 65, i.e. image_size 64"),
            "{msg}"
        );
    }

    #[test]
    fn num_labels_must_count_id2label_and_alone_names_the_labels() {
        let mut v = config().to_json();
        v["num_labels"] = json!(2);
        let c = ViTConfig::from_json(&v).unwrap();
        assert_eq!(c.id2label.get(&1).map(String::as_str), Some("LABEL_1"));
        v["id2label"] = json!({"0": "a"});
        let e = ViTConfig::from_json(&v).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Config { reason } if reason == "`num_labels` is 2, but `id2label` has 1 labels"),
            "{e:?}"
        );
    }

    #[test]
    fn beit_config_round_trips_and_implies_its_names() {
        let v = json!({
            "architectures": ["BeitForImageClassification"], "model_type": "beit",
            "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 4, "patch_size": 8, "image_size": 32, "num_labels": 3,
            "use_relative_position_bias": true, "use_mean_pooling": true,
            "layer_scale_init_value": 0.1
        });
        let c = ViTConfig::from_json(&v).unwrap();
        assert_eq!(c.encoder.relative_position, RelativePosition::PerLayer);
        assert_eq!(c.encoder.qkv_bias, QkvBias::QueryValue);
        assert_eq!(ViTConfig::from_json(&c.to_json()).unwrap(), c);
        let names = expected_names(&c);
        for n in [
            "encoder.layer.0.lambda_1",
            "encoder.layer.0.attention.attention.relative_position_bias.relative_position_bias_table",
            "encoder.layer.0.attention.attention.query.bias",
            "pooler.layernorm.weight",
            "classifier.weight",
        ] {
            assert!(names.contains(n), "{n}");
        }
        for n in [
            "encoder.layer.0.attention.attention.key.bias",
            "layernorm.weight",
            "embeddings.position_embeddings",
        ] {
            assert!(!names.contains(n), "{n}");
        }
        assert_eq!(family_of(&names), ModelType::Beit);
        assert_eq!(
            architecture_of(ModelType::Beit, &names).0,
            Architecture::BeitForImageClassification
        );
    }

    /// Every canonical name any supported architecture can hold (layer 0 for the per-layer ones):
    /// the union of [`expected_names`] over one configuration per feature.
    fn every_canonical_name() -> BTreeSet<String> {
        let base = config();
        let mut all = BTreeSet::new();
        let mut add = |arch: Architecture, f: &dyn Fn(&mut ViTConfig)| {
            let mut c = base.clone();
            c.architecture = arch;
            c.encoder = Encoder::of(arch.family());
            c.num_hidden_layers = 1;
            c.id2label = [(0, "a".to_string())].into_iter().collect();
            f(&mut c);
            all.extend(expected_names(&c));
        };
        for arch in Architecture::ALL {
            add(arch, &|_| {});
        }
        add(Architecture::ViTModel, &|c| c.pooler_output_size = Some(8));
        add(Architecture::BeitModel, &|c| {
            c.encoder.absolute_position = true;
            c.encoder.mask_token = true;
            c.encoder.pooling = Pooling::ClassToken;
        });
        add(Architecture::BeitForMaskedImageModeling, &|c| {
            c.encoder.relative_position = RelativePosition::Shared;
        });
        add(Architecture::Dinov2WithRegistersModel, &|c| {
            c.encoder.registers = 4;
            c.encoder.mlp = Mlp::SwiGlu;
        });
        all
    }

    /// Canonical names are spelled once (`model::names`): every built-in table's targets must be
    /// among the names some architecture holds, so a typo in a table cannot invent a tensor.
    #[test]
    fn every_builtin_table_targets_canonical_names() {
        let all = every_canonical_name();
        for table in crate::mapping::MappingTable::builtins().unwrap() {
            for rule in &table.rules {
                for to in &rule.to {
                    let name = to.render(Some(0));
                    assert!(all.contains(&name), "{}: {name}", table.file);
                }
            }
        }
        // And every canonical name is produced by some table (the tables cover the model).
        let produced: BTreeSet<String> = crate::mapping::MappingTable::builtins()
            .unwrap()
            .iter()
            .flat_map(|t| {
                t.rules
                    .iter()
                    .flat_map(|r| r.to.iter().map(|p| p.render(Some(0))))
            })
            .collect();
        let unproduced: Vec<&String> = all.difference(&produced).collect();
        assert!(unproduced.is_empty(), "{unproduced:?}");
    }

    /// BEiT-like weights without any position information (RoPE ViTs keep their frequencies
    /// out of the state dict) are refused naming rotary embeddings, never converted position-free.
    #[test]
    fn beit_weights_without_positions_are_refused_as_rope() {
        use crate::tensor::{DType, TensorInfo};
        let t = |n: &str, shape: &[usize]| TensorInfo {
            name: n.to_string(),
            dtype: DType::F32,
            shape: shape.to_vec(),
        };
        let mut tensors = vec![
            t("embeddings.cls_token", &[1, 1, 8]),
            t(
                "embeddings.patch_embeddings.projection.weight",
                &[8, 3, 4, 4],
            ),
            t("embeddings.patch_embeddings.projection.bias", &[8]),
        ];
        for p in ["layernorm_before", "layernorm_after"] {
            tensors.push(t(&format!("encoder.layer.0.{p}.weight"), &[8]));
        }
        tensors.push(t("encoder.layer.0.intermediate.dense.weight", &[16, 8]));
        tensors.push(t("encoder.layer.0.lambda_1", &[8]));
        let facts = TableFacts {
            eps: 1e-6,
            hidden_act: Activation::Gelu,
            heads: None,
        };
        let overrides = ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        };
        let e = infer_config(Architecture::BeitModel, &tensors, &facts, &overrides).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Mapping { problem: crate::vocab::MappingError::Absent { feature, .. }, .. } if feature.starts_with("rotary position embeddings")),
            "{e}"
        );
    }
}
