//! Checkpoint containers behind one trait, [`TensorSource`].
//!
//! [`open`] sniffs the format from the file's magic bytes (never from its extension) and returns
//! a source that lists tensors without reading their data and reads one tensor on demand.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::mmap::FileBytes;
use crate::tensor::{Tensor, TensorInfo};

pub use crate::limits::Limits;
pub use memory::MemorySource;
// The budgets sit below the readers (the input bytes need them too); `source::limits` stays a
// crate-internal name for them.
pub(crate) use crate::limits;

/// Most dimensions a tensor may have in any container (numpy's `NPY_MAXDIMS`, which torch
/// shares); a fixed structural limit, not a budget.
pub(crate) const MAX_RANK: usize = 64;

/// A size or offset as the `u64` error fields carry it (saturating on a platform where `usize`
/// is wider, which none is today).
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// [`ErrorKind::TensorNotFound`] for `name`: what every reader's `read` returns for a name it
/// does not list.
pub(crate) fn tensor_not_found(name: &str) -> Error {
    Error::from(ErrorKind::TensorNotFound {
        name: name.to_string(),
    })
}

pub(crate) mod flax;
mod mapped;
mod memory;
pub(crate) mod npy;
pub(crate) mod npz;
pub(crate) mod pickle;
pub(crate) mod safetensors;
pub(crate) mod torch;
pub(crate) use torch::{legacy as torch_legacy, zip as torch_zip};

pub use crate::vocab::Format;

/// What the magic bytes say, before looking inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A zip archive: torch zip or npz, decided from its entries.
    Zip,
    /// A pickle stream: legacy torch.
    Pickle,
    /// `\x93NUMPY`.
    Npy,
    /// An 8-byte little-endian header length followed by `{`.
    Safetensors,
    /// A msgpack map (fixmap, map16, map32): a Flax checkpoint.
    Msgpack,
}

/// Classifies a file from its first bytes.
pub(crate) fn sniff(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Some(Sniffed::Zip);
    }
    if bytes.starts_with(b"\x93NUMPY") {
        return Some(Sniffed::Npy);
    }
    // A safetensors header length whose low byte is 0x80 (and next byte 2..=5) also looks like a
    // pickle PROTO opcode: a `{` at byte 8 with a length that fits the file decides first.
    if looks_like_safetensors(bytes) {
        return Some(Sniffed::Safetensors);
    }
    if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return Some(Sniffed::Pickle);
    }
    // The TAR-era torch container: routed to the legacy reader, which refuses it by name.
    if bytes.get(257..262) == Some(b"ustar") {
        return Some(Sniffed::Pickle);
    }
    if bytes.len() >= 9 && bytes[8] == b'{' {
        return Some(Sniffed::Safetensors);
    }
    // After pickle (0x80 0x02..=0x05: a fixmap 0x80 is empty, so nothing can follow it) and
    // safetensors (a `{` at byte 8).
    if matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Some(Sniffed::Msgpack);
    }
    None
}

/// A `{` at byte 8 and a little-endian header length that fits in the file.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    match (bytes.get(..8), bytes.get(8)) {
        (Some(len), Some(b'{')) => {
            let mut le = [0u8; 8];
            le.copy_from_slice(len);
            let n = u64::from_le_bytes(le);
            u64::try_from(bytes.len().saturating_sub(8)).is_ok_and(|avail| n <= avail)
        }
        _ => false,
    }
}

/// A checkpoint file opened for reading tensors.
///
/// Listing never reads tensor data; [`TensorSource::read`] reads one tensor and returns it
/// C-contiguous and little-endian, borrowed from the file when the stored layout already is.
///
/// Every reader, [`MemorySource`], and the mapping engine's views implement it, so anything
/// that consumes a source (writers, [`Model::from_source`](crate::Model::from_source), hashing)
/// works on all of them.
///
/// ```
/// use vit_convert::TensorSource;
/// fn parameters(src: &dyn TensorSource) -> usize {
///     src.tensors().iter().map(|t| t.numel()).sum()
/// }
/// let npz = vit_convert::open("fixtures/convert/jax_vit/source.npz")?;
/// let pth = vit_convert::open("fixtures/convert/timm_vit/source.pth")?;
/// assert_eq!(parameters(npz.as_ref()), parameters(pth.as_ref())); // same model, two layouts
/// # Ok::<(), vit_convert::Error>(())
/// ```
pub trait TensorSource: Send + Sync {
    /// The container format.
    fn format(&self) -> Format;

