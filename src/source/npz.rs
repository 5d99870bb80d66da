//! numpy `.npz`: a zip of `.npy` members (`np.savez` stores them, `np.savez_compressed`
//! deflates them).
//!
//! Tensor names are the entry names minus `.npy` (JAX checkpoints use `/` inside names, e.g.
//! `Transformer/encoderblock_0/LayerNorm_0/scale`), listed in central-directory order.
//!
//! Parsing reads the zip central directory once and every member's `.npy` header — for deflated
//! members by inflating only the header — so listing never touches tensor data. Refused up
//! front: entries that are not `*.npy`, duplicate names ([`ErrorKind::Duplicate`]), entries whose
//! bytes overlap, encrypted entries, compression methods other than stored and deflate, stored
//! entries whose data runs past the file, and members whose declared size is not exactly
//! `header + numel × itemsize` ([`ErrorKind::MalformedContainer`]).
//!
//! Reading a stored member borrows its bytes from the file (when they already are C-order
//! little-endian). Reading a deflated member inflates into a buffer of exactly the declared size,
//! reading at most one byte more to detect excess (so a zip bomb cannot make us allocate beyond
//! the declared tensor), and checks the CRC.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::ops::Range;
use std::sync::Arc;

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::limits::{Limits, INFLATE_FREE_BYTES};
use crate::mmap::FileBytes;
use crate::source::mapped::{Index, Mapped};
use crate::source::npy::{self, NpyHeader};
use crate::source::{tensor_not_found, to_u64, Format};
use crate::tensor::{Tensor, TensorInfo};

/// Suffix every member name must carry.
const NPY_SUFFIX: &str = ".npy";

fn zip_error(what: &str, e: ZipError) -> Error {
    malformed(Format::Npz, format!("{what}: {e}"))
}

