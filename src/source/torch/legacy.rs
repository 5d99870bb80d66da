//! The PyTorch legacy container (`_use_new_zipfile_serialization=False`; every release before 1.6).
//!
//! ```text
//! pickle  magic number 0x1950a86a20f9469cfc6c
//! pickle  protocol version 1001
//! pickle  sys_info {protocol_version, little_endian, type_sizes}
//! pickle  the object; storages are ('storage', class, key, location, numel, view_metadata)
//! pickle  list of storage keys
//! then, for each key in that list: i64 little-endian element count, count × elem_size bytes
//! ```
//!
//! Every pickle goes through the same safe machine as the zip container. Each storage's element
//! count is read from its prefix and cross-checked with the numel the pickle declares.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::mmap::FileBytes;
use crate::source::mapped::Mapped;
use crate::source::pickle::value::{sequence, string_keyed};
use crate::source::pickle::{parse_pickle, BigInt, Node, Parsed};
use crate::source::torch::{extract, Checkpoint, TorchIndex, TorchSource};
use crate::source::Format;
use crate::source::Limits;

/// `torch.serialization.MAGIC_NUMBER`, little-endian magnitude.
const MAGIC_NUMBER: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;
/// Where a POSIX tar header keeps its `ustar` magic.
const TAR_MAGIC: Range<usize> = 257..262;
/// Bytes of each storage's element-count prefix.
const COUNT_LEN: usize = 8;

/// Opens a legacy `torch.save` checkpoint: [`parse`]s it and keeps its bytes.
///
/// # Errors
/// As [`parse`].
pub(crate) fn open(bytes: FileBytes, limits: &Limits) -> Result<TorchSource> {
    Mapped::parse_with(bytes, |b| parse(b, limits))
}

/// Parses the pickles and locates every storage's data.
///
/// # Errors
/// `MalformedContainer` when the magic number or protocol version is wrong (or for the
/// unsupported TAR container); pickle errors; `StorageSizeMismatch` when a storage's count
/// prefix disagrees with the pickle; `Truncated` when its data runs past the file;
/// `MissingStorage`; layout errors as the zip container.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<TorchIndex> {
    if bytes.get(TAR_MAGIC) == Some(b"ustar") {
        return Err(malformed(
            Format::TorchLegacy,
            "this is the TAR-era torch container (torchvision ≤ 0.3), which is not supported",
        ));
    }
    let magic = parse_pickle(bytes, 0, limits)?;
    let is_magic = matches!(
        magic.arena.get(magic.root),
        Node::BigInt(BigInt { negative: false, magnitude }) if magnitude[..] == MAGIC_NUMBER
    );
    if !is_magic {
        return Err(malformed(
            Format::TorchLegacy,
            "not a torch legacy file (no magic number)",
        ));
    }
    let version = parse_pickle(bytes, magic.end, limits)?;
    match version.arena.get(version.root) {
        Node::Int(PROTOCOL_VERSION) => {}
        other => {
            return Err(malformed(
                Format::TorchLegacy,
                format!("unsupported legacy protocol version {}", scalar_text(other)),
            ))
        }
    }
    let sys_info = parse_pickle(bytes, version.end, limits)?;
    let mut metadata = BTreeMap::new();
    let mut notes = Vec::new();
    for (k, v) in string_keyed(&sys_info.arena, sys_info.root) {
        let node = sys_info.arena.get(v);
        if matches!(node, Node::Bool(_) | Node::Int(_)) {
            metadata.insert(format!("sys_info.{k}"), scalar_text(node));
        }
    }
    if matches!(
        metadata.get("sys_info.little_endian").map(String::as_str),
        Some("False")
    ) {
        notes.push(
            "written on a big-endian host; torch stores legacy storage data little-endian"
                .to_string(),
        );
    }

    let object = parse_pickle(bytes, sys_info.end, limits)?;
    if let Some(p) = object.protocol {
        metadata.insert("pickle_protocol".to_string(), p.to_string());
    }
    let extracted = extract(&object)?;
    let declared = declared_storages(&object)?;
    let keys_pickle = parse_pickle(bytes, object.end, limits)?;
    let keys = storage_keys(&keys_pickle)?;

    // The raw storages follow, in the order of the key list.
    let mut pos = keys_pickle.end;
    let mut records: HashMap<&str, Range<usize>> = HashMap::new();
    for key in &keys {
        let (elem, numel) = *declared.get(key.as_str()).ok_or_else(|| {
            malformed(
                Format::TorchLegacy,
                format!("storage {key} is listed but no persistent id names it"),
            )
        })?;
        let count_bytes = bytes
            .get(pos..pos.saturating_add(COUNT_LEN))
            .ok_or_else(|| truncated("legacy storage count", pos, COUNT_LEN, bytes.len()))?;
        let mut a = [0u8; COUNT_LEN];
        a.copy_from_slice(count_bytes);
        let count = i64::from_le_bytes(a);
        let found = u64::try_from(count).map_err(|_| {
            malformed(
                Format::TorchLegacy,
                format!("storage {key}: negative element count {count} at byte {pos}"),
            )
        })?;
        if found != numel {
            let bytes_of = |n: u64| n.saturating_mul(elem as u64);
            return Err(ErrorKind::StorageSizeMismatch {
                key: key.clone(),
                declared: bytes_of(numel),
                found: bytes_of(found),
            }
            .into());
        }
        let start = pos + COUNT_LEN;
        let len = usize::try_from(found)
            .ok()
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| truncated("legacy storage data", start, usize::MAX, bytes.len()))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| truncated("legacy storage data", start, len, bytes.len()))?;
        if records.insert(key.as_str(), start..end).is_some() {
            return Err(malformed(
                Format::TorchLegacy,
                format!("storage {key} is listed twice"),
            ));
        }
        pos = end;
    }
    if pos < bytes.len() {
        notes.push(format!(
            "{} bytes after the last storage ignored",
            bytes.len() - pos
        ));
    }
    let mut ranges = Vec::with_capacity(extracted.storages.len());
    for s in &extracted.storages {
        let r = records
            .get(s.key.as_str())
            .ok_or_else(|| ErrorKind::MissingStorage { key: s.key.clone() })?;
        ranges.push(r.clone());
    }
    notes.extend(extracted.notes.iter().cloned());
    let checkpoint = Checkpoint::bind(extracted, ranges, bytes.len(), false)?;
    Ok(TorchIndex {
        format: Format::TorchLegacy,
        checkpoint,
        metadata,
        notes,
    })
}

