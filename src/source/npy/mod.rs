//! numpy `.npy`: one array, header versions 1.0, 2.0 and 3.0 (numpy `lib/format.py`).
//!
//! Layout: the magic `\x93NUMPY`, a major and a minor version byte, the header length (u16 LE for
//! v1, u32 LE for v2/v3), then the header — a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` padded with spaces and ended by a
//! newline (latin-1 for v1/v2, UTF-8 for v3) — then the raw array bytes.
//!
//! The header is read by a small strict parser for exactly that literal grammar: single- or
//! double-quoted strings without escapes, `True`/`False`, tuples of non-negative integers (a
//! Python 2 `L` suffix is tolerated) with an optional trailing comma, whitespace. The dict must
//! hold exactly the keys `descr`, `fortran_order` and `shape`, each once, in any order. Anything
//! else (a structured dtype given as a list, a nested dict, an expression) is
//! [`ErrorKind::MalformedContainer`] naming what was found.
//!
//! dtypes (`descr`, byte order `<` `>` `|` `=` or none, then kind and size):
//! `f8 f4 f2 i8 i4 i2 i1 u1 b1` → F64 F32 F16 I64 I32 I16 I8 U8 BOOL; bfloat16 as written by
//! `ml_dtypes` + `np.save` (`<V2`, also `|V2`, and the name `bfloat16`) → BF16. Everything else is
//! [`ErrorKind::UnsupportedDType`] with the descr as written. Big-endian (`>`) arrays are
//! byte-swapped on read; Fortran-order arrays are gathered into C order on read.
//!
//! A `.npy` file holds one array; its [`NpySource`] lists it under the name [`NPY_TENSOR_NAME`]
//! (`array`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::mmap::FileBytes;
use crate::source::mapped::{Index, Mapped};
use crate::source::{tensor_not_found, to_u64, Format};
use crate::tensor::{DType, Tensor, TensorInfo};

