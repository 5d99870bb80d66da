//! The library on bytes (issue 13 §4) and the precision-aware verify default (§5): the
//! in-memory flow matches the file-based one, and 16-bit weights get the tolerance their
//! rounding costs unless one is given.

mod common;

use std::path::PathBuf;

use serde_json::Value;
use vit_convert::diff::{diff, diff_sources, DiffOptions};
use vit_convert::hash::{hash, hash_source, ReadAs};
use vit_convert::verify::ToleranceBasis;
use vit_convert::{
    open_bytes, verify_model, Canonical, ConvertOptions, DType, F32Array, FileBytes, Model,
    Tolerance,
};

fn conv(rel: &str) -> PathBuf {
    common::fixture("convert", rel)
}

fn in_memory(rel: &str) -> Box<dyn vit_convert::TensorSource> {
    let bytes = std::fs::read(conv(rel)).unwrap();
    open_bytes(FileBytes::from_vec(bytes)).unwrap()
}

fn cli(args: &[&str]) -> (Option<i32>, String) {
    let out = common::run_cli(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn arg(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn canonical_hash_equals_hash_from_of_the_file() {
    for (rel, family, heads) in [
        ("timm_vit/source.pth", "timm", 2),
        ("jax_vit/source.npz", "jax", 2),
        ("deit_distilled/source.pth", "deit", 3),
    ] {
        let src = in_memory(rel);
        let mut opts = common::two_heads();
        opts.overrides.num_heads = Some(heads);
        let canon = Canonical::new(src.as_ref(), &opts).unwrap();
        let from_file = hash(conv(rel), &ReadAs::family(family.parse().unwrap())).unwrap();
        let in_mem = canon.hash().unwrap();
        assert_eq!(in_mem.digest, from_file.digest, "{rel}");
        assert_eq!(in_mem.tensors, from_file.tensors, "{rel}");
        assert_eq!(in_mem.reading.table.as_deref(), Some(family));
        assert!(in_mem.reading.file.is_none());
        // hash_source on the bytes, read canonically, is the same again.
        let src_hash = hash_source(src.as_ref(), &ReadAs::family(family.parse().unwrap())).unwrap();
        assert_eq!(src_hash.digest, from_file.digest, "{rel}");
        // The CLI's digest line.
        let (code, out) = cli(&["hash", arg(&conv(rel)), "--from", family]);
        assert_eq!(code, Some(0));
        assert!(
            out.lines().last().unwrap().starts_with(&in_mem.digest),
            "{out}"
        );
    }
}

#[test]
fn canonical_from_bytes_runs_and_matches_timm_logits() {
    let src = in_memory("timm_vit/source.pth");
    let canon = Canonical::new(src.as_ref(), &common::two_heads()).unwrap();
    assert_eq!(canon.mapping().table, "timm");
    assert!(canon.dropped().is_empty());
    let model = canon.model().unwrap();
    assert_eq!(model.weight_dtype(), DType::F32);
    let input = F32Array::parse_npy(std::fs::read(conv("timm_vit/io/input.npy")).unwrap()).unwrap();
    let expected =
        F32Array::parse_npy(std::fs::read(conv("timm_vit/io/logits_timm.npy")).unwrap()).unwrap();
    let r = verify_model(&model, &input, &expected, &Default::default(), None).unwrap();
    assert!(r.passed, "max |Δ| {}", r.max_abs_error);
    assert_eq!(r.tolerance, Tolerance::default());
    assert_eq!(
        r.tolerance_basis,
        ToleranceBasis::Default {
            weights: DType::F32
        }
    );
}

#[test]
fn canonical_write_matches_convert_but_for_the_source_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, file) = (dir.path().join("mem"), dir.path().join("file"));
    let src = in_memory("timm_vit/source.pth");
    let canon = Canonical::new(src.as_ref(), &common::two_heads()).unwrap();
    let written = canon.write(&mem, &common::two_heads()).unwrap();
    assert!(written.input.is_none() && written.input_sha256.is_none());
    let converted =
        vit_convert::convert(conv("timm_vit/source.pth"), &file, &common::two_heads()).unwrap();
    assert_eq!(written.tensors, converted.tensors);
    for name in ["config.json", "preprocessor_config.json"] {
        assert_eq!(
            std::fs::read(mem.join(name)).unwrap(),
            std::fs::read(file.join(name)).unwrap(),
            "{name}"
        );
    }
    // Same tensors; only the metadata differs (no source file, no source_sha256).
    let a = common::tensors(&mem.join("model.safetensors"));
    let b = common::tensors(&file.join("model.safetensors"));
    assert_eq!(a, b);
    let meta = vit_convert::open(mem.join("model.safetensors")).unwrap();
    assert!(!meta.metadata().contains_key("source_sha256"));
    assert_eq!(meta.metadata()["mapping_table"], "timm");
}

#[test]
fn mapping_table_from_file_is_the_builtin_table() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings/jax.toml");
    let from_file = vit_convert::MappingTable::from_file(&path).unwrap();
    let builtin = vit_convert::MappingTable::builtin("jax").unwrap();
    assert_eq!(from_file.hash(), builtin.hash());
    // Used as a custom table, it converts as the built-in one does.
    let src = in_memory("jax_vit/source.npz");
    let opts = ConvertOptions {
        table: Some(from_file),
        ..Default::default()
    };
    let a = Canonical::new(src.as_ref(), &opts).unwrap().hash().unwrap();
    let b = hash(
        conv("jax_vit/source.npz"),
        &ReadAs::family("jax".parse().unwrap()),
    )
    .unwrap();
    assert_eq!(a.digest, b.digest);
}

