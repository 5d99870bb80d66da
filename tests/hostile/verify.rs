//! `verify` never passes what it did not prove: a NaN or ±Inf on either side, an f64 beyond the
//! f32 range, an empty batch, a shape mismatch or a meaningless tolerance is a mismatch (exit 3)
//! or an error (exit 1, or 2 for a bad option), saying where — at library and CLI level.

use std::path::{Path, PathBuf};

use vit_convert::verify::{self, F32Array, Side, Tolerance};
use vit_convert::{ErrorKind, Model};

use crate::{bin, build};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/convert")
        .join(rel)
}

const MODEL: &str = "deit_distilled/hf";
const INPUT: &str = "deit_distilled/io/input.npy";
const LOGITS: &str = "deit_distilled/io/logits_hf.npy";

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    }
}

/// A little-endian f64 `.npy`.
fn npy_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    build::npy(
        &format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': {}, }}",
            shape_text(shape)
        ),
        &data,
    )
}

/// The fixture logits as f64 with one value replaced.
fn logits_f64_with(at: usize, value: f64) -> (Vec<usize>, Vec<u8>) {
    let a = F32Array::read_npy(fixture(LOGITS)).unwrap();
    let mut v: Vec<f64> = a.data.iter().map(|&x| f64::from(x)).collect();
    v[at] = value;
    (a.shape.clone(), npy_f64(&a.shape, &v))
}

/// `verify` through the library, on the fixture model.
fn library_verify(input: &Path, expected: &Path) -> vit_convert::Result<verify::VerifyReport> {
    let model = Model::load(fixture(MODEL)).unwrap();
    let input = F32Array::read_npy(input).unwrap();
    let expected = F32Array::read_npy(expected).unwrap();
    verify::verify_model(
        &model,
        &input,
        &expected,
        &Default::default(),
        Some(Tolerance::default()),
    )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn verify_cli(input: &Path, expected: &Path, extra: &[&str]) -> Run {
    let out = bin()
        .arg("verify")
        .arg(fixture(MODEL))
        .arg("--input")
        .arg(input)
        .arg("--expected")
        .arg(expected)
        .args(extra)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exit 1 and exactly one `error:` line containing every part of `parts`.
fn assert_one_error_line(r: &Run, parts: &[&str]) {
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        r.code,
        Some(1),
        "stderr {:?} stdout {:?}",
        r.stderr,
        r.stdout
    );
    assert_eq!(lines.len(), 1, "{:?}", r.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", r.stderr);
    for p in parts {
        assert!(lines[0].contains(p), "{p:?} not in {:?}", lines[0]);
    }
    assert!(!r.stdout.contains("PASS"), "{:?}", r.stdout);
}

#[test]
fn verify_inf_in_expected_is_a_mismatch_saying_where() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = logits_f64_with(3, f64::INFINITY);
    let exp = dir.path().join("inf.npy");
    std::fs::write(&exp, bytes).unwrap();

    let r = library_verify(&fixture(INPUT), &exp).unwrap();
    assert!(!r.passed);
    let nf = r.non_finite.clone().unwrap();
    assert_eq!(
        (nf.side, nf.at.clone(), nf.value, nf.count),
        (Side::Expected, vec![0, 3], f64::INFINITY, 1)
    );

    let run = verify_cli(&fixture(INPUT), &exp, &[]);
    assert_eq!(run.code, Some(3), "{run:?}", run = run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    // The summary, then the sample whose top-1 the Inf changed.
    assert_eq!(lines.len(), 2, "{:?}", run.stdout);
    assert!(lines[1].starts_with("  sample 0: "), "{:?}", run.stdout);
    assert!(
        lines[0].starts_with("FAIL: expected value inf at [0, 3] is not finite"),
        "{:?}",
        lines[0]
    );
    let json = verify_cli(&fixture(INPUT), &exp, &["--json"]);
    assert_eq!(json.code, Some(3));
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["non_finite"]["side"], "expected");
    assert_eq!(v["non_finite"]["at"], serde_json::json!([0, 3]));
    assert_eq!(v["non_finite"]["value"], "inf");
}

#[test]
fn verify_nan_in_f32_expected_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = F32Array::read_npy(fixture(LOGITS)).unwrap();
    a.data[0] = f32::NAN;
    let exp = dir.path().join("nan.npy");
    a.write_npy(&exp).unwrap();
    let run = verify_cli(&fixture(INPUT), &exp, &[]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("FAIL: expected value NaN at [0, 0]"),
        "{:?}",
        run.stdout
    );
}

