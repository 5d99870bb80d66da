//! The reference forward pass against outputs computed by transformers (and timm) for every
//! fixture case: native size, other resolutions with interpolation (HF and DINO algorithms),
//! non-square inputs, batches, DeiT's two heads, headless backbones and poolers.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vit_convert::forward::{ForwardOptions, ForwardOutput, Model, PosInterp};
use vit_convert::verify::{compare, F32Array, Tolerance};
use vit_convert::ConfigOverrides;
use vit_convert::{convert, ConvertOptions, ErrorKind};

use common::{case_dir, convert_cases as cases};

fn output<'a>(out: &'a ForwardOutput, key: &str) -> (Vec<usize>, Vec<f32>) {
    let arr2 = |a: &'a Option<ndarray::Array2<f32>>| {
        let a = a.as_ref().unwrap_or_else(|| panic!("no {key}"));
        (a.shape().to_vec(), a.iter().copied().collect())
    };
    match key {
        "logits" => arr2(&out.logits),
        "cls_logits" => arr2(&out.cls_logits),
        "distillation_logits" => arr2(&out.distillation_logits),
        "pooler_output" => arr2(&out.pooler_output),
        "last_hidden_state" | "features" => (
            out.last_hidden_state.shape().to_vec(),
            out.last_hidden_state.iter().copied().collect(),
        ),
        other => panic!("unknown output {other}"),
    }
}

fn check(
    model: &Model,
    dir: &Path,
    io: &Value,
    group: &str,
    interp: PosInterp,
    what: &str,
) -> usize {
    let Some(outputs) = io.get(group).and_then(Value::as_object) else {
        return 0;
    };
    let input = F32Array::read_npy(dir.join(io["input"].as_str().unwrap())).unwrap();
    let opts = ForwardOptions {
        interpolate_pos_encoding: io["interpolate"].as_bool().unwrap() || interp == PosInterp::Dino,
        pos_interp: interp,
        ..ForwardOptions::default()
    };
    let out = model.forward(input.as_nchw().unwrap(), &opts).unwrap();
    for (key, file) in outputs {
        let want = F32Array::read_npy(dir.join(file.as_str().unwrap())).unwrap();
        let (shape, got) = output(&out, key);
        assert_eq!(shape, want.shape, "{what} {key}");
        let r = compare(&got, &want.data, &shape, Tolerance::strict()).unwrap();
        assert!(
            r.passed,
            "{what} {key} ({group}): max |Δ| {:e} at {:?}, max |expected| {}",
            r.max_abs_error, r.max_abs_error_at, r.max_abs_expected
        );
        assert!(
            r.top1.iter().all(|t| t.agree),
            "{what} {key}: top-1 differs"
        );
    }
    outputs.len()
}

fn check_case(model: &Model, case: &Value, what: &str) -> usize {
    let dir = case_dir(case);
    let mut n = 0;
    for (name, io) in case["io"].as_object().unwrap() {
        let label = format!("{what} {name}");
        n += check(model, &dir, io, "outputs", PosInterp::Hf, &label);
        n += check(model, &dir, io, "timm_outputs", PosInterp::Hf, &label);
        n += check(
            model,
            &dir,
            io,
            "dino_interp_outputs",
            PosInterp::Dino,
            &label,
        );
    }
    n
}

#[test]
fn forward_on_transformers_checkpoints_reproduces_their_outputs() {
    let mut n = 0;
    for case in cases() {
        let dir = case_dir(&case).join(case["expected_dir"].as_str().unwrap());
        let model = Model::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        n += check_case(&model, &case, case["case"].as_str().unwrap());
    }
    assert!(n >= 60, "only {n} outputs checked");
}

#[test]
fn forward_on_converted_checkpoints_reproduces_the_source_outputs() {
    for case in cases() {
        let source = &case["sources"][0];
        let input = case_dir(&case).join(source["file"].as_str().unwrap());
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions {
            branch: source["branch"]
                .as_str()
                .filter(|b| *b == "student")
                .map(|b| b.parse().unwrap()),
            overrides: ConfigOverrides {
                num_heads: case["config"]["num_attention_heads"]
                    .as_u64()
                    .map(|h| h as usize),
                ..Default::default()
            },
            ..Default::default()
        };
        convert(&input, out.path(), &opts).unwrap();
        let model = Model::load(out.path()).unwrap();
        check_case(&model, &case, &format!("converted {}", case["case"]));
    }
}

