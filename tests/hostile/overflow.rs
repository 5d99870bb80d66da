//! `--dtype` never damages values silently: a cast that turns finite values into ±Inf (f16 above
//! 65504, bf16 above 3.39e38, f32 from an f64 above 3.4e38) is refused with the tensor, the
//! count and the largest magnitude, leaving OUTDIR as it was; `--allow-overflow` accepts it and
//! the report says how many values saturated. Values already non-finite are not counted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vit_convert::tensor::cast_float;
use vit_convert::{
    source::MemorySource, tensor::Tensor, write::WriteItem, ConvertOptions, DType, ErrorKind,
};

use crate::bin;

const HF: &str = "fixtures/convert/timm_vit/hf";
const TARGET: &str = "vit.embeddings.cls_token";

/// The timm_vit HF checkpoint in `dtype`, with `vit.embeddings.cls_token` starting with
/// `values`; written to `dir/src/` with its config.json.
fn checkpoint(dir: &Path, dtype: DType, values: &[f64]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(HF);
    let src = vit_convert::open(root.join("model.safetensors")).unwrap();
    let mut out = MemorySource::new();
    for info in src.tensors() {
        let t = cast_float(src.read(&info.name).unwrap(), DType::F64);
        let t = if info.name == TARGET {
            let mut v: Vec<f64> = t
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            v[..values.len()].copy_from_slice(values);
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Tensor::new(DType::F64, t.shape.clone(), Cow::Owned(bytes)).unwrap()
        } else {
            t
        };
        out.insert(&info.name, cast_float(t, dtype)).unwrap();
    }
    let folder = dir.join("src");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(root.join("config.json"), folder.join("config.json")).unwrap();
    let path = folder.join("model.safetensors");
    vit_convert::write::write_safetensors(
        &path,
        &out,
        &WriteItem::all(&out),
        None,
        &BTreeMap::new(),
    )
    .unwrap();
    path
}

fn opts(dtype: DType, allow_overflow: bool) -> ConvertOptions {
    ConvertOptions {
        from: Some("hf".parse().unwrap()),
        dtype: Some(dtype),
        allow_overflow,
        ..Default::default()
    }
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn values_of(path: &Path, name: &str) -> Vec<f32> {
    let src = vit_convert::open(path).unwrap();
    let t = cast_float(src.read(name).unwrap(), DType::F32);
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn f16_overflow_is_refused_with_count_and_magnitude_and_outdir_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // 1e5 and -7e4 overflow f16; the Inf is the source's own and not counted; 60000 fits.
    let ckpt = checkpoint(dir.path(), DType::F32, &[1e5, -7e4, f64::INFINITY, 60000.0]);
    let out = dir.path().join("out");
    vit_convert::convert(&ckpt, &out, &opts(DType::F32, false)).unwrap();
    let before = snapshot(&out);

    let e = vit_convert::convert(&ckpt, &out, &opts(DType::F16, false)).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::CastOverflow { from: DType::F32, to: DType::F16, count: 2, max_abs, .. } if *max_abs == 1e5
        ),
        "{e}"
    );
    // Named as the canonical tensor the cast was applied to.
    assert_eq!(e.tensor(), Some("embeddings.cls_token"));
    assert_eq!(snapshot(&out), before, "a refused cast changed OUTDIR");

    let run = bin()
        .args(["--from", "hf", "--dtype", "f16"])
        .arg(&ckpt)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for part in [
        "error: ",
        "tensor embeddings.cls_token: casting F32 to F16 turns 2 finite values into Inf",
        "largest magnitude 1e5",
        "--allow-overflow",
    ] {
        assert!(stderr.contains(part), "{part:?} not in {stderr:?}");
    }
    assert_eq!(snapshot(&out), before, "a refused cast changed OUTDIR");
}

#[test]
fn allow_overflow_saturates_like_torch_half_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), DType::F32, &[1e5, -7e4, f64::INFINITY, 60000.0]);
    let out = dir.path().join("out");
    let report = vit_convert::convert(&ckpt, &out, &opts(DType::F16, true)).unwrap();
    let note = report
        .notes
        .iter()
        .find(|n| n.starts_with("option `allow_overflow`: "))
        .unwrap_or_else(|| panic!("{:?}", report.notes));
    assert!(
        note.contains(
            "2 finite values in 1 tensors became ±Inf casting to F16 (largest magnitude 1e5)"
        ),
        "{note}"
    );
    let got = values_of(&out.join("model.safetensors"), TARGET);
    assert_eq!(
        got[..4],
        [f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY, 60000.0]
    );

    let out2 = dir.path().join("out2");
    let run = bin()
        .args(["--from", "hf", "--dtype", "f16", "--allow-overflow"])
        .arg(&ckpt)
        .arg("-o")
        .arg(&out2)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("note: --allow-overflow: 2 finite values")),
        "{stdout}"
    );
}

#[test]
fn bf16_and_f64_to_f32_overflow_are_refused_in_every_output_layout() {
    let dir = tempfile::tempdir().unwrap();
    let f32_ckpt = checkpoint(dir.path(), DType::F32, &[f64::from(f32::MAX)]);
    for to in ["safetensors", "timm", "npz", "flax"] {
        let out = dir.path().join(format!("bf16-{to}"));
        let mut o = opts(DType::BF16, false);
        o.to = vit_convert::conversion::OutputFormat::parse(to).unwrap();
        let e = vit_convert::convert(&f32_ckpt, &out, &o).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::CastOverflow {
                    to: DType::BF16,
                    count: 1,
                    ..
                }
            ),
            "{to}: {e}"
        );
        assert!(!out.join("model.safetensors").exists() && !out.join("model.npz").exists());
    }
    let d64 = dir.path().join("f64");
    std::fs::create_dir_all(&d64).unwrap();
    let f64_ckpt = checkpoint(&d64, DType::F64, &[1e39, -2e39]);
    let e = vit_convert::convert(&f64_ckpt, d64.join("out"), &opts(DType::F32, false)).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::CastOverflow { from: DType::F64, to: DType::F32, count: 2, max_abs, .. } if *max_abs == 2e39),
        "{e}"
    );
}

#[test]
fn write_safetensors_refuses_an_overflowing_cast_too() {
    let mut src = MemorySource::new();
    let bytes: Vec<u8> = [1.0f32, 7e4].iter().flat_map(|v| v.to_le_bytes()).collect();
    src.insert(
        "w",
        Tensor::new(DType::F32, vec![2], Cow::Owned(bytes)).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.safetensors");
    let e = vit_convert::write::write_safetensors(
        &dest,
        &src,
        &WriteItem::all(&src),
        Some(DType::F16),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::CastOverflow { count: 1, .. }),
        "{e}"
    );
    assert!(!dest.exists());
}
