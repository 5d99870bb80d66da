//! The canonical tensor names: the Hugging Face on-disk names without the model prefix (`vit.`,
//! `deit.`, `beit.`). This is the only place they are spelled: config inference
//! ([`expected_names`](super::expected_names)), the forward pass and the test that checks every
//! built-in table's targets all build names from here.

use super::ModelType;

/// `[1, 1, D]` class token.
pub(crate) const CLS_TOKEN: &str = "embeddings.cls_token";
/// `[1, 1, D]` DeiT's distillation token.
pub(crate) const DISTILLATION_TOKEN: &str = "embeddings.distillation_token";
/// `[1, 1, D]` BEiT's mask token (used only with `bool_masked_pos`, which the reference pass
/// does not take; carried for masked-image modelling).
pub(crate) const MASK_TOKEN: &str = "embeddings.mask_token";
/// `[1, R, D]` DINOv2's register tokens (inserted after the class token, after the positions).
pub(crate) const REGISTER_TOKENS: &str = "embeddings.register_tokens";
/// `[1, T, D]` learned absolute position embeddings.
pub(crate) const POSITION_EMBEDDINGS: &str = "embeddings.position_embeddings";
/// The patch embedding convolution (`.weight` `[D, C, P, P]`, `.bias` `[D]`).
pub(crate) const PATCH: &str = "embeddings.patch_embeddings.projection";
/// The final LayerNorm of the body (ViT, DeiT; BEiT without mean pooling), or the head's
/// LayerNorm of `BeitForMaskedImageModeling`.
pub(crate) const FINAL_NORM: &str = "layernorm";
/// ViT's pooler: dense + tanh on the class token.
pub(crate) const POOLER_DENSE: &str = "pooler.dense";
/// BEiT's pooler: LayerNorm of the mean patch token.
pub(crate) const POOLER_NORM: &str = "pooler.layernorm";
/// The classification head (DeiT with teacher: the class-token head, written `cls_classifier`).
pub(crate) const CLASSIFIER: &str = "classifier";
/// DeiT's distillation head.
pub(crate) const DISTILLATION_CLASSIFIER: &str = "distillation_classifier";
/// BEiT's masked-image-modelling head `[V, D]`.
pub(crate) const LM_HEAD: &str = "lm_head";
/// CLIP's projection head `[projection_dim, D]` (no bias; `image_embeds`).
pub(crate) const VISUAL_PROJECTION: &str = "visual_projection";
/// SigLIP's multi-head attention pooling (MAP) head, inside the tower: the probe `[1, 1, D]`.
pub(crate) const MAP_PROBE: &str = "head.probe";
/// The MAP head's packed q/k/v projection (`_weight` `[3·D, D]`, `_bias` `[3·D]`).
pub(crate) const MAP_IN_PROJ_WEIGHT: &str = "head.attention.in_proj_weight";
/// The MAP head's packed q/k/v bias.
pub(crate) const MAP_IN_PROJ_BIAS: &str = "head.attention.in_proj_bias";
/// The MAP head's attention output projection.
pub(crate) const MAP_OUT_PROJ: &str = "head.attention.out_proj";
/// The MAP head's LayerNorm.
pub(crate) const MAP_NORM: &str = "head.layernorm";
/// The MAP head's MLP up projection.
pub(crate) const MAP_FC1: &str = "head.mlp.fc1";
/// The MAP head's MLP down projection.
pub(crate) const MAP_FC2: &str = "head.mlp.fc2";
/// CLIP's LayerNorm before the layers (sic: transformers spells it `pre_layrnorm`).
pub(crate) const PRE_NORM: &str = "pre_layrnorm";

/// The class token of a family: `[1, 1, D]` `embeddings.cls_token`, or CLIP's `[D]`
/// `embeddings.class_embedding`.
pub(crate) fn cls_token(family: ModelType) -> &'static str {
    if family.is_clip_style() {
        "embeddings.class_embedding"
    } else {
        CLS_TOKEN
    }
}

/// The position table of a family: `[1, T, D]` `embeddings.position_embeddings`, or CLIP's and
/// SigLIP's `[T, D]` `embeddings.position_embedding.weight`.
pub(crate) fn position_embeddings(family: ModelType) -> &'static str {
    if family.is_clip_style() {
        "embeddings.position_embedding.weight"
    } else {
        POSITION_EMBEDDINGS
    }
}

/// The patch embedding convolution of a family (a module: add `.weight` / `.bias`).
pub(crate) fn patch(family: ModelType) -> &'static str {
    if family.is_clip_style() {
        "embeddings.patch_embedding"
    } else {
        PATCH
    }
}

/// The final LayerNorm of a family's body (`layernorm`, CLIP's and SigLIP's `post_layernorm`).
pub(crate) fn final_norm(family: ModelType) -> &'static str {
    if family.is_clip_style() {
        "post_layernorm"
    } else {
        FINAL_NORM
    }
}

/// BEiT's relative position bias table shared by every layer, `[(2W-1)² + 3, H]`.
pub(crate) const SHARED_RELATIVE_POSITION_BIAS: &str =
    "encoder.relative_position_bias.relative_position_bias_table";

