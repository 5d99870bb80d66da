//! Tests of the tensor walker (`rebuild.rs`) and the zip container (`zip.rs`) on
//! hand-assembled archives.

use std::borrow::Cow;

use crate::error::{Error, ErrorKind};
use crate::mmap::FileBytes;
use crate::source::pickle::opcodes::*;
use crate::source::pickle::testutil::{f32_bytes, zip_stored, P};
use crate::source::torch::TorchSource;
use crate::source::torch_zip::is_torch_zip;
use crate::source::{Format, TensorSource};
use crate::tensor::DType;

const STORED: u16 = 0;

fn archive(pkl: &[u8], storages: &[(&str, &[u8])], byteorder: Option<&[u8]>) -> Vec<u8> {
    let names: Vec<String> = storages
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries: Vec<(&str, &[u8], u16)> = vec![("archive/data.pkl", pkl, STORED)];
    if let Some(b) = byteorder {
        entries.push(("archive/byteorder", b, STORED));
    }
    for (n, (_, d)) in names.iter().zip(storages) {
        entries.push((n.as_str(), d, STORED));
    }
    entries.push(("archive/version", b"3\n", STORED));
    zip_stored(&entries)
}

fn open(bytes: Vec<u8>) -> Result<TorchSource, Error> {
    crate::source::torch_zip::open(FileBytes::from_vec(bytes), &crate::Limits::DEFAULT)
}

/// `{name: tensor}` over FloatStorage "0" with 6 elements.
fn one_tensor(name: &str, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    P::new(2)
        .op(&[EMPTY_DICT])
        .str(name)
        .tensor("FloatStorage", "0", 6, offset, size, stride)
        .op(&[SETITEM])
        .stop()
}

fn six() -> Vec<u8> {
    f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
}

fn err_of(r: Result<TorchSource, Error>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn zip_reads_contiguous_transposed_and_offset_views_exactly() {
    let pkl = P::new(2)
        .op(&[EMPTY_DICT, MARK])
        .str("w")
        .tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1])
        .str("wt")
        .tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
        .str("row")
        .tensor("FloatStorage", "0", 6, 3, &[3], &[1])
        .op(&[SETITEMS])
        .stop();
    let src = open(archive(&pkl, &[("0", &six())], Some(b"little"))).unwrap();
    assert_eq!(src.format(), Format::TorchZip);
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w", "wt", "row"]);
    assert_eq!(
        src.metadata().get("archive_root").map(String::as_str),
        Some("archive")
    );
    assert_eq!(
        src.metadata().get("byteorder").map(String::as_str),
        Some("little")
    );

    let w = src.read("w").unwrap();
    assert!(matches!(w.data, Cow::Borrowed(_)));
    assert_eq!(w.data.as_ref(), six().as_slice());
    let wt = src.read("wt").unwrap();
    assert!(matches!(wt.data, Cow::Owned(_)));
    assert_eq!(
        (wt.dtype, wt.shape.as_slice()),
        (DType::F32, &[3usize, 2][..])
    );
    assert_eq!(
        wt.data.as_ref(),
        f32_bytes(&[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]).as_slice()
    );
    let row = src.read("row").unwrap();
    assert!(matches!(row.data, Cow::Borrowed(_)));
    assert_eq!(row.data.as_ref(), f32_bytes(&[3.0, 4.0, 5.0]).as_slice());
    assert!(matches!(
        src.read("nope").unwrap_err().kind(),
        ErrorKind::TensorNotFound { .. }
    ));
}

#[test]
fn forged_shapes_are_refused_before_reading() {
    let cases: [(&[i64], &[i64], i64, &str); 8] = [
        (&[1 << 62, 1 << 62], &[1, 1], 0, "InvalidLayout"),
        (&[7], &[1], 0, "StorageOutOfBounds"),
        (&[3], &[1], 4, "StorageOutOfBounds"),
        (&[3], &[-1], 0, "InvalidLayout"),
        (&[-3], &[1], 0, "InvalidLayout"),
        (&[2, 3], &[1], 0, "InvalidLayout"),
        (&[2], &[i64::MAX], 0, "StorageOutOfBounds"),
        (&[4], &[i64::MAX], 0, "InvalidLayout"),
    ];
    for (size, stride, offset, want) in cases {
        let pkl = one_tensor("x", offset, size, stride);
        let e = err_of(open(archive(&pkl, &[("0", &six())], None)));
        let got = match e.kind() {
            ErrorKind::InvalidLayout { .. } => "InvalidLayout",
            ErrorKind::StorageOutOfBounds { .. } => "StorageOutOfBounds",
            other => panic!("{size:?}/{stride:?}: {other:?}"),
        };
        assert_eq!(got, want, "size {size:?} stride {stride:?} offset {offset}");
        assert_eq!(e.tensor(), Some("x"));
    }
}

