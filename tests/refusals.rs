//! Refusals name the feature, never a symptom (`fixtures/refusals/`, real timm checkpoints made by
//! `fixtures/generate_refusals.py`); `--drop head` converts a backbone and says what it dropped.

mod common;

use serde_json::Value;
use vit_convert::mapping::MappingError;
use vit_convert::{convert, ConvertOptions, ErrorKind};

#[test]
fn every_refusal_names_the_feature() {
    let dir = common::fixture_dir("refusals");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(!cases.is_empty());
    for case in &cases {
        let file = case["file"].as_str().unwrap();
        let want = case["feature"].as_str().unwrap();
        for from in [case["family"].as_str().unwrap(), "auto"] {
            let out = tempfile::tempdir().unwrap();
            let opts = ConvertOptions {
                from: (from != "auto").then(|| from.parse().unwrap()),
                ..Default::default()
            };
            let e = convert(dir.join(file), out.path(), &opts).unwrap_err();
            let feature = match e.kind() {
                ErrorKind::Mapping {
                    problem:
                        MappingError::Rejected { feature, .. } | MappingError::Absent { feature, .. },
                    ..
                } => feature.clone(),
                other => panic!("{file} --from {from}: {other:?}"),
            };
            assert!(feature.starts_with(want), "{file}: {feature}");
            assert!(!e.to_string().contains("required source tensor"), "{e}");
            assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        }
    }
}

#[test]
fn drop_head_converts_the_backbone_and_lists_what_it_dropped() {
    for (case, dropped) in [
        ("beit_timm", vec!["classifier.bias", "classifier.weight"]),
        (
            "beit_unilm_pt",
            vec![
                "layernorm.bias",
                "layernorm.weight",
                "lm_head.bias",
                "lm_head.weight",
            ],
        ),
    ] {
        let src = common::fixture_dir("convert").join(case).join("source.pth");
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions {
            drop_head: true,
            ..Default::default()
        };
        let r = convert(&src, out.path(), &opts).unwrap();
        assert_eq!(r.architecture.name(), "BeitModel");
        let names: Vec<&str> = r.dropped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, dropped, "{case}");
        assert!(r.dropped.iter().all(|(_, why)| why.contains("drop_head")));
        let written = common::tensors(&out.path().join("model.safetensors"));
        assert!(written
            .keys()
            .all(|k| !k.starts_with("classifier") && !k.starts_with("lm_head")));
    }
    // The backbone of a pre-training checkpoint has no pooler: the report says how to load it,
    // and the model runs (its last hidden state is the pre-training model's).
    let d = common::fixture_dir("convert").join("beit_unilm_pt");
    let out = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        drop_head: true,
        ..Default::default()
    };
    let r = convert(d.join("source.pth"), out.path(), &opts).unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("add_pooling_layer=False")),
        "{:?}",
        r.notes
    );
    let model = vit_convert::Model::load(out.path()).unwrap();
    let x = vit_convert::F32Array::read_npy(d.join("io/input.npy")).unwrap();
    let want = vit_convert::F32Array::read_npy(d.join("io/last_hidden_state_hf.npy")).unwrap();
    let rep = vit_convert::verify_model(&model, &x, &want, &Default::default(), None).unwrap();
    assert!(rep.passed, "{}", rep.max_abs_error);
}

#[test]
fn cli_drop_accepts_head_only() {
    let src = common::fixture_dir("convert").join("beit_timm/source.pth");
    let out = tempfile::tempdir().unwrap();
    let run = common::run_cli(&[
        src.as_os_str(),
        "--drop".as_ref(),
        "heads".as_ref(),
        "-o".as_ref(),
        out.path().as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    let run = common::run_cli(&[
        src.as_os_str(),
        "--drop".as_ref(),
        "head".as_ref(),
        "-o".as_ref(),
        out.path().as_os_str(),
    ]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("dropped classifier.weight"));
}
