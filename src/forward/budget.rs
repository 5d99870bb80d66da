//! The budgets a forward pass is checked against before it allocates anything.

use crate::error::Result;
use crate::model::ViTConfig;
use crate::source::limits::check_within;
use crate::source::Limits;

/// Checks the tokens per image a forward pass of `config` on a `[B, C, H, W]` batch runs (patches
/// plus prefix tokens) against [`Limits::forward_tokens`].
///
/// # Errors
/// [`ErrorKind::BudgetExceeded`](crate::ErrorKind::BudgetExceeded) (`forward tokens`; offset 0).
pub(crate) fn check_forward_tokens(
    config: &ViTConfig,
    (_, _, h, w): (usize, usize, usize, usize),
    limits: &Limits,
) -> Result<()> {
    let p = config.patch_size.max(1);
    let tokens = (h / p)
        .saturating_mul(w / p)
        .saturating_add(config.architecture.prefix_tokens())
        .saturating_add(config.encoder.registers);
    check_within("forward tokens", Some(tokens), limits.forward_tokens)
}

/// Checks the activation memory a forward pass of `config` on a `[B, C, H, W]` batch allocates
/// (float32 patches, embeddings, eight `[B·T, hidden]` buffers and one `[B·T, intermediate]`,
/// relative position biases, the masked-image-modelling head's logits)
/// against [`Limits::forward_bytes`], with checked arithmetic.
///
/// # Errors
/// [`ErrorKind::BudgetExceeded`](crate::ErrorKind::BudgetExceeded) (`forward bytes`; offset 0).
pub(crate) fn check_forward_bytes(
    config: &ViTConfig,
    (b, c, h, w): (usize, usize, usize, usize),
    limits: &Limits,
) -> Result<()> {
    let p = config.patch_size.max(1);
    let d = config.hidden_size;
    let bytes = (|| {
        let patches = (h / p).checked_mul(w / p)?.checked_mul(b)?;
        let rows = (h / p)
            .checked_mul(w / p)?
            .checked_add(config.architecture.prefix_tokens())?
            .checked_add(config.encoder.registers)?
            .checked_mul(b)?;
        let patch_values = patches.checked_mul(c.checked_mul(p)?.checked_mul(p)?)?;
        let emb = patches.checked_mul(d)?;
        // SwiGLU adds its packed gate and up projections: two more widths per row.
        let mlp = match config.encoder.mlp {
            crate::model::Mlp::Standard => config.intermediate_size,
            crate::model::Mlp::SwiGlu => config.intermediate_size.checked_mul(3)?,
        };
        let per_row = d.checked_mul(8)?.checked_add(mlp)?;
        // Relative position bias: a layer's own [H, T, T] and a shared one, and the [T, T]
        // index (8-byte entries: two f32 slots each).
        let tokens = rows / b.max(1);
        let bias = match config.encoder.relative_position {
            crate::model::RelativePosition::None => 0,
            _ => config
                .num_attention_heads
                .checked_add(1)?
                .checked_mul(tokens)?
                .checked_mul(tokens)?
                .checked_mul(2)?,
        };
        // The masked-image-modelling head: a normed copy and [B, N, V] logits.
        let mim = match config.vocab_size {
            Some(v)
                if config.architecture
                    == crate::model::Architecture::BeitForMaskedImageModeling =>
            {
                rows.checked_mul(d.checked_mul(2)?)?
                    .checked_add(patches.checked_mul(v)?)?
            }
            _ => 0,
        };
        patch_values
            .checked_add(emb)?
            .checked_add(rows.checked_mul(per_row)?)?
            .checked_add(bias)?
            .checked_add(mim)?
            .checked_mul(4)
    })();
    check_within("forward bytes", bytes, limits.forward_bytes)
}
