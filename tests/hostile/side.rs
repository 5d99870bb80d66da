//! Side files that disagree with the weights or ask for absurd sizes: a model folder's
//! `config.json`, `--config` and the `config.json` beside an hf input, `preprocessor_config.json`.
//! Each is refused with the specific error (library: kind and fields; CLI: exit 1, one stderr
//! line naming the file and the field), never a panic, an abort or a silently cut model.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use vit_convert::forward::Model;
use vit_convert::{
    model::ViTConfig, source::MemorySource, tensor::Tensor, write::WriteItem, DType, ErrorKind,
};

use crate::bin;
use crate::inputs::{assert_refused, fixture};

fn timm_config() -> Value {
    let text = std::fs::read_to_string(fixture("convert/timm_vit/hf/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A temp model folder: the converted timm ViT (hidden 24, 2 layers, 2 heads, intermediate 96,
/// patch 8, image 32, 3 channels, 5 labels) with `config.json` fields replaced by `changes`.
fn model_dir(changes: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("convert/timm_vit/hf/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg = timm_config();
    for (k, v) in changes.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn forward_npy(dir: &Path) -> Output {
    bin()
        .arg("forward")
        .arg(dir)
        .arg("--input")
        .arg(fixture("convert/timm_vit/io/input.npy"))
        .arg("--output")
        .arg(dir.join("out.npy"))
        .output()
        .unwrap()
}

fn verify_npy(dir: &Path) -> Output {
    bin()
        .arg("verify")
        .arg(dir)
        .arg("--input")
        .arg(fixture("convert/timm_vit/io/input.npy"))
        .arg("--expected")
        .arg(fixture("convert/timm_vit/io/logits_hf.npy"))
        .output()
        .unwrap()
}

/// `(config.json change, the field the error names, what the config says, what the weights
/// hold)` for every size the weights decide.
fn mismatches() -> Vec<(Value, &'static str, u64, u64)> {
    vec![
        (
            json!({"num_hidden_layers": 1_000_000_000_000u64}),
            "num_hidden_layers",
            1_000_000_000_000,
            2,
        ),
        (json!({"num_hidden_layers": 1}), "num_hidden_layers", 1, 2),
        (json!({"num_hidden_layers": 3}), "num_hidden_layers", 3, 2),
        (
            json!({"hidden_size": 32, "num_attention_heads": 2}),
            "hidden_size",
            32,
            24,
        ),
        (
            json!({"intermediate_size": 95}),
            "intermediate_size",
            95,
            96,
        ),
        (
            json!({"intermediate_size": u64::MAX}),
            "intermediate_size",
            u64::MAX,
            96,
        ),
        (json!({"num_channels": 1}), "num_channels", 1, 3),
        (
            json!({"patch_size": 16, "image_size": 32}),
            "patch_size",
            16,
            8,
        ),
        (json!({"qkv_bias": false}), "qkv_bias", 0, 1),
        (
            json!({"id2label": {"0": "a", "1": "b", "2": "c"}}),
            "id2label",
            3,
            5,
        ),
    ]
}

#[test]
fn model_config_that_disagrees_with_the_weights_names_both_numbers() {
    for (change, field, config, tensors) in mismatches() {
        let dir = model_dir(&change);
        let e = Model::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{change} loaded"));
        match e.kind() {
            ErrorKind::ConfigMismatch {
                field: f,
                config: c,
                tensors: t,
            } => assert_eq!((*f, *c, *t), (field, config, tensors), "{change}"),
            other => panic!("{change}: {other:?}"),
        }
        assert_eq!(
            e.path(),
            Some(dir.path().join("model.safetensors").as_path())
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&config.to_string()) && msg.contains(&tensors.to_string()),
            "{msg}"
        );
        let out = forward_npy(dir.path());
        assert_refused(&out, &[field, &config.to_string(), &tensors.to_string()]);
    }
}

/// `(config.json change, text the error holds)` for values no weights could agree with.
fn absurd_values() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"patch_size": 0}), "`patch_size` is 0"),
        (json!({"num_attention_heads": 0}), "`num_attention_heads` is 0"),
        (json!({"num_attention_heads": 5}), "hidden_size 24 is not divisible by num_attention_heads 5"),
        (json!({"num_channels": 0}), "`num_channels` is 0"),
        (json!({"image_size": 36}), "image_size 36 is not a multiple of patch_size 8"),
        (json!({"image_size": 0}), "`image_size` is 0"),
        (json!({"image_size": 48}), "image_size 48 with patch_size 8 gives 37 positions, the weights hold 17, i.e. image_size 32"),
        (json!({"image_size": 9_223_372_036_854_775_800u64}), "gives more tokens than fit in memory"),
        (json!({"image_size": 18_446_744_073_709_551_616.0f64}), "`image_size` must be a non-negative integer"),
        (json!({"hidden_size": -1}), "`hidden_size` must be a non-negative integer, got -1"),
        (json!({"hidden_size": 24.5}), "`hidden_size` must be a non-negative integer, got 24.5"),
        (json!({"hidden_size": "24"}), "`hidden_size` must be a non-negative integer, got \"24\""),
        (json!({"num_hidden_layers": null}), "field `num_hidden_layers` is missing"),
        (json!({"layer_norm_eps": -1.0}), "`layer_norm_eps` must be a finite non-negative number"),
        (json!({"qkv_bias": "yes"}), "`qkv_bias` must be true or false"),
        (json!({"id2label": {"0": "a", "9": "b"}}), "id2label key \"9\" is not an index below 2"),
        (json!({"id2label": [1]}), "`id2label` must be an object"),
        (json!({"hidden_act": 7}), "`hidden_act` must be a string, got 7"),
        (json!({"hidden_act": "relu\n"}), "unknown hidden_act `relu\\n`"),
        (json!({"num_labels": 3}), "`num_labels` is 3, but `id2label` has 5 labels"),
        (json!({"num_labels": 0}), "`num_labels` is 0, but `id2label` has 5 labels"),
        (json!({"num_labels": "5"}), "field `num_labels` must be a non-negative integer, got \"5\""),
        (json!({"id2label": null, "num_labels": 2_000_000}), "`num_labels` 2000000 is more than"),
        (json!({"architectures": "ViTModel"}), "field `architectures` must be a list of class names, got \"ViTModel\""),
        (json!({"architectures": [7]}), "field `architectures` must be a list of class names, got [7]"),
        (json!({"pooler_act": "relu"}), "unsupported `pooler_act` \"relu\""),
    ]
}