#[test]
fn missing_storage_record_is_reported() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let e = err_of(open(archive(&pkl, &[], None)));
    assert!(matches!(e.kind(), ErrorKind::MissingStorage { key } if key == "0"));
}

#[test]
fn record_size_must_match_declared_numel() {
    let pkl = one_tensor("x", 0, &[2], &[1]);
    let short = f32_bytes(&[1.0, 2.0]);
    let e = err_of(open(archive(&pkl, &[("0", &short)], None)));
    assert!(matches!(
        e.kind(),
        ErrorKind::StorageSizeMismatch {
            declared: 24,
            found: 8,
            ..
        }
    ));
}

#[test]
fn entries_outside_the_archive_root_are_refused() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let data = six();
    let bytes = zip_stored(&[
        ("archive/data.pkl", &pkl, STORED),
        ("other/data/0", &data, STORED),
    ]);
    let e = err_of(open(bytes));
    let msg = e.to_string();
    assert!(matches!(e.kind(), ErrorKind::MalformedContainer { .. }));
    assert!(
        msg.contains("\"other\"") && msg.contains("\"archive\""),
        "{msg}"
    );
}

#[test]
fn big_endian_byteorder_swaps_every_element() {
    let pkl = P::new(2)
        .op(&[EMPTY_DICT, MARK])
        .str("f")
        .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .str("s")
        .tensor("ShortStorage", "1", 3, 0, &[3], &[1])
        .str("st")
        .tensor("ShortStorage", "1", 3, 0, &[2], &[2])
        .str("b")
        .tensor("ByteStorage", "2", 2, 0, &[2], &[1])
        .op(&[SETITEMS])
        .stop();
    let f: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let s: Vec<u8> = [0x0102i16, -2, 7]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let src = open(archive(
        &pkl,
        &[("0", &f), ("1", &s), ("2", &[9, 8])],
        Some(b"big"),
    ))
    .unwrap();
    assert_eq!(
        src.metadata().get("byteorder").map(String::as_str),
        Some("big")
    );
    assert_eq!(
        src.read("f").unwrap().data.as_ref(),
        f32_bytes(&[1.5, -2.0]).as_slice()
    );
    let le = |v: &[i16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    assert_eq!(
        src.read("s").unwrap().data.as_ref(),
        le(&[0x0102, -2, 7]).as_slice()
    );
    assert_eq!(
        src.read("st").unwrap().data.as_ref(),
        le(&[0x0102, 7]).as_slice()
    );
    let b = src.read("b").unwrap();
    assert!(matches!(b.data, Cow::Borrowed(_)));
    assert_eq!(b.data.as_ref(), &[9, 8]);
}

#[test]
fn unknown_byteorder_is_refused() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let e = err_of(open(archive(&pkl, &[("0", &six())], Some(b"middle"))));
    assert!(matches!(e.kind(), ErrorKind::MalformedContainer { .. }));
}

#[test]
fn duplicate_zip_entries_are_refused() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let data = six();
    let bytes = zip_stored(&[
        ("archive/data.pkl", &pkl, STORED),
        ("archive/data/0", &data, STORED),
        ("archive/data/0", &data, STORED),
    ]);
    let e = err_of(open(bytes));
    assert!(matches!(
        e.kind(),
        ErrorKind::Duplicate { what: "zip entry", name } if name == "archive/data/0"
    ));
}

#[test]
fn overlapping_zip_entries_are_refused() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let data = six();
    let mut bytes = zip_stored(&[
        ("archive/data.pkl", &pkl, STORED),
        ("archive/data/0", &data, STORED),
    ]);
    // Grow the first entry's compressed size in the central directory into the second entry.
    let cd = bytes
        .windows(4)
        .position(|w| w == 0x0201_4b50u32.to_le_bytes())
        .unwrap();
    let grown = u32::try_from(pkl.len() + 10).unwrap().to_le_bytes();
    bytes[cd + 20..cd + 24].copy_from_slice(&grown);
    let e = err_of(open(bytes));
    assert!(
        matches!(e.kind(), ErrorKind::MalformedContainer { format: Format::Zip, reason } if reason.contains("overlap")),
        "{e}"
    );
}

#[test]
fn compressed_storage_record_is_refused() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let data = six();
    let bytes = zip_stored(&[
        ("archive/data.pkl", &pkl, STORED),
        ("archive/data/0", &data, 8),
    ]);
    let e = err_of(open(bytes));
    assert!(matches!(e.kind(), ErrorKind::MalformedContainer { .. }));
    assert!(e.to_string().contains("archive/data/0"));
}

