//! [`Activation`]: the `hidden_act` values this crate converts and runs, spelled once.

use serde::{Deserialize, Serialize};

/// The MLP activation of a ViT (`hidden_act` in `config.json` and in the mapping tables;
/// `ConfigOverrides::hidden_act`, `convert --hidden-act`). Names are the Hugging Face spellings.
///
/// ```
/// use vit_convert::model::Activation;
/// let a: Activation = "gelu_pytorch_tanh".parse()?;
/// assert_eq!(a.name(), "gelu_pytorch_tanh");
/// assert!("gleu".parse::<Activation>().is_err());
/// # Ok::<(), vit_convert::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Activation {
    /// Exact (erf) GELU, `nn.GELU()`: what timm, DeiT, DINO and the JAX ViTs use.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh-approximated GELU, `nn.GELU(approximate="tanh")`.
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
    /// tanh-approximated GELU (the original BERT/GPT formula).
    #[serde(rename = "gelu_new")]
    GeluNew,
    /// tanh-approximated GELU (a rearranged formula, same function).
    #[serde(rename = "gelu_fast")]
    GeluFast,
    /// `x · sigmoid(1.702 x)`: OpenAI CLIP's `QuickGELU`.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
}

impl Activation {
    /// Every activation, in a fixed order.
    pub const ALL: [Activation; 5] = [
        Activation::Gelu,
        Activation::GeluPytorchTanh,
        Activation::GeluNew,
        Activation::GeluFast,
        Activation::QuickGelu,
    ];

    /// The Hugging Face name (`gelu`, `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`,
    /// `quick_gelu`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluPytorchTanh => "gelu_pytorch_tanh",
            Activation::GeluNew => "gelu_new",
            Activation::GeluFast => "gelu_fast",
            Activation::QuickGelu => "quick_gelu",
        }
    }

    /// Every name `str::parse` accepts.
    pub fn names() -> Vec<&'static str> {
        Activation::ALL.iter().map(|a| a.name()).collect()
    }

    /// True when the function is GELU's tanh approximation.
    pub(crate) fn is_tanh_approximation(self) -> bool {
        matches!(
            self,
            Activation::GeluPytorchTanh | Activation::GeluNew | Activation::GeluFast
        )
    }
}

crate::error::impl_names!(Activation, "hidden_act", Activation::ALL.into_iter());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for a in Activation::ALL {
            assert_eq!(a.name().parse::<Activation>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Activation>(&json).unwrap(), a);
        }
        let e = "gleu".parse::<Activation>().unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::UnknownName { field: "hidden_act", value, .. } if value == "gleu"),
            "{e}"
        );
    }
}