    /// Every tensor, in the order the file lists them.
    fn tensors(&self) -> &[TensorInfo];

    /// Reads one tensor's data.
    ///
    /// # Errors
    /// [`ErrorKind::TensorNotFound`] for an unknown name; a container error when the stored
    /// bytes are inconsistent with the listing.
    fn read(&self, name: &str) -> Result<Tensor<'_>>;

    /// Container metadata (safetensors `__metadata__`, npy/pickle facts), sorted by key.
    fn metadata(&self) -> &BTreeMap<String, String>;

    /// Notes about things seen but not turned into tensors (opaque pickle objects, …).
    fn notes(&self) -> &[String] {
        &[]
    }

    /// Drops the resident pages of a memory-mapped input (see [`FileBytes::release`]): data read
    /// earlier stays readable. Streaming writers call it after each tensor so that memory stays
    /// flat in the model's size. The default does nothing.
    fn release_pages(&self) {}

    /// Where `data` — bytes returned by [`TensorSource::read`] — lies in the input file, when
    /// it is an unmodified byte range of a memory-mapped input (see [`FileBytes::locate`]).
    /// Writers then copy it file to file in the kernel. The default knows of no file.
    fn locate(&self, data: &[u8]) -> Option<(&std::fs::File, u64)> {
        let _ = data;
        None
    }

    /// Looks up a tensor's listing entry by name.
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors().iter().find(|t| t.name == name)
    }
}

/// How [`open_with`] and [`open_bytes_with`] read a checkpoint: plain values, so that two
/// conversions in one process may use different ones.
///
/// ```
/// use vit_convert::{source::OpenOptions, Limits};
/// let mut limits = Limits::DEFAULT;
/// limits.aliased_tensor_bytes = 1 << 30; // a trusted checkpoint with many views of one storage
/// let mut opts = OpenOptions::with_limits(limits);
/// opts.mmap = false; // read the file into memory (within `limits.read_file_bytes`)
/// let src = vit_convert::source::open_with("fixtures/convert/timm_vit/source.pth", &opts)?;
/// assert!(!src.tensors().is_empty());
/// # Ok::<(), vit_convert::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The budgets every reader enforces ([`Limits::DEFAULT`] by default).
    pub limits: Limits,
    /// Map input files (`true`, the default) or read them into memory, within
    /// [`Limits::read_file_bytes`] ([`FileBytes::read_within`]).
    pub mmap: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            limits: Limits::DEFAULT,
            mmap: true,
        }
    }
}

impl OpenOptions {
    /// Options with these limits, mapping files.
    pub fn with_limits(limits: Limits) -> Self {
        OpenOptions {
            limits,
            ..OpenOptions::default()
        }
    }

    /// The bytes of `path`, mapped or read as these options say, within their limits.
    ///
    /// # Errors
    /// As [`FileBytes::open`] and [`FileBytes::read`].
    pub fn file_bytes(&self, path: &Path) -> Result<FileBytes> {
        if self.mmap {
            FileBytes::open_within(path, &self.limits)
        } else {
            FileBytes::read_within(path, &self.limits)
        }
    }
}

