//! # vit-convert
//!
//! Convert and verify Vision Transformer checkpoints without Python.
//!
//! The data flows through the crate's modules in one direction:
//!
//! ```text
//! source (container readers) → mapping (declarative tables) → model (config) → write / forward → verify
//! ```
//!
//! ## In memory: bytes → canonical → model → verify
//!
//! Everything works on bytes: another converter can check its output without writing a file.
//!
//! ```
//! use vit_convert::{
//!     open_bytes, verify_model, Canonical, ConfigOverrides, ConvertOptions, ErrorKind, F32Array,
//!     FileBytes,
//! };
//!
//! // The bytes of a timm checkpoint (from anywhere: here a fixture file).
//! let bytes = std::fs::read("fixtures/convert/timm_vit/source.pth")?;
//! let src = open_bytes(FileBytes::from_vec(bytes.clone()))?;
//!
//! // Canonical tensors (HF names, PyTorch orientation) and the inferred config.
//! let opts = ConvertOptions {
//!     // tiny test model: 24 wide, 2 heads (real checkpoints default to hidden/64)
//!     overrides: ConfigOverrides { num_heads: Some(2), ..Default::default() },
//!     ..Default::default()
//! };
//! let canon = Canonical::new(src.as_ref(), &opts)?;
//! println!("{} canonical tensors via table {}", canon.tensors().len(), canon.mapping().table);
//!
//! // Run it, and compare with the logits timm itself computed on this input.
//! let model = canon.model()?;
//! let input = F32Array::parse_npy(std::fs::read("fixtures/convert/timm_vit/io/input.npy")?)?;
//! let expected = F32Array::parse_npy(std::fs::read("fixtures/convert/timm_vit/io/logits_timm.npy")?)?;
//! let r = verify_model(&model, &input, &expected, &Default::default(), None)?;
//! assert!(r.passed, "max |Δ| {}", r.max_abs_error);
//!
//! // A cut-short checkpoint is a typed error, not a panic.
//! let cut = bytes[..bytes.len() / 2].to_vec();
//! let err = open_bytes(FileBytes::from_vec(cut)).err().ok_or("a cut-short file opened")?;
//! assert!(
//!     matches!(err.kind(), ErrorKind::Truncated { .. }),
//!     "{err}"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The API at a glance
//!
//! | item | what it does |
//! | --- | --- |
//! | [`open`], [`open_bytes`] → [`TensorSource`] | read any supported container (PyTorch zip and legacy `.pth`, `.npy`/`.npz`, safetensors, Flax msgpack) from a file or from memory, format sniffed from the bytes; list tensors without reading data, [`read`](TensorSource::read) one on demand |
//! | [`MappingTable`] | a declarative layout table: [`builtin`](MappingTable::builtin) (`timm`, `dino`, `deit`, `jax`, `big_vision`, `beit`, `dinov2`, `clip`, `siglip`, `hf`, `flax`), [`from_file`](MappingTable::from_file) or [`from_toml`](MappingTable::from_toml) for your own layout |
//! | [`Canonical`] + [`ConvertOptions`] | any source → canonical tensors + config, in memory: inspect, [`hash`](Canonical::hash), [`model`](Canonical::model) or [`write`](Canonical::write) it |
//! | [`convert()`] → [`ConversionReport`](conversion::ConversionReport) | the path-based wrapper: checkpoint file → HF transformers folder (or timm / npz / Flax layout, [`OutputFormat`](conversion::OutputFormat)); [`conversion`] holds its report, layouts and progress-reporting form |
//! | [`Model`] ([`load`](Model::load), [`forward`](Model::forward)) | the reference forward pass, HF numerics |
//! | [`verify_model`] → [`verify::VerifyReport`] | run the model and compare with the original framework's outputs ([`F32Array`]) under a [`Tolerance`] (by default the one the weights' precision calls for) |
//! | [`hash::hash`], [`diff::diff`], [`inspect::inspect`] (and their in-memory forms) | per-tensor sha256 manifest and model digest; how two checkpoints differ; what a checkpoint holds |
//! | [`Error`], [`ErrorKind`] | every failure, typed; `Display` says what and where |
//!
//! The rest lives in its module: [`conversion`] ([`OutputFormat`](conversion::OutputFormat),
//! [`ConversionReport`](conversion::ConversionReport),
//! [`convert_with_progress`](conversion::convert_with_progress)), [`source`] (readers),
//! [`limits`] (the budgets, [`Limits`]), [`mapping`], [`model`] ([`ViTConfig`](model::ViTConfig)), [`forward`], [`verify`], [`write`](mod@write),
//! [`progress`], [`tensor`]. [`ndarray`] is re-exported for [`Model::forward`]'s input view.
//!
//! Pickles are interpreted by a small inert machine with an allowlist: nothing in a checkpoint
//! is ever executed.
//!
//! ## Convert a file, then prove it
//!
//! ```
//! use vit_convert::{convert, verify_model, ConfigOverrides, ConvertOptions, F32Array, Model};
//!
//! let out = tempfile::tempdir()?;
//! let opts = ConvertOptions {
//!     from: Some("timm".parse()?),
//!     overrides: ConfigOverrides { num_heads: Some(2), ..Default::default() },
//!     ..Default::default()
//! };
//! let report = convert("fixtures/convert/timm_vit/source.pth", out.path(), &opts)?;
//! println!("{} tensors written by table {}", report.tensors, report.mapping.table);
//!
//! let model = Model::load(out.path())?;
//! let input = F32Array::read_npy("fixtures/convert/timm_vit/io/input.npy")?;
//! let expected = F32Array::read_npy("fixtures/convert/timm_vit/io/logits_timm.npy")?;
//! let r = verify_model(&model, &input, &expected, &Default::default(), None)?;
//! assert!(r.passed, "max |Δ| {}", r.max_abs_error);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Read one tensor
//!
//! ```
//! let src = vit_convert::open("fixtures/convert/timm_vit/source.pth")?;
//! for t in src.tensors().iter().take(3) {
//!     println!("{} {} {:?}", t.name, t.dtype, t.shape);
//! }
//! let cls = src.read("cls_token")?;
//! assert_eq!(cls.shape, [1, 1, 24]);
//! assert_eq!(cls.data.len(), cls.numel() * cls.dtype.size());
//! # Ok::<(), vit_convert::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod convert;
pub mod diff;
mod error;
pub mod forward;
mod fsio;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod image;
pub mod inspect;
pub mod labels;
pub mod limits;
pub mod mapping;
mod mmap;
pub mod model;
pub mod progress;
pub mod source;
pub mod tensor;
pub mod text;
pub mod verify;

