use super::write::npy_descr;
use super::*;
use crate::source::TensorSource;
use crate::tensor;

/// A `.npy` with the given version, header text (used verbatim) and data.
fn npy_bytes(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = NPY_MAGIC.to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    } else {
        out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    let f = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}\n")
}

fn parse(bytes: Vec<u8>) -> Result<NpySource> {
    NpySource::parse(FileBytes::from_vec(bytes), &Limits::DEFAULT)
}

fn read_all(bytes: Vec<u8>) -> Result<(DType, Vec<usize>, Vec<u8>, bool)> {
    let src = parse(bytes)?;
    let t = src.read(NPY_TENSOR_NAME)?;
    let borrowed = matches!(t.data, Cow::Borrowed(_));
    Ok((t.dtype, t.shape.clone(), t.data.into_owned(), borrowed))
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_be(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

#[test]
fn npy_reads_v1_v2_v3_headers_alike() {
    let data = f32_le(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    for major in 1..=3 {
        let bytes = npy_bytes(major, &dict("<f4", false, "(2, 3)"), &data);
        let (dtype, shape, out, borrowed) = read_all(bytes).unwrap();
        assert_eq!((dtype, shape.as_slice()), (DType::F32, &[2, 3][..]));
        assert_eq!(out, data);
        assert!(borrowed, "little-endian C order is borrowed (v{major})");
    }
}

#[test]
fn npy_v3_header_accepts_utf8_padding_and_rejects_invalid_utf8() {
    let mut header = dict("<f4", false, "(1,)");
    header.insert(header.len() - 1, ' ');
    assert!(read_all(npy_bytes(3, &header, &f32_le(&[1.0]))).is_ok());
    let mut bytes = npy_bytes(3, &dict("<f4", false, "(1,)"), &f32_le(&[1.0]));
    // Replace a padding-free byte inside the header with invalid UTF-8.
    let at = bytes.iter().position(|&b| b == b'}').unwrap() + 1;
    bytes.insert(at, 0xff);
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) + 1;
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    let e = parse(bytes).err().unwrap();
    assert!(
        matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
        "{e}"
    );
}

#[test]
fn npy_maps_every_supported_descr() {
    let table = [
        ("<f8", DType::F64),
        ("<f4", DType::F32),
        ("<f2", DType::F16),
        ("<i8", DType::I64),
        ("<i4", DType::I32),
        ("<i2", DType::I16),
        ("|i1", DType::I8),
        ("|u1", DType::U8),
        ("|b1", DType::Bool),
        ("|V2", DType::BF16),
        ("<V2", DType::BF16),
        ("bfloat16", DType::BF16),
        ("=f4", DType::F32),
        ("f4", DType::F32),
    ];
    for (descr, want) in table {
        let data: Vec<u8> = (0..2 * want.size()).map(|i| i as u8 % 2).collect();
        let bytes = npy_bytes(1, &dict(descr, false, "(2,)"), &data);
        let (dtype, shape, out, _) = read_all(bytes).unwrap();
        assert_eq!(dtype, want, "{descr}");
        assert_eq!(shape, vec![2]);
        assert_eq!(out, data, "{descr}");
    }
}

#[test]
fn npy_bf16_void_reads_raw_le_pairs() {
    // ml_dtypes writes bfloat16 1.0, 2.0 as '<V2' with bytes 80 3f 00 40.
    let data = [0x80, 0x3f, 0x00, 0x40];
    for descr in ["|V2", "<V2"] {
        let (dtype, _, out, borrowed) =
            read_all(npy_bytes(1, &dict(descr, false, "(2,)"), &data)).unwrap();
        assert_eq!(dtype, DType::BF16);
        assert_eq!(out, data);
        assert!(borrowed);
    }
}

#[test]
fn npy_big_endian_is_swapped_to_exact_values() {
    let v = [1.0f32, -2.5, 3.25e-3];
    let (_, _, out, borrowed) =
        read_all(npy_bytes(1, &dict(">f4", false, "(3,)"), &f32_be(&v))).unwrap();
    assert_eq!(out, f32_le(&v));
    assert!(!borrowed);

    let v = [i64::MIN, 1, 0x0102_0304_0506_0708];
    let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
    let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let (_, _, out, _) = read_all(npy_bytes(1, &dict(">i8", false, "(3,)"), &be)).unwrap();
    assert_eq!(out, le);

    let (dtype, _, out, _) = read_all(npy_bytes(
        1,
        &dict(">V2", false, "(2,)"),
        &[0x3f, 0x80, 0x40, 0x00],
    ))
    .unwrap();
    assert_eq!((dtype, out), (DType::BF16, vec![0x80, 0x3f, 0x00, 0x40]));

    // Single-byte elements have no byte order.
    let (_, _, out, borrowed) =
        read_all(npy_bytes(1, &dict(">i1", false, "(2,)"), &[1, 2])).unwrap();
    assert_eq!(out, vec![1, 2]);
    assert!(borrowed);
}

#[test]
fn npy_fortran_order_2d_is_gathered_into_c_order() {
    // [[0, 1, 2], [3, 4, 5]] stored column-major: 0 3 1 4 2 5.
    let stored: Vec<u8> = [0i16, 3, 1, 4, 2, 5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let want: Vec<u8> = (0i16..6).flat_map(|x| x.to_le_bytes()).collect();
    let (dtype, shape, out, borrowed) =
        read_all(npy_bytes(1, &dict("<i2", true, "(2, 3)"), &stored)).unwrap();
    assert_eq!((dtype, shape), (DType::I16, vec![2, 3]));
    assert_eq!(out, want);
    assert!(!borrowed);
}

#[test]
fn npy_fortran_order_3d_is_gathered_into_c_order() {
    // v[i,j,k] = 12i + 4j + k lives at Fortran index i + 2j + 6k.
    let mut stored = [0u16; 24];
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                stored[i + 2 * j + 6 * k] = (12 * i + 4 * j + k) as u16;
            }
        }
    }
    let stored_be: Vec<u8> = stored.iter().flat_map(|x| x.to_be_bytes()).collect();
    let stored: Vec<u8> = stored.iter().flat_map(|x| x.to_le_bytes()).collect();
    let want: Vec<u8> = (0i16..24).flat_map(|x| x.to_le_bytes()).collect();
    let (_, shape, out, _) =
        read_all(npy_bytes(1, &dict("<i2", true, "(2, 3, 4)"), &stored)).unwrap();
    assert_eq!(shape, vec![2, 3, 4]);
    assert_eq!(out, want);
    // Fortran order and big-endian together.
    let (_, _, out, _) =
        read_all(npy_bytes(1, &dict(">i2", true, "(2, 3, 4)"), &stored_be)).unwrap();
    assert_eq!(out, want);
}