/// Converts the timm fixture to `dtype` in a temp folder.
fn convert_to(dtype: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let (code, _) = cli(&[
        "convert",
        arg(&conv("timm_vit/source.pth")),
        "--from",
        "timm",
        "--num-heads",
        "2",
        "--dtype",
        dtype,
        "-o",
        arg(out.path()),
        "--quiet",
    ]);
    assert_eq!(code, Some(0));
    out
}

fn verify_json(model: &std::path::Path, extra: &[&str]) -> (Option<i32>, Value) {
    let (input, expected) = (
        conv("timm_vit/io/input.npy"),
        conv("timm_vit/io/logits_timm.npy"),
    );
    let mut args = vec![
        "verify",
        arg(model),
        "--input",
        arg(&input),
        "--expected",
        arg(&expected),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out) = cli(&args);
    (code, serde_json::from_str(&out).unwrap())
}

#[test]
fn bf16_weights_pass_verify_under_the_widened_default_and_say_so() {
    let out = convert_to("bf16");
    let (code, r) = verify_json(out.path(), &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["passed"], true);
    assert_eq!(r["tolerance_basis"]["kind"], "default");
    assert_eq!(r["tolerance_basis"]["weights"], "BF16");
    let bf16 = Tolerance::for_weights(DType::BF16);
    assert_eq!(r["tolerance"]["atol"], bf16.atol);
    assert_eq!(r["tolerance"]["rtol"], bf16.rtol);
    // The error is the rounding's: beyond the f32 default, within the widened one.
    let err = r["max_abs_error"].as_f64().unwrap();
    assert!(err > 1e-3, "{err}");
    // The text line says which tolerance applied and why.
    let (input, expected) = (
        conv("timm_vit/io/input.npy"),
        conv("timm_vit/io/logits_timm.npy"),
    );
    let (code, text) = cli(&[
        "verify",
        arg(out.path()),
        "--input",
        arg(&input),
        "--expected",
        arg(&expected),
    ]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("default for BF16 weights, widened for their rounding"),
        "{text}"
    );
    // The library: the model knows its weights were bf16.
    let model = Model::load(out.path()).unwrap();
    assert_eq!(model.weight_dtype(), DType::BF16);
    assert_eq!(Tolerance::for_model(&model), bf16);
}

#[test]
fn f16_weights_get_their_own_widened_default() {
    let out = convert_to("f16");
    let (code, r) = verify_json(out.path(), &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["tolerance_basis"]["weights"], "F16");
    assert_eq!(
        r["tolerance"]["rtol"],
        Tolerance::for_weights(DType::F16).rtol
    );
}

#[test]
fn explicit_atol_and_rtol_win_over_the_widened_default() {
    let out = convert_to("bf16");
    // Given: the f32 defaults, explicitly; bf16 rounding is beyond them (exit 3).
    let (code, r) = verify_json(out.path(), &["--atol", "1e-5", "--rtol", "1e-4"]);
    assert_eq!(code, Some(3), "{r}");
    assert_eq!(r["passed"], false);
    assert_eq!(r["tolerance_basis"]["kind"], "given");
    assert_eq!(r["tolerance"]["atol"], 1e-5);
    // One part given: the other is the plain default, as before (no silent widening).
    let (code, r) = verify_json(out.path(), &["--atol", "1e-5"]);
    assert_eq!(code, Some(3), "{r}");
    assert_eq!(r["tolerance"]["rtol"], vit_convert::verify::DEFAULT_RTOL);
    // A loose one given passes, and is reported as given.
    let (code, r) = verify_json(out.path(), &["--atol", "0.1"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["tolerance_basis"]["kind"], "given");
    // The library: Some(tolerance) is used as is.
    let model = Model::load(out.path()).unwrap();
    let input = F32Array::read_npy(conv("timm_vit/io/input.npy")).unwrap();
    let expected = F32Array::read_npy(conv("timm_vit/io/logits_timm.npy")).unwrap();
    let strict = verify_model(
        &model,
        &input,
        &expected,
        &Default::default(),
        Some(Tolerance::default()),
    )
    .unwrap();
    assert!(!strict.passed);
    assert_eq!(strict.tolerance_basis, ToleranceBasis::Given);
    let default = verify_model(&model, &input, &expected, &Default::default(), None).unwrap();
    assert!(default.passed);
}

#[test]
fn diff_sources_compares_checkpoints_in_memory_as_diff_does_files() {
    let opts = DiffOptions {
        a: ReadAs::family("timm".parse().unwrap()),
        b: ReadAs::family("jax".parse().unwrap()),
        ..Default::default()
    };
    let (a, b) = ("timm_vit/source.pth", "jax_vit/source.npz");
    let mem = diff_sources(in_memory(a).as_ref(), in_memory(b).as_ref(), &opts).unwrap();
    let files = diff(conv(a), conv(b), &opts).unwrap();
    assert!(mem.identical && files.identical);
    assert_eq!(mem.common, files.common);
    assert!(mem.a.file.is_none() && files.a.file.is_some());
}