/// The parts of encoder layer `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayerPart {
    /// LayerNorm before attention.
    NormBefore,
    /// Attention query projection.
    Query,
    /// Attention key projection.
    Key,
    /// Attention value projection.
    Value,
    /// Attention output projection.
    AttentionOutput,
    /// LayerNorm before the MLP.
    NormAfter,
    /// MLP up projection.
    Intermediate,
    /// MLP down projection.
    Output,
    /// Layer scale of the attention branch (`[D]`, BEiT `lambda_1`).
    Lambda1,
    /// Layer scale of the MLP branch (`[D]`, BEiT `lambda_2`).
    Lambda2,
    /// The layer's own relative position bias table (BEiT, `[(2W-1)² + 3, H]`).
    RelativePositionBias,
    /// SwiGLU's packed gate and up projection (`[2·M, D]`: the gate's rows first; DINOv2
    /// `weights_in`).
    GatedIn,
    /// SwiGLU's down projection (`[D, M]`; DINOv2 `weights_out`).
    GatedOut,
}

impl LayerPart {
    /// The part's path inside layer `i` in a family's names: ViT, DeiT and BEiT share HF ViT's;
    /// DINOv2's differ for the norms, the MLP and the layer scale.
    fn path(self, family: ModelType) -> &'static str {
        if family.is_clip_style() {
            return match self {
                LayerPart::NormBefore => "layer_norm1",
                LayerPart::NormAfter => "layer_norm2",
                LayerPart::Query => "self_attn.q_proj",
                LayerPart::Key => "self_attn.k_proj",
                LayerPart::Value => "self_attn.v_proj",
                LayerPart::AttentionOutput => "self_attn.out_proj",
                LayerPart::Intermediate => "mlp.fc1",
                LayerPart::Output => "mlp.fc2",
                // Not in CLIP-style towers; named for completeness only.
                LayerPart::Lambda1 => "lambda_1",
                LayerPart::Lambda2 => "lambda_2",
                LayerPart::RelativePositionBias => "relative_position_bias_table",
                LayerPart::GatedIn => "mlp.weights_in",
                LayerPart::GatedOut => "mlp.weights_out",
            };
        }
        match (self, family.is_dinov2()) {
            (LayerPart::NormBefore, true) => "norm1",
            (LayerPart::NormAfter, true) => "norm2",
            (LayerPart::Intermediate, true) => "mlp.fc1",
            (LayerPart::Output, true) => "mlp.fc2",
            (LayerPart::Lambda1, true) => "layer_scale1.lambda1",
            (LayerPart::Lambda2, true) => "layer_scale2.lambda1",
            (LayerPart::NormBefore, false) => "layernorm_before",
            (LayerPart::NormAfter, false) => "layernorm_after",
            (LayerPart::Intermediate, false) => "intermediate.dense",
            (LayerPart::Output, false) => "output.dense",
            (LayerPart::Lambda1, false) => "lambda_1",
            (LayerPart::Lambda2, false) => "lambda_2",
            (LayerPart::Query, _) => "attention.attention.query",
            (LayerPart::Key, _) => "attention.attention.key",
            (LayerPart::Value, _) => "attention.attention.value",
            (LayerPart::AttentionOutput, _) => "attention.output.dense",
            (LayerPart::RelativePositionBias, _) => {
                "attention.attention.relative_position_bias.relative_position_bias_table"
            }
            (LayerPart::GatedIn, _) => "mlp.weights_in",
            (LayerPart::GatedOut, _) => "mlp.weights_out",
        }
    }
}

/// The name of a part of encoder layer `i` in a family's names: a module path (add [`weight`] /
/// [`bias`]) for the linear and norm parts, the tensor itself for the lambdas and the bias table.
pub(crate) fn layer_of(family: ModelType, i: usize, part: LayerPart) -> String {
    let layers = if family.is_clip_style() {
        "encoder.layers"
    } else {
        "encoder.layer"
    };
    format!("{layers}.{i}.{}", part.path(family))
}

/// [`layer_of`] in HF ViT's names (ViT, DeiT, BEiT).
pub(crate) fn layer(i: usize, part: LayerPart) -> String {
    layer_of(ModelType::Vit, i, part)
}

/// `base.weight`.
pub(crate) fn weight(base: &str) -> String {
    format!("{base}.weight")
}

/// `base.bias`.
pub(crate) fn bias(base: &str) -> String {
    format!("{base}.bias")
}

/// The encoder layer index a canonical name belongs to (`encoder.layer.{i}.…`,
/// `encoder.layers.{i}.…`).
pub(crate) fn layer_index(name: &str) -> Option<usize> {
    let rest = name
        .strip_prefix("encoder.layer.")
        .or_else(|| name.strip_prefix("encoder.layers."))?;
    let (i, _) = rest.split_once('.')?;
    i.parse().ok()
}

/// Heads are written without the body's prefix. `BeitForMaskedImageModeling` keeps its head
/// LayerNorm at the top level too (`layernorm.*` beside `beit.*`).
pub(crate) fn is_head(arch: super::Architecture, name: &str) -> bool {
    let head_module = |m: &str| {
        name.strip_prefix(m)
            .is_some_and(|rest| rest.starts_with('.'))
    };
    [
        CLASSIFIER,
        "cls_classifier",
        DISTILLATION_CLASSIFIER,
        LM_HEAD,
        VISUAL_PROJECTION,
    ]
    .into_iter()
    .any(head_module)
        || (arch == super::Architecture::BeitForMaskedImageModeling && head_module(FINAL_NORM))
}
