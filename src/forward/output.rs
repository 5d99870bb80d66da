//! [`Output`]: which output of a forward pass `verify` compares and `forward --output` writes.

use serde::Serialize;

use super::ForwardOutput;
use crate::error::{ErrorKind, Result};

/// An output of the forward pass, as `--compare` names it.
///
/// ```
/// use vit_convert::forward::Output;
/// let o: Output = "pooler".parse()?;
/// assert_eq!(o.name(), "pooler");
/// assert!("pooled".parse::<Output>().is_err());
/// # Ok::<(), vit_convert::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Output {
    /// The head's logits: `[B, K]` for a classifier (DeiT with teacher: the mean of both
    /// heads), `[B, N, V]` for BEiT's masked-image-modelling head.
    Logits,
    /// The architecture's pooled output `[B, R]`: ViT's dense + tanh on the class token, BEiT's
    /// LayerNorm of the mean patch token (or its class token without mean pooling).
    Pooler,
    /// The last hidden state `[B, T, D]`.
    LastHiddenState,
    /// The projected image embedding `[B, projection_dim]` (CLIP with projection).
    ImageEmbeds,
}

impl Output {
    /// Every output, in a fixed order.
    pub const ALL: [Output; 4] = [
        Output::Logits,
        Output::Pooler,
        Output::LastHiddenState,
        Output::ImageEmbeds,
    ];

    /// The name (`logits`, `pooler`, `last_hidden_state`, `image_embeds`).
    pub fn name(self) -> &'static str {
        match self {
            Output::Logits => "logits",
            Output::Pooler => "pooler",
            Output::LastHiddenState => "last_hidden_state",
            Output::ImageEmbeds => "image_embeds",
        }
    }
}

crate::error::impl_names!(Output, "compare", Output::ALL.into_iter());

impl ForwardOutput {
    /// The output `which` names, or the default one (`None`): logits when the model has a head,
    /// else `last_hidden_state`. Returns which it is, its shape and its values (row-major).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidOption`] when the model has no such output (a headless model's
    /// logits, a pooler-less model's pooled output).
    pub fn select(&self, which: Option<Output>) -> Result<(Output, Vec<usize>, Vec<f32>)> {
        let which = which.unwrap_or(if self.has_logits() {
            Output::Logits
        } else {
            Output::LastHiddenState
        });
        let flat = |shape: &[usize], v: Vec<f32>| Ok((which, shape.to_vec(), v));
        match which {
            Output::Logits => match (&self.logits, &self.token_logits) {
                (Some(l), _) => flat(l.shape(), l.iter().copied().collect()),
                (None, Some(l)) => flat(l.shape(), l.iter().copied().collect()),
                (None, None) => Err(missing(which, "the model has no head")),
            },
            Output::Pooler => match &self.pooler_output {
                Some(p) => flat(p.shape(), p.iter().copied().collect()),
                None => Err(missing(which, "the model has no pooler")),
            },
            Output::LastHiddenState => {
                let h = &self.last_hidden_state;
                if h.shape().get(1) == Some(&0) {
                    return Err(missing(
                        which,
                        "not computed (the pass ran with option `heads_only`)",
                    ));
                }
                flat(h.shape(), h.iter().copied().collect())
            }
            Output::ImageEmbeds => match &self.image_embeds {
                Some(e) => flat(e.shape(), e.iter().copied().collect()),
                None => Err(missing(
                    which,
                    "the model has no image projection (CLIP with projection)",
                )),
            },
        }
    }

    /// Whether the model produced logits (a classifier or a masked-image-modelling head).
    pub fn has_logits(&self) -> bool {
        self.logits.is_some() || self.token_logits.is_some()
    }
}

fn missing(which: Output, why: &str) -> crate::Error {
    ErrorKind::InvalidOption {
        reason: format!("option `compare` {which}: {why}"),
    }
    .into()
}
