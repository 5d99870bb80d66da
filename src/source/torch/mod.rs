//! From a torch pickle's value tree to tensor entries, shared by the zip and legacy containers.
//!
//! [`extract`] walks the tree (iteratively, each shared container once) and names every tensor by
//! its container path; it interprets the rebuild calls and validates every layout against the
//! storage sizes the pickle declares. [`Checkpoint`] then binds the storages to byte ranges of the
//! file (checking each record's size) and reads tensors, borrowing when the stored layout already
//! is C-contiguous little-endian.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::error::{Error, ErrorKind, Result};
use crate::source::mapped::{Index, Mapped};
use crate::source::{tensor_not_found, Format};
use crate::tensor::{gather_strided, is_c_contiguous, swap_bytes_in_place, Tensor, TensorInfo};

mod layout;
pub(crate) mod legacy;
mod rebuild;
pub(crate) mod zip;

pub(crate) use layout::TensorPlan;
pub(crate) use rebuild::{extract, Extracted};

/// A parsed torch checkpoint, zip or legacy: what [`Mapped`] serves reads from.
#[derive(Debug)]
pub(crate) struct TorchIndex {
    /// [`Format::TorchZip`] or [`Format::TorchLegacy`].
    pub(crate) format: Format,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) notes: Vec<String>,
}

/// A torch checkpoint's bytes and their [`TorchIndex`].
pub(crate) type TorchSource = Mapped<TorchIndex>;

impl Index for TorchIndex {
    fn format(&self) -> Format {
        self.format
    }

    fn tensors(&self) -> &[TensorInfo] {
        self.checkpoint.tensors()
    }

    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        self.checkpoint.read(bytes, name)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// Tensors bound to the bytes of their storages.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    infos: Vec<TensorInfo>,
    plans: Vec<TensorPlan>,
    by_name: HashMap<String, usize>,
    /// Byte range of each storage in the file, aligned with `Extracted::storages`.
    records: Vec<Range<usize>>,
    big_endian: bool,
}

impl Checkpoint {
    /// Binds storages to byte ranges of `file`, checking each record's size against its
    /// declaration (`StorageSizeMismatch`) and that it lies inside the file.
    pub(crate) fn bind(
        extracted: Extracted,
        records: Vec<Range<usize>>,
        file_len: usize,
        big_endian: bool,
    ) -> Result<Self> {
        for (decl, r) in extracted.storages.iter().zip(&records) {
            let found = r.end.saturating_sub(r.start);
            let declared = decl.byte_len();
            if declared != Some(found) {
                return Err(ErrorKind::StorageSizeMismatch {
                    key: decl.key.clone(),
                    declared: declared.map_or(u64::MAX, |d| d as u64),
                    found: found as u64,
                }
                .into());
            }
            if r.start > r.end || r.end > file_len {
                return Err(ErrorKind::StorageOutOfBounds {
                    storage: decl.key.clone(),
                    needed: r.end as u64,
                    available: file_len as u64,
                }
                .into());
            }
        }
        if records.len() != extracted.storages.len() {
            return Err(ErrorKind::MissingStorage {
                key: extracted
                    .storages
                    .get(records.len())
                    .map_or_else(String::new, |d| d.key.clone()),
            }
            .into());
        }
        let infos: Vec<TensorInfo> = extracted.tensors.iter().map(|p| p.info.clone()).collect();
        let by_name = infos
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Checkpoint {
            infos,
            plans: extracted.tensors,
            by_name,
            records,
            big_endian,
        })
    }

    /// Every tensor in file order.
    pub(crate) fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// Reads one tensor from `file` as C-contiguous little-endian bytes.
    pub(crate) fn read<'a>(&self, file: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        let not_found = || tensor_not_found(name);
        let plan = self
            .by_name
            .get(name)
            .and_then(|&i| self.plans.get(i))
            .ok_or_else(not_found)?;
        let info = &plan.info;
        let record = self
            .records
            .get(plan.storage)
            .and_then(|r| file.get(r.clone()))
            .and_then(|rec| rec.get(plan.base..))
            .ok_or_else(not_found)?;
        let elem = info.dtype.size();
        let oob = || -> Error {
            Error::from(ErrorKind::StorageOutOfBounds {
                storage: format!("of {name}"),
                needed: info.byte_len() as u64,
                available: record.len() as u64,
            })
            .with_tensor(name)
        };
        let swap = self.big_endian && elem > 1;
        let data = if is_c_contiguous(&info.shape, &plan.strides) && !swap {
            let start = plan.offset.checked_mul(elem).ok_or_else(oob)?;
            let end = start.checked_add(info.byte_len()).ok_or_else(oob)?;
            Cow::Borrowed(record.get(start..end).ok_or_else(oob)?)
        } else {
            let mut v = if is_c_contiguous(&info.shape, &plan.strides) {
                let start = plan.offset.checked_mul(elem).ok_or_else(oob)?;
                let end = start.checked_add(info.byte_len()).ok_or_else(oob)?;
                record.get(start..end).ok_or_else(oob)?.to_vec()
            } else {
                gather_strided(record, elem, &info.shape, &plan.strides, plan.offset)
                    .ok_or_else(oob)?
            };
            if swap {
                swap_bytes_in_place(&mut v, elem);
            }
            Cow::Owned(v)
        };
        Tensor::new(info.dtype, info.shape.clone(), data).map_err(|e| e.with_tensor(name))
    }
}

#[cfg(test)]
mod tests;
