//! BEiT against ground truth from timm and transformers (`fixtures/convert/beit_cases.json`,
//! made by `fixtures/generate_beit.py`): every source — timm `beit`/`beitv2` state dicts, the
//! microsoft/unilm pre-training, fine-tuned (384 px) and backbone checkpoints, HF checkpoints —
//! converts (detected, with no head count given) to exactly the tensors transformers saved, with
//! its config; the forward pass matches transformers' outputs (logits, pooler, last hidden state,
//! at other input sizes too); `--to timm` round trips bit for bit; a tampered buffer is refused.

mod common;

use serde_json::Value;
use vit_convert::conversion::OutputFormat;
use vit_convert::forward::Output;
use vit_convert::mapping::MappingError;
use vit_convert::verify::F32Array;
use vit_convert::{convert, ConvertOptions, ErrorKind, Model};

use cases::{dir, read_json};
use common::{cases, tensors};

fn cases() -> Vec<Value> {
    cases::load("beit_cases.json")
}

fn from(family: &str) -> ConvertOptions {
    ConvertOptions {
        from: (family != "auto").then(|| family.parse().unwrap()),
        ..Default::default()
    }
}

/// The `config.json` fields a BEiT conversion must get right (the rest are BeitConfig defaults
/// for training settings the weights do not record).
const FIELDS: &[&str] = &[
    "architectures",
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "image_size",
    "num_channels",
    "layer_norm_eps",
    "hidden_act",
    "use_absolute_position_embeddings",
    "use_relative_position_bias",
    "use_shared_relative_position_bias",
    "use_mean_pooling",
    "use_mask_token",
    "vocab_size",
];

#[test]
fn every_source_converts_to_the_tensors_and_config_transformers_saved() {
    let checked = cases::convert_every_source(
        &cases(),
        |_, family| from(family),
        |cfg, want, label| {
            for k in FIELDS {
                assert_eq!(cfg[k], want[k], "{label}: {k}");
            }
            assert!(cfg["layer_scale_init_value"].as_f64().unwrap() > 0.0);
            assert_eq!(
                cfg["id2label"].as_object().map(|m| m.len()),
                want["id2label"].as_object().map(|m| m.len())
            );
        },
    );
    assert!(checked >= 16, "{checked}");
}

#[test]
fn the_preprocessor_is_what_the_hf_conversion_script_writes() {
    let case = &cases()[0];
    let d = dir(case);
    let out = tempfile::tempdir().unwrap();
    convert(d.join("source.pth"), out.path(), &from("auto")).unwrap();
    let got = read_json(&out.path().join("preprocessor_config.json"));
    let want = read_json(&d.join("hf/preprocessor_config.json"));
    assert_eq!(got, want);
}

/// Runs every io entry of a case's expected checkpoint and compares every output transformers
/// recorded, through `verify_model` with the default strict tolerance.
#[test]
fn the_forward_pass_matches_transformers_for_every_output_and_size() {
    let models: Vec<Value> = cases()
        .into_iter()
        .filter(|c| c["family"] != "hf")
        .collect();
    // transformers runs BEiT at any size; so does the reference pass, flag or not.
    let compared = cases::forward_matches_every_output(&models, |_, _| vec![false, true]);
    assert!(compared >= 80, "{compared}");
}

#[test]
fn the_mim_head_gives_token_logits_and_headless_models_refuse_logits() {
    let d = common::fixture_dir("convert").join("beit_unilm_pt");
    let model = Model::load(d.join("hf")).unwrap();
    let x = F32Array::read_npy(d.join("io/input.npy")).unwrap();
    let out = model
        .forward(x.as_nchw().unwrap(), &Default::default())
        .unwrap();
    let (which, shape, _) = out.select(None).unwrap();
    assert_eq!(which, Output::Logits);
    assert_eq!(shape, [x.shape[0], 16, 40]);
    let e = out.select(Some(Output::Pooler)).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::InvalidOption { reason } if reason.contains("no pooler")),
        "{e}"
    );

    let d = common::fixture_dir("convert").join("beit_unilm_backbone");
    let model = Model::load(d.join("hf")).unwrap();
    let out = model
        .forward(x.as_nchw().unwrap(), &Default::default())
        .unwrap();
    assert_eq!(out.select(None).unwrap().0, Output::LastHiddenState);
    let e = out.select(Some(Output::Logits)).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }), "{e}");
    let e = out.select(Some(Output::ImageEmbeds)).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }), "{e}");
}