#[test]
fn other_sizes_without_interpolation_are_refused_as_in_hf() {
    let model = Model::load(common::fixture("convert", "timm_vit/hf")).unwrap();
    let x = F32Array::read_npy(common::fixture("convert", "timm_vit/io/input_48.npy")).unwrap();
    let e = model
        .forward(x.as_nchw().unwrap(), &ForwardOptions::default())
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }));
    assert!(e.to_string().contains("doesn't match model (32*32)"), "{e}");
}

#[test]
fn half_precision_weights_are_computed_in_f32_within_tolerance() {
    let out = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        from: Some("hf".parse().unwrap()),
        dtype: Some(vit_convert::DType::BF16),
        ..Default::default()
    };
    convert(
        common::fixture("convert", "timm_vit/hf/model.safetensors"),
        out.path(),
        &opts,
    )
    .unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["dtype"], "bfloat16");
    let model = Model::load(out.path()).unwrap();
    let x = F32Array::read_npy(common::fixture("convert", "timm_vit/io/input.npy")).unwrap();
    let want = F32Array::read_npy(common::fixture("convert", "timm_vit/io/logits_hf.npy")).unwrap();
    let got = model
        .forward(x.as_nchw().unwrap(), &ForwardOptions::default())
        .unwrap();
    let (_, shape, data) = got.select(None).unwrap();
    let r = compare(&data, &want.data, &shape, Tolerance::default()).unwrap();
    // bf16 weights are a different model: close, but not within the f32 tolerance.
    assert!(r.max_rel_error < 0.1, "{}", r.max_rel_error);
    assert!(!r.passed);
}

