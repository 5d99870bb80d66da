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
//! * [`open`] reads any supported container — PyTorch zip and legacy `.pth`, numpy `.npy`/`.npz`,
//!   Flax `flax_model.msgpack`,
//!   safetensors — sniffing the format from its magic bytes, and returns a [`TensorSource`] that
//!   lists tensors without reading their data and reads one tensor on demand. Pickles are
//!   interpreted by a small inert machine with an allowlist: nothing in a checkpoint is ever
//!   executed.
//!
//! ```no_run
//! let src = vit_convert::open(std::path::Path::new("model.pth"))?;
//! for t in src.tensors() {
//!     println!("{} {} {:?}", t.name, t.dtype, t.shape);
//! }
//! let cls = src.read("cls_token")?;
//! assert_eq!(cls.data.len(), cls.numel() * cls.dtype.size());
//! # Ok::<(), vit_convert::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod convert;
pub mod error;
pub mod forward;
pub mod image;
pub mod inspect;
pub mod mapping;
mod mmap;
pub mod model;
pub mod source;
pub mod tensor;
pub mod verify;
pub mod write;

pub use convert::{convert, ConversionReport, ConvertOptions, OutputFormat};
pub use error::{Error, ErrorKind, Result};
pub use forward::{ForwardOptions, ForwardOutput, Model, PosInterp};
pub use inspect::{inspect, Inspection};
pub use mapping::{MappingReport, MappingTable};
pub use mmap::FileBytes;
pub use model::{Architecture, ViTConfig};
pub use source::{open, open_bytes, Format, Limits, TensorSource};
pub use tensor::{DType, Tensor, TensorInfo};
pub use verify::{verify, Tolerance, VerifyReport};