#[test]
fn npy_fortran_order_with_one_non_unit_dim_is_borrowed() {
    let data = f32_le(&[1.0, 2.0, 3.0]);
    let (_, _, out, borrowed) =
        read_all(npy_bytes(1, &dict("<f4", true, "(1, 3, 1)"), &data)).unwrap();
    assert_eq!(out, data);
    assert!(borrowed);
}

#[test]
fn npy_scalar_and_empty_arrays() {
    let (_, shape, out, _) =
        read_all(npy_bytes(1, &dict("<i8", false, "()"), &7i64.to_le_bytes())).unwrap();
    assert_eq!((shape, out), (vec![], 7i64.to_le_bytes().to_vec()));
    let (_, shape, out, _) = read_all(npy_bytes(1, &dict("<f4", true, "(0, 3)"), &[])).unwrap();
    assert_eq!((shape, out), (vec![0, 3], vec![]));
}

#[test]
fn npy_unsupported_descr_error_names_it() {
    for descr in [
        "<u2", "<u4", "<u8", "<c8", "|O", "<U3", "|S4", "|V4", "<M8[ns]", ">f16",
    ] {
        let e = parse(npy_bytes(1, &dict(descr, false, "(1,)"), &[0; 16]))
            .err()
            .unwrap();
        match e.kind() {
            ErrorKind::UnsupportedDType { dtype } => assert_eq!(dtype, descr),
            other => panic!("{descr}: {other}"),
        }
    }
}