/// Opens a checkpoint, sniffing its format from its magic bytes, with the default
/// [`OpenOptions`].
///
/// ```
/// use vit_convert::{source::Format, DType};
/// // A legacy (pre-1.6) torch.save file: big-endian-safe, strided views gathered on read.
/// let src = vit_convert::open("fixtures/convert/timm_vit/legacy.pth")?;
/// assert_eq!(src.format(), Format::TorchLegacy);
/// let w = src.read("blocks.0.attn.qkv.weight")?;
/// assert_eq!((w.dtype, w.shape.as_slice()), (DType::F32, &[72, 24][..]));
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::Io`] if the file cannot be read, [`ErrorKind::UnknownFormat`] if no container
/// matches, or the container's own error when its structure is invalid. Every error carries the
/// path.
pub fn open(path: impl AsRef<Path>) -> Result<Box<dyn TensorSource>> {
    open_with(path, &OpenOptions::default())
}

/// [`open`] with the given options (limits, mapping or reading).
///
/// # Errors
/// As [`open`].
pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Box<dyn TensorSource>> {
    let path = path.as_ref();
    let bytes = opts.file_bytes(path)?;
    open_bytes_with(bytes, opts).map_err(|e| e.with_path(path))
}

/// Opens a checkpoint held in memory (the same as [`open`], without a file).
///
/// # Errors
/// As [`open`].
pub fn open_bytes(bytes: FileBytes) -> Result<Box<dyn TensorSource>> {
    open_bytes_with(bytes, &OpenOptions::default())
}

/// [`open_bytes`] within `opts.limits` (`opts.mmap` does not apply: the bytes are already there).
///
/// ```
/// use vit_convert::{source::{open_bytes_with, OpenOptions}, ErrorKind, FileBytes, Limits};
/// let bytes = std::fs::read("fixtures/convert/timm_vit/source.pth")?;
/// let mut limits = Limits::DEFAULT;
/// limits.pickle_nodes = 10;
/// let err = open_bytes_with(FileBytes::from_vec(bytes), &OpenOptions::with_limits(limits))
///     .err()
///     .ok_or("opened within 10 pickle nodes")?;
/// assert!(matches!(err.kind(), ErrorKind::BudgetExceeded { budget: "pickle nodes", .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`open`].
pub fn open_bytes_with(bytes: FileBytes, opts: &OpenOptions) -> Result<Box<dyn TensorSource>> {
    let limits = &opts.limits;
    match sniff(&bytes) {
        Some(Sniffed::Zip) => {
            if torch_zip::is_torch_zip(&bytes, &|| bytes.release(), limits)? {
                Ok(Box::new(torch_zip::open(bytes, limits)?))
            } else {
                Ok(Box::new(npz::NpzSource::parse(bytes, limits)?))
            }
        }
        Some(Sniffed::Pickle) => Ok(Box::new(torch_legacy::open(bytes, limits)?)),
        Some(Sniffed::Npy) => Ok(Box::new(npy::NpySource::parse(bytes, limits)?)),
        Some(Sniffed::Safetensors) => {
            let st = safetensors::SafetensorsSource::parse(bytes, limits)?;
            if flax::FlaxSafetensors::is_flax(st.metadata()) {
                Ok(Box::new(flax::FlaxSafetensors::new(Box::new(st))?))
            } else {
                Ok(Box::new(st))
            }
        }
        Some(Sniffed::Msgpack) => Ok(Box::new(flax::FlaxSource::parse(bytes, limits)?)),
        None => Err(Error::from(ErrorKind::UnknownFormat {
            magic: hex_prefix(&bytes, 8),
        })),
    }
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    if bytes.is_empty() {
        return "(empty file)".to_string();
    }
    bytes
        .iter()
        .take(n)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_container_is_refused_by_name() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        let e = open_bytes(FileBytes::from_vec(tar))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("TAR-era torch container")));
    }

    #[test]
    fn safetensors_whose_length_looks_like_a_pickle_proto_is_safetensors() {
        // Header length 0x0280 = 640: its first two bytes are 0x80 0x02, a pickle PROTO 2.
        let mut f = 640u64.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        f.resize(8 + 640, b' ');
        assert_eq!(sniff(&f), Some(Sniffed::Safetensors));
        // A real protocol-2 pickle stays a pickle; an empty msgpack map is msgpack.
        assert_eq!(sniff(b"\x80\x02}q\x00."), Some(Sniffed::Pickle));
        assert_eq!(sniff(&[0x80]), Some(Sniffed::Msgpack));
        for first in [0x81, 0x8f, 0xde, 0xdf] {
            assert_eq!(sniff(&[first, 0xa1, b'k', 0xc0]), Some(Sniffed::Msgpack));
        }
    }

    #[test]
    fn unknown_bytes_name_their_magic() {
        let e = open_bytes(FileBytes::from_vec(b"hello world".to_vec())).err();
        match e.as_ref().map(Error::kind) {
            Some(ErrorKind::UnknownFormat { magic }) => {
                assert_eq!(magic, "68 65 6c 6c 6f 20 77 6f")
            }
            other => panic!("{other:?}"),
        }
    }
}