#[test]
fn to_timm_round_trips_bit_for_bit() {
    for case in cases().iter().filter(|c| c["family"] == "beit") {
        let d = dir(case);
        let source = d.join(case["sources"][0]["file"].as_str().unwrap());
        let canon = tempfile::tempdir().unwrap();
        convert(&source, canon.path(), &from("beit")).unwrap();
        let timm = tempfile::tempdir().unwrap();
        let opts = ConvertOptions {
            to: OutputFormat::Timm,
            ..from("beit")
        };
        convert(&source, timm.path(), &opts).unwrap();
        // timm's layout: the source's names and values, without unilm's index buffers (timm
        // computes them) and without the `model` wrapper.
        let written = tensors(&timm.path().join("model.safetensors"));
        assert!(written
            .keys()
            .all(|k| !k.contains("relative_position_index")));
        assert!(written.contains_key("blocks.0.attn.q_bias"));
        assert!(!written.keys().any(|k| k.contains("k_bias")));
        let back = tempfile::tempdir().unwrap();
        convert(
            timm.path().join("model.safetensors"),
            back.path(),
            &from("auto"),
        )
        .unwrap();
        assert!(
            tensors(&back.path().join("model.safetensors"))
                == tensors(&canon.path().join("model.safetensors")),
            "{}",
            case["case"]
        );
    }
}

#[test]
fn a_buffer_that_disagrees_with_the_geometry_is_refused_naming_it() {
    for (case, tensor) in [
        (
            "beit_unilm_ft384",
            "model/blocks.1.attn.relative_position_index",
        ),
        (
            "beit_unilm_pt",
            "model/rel_pos_bias.relative_position_index",
        ),
    ] {
        let input = common::fixture_dir("convert")
            .join(case)
            .join("bad_index.pth");
        let out = tempfile::tempdir().unwrap();
        let e = convert(&input, out.path(), &from("auto")).unwrap_err();
        match e.kind() {
            ErrorKind::Mapping {
                table,
                problem: MappingError::BufferMismatch { tensor: t, .. },
                ..
            } => {
                assert_eq!(table, "beit");
                assert_eq!(t, tensor);
            }
            other => panic!("{case}: {other:?}"),
        }
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }
}

#[test]
fn beit_refuses_layouts_its_target_cannot_hold() {
    let d = common::fixture_dir("convert").join("beit_timm");
    for to in [OutputFormat::Npz, OutputFormat::Flax] {
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions { to, ..from("beit") };
        let e = convert(d.join("source.pth"), out.path(), &opts).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidOption { reason } if reason.to_lowercase().contains("beit")),
            "{e}"
        );
    }
    // timm's ViT table names the feature when forced onto a BEiT checkpoint.
    let out = tempfile::tempdir().unwrap();
    let e = convert(d.join("source.pth"), out.path(), &from("timm")).unwrap_err();
    match e.kind() {
        ErrorKind::Mapping {
            problem: MappingError::Rejected { feature, .. },
            ..
        } => assert!(feature.contains("--from beit"), "{feature}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cli_verify_names_what_it_compared() {
    let d = common::fixture_dir("convert").join("beit_timm");
    let out = common::run_cli(&[
        "verify".as_ref(),
        d.join("hf").as_os_str(),
        "--input".as_ref(),
        d.join("io/batch5.npy").as_os_str(),
        "--expected".as_ref(),
        d.join("io/pooler_output_batch5_hf.npy").as_os_str(),
        "--compare".as_ref(),
        "pooler".as_ref(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("PASS (pooler [5, 24])"), "{text}");
    let out = common::run_cli(&[
        "verify".as_ref(),
        d.join("hf").as_os_str(),
        "--input".as_ref(),
        d.join("io/batch5.npy").as_os_str(),
        "--expected".as_ref(),
        d.join("io/pooler_output_batch5_hf.npy").as_os_str(),
        "--compare".as_ref(),
        "pooled".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