fn verify_cli(expected: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vit-convert"))
        .arg("verify")
        .arg(common::fixture("convert", "deit_distilled/hf"))
        .arg("--input")
        .arg(common::fixture("convert", "deit_distilled/io/batch5.npy"))
        .arg("--expected")
        .arg(expected)
        .arg("--json")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_exits_0_within_tolerance_3_outside_and_1_on_error() {
    let good = common::fixture("convert", "deit_distilled/io/logits_batch5_hf.npy");
    let (code, json) = verify_cli(&good);
    assert_eq!(code, Some(0), "{json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["top1"].as_array().unwrap().len(), 5);

    let mut bad = F32Array::read_npy(&good).unwrap();
    bad.data[7] += 0.01;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("perturbed.npy");
    bad.write_npy(&path).unwrap();
    let (code, json) = verify_cli(&path);
    assert_eq!(code, Some(3), "{json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["max_abs_error_at"], serde_json::json!([1, 2]));

    let (code, _) = verify_cli(&common::fixture(
        "convert",
        "deit_distilled/io/cls_logits_hf.npy",
    ));
    assert_eq!(code, Some(1), "shape mismatch is an error, not a mismatch");
}

#[test]
fn forward_cli_writes_logits_hidden_states_and_pooler() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::fixture("convert", "jax_vit_prelogits/hf");
    let out = Command::new(env!("CARGO_BIN_EXE_vit-convert"))
        .arg("forward")
        .arg(&model)
        .arg("--input")
        .arg(common::fixture(
            "convert",
            "jax_vit_prelogits/io/input_32x48.npy",
        ))
        .arg("--interpolate-pos-encoding")
        .arg("--output")
        .arg(dir.path().join("y.npy"))
        .arg("--pooled")
        .arg(dir.path().join("p.npy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = F32Array::read_npy(dir.path().join("y.npy")).unwrap();
    let want = F32Array::read_npy(common::fixture(
        "convert",
        "jax_vit_prelogits/io/last_hidden_state_32x48_hf.npy",
    ))
    .unwrap();
    assert_eq!(y.shape, want.shape);
    assert!(
        compare(&y.data, &want.data, &y.shape, Tolerance::strict())
            .unwrap()
            .passed
    );
    let p = F32Array::read_npy(dir.path().join("p.npy")).unwrap();
    assert_eq!(p.shape, vec![1, 16]);
}

#[test]
fn image_input_is_preprocessed_like_transformers_and_top_k_prints_labels() {
    let img = common::fixture("convert", "image/cat.png");
    let cfg_path = common::fixture("convert", "image/vit_pil/preprocessor_config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let pixels = vit_convert::image::preprocess(&[&img], &cfg).unwrap();
    let want =
        F32Array::read_npy(common::fixture("convert", "image/pixel_values_vit_pil.npy")).unwrap();
    assert_eq!(pixels.shape, want.shape);
    assert!(
        compare(
            &pixels.data,
            &want.data,
            &want.shape,
            Tolerance {
                atol: 1e-5,
                rtol: 0.0
            }
        )
        .unwrap()
        .passed
    );

    // The CLI reads preprocessor_config.json from the model folder.
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            common::fixture("convert", &format!("timm_vit/hf/{f}")),
            dir.path().join(f),
        )
        .unwrap();
    }
    std::fs::copy(&cfg_path, dir.path().join("preprocessor_config.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vit-convert"))
        .arg("forward")
        .arg(dir.path())
        .arg("--image")
        .arg(&img)
        .args(["--top-k", "2", "--output"])
        .arg(dir.path().join("y.npy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = Model::load(dir.path()).unwrap();
    let direct = model
        .forward(want.as_nchw().unwrap(), &ForwardOptions::default())
        .unwrap();
    let logits = direct.logits.unwrap();
    let best = (0..logits.ncols())
        .max_by(|&a, &b| logits[[0, a]].total_cmp(&logits[[0, b]]))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().nth(1).unwrap();
    assert!(first.trim_start().starts_with(&best.to_string()), "{text}");
    assert!(first.ends_with(&format!("LABEL_{best}")), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    let y = F32Array::read_npy(dir.path().join("y.npy")).unwrap();
    assert!(
        compare(
            &y.data,
            logits.as_slice().unwrap(),
            &y.shape,
            Tolerance::strict()
        )
        .unwrap()
        .passed
    );
}

/// `heads_only` runs the last layer for the tokens the outputs read: every output but
/// `last_hidden_state` agrees with the full pass (which is then empty, and refused by
/// `select`), for every fixture model of every family; models whose outputs read every token
/// run the full pass.
#[test]
fn heads_only_keeps_every_output_but_the_last_hidden_state() {
    let mut narrowed = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(common::fixture_dir("convert"))
        .unwrap()
        .flat_map(|e| {
            let d = e.unwrap().path();
            ["hf", "hf_timm"].map(|s| d.join(s))
        })
        .filter(|d| d.join("config.json").is_file() && d.join("model.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "{dirs:?}");
    for dir in &dirs {
        let model = Model::load(dir).unwrap();
        let size = model.config().image_size;
        let c = model.config().num_channels;
        let x = ndarray::Array4::from_shape_fn((2, c, size, size), |(b, ch, i, j)| {
            ((b * 7 + ch * 5 + i * 3 + j) % 17) as f32 / 8.0 - 1.0
        });
        let full = model.forward(x.view(), &ForwardOptions::default()).unwrap();
        let opts = ForwardOptions {
            heads_only: true,
            ..Default::default()
        };
        let part = model.forward(x.view(), &opts).unwrap();
        let pairs = [
            (&full.logits, &part.logits),
            (&full.pooler_output, &part.pooler_output),
            (&full.image_embeds, &part.image_embeds),
            (&full.cls_logits, &part.cls_logits),
            (&full.distillation_logits, &part.distillation_logits),
        ];
        for (a, b) in pairs {
            assert_eq!(a.is_some(), b.is_some(), "{}", dir.display());
            if let (Some(a), Some(b)) = (a, b) {
                let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                let worst = a
                    .iter()
                    .zip(b.iter())
                    .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                assert!(worst <= 1e-5 * scale, "{}: {worst}", dir.display());
            }
        }
        if part.last_hidden_state.shape()[1] == 0 {
            narrowed += 1;
            let e = part
                .select(Some(vit_convert::forward::Output::LastHiddenState))
                .unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::InvalidOption { reason } if reason.contains("heads_only")),
                "{e}"
            );
        } else {
            assert_eq!(
                part.last_hidden_state,
                full.last_hidden_state,
                "{}",
                dir.display()
            );
        }
    }
    assert!(narrowed >= 10, "{narrowed} of {}", dirs.len());
}
