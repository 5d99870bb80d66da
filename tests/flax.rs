//! HF Flax ViT (`flax_model.msgpack`) against ground truth from transformers 4.57 + flax 0.7
//! (`fixtures/flax/`, written by `fixtures/generate_flax.py`): the reader lists and reads every
//! array byte for byte, `--from flax` gives exactly transformers' own PyTorch tensors, the result
//! reproduces the Flax model's outputs, `--to flax` writes flax's own bytes, and hostile msgpack
//! is refused with specific errors.

mod common;

use common::msgpack::{f32_chunk, f32s, gapped_chunks, one, Mp};
use common::tensors;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vit_convert::conversion::OutputFormat;
use vit_convert::forward::{ForwardOptions, Model};
use vit_convert::source::Format;
use vit_convert::verify::{compare, verify_model, F32Array, Tolerance};
use vit_convert::ConfigOverrides;
use vit_convert::{convert, open_bytes, ConvertOptions, ErrorKind, FileBytes};

fn flax_dir() -> PathBuf {
    common::fixture_dir("flax")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cases() -> Vec<Value> {
    read_json(&flax_dir().join("cases.json"))
        .as_array()
        .unwrap()
        .clone()
}

/// `--from FROM --to TO` with an explicit head count (when no config.json is beside the input).
fn options(from: &str, to: OutputFormat, heads: Option<usize>) -> ConvertOptions {
    ConvertOptions {
        from: Some(from.parse().unwrap()),
        to,
        overrides: ConfigOverrides {
            num_heads: heads,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Opens hand-made bytes: the tensor count, or the error (whose message must not be empty).
fn kind_of(bytes: Vec<u8>) -> Result<usize, vit_convert::Error> {
    let r = open_bytes(FileBytes::from_vec(bytes)).map(|src| src.tensors().len());
    if let Err(e) = &r {
        assert!(!e.to_string().is_empty());
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Reader against flax's own restore
// ---------------------------------------------------------------------------------------------

#[test]
fn every_flax_fixture_lists_and_reads_byte_for_byte() {
    let expected = read_json(&flax_dir().join("expected.json"));
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in expected["files"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let path = flax_dir().join(file);
        match (f.get("tensors"), f.get("error")) {
            (Some(list), None) => {
                let src = vit_convert::open(&path).unwrap();
                assert_eq!(src.format().name(), "flax", "{file}");
                let list = list.as_array().unwrap();
                let got: Vec<String> = src.tensors().iter().map(|t| t.name.clone()).collect();
                let want: Vec<String> = list
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_string())
                    .collect();
                if got != want {
                    failures.push(format!("{file}: names/order {got:?} != {want:?}"));
                    continue;
                }
                for (info, t) in src.tensors().iter().zip(list) {
                    let shape: Vec<usize> = t["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect();
                    let data = src.read(&info.name).unwrap();
                    if info.dtype.name() != t["dtype"] || info.shape != shape {
                        failures.push(format!("{file}: {} dtype/shape", info.name));
                    }
                    if common::sha256_hex(&data.data) != t["sha256"] {
                        failures.push(format!("{file}: {} bytes differ", info.name));
                    }
                    checked += 1;
                }
                if let Some(n) = f.get("notes").and_then(Value::as_u64) {
                    if src.notes().len() as u64 != n {
                        failures.push(format!("{file}: notes {:?}", src.notes()));
                    }
                }
            }
            (None, Some(kind)) => match vit_convert::open(&path) {
                Ok(_) => failures.push(format!("{file}: opened, expected {kind}")),
                Err(e) => {
                    if common::kind_name(e.kind()) != kind.as_str().unwrap() {
                        failures.push(format!("{file}: {e}"));
                    }
                    if let (ErrorKind::UnsupportedDType { dtype }, Some(d)) =
                        (e.kind(), f["detail"].as_str())
                    {
                        if dtype != d {
                            failures.push(format!("{file}: dtype {dtype}, expected {d}"));
                        }
                    }
                }
            },
            _ => panic!("bad expected.json entry {f}"),
        }
    }
    common::assert_no_failures("flax fixtures", &failures);
    assert!(checked > 400, "{checked}");
}

#[test]
fn arrays_are_borrowed_from_the_file_and_chunked_ones_reassembled() {
    let whole = vit_convert::open(flax_dir().join("vit_model/flax_model.msgpack")).unwrap();
    let chunked = vit_convert::open(flax_dir().join("vit_model_chunked.msgpack")).unwrap();
    let small = read_json(&flax_dir().join("expected.json"))["small_chunk"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(whole.tensors(), chunked.tensors());
    let mut reassembled = 0;
    for t in whole.tensors() {
        let a = whole.read(&t.name).unwrap();
        let b = chunked.read(&t.name).unwrap();
        assert!(matches!(a.data, Cow::Borrowed(_)), "{}", t.name);
        assert_eq!(a, b, "{}", t.name);
        if t.byte_len() > small {
            assert!(matches!(b.data, Cow::Owned(_)), "{}", t.name);
            reassembled += 1;
        }
    }
    assert!(reassembled > 10, "{reassembled}");
    assert_eq!(
        chunked.metadata()["chunked_arrays"],
        reassembled.to_string()
    );
}

#[test]
fn generic_flax_state_lists_scalars_and_notes_other_leaves() {
    let src = vit_convert::open(flax_dir().join("scalars.msgpack")).unwrap();
    let step = src.read("step").unwrap();
    assert_eq!(step.shape, Vec::<usize>::new());
    assert_eq!(step.data.as_ref(), &7i64.to_le_bytes());
    let notes = src.notes().join("\n");
    for leaf in ["opt/count", "opt/name", "opt/lr", "opt/none", "opt/flag"] {
        assert!(notes.contains(leaf), "{notes}");
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion against transformers' own PT <-> Flax conversion
// ---------------------------------------------------------------------------------------------

#[test]
fn from_flax_converts_to_exactly_the_pytorch_equivalent() {
    for case in cases() {
        let dir = flax_dir().join(case["dir"].as_str().unwrap());
        let expected = tensors(&dir.join("pt/model.safetensors"));
        for from in [Some("flax"), None] {
            let out = tempfile::tempdir().unwrap();
            let opts = ConvertOptions {
                from: from.map(|f| f.parse().unwrap()),
                ..Default::default()
            };
            let r = convert(dir.join("flax_model.msgpack"), out.path(), &opts).unwrap();
            assert_eq!(r.input_format, "flax");
            assert_eq!(r.mapping.table, "flax");
            assert_eq!(
                r.architecture.name(),
                case["architecture"].as_str().unwrap()
            );
            let got = tensors(&out.path().join("model.safetensors"));
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>()
            );
            for (name, t) in &expected {
                assert_eq!(&got[name], t, "{} {name}", case["dir"]);
            }
            let cfg = read_json(&out.path().join("config.json"));
            let want = &case["config"];
            for k in [
                "num_attention_heads",
                "hidden_size",
                "num_hidden_layers",
                "image_size",
                "patch_size",
                "qkv_bias",
            ] {
                assert_eq!(cfg[k], want[k], "{} {k}", case["dir"]);
            }
            assert_eq!(cfg["layer_norm_eps"].as_f64(), Some(1e-12));
            assert_eq!(cfg["hidden_act"], "gelu");
        }
    }
}

#[test]
fn converted_flax_models_reproduce_the_flax_outputs() {
    for case in cases() {
        let dir = flax_dir().join(case["dir"].as_str().unwrap());
        let out = tempfile::tempdir().unwrap();
        convert(
            dir.join("flax_model.msgpack"),
            out.path(),
            &options("flax", OutputFormat::Safetensors, None),
        )
        .unwrap();
        let model = Model::load(out.path()).unwrap();
        let input = F32Array::read_npy(dir.join("input.npy")).unwrap();
        let primary =
            F32Array::read_npy(dir.join(case["primary_output"].as_str().unwrap())).unwrap();
        let opts = ForwardOptions::default();
        let report =
            verify_model(&model, &input, &primary, &opts, Some(Tolerance::strict())).unwrap();
        assert!(report.passed, "{}: {report:?}", case["dir"]);
        if dir.join("pooler_output.npy").exists() {
            let want = F32Array::read_npy(dir.join("pooler_output.npy")).unwrap();
            let got = model.forward(input.as_nchw().unwrap(), &opts).unwrap();
            let pooled = got.pooler_output.unwrap();
            let r = compare(
                &pooled.iter().copied().collect::<Vec<_>>(),
                &want.data,
                &want.shape,
                Tolerance::strict(),
            )
            .unwrap();
            assert!(r.passed, "pooler: {r:?}");
        }
    }
}

#[test]
fn to_flax_writes_the_bytes_flax_to_bytes_wrote() {
    for case in cases() {
        let dir = flax_dir().join(case["dir"].as_str().unwrap());
        let want = std::fs::read(dir.join("flax_model.msgpack")).unwrap();
        // From the PyTorch equivalent (config.json beside it supplies the head count) …
        let out = tempfile::tempdir().unwrap();
        let opts = options("hf", OutputFormat::Flax, None);
        let r = convert(dir.join("pt/model.safetensors"), out.path(), &opts).unwrap();
        assert_eq!(r.outputs[0].file_name().unwrap(), "flax_model.msgpack");
        let got = std::fs::read(&r.outputs[0]).unwrap();
        assert!(got == want, "{}: --to flax differs from flax", case["dir"]);
        assert_eq!(r.bytes, want.len() as u64);
        // … and from the Flax file itself.
        let again = tempfile::tempdir().unwrap();
        let opts = options("flax", OutputFormat::Flax, None);
        convert(dir.join("flax_model.msgpack"), again.path(), &opts).unwrap();
        assert!(std::fs::read(again.path().join("flax_model.msgpack")).unwrap() == want);
    }
}

#[test]
fn to_flax_bf16_matches_flax_to_bf16() {
    let dir = flax_dir().join("vit_cls");
    let out = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        dtype: Some(vit_convert::DType::BF16),
        ..options("hf", OutputFormat::Flax, None)
    };
    convert(dir.join("pt/model.safetensors"), out.path(), &opts).unwrap();
    let got = std::fs::read(out.path().join("flax_model.msgpack")).unwrap();
    let want = std::fs::read(flax_dir().join("vit_cls_bf16.msgpack")).unwrap();
    assert!(got == want);
}

#[test]
fn round_trips_of_other_families_through_flax_are_bit_exact() {
    let manifest = read_json(&common::fixture("convert", "cases.json"));
    let mut done = 0;
    for c in manifest.as_array().unwrap() {
        if c["case"].as_str().is_some_and(|n| n.starts_with("deit")) {
            continue;
        }
        let hf = common::fixture_dir("convert")
            .join(c["dir"].as_str().unwrap())
            .join(c["expected_dir"].as_str().unwrap())
            .join("model.safetensors");
        let heads = c["config"]["num_attention_heads"]
            .as_u64()
            .map(|h| h as usize);
        let mid = tempfile::tempdir().unwrap();
        let opts = options("hf", OutputFormat::Flax, heads);
        let r = convert(&hf, mid.path(), &opts).unwrap();
        let back = tempfile::tempdir().unwrap();
        let opts = options("flax", OutputFormat::Safetensors, heads);
        convert(&r.outputs[0], back.path(), &opts).unwrap();
        assert_eq!(
            tensors(&hf),
            tensors(&back.path().join("model.safetensors")),
            "{}",
            c["case"]
        );
        done += 1;
    }
    assert!(done >= 3, "{done}");
}

#[test]
fn to_flax_refuses_deit_and_notes_a_missing_pooler() {
    let deit = common::fixture("convert", "deit_distilled/source.pth");
    let out = tempfile::tempdir().unwrap();
    let opts = options("deit", OutputFormat::Flax, Some(3));
    let e = convert(&deit, out.path(), &opts).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::InvalidOption { reason } if reason.contains("no Flax")),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    let dino = common::fixture("convert", "dino_backbone/hf/model.safetensors");
    let opts = options("hf", OutputFormat::Flax, Some(4));
    let r = convert(&dino, out.path(), &opts).unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("add_pooling_layer=False")),
        "{:?}",
        r.notes
    );
}

#[test]
fn cli_converts_from_and_to_flax() {
    let exe = env!("CARGO_BIN_EXE_vit-convert");
    let input = flax_dir().join("vit_cls/flax_model.msgpack");
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(exe)
        .args(["--from", "flax", "--to", "flax"])
        .arg(&input)
        .arg("-o")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        std::fs::read(out.path().join("flax_model.msgpack")).unwrap()
            == std::fs::read(&input).unwrap()
    );
    let o = Command::new(exe)
        .args(["inspect", "--json"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "flax", "{v}");
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

macro_rules! assert_kind {
    ($bytes:expr, $pat:pat) => {{
        let r = kind_of($bytes);
        assert!(
            matches!(r.as_ref().map_err(|e| e.kind()), Err($pat)),
            "{r:?}"
        );
    }};
}

#[test]
fn hand_built_tree_reads_with_names_joined_by_slash() {
    let bytes = Mp::default()
        .map(2)
        .s("a")
        .map(1)
        .s("b")
        .array(&[2, 2], "float32", &f32s(4))
        .s("c")
        .arr(2)
        .array(&[1], "int8", &[7])
        .raw(&[0xc0])
        .0;
    let src = open_bytes(FileBytes::from_vec(bytes)).unwrap();
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a/b", "c/0"]);
    assert_eq!(src.read("a/b").unwrap().data.as_ref(), f32s(4).as_slice());
    assert_eq!(src.notes().len(), 1, "{:?}", src.notes());
    assert!(matches!(
        src.read("a").unwrap_err().kind(),
        ErrorKind::TensorNotFound { .. }
    ));
}

#[test]
fn every_integer_and_extension_encoding_flax_may_meet_is_read() {
    // A 0-d float32 payload is exactly 16 bytes: fixext16. Dimensions as signed int8/int16/
    // uint16 encodings; dtype and data as str/bin (old msgpack wrote raw strings).
    let scalar = Mp::payload(&[], "float32", &1.5f32.to_le_bytes());
    assert_eq!(scalar.len(), 16);
    let signed_dims = Mp::default()
        .arr(3)
        .arr(2)
        .raw(&[0xd0, 0x02, 0xd1, 0x00, 0x01])
        .raw(&[0xc4, 0x05])
        .raw(b"uint8")
        .raw(&[0xa2, 1, 2])
        .0;
    let wide = Mp::default()
        .arr(3)
        .arr(1)
        .raw(&[0xcd, 0x01, 0x00])
        .s("int8")
        .bin(&[0; 256])
        .0;
    let bytes = Mp::default()
        .map(3)
        .s("s")
        .ext(3, &scalar)
        .s("d")
        .ext(1, &signed_dims)
        .s("w")
        .ext(1, &wide)
        .0;
    assert_eq!(bytes[3], 0xd8, "fixext16");
    let src = open_bytes(FileBytes::from_vec(bytes)).unwrap();
    assert_eq!(src.read("s").unwrap().data.as_ref(), &1.5f32.to_le_bytes());
    assert_eq!(src.info("d").unwrap().shape, [2, 1]);
    assert_eq!(src.info("w").unwrap().shape, [256]);
}

#[test]
fn deep_nesting_is_refused_by_budget_without_recursion() {
    let mut m = Mp::default();
    for _ in 0..100_000 {
        m = m.map(1).s("k");
    }
    let bytes = m.array(&[1], "uint8", &[1]).0;
    assert_kind!(
        bytes,
        ErrorKind::BudgetExceeded {
            budget: "container nesting",
            ..
        }
    );
    let mut m = Mp::default().map(1).s("k");
    for _ in 0..100_000 {
        m = m.arr(1);
    }
    assert_kind!(
        m.0,
        ErrorKind::BudgetExceeded {
            budget: "container nesting",
            ..
        }
    );
}

#[test]
fn huge_declared_lengths_are_refused_before_allocating() {
    // map32 / array32 with u32::MAX entries.
    assert_kind!(
        vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        ErrorKind::BudgetExceeded { .. }
    );
    assert_kind!(
        one("a", Mp::default().raw(&[0xdd, 0xff, 0xff, 0xff, 0xff])),
        ErrorKind::BudgetExceeded { .. }
    );
    // A plausible count the bytes cannot hold.
    assert_kind!(
        vec![0xde, 0x10, 0x00, 0xa1, b'a', 0xc0],
        ErrorKind::Truncated { .. }
    );
    // str32 / bin32 / ext32 lengths past what msgpack allows in one object, or the file.
    assert_kind!(
        Mp::default().map(1).raw(&[0xdb, 0xff, 0xff, 0xff, 0xff]).0,
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    assert_kind!(
        one(
            "a",
            Mp::default().raw(&[0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01])
        ),
        ErrorKind::Truncated { .. }
    );
    assert_kind!(
        one("a", Mp::default().raw(&[0xc6, 0x80, 0x00, 0x00, 0x00])),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    // A shape whose byte size overflows.
    assert_kind!(
        one("a", Mp::default().array(&[u64::MAX, 4], "float32", &[])),
        ErrorKind::InvalidLayout { .. }
    );
    // (The name, tensor count and value budgets are tests/hostile's: they need big files.)
}

#[test]
fn wrong_extension_payloads_are_refused_with_specific_errors() {
    let ext = |code: i8, payload: Vec<u8>| one("w", Mp::default().ext(code, &payload));
    // Not a 3-array; a 2-array; shape not an array; dimension not an integer.
    assert_kind!(
        ext(1, Mp::default().s("x").0),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    assert_kind!(
        ext(1, Mp::default().arr(2).arr(0).s("float32").0),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    assert_kind!(
        ext(1, Mp::default().arr(3).uint(1).s("float32").bin(&[0; 4]).0),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    assert_kind!(
        ext(
            1,
            Mp::default()
                .arr(3)
                .arr(1)
                .s("1")
                .s("float32")
                .bin(&[0; 4])
                .0
        ),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    // Negative dimension; rank over the limit.
    assert_kind!(
        ext(
            1,
            Mp::default()
                .arr(3)
                .arr(1)
                .raw(&[0xff])
                .s("uint8")
                .bin(&[])
                .0
        ),
        ErrorKind::InvalidLayout { .. }
    );
    assert_kind!(
        ext(1, Mp::payload(&[1; 65], "uint8", &[0])),
        ErrorKind::InvalidLayout { .. }
    );
    // Unknown dtype; data of the wrong size; trailing bytes inside the payload.
    let r = kind_of(ext(1, Mp::payload(&[2], "uint16", &[0; 4])));
    assert!(
        matches!(r.as_ref().map_err(|e| e.kind()), Err(ErrorKind::UnsupportedDType { dtype }) if dtype == "uint16"),
        "{r:?}"
    );
    assert_kind!(
        ext(1, Mp::payload(&[3], "float32", &[0; 8])),
        ErrorKind::InvalidLayout { .. }
    );
    let mut p = Mp::payload(&[1], "uint8", &[1]);
    p.push(0xc0);
    assert_kind!(
        ext(1, p),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    // Payload shorter than its own contents.
    let p = Mp::payload(&[4], "uint8", &[1, 2, 3, 4]);
    assert_kind!(
        ext(1, p[..p.len() - 2].to_vec()),
        ErrorKind::Truncated { .. }
    );
    // Unknown extension type; complex.
    assert_kind!(
        ext(9, Mp::payload(&[1], "uint8", &[1])),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    let r = kind_of(ext(2, Mp::default().arr(2).raw(&[0x01, 0x02]).0));
    assert!(
        matches!(r.as_ref().map_err(|e| e.kind()), Err(ErrorKind::UnsupportedDType { dtype }) if dtype == "complex"),
        "{r:?}"
    );
}

#[test]
fn bad_keys_and_trailing_bytes_are_refused() {
    let a = || Mp::default().array(&[1], "uint8", &[1]);
    // Non-string key, repeated key, two paths that join to one name.
    assert_kind!(
        Mp::default().map(1).uint(3).raw(&a().0).0,
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    let dup = Mp::default().map(2).s("k").raw(&a().0).s("k").raw(&a().0).0;
    let r = kind_of(dup);
    assert!(
        matches!(r.as_ref().map_err(|e| e.kind()), Err(ErrorKind::Duplicate { name, .. }) if name == "k"),
        "{r:?}"
    );
    let joined = Mp::default()
        .map(2)
        .s("a/b")
        .raw(&a().0)
        .s("a")
        .map(1)
        .s("b")
        .raw(&a().0)
        .0;
    assert_kind!(joined, ErrorKind::Duplicate { what: "tensor", .. });
    // Invalid UTF-8 key; reserved marker; trailing bytes.
    assert_kind!(
        Mp::default().map(1).raw(&[0xa1, 0xff]).raw(&a().0).0,
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    assert_kind!(
        one("k", Mp::default().raw(&[0xc1])),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    let mut t = one("k", a());
    t.push(0x00);
    assert_kind!(
        t,
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
}

#[test]
fn an_empty_top_level_map_is_refused() {
    // `\x80` is flax's `to_bytes({})` and also a pickle cut off after its PROTO opcode: no
    // tensors either way, so it must not read as an empty checkpoint.
    let r = kind_of(vec![0x80]);
    assert!(
        matches!(r.as_ref().map_err(|e| e.kind()), Err(ErrorKind::MalformedContainer { reason, .. }) if reason.contains("empty")),
        "{r:?}"
    );
}

#[test]
fn malformed_chunked_arrays_are_refused() {
    let chunk = f32_chunk;
    let chunked = |marker: &[u8], shape: &[u64], chunks: Vec<Mp>| {
        one("w", Mp::default().chunked(marker, shape, chunks))
    };
    let good = chunked(&[0xc3], &[2, 3], vec![chunk(4), chunk(2)]);
    let src = open_bytes(FileBytes::from_vec(good)).unwrap();
    assert_eq!(src.tensors()[0].shape, [2, 3]);
    assert_eq!(
        src.read("w").unwrap().data.as_ref(),
        [f32s(4), f32s(2)].concat()
    );

    assert_kind!(
        chunked(&[0xc3], &[2, 3], vec![chunk(4), chunk(1)]),
        ErrorKind::InvalidLayout { .. }
    );
    assert_kind!(
        chunked(&[0xc2], &[2, 3], vec![chunk(4), chunk(2)]),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    assert_kind!(
        chunked(&[0xc3], &[0], vec![]),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    let mixed = Mp::default().array(&[2], "int32", &[0; 8]);
    assert_kind!(
        chunked(&[0xc3], &[2, 3], vec![chunk(4), mixed]),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    let two_d = Mp::default().array(&[1, 2], "float32", &f32s(2));
    assert_kind!(
        chunked(&[0xc3], &[2, 3], vec![chunk(4), two_d]),
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    // A gap in the chunk indices.
    let gap = gapped_chunks();
    assert_kind!(
        gap,
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
    // Extra keys.
    let extra = one(
        "w",
        Mp::default()
            .map(2)
            .s("__msgpack_chunked_array__")
            .raw(&[0xc3])
            .s("other")
            .raw(&[0xc0]),
    );
    assert_kind!(
        extra,
        ErrorKind::MalformedContainer {
            format: Format::Flax,
            ..
        }
    );
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    for file in ["scalars.msgpack", "complex.msgpack"] {
        let full = std::fs::read(flax_dir().join(file)).unwrap();
        for cut in 0..full.len() {
            assert!(
                kind_of(full[..cut].to_vec()).is_err(),
                "{file} cut at {cut}"
            );
        }
    }
    // The chunked fixture: every cut in its first 4 KiB, then every 997th byte.
    let full = std::fs::read(flax_dir().join("vit_model_chunked.msgpack")).unwrap();
    let cuts = (0..4096).chain((4096..full.len()).step_by(997));
    for cut in cuts {
        let r = kind_of(full[..cut].to_vec());
        assert!(
            matches!(
                r.as_ref().map_err(|e| e.kind()),
                Err(ErrorKind::Truncated { .. } | ErrorKind::UnknownFormat { .. })
            ),
            "cut at {cut}: {r:?}"
        );
    }
}

#[test]
fn byte_mutations_never_panic() {
    // Every byte of the small generic state, every value; then a bounded sweep over the start of
    // a real checkpoint (structure, keys, array headers).
    let full = std::fs::read(flax_dir().join("scalars.msgpack")).unwrap();
    for at in 0..full.len() {
        for v in 0..=255u8 {
            let mut m = full.clone();
            m[at] = v;
            let _ = kind_of(m);
        }
    }
    let full = std::fs::read(flax_dir().join("vit_model_chunked.msgpack")).unwrap();
    // (Bounded: each case copies and parses the 300 KB file.)
    for at in 0..640 {
        for v in [0x00, 0x80, 0xa0, 0xc1, 0xc7, 0xdb, 0xff] {
            let mut m = full.clone();
            m[at] = v;
            let _ = kind_of(m);
        }
    }
}

#[test]
fn flax_layout_safetensors_reads_as_the_flax_tree_and_converts_alike() {
    let st = flax_dir().join("vit_cls_safetensors/model.safetensors");
    let msgpack = flax_dir().join("vit_cls/flax_model.msgpack");
    let src = vit_convert::open(&st).unwrap();
    assert_eq!(src.metadata()["format"], "flax");
    assert_eq!(tensors(&st), tensors(&msgpack));
    let out = tempfile::tempdir().unwrap();
    let r = convert(&st, out.path(), &ConvertOptions::default()).unwrap();
    assert_eq!(r.mapping.table, "flax");
    assert_eq!(
        tensors(&out.path().join("model.safetensors")),
        tensors(&flax_dir().join("vit_cls/pt/model.safetensors"))
    );
    // The PyTorch-layout table does not take it.
    let opts = options("hf", OutputFormat::Safetensors, None);
    let e = convert(&st, out.path(), &opts).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Mapping { .. }), "{e}");
}