/// The magic string every `.npy` starts with.
pub(crate) const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest rank accepted (numpy's `NPY_MAXDIMS` is 64 since numpy 2.0).
pub(crate) const MAX_NPY_RANK: usize = super::MAX_RANK;

/// Bytes before the header text of a v1 file (magic, version, u16 length).
const V1_PREAMBLE_LEN: usize = 10;

/// Bytes before the header text of a v2/v3 file (magic, version, u32 length).
const V2_PREAMBLE_LEN: usize = 12;

/// Alignment numpy pads `preamble + header` to (`ARRAY_ALIGN` in `format.py`).
#[cfg_attr(not(test), allow(dead_code))]
const NPY_HEADER_ALIGN: usize = 64;

/// The name under which a `.npy` file's single array is listed.
pub(crate) const NPY_TENSOR_NAME: &str = "array";

/// Byte order of the stored elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    /// Little-endian (`<`, `=`, `|` or no prefix; native is little on every supported host).
    Little,
    /// Big-endian (`>`): swapped on read.
    Big,
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NpyHeader {
    /// Format version `(major, minor)`.
    pub(crate) version: (u8, u8),
    /// The descr as written (`<f4`, `<V2`, …).
    pub(crate) descr: String,
    /// Element type.
    pub(crate) dtype: DType,
    /// Byte order of the stored elements.
    pub(crate) byte_order: ByteOrder,
    /// True when the data is stored in Fortran (column-major) order.
    pub(crate) fortran_order: bool,
    /// Shape (empty for a 0-d array).
    pub(crate) shape: Vec<usize>,
    /// Offset of the array data from the start of the `.npy` bytes.
    pub(crate) data_offset: usize,
    /// Length of the array data, `numel × itemsize` (checked).
    pub(crate) data_len: usize,
}

impl NpyHeader {
    /// True when the stored bytes already are C-order little-endian.
    pub(crate) fn is_c_little_endian(&self) -> bool {
        let elem_order_irrelevant = self.dtype.size() == 1;
        let order_irrelevant =
            !self.fortran_order || self.shape.iter().filter(|&&d| d != 1).count() <= 1;
        (self.byte_order == ByteOrder::Little || elem_order_irrelevant) && order_irrelevant
    }

    /// Listing entry for this array under `name`.
    pub(crate) fn info(&self, name: &str) -> TensorInfo {
        TensorInfo {
            name: name.to_string(),
            dtype: self.dtype,
            shape: self.shape.clone(),
        }
    }
}

mod decode;
mod header;
mod write;

pub(crate) use decode::decode_npy_data;
pub(crate) use header::{npy_header_total_len, parse_npy_header, NPY_PREAMBLE_MAX};
pub(crate) use write::{npy_header, write_npy};

/// A single `.npy` array: its bytes and their [`Npy`] index.
pub(crate) type NpySource = Mapped<Npy>;

impl NpySource {
    /// Parses the file ([`Npy::parse`]) and keeps its bytes.
    ///
    /// # Errors
    /// As [`Npy::parse`].
    pub(crate) fn parse(bytes: FileBytes, limits: &Limits) -> Result<Self> {
        Mapped::parse_with(bytes, |b| Npy::parse(b, limits))
    }
}

/// The index of a single `.npy` array, listed as [`NPY_TENSOR_NAME`].
pub(crate) struct Npy {
    header: NpyHeader,
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl Npy {
    /// Parses and validates a whole `.npy` file.
    ///
    /// # Errors
    /// As [`parse_npy_header`]; [`ErrorKind::Truncated`] when the data is shorter than the shape
    /// needs, [`ErrorKind::MalformedContainer`] when bytes follow the data.
    pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let header = parse_npy_header(bytes, limits)?;
        check_data_len(&header, bytes.len())?;
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "npy_version".to_string(),
            format!("{}.{}", header.version.0, header.version.1),
        );
        metadata.insert("descr".to_string(), header.descr.clone());
        metadata.insert(
            "fortran_order".to_string(),
            header.fortran_order.to_string(),
        );
        Ok(Npy {
            tensors: vec![header.info(NPY_TENSOR_NAME)],
            header,
            metadata,
        })
    }
}

/// Checks that a `.npy` of `total_len` bytes holds exactly the header's data after its header.
pub(crate) fn check_data_len(header: &NpyHeader, total_len: usize) -> Result<()> {
    let available = total_len.saturating_sub(header.data_offset);
    if available < header.data_len {
        return Err(ErrorKind::Truncated {
            what: "npy data",
            offset: to_u64(header.data_offset),
            needed: to_u64(header.data_len),
            available: to_u64(available),
        }
        .into());
    }
    if available > header.data_len {
        return Err(malformed(
            Format::Npy,
            format!(
                "{} trailing bytes after the array data (shape {:?} of {} ends at byte {})",
                available - header.data_len,
                header.shape,
                header.descr,
                header.data_offset.saturating_add(header.data_len)
            ),
        ));
    }
    Ok(())
}

impl Index for Npy {
    fn format(&self) -> Format {
        Format::Npy
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        if name != NPY_TENSOR_NAME {
            return Err(tensor_not_found(name));
        }
        let h = &self.header;
        let end = h.data_offset.checked_add(h.data_len);
        let stored = end
            .and_then(|end| bytes.get(h.data_offset..end))
            .ok_or_else(|| {
                Error::from(ErrorKind::Truncated {
                    what: "npy data",
                    offset: to_u64(h.data_offset),
                    needed: to_u64(h.data_len),
                    available: to_u64(bytes.len().saturating_sub(h.data_offset)),
                })
            })?;
        let data = decode_npy_data(h, Cow::Borrowed(stored)).map_err(|e| e.with_tensor(name))?;
        Tensor::new(h.dtype, h.shape.clone(), data).map_err(|e| e.with_tensor(name))
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

#[cfg(test)]
mod tests;