#[test]
fn verify_f64_beyond_f32_range_is_an_error_naming_file_index_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = logits_f64_with(4, 1e39);
    let exp = dir.path().join("huge.npy");
    std::fs::write(&exp, bytes).unwrap();
    let e = F32Array::read_npy(&exp).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::BadValue { what: "f64", index, value, .. } if index == &[0, 4] && *value == 1e39),
        "{e}"
    );
    assert_eq!(e.path(), Some(exp.as_path()));
    let run = verify_cli(&fixture(INPUT), &exp, &[]);
    assert_one_error_line(&run, &["huge.npy", "f64 value 1e39 at [0, 4]", "f32 range"]);
}

#[test]
fn verify_refuses_a_non_finite_input_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let a = F32Array::read_npy(fixture(INPUT)).unwrap();
    let mut v: Vec<f64> = a.data.iter().map(|&x| f64::from(x)).collect();
    v[5] = f64::NAN;
    let input = dir.path().join("nan_input.npy");
    std::fs::write(&input, npy_f64(&a.shape, &v)).unwrap();

    let e = library_verify(&input, &fixture(LOGITS)).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::BadValue { what: "input", index, .. } if index == &[0, 0, 0, 5]),
        "{e}"
    );
    let run = verify_cli(&input, &fixture(LOGITS), &[]);
    assert_one_error_line(&run, &["input value NaN at [0, 0, 0, 5] is not finite"]);
}

#[test]
fn verify_empty_batch_is_an_error_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let a = F32Array::read_npy(fixture(INPUT)).unwrap();
    let mut shape = a.shape.clone();
    shape[0] = 0;
    let input = dir.path().join("empty.npy");
    std::fs::write(&input, npy_f64(&shape, &[])).unwrap();
    let mut eshape = F32Array::read_npy(fixture(LOGITS)).unwrap().shape;
    eshape[0] = 0;
    let exp = dir.path().join("empty_logits.npy");
    std::fs::write(&exp, npy_f64(&eshape, &[])).unwrap();

    let e = library_verify(&input, &exp).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::EmptyComparison { what: "input", shape: s } if s == &shape),
        "{e}"
    );
    let run = verify_cli(&input, &exp, &[]);
    assert_one_error_line(&run, &["nothing to compare", "holds no values"]);
}

#[test]
fn verify_shape_mismatch_names_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let a = F32Array::read_npy(fixture(LOGITS)).unwrap();
    let wrong = vec![a.shape[0], a.shape[1] + 1];
    let exp = dir.path().join("wider.npy");
    std::fs::write(&exp, npy_f64(&wrong, &vec![0.0; wrong[0] * wrong[1]])).unwrap();

    let e = library_verify(&fixture(INPUT), &exp).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::ShapeMismatch { computed, expected } if computed == &a.shape && expected == &wrong),
        "{e}"
    );
    let run = verify_cli(&fixture(INPUT), &exp, &[]);
    assert_one_error_line(
        &run,
        &[&format!(
            "shape mismatch: computed {:?}, expected {wrong:?}",
            a.shape
        )],
    );
}

#[test]
fn verify_integer_expected_is_a_dtype_error() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("ints.npy");
    std::fs::write(
        &exp,
        build::npy(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }",
            &[0u8; 16],
        ),
    )
    .unwrap();
    let e = F32Array::read_npy(&exp).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::UnexpectedDType { .. }), "{e}");
    let run = verify_cli(&fixture(INPUT), &exp, &[]);
    assert_one_error_line(&run, &["ints.npy", "I64 [1, 2]", "a float array"]);
}

