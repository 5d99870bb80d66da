//! The small vocabulary types every layer names: element types, container formats, the output
//! layout, image formats, the model class and what can go wrong applying a mapping table. They live here, below [`crate::error`],
//! so that the error type does not import the layers that use it; each is re-exported where it is
//! used (`tensor`, `source`, `convert`, `image`, `model`, `mapping`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod mapping;
mod settings;

pub use mapping::MappingError;
pub use settings::{Activation, LabelSet, Preprocessor};

/// Element types a checkpoint tensor may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum DType {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean, one byte per element (0 or 1).
    #[serde(rename = "BOOL")]
    Bool,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 10] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The name used in listings and safetensors headers (`F32`, `BF16`, `BOOL`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// Parses a name as spelled by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// True for the floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Container formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// safetensors.
    Safetensors,
    /// PyTorch zip archive (`torch.save` since 1.6).
    TorchZip,
    /// PyTorch legacy (pre-1.6) sequential-pickle format.
    TorchLegacy,
    /// A single numpy `.npy` array.
    Npy,
    /// A numpy `.npz` archive.
    Npz,
    /// A Flax msgpack checkpoint (`flax_model.msgpack`, `flax.serialization.to_bytes`).
    Flax,
    /// The zip layer shared by [`Format::TorchZip`] and [`Format::Npz`], before its entries
    /// decide between them: only errors name it, no source has it.
    Zip,
}

impl Format {
    /// A short name (`safetensors`, `torch_zip`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::TorchZip => "torch_zip",
            Format::TorchLegacy => "torch_legacy",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Flax => "flax",
            Format::Zip => "zip",
        }
    }
}

/// The output layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputFormat {
    /// Canonical HF transformers safetensors + `config.json` + `preprocessor_config.json`.
    #[default]
    Safetensors,
    /// timm-layout safetensors (`cls_token`, `blocks.{i}.attn.qkv.weight`, …).
    Timm,
    /// google-research/vision_transformer npz layout.
    Npz,
    /// HF transformers 4.x Flax `flax_model.msgpack` (`FlaxViTModel`,
    /// `FlaxViTForImageClassification`).
    Flax,
}

impl OutputFormat {
    /// The name [`OutputFormat::parse`] accepts (`safetensors`, `timm`, `npz`, `flax`).
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Safetensors => "safetensors",
            OutputFormat::Timm => "timm",
            OutputFormat::Npz => "npz",
            OutputFormat::Flax => "flax",
        }
    }

    /// Parses `safetensors`, `timm`, `npz` or `flax`.
    pub fn parse(s: &str) -> Option<OutputFormat> {
        match s {
            "safetensors" => Some(OutputFormat::Safetensors),
            "timm" => Some(OutputFormat::Timm),
            "npz" => Some(OutputFormat::Npz),
            "flax" => Some(OutputFormat::Flax),
            _ => None,
        }
    }

    /// The files [`convert`](crate::convert()) writes into `outdir` in this layout: the weights, `config.json`,
    /// `preprocessor_config.json`.
    pub fn output_files(self, outdir: impl AsRef<Path>) -> [PathBuf; 3] {
        let outdir = outdir.as_ref();
        [
            outdir.join(match self {
                OutputFormat::Npz => "model.npz",
                OutputFormat::Flax => "flax_model.msgpack",
                OutputFormat::Safetensors | OutputFormat::Timm => "model.safetensors",
            }),
            outdir.join("config.json"),
            outdir.join("preprocessor_config.json"),
        ]
    }
}

/// Image file formats [`decode_image`](crate::image::decode_image) reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG (baseline and progressive).
    Jpeg,
}

impl ImageFormat {
    /// A short name (`png`, `jpeg`).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }
}

/// The Hugging Face model family of a canonical checkpoint: `model_type` in `config.json`.
/// Mapping tables name the family they produce (`[model] model_type`); ViT and DeiT are one
/// encoder configuration apart (a distillation token), so ViT tables produce either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModelType {
    /// `vit` (`ViTModel`, `ViTForImageClassification`).
    Vit,
    /// `deit` (`DeiTModel`, `DeiTForImageClassificationWithTeacher`).
    Deit,
    /// `beit` (`BeitModel`, `BeitForImageClassification`, `BeitForMaskedImageModeling`).
    Beit,
    /// `dinov2` (`Dinov2Model`, `Dinov2ForImageClassification`).
    Dinov2,
    /// `dinov2_with_registers` (`Dinov2WithRegistersModel`,
    /// `Dinov2WithRegistersForImageClassification`).
    Dinov2WithRegisters,
    /// `clip_vision_model` (`CLIPVisionModel`, `CLIPVisionModelWithProjection`).
    #[serde(rename = "clip_vision_model")]
    ClipVision,
    /// `siglip_vision_model` (`SiglipVisionModel`).
    #[serde(rename = "siglip_vision_model")]
    SiglipVision,
}