fn truncated(what: &'static str, offset: usize, needed: usize, len: usize) -> Error {
    ErrorKind::Truncated {
        what,
        offset: offset as u64,
        needed: needed as u64,
        available: len.saturating_sub(offset) as u64,
    }
    .into()
}

fn scalar_text(node: &Node) -> String {
    match node {
        Node::Bool(true) => "True".into(),
        Node::Bool(false) => "False".into(),
        Node::Int(i) => i.to_string(),
        other => format!("a {}", other.kind()),
    }
}

/// Element size and numel of every root storage the object pickle names (also storages that
/// no listed tensor uses: their data must still be stepped over).
fn declared_storages(object: &Parsed) -> Result<HashMap<&str, (usize, u64)>> {
    let mut out: HashMap<&str, (usize, u64)> = HashMap::new();
    for node in object.arena.iter() {
        if let Node::Storage(s) = node {
            let this = (s.class.elem_size(), s.numel);
            match out.get(s.key.as_str()) {
                Some(prev) if *prev != this => {
                    return Err(malformed(
                        Format::TorchLegacy,
                        format!(
                            "storage {} is declared with two different types or sizes",
                            s.key
                        ),
                    ))
                }
                _ => {
                    out.insert(s.key.as_str(), this);
                }
            }
        }
    }
    Ok(out)
}

