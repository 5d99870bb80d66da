//! DINOv2 (± registers, SwiGLU, classifier), CLIP and SigLIP image towers against ground truth
//! from timm, the dinov2 hub layout, OpenAI CLIP, big_vision and transformers
//! (`fixtures/convert/families_cases.json`, made by `fixtures/generate_vlm.py`): every source
//! converts (detected) to exactly the tensors transformers saved, with its config; the forward
//! pass matches every output transformers recorded (`last_hidden_state`, `pooler_output`,
//! `logits`, `image_embeds`), at other input sizes too (DINOv2 always resamples its positions,
//! with registers antialiased; CLIP and SigLIP with `interpolate_pos_encoding`).

mod common;

use serde_json::Value;
use vit_convert::{convert, ConfigOverrides, ConvertOptions, ErrorKind};

use cases::dir;
use common::{cases, tensors, two_heads};
use vit_convert::conversion::OutputFormat;
use vit_convert::source::MemorySource;

fn cases() -> Vec<Value> {
    cases::load("families_cases.json")
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
    let checked = cases::convert_every_source(
        &cases(),
        |case, family| ConvertOptions {
            from: (family != "auto").then(|| family.parse().unwrap()),
            ..heads_opts(case)
        },
        |cfg, want, label| {
            for (k, v) in want.as_object().unwrap() {
                if !NOT_COMPARED.contains(&k.as_str()) {
                    assert_eq!(&cfg[k], v, "{label}: {k}");
                }
            }
        },
    );
    assert!(checked >= 30, "{checked}");
}

#[test]
fn the_forward_pass_matches_transformers_for_every_output_and_size() {
    // DINOv2 runs any size, flag or not, as transformers does; CLIP and SigLIP other sizes with
    // the flag only.
    let compared = cases::forward_matches_every_output(&cases(), |case, io| {
        if case["family"] == "dinov2" {
            vec![false, true]
        } else {
            vec![io["interpolate"].as_bool().unwrap_or(false)]
        }
    });
    assert!(compared >= 120, "{compared}");
}

/// timm's SigLIP layout is detected as `siglip` (not `dino`, whose detection it also fits) and
/// converts to the same file as the big_vision `.npz` of the same weights: its MAP head's `q` and
/// `kv` projections join into `in_proj_*` with k and v rows in place.
#[test]
fn timm_siglip_is_detected_and_converts_like_big_vision() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = common::fixture_dir("convert").join("siglip");
    let opts = two_heads();
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
        &two_heads(),
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

