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
//! ## The API at a glance
//!
//! | item | what it does |
//! | --- | --- |
//! | [`open`] → [`TensorSource`] | read any supported container (PyTorch zip and legacy `.pth`, `.npy`/`.npz`, safetensors, Flax msgpack), format sniffed from the bytes; list tensors without reading data, [`read`](TensorSource::read) one on demand |
//! | [`inspect()`] → [`Inspection`] | what a checkpoint holds, without reading tensor data |
//! | [`MappingTable`] | a declarative layout table: [`builtin`](MappingTable::builtin) (`timm`, `dino`, `deit`, `jax`, `big_vision`, `hf`, `flax`) or [`from_toml`](MappingTable::from_toml) for your own layout |
//! | [`convert()`] + [`ConvertOptions`] → [`ConversionReport`] | checkpoint → HF transformers folder (or timm / npz / Flax layout) |
//! | [`convert_with_progress`], [`Progress`] | the same, reporting progress to your observer (the library never prints) |
//! | [`write_safetensors`] | write any [`TensorSource`] as a deterministic safetensors file, atomically |
//! | [`Model`] ([`load`](Model::load), [`forward`](Model::forward)) | the reference forward pass, HF numerics |
//! | [`verify()`] → [`VerifyReport`] | run the model and compare with the original framework's outputs under a [`Tolerance`] |
//! | [`hash()`] → [`HashReport`] | per-tensor sha256 manifest and model digest, container-independent |
//! | [`diff()`] → [`DiffReport`] | how two checkpoints differ, tensor by tensor |
//! | [`Error`], [`ErrorKind`] | every failure, typed; `Display` says what and where |
//!
//! Pickles are interpreted by a small inert machine with an allowlist: nothing in a checkpoint
//! is ever executed.
//!
//! ## Convert, then prove it
//!
//! ```
//! use vit_convert::{convert, model::ConfigOverrides, verify::Array, ConvertOptions, Model, Tolerance};
//!
//! let out = tempfile::tempdir()?;
//! let opts = ConvertOptions {
//!     from: Some("timm".parse()?),
//!     overrides: ConfigOverrides { num_heads: Some(2), ..Default::default() },
//!     ..Default::default()
//! };
//! let report = convert("fixtures/convert/timm_vit/source.pth".as_ref(), out.path(), &opts)?;
//! println!("{} tensors written by table {}", report.tensors, report.mapping.table);
//!
//! // The logits timm itself computed on this input, saved by the fixture generator.
//! let model = Model::load(out.path())?;
//! let input = Array::read_npy("fixtures/convert/timm_vit/io/input.npy".as_ref())?;
//! let expected = Array::read_npy("fixtures/convert/timm_vit/io/logits_timm.npy".as_ref())?;
//! let r = vit_convert::verify(&model, &input, &expected, &Default::default(), Tolerance::default())?;
//! assert!(r.passed, "max |Δ| {}", r.max_abs_error);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Read one tensor
//!
//! ```
//! let src = vit_convert::open("fixtures/convert/timm_vit/source.pth".as_ref())?;
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

pub mod convert;
pub mod diff;
pub mod error;
pub mod forward;
mod fsio;
pub mod hash;
pub mod image;
pub mod inspect;
pub mod mapping;
mod mmap;
pub mod model;
pub mod progress;
pub mod source;
pub mod tensor;
pub mod text;
pub mod verify;
pub mod write;

pub use convert::{convert, convert_with_progress, ConversionReport, ConvertOptions, OutputFormat};
pub use diff::{diff, DiffOptions, DiffReport};
pub use error::{Error, ErrorKind, Result};
pub use forward::{ForwardOptions, ForwardOutput, Model, PosInterp};
pub use hash::{hash, HashReport, ReadAs};
pub use inspect::{inspect, Inspection};
pub use mapping::{MappingReport, MappingTable};
pub use mmap::FileBytes;
pub use model::{Architecture, ViTConfig};
pub use progress::{NoProgress, Progress, Stage};
pub use source::{open, open_bytes, Format, Limits, MemorySource, TensorSource};
pub use tensor::{DType, Tensor, TensorInfo};
pub use verify::{verify, Tolerance, VerifyReport};
pub use write::{write_safetensors, WriteItem};
