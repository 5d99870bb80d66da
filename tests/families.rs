//! DINOv2 (± registers, SwiGLU, classifier), CLIP and SigLIP image towers against ground truth
//! from timm, the dinov2 hub layout, OpenAI CLIP, big_vision and transformers
//! (`fixtures/convert/families_cases.json`, made by `fixtures/generate_vlm.py`): every source
//! converts (detected) to exactly the tensors transformers saved, with its config; the forward
//! pass matches every output transformers recorded (`last_hidden_state`, `pooler_output`,
//! `logits`, `image_embeds`), at other input sizes too (DINOv2 always resamples its positions,
//! with registers antialiased; CLIP and SigLIP with `interpolate_pos_encoding`).

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use vit_convert::forward::{ForwardOptions, Output};
use vit_convert::verify::F32Array;
use vit_convert::{convert, verify_model, ConfigOverrides, ConvertOptions, ErrorKind, Model};

use common::tensors;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(common::fixture("convert", "families_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn dir(case: &Value) -> PathBuf {
    common::fixture_dir("convert").join(case["dir"].as_str().unwrap())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `config.json` fields left out of the comparison: what only initialises or trains a model
/// (the lambdas' init value, dropout rates, init ranges), version stamps and backbone bookkeeping.
const NOT_COMPARED: &[&str] = &[
    "transformers_version",
    "dtype",
    "torch_dtype",
    "layerscale_value",
    "drop_path_rate",
    "initializer_range",
    "initializer_factor",
    "out_features",
    "out_indices",
    "stage_names",
    "id2label",
    "label2id",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "apply_layernorm",
    "reshape_hidden_states",
];

/// The activation a case's command line sets (`"cli": ["--hidden-act", "gelu"]`).
fn hidden_act(case: &Value) -> Option<vit_convert::model::Activation> {
    let cli = case["cli"].as_array()?;
    let at = cli.iter().position(|v| v == "--hidden-act")?;
    cli.get(at + 1)?.as_str()?.parse().ok()
}

#[test]
fn every_source_converts_to_the_tensors_and_config_transformers_saved() {
    let mut checked = 0;
    for case in cases() {
        let d = dir(&case);
        let expected_dir = d.join(case["expected_dir"].as_str().unwrap());
        let expected = tensors(&expected_dir.join("model.safetensors"));
        let want = read_json(&expected_dir.join("config.json"));
        let family = case["family"].as_str().unwrap();
        let heads = case["config"]["num_attention_heads"].as_u64().unwrap() as usize;
        for source in case["sources"].as_array().unwrap() {
            let input = d.join(source["file"].as_str().unwrap());
            for f in [family, "auto"] {
                let out = tempfile::tempdir().unwrap();
                let opts = ConvertOptions {
                    from: (f != "auto").then(|| f.parse().unwrap()),
                    // tiny test models: 24 wide, 2 heads (real ones are hidden/64)
                    overrides: ConfigOverrides {
                        num_heads: Some(heads),
                        hidden_act: hidden_act(&case),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let r = convert(&input, out.path(), &opts)
                    .unwrap_or_else(|e| panic!("{} --from {f}: {e}", input.display()));
                assert_eq!(r.mapping.table, family);
                assert_eq!(
                    r.architecture.name(),
                    case["architecture"].as_str().unwrap()
                );
                let got = tensors(&out.path().join("model.safetensors"));
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    expected.keys().collect::<Vec<_>>(),
                    "{}",
                    input.display()
                );
                assert!(got == expected, "{}: tensor values differ", input.display());
                let cfg = read_json(&out.path().join("config.json"));
                for (k, v) in want.as_object().unwrap() {
                    if !NOT_COMPARED.contains(&k.as_str()) {
                        assert_eq!(&cfg[k], v, "{} --from {f}: {k}", input.display());
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "{checked}");
}

#[test]
fn the_forward_pass_matches_transformers_for_every_output_and_size() {
    let mut compared = 0;
    for case in cases() {
        let d = dir(&case);
        let model = Model::load(d.join(case["expected_dir"].as_str().unwrap())).unwrap();
        for (name, io) in case["io"].as_object().unwrap() {
            let input = F32Array::read_npy(d.join(io["input"].as_str().unwrap())).unwrap();
            for (key, file) in io["outputs"].as_object().unwrap() {
                let expected = F32Array::read_npy(d.join(file.as_str().unwrap())).unwrap();
                let which: Output = match key.as_str() {
                    "pooler_output" => Output::Pooler,
                    k => k.parse().unwrap(),
                };
                // DINOv2 runs any size, flag or not, as transformers does; CLIP and SigLIP
                // other sizes with the flag only.
                let flags: &[bool] = if case["family"] == "dinov2" {
                    &[false, true]
                } else {
                    &[io["interpolate"].as_bool().unwrap_or(false)]
                };
                for &interpolate in flags {
                    let opts = ForwardOptions {
                        interpolate_pos_encoding: interpolate,
                        compare: Some(which),
                        ..Default::default()
                    };
                    let r = verify_model(&model, &input, &expected, &opts, None).unwrap();
                    assert!(
                        r.passed,
                        "{} {name} {key}: max |Δ| {}",
                        case["case"], r.max_abs_error
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 120, "{compared}");
}

/// timm's SigLIP layout is detected as `siglip` (not `dino`, whose detection it also fits) and
/// converts to the same file as the big_vision `.npz` of the same weights: its MAP head's `q` and
/// `kv` projections join into `in_proj_*` with k and v rows in place.
#[test]
fn timm_siglip_is_detected_and_converts_like_big_vision() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = common::fixture_dir("convert").join("siglip");
    let opts = ConvertOptions {
        overrides: ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let timm = convert(d.join("source.pth"), a.path(), &opts).unwrap();
    convert(d.join("big_vision.npz"), b.path(), &opts).unwrap();
    assert_eq!(timm.mapping.table, "siglip");
    assert_eq!(
        tensors(&a.path().join("model.safetensors")),
        tensors(&b.path().join("model.safetensors"))
    );
}

#[test]
fn a_clip_projection_bias_that_is_not_zero_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let e = convert(
        common::fixture_dir("convert").join("clip_timm/head_bias.pth"),
        out.path(),
        &ConvertOptions {
            overrides: ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap_err();
    match e.kind() {
        ErrorKind::Mapping {
            problem: vit_convert::mapping::MappingError::BufferNotZero { tensor, .. },
            ..
        } => assert_eq!(tensor, "head.bias"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn a_whole_clip_checkpoint_converts_its_image_tower_and_says_what_it_left() {
    let out = tempfile::tempdir().unwrap();
    let r = convert(
        common::fixture_dir("convert").join("clip_openai/full.pth"),
        out.path(),
        &ConvertOptions {
            overrides: ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.architecture.name(), "CLIPVisionModelWithProjection");
    assert_eq!(r.mapping.ignored.len(), 18, "{:?}", r.mapping.ignored);
    assert!(r.mapping.ignored.iter().any(|n| n == "text_projection"));
}

#[test]
fn timm_quirks_are_undone_and_reported() {
    let out = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        overrides: ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let d = common::fixture_dir("convert");
    let r = convert(d.join("dinov2_reg/timm.pth"), out.path(), &opts).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("no class row")),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes.iter().any(|n| n.contains("mask_token: zeros")),
        "{:?}",
        r.notes
    );
    let out = tempfile::tempdir().unwrap();
    let r = convert(d.join("dinov2_giant/timm.pth"), out.path(), &opts).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("SwiGLU packed")),
        "{:?}",
        r.notes
    );
}

#[test]
fn dinov2_outside_safetensors_is_refused_naming_why() {
    use vit_convert::conversion::OutputFormat;
    let d = common::fixture_dir("convert").join("dinov2_small");
    for to in [OutputFormat::Timm, OutputFormat::Npz, OutputFormat::Flax] {
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions {
            to,
            overrides: ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = convert(d.join("hub.pth"), out.path(), &opts).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidOption { reason } if reason.to_lowercase().contains("dinov2")),
            "{to:?}: {e}"
        );
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }
}