impl ModelType {
    /// Every family, in a fixed order.
    pub const ALL: [ModelType; 7] = [
        ModelType::Vit,
        ModelType::Deit,
        ModelType::Beit,
        ModelType::Dinov2,
        ModelType::Dinov2WithRegisters,
        ModelType::ClipVision,
        ModelType::SiglipVision,
    ];

    /// The `model_type` string (`vit`, `deit`, `beit`).
    pub fn name(self) -> &'static str {
        match self {
            ModelType::Vit => "vit",
            ModelType::Deit => "deit",
            ModelType::Beit => "beit",
            ModelType::Dinov2 => "dinov2",
            ModelType::Dinov2WithRegisters => "dinov2_with_registers",
            ModelType::ClipVision => "clip_vision_model",
            ModelType::SiglipVision => "siglip_vision_model",
        }
    }

    /// Whether the family is a CLIP-style image tower (CLIP, SigLIP): `vision_model.` names,
    /// `encoder.layers.{i}.self_attn.*`, a 2-D position table.
    pub fn is_clip_style(self) -> bool {
        matches!(self, ModelType::ClipVision | ModelType::SiglipVision)
    }

    /// Whether the family is DINOv2's (with or without register tokens).
    pub fn is_dinov2(self) -> bool {
        matches!(self, ModelType::Dinov2 | ModelType::Dinov2WithRegisters)
    }
}

/// The HF model class a canonical checkpoint corresponds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Architecture {
    /// `ViTModel` (headless; optional pooler). Keys have no prefix.
    ViTModel,
    /// `ViTForImageClassification`: `vit.` prefix + `classifier.*`.
    ViTForImageClassification,
    /// `DeiTModel` (distillation token, headless). Keys have no prefix.
    DeiTModel,
    /// `DeiTForImageClassificationWithTeacher`: `deit.` prefix + `cls_classifier.*` +
    /// `distillation_classifier.*`.
    DeiTForImageClassificationWithTeacher,
    /// `BeitModel` (headless; the pooler is a LayerNorm over the mean patch token when
    /// `use_mean_pooling`). Keys have no prefix.
    BeitModel,
    /// `BeitForImageClassification`: `beit.` prefix + `classifier.*`.
    BeitForImageClassification,
    /// `BeitForMaskedImageModeling`: `beit.` prefix + the head's `layernorm.*` and `lm_head.*`.
    BeitForMaskedImageModeling,
    /// `Dinov2Model` (headless). Keys have no prefix.
    Dinov2Model,
    /// `Dinov2ForImageClassification`: `dinov2.` prefix + `classifier.*` on the class token and
    /// the mean patch token.
    Dinov2ForImageClassification,
    /// `Dinov2WithRegistersModel` (register tokens, headless). Keys have no prefix.
    Dinov2WithRegistersModel,
    /// `Dinov2WithRegistersForImageClassification`: `dinov2_with_registers.` prefix +
    /// `classifier.*`.
    Dinov2WithRegistersForImageClassification,
    /// `CLIPVisionModel`: the CLIP image tower, `vision_model.` prefix.
    #[serde(rename = "CLIPVisionModel")]
    ClipVisionModel,
    /// `CLIPVisionModelWithProjection`: the tower + `visual_projection` (`image_embeds`).
    #[serde(rename = "CLIPVisionModelWithProjection")]
    ClipVisionModelWithProjection,
    /// `SiglipVisionModel`: the SigLIP image tower (no class token, MAP head),
    /// `vision_model.` prefix.
    SiglipVisionModel,
}