/// The file bytes, shared between the source (for borrowed reads) and the zip reader.
#[derive(Clone)]
struct SharedBytes(Arc<FileBytes>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// How a member's array bytes are reached.
#[derive(Debug)]
enum Member {
    /// Stored: the array bytes are this range of the file.
    Stored { data: Range<usize> },
    /// Deflated: inflate zip entry `index`, `total` bytes (npy header + data).
    Deflated { index: usize, total: usize },
}

#[derive(Debug)]
struct Entry {
    header: NpyHeader,
    member: Member,
}

/// A `.npz` archive: its bytes and their [`Npz`] index.
pub(crate) type NpzSource = Mapped<Npz>;

impl NpzSource {
    /// Parses the archive ([`Npz::parse`]) and keeps its bytes.
    ///
    /// # Errors
    /// As [`Npz::parse`].
    pub(crate) fn parse(bytes: FileBytes, limits: &Limits) -> Result<Self> {
        let bytes = Arc::new(bytes);
        let index = Npz::parse(&bytes, limits)?;
        Ok(Mapped::new(bytes, index))
    }
}

/// The index of a `.npz` archive; its zip reader keeps a handle on the bytes to inflate members.
pub(crate) struct Npz {
    archive: ZipArchive<Cursor<SharedBytes>>,
    tensors: Vec<TensorInfo>,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl Npz {
    /// Parses the archive and every member's `.npy` header.
    ///
    /// # Errors
    /// [`ErrorKind::MalformedContainer`] for an invalid zip or member (see the module docs),
    /// [`ErrorKind::Duplicate`] for a repeated entry name, [`ErrorKind::BudgetExceeded`] past
    /// [`Limits::zip_entries`], and the `.npy` header errors of [`npy::parse_npy_header`] with the
    /// tensor name attached.
    pub(crate) fn parse(bytes: &Arc<FileBytes>, limits: &Limits) -> Result<Self> {
        let mut archive = ZipArchive::new(Cursor::new(SharedBytes(Arc::clone(bytes))))
            .map_err(|e| zip_error("invalid zip archive", e))?;
        if archive.has_duplicate_names() {
            let name = duplicate_entry_name(bytes, archive.central_directory_start())
                .unwrap_or_else(|| "(name not recovered)".to_string());
            return Err(ErrorKind::Duplicate {
                what: "zip entry",
                name,
            }
            .into());
        }
        if archive.len() > limits.zip_entries {
            return Err(ErrorKind::BudgetExceeded {
                budget: "zip entries",
                limit: to_u64(limits.zip_entries),
                offset: archive.central_directory_start(),
            }
            .into());
        }
        if archive.len() > limits.tensors {
            return Err(ErrorKind::BudgetExceeded {
                budget: "tensor count",
                limit: to_u64(limits.tensors),
                offset: archive.central_directory_start(),
            }
            .into());
        }
        if archive
            .has_overlapping_entries()
            .map_err(|e| zip_error("checking entry ranges", e))?
        {
            return Err(malformed(
                Format::Npz,
                "zip entries overlap (two entries share bytes)",
            ));
        }
        // Local headers must agree with the central directory (no polyglot tricks).
        archive
            .validate_header_consistency()
            .map_err(|e| zip_error("local and central headers disagree", e))?;
        let mut tensors = Vec::with_capacity(archive.len());
        let mut entries = Vec::with_capacity(archive.len());
        let mut by_name = HashMap::with_capacity(archive.len());
        let mut compressed = 0usize;
        for index in 0..archive.len() {
            let raw = RawEntry::read(&mut archive, index)?;
            let Some(name) = raw.name.strip_suffix(NPY_SUFFIX) else {
                return Err(malformed(
                    Format::Npz,
                    format!("entry '{}' is not a .npy member", raw.name),
                ));
            };
            let name = name.to_string();
            let (header, member) = parse_member(&mut archive, bytes, index, &raw, limits)
                .map_err(|e| e.with_tensor(&name))?;
            if matches!(member, Member::Deflated { .. }) {
                compressed = compressed.saturating_add(1);
            }
            if by_name.insert(name.clone(), entries.len()).is_some() {
                // Unreachable after has_duplicate_names, kept as a guard.
                return Err(ErrorKind::Duplicate {
                    what: "zip entry",
                    name: raw.name,
                }
                .into());
            }
            tensors.push(header.info(&name));
            entries.push(Entry { header, member });
        }
        let mut metadata = BTreeMap::new();
        metadata.insert("entries".to_string(), entries.len().to_string());
        metadata.insert("compressed_entries".to_string(), compressed.to_string());
        Ok(Npz {
            archive,
            tensors,
            entries,
            by_name,
            metadata,
        })
    }

    /// Inflates deflated entry `index`: exactly `total` bytes, CRC checked.
    fn inflate(&self, index: usize, total: usize) -> Result<Vec<u8>> {
        // A clone shares the parsed central directory and the file bytes.
        let mut archive = self.archive.clone();
        let file = archive
            .by_index(index)
            .map_err(|e| zip_error(&format!("entry #{index}"), e))?;
        let mut buf = Vec::with_capacity(total);
        // One byte past the declared size so that excess is detected, never buffered.
        let cap = to_u64(total).saturating_add(1);
        file.take(cap)
            .read_to_end(&mut buf)
            .map_err(|e| malformed(Format::Npz, format!("inflating entry #{index}: {e}")))?;
        if buf.len() != total {
            return Err(malformed(
                Format::Npz,
                format!(
                    "entry #{index} inflates to {}{} bytes, declared {total}",
                    buf.len(),
                    if buf.len() > total { "+" } else { "" }
                ),
            ));
        }
        Ok(buf)
    }
}

/// What the central directory says about one entry.
struct RawEntry {
    name: String,
    encrypted: bool,
    compression: CompressionMethod,
    /// Range of the (possibly compressed) bytes in the file; not yet checked against its length.
    data_start: usize,
    compressed_size: usize,
    /// Uncompressed size.
    size: usize,
}

impl RawEntry {
    fn read(archive: &mut ZipArchive<Cursor<SharedBytes>>, index: usize) -> Result<Self> {
        let file = archive
            .by_index_raw(index)
            .map_err(|e| zip_error(&format!("entry #{index}"), e))?;
        let name = file
            .name()
            .map_err(|e| zip_error(&format!("entry #{index} name"), e))?
            .into_owned();
        let data_start = file
            .data_start()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| {
                malformed(Format::Npz, format!("entry '{name}': data offset unknown"))
            })?;
        Ok(RawEntry {
            encrypted: file.encrypted(),
            compression: file.compression(),
            data_start,
            compressed_size: usize::try_from(file.compressed_size()).unwrap_or(usize::MAX),
            size: usize::try_from(file.size()).unwrap_or(usize::MAX),
            name,
        })
    }
}

/// Validates one member and reads its `.npy` header (inflating only the header if deflated).
fn parse_member(
    archive: &mut ZipArchive<Cursor<SharedBytes>>,
    bytes: &[u8],
    index: usize,
    raw: &RawEntry,
    limits: &Limits,
) -> Result<(NpyHeader, Member)> {
    let entry_name = raw.name.as_str();
    if raw.encrypted {
        return Err(malformed(
            Format::Npz,
            format!("entry '{entry_name}' is encrypted"),
        ));
    }
    let member_bytes = raw
        .data_start
        .checked_add(raw.compressed_size)
        .and_then(|end| bytes.get(raw.data_start..end))
        .ok_or_else(|| {
            Error::from(ErrorKind::Truncated {
                what: "npz entry data",
                offset: to_u64(raw.data_start),
                needed: to_u64(raw.compressed_size),
                available: to_u64(bytes.len().saturating_sub(raw.data_start)),
            })
        })?;
    match raw.compression {
        CompressionMethod::Stored => {
            if raw.compressed_size != raw.size {
                return Err(malformed(
                    Format::Npz,
                    format!(
                        "stored entry '{entry_name}' has compressed size {} but size {}",
                        raw.compressed_size, raw.size
                    ),
                ));
            }
            let header = npy::parse_npy_header(member_bytes, limits)?;
            npy::check_data_len(&header, member_bytes.len())?;
            // data_offset + data_len == member length (checked), which lies inside the file.
            let start = raw
                .data_start
                .checked_add(header.data_offset)
                .ok_or_else(|| {
                    malformed(
                        Format::Npz,
                        format!("entry '{entry_name}': offset overflows"),
                    )
                })?;
            let end = start.checked_add(header.data_len).ok_or_else(|| {
                malformed(
                    Format::Npz,
                    format!("entry '{entry_name}': offset overflows"),
                )
            })?;
            Ok((header, Member::Stored { data: start..end }))
        }
        CompressionMethod::Deflated => {
            check_inflation(raw, entry_name, limits)?;
            let header = read_deflated_header(archive, index, entry_name, raw.size, limits)?;
            npy::check_data_len(&header, raw.size)?;
            Ok((
                header,
                Member::Deflated {
                    index,
                    total: raw.size,
                },
            ))
        }
        other => Err(malformed(
            Format::Npz,
            format!(
                "entry '{entry_name}' uses compression method {other} (only stored and deflate)"
            ),
        )),
    }
}

/// Most bytes deflate can produce per compressed byte (a 258-byte match coded in 2 bits), plus
/// slack for block headers of tiny streams.
const DEFLATE_MAX_RATIO: usize = 1032;
const DEFLATE_SLACK: usize = 1024;

/// Refuses a deflated member whose declared size no deflate stream of its length can produce
/// (`MalformedContainer`), or one that inflates past [`INFLATE_FREE_BYTES`] at a ratio above
/// [`Limits::npz_inflate_ratio`] (`BudgetExceeded`): the inflated bytes are what reading allocates.
fn check_inflation(raw: &RawEntry, entry_name: &str, limits: &Limits) -> Result<()> {
    let possible = raw
        .compressed_size
        .saturating_mul(DEFLATE_MAX_RATIO)
        .saturating_add(DEFLATE_SLACK);
    if raw.size > possible {
        return Err(malformed(Format::Npz, format!(
            "deflated entry '{entry_name}' declares {} bytes, more than {} compressed bytes can inflate to",
            raw.size, raw.compressed_size
        )));
    }
    let ratio = limits.npz_inflate_ratio;
    if raw.size > INFLATE_FREE_BYTES && raw.size / ratio.max(1) > raw.compressed_size {
        return Err(ErrorKind::BudgetExceeded {
            budget: "npz inflate ratio",
            limit: to_u64(ratio),
            offset: to_u64(raw.data_start),
        }
        .into());
    }
    Ok(())
}

/// Inflates just enough of a deflated member to parse its `.npy` header.
fn read_deflated_header(
    archive: &mut ZipArchive<Cursor<SharedBytes>>,
    index: usize,
    entry_name: &str,
    size: usize,
    limits: &Limits,
) -> Result<NpyHeader> {
    let mut file = archive
        .by_index(index)
        .map_err(|e| zip_error(&format!("entry '{entry_name}'"), e))?;
    let inflate_err =
        |e: std::io::Error| malformed(Format::Npz, format!("inflating entry '{entry_name}': {e}"));
    let mut head = Vec::with_capacity(npy::NPY_PREAMBLE_MAX);
    (&mut file)
        .take(to_u64(npy::NPY_PREAMBLE_MAX.min(size)))
        .read_to_end(&mut head)
        .map_err(inflate_err)?;
    // Bounded by Limits::npy_header_bytes + preamble; checked against the declared size before reading.
    let total = npy::npy_header_total_len(&head, limits)?;
    if total > size {
        return Err(ErrorKind::Truncated {
            what: "npy header",
            offset: 0,
            needed: to_u64(total),
            available: to_u64(size),
        }
        .into());
    }
    let rest = total.saturating_sub(head.len());
    head.reserve(rest);
    (&mut file)
        .take(to_u64(rest))
        .read_to_end(&mut head)
        .map_err(inflate_err)?;
    npy::parse_npy_header(&head, limits)
}

/// Recovers the first repeated name from the central directory (for the error message).
fn duplicate_entry_name(bytes: &[u8], central_start: u64) -> Option<String> {
    const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
    const FIXED: usize = 46;
    let mut pos = usize::try_from(central_start).ok()?;
    let mut seen = std::collections::HashSet::new();
    while bytes.get(pos..pos.checked_add(4)?)? == CENTRAL_SIG {
        let fixed = bytes.get(pos..pos.checked_add(FIXED)?)?;
        let u16_at = |at: usize| -> Option<usize> {
            let b = fixed.get(at..at.checked_add(2)?)?;
            Some(usize::from(u16::from_le_bytes([*b.first()?, *b.get(1)?])))
        };
        let (name_len, extra_len, comment_len) = (u16_at(28)?, u16_at(30)?, u16_at(32)?);
        let name_start = pos.checked_add(FIXED)?;
        let name = bytes.get(name_start..name_start.checked_add(name_len)?)?;
        if !seen.insert(name) {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        pos = name_start
            .checked_add(name_len)?
            .checked_add(extra_len)?
            .checked_add(comment_len)?;
    }
    None
}

impl Index for Npz {
    fn format(&self) -> Format {
        Format::Npz
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        let entry = self
            .by_name
            .get(name)
            .and_then(|&i| self.entries.get(i))
            .ok_or_else(|| tensor_not_found(name))?;
        let h = &entry.header;
        let stored: Cow<'_, [u8]> = match &entry.member {
            Member::Stored { data } => Cow::Borrowed(bytes.get(data.clone()).ok_or_else(|| {
                Error::from(ErrorKind::Truncated {
                    what: "npz entry data",
                    offset: to_u64(data.start),
                    needed: to_u64(h.data_len),
                    available: to_u64(bytes.len().saturating_sub(data.start)),
                })
                .with_tensor(name)
            })?),
            Member::Deflated { index, total } => {
                let mut buf = self
                    .inflate(*index, *total)
                    .map_err(|e| e.with_tensor(name))?;
                // The CRC matched, so the header is the one parsed at listing time.
                buf.drain(..h.data_offset.min(buf.len()));
                Cow::Owned(buf)
            }
        };
        let data = npy::decode_npy_data(h, stored).map_err(|e| e.with_tensor(name))?;
        Tensor::new(h.dtype, h.shape.clone(), data).map_err(|e| e.with_tensor(name))
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    use super::*;
    use crate::source::TensorSource;
    use crate::tensor::DType;

    fn npy(dtype: DType, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        npy::write_npy(&mut out, dtype, shape, data).unwrap();
        out
    }

    fn f32_le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// An archive of `(entry name, bytes)` members with the given method.
    fn zip_of(members: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in members {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn parse(bytes: Vec<u8>) -> Result<NpzSource> {
        NpzSource::parse(FileBytes::from_vec(bytes), &Limits::DEFAULT)
    }

    /// Overwrites the little-endian u32 at `field` after every `sig` in `bytes`.
    fn patch_u32(bytes: &mut [u8], sig: &[u8; 4], field: usize, value: u32) {
        let mut i = 0;
        while i + 4 <= bytes.len() {
            if &bytes[i..i + 4] == sig {
                bytes[i + field..i + field + 4].copy_from_slice(&value.to_le_bytes());
            }
            i += 1;
        }
    }

    const LOCAL: &[u8; 4] = b"PK\x03\x04";
    const CENTRAL: &[u8; 4] = b"PK\x01\x02";

    /// `(entry name, member bytes, dtype, shape, expected C-order LE data)`.
    type Fixture = (&'static str, Vec<u8>, DType, Vec<usize>, Vec<u8>);

    fn jax_like_members() -> Vec<Fixture> {
        let scale = f32_le(&[1.0, 2.0, 3.0]);
        let cls = vec![0x80, 0x3f, 0x00, 0x40];
        vec![
            (
                "Transformer/encoderblock_0/LayerNorm_0/scale.npy",
                npy(DType::F32, &[3], &scale),
                DType::F32,
                vec![3],
                scale,
            ),
            (
                "cls.npy",
                npy(DType::BF16, &[1, 1, 2], &cls),
                DType::BF16,
                vec![1, 1, 2],
                cls,
            ),
            (
                "empty.npy",
                npy(DType::U8, &[0, 3], &[]),
                DType::U8,
                vec![0, 3],
                vec![],
            ),
        ]
    }

    #[test]
    fn npz_stored_and_deflated_list_in_file_order_and_read_exactly() {
        let members = jax_like_members();
        let pairs: Vec<(&str, Vec<u8>)> = members.iter().map(|m| (m.0, m.1.clone())).collect();
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let src = parse(zip_of(&pairs, method)).unwrap();
            let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "Transformer/encoderblock_0/LayerNorm_0/scale",
                    "cls",
                    "empty"
                ]
            );
            for (entry, _, dtype, shape, data) in &members {
                let name = entry.strip_suffix(".npy").unwrap();
                let t = src.read(name).unwrap();
                assert_eq!(
                    (t.dtype, &t.shape, t.data.as_ref()),
                    (*dtype, shape, &data[..])
                );
                if method == CompressionMethod::Stored {
                    assert!(matches!(t.data, Cow::Borrowed(_)), "{name} borrowed");
                }
            }
            let want = if method == CompressionMethod::Stored {
                "0"
            } else {
                "3"
            };
            assert_eq!(src.metadata()["compressed_entries"], want);
            assert_eq!(src.metadata()["entries"], "3");
        }
    }

    #[test]
    fn npz_big_endian_fortran_member_is_converted() {
        // A hand-written '>i2' Fortran (2, 2) member: [[1, 2], [3, 4]] stored as 1 3 2 4.
        let header = "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 2), }\n";
        let mut member = b"\x93NUMPY\x01\x00".to_vec();
        member.extend_from_slice(&(header.len() as u16).to_le_bytes());
        member.extend_from_slice(header.as_bytes());
        for v in [1i16, 3, 2, 4] {
            member.extend_from_slice(&v.to_be_bytes());
        }
        let want: Vec<u8> = [1i16, 2, 3, 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let src = parse(zip_of(&[("m.npy", member.clone())], method)).unwrap();
            assert_eq!(src.read("m").unwrap().data.as_ref(), &want[..]);
        }
    }

    #[test]
    fn npz_duplicate_entry_is_refused() {
        let a = npy(DType::F32, &[1], &f32_le(&[1.0]));
        let mut bytes = zip_of(
            &[("a.npy", a.clone()), ("b.npy", a)],
            CompressionMethod::Stored,
        );
        // Rename b.npy to a.npy in both the local and the central header.
        for i in 0..bytes.len() - 5 {
            if &bytes[i..i + 5] == b"b.npy" {
                bytes[i] = b'a';
            }
        }
        let e = parse(bytes).err().unwrap();
        match e.kind() {
            ErrorKind::Duplicate { what, name } => {
                assert_eq!((*what, name.as_str()), ("zip entry", "a.npy"))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn npz_non_npy_entry_is_malformed() {
        let a = npy(DType::F32, &[1], &f32_le(&[1.0]));
        let bytes = zip_of(
            &[("a.npy", a), ("README.txt", b"hi".to_vec())],
            CompressionMethod::Stored,
        );
        let e = parse(bytes).err().unwrap();
        match e.kind() {
            ErrorKind::MalformedContainer { format, reason } => {
                assert_eq!(*format, Format::Npz);
                assert!(reason.contains("README.txt"), "{reason}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn npz_overlapping_entries_are_malformed() {
        let a = npy(DType::F32, &[1], &f32_le(&[1.0]));
        let mut bytes = zip_of(
            &[("a.npy", a.clone()), ("b.npy", a)],
            CompressionMethod::Stored,
        );
        // Point the second central record at the first local header (offset 0).
        let second_central = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == CENTRAL)
            .nth(1)
            .unwrap()
            .0;
        bytes[second_central + 42..second_central + 46].copy_from_slice(&0u32.to_le_bytes());
        let e = parse(bytes).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
            "{e}"
        );
    }

    #[test]
    fn npz_deflate_bomb_is_capped_at_declared_size() {
        // The member claims a 4-element f32 array but inflates to 16 MiB.
        let small = npy(DType::F32, &[4], &[0; 16]);
        let declared = small.len() as u32;
        let mut bomb = small;
        bomb.resize(16 << 20, 0);
        let mut bytes = zip_of(&[("bomb.npy", bomb)], CompressionMethod::Deflated);
        assert!(bytes.len() < 1 << 20, "compresses well");
        patch_u32(&mut bytes, LOCAL, 22, declared);
        patch_u32(&mut bytes, CENTRAL, 24, declared);
        let src = parse(bytes).unwrap();
        assert_eq!(src.tensors()[0].shape, vec![4]);
        let e = src.read("bomb").err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
            "{e}"
        );
        assert_eq!(e.tensor(), Some("bomb"));
    }

    #[test]
    fn npz_deflated_crc_mismatch_is_detected_on_read() {
        let data = f32_le(&[1.0, 2.0, 3.0, 4.0]);
        let mut bytes = zip_of(
            &[("a.npy", npy(DType::F32, &[4], &data))],
            CompressionMethod::Deflated,
        );
        patch_u32(&mut bytes, LOCAL, 14, 0xdead_beef);
        patch_u32(&mut bytes, CENTRAL, 16, 0xdead_beef);
        let src = parse(bytes).unwrap();
        let e = src.read("a").err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
            "{e}"
        );
    }

    #[test]
    fn npz_member_shorter_than_its_shape_is_truncated() {
        let mut member = npy(DType::F32, &[4], &[0; 16]);
        member.truncate(member.len() - 4);
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let e = parse(zip_of(&[("a.npy", member.clone())], method))
                .err()
                .unwrap();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Truncated {
                        what: "npy data",
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(e.tensor(), Some("a"));
        }
    }

    #[test]
    fn npz_member_errors_name_the_tensor() {
        let header = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n";
        let mut member = b"\x93NUMPY\x01\x00".to_vec();
        member.extend_from_slice(&(header.len() as u16).to_le_bytes());
        member.extend_from_slice(header.as_bytes());
        member.extend_from_slice(&[0; 8]);
        let e = parse(zip_of(&[("x/y.npy", member)], CompressionMethod::Deflated))
            .err()
            .unwrap();
        assert!(matches!(e.kind(), ErrorKind::UnsupportedDType { dtype } if dtype == "<c8"));
        assert_eq!(e.tensor(), Some("x/y"));
    }

    #[test]
    fn npz_truncated_at_every_offset_errors_without_panic() {
        let members = jax_like_members();
        let pairs: Vec<(&str, Vec<u8>)> = members.iter().map(|m| (m.0, m.1.clone())).collect();
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let full = zip_of(&pairs, method);
            for cut in 0..full.len() {
                if let Ok(src) = parse(full[..cut].to_vec()) {
                    // A prefix that still parses must read exactly or fail cleanly.
                    for t in src.tensors() {
                        let _ = src.read(&t.name);
                    }
                }
            }
        }
    }

    #[test]
    fn npz_corrupted_bytes_never_panic() {
        let members = jax_like_members();
        let pairs: Vec<(&str, Vec<u8>)> = members.iter().map(|m| (m.0, m.1.clone())).collect();
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let full = zip_of(&pairs, method);
            for at in 0..full.len() {
                let mut bytes = full.clone();
                bytes[at] ^= 0xa5;
                if let Ok(src) = parse(bytes) {
                    for t in src.tensors() {
                        if let Ok(d) = src.read(&t.name) {
                            assert_eq!(d.data.len(), t.byte_len());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn npz_read_of_unknown_name_is_not_found() {
        let src = parse(zip_of(
            &[("a.npy", npy(DType::U8, &[1], &[1]))],
            CompressionMethod::Stored,
        ))
        .unwrap();
        let e = src.read("a.npy").err().unwrap();
        assert!(matches!(e.kind(), ErrorKind::TensorNotFound { .. }));
    }
}