/// The list of storage keys that precedes the raw data.
fn storage_keys(keys: &Parsed) -> Result<Vec<String>> {
    let items = sequence(keys.arena.get(keys.root))
        .ok_or_else(|| malformed(Format::TorchLegacy, "storage key list is not a list"))?;
    items
        .iter()
        .map(|k| match keys.arena.get(*k) {
            Node::Str(s) => Ok(s.clone()),
            Node::Int(i) => Ok(i.to_string()),
            other => Err(malformed(
                Format::TorchLegacy,
                format!("storage key is a {}", other.kind()),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::source::pickle::opcodes::*;
    use crate::source::pickle::testutil::{f32_bytes, P};
    use crate::source::TensorSource;

    const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";
    const VERSION: &[u8] = b"\x80\x02\x4d\xe9\x03\x2e";

    fn sys_info() -> Vec<u8> {
        P::new(2)
            .op(&[EMPTY_DICT])
            .str("protocol_version")
            .int(1001)
            .op(&[SETITEM])
            .str("little_endian")
            .op(&[NEWTRUE, SETITEM])
            .stop()
    }

    fn keys(k: &[&str]) -> Vec<u8> {
        let mut p = P::new(2).op(&[MARK]);
        for key in k {
            p = p.str(key);
        }
        p.op(&[LIST]).stop()
    }

    /// magic, version, sys_info, object, keys, then `(count, data)` per storage.
    fn legacy(object: &[u8], key_list: &[&str], data: &[(i64, &[u8])]) -> Vec<u8> {
        let mut out = [MAGIC, VERSION, &sys_info(), object, &keys(key_list)].concat();
        for (count, bytes) in data {
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    fn object() -> Vec<u8> {
        P::new(2)
            .op(&[EMPTY_DICT, MARK])
            .str("w")
            .tensor_with("FloatStorage", "k1", 6, 0, &[2, 3], &[3, 1], true)
            .str("wt")
            .tensor_with("FloatStorage", "k1", 6, 0, &[3, 2], &[1, 3], true)
            .str("row")
            .tensor_with("FloatStorage", "k1", 6, 3, &[3], &[1], true)
            .str("i")
            .tensor_with("LongStorage", "k2", 2, 0, &[2], &[1], true)
            .op(&[SETITEMS])
            .stop()
    }

    fn six() -> Vec<u8> {
        f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    }

    fn longs() -> Vec<u8> {
        [7i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn open(bytes: Vec<u8>) -> Result<TorchSource> {
        super::open(FileBytes::from_vec(bytes), &Limits::DEFAULT)
    }

    fn err_of(r: Result<TorchSource>) -> Error {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn legacy_file_reads_every_view_exactly() {
        let bytes = legacy(&object(), &["k1", "k2"], &[(6, &six()), (2, &longs())]);
        let src = open(bytes).unwrap();
        assert_eq!(src.format(), Format::TorchLegacy);
        let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "wt", "row", "i"]);
        assert_eq!(
            src.metadata()
                .get("sys_info.little_endian")
                .map(String::as_str),
            Some("True")
        );
        let w = src.read("w").unwrap();
        assert!(matches!(w.data, Cow::Borrowed(_)));
        assert_eq!(w.data.as_ref(), six().as_slice());
        assert_eq!(
            src.read("wt").unwrap().data.as_ref(),
            f32_bytes(&[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]).as_slice()
        );
        assert_eq!(
            src.read("row").unwrap().data.as_ref(),
            f32_bytes(&[3.0, 4.0, 5.0]).as_slice()
        );
        assert_eq!(src.read("i").unwrap().data.as_ref(), longs().as_slice());
    }

    #[test]
    fn legacy_count_prefix_must_match_pickle_numel() {
        let bytes = legacy(
            &object(),
            &["k1", "k2"],
            &[(5, &six()[..20]), (2, &longs())],
        );
        let e = err_of(open(bytes));
        assert!(matches!(
            e.kind(),
            ErrorKind::StorageSizeMismatch { key, declared: 24, found: 20 } if key == "k1"
        ));
    }

    #[test]
    fn legacy_storage_data_past_the_end_is_truncated() {
        let full = legacy(&object(), &["k1", "k2"], &[(6, &six()), (2, &longs())]);
        assert!(open(full.clone()).is_ok());
        let e = err_of(open(full[..full.len() - 1].to_vec()));
        assert!(matches!(e.kind(), ErrorKind::Truncated { .. }));
        for cut in 0..full.len() {
            assert!(open(full[..cut].to_vec()).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn legacy_requires_the_magic_number() {
        let mut bytes = legacy(&object(), &["k1", "k2"], &[(6, &six()), (2, &longs())]);
        bytes[5] ^= 1;
        let e = err_of(open(bytes));
        assert!(matches!(e.kind(), ErrorKind::MalformedContainer { .. }));
        assert!(e.to_string().contains("not a torch legacy file"));
    }

    #[test]
    fn legacy_view_metadata_selects_a_slice_of_the_root_storage() {
        let object = P::new(2)
            .global("torch._utils", "_rebuild_tensor")
            .op(&[MARK, MARK])
            .str("storage")
            .global("torch", "FloatStorage")
            .str("root")
            .str("cpu")
            .int(6)
            .op(&[MARK])
            .str("view")
            .int(2)
            .int(3)
            .op(&[TUPLE, TUPLE, BINPERSID])
            .int(1)
            .ints(&[2])
            .ints(&[1])
            .op(&[TUPLE, REDUCE])
            .stop();
        let src = open(legacy(&object, &["root"], &[(6, &six())])).unwrap();
        assert_eq!(
            src.read("tensor").unwrap().data.as_ref(),
            f32_bytes(&[3.0, 4.0]).as_slice()
        );
    }

    #[test]
    fn legacy_key_list_must_match_the_pickle() {
        let e = err_of(open(legacy(&object(), &["k1"], &[(6, &six())])));
        assert!(matches!(e.kind(), ErrorKind::MissingStorage { key } if key == "k2"));
        let e = err_of(open(legacy(
            &object(),
            &["k1", "k2", "k3"],
            &[(6, &six()), (2, &longs()), (0, &[])],
        )));
        assert!(matches!(e.kind(), ErrorKind::MalformedContainer { .. }));
    }

    #[test]
    fn tar_container_is_refused_clearly() {
        let mut tar = vec![0u8; 1024];
        tar[..8].copy_from_slice(b"sys_info");
        tar[257..262].copy_from_slice(b"ustar");
        let e = err_of(open(tar));
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { format: Format::TorchLegacy, reason } if reason.contains("TAR")),
            "{e}"
        );
    }
}
