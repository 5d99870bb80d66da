//! Settings the mapping tables name and the layers above use: the activation, the
//! preprocessor preset and the bundled label lists. Defined here, below the tables that parse them
//! (`mapping::schema`) and the modules that give them behaviour (`model`, `labels`), so that no
//! lower layer imports a higher one; their `FromStr` and the rest of their methods live with
//! that behaviour.

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
}

/// The `preprocessor_config.json` preset a mapping table names (`preprocessor = "vit"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Preprocessor {
    /// Resize to a square `image_size` (PIL bilinear), rescale 1/255, mean = std = 0.5: what
    /// HF's ViT conversions and Google's ViT evaluation use.
    Vit,
    /// Resize the shorter side to `int(image_size / 0.875)` (bicubic), center crop `image_size`,
    /// ImageNet mean/std: what DeiT and DINO evaluate with.
    ImagenetCrop,
    /// `BeitImageProcessor(size=image_size, resample=BILINEAR, do_center_crop=False)`: resize to a
    /// square `image_size` (PIL bilinear), rescale 1/255, mean = std = 0.5 — what transformers'
    /// BEiT conversion script writes.
    Beit,
    /// `BitImageProcessor(size={"shortest_edge": 256}, bicubic, ImageNet mean/std)` with its
    /// default 224 crop, whatever the position grid: what transformers' DINOv2 conversion writes.
    Dinov2,
    /// `CLIPImageProcessor`: shortest edge to `image_size` (bicubic), center crop, OpenAI CLIP's
    /// mean/std.
    Clip,
    /// `SiglipImageProcessor`: resize to a square `image_size` (bicubic), mean = std = 0.5.
    Siglip,
}

impl Preprocessor {
    /// Every preset, in a fixed order.
    pub const ALL: [Preprocessor; 6] = [
        Preprocessor::Vit,
        Preprocessor::ImagenetCrop,
        Preprocessor::Beit,
        Preprocessor::Dinov2,
        Preprocessor::Clip,
        Preprocessor::Siglip,
    ];

    /// The name tables use (`vit`, `imagenet_crop`, `beit`, `dinov2`, `clip`, `siglip`).
    pub fn name(self) -> &'static str {
        match self {
            Preprocessor::Vit => "vit",
            Preprocessor::ImagenetCrop => "imagenet_crop",
            Preprocessor::Beit => "beit",
            Preprocessor::Dinov2 => "dinov2",
            Preprocessor::Clip => "clip",
            Preprocessor::Siglip => "siglip",
        }
    }
}

/// A bundled list of class names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[non_exhaustive]
pub enum LabelSet {
    /// ImageNet-1k (ILSVRC-2012), 1000 classes: `0` = "tench, Tinca tinca".
    #[serde(rename = "imagenet-1k")]
    ImageNet1k,
    /// ImageNet-21k in Google's order, 21 843 classes: the heads of Google's ViT (`in21k`)
    /// checkpoints.
    #[serde(rename = "imagenet-21k")]
    ImageNet21k,
    /// ImageNet-22k (fall11) in Microsoft's order, 21 841 classes: the heads of BEiT's `22k`
    /// checkpoints. Google's list without indices 9205 and 15027.
    #[serde(rename = "imagenet-22k")]
    ImageNet22k,
}

impl LabelSet {
    /// Every list, in a fixed order.
    pub const ALL: [LabelSet; 3] = [
        LabelSet::ImageNet1k,
        LabelSet::ImageNet21k,
        LabelSet::ImageNet22k,
    ];

    /// The name options and tables use (`imagenet-1k`, `imagenet-21k`, `imagenet-22k`).
    pub fn name(self) -> &'static str {
        match self {
            LabelSet::ImageNet1k => "imagenet-1k",
            LabelSet::ImageNet21k => "imagenet-21k",
            LabelSet::ImageNet22k => "imagenet-22k",
        }
    }

    /// The dataset's usual spelling (`ImageNet-1k`), for messages.
    pub fn title(self) -> &'static str {
        match self {
            LabelSet::ImageNet1k => "ImageNet-1k",
            LabelSet::ImageNet21k => "ImageNet-21k",
            LabelSet::ImageNet22k => "ImageNet-22k",
        }
    }

    /// The number of classes.
    pub fn classes(self) -> usize {
        match self {
            LabelSet::ImageNet1k => 1000,
            LabelSet::ImageNet21k => 21_843,
            LabelSet::ImageNet22k => 21_841,
        }
    }
}