#[test]
fn num_labels_alone_names_the_labels_as_transformers_does() {
    let dir = model_dir(&json!({"id2label": null, "label2id": null, "num_labels": 5}));
    let model = Model::load(dir.path()).unwrap();
    assert_eq!(model.config().num_labels(), 5);
    assert_eq!(
        model.config().id2label.get(&4).map(String::as_str),
        Some("LABEL_4")
    );
    let out = forward_npy(dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_classifier_with_no_classes_is_a_config_error_everywhere() {
    let src = vit_convert::open(fixture("convert/timm_vit/hf/model.safetensors")).unwrap();
    let mut empty_head = MemorySource::new();
    for t in src.tensors() {
        let tensor = match t.name.as_str() {
            "classifier.weight" => {
                Tensor::new(DType::F32, vec![0, 24], Cow::Owned(Vec::new())).unwrap()
            }
            "classifier.bias" => Tensor::new(DType::F32, vec![0], Cow::Owned(Vec::new())).unwrap(),
            _ => src.read(&t.name).unwrap(),
        };
        empty_head.insert(&t.name, tensor).unwrap();
    }
    let needle = "the classifier has 0 classes";
    let config = ViTConfig::from_json(&timm_config()).unwrap();
    let e = Model::from_source(&empty_head, config).err().unwrap();
    assert!(
        matches!(e.kind(), ErrorKind::Config { reason } if reason.contains(needle)),
        "{e:?}"
    );
    let dir = model_dir(&json!({"id2label": {}, "label2id": {}}));
    let weights = dir.path().join("model.safetensors");
    let items = WriteItem::all(&empty_head);
    vit_convert::write::write_safetensors(&weights, &empty_head, &items, None, &BTreeMap::new())
        .unwrap();
    assert_refused(&forward_npy(dir.path()), &["model.safetensors", needle]);
    let out_dir = dir.path().join("out");
    let opts = vit_convert::ConvertOptions {
        from: Some("hf".parse().unwrap()),
        ..Default::default()
    };
    let e = vit_convert::convert(&weights, &out_dir, &opts)
        .err()
        .unwrap();
    assert!(e.to_string().contains(needle), "{e}");
    let out = bin()
        .args(["--from", "hf"])
        .arg(&weights)
        .arg("-o")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_refused(&out, &[needle]);
    assert!(!out_dir.join("model.safetensors").exists());
}

/// The jax pre-logits model (hidden 24, a pooler of 16) with `config.json` fields replaced.
fn pooler_dir(changes: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let hf = fixture("convert/jax_vit_prelogits/hf");
    std::fs::copy(
        hf.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(hf.join("config.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&text).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn pooler_output_size_that_disagrees_with_the_pooler_names_both_numbers() {
    // Absent means hidden_size (24) in transformers, which a 16-row pooler disagrees with too.
    for (change, config) in [
        (json!({"pooler_output_size": 24}), 24u64),
        (json!({"pooler_output_size": 0}), 0),
        (json!({"pooler_output_size": u64::MAX}), u64::MAX),
        (json!({"pooler_output_size": null}), 24),
    ] {
        let dir = pooler_dir(&change);
        let e = Model::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{change} loaded"));
        match e.kind() {
            ErrorKind::ConfigMismatch {
                field,
                config: c,
                tensors,
            } => assert_eq!(
                (*field, *c, *tensors),
                ("pooler_output_size", config, 16),
                "{change}"
            ),
            other => panic!("{change}: {other:?}"),
        }
        let out = bin()
            .arg("forward")
            .arg(dir.path())
            .arg("--input")
            .arg(fixture("convert/jax_vit_prelogits/io/input.npy"))
            .arg("--output")
            .arg(dir.path().join("out.npy"))
            .output()
            .unwrap();
        assert_refused(
            &out,
            &["pooler_output_size", &format!("is {config}"), "hold 16"],
        );
    }
    // The folder as written loads.
    assert!(Model::load(fixture("convert/jax_vit_prelogits/hf")).is_ok());
}

/// `--config` fields that would change what the model computes or claim another model than
/// the tensors hold: refused on convert, naming the field, nothing written.
#[test]
fn convert_config_option_fields_that_disagree_with_the_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (source, text, needle) in [
        (
            "convert/timm_vit/source.pth",
            r#"{"hidden_act": "relu"}"#,
            "unknown hidden_act `relu`",
        ),
        (
            "convert/timm_vit/source.pth",
            r#"{"pooler_act": "relu"}"#,
            "option `config`: unsupported `pooler_act` \"relu\"",
        ),
        (
            "convert/timm_vit/source.pth",
            r#"{"num_labels": 3}"#,
            "`num_labels` is 3, but the weights hold 5",
        ),
        (
            "convert/timm_vit/source.pth",
            r#"{"num_labels": -1}"#,
            "`num_labels` must be a non-negative integer, got -1",
        ),
        (
            "convert/timm_vit/source.pth",
            r#"{"architectures": ["DeiTModel"]}"#,
            "`architectures` names \"DeiTModel\", the tensors make a ViTForImageClassification",
        ),
        (
            "convert/timm_vit/source.pth",
            r#"{"architectures": "ViTModel"}"#,
            "option `config`: field `architectures` must be a list of class names",
        ),
        (
            "convert/timm_vit/source.pth",
            r#"{"model_type": "deit"}"#,
            "`model_type` is \"deit\", the tensors make a \"vit\" model",
        ),
        (
            "convert/jax_vit_prelogits/source.npz",
            r#"{"pooler_output_size": 7}"#,
            "`pooler_output_size` is 7, but the weights hold 16",
        ),
    ] {
        let cfg = dir.path().join("config_option.json");
        std::fs::write(&cfg, text).unwrap();
        let mut user: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
        user.insert("num_attention_heads".into(), json!(2));
        let opts = vit_convert::ConvertOptions {
            overrides: vit_convert::ConfigOverrides {
                config: Some(user),
                ..Default::default()
            },
            ..Default::default()
        };
        let out_dir = dir.path().join("out");
        let e = vit_convert::convert(fixture(source), &out_dir, &opts)
            .err()
            .unwrap_or_else(|| panic!("{text} converted"));
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Config { .. }
                    | ErrorKind::ConfigMismatch { .. }
                    | ErrorKind::UnknownName {
                        field: "hidden_act",
                        ..
                    }
            ),
            "{text}: {e:?}"
        );
        assert!(e.to_string().contains(needle), "{text}: {e}");
        let out = bin()
            .arg(fixture(source))
            .arg("-o")
            .arg(&out_dir)
            .args(["--num-heads", "2", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        // The library names the option field, the CLI its flag.
        let flagged = needle.replace("option `config`", "--config");
        assert_refused(&out, &[&flagged]);
        assert!(!out_dir.join("model.safetensors").exists());
    }
    // Fields that agree are accepted.
    let cfg = dir.path().join("config_option.json");
    std::fs::write(
        &cfg,
        r#"{"num_labels": 5, "architectures": ["ViTForImageClassification"], "model_type": "vit", "pooler_act": "tanh"}"#,
    )
    .unwrap();
    let out = bin()
        .arg(fixture("convert/timm_vit/source.pth"))
        .arg("-o")
        .arg(dir.path().join("ok"))
        .args(["--num-heads", "2", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn absurd_model_config_values_are_config_errors_naming_the_field() {
    for (change, needle) in absurd_values() {
        let dir = model_dir(&change);
        let e = Model::load(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{change} loaded"));
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Config { .. }
                    | ErrorKind::UnknownName {
                        field: "hidden_act",
                        ..
                    }
            ),
            "{change}: {e:?}"
        );
        assert!(e.to_string().contains(needle), "{change}: {e}");
        assert_refused(&forward_npy(dir.path()), &["config", needle]);
    }
    // verify reads the folder the same way.
    let dir = model_dir(&json!({"num_hidden_layers": 1}));
    assert_refused(
        &verify_npy(dir.path()),
        &["num_hidden_layers", "is 1", "hold 2"],
    );
}

/// The fixture's tensors with the patch kernel replaced by `[24, 3, 0, 0]`.
fn zero_kernel_source() -> MemorySource {
    let src = vit_convert::open(fixture("convert/timm_vit/hf/model.safetensors")).unwrap();
    let mut out = MemorySource::new();
    for t in src.tensors() {
        let tensor = if t.name.ends_with("patch_embeddings.projection.weight") {
            Tensor::new(DType::F32, vec![24, 3, 0, 0], Cow::Owned(Vec::new())).unwrap()
        } else {
            src.read(&t.name).unwrap()
        };
        out.insert(&t.name, tensor).unwrap();
    }
    out
}

#[test]
fn a_zero_sized_patch_kernel_is_a_config_error_everywhere() {
    let src = zero_kernel_source();
    let config = ViTConfig::from_json(&timm_config()).unwrap();
    let e = Model::from_source(&src, config).err().unwrap();
    assert!(
        matches!(e.kind(), ErrorKind::Config { reason } if reason.contains("zero-sized patch embedding kernel [24, 3, 0, 0]")),
        "{e:?}"
    );
    // Through the CLI: forward on the folder, convert from it (hf, with --config).
    let dir = model_dir(&json!({}));
    let items = WriteItem::all(&src);
    let weights = dir.path().join("model.safetensors");
    vit_convert::write::write_safetensors(&weights, &src, &items, None, &BTreeMap::new()).unwrap();
    assert_refused(
        &forward_npy(dir.path()),
        &["zero-sized patch embedding kernel"],
    );
    let config = dir.path().join("image.json");
    std::fs::write(&config, r#"{"image_size": 32}"#).unwrap();
    let out = bin()
        .args(["--from", "hf"])
        .arg(&weights)
        .arg("-o")
        .arg(dir.path().join("out"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_refused(&out, &["model.safetensors", "patch"]);
    assert!(!dir.path().join("out/model.safetensors").exists());
}

#[test]
fn convert_checks_config_sizes_beside_the_input_and_in_config_against_the_tensors() {
    for (change, field, config, tensors) in mismatches() {
        let dir = model_dir(&change);
        let weights = dir.path().join("model.safetensors");
        let out_dir = dir.path().join("out");
        let opts = vit_convert::ConvertOptions {
            from: Some("hf".parse().unwrap()),
            ..Default::default()
        };
        let e = vit_convert::convert(&weights, &out_dir, &opts)
            .err()
            .unwrap_or_else(|| panic!("{change} converted"));
        assert!(
            matches!(e.kind(), ErrorKind::ConfigMismatch { field: f, .. } if *f == field),
            "{change}: {e:?}"
        );
        assert!(!out_dir.join("model.safetensors").exists());
        let out = bin()
            .args(["--from", "hf"])
            .arg(&weights)
            .arg("-o")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert_refused(
            &out,
            &[
                "model.safetensors",
                field,
                &config.to_string(),
                &tensors.to_string(),
            ],
        );
    }
    // The same through --config on a timm checkpoint.
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            r#"{"num_attention_heads": 2, "num_hidden_layers": 1000000000000}"#,
            "`num_hidden_layers` is 1000000000000, but the weights hold 2",
        ),
        (
            r#"{"num_attention_heads": 2, "image_size": 9223372036854775800}"#,
            "image_size 9223372036854775800 with patch_size 8 gives more tokens",
        ),
    ] {
        let cfg = dir.path().join("config_option.json");
        std::fs::write(&cfg, text).unwrap();
        let out = bin()
            .args(["--from", "timm"])
            .arg(fixture("convert/timm_vit/source.pth"))
            .arg("-o")
            .arg(dir.path().join("out"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_refused(&out, &[needle]);
        assert!(!dir.path().join("out/model.safetensors").exists());
    }
}

/// A valid 1×1 PNG (about 70 bytes).
fn tiny_png(path: &Path) {
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 100, 50]))
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

fn forward_image(dir: &Path, png: &Path, env: &[(&str, &str)]) -> Output {
    bin()
        .arg("forward")
        .arg(dir)
        .arg("--image")
        .arg(png)
        .arg("--output")
        .arg(dir.join("out.npy"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn vit_preprocessor(changes: Value) -> Value {
    let mut cfg = json!({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": true,
        "size": {"height": 32, "width": 32},
        "resample": 2,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5]
    });
    for (k, v) in changes.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg
}

#[test]
fn a_tiny_png_asking_for_a_huge_resize_is_refused_before_allocating() {
    let dir = model_dir(&json!({}));
    let png = dir.path().join("one.png");
    tiny_png(&png);
    assert!(std::fs::metadata(&png).unwrap().len() < 100);
    for size in [
        json!({"height": 13376, "width": 13376}),
        json!({"shortest_edge": 13376}),
        json!(13376),
    ] {
        let pre = vit_preprocessor(json!({ "size": size }));
        // Library: refused by the budget, naming it.
        let e = vit_convert::image::preprocess(&[&png], &pre).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::BudgetExceeded { budget: "preprocess bytes", limit, .. } if *limit == 256 << 20),
            "{size}: {e:?}"
        );
        std::fs::write(dir.path().join("preprocessor_config.json"), pre.to_string()).unwrap();
        let started = std::time::Instant::now();
        let out = forward_image(dir.path(), &png, &[]);
        assert_refused(
            &out,
            &[
                "one.png",
                "preprocess bytes budget exceeded",
                "VIT_CONVERT_LIMIT_PREPROCESS_BYTES",
            ],
        );
        // Refused at once (generous bound for a loaded machine; the work is microseconds).
        assert!(started.elapsed().as_secs() < 20);
    }
    // A crop that pads a 1×1 image to 13376² (no resize) is refused the same way.
    let pre = vit_preprocessor(json!({
        "do_resize": false, "do_center_crop": true, "crop_size": {"height": 13376, "width": 13376}
    }));
    std::fs::write(dir.path().join("preprocessor_config.json"), pre.to_string()).unwrap();
    assert_refused(
        &forward_image(dir.path(), &png, &[]),
        &["preprocess bytes budget exceeded"],
    );
    // The budget is the one the variable sets: the 32×32 default config passes, and fails once
    // lowered under its 15 KiB.
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        vit_preprocessor(json!({})).to_string(),
    )
    .unwrap();
    let out = forward_image(dir.path(), &png, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = forward_image(
        dir.path(),
        &png,
        &[("VIT_CONVERT_LIMIT_PREPROCESS_BYTES", "4K")],
    );
    assert_refused(&out, &["preprocess bytes budget exceeded: limit 4096"]);
}

#[test]
fn bad_preprocessor_values_are_config_errors_naming_the_field() {
    let dir = model_dir(&json!({}));
    let png = dir.path().join("one.png");
    tiny_png(&png);
    for (change, needle) in [
        (
            json!({"size": {"height": 0, "width": 32}}),
            "`height` must be an integer in 1..=32768, got 0",
        ),
        (
            json!({"size": {"shortest_edge": -3}}),
            "`shortest_edge` must be an integer",
        ),
        (
            json!({"size": {"height": 1e20, "width": 32}}),
            "`height` must be an integer",
        ),
        (
            json!({"do_center_crop": true, "crop_size": {"height": 64, "width": 64}}),
            "`crop_size` 64x64 is larger than the resized 32x32 image",
        ),
        (
            json!({"image_std": [0.5, 0.0, 0.5]}),
            "`image_std` 0.0 is 0 or not a finite float32",
        ),
        (
            json!({"image_std": 1e-300}),
            "`image_std` 1e-300 is 0 or not a finite float32",
        ),
        (
            json!({"image_std": 1e-44}),
            "`image_std` 1e-44 makes normalised pixels overflow float32",
        ),
        (
            json!({"image_mean": [0.5, 0.5]}),
            "`image_mean` must be a number or 3 numbers",
        ),
        (
            json!({"image_mean": 1e39}),
            "`image_mean` 1e39 is not a finite float32",
        ),
        (
            json!({"rescale_factor": "1/255"}),
            "`rescale_factor` must be a number",
        ),
        (
            json!({"rescale_factor": 1e308}),
            "`rescale_factor` 1e308 does not give finite float32 pixels",
        ),
        (
            json!({"resample": 9}),
            "`resample` must be a PIL code 0–5, got 9",
        ),
        (
            json!({"resample": -1}),
            "`resample` must be a PIL code 0–5, got -1",
        ),
    ] {
        let pre = vit_preprocessor(change.clone());
        let e = vit_convert::image::preprocess(&[&png], &pre).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::Config { .. }),
            "{change}: {e:?}"
        );
        assert!(e.to_string().contains(needle), "{change}: {e}");
        std::fs::write(dir.path().join("preprocessor_config.json"), pre.to_string()).unwrap();
        assert_refused(
            &forward_image(dir.path(), &png, &[]),
            &["preprocessor_config.json", needle],
        );
    }
}

#[test]
fn forward_activation_memory_is_budgeted_before_allocating() {
    let dir = model_dir(&json!({}));
    let out = bin()
        .arg("forward")
        .arg(dir.path())
        .arg("--input")
        .arg(fixture("convert/timm_vit/io/batch5.npy"))
        .arg("--output")
        .arg(dir.path().join("out.npy"))
        .env("VIT_CONVERT_LIMIT_FORWARD_BYTES", "64K")
        .output()
        .unwrap();
    assert_refused(
        &out,
        &[
            "forward bytes budget exceeded: limit 65536",
            "VIT_CONVERT_LIMIT_FORWARD_BYTES",
        ],
    );
}
