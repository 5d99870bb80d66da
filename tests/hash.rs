//! `hash` and `diff`: what is hashed (stored vs canonical), digests across containers and
//! layouts, and how differences are reported — through the library and the CLI.

mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vit_convert::ConfigOverrides;
use vit_convert::{
    conversion::OutputFormat, diff::DiffOptions, hash::ReadAs, source::MemorySource,
    tensor::Tensor, write::WriteItem, ConvertOptions, DType, TensorSource, Tolerance,
};

fn conv(rel: &str) -> PathBuf {
    common::fixture("convert", rel)
}

/// The canonical digest of `path` read `--from from` (a family or `auto`).
fn digest(path: &Path, from: &str) -> String {
    let how = match from {
        "auto" => ReadAs::auto(),
        family => ReadAs::family(family.parse().unwrap()),
    };
    vit_convert::hash::hash(path, &how)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .digest
}

fn write_all(src: &MemorySource, path: &Path) {
    let items = WriteItem::all(src);
    vit_convert::write::write_safetensors(path, src, &items, None, &BTreeMap::new()).unwrap();
}

#[test]
fn stored_tensor_hashes_match_the_numpy_side_for_every_reader_fixture() {
    // fixtures/readers/expected.json holds, per tensor, the sha256 numpy computed of
    // np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<")).tobytes().
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in common::load_expected("readers").files {
        let common::Expectation::Listing { tensors, .. } = f.expectation() else {
            continue;
        };
        let path = common::fixture("readers", &f.file);
        let r = match vit_convert::hash::hash(&path, &ReadAs::stored()) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", f.file));
                continue;
            }
        };
        let got: BTreeMap<&str, &str> = r
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.sha256.as_str()))
            .collect();
        for want in tensors {
            checked += 1;
            if got.get(want.name.as_str()) != Some(&want.sha256.as_str()) {
                failures.push(format!("{}: {} sha256 differs", f.file, want.name));
            }
        }
        let mut sorted = r.tensors.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        if sorted != r.tensors {
            failures.push(format!("{}: tensors not sorted by name", f.file));
        }
    }
    common::assert_no_failures("stored hashes", &failures);
    assert!(checked > 100, "{checked}");
}

#[test]
fn same_weights_in_any_container_or_layout_have_one_canonical_digest() {
    let want = digest(&conv("timm_vit/hf/model.safetensors"), "hf");
    for (file, from) in [
        ("timm_vit/source.pth", "timm"),
        ("timm_vit/legacy.pth", "timm"),
        ("timm_vit/wrapped_model.pth", "timm"),
        ("timm_vit/wrapped_state_dict_module.pth", "timm"),
        ("timm_vit/wrapped_ema.pth", "timm"),
        ("timm_vit/compiled.pth", "timm"),
        ("timm_vit/source.pth", "auto"),
        ("jax_vit/source.npz", "jax"),
        ("jax_vit/source.npz", "auto"),
    ] {
        assert_eq!(digest(&conv(file), from), want, "{file} --from {from}");
    }
    // big_vision: root position embeddings gain an exact zero class row, in the hash as in
    // the conversion.
    let bv = digest(&conv("big_vision_vit/hf/model.safetensors"), "hf");
    for file in [
        "big_vision_vit/source.npz",
        "big_vision_vit/params_prefixed.npz",
    ] {
        assert_eq!(digest(&conv(file), "big_vision"), bv, "{file}");
    }
    // HF Flax: the msgpack, its Flax-layout safetensors twin and transformers' own PyTorch
    // conversion of it (`from_flax=True`) are one model.
    let flax = |rel: &str| common::fixture("flax", rel);
    let pt = digest(&flax("vit_cls/pt/model.safetensors"), "hf");
    for (file, from) in [
        ("vit_cls/flax_model.msgpack", "flax"),
        ("vit_cls/flax_model.msgpack", "auto"),
        ("vit_cls_safetensors/model.safetensors", "flax"),
    ] {
        assert_eq!(digest(&flax(file), from), pt, "{file} --from {from}");
    }
    assert_ne!(pt, want);
    // Stored names differ between containers, so stored digests do too …
    let stored = vit_convert::hash::hash(conv("timm_vit/source.pth"), &ReadAs::stored()).unwrap();
    assert_ne!(stored.digest, want);
    // … but the legacy and zip containers store the same names and bytes.
    let legacy = vit_convert::hash::hash(conv("timm_vit/legacy.pth"), &ReadAs::stored()).unwrap();
    assert_eq!(stored.digest, legacy.digest);
}

