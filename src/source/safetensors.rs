//! safetensors: an 8-byte little-endian header length, a JSON header, then the tensor bytes.
//!
//! Structural validation is the `safetensors` crate's (`SafeTensors::read_metadata`: offsets
//! contiguous with no gaps or overlaps, each range exactly `numel × dtype size`, the data covering
//! the rest of the file exactly); its errors become [`ErrorKind::MalformedContainer`] carrying its
//! message. On top of it this reader checks, before the crate sees the header:
//!
//! * the header length against [`Limits::safetensors_header_bytes`] ([`ErrorKind::BudgetExceeded`]) and
//!   against the bytes present ([`ErrorKind::Truncated`]);
//! * repeated JSON keys, which `serde_json` would otherwise resolve silently by keeping the last
//!   ([`ErrorKind::Duplicate`] with `what` = `tensor`, or `metadata key` inside `__metadata__`);
//! * dtypes outside this crate's set (F8_*, U16, C64, …) ([`ErrorKind::UnsupportedDType`]).
//!
//! Tensors are listed in the order of their data offsets (ties between empty tensors keep header
//! order), `__metadata__` is exposed by [`TensorSource::metadata`] as is (a Flax-written file
//! carries `format: flax`), and data is always borrowed from the file (alignment is irrelevant:
//! the data is bytes).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::mmap::FileBytes;
use crate::source::mapped::{Index, Mapped};
use crate::source::{tensor_not_found, to_u64, Format, MAX_RANK};
use crate::tensor::{DType, Tensor, TensorInfo};

/// Bytes of the header-length prefix.
const LEN_PREFIX: usize = 8;

/// The reserved header key holding string metadata.
const METADATA_KEY: &str = "__metadata__";

/// A safetensors file: its bytes and their [`Safetensors`] index.
pub(crate) type SafetensorsSource = Mapped<Safetensors>;

impl SafetensorsSource {
    /// Parses and validates a whole safetensors file ([`Safetensors::parse`]) and keeps its bytes.
    ///
    /// # Errors
    /// As [`Safetensors::parse`].
    pub(crate) fn parse(bytes: FileBytes, limits: &Limits) -> Result<Self> {
        Mapped::parse_with(bytes, |b| Safetensors::parse(b, limits))
    }
}

