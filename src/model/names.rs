//! The canonical tensor names: the Hugging Face on-disk names without the model prefix (`vit.`,
//! `deit.`, `beit.`). This is the only place they are spelled: config inference
//! ([`expected_names`](super::expected_names)), the forward pass and the test that checks every
//! built-in table's targets all build names from here.

/// `[1, 1, D]` class token.
pub(crate) const CLS_TOKEN: &str = "embeddings.cls_token";
/// `[1, 1, D]` DeiT's distillation token.
pub(crate) const DISTILLATION_TOKEN: &str = "embeddings.distillation_token";
/// `[1, 1, D]` BEiT's mask token (used only with `bool_masked_pos`, which the reference pass
/// does not take; carried for masked-image modelling).
pub(crate) const MASK_TOKEN: &str = "embeddings.mask_token";
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
}

impl LayerPart {
    fn path(self) -> &'static str {
        match self {
            LayerPart::NormBefore => "layernorm_before",
            LayerPart::Query => "attention.attention.query",
            LayerPart::Key => "attention.attention.key",
            LayerPart::Value => "attention.attention.value",
            LayerPart::AttentionOutput => "attention.output.dense",
            LayerPart::NormAfter => "layernorm_after",
            LayerPart::Intermediate => "intermediate.dense",
            LayerPart::Output => "output.dense",
            LayerPart::Lambda1 => "lambda_1",
            LayerPart::Lambda2 => "lambda_2",
            LayerPart::RelativePositionBias => {
                "attention.attention.relative_position_bias.relative_position_bias_table"
            }
        }
    }
}

/// The name of a part of encoder layer `i`: a module path (add [`weight`] / [`bias`]) for the
/// linear and norm parts, the tensor itself for the lambdas and the bias table.
pub(crate) fn layer(i: usize, part: LayerPart) -> String {
    format!("encoder.layer.{i}.{}", part.path())
}

/// `base.weight`.
pub(crate) fn weight(base: &str) -> String {
    format!("{base}.weight")
}

/// `base.bias`.
pub(crate) fn bias(base: &str) -> String {
    format!("{base}.bias")
}

/// The encoder layer index a canonical name belongs to (`encoder.layer.{i}.…`).
pub(crate) fn layer_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("encoder.layer.")?;
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
    ]
    .into_iter()
    .any(head_module)
        || (arch == super::Architecture::BeitForMaskedImageModeling && head_module(FINAL_NORM))
}