#[test]
fn converted_outputs_hash_like_their_source_in_every_output_layout() {
    let src = conv("timm_vit/source.pth");
    let want = digest(&src, "timm");
    let dir = tempfile::tempdir().unwrap();
    for (to, file, from) in [
        (OutputFormat::Safetensors, "model.safetensors", "hf"),
        (OutputFormat::Timm, "model.safetensors", "timm"),
        (OutputFormat::Npz, "model.npz", "jax"),
    ] {
        let out = dir.path().join(format!("{to:?}"));
        let opts = ConvertOptions {
            from: Some("timm".parse().unwrap()),
            to,
            overrides: ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        vit_convert::convert(&src, &out, &opts).unwrap();
        assert_eq!(digest(&out.join(file), from), want, "--to {to:?}");
    }
}

#[test]
fn dino_branches_and_dropped_heads_hash_as_conversion_writes_them() {
    let full = conv("dino_backbone/full_checkpoint.pth");
    let student = ReadAs {
        branch: Some("student".parse().unwrap()),
        ..ReadAs::family("dino".parse().unwrap())
    };
    let r = vit_convert::hash::hash(&full, &student).unwrap();
    assert_eq!(r.reading.selected.as_deref(), Some("student"));
    assert_eq!(
        r.digest,
        digest(&conv("dino_backbone/hf_student/model.safetensors"), "hf")
    );
    assert_eq!(
        digest(&full, "dino"),
        digest(&conv("dino_backbone/hf/model.safetensors"), "hf"),
        "teacher by default"
    );

    // A JAX head after a pre-logits layer is dropped by conversion, and so by hash.
    let with_head = vit_convert::hash::hash(
        conv("jax_vit_prelogits/with_head.npz"),
        &ReadAs::family("jax".parse().unwrap()),
    )
    .unwrap();
    assert!(with_head
        .reading
        .dropped
        .iter()
        .any(|(n, _)| n == "classifier.weight"));
    assert_eq!(
        with_head.digest,
        digest(&conv("jax_vit_prelogits/hf/model.safetensors"), "hf")
    );
}

#[test]
fn a_custom_table_and_its_family_read_alike() {
    let path = conv("timm_vit/source.pth");
    let table = vit_convert::MappingTable::from_file("mappings/timm.toml").unwrap();
    let custom = vit_convert::hash::hash(&path, &ReadAs::table(table)).unwrap();
    assert_eq!(custom.reading.table.as_deref(), Some("timm"));
    assert_eq!(custom.digest, digest(&path, "timm"));
    let auto = vit_convert::hash::hash(&path, &ReadAs::auto()).unwrap();
    assert_eq!(auto.digest, custom.digest);
    assert!(!ReadAs::stored().is_canonical() && ReadAs::auto().is_canonical());
}

#[test]
fn digest_is_the_sha256_of_the_printed_manifest() {
    let path = conv("deit_distilled/source.pth");
    let out = common::run_cli(&["hash", path.to_str().unwrap(), "--from", "deit"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let (manifest, last) = text.trim_end().rsplit_once('\n').unwrap();
    let manifest = format!("{manifest}\n");
    let r = vit_convert::hash::hash(&path, &ReadAs::family("deit".parse().unwrap())).unwrap();
    assert_eq!(manifest, r.manifest());
    assert_eq!(common::sha256_hex(manifest.as_bytes()), r.digest);
    assert_eq!(
        last,
        format!("{} model ({} tensors)", r.digest, r.tensors.len())
    );
    assert!(manifest
        .lines()
        .any(|l| l.ends_with(" F32 [1,1,24] embeddings.distillation_token")));

    let json = common::run_cli(&["hash", path.to_str().unwrap(), "--from", "deit", "--json"]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["digest"], r.digest.as_str());
    assert_eq!(v["table"], "deit");
    assert_eq!(v["format"], "torch_zip");
    assert_eq!(v["tensors"][0]["name"], r.tensors[0].name.as_str());
}

/// The HF fixture with `edit` applied to a copy of its tensors.
fn edited(dir: &Path, edit: impl FnOnce(&mut MemorySource)) -> PathBuf {
    let src = vit_convert::open(conv("timm_vit/hf/model.safetensors")).unwrap();
    let mut mem = MemorySource::copy_from(src.as_ref()).unwrap();
    edit(&mut mem);
    let path = dir.join("edited.safetensors");
    write_all(&mem, &path);
    path
}

fn f32_tensor(values: &[f32], shape: Vec<usize>) -> Tensor<'static> {
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(DType::F32, shape, Cow::Owned(data)).unwrap()
}

#[test]
fn diff_reports_value_changes_missing_extra_and_shape_changes() {
    let dir = tempfile::tempdir().unwrap();
    let a = conv("timm_vit/hf/model.safetensors");
    let b = edited(dir.path(), |mem| {
        let mut rebuilt = MemorySource::new();
        for info in mem.tensors() {
            let t = mem.read(&info.name).unwrap();
            match info.name.as_str() {
                "vit.layernorm.bias" => {
                    let mut v: Vec<f32> = t
                        .data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    v[3] += 0.25;
                    rebuilt
                        .insert(&info.name, f32_tensor(&v, t.shape.clone()))
                        .unwrap();
                }
                "classifier.bias" => {}
                "vit.layernorm.weight" => {
                    let mut t = t.into_owned();
                    t.shape = vec![2, 12];
                    rebuilt.insert(&info.name, t).unwrap();
                }
                _ => rebuilt.insert(&info.name, t).unwrap(),
            }
        }
        rebuilt
            .insert("extra.scale", f32_tensor(&[1.0], vec![1]))
            .unwrap();
        *mem = rebuilt;
    });
    let r = vit_convert::diff::diff(&a, &b, &DiffOptions::default()).unwrap();
    assert!(!r.identical && !r.equivalent);
    assert_eq!(r.only_in_a, ["classifier.bias"]);
    assert_eq!(r.only_in_b, ["extra.scale"]);
    assert_eq!(r.common, 39);
    assert_eq!(r.identical_tensors, 37);
    let names: Vec<&str> = r.changed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["vit.layernorm.bias", "vit.layernorm.weight"]);
    let bias = &r.changed[0];
    assert!((bias.max_abs.unwrap() - 0.25).abs() < 1e-6, "{bias:?}");
    assert!(bias.max_rel.unwrap() > 0.0);
    let weight = &r.changed[1];
    assert_eq!(
        (weight.shape_a.clone(), weight.shape_b.clone()),
        (vec![24], vec![2, 12])
    );
    assert_eq!(weight.max_abs, None);

    let out = common::run_cli(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("only in A: classifier.bias"), "{text}");
    assert!(text.contains("only in B: extra.scale"), "{text}");
    assert!(
        text.contains("changed: vit.layernorm.bias  max |Δ| 2.500e-1"),
        "{text}"
    );
    assert!(text.contains("shape [24] → [2, 12]"), "{text}");
    assert!(text.trim_end().ends_with(": differ"), "{text}");
}

#[test]
fn diff_of_a_pth_and_its_conversion_is_identical_read_canonically() {
    let pth = conv("deit_distilled/source.pth");
    let hf = conv("deit_distilled/hf/model.safetensors");
    let out = common::run_cli(&[
        "diff",
        pth.to_str().unwrap(),
        hf.to_str().unwrap(),
        "--from",
        "auto",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identical"], true);
    assert_eq!(v["a"]["table"], "deit");
    assert_eq!(v["b"]["table"], "hf");

    // As stored the names differ entirely: exit 3, with a hint.
    let out = common::run_cli(&["diff", pth.to_str().unwrap(), hf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hint: no names in common"));
}

#[test]
fn diff_with_a_tolerance_accepts_a_dtype_conversion_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = dir.path().join("f16");
    let opts = ConvertOptions {
        from: Some("hf".parse().unwrap()),
        dtype: Some(DType::F16),
        ..Default::default()
    };
    vit_convert::convert(conv("timm_vit/hf/model.safetensors"), &f16, &opts).unwrap();
    let a = conv("timm_vit/hf/model.safetensors");
    let b = f16.join("model.safetensors");

    let strict = vit_convert::diff::diff(&a, &b, &DiffOptions::default()).unwrap();
    assert!(!strict.equivalent);
    assert!(strict
        .changed
        .iter()
        .all(|c| c.dtype_a == DType::F32 && c.dtype_b == DType::F16));
    let worst = strict
        .changed
        .iter()
        .filter_map(|c| c.max_rel)
        .fold(0f64, f64::max);
    assert!(worst > 0.0 && worst < 1e-3, "{worst}");

    let loose = DiffOptions {
        tolerance: Some(Tolerance {
            atol: 1e-3,
            rtol: 0.0,
        }),
        ..Default::default()
    };
    let r = vit_convert::diff::diff(&a, &b, &loose).unwrap();
    assert!(r.equivalent && !r.identical);

    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert_eq!(common::run_cli(&["diff", a, b]).status.code(), Some(3));
    assert_eq!(
        common::run_cli(&["diff", a, b, "--atol", "1e-3"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        common::run_cli(&["diff", a, b, "--atol", "1e-9"])
            .status
            .code(),
        Some(3)
    );
}

#[test]
fn diff_reads_each_side_through_its_own_family() {
    let r = vit_convert::diff::diff(
        conv("jax_vit/source.npz"),
        conv("timm_vit/source.pth"),
        &DiffOptions {
            a: ReadAs::family("jax".parse().unwrap()),
            b: ReadAs::family("timm".parse().unwrap()),
            tolerance: None,
        },
    )
    .unwrap();
    assert!(r.identical, "{:?}", r.changed);
    let out = common::run_cli(&[
        "diff",
        conv("jax_vit/source.npz").to_str().unwrap(),
        conv("timm_vit/source.pth").to_str().unwrap(),
        "--from",
        "jax",
        "--from-b",
        "timm",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "--quiet prints nothing");
}
