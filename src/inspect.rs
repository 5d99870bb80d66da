//! `inspect`: what a checkpoint holds, without reading tensor data.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::source::{self, Format};
use crate::tensor::TensorInfo;

/// One tensor in an [`Inspection`].
#[derive(Clone, Debug, Serialize)]
pub struct InspectedTensor {
    /// Name in the source.
    pub name: String,
    /// dtype name (`F32`, `BF16`, `BOOL`, …).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Size of the data in bytes.
    pub bytes: u64,
}

/// What a checkpoint holds: format, tensors, totals, metadata and notes.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// Container format.
    pub format: Format,
    /// Tensors in file order.
    pub tensors: Vec<InspectedTensor>,
    /// Total element count of all tensors.
    pub parameters: u64,
    /// Total data bytes of all tensors.
    pub bytes: u64,
    /// Container metadata.
    pub metadata: BTreeMap<String, String>,
    /// Things seen but not listed as tensors.
    pub notes: Vec<String>,
}

impl Inspection {
    fn from_source(src: &dyn source::TensorSource) -> Self {
        let tensors: Vec<InspectedTensor> = src.tensors().iter().map(inspected).collect();
        Inspection {
            format: src.format(),
            parameters: src.tensors().iter().map(|t| t.numel() as u64).sum(),
            bytes: tensors.iter().map(|t| t.bytes).sum(),
            tensors,
            metadata: src.metadata().clone(),
            notes: src.notes().to_vec(),
        }
    }
}

fn inspected(t: &TensorInfo) -> InspectedTensor {
    InspectedTensor {
        name: t.name.clone(),
        dtype: t.dtype.name().to_string(),
        shape: t.shape.clone(),
        bytes: t.byte_len() as u64,
    }
}

/// Lists a checkpoint's contents without reading tensor data.
///
/// ```
/// let info = vit_convert::inspect::inspect("fixtures/convert/jax_vit/source.npz")?;
/// println!("{} tensors, {} parameters", info.tensors.len(), info.parameters);
/// assert_eq!(info.format, vit_convert::source::Format::Npz);
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// As [`crate::open`].
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection> {
    inspect_with(path, &source::OpenOptions::default())
}

/// [`inspect`], opening the file as `opts` says.
///
/// # Errors
/// As [`crate::open`].
pub fn inspect_with(path: impl AsRef<Path>, opts: &source::OpenOptions) -> Result<Inspection> {
    let src = source::open_with(path, opts)?;
    Ok(Inspection::from_source(src.as_ref()))
}