/// What [`convert()`] reports, the layouts it writes, and its form that reports progress.
pub mod conversion {
    pub use crate::convert::{convert_with_progress, ConversionReport, OutputFormat};
}
mod vocab;
pub mod write;

pub use ndarray;

pub use convert::{convert, Canonical, ConvertOptions};
pub use error::{Error, ErrorKind, Result};
pub use forward::Model;
pub use mapping::MappingTable;
pub use mmap::FileBytes;
pub use model::ConfigOverrides;
pub use source::{open, open_bytes, Limits, OpenOptions, TensorSource};
pub use tensor::DType;
pub use verify::{verify_model, F32Array, Tolerance};

#[cfg(test)]
mod tests {
    /// The names the crate root re-exports (`pub use` at the top level of this file).
    fn root_reexports() -> Vec<String> {
        let src = include_str!("lib.rs");
        let mut names = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find("\npub use ") {
            let stmt = &rest[at + "\npub use ".len()..];
            let end = stmt.find(';').unwrap_or(stmt.len());
            let body = &stmt[..end];
            let list = match body.find('{') {
                Some(open) => &body[open + 1..body.rfind('}').unwrap_or(body.len())],
                None => body.rsplit("::").next().unwrap_or(body),
            };
            names.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from),
            );
            rest = &stmt[end..];
        }
        names
    }

    #[test]
    fn the_root_re_exports_twenty_items() {
        let names = root_reexports();
        assert_eq!(names.len(), 20, "{names:?}");
        assert!(names.iter().any(|n| n == "ndarray") && names.iter().any(|n| n == "open_bytes"));
    }
}