impl Architecture {
    /// Every class, in a fixed order.
    pub const ALL: [Architecture; 14] = [
        Architecture::ViTModel,
        Architecture::ViTForImageClassification,
        Architecture::DeiTModel,
        Architecture::DeiTForImageClassificationWithTeacher,
        Architecture::BeitModel,
        Architecture::BeitForImageClassification,
        Architecture::BeitForMaskedImageModeling,
        Architecture::Dinov2Model,
        Architecture::Dinov2ForImageClassification,
        Architecture::Dinov2WithRegistersModel,
        Architecture::Dinov2WithRegistersForImageClassification,
        Architecture::ClipVisionModel,
        Architecture::ClipVisionModelWithProjection,
        Architecture::SiglipVisionModel,
    ];

    /// The class name as written in `config.json` `architectures`.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::ViTModel => "ViTModel",
            Architecture::ViTForImageClassification => "ViTForImageClassification",
            Architecture::DeiTModel => "DeiTModel",
            Architecture::DeiTForImageClassificationWithTeacher => {
                "DeiTForImageClassificationWithTeacher"
            }
            Architecture::BeitModel => "BeitModel",
            Architecture::BeitForImageClassification => "BeitForImageClassification",
            Architecture::BeitForMaskedImageModeling => "BeitForMaskedImageModeling",
            Architecture::Dinov2Model => "Dinov2Model",
            Architecture::Dinov2ForImageClassification => "Dinov2ForImageClassification",
            Architecture::Dinov2WithRegistersModel => "Dinov2WithRegistersModel",
            Architecture::Dinov2WithRegistersForImageClassification => {
                "Dinov2WithRegistersForImageClassification"
            }
            Architecture::ClipVisionModel => "CLIPVisionModel",
            Architecture::ClipVisionModelWithProjection => "CLIPVisionModelWithProjection",
            Architecture::SiglipVisionModel => "SiglipVisionModel",
        }
    }

    /// The family (`model_type` in `config.json`).
    pub fn family(self) -> ModelType {
        match self {
            Architecture::ViTModel | Architecture::ViTForImageClassification => ModelType::Vit,
            Architecture::DeiTModel | Architecture::DeiTForImageClassificationWithTeacher => {
                ModelType::Deit
            }
            Architecture::BeitModel
            | Architecture::BeitForImageClassification
            | Architecture::BeitForMaskedImageModeling => ModelType::Beit,
            Architecture::Dinov2Model | Architecture::Dinov2ForImageClassification => {
                ModelType::Dinov2
            }
            Architecture::Dinov2WithRegistersModel
            | Architecture::Dinov2WithRegistersForImageClassification => {
                ModelType::Dinov2WithRegisters
            }
            Architecture::ClipVisionModel | Architecture::ClipVisionModelWithProjection => {
                ModelType::ClipVision
            }
            Architecture::SiglipVisionModel => ModelType::SiglipVision,
        }
    }

    /// `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        self.family().name()
    }

    /// The prefix body tensors carry on disk (`vit.`, `deit.`, `beit.` or none).
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::ViTForImageClassification => "vit.",
            Architecture::DeiTForImageClassificationWithTeacher => "deit.",
            Architecture::BeitForImageClassification | Architecture::BeitForMaskedImageModeling => {
                "beit."
            }
            Architecture::Dinov2ForImageClassification => "dinov2.",
            Architecture::Dinov2WithRegistersForImageClassification => "dinov2_with_registers.",
            // The Hub's checkpoints and transformers 4.x keep the tower under `vision_model.`.
            Architecture::ClipVisionModel
            | Architecture::ClipVisionModelWithProjection
            | Architecture::SiglipVisionModel => "vision_model.",
            _ => "",
        }
    }

    /// Whether the class has a head on top of its family's body (false for the headless
    /// `*Model` classes).
    pub fn has_head(self) -> bool {
        !matches!(
            self,
            Architecture::ViTModel
                | Architecture::DeiTModel
                | Architecture::BeitModel
                | Architecture::Dinov2Model
                | Architecture::Dinov2WithRegistersModel
                | Architecture::ClipVisionModel
                | Architecture::SiglipVisionModel
        )
    }

    /// Parses a class name.
    pub fn from_name(name: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Number of prefix tokens (class, and distillation for DeiT; none for SigLIP).
    pub fn prefix_tokens(self) -> usize {
        match self {
            Architecture::DeiTModel | Architecture::DeiTForImageClassificationWithTeacher => 2,
            Architecture::SiglipVisionModel => 0,
            _ => 1,
        }
    }
}