#[test]
fn npy_structured_descr_list_is_malformed_container() {
    let header = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
    let e = parse(npy_bytes(1, header, &[0; 4])).err().unwrap();
    match e.kind() {
        ErrorKind::MalformedContainer { format, reason } => {
            assert_eq!(*format, Format::Npy);
            assert!(reason.contains("list"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn npy_header_grammar_accepts_python_literal_variants() {
    let data = f32_le(&[1.0, 2.0]);
    for header in [
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
        "{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}",
        "{'descr':'<f4','fortran_order':False,'shape':(2L,),}",
        "  {'descr': '<f4', 'fortran_order': False, 'shape': ( 2 , ) }   \n",
        "{'descr': '<f4',\n 'fortran_order': False,\t'shape': (1, 2), }",
    ] {
        let (_, _, out, _) =
            read_all(npy_bytes(1, header, &data)).unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(out, data, "{header}");
    }
}

#[test]
fn npy_header_grammar_rejects_everything_else() {
    for header in [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2), }",
        "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
        "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': False}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
        "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",
        "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}",
        "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2 1,)}",
        "{'descr': {'a': 1}, 'fortran_order': False, 'shape': (2,)}",
        "",
        "{",
    ] {
        let e = parse(npy_bytes(1, header, &[0; 8])).err();
        match e.as_ref().map(Error::kind) {
            Some(ErrorKind::MalformedContainer { .. }) => {}
            other => panic!("{header:?}: {other:?}"),
        }
    }
}

#[test]
fn npy_absurd_header_length_is_refused_before_reading() {
    let mut bytes = npy_bytes(2, &dict("<f4", false, "(1,)"), &[0; 4]);
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = parse(bytes).err().unwrap();
    assert!(matches!(e.kind(), ErrorKind::BudgetExceeded { .. }), "{e}");

    let mut bytes = npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 4]);
    bytes[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    let e = parse(bytes).err().unwrap();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Truncated {
                what: "npy header",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn npy_shape_larger_than_data_is_truncated() {
    let e = parse(npy_bytes(1, &dict("<f4", false, "(1000,)"), &[0; 16]))
        .err()
        .unwrap();
    match e.kind() {
        ErrorKind::Truncated {
            what,
            needed,
            available,
            ..
        } => {
            assert_eq!((*what, *needed, *available), ("npy data", 4000, 16));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn npy_trailing_bytes_after_data_are_malformed() {
    let e = parse(npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 5]))
        .err()
        .unwrap();
    assert!(
        matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
        "{e}"
    );
}

#[test]
fn npy_overflowing_or_negative_shape_is_invalid_layout() {
    for shape in [
        "(4294967296, 4294967296)",
        "(18446744073709551615, 2)",
        "(99999999999999999999999,)",
        "(-1,)",
    ] {
        let e = parse(npy_bytes(1, &dict("<f4", false, shape), &[]))
            .err()
            .unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidLayout { .. }),
            "{shape}: {e}"
        );
    }
    let deep = format!("({})", vec!["1"; MAX_NPY_RANK + 1].join(", "));
    let e = parse(npy_bytes(1, &dict("<f4", false, &deep), &[0; 4]))
        .err()
        .unwrap();
    assert!(matches!(e.kind(), ErrorKind::InvalidLayout { .. }), "{e}");
}

#[test]
fn npy_bad_magic_or_version_is_malformed() {
    let good = npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 4]);
    for (at, byte) in [(0, b'X'), (6, 4), (6, 0), (7, 1)] {
        let mut bytes = good.clone();
        bytes[at] = byte;
        let e = parse(bytes).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
            "{at}: {e}"
        );
    }
}

#[test]
fn npy_truncated_at_every_offset_errors_without_panic() {
    for major in 1..=3 {
        let full = npy_bytes(major, &dict(">f4", true, "(2, 3)"), &[7; 24]);
        assert!(parse(full.clone()).is_ok());
        for cut in 0..full.len() {
            let r = parse(full[..cut].to_vec());
            assert!(r.is_err(), "v{major} cut at {cut}");
        }
    }
}

#[test]
fn npy_read_of_other_name_is_not_found() {
    let src = parse(npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 4])).unwrap();
    let e = src.read("weight").err().unwrap();
    assert!(matches!(e.kind(), ErrorKind::TensorNotFound { .. }));
    assert_eq!(src.tensors()[0].name, "array");
    assert_eq!(src.metadata()["descr"], "<f4");
}

#[test]
fn write_npy_matches_numpy_header_bytes() {
    // np.save(np.zeros((2, 3), '<f4')) writes this 118-byte header (10 + 118 = 128).
    let mut out = Vec::new();
    write_npy(&mut out, DType::F32, &[2, 3], &[0; 24]).unwrap();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_eq!(&out[..10], b"\x93NUMPY\x01\x00\x76\x00");
    assert!(out[10..].starts_with(header.as_bytes()));
    assert_eq!(out.len(), 128 + 24);
    assert_eq!(out[127], b'\n');
    assert!(out[10 + header.len()..127].iter().all(|&b| b == b' '));
}

#[test]
fn write_npy_round_trips_every_dtype() {
    for dtype in DType::ALL {
        for shape in [vec![], vec![3], vec![2, 0], vec![2, 3, 1]] {
            let n = tensor::checked_byte_len(dtype, &shape).unwrap();
            let data: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
            let mut out = Vec::new();
            write_npy(&mut out, dtype, &shape, &data).unwrap();
            let h = parse_npy_header(&out, &Limits::DEFAULT).unwrap();
            assert_eq!(h.data_offset % NPY_HEADER_ALIGN, 0);
            assert_eq!(h.descr, npy_descr(dtype));
            let (d, s, back, _) = read_all(out).unwrap();
            assert_eq!((d, s, back), (dtype, shape.clone(), data));
        }
    }
    let mut out = Vec::new();
    write_npy(&mut out, DType::BF16, &[1], &[0, 0]).unwrap();
    assert_eq!(
        parse_npy_header(&out, &Limits::DEFAULT).unwrap().descr,
        "<V2"
    );
}

#[test]
fn write_npy_rejects_data_of_wrong_length() {
    let e = write_npy(&mut Vec::new(), DType::F32, &[2], &[0; 7])
        .err()
        .unwrap();
    assert!(matches!(e.kind(), ErrorKind::InvalidLayout { .. }));
}