#[test]
fn verify_tolerances_must_be_finite_and_not_negative() {
    for (flag, value) in [
        ("--atol", "inf"),
        ("--rtol", "NaN"),
        ("--atol", "-1e-5"),
        ("--rtol", "1e999"),
    ] {
        let run = verify_cli(
            &fixture(INPUT),
            &fixture(LOGITS),
            &[&format!("{flag}={value}")],
        );
        assert_eq!(run.code, Some(2), "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains("finite number >= 0"), "{}", run.stderr);
        assert!(run.stdout.is_empty());
        // diff's tolerance likewise: an infinite one would call any two checkpoints equivalent.
        let weights = fixture(MODEL).join("model.safetensors");
        let out = bin()
            .arg("diff")
            .arg(&weights)
            .arg(&weights)
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "diff {flag} {value}");
    }
    let e = vit_convert::diff::diff(
        fixture(MODEL).join("model.safetensors"),
        fixture(MODEL).join("model.safetensors"),
        &vit_convert::diff::DiffOptions {
            tolerance: Some(Tolerance {
                atol: f64::INFINITY,
                rtol: 0.0,
            }),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(e.kind(), vit_convert::ErrorKind::InvalidTolerance { part: "atol", value } if value.is_infinite()),
        "{e}"
    );
}

#[test]
fn verify_nan_computed_by_the_model_is_a_mismatch_saying_where() {
    use std::borrow::Cow;
    use vit_convert::{source::MemorySource, tensor::Tensor, write::WriteItem, DType};
    // The fixture model with a NaN in the classifier bias: every logit of class 1 is NaN.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("nan_model");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        let from = fixture(MODEL).join(f);
        if from.exists() {
            std::fs::copy(&from, folder.join(f)).unwrap();
        }
    }
    let src = vit_convert::open(fixture(MODEL).join("model.safetensors")).unwrap();
    let mut out = MemorySource::new();
    for info in src.tensors() {
        let t = src.read(&info.name).unwrap();
        if info.name.ends_with("classifier.bias") {
            let mut bytes = t.data.to_vec();
            bytes[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            let t = Tensor::new(DType::F32, t.shape.clone(), Cow::Owned(bytes)).unwrap();
            out.insert(&info.name, t).unwrap();
        } else {
            out.insert(&info.name, t).unwrap();
        }
    }
    vit_convert::write::write_safetensors(
        &folder.join("model.safetensors"),
        &out,
        &WriteItem::all(&out),
        None,
        &Default::default(),
    )
    .unwrap();

    let model = Model::load(&folder).unwrap();
    let input = F32Array::read_npy(fixture(INPUT)).unwrap();
    let expected = F32Array::read_npy(fixture(LOGITS)).unwrap();
    let r = verify::verify_model(
        &model,
        &input,
        &expected,
        &Default::default(),
        Some(Tolerance::default()),
    )
    .unwrap();
    assert!(!r.passed);
    // An arg-max that skips the NaN proves no top-1 agreement.
    assert!(r.top1.iter().all(|t| !t.agree), "{:?}", r.top1);
    let nf = r.non_finite.unwrap();
    assert_eq!((nf.side, nf.at), (Side::Computed, vec![0, 1]));
    assert!(nf.value.is_nan());

    let out = bin()
        .arg("verify")
        .arg(&folder)
        .arg("--input")
        .arg(fixture(INPUT))
        .arg("--expected")
        .arg(fixture(LOGITS))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.starts_with("FAIL: computed value NaN at [0, 1] is not finite"),
        "{stdout}"
    );
    let batch = input.shape[0];
    assert!(
        stdout.contains(&format!("top-1 agrees on 0/{batch} samples")),
        "{stdout}"
    );
}

/// `diff --rtol` on f64 values near f64::MAX: the bound `atol + rtol · max |a|` overflows to Inf
/// and an infinite difference was "equivalent within the tolerance" (exit 0). Now: differ, 3.
#[test]
fn diff_with_an_overflowing_bound_differs() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#;
    let mut paths = Vec::new();
    for (name, first) in [("a.safetensors", 1e308f64), ("b.safetensors", -1e308)] {
        let data: Vec<u8> = [first, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, build::safetensors(header, &data)).unwrap();
        paths.push(path);
    }
    let tol = vit_convert::Tolerance {
        atol: 0.0,
        rtol: 2.0,
    };
    let r = vit_convert::diff::diff(
        &paths[0],
        &paths[1],
        &vit_convert::diff::DiffOptions {
            tolerance: Some(tol),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!r.identical && !r.equivalent);
    assert_eq!(r.changed[0].max_abs, Some(f64::INFINITY));
    assert!(!r.changed[0].within_tolerance);

    let out = bin()
        .arg("diff")
        .args(&paths)
        .args(["--atol", "0", "--rtol", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.lines().any(|l| l.ends_with(": differ")), "{stdout}");
    assert!(!stdout.contains("within"), "{stdout}");
}

/// `--threads 99999999999` (or `VIT_CONVERT_THREADS`) is capped to `MAX_THREADS`: the pool
/// builder used to spawn threads for minutes before giving up.
#[test]
fn a_huge_thread_count_is_capped_not_spawned() {
    let mut model = Model::load(fixture(MODEL)).unwrap();
    model.set_threads(usize::MAX);
    assert_eq!(model.threads(), vit_convert::forward::MAX_THREADS);
    let started = std::time::Instant::now();
    let run = verify_cli(
        &fixture(INPUT),
        &fixture(LOGITS),
        &["--threads", "99999999999"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("PASS (logits [2, 5]): "),
        "{}",
        run.stdout
    );
    let out = bin()
        .arg("verify")
        .arg(fixture(MODEL))
        .arg("--input")
        .arg(fixture(INPUT))
        .arg("--expected")
        .arg(fixture(LOGITS))
        .env("VIT_CONVERT_THREADS", usize::MAX.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}