#[test]
fn every_truncation_of_a_torch_zip_is_an_error() {
    let pkl = one_tensor("x", 0, &[2, 3], &[3, 1]);
    let full = archive(&pkl, &[("0", &six())], Some(b"little"));
    assert!(open(full.clone()).is_ok());
    for cut in 0..full.len() {
        assert!(open(full[..cut].to_vec()).is_err(), "cut at {cut}");
    }
}

#[test]
fn torch_zip_is_told_apart_from_npz() {
    let pkl = one_tensor("x", 0, &[6], &[1]);
    assert!(is_torch_zip(
        &archive(&pkl, &[("0", &six())], None),
        &|| {},
        &crate::Limits::DEFAULT
    )
    .unwrap());
    let npz = zip_stored(&[("x.npy", b"\x93NUMPY", STORED), ("y.npy", b"", STORED)]);
    assert!(!is_torch_zip(&npz, &|| {}, &crate::Limits::DEFAULT).unwrap());
}

#[test]
fn zip_parsing_releases_mapped_pages_as_it_walks_the_local_headers() {
    // One local header per storage, spread over the file: a mapped input's pages are released
    // every few headers (and once at the end), not only after the whole walk.
    let pkl = one_tensor("x", 0, &[6], &[1]);
    let data = six();
    let keys: Vec<String> = (0..20).map(|k| k.to_string()).collect();
    let storages: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &data[..])).collect();
    let zip = archive(&pkl, &storages, None);
    let calls = std::cell::Cell::new(0);
    assert!(is_torch_zip(
        &zip,
        &|| calls.set(calls.get() + 1),
        &crate::Limits::DEFAULT
    )
    .unwrap());
    // 22 entries (data.pkl, version, 20 storages): after headers 8 and 16, then at the end.
    assert_eq!(calls.get(), 3);
}

#[test]
fn nested_checkpoints_name_tensors_by_container_path() {
    let pkl = P::new(2)
        .op(&[EMPTY_DICT, MARK])
        .str("state_dict")
        .op(&[EMPTY_DICT])
        .str("module.cls_token")
        .tensor("FloatStorage", "0", 6, 0, &[1, 1, 2], &[2, 2, 1])
        .op(&[SETITEM])
        .str("optimizer")
        .op(&[EMPTY_DICT])
        .str("state")
        .op(&[EMPTY_DICT])
        .int(0)
        .op(&[EMPTY_DICT])
        .str("exp_avg")
        .tensor("FloatStorage", "0", 6, 2, &[2], &[1])
        .op(&[SETITEM, SETITEM, SETITEM])
        .str("args")
        .global("argparse", "Namespace")
        .op(&[EMPTY_TUPLE, NEWOBJ, EMPTY_DICT])
        .str("lr")
        .op(&[BINFLOAT])
        .op(&0.5f64.to_be_bytes())
        .op(&[SETITEM, BUILD])
        .str("list")
        .op(&[EMPTY_LIST])
        .global("torch._utils", "_rebuild_parameter")
        .op(&[MARK])
        .tensor("FloatStorage", "0", 6, 4, &[2], &[1])
        .op(&[NEWTRUE])
        .global("collections", "OrderedDict")
        .op(&[EMPTY_TUPLE, REDUCE, TUPLE, REDUCE, APPEND])
        .str("epoch")
        .int(3)
        .op(&[SETITEMS])
        .stop();
    let src = open(archive(&pkl, &[("0", &six())], None)).unwrap();
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "state_dict/module.cls_token",
            "optimizer/state/0/exp_avg",
            "list/0"
        ]
    );
    assert_eq!(
        src.read("list/0").unwrap().data.as_ref(),
        f32_bytes(&[4.0, 5.0]).as_slice()
    );
    assert_eq!(src.notes(), ["args: argparse.Namespace (inert)"]);
}

#[test]
fn bare_tensor_is_named_tensor() {
    let pkl = P::new(2)
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .stop();
    let src = open(archive(&pkl, &[("0", &six())], None)).unwrap();
    assert_eq!(src.tensors()[0].name, "tensor");
}

#[test]
fn two_tensors_with_one_name_are_refused() {
    let pkl = P::new(2)
        .op(&[EMPTY_DICT, MARK])
        .str("a/b")
        .tensor("FloatStorage", "0", 6, 0, &[1], &[1])
        .str("a")
        .op(&[EMPTY_DICT])
        .str("b")
        .tensor("FloatStorage", "0", 6, 0, &[1], &[1])
        .op(&[SETITEM, SETITEMS])
        .stop();
    let e = err_of(open(archive(&pkl, &[("0", &six())], None)));
    assert!(matches!(
        e.kind(),
        ErrorKind::Duplicate { what: "tensor", name } if name == "a/b"
    ));
}