/// A `zeros` buffer must be floating point: an integer one is refused by its dtype, even empty
/// (its values were once checked only element by element, so an empty one passed).
#[test]
fn a_clip_projection_bias_that_is_not_floating_point_is_refused() {
    let src =
        vit_convert::open(common::fixture_dir("convert").join("clip_timm/source.pth")).unwrap();
    let opts = two_heads();
    for n in [0usize, 3] {
        let mut edited = MemorySource::new();
        for t in src.tensors() {
            let tensor = if t.name == "head.bias" {
                vit_convert::tensor::Tensor::new(
                    vit_convert::DType::I64,
                    vec![n],
                    std::borrow::Cow::Owned(vec![0u8; 8 * n]),
                )
                .unwrap()
            } else {
                src.read(&t.name).unwrap()
            };
            edited.insert(&t.name, tensor).unwrap();
        }
        let Err(e) = vit_convert::Canonical::new(&edited, &opts) else {
            panic!("{n}: an integer head.bias converted");
        };
        match e.kind() {
            ErrorKind::Mapping {
                problem: vit_convert::mapping::MappingError::BufferNotFloat { tensor, dtype },
                ..
            } => assert_eq!(
                (tensor.as_str(), *dtype),
                ("head.bias", vit_convert::DType::I64)
            ),
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[test]
fn a_whole_clip_checkpoint_converts_its_image_tower_and_says_what_it_left() {
    let out = tempfile::tempdir().unwrap();
    let r = convert(
        common::fixture_dir("convert").join("clip_openai/full.pth"),
        out.path(),
        &two_heads(),
    )
    .unwrap();
    assert_eq!(r.architecture.name(), "CLIPVisionModelWithProjection");
    assert_eq!(r.mapping.ignored.len(), 18, "{:?}", r.mapping.ignored);
    assert!(r.mapping.ignored.iter().any(|n| n == "text_projection"));
}

#[test]
fn timm_quirks_are_undone_and_reported() {
    let out = tempfile::tempdir().unwrap();
    let opts = two_heads();
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

/// Options for a case: its head count (the tiny models are 24 wide, real ones hidden/64) and
/// the activation its command line sets.
fn heads_opts(case: &Value) -> ConvertOptions {
    ConvertOptions {
        overrides: ConfigOverrides {
            num_heads: Some(case["config"]["num_attention_heads"].as_u64().unwrap() as usize),
            hidden_act: hidden_act(case),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The output format that writes a case's source back in its own layout, if one does.
fn reverse_format(case: &Value, file: &str) -> Option<OutputFormat> {
    match (file, case["case"].as_str()) {
        ("big_vision.npz", _) => Some(OutputFormat::Npz),
        ("timm.pth", _) | (_, Some("clip_timm" | "siglip_timm")) => Some(OutputFormat::Timm),
        _ => None,
    }
}

/// timm (DINOv2 ± registers, the SwiGLU giant, CLIP, SigLIP) and big_vision SigLIP sources
/// written back in their own layout hold exactly the source's tensors (names and bytes; the
/// text tower of a two-tower npz aside), and read again they convert to the same HF tensors.
#[test]
fn reverse_layouts_round_trip_bit_for_bit() {
    let mut checked = Vec::new();
    for case in cases() {
        let d = dir(&case);
        for source in case["sources"].as_array().unwrap() {
            let file = source["file"].as_str().unwrap();
            let Some(to) = reverse_format(&case, file) else {
                continue;
            };
            let input = d.join(file);
            let canon = tempfile::tempdir().unwrap();
            convert(&input, canon.path(), &heads_opts(&case)).unwrap();
            let out = tempfile::tempdir().unwrap();
            let opts = ConvertOptions {
                to,
                ..heads_opts(&case)
            };
            let r = convert(&input, out.path(), &opts)
                .unwrap_or_else(|e| panic!("{}: {e}", case["case"]));
            let written = tensors(&r.outputs[0]);
            let mut want = tensors(&input);
            // A two-tower npz: only the image tower is written back.
            want.retain(|k, _| !k.starts_with("params/txt/") && k != "params/t" && k != "params/b");
            assert!(
                written == want,
                "{} via {to:?}: {:?} vs {:?}",
                case["case"],
                written.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            let back = tempfile::tempdir().unwrap();
            convert(&r.outputs[0], back.path(), &heads_opts(&case)).unwrap();
            assert!(
                tensors(&back.path().join("model.safetensors"))
                    == tensors(&canon.path().join("model.safetensors")),
                "{} back from {to:?}",
                case["case"]
            );
            checked.push(case["case"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(checked.len(), 8, "{checked:?}");
}

/// The hub layout written as timm's is timm's own checkpoint of the same model (the fixtures'
/// hub files are timm's renamed): the mask token timm lacks is dropped and said.
#[test]
fn dinov2_hub_checkpoints_write_timms_layout() {
    for case in ["dinov2_small", "dinov2_reg", "dinov2_giant"] {
        let d = common::fixture_dir("convert").join(case);
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions {
            to: OutputFormat::Timm,
            ..two_heads()
        };
        let r = convert(d.join("hub.pth"), out.path(), &opts).unwrap();
        assert!(
            tensors(&r.outputs[0]) == tensors(&d.join("timm.pth")),
            "{case}"
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("mask_token is not written")),
            "{case}: {:?}",
            r.notes
        );
    }
}

/// What timm's DINOv2 layout cannot hold is refused by name, and nothing is written: a
/// classifier on [class token, mean patch token], and a position row for the class token beside
/// registers. DINOv2, CLIP and BEiT have no npz layout; the new families no Flax one.
#[test]
fn what_a_reverse_layout_cannot_hold_is_refused_naming_why() {
    let d = common::fixture_dir("convert");
    let refused = |canon: &vit_convert::Canonical<'_>, to: OutputFormat, says: &str| {
        let out = tempfile::tempdir().unwrap();
        let e = canon
            .write(out.path(), &ConvertOptions { to, ..two_heads() })
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidOption { reason } if reason.to_lowercase().contains(&says.to_lowercase())),
            "{to:?}: {e}"
        );
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    };
    let src = vit_convert::open(d.join("dinov2_cls/hf/model.safetensors")).unwrap();
    let canon = vit_convert::Canonical::new(src.as_ref(), &two_heads()).unwrap();
    refused(&canon, OutputFormat::Timm, "class token alone");

    // A hub reg4 checkpoint whose class position row is not zero.
    let hub = vit_convert::open(d.join("dinov2_reg/hub.pth")).unwrap();
    let mut edited = MemorySource::new();
    for t in hub.tensors() {
        let mut tensor = hub.read(&t.name).unwrap();
        if t.name.ends_with("pos_embed") {
            tensor.data.to_mut()[..4].copy_from_slice(&1.0f32.to_le_bytes());
        }
        edited.insert(&t.name, tensor).unwrap();
    }
    let canon = vit_convert::Canonical::new(&edited, &two_heads()).unwrap();
    refused(&canon, OutputFormat::Timm, "class row is not zero");

    for (case, file, to, says) in [
        ("dinov2_small", "hub.pth", OutputFormat::Npz, "Dinov2"),
        ("dinov2_small", "hub.pth", OutputFormat::Flax, "Dinov2"),
        ("clip_timm", "source.pth", OutputFormat::Npz, "CLIP"),
        ("siglip", "source.pth", OutputFormat::Flax, "Siglip"),
    ] {
        let src = vit_convert::open(d.join(case).join(file)).unwrap();
        let canon = vit_convert::Canonical::new(src.as_ref(), &two_heads()).unwrap();
        refused(&canon, to, says);
    }
}