/// The index of a safetensors file.
pub(crate) struct Safetensors {
    tensors: Vec<TensorInfo>,
    /// Absolute byte range of each tensor in `bytes`, parallel to `tensors`.
    ranges: Vec<Range<usize>>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl Safetensors {
    /// Parses and validates a whole safetensors file.
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`], [`ErrorKind::BudgetExceeded`], [`ErrorKind::Duplicate`],
    /// [`ErrorKind::UnsupportedDType`] (with the tensor name) as in the module docs;
    /// [`ErrorKind::MalformedContainer`] for invalid UTF-8 or JSON and for everything the
    /// `safetensors` crate rejects.
    pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let prefix: [u8; LEN_PREFIX] = bytes
            .get(..LEN_PREFIX)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| {
                Error::from(ErrorKind::Truncated {
                    what: "safetensors header length",
                    offset: 0,
                    needed: to_u64(LEN_PREFIX),
                    available: to_u64(bytes.len()),
                })
            })?;
        let declared = u64::from_le_bytes(prefix);
        let max_header = limits.safetensors_header_bytes;
        let header_len = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= max_header)
            .ok_or_else(|| {
                Error::from(ErrorKind::BudgetExceeded {
                    budget: "safetensors header length",
                    limit: to_u64(max_header),
                    offset: 0,
                })
            })?;
        // header_len ≤ 100 MB: no overflow.
        let data_start = LEN_PREFIX.saturating_add(header_len);
        let header = bytes.get(LEN_PREFIX..data_start).ok_or_else(|| {
            Error::from(ErrorKind::Truncated {
                what: "safetensors header",
                offset: to_u64(LEN_PREFIX),
                needed: declared,
                available: to_u64(bytes.len().saturating_sub(LEN_PREFIX)),
            })
        })?;
        let text = std::str::from_utf8(header)
            .map_err(|e| malformed(Format::Safetensors, format!("header is not UTF-8: {e}")))?;
        let scanned: RawHeader = serde_json::from_str(text).map_err(|e| {
            malformed(
                Format::Safetensors,
                format!("header is not a valid JSON object: {e}"),
            )
        })?;
        let (order, metadata) = check_header(scanned)?;
        let max_tensors = limits.tensors;
        if order.len() > max_tensors {
            return Err(ErrorKind::BudgetExceeded {
                budget: "tensor count",
                limit: to_u64(max_tensors),
                offset: to_u64(LEN_PREFIX),
            }
            .into());
        }

        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| malformed(Format::Safetensors, e.to_string()))?;

        // Header order, then stably sorted by data offsets: file order, deterministic for ties.
        let mut listed = Vec::with_capacity(order.len());
        for (position, (name, dtype)) in order.into_iter().enumerate() {
            let info = meta.info(&name).ok_or_else(|| {
                malformed(
                    Format::Safetensors,
                    format!("tensor {name} missing after validation"),
                )
            })?;
            let (start, end) = info.data_offsets;
            let range = data_start
                .checked_add(start)
                .zip(data_start.checked_add(end))
                .map(|(s, e)| s..e)
                .filter(|r| r.start <= r.end && r.end <= bytes.len())
                .ok_or_else(|| {
                    malformed(
                        Format::Safetensors,
                        format!("tensor {name}: offsets outside the file"),
                    )
                })?;
            listed.push((
                info.data_offsets,
                position,
                TensorInfo {
                    name,
                    dtype,
                    shape: info.shape.clone(),
                },
                range,
            ));
        }
        listed.sort_by_key(|(offsets, position, _, _)| (*offsets, *position));
        let mut tensors = Vec::with_capacity(listed.len());
        let mut ranges = Vec::with_capacity(listed.len());
        let mut by_name = HashMap::with_capacity(listed.len());
        for (_, _, info, range) in listed {
            by_name.insert(info.name.clone(), tensors.len());
            tensors.push(info);
            ranges.push(range);
        }
        Ok(Safetensors {
            tensors,
            ranges,
            by_name,
            metadata,
        })
    }
}

/// Checks for repeated keys and unsupported dtypes; returns the tensors in header order with
/// their dtypes, and the metadata.
#[allow(clippy::type_complexity)]
fn check_header(raw: RawHeader) -> Result<(Vec<(String, DType)>, BTreeMap<String, String>)> {
    let mut seen = HashSet::with_capacity(raw.entries.len());
    let mut tensors = Vec::with_capacity(raw.entries.len());
    let mut metadata = None;
    for (key, entry) in raw.entries {
        if !seen.insert(key.clone()) {
            return Err(ErrorKind::Duplicate {
                what: if key == METADATA_KEY {
                    "metadata block"
                } else {
                    "tensor"
                },
                name: key,
            }
            .into());
        }
        match entry {
            RawEntry::Metadata(pairs) => {
                let mut map = BTreeMap::new();
                for (k, v) in pairs.0 {
                    if map.contains_key(&k) {
                        return Err(ErrorKind::Duplicate {
                            what: "metadata key",
                            name: k,
                        }
                        .into());
                    }
                    map.insert(k, v);
                }
                metadata = Some(map);
            }
            RawEntry::Tensor(fields) => {
                if fields.shape.0 > MAX_RANK {
                    return Err(Error::from(ErrorKind::InvalidLayout {
                        reason: format!(
                            "shape has {} dimensions (at most {MAX_RANK})",
                            fields.shape.0
                        ),
                    })
                    .with_tensor(&key));
                }
                if fields.data_offsets.0 != 2 {
                    return Err(malformed(
                        Format::Safetensors,
                        format!("data_offsets has {} values, not 2", fields.data_offsets.0),
                    )
                    .with_tensor(&key));
                }
                let dtype = DType::from_name(&fields.dtype).ok_or_else(|| {
                    Error::from(ErrorKind::UnsupportedDType {
                        dtype: fields.dtype.clone(),
                    })
                    .with_tensor(&key)
                })?;
                tensors.push((key, dtype));
            }
        }
    }
    Ok((tensors, metadata.unwrap_or_default()))
}

/// The header as written: every top-level key in order, repeats included.
struct RawHeader {
    entries: Vec<(String, RawEntry)>,
}

enum RawEntry {
    Metadata(Pairs<String>),
    Tensor(TensorFields),
}

/// The tensor fields this reader checks before the `safetensors` crate parses the header again:
/// the dtype, and how long the arrays are (counted without storing them, so a shape of millions
/// of dimensions is refused before anything allocates for it).
#[derive(serde::Deserialize)]
struct TensorFields {
    dtype: String,
    #[serde(default)]
    shape: Counted,
    #[serde(default = "Counted::two")]
    data_offsets: Counted,
}

/// The length of a JSON array, its elements skipped.
#[derive(Default)]
struct Counted(usize);

impl Counted {
    /// An absent field counts as well-formed; the crate reports it missing.
    fn two() -> Counted {
        Counted(2)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Counted;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Counted, A::Error> {
                let mut n = 0usize;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n = n.saturating_add(1);
                }
                Ok(Counted(n))
            }
        }
        d.deserialize_seq(CountVisitor)
    }
}

/// A JSON object as its `(key, value)` pairs in order, repeats included.
struct Pairs<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Pairs<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct PairsVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for PairsVisitor<T> {
            type Value = Pairs<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Pairs<T>, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, T>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawHeader, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let entry = if key == METADATA_KEY {
                        RawEntry::Metadata(map.next_value()?)
                    } else {
                        RawEntry::Tensor(map.next_value()?)
                    };
                    entries.push((key, entry));
                }
                Ok(RawHeader { entries })
            }
        }
        d.deserialize_map(HeaderVisitor)
    }
}

impl Index for Safetensors {
    fn format(&self) -> Format {
        Format::Safetensors
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        let index = *self
            .by_name
            .get(name)
            .ok_or_else(|| tensor_not_found(name))?;
        let (info, range) = self
            .tensors
            .get(index)
            .zip(self.ranges.get(index))
            .ok_or_else(|| tensor_not_found(name))?;
        let data = bytes.get(range.clone()).ok_or_else(|| {
            Error::from(ErrorKind::Truncated {
                what: "safetensors tensor data",
                offset: to_u64(range.start),
                needed: to_u64(range.len()),
                available: to_u64(bytes.len().saturating_sub(range.start)),
            })
            .with_tensor(name)
        })?;
        Tensor::new(info.dtype, info.shape.clone(), Cow::Borrowed(data))
            .map_err(|e| e.with_tensor(name))
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::tensor::TensorView;
    use safetensors::Dtype as StDtype;

    use super::*;
    use crate::source::TensorSource;

    /// A file from a header JSON (used verbatim) and data.
    fn st_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn parse(bytes: Vec<u8>) -> Result<SafetensorsSource> {
        SafetensorsSource::parse(FileBytes::from_vec(bytes), &Limits::DEFAULT)
    }

    fn parse_err(bytes: Vec<u8>) -> Error {
        match parse(bytes) {
            Ok(_) => panic!("parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn safetensors_round_trip_with_the_crate_serializer() {
        let f32s: Vec<u8> = [1.0f32, -2.0, 3.5, 0.25, 8.0, 9.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16 = vec![0x80, 0x3f, 0x00, 0x40];
        let i64s: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bools = vec![1u8, 0, 1];
        let views = vec![
            (
                "w",
                TensorView::new(StDtype::F32, vec![2, 3], &f32s).unwrap(),
            ),
            ("b", TensorView::new(StDtype::BF16, vec![2], &bf16).unwrap()),
            ("n", TensorView::new(StDtype::I64, vec![2], &i64s).unwrap()),
            (
                "m",
                TensorView::new(StDtype::BOOL, vec![3], &bools).unwrap(),
            ),
            (
                "s",
                TensorView::new(StDtype::F64, vec![], &[0u8; 8][..]).unwrap(),
            ),
            (
                "e",
                TensorView::new(StDtype::F16, vec![0, 4], &[][..]).unwrap(),
            ),
        ];
        let meta = HashMap::from([("format".to_string(), "flax".to_string())]);
        let bytes = safetensors::serialize(views, Some(meta)).unwrap();
        let src = parse(bytes).unwrap();
        assert_eq!(
            src.metadata().get("format").map(String::as_str),
            Some("flax")
        );
        assert_eq!(src.tensors().len(), 6);
        let want: [(&str, DType, &[usize], &[u8]); 6] = [
            ("w", DType::F32, &[2, 3], &f32s),
            ("b", DType::BF16, &[2], &bf16),
            ("n", DType::I64, &[2], &i64s),
            ("m", DType::Bool, &[3], &bools),
            ("s", DType::F64, &[], &[0; 8]),
            ("e", DType::F16, &[0, 4], &[]),
        ];
        for (name, dtype, shape, data) in want {
            let info = src.info(name).unwrap();
            assert_eq!(
                (info.dtype, info.shape.as_slice()),
                (dtype, shape),
                "{name}"
            );
            let t = src.read(name).unwrap();
            assert_eq!(t.data.as_ref(), data, "{name}");
            assert!(matches!(t.data, Cow::Borrowed(_)));
        }
        assert!(matches!(
            src.read("nope").err().unwrap().kind(),
            ErrorKind::TensorNotFound { .. }
        ));
    }

    #[test]
    fn safetensors_lists_tensors_in_data_offset_order() {
        let header = r#"{"z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
            "e2":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},
            "a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]},
            "e1":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}}"#;
        let src = parse(st_file(header, &[1, 2, 3])).unwrap();
        let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
        // Ties between empty tensors keep header order.
        assert_eq!(names, ["z", "e2", "e1", "a"]);
        assert_eq!(src.read("a").unwrap().data.as_ref(), &[2, 3]);
    }

    #[test]
    fn safetensors_duplicate_key_is_refused() {
        // The crate alone accepts this (serde_json keeps the last value).
        let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                         "a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        assert!(safetensors::SafeTensors::deserialize(&st_file(header, &[0; 4])).is_ok());
        match parse_err(st_file(header, &[0; 4])).kind() {
            ErrorKind::Duplicate { what, name } => {
                assert_eq!((*what, name.as_str()), ("tensor", "a"))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn safetensors_duplicate_metadata_key_is_refused() {
        let header = r#"{"__metadata__":{"format":"pt","format":"flax"},
                         "a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        match parse_err(st_file(header, &[0])).kind() {
            ErrorKind::Duplicate { what, name } => {
                assert_eq!((*what, name.as_str()), ("metadata key", "format"))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn safetensors_overlapping_or_gapped_offsets_are_malformed() {
        for header in [
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                "b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,12]}}"#,
            r#"{"__metadata__":{"n":1},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#,
            r#"{"a":{"shape":[3],"data_offsets":[0,12]}}"#,
            r#"["a"]"#,
            r#"{"a":"#,
        ] {
            match parse_err(st_file(header, &[0; 12])).kind() {
                ErrorKind::MalformedContainer { format, .. } => {
                    assert_eq!(*format, Format::Safetensors, "{header}")
                }
                other => panic!("{header}: {other}"),
            }
        }
    }

    #[test]
    fn safetensors_header_larger_than_file_is_truncated() {
        let mut bytes = st_file(
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            &[0],
        );
        bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
        match parse_err(bytes).kind() {
            ErrorKind::Truncated { what, needed, .. } => {
                assert_eq!((*what, *needed), ("safetensors header", 1000))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn safetensors_header_over_the_cap_is_refused_before_reading() {
        for n in [
            Limits::DEFAULT.safetensors_header_bytes as u64 + 1,
            u64::MAX,
        ] {
            let mut bytes = st_file("{}", &[]);
            bytes[..8].copy_from_slice(&n.to_le_bytes());
            assert!(
                matches!(parse_err(bytes).kind(), ErrorKind::BudgetExceeded { .. }),
                "{n}"
            );
        }
    }

    #[test]
    fn safetensors_unsupported_dtype_error_names_it() {
        for dtype in ["F8_E4M3", "U16", "U32", "U64", "C64", "F8_E5M2", "X99"] {
            let header = format!(
                r#"{{"ok":{{"dtype":"U8","shape":[2],"data_offsets":[0,2]}},
                     "q":{{"dtype":"{dtype}","shape":[1],"data_offsets":[2,4]}}}}"#
            );
            let e = parse(st_file(&header, &[0; 4])).err().unwrap();
            assert_eq!(e.tensor(), Some("q"));
            match e.kind() {
                ErrorKind::UnsupportedDType { dtype: d } => assert_eq!(d, dtype),
                other => panic!("{dtype}: {other}"),
            }
        }
    }

    #[test]
    fn safetensors_empty_file_and_empty_header() {
        assert!(matches!(
            parse_err(Vec::new()).kind(),
            ErrorKind::Truncated { .. }
        ));
        let src = parse(st_file("{}", &[])).unwrap();
        assert!(src.tensors().is_empty());
        assert!(src.metadata().is_empty());
    }

    #[test]
    fn safetensors_truncated_at_every_offset_errors_without_panic() {
        let data: Vec<u8> = (0..12).collect();
        let full = st_file(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I16","shape":[2,2],"data_offsets":[4,12]}}"#,
            &data,
        );
        assert!(parse(full.clone()).is_ok());
        for cut in 0..full.len() {
            assert!(parse(full[..cut].to_vec()).is_err(), "cut at {cut}");
        }
    }
}