#[test]
fn unsupported_dtypes_are_named() {
    let v3 = P::new(2)
        .global("torch._utils", "_rebuild_tensor_v3")
        .op(&[MARK])
        .storage("UntypedStorage", "0", 8, false)
        .int(0)
        .ints(&[4])
        .ints(&[1])
        .op(&[NEWFALSE])
        .global("collections", "OrderedDict")
        .op(&[EMPTY_TUPLE, REDUCE])
        .global("torch", "uint16")
        .op(&[TUPLE, REDUCE])
        .stop();
    let e = err_of(open(archive(&v3, &[("0", &[0; 8])], None)));
    assert!(matches!(e.kind(), ErrorKind::UnsupportedDType { dtype } if dtype == "torch.uint16"));
    let complex = P::new(2)
        .tensor("ComplexFloatStorage", "0", 1, 0, &[1], &[1])
        .stop();
    let e = err_of(open(archive(&complex, &[("0", &[0; 8])], None)));
    assert!(matches!(
        e.kind(),
        ErrorKind::UnsupportedDType { dtype } if dtype == "torch.ComplexFloatStorage"
    ));
}

#[test]
fn untyped_storage_v3_counts_bytes_and_wrappers_unwrap() {
    // _rebuild_from_type_v2(_rebuild_tensor_v3, torch.Tensor, (storage, 1, (2,), (1,), False,
    // OrderedDict(), torch.float32), {})
    let pkl = P::new(2)
        .global("torch._tensor", "_rebuild_from_type_v2")
        .op(&[MARK])
        .global("torch._utils", "_rebuild_tensor_v3")
        .global("torch", "Tensor")
        .op(&[MARK])
        .storage("UntypedStorage", "0", 24, false)
        .int(1)
        .ints(&[2])
        .ints(&[1])
        .op(&[NEWFALSE])
        .global("collections", "OrderedDict")
        .op(&[EMPTY_TUPLE, REDUCE])
        .global("torch", "float32")
        .op(&[TUPLE, EMPTY_DICT, TUPLE, REDUCE])
        .stop();
    let src = open(archive(&pkl, &[("0", &six())], None)).unwrap();
    let t = src.read("tensor").unwrap();
    assert_eq!(t.dtype, DType::F32);
    assert_eq!(t.data.as_ref(), f32_bytes(&[1.0, 2.0]).as_slice());
}

#[test]
fn tensor_inside_opaque_constructor_arguments_is_refused() {
    let pkl = P::new(2)
        .global("numpy", "ndarray")
        .op(&[MARK])
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .op(&[TUPLE, REDUCE])
        .stop();
    let e = err_of(open(archive(&pkl, &[("0", &six())], None)));
    assert!(matches!(e.kind(), ErrorKind::MalformedPickle { .. }), "{e}");
}

#[test]
fn storage_declared_twice_differently_is_refused() {
    let pkl = P::new(2)
        .op(&[EMPTY_LIST, MARK])
        .tensor("FloatStorage", "0", 6, 0, &[1], &[1])
        .tensor("FloatStorage", "0", 5, 0, &[1], &[1])
        .op(&[APPENDS])
        .stop();
    let e = err_of(open(archive(&pkl, &[("0", &six())], None)));
    assert!(matches!(e.kind(), ErrorKind::MalformedPickle { .. }), "{e}");
}

#[test]
fn old_parameter_class_wrapping_a_tensor_reads_as_the_tensor() {
    let pkl = P::new(2)
        .global("torch.nn.parameter", "Parameter")
        .op(&[MARK])
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .op(&[NEWTRUE, TUPLE, REDUCE])
        .stop();
    let src = open(archive(&pkl, &[("0", &six())], None)).unwrap();
    assert_eq!(src.read("tensor").unwrap().data.as_ref(), six().as_slice());
}

#[test]
fn tensor_hidden_in_tensor_state_is_refused() {
    let pkl = P::new(2)
        .global("torch._utils", "_rebuild_parameter_with_state")
        .op(&[MARK])
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .op(&[NEWTRUE])
        .global("collections", "OrderedDict")
        .op(&[EMPTY_TUPLE, REDUCE, EMPTY_DICT])
        .str("hidden")
        .tensor("FloatStorage", "0", 6, 0, &[1], &[1])
        .op(&[SETITEM, TUPLE, REDUCE])
        .stop();
    let e = err_of(open(archive(&pkl, &[("0", &six())], None)));
    assert!(
        matches!(e.kind(), ErrorKind::MalformedPickle { reason, .. } if reason.contains("tensor state")),
        "{e}"
    );
}
