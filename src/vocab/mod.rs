//! The small vocabulary types every layer names: the output layout, image formats, the model
//! class and what can go wrong applying a mapping table. They live here, below [`crate::error`],
//! so that the error type does not import the layers that use it; each is re-exported where it is
//! used (`convert`, `image`, `model`, `mapping`).

use std::path::{Path, PathBuf};

use serde::Serialize;

mod mapping;

pub use mapping::MappingError;

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
}

impl Architecture {
    /// The class name as written in `config.json` `architectures`.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::ViTModel => "ViTModel",
            Architecture::ViTForImageClassification => "ViTForImageClassification",
            Architecture::DeiTModel => "DeiTModel",
            Architecture::DeiTForImageClassificationWithTeacher => {
                "DeiTForImageClassificationWithTeacher"
            }
        }
    }

    /// `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::ViTModel | Architecture::ViTForImageClassification => "vit",
            _ => "deit",
        }
    }

    /// The prefix body tensors carry on disk (`vit.`, `deit.` or none).
    pub fn prefix(self) -> &'static str {
        match self {
            Architecture::ViTForImageClassification => "vit.",
            Architecture::DeiTForImageClassificationWithTeacher => "deit.",
            _ => "",
        }
    }

    /// Parses a class name.
    pub fn from_name(name: &str) -> Option<Architecture> {
        [
            Architecture::ViTModel,
            Architecture::ViTForImageClassification,
            Architecture::DeiTModel,
            Architecture::DeiTForImageClassificationWithTeacher,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// Number of prefix tokens (class, and distillation for DeiT).
    pub fn prefix_tokens(self) -> usize {
        match self {
            Architecture::DeiTModel | Architecture::DeiTForImageClassificationWithTeacher => 2,
            _ => 1,
        }
    }
}
