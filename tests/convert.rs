//! Conversion against ground truth from timm + transformers (`fixtures/convert/`): every source
//! of every case converts to exactly the tensors transformers saved, with the right config; round
//! trips are bit-exact; bad input leaves nothing behind.

mod common;

use common::tensors;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vit_convert::conversion::OutputFormat;
use vit_convert::mapping::MappingError;
use vit_convert::ConfigOverrides;
use vit_convert::{convert, ConvertOptions, ErrorKind};

use common::{case_dir, convert_cases as cases};

fn heads(case: &Value) -> usize {
    case["config"]["num_attention_heads"].as_u64().unwrap() as usize
}

fn options(case: &Value, source: &Value, from: &str) -> ConvertOptions {
    ConvertOptions {
        from: (from != "auto").then(|| from.parse().unwrap()),
        branch: match source["branch"].as_str() {
            Some(b @ ("teacher" | "student")) => Some(b.parse().unwrap()),
            _ => None,
        },
        overrides: ConfigOverrides {
            num_heads: Some(heads(case)),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn data_section(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[8 + n..].to_vec()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_source_converts_to_exactly_the_tensors_transformers_saved() {
    let mut checked = 0;
    for case in cases() {
        let dir = case_dir(&case);
        let expected = tensors(
            &dir.join(case["expected_dir"].as_str().unwrap())
                .join("model.safetensors"),
        );
        let family = case["family"].as_str().unwrap();
        for source in case["sources"].as_array().unwrap() {
            let input = dir.join(source["file"].as_str().unwrap());
            for from in [family, "auto"] {
                let out = tempfile::tempdir().unwrap();
                let report = convert(&input, out.path(), &options(&case, source, from))
                    .unwrap_or_else(|e| panic!("{} --from {from}: {e}", input.display()));
                assert_eq!(
                    report.architecture.name(),
                    case["architecture"].as_str().unwrap(),
                    "{}",
                    input.display()
                );
                let got = tensors(&out.path().join("model.safetensors"));
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    expected.keys().collect::<Vec<_>>(),
                    "{} --from {from}: tensor names",
                    input.display()
                );
                for (name, want) in &expected {
                    assert!(
                        got[name] == *want,
                        "{} --from {from}: {name} differs",
                        input.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 28, "only {checked} conversions checked");
}

#[test]
fn config_json_matches_the_manifest_field_by_field() {
    for case in cases() {
        let dir = case_dir(&case);
        let source = &case["sources"][0];
        let out = tempfile::tempdir().unwrap();
        let family = case["family"].as_str().unwrap();
        convert(
            dir.join(source["file"].as_str().unwrap()),
            out.path(),
            &options(&case, source, family),
        )
        .unwrap();
        let cfg = read_json(&out.path().join("config.json"));
        let want = &case["config"];
        for key in [
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "patch_size",
            "image_size",
            "num_channels",
            "qkv_bias",
            "layer_norm_eps",
            "hidden_act",
            "model_type",
        ] {
            assert_eq!(cfg[key], want[key], "{}: {key}", case["case"]);
        }
        assert_eq!(
            cfg["architectures"][0], case["architecture"],
            "{}",
            case["case"]
        );
        let labels = cfg
            .get("id2label")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        assert_eq!(
            labels as u64,
            want["num_labels"].as_u64().unwrap_or(0),
            "{}",
            case["case"]
        );
        if let Some(r) = want.get("pooler_output_size") {
            assert_eq!(&cfg["pooler_output_size"], r, "{}", case["case"]);
        }
        // transformers' own config for the expected checkpoint agrees on the same fields.
        let hf = read_json(
            &dir.join(case["expected_dir"].as_str().unwrap())
                .join("config.json"),
        );
        for key in [
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "layer_norm_eps",
            "qkv_bias",
        ] {
            assert_eq!(
                cfg[key], hf[key],
                "{}: {key} vs transformers' config",
                case["case"]
            );
        }
        let pre = read_json(&out.path().join("preprocessor_config.json"));
        assert!(
            pre["image_mean"].is_array() && pre["image_std"].is_array(),
            "{}",
            case["case"]
        );
    }
}

#[test]
fn same_weights_as_timm_pth_and_jax_npz_give_identical_output() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let timm = cases()
        .into_iter()
        .find(|c| c["case"] == "timm_vit")
        .unwrap();
    convert(
        case_dir(&timm).join("source.pth"),
        a.path(),
        &options(&timm, &timm["sources"][0], "timm"),
    )
    .unwrap();
    let jax = common::fixture("convert", "jax_vit/source.npz");
    convert(&jax, b.path(), &ConvertOptions::default()).unwrap();
    assert_eq!(
        data_section(&a.path().join("model.safetensors")),
        data_section(&b.path().join("model.safetensors"))
    );
    assert_eq!(
        std::fs::read(a.path().join("config.json")).unwrap(),
        std::fs::read(b.path().join("config.json")).unwrap()
    );
}

#[test]
fn converting_twice_gives_identical_bytes() {
    let input = common::fixture("convert", "deit_distilled/source.pth");
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let out = tempfile::tempdir().unwrap();
        let opts = ConvertOptions {
            overrides: ConfigOverrides {
                num_heads: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        convert(&input, out.path(), &opts).unwrap();
        outputs.push(
            [
                "model.safetensors",
                "config.json",
                "preprocessor_config.json",
            ]
            .map(|f| std::fs::read(out.path().join(f)).unwrap()),
        );
        drop(out);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn safetensors_metadata_records_source_table_and_version() {
    let out = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "timm_vit/source.pth");
    let report = convert(
        &input,
        out.path(),
        &options(&cases()[0], &cases()[0]["sources"][0], "timm"),
    )
    .unwrap();
    let src = vit_convert::open(out.path().join("model.safetensors")).unwrap();
    let meta = src.metadata();
    assert_eq!(meta["format"], "pt");
    assert_eq!(
        meta["source_sha256"],
        common::sha256_hex(&std::fs::read(&input).unwrap())
    );
    assert_eq!(Some(&meta["source_sha256"]), report.input_sha256.as_ref());
    assert_eq!(meta["mapping_table"], "timm");
    assert_eq!(
        meta["mapping_table_sha256"],
        vit_convert::MappingTable::builtin("timm").unwrap().hash()
    );
    assert_eq!(meta["vit_convert_version"], env!("CARGO_PKG_VERSION"));
}

/// canonical → FORMAT → canonical must reproduce every tensor bit for bit.
fn round_trip(case: &str, to: OutputFormat, back_from: &str) {
    let c = cases().into_iter().find(|c| c["case"] == case).unwrap();
    let dir = case_dir(&c);
    let hf = dir
        .join(c["expected_dir"].as_str().unwrap())
        .join("model.safetensors");
    let mid = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        from: Some("hf".parse().unwrap()),
        to,
        overrides: ConfigOverrides {
            num_heads: Some(heads(&c)),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = convert(&hf, mid.path(), &opts).unwrap();
    let back = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        from: Some(back_from.parse().unwrap()),
        overrides: ConfigOverrides {
            num_heads: Some(heads(&c)),
            ..Default::default()
        },
        ..Default::default()
    };
    convert(&r.outputs[0], back.path(), &opts).unwrap();
    assert_eq!(
        tensors(&hf),
        tensors(&back.path().join("model.safetensors")),
        "{case} via {to:?}"
    );
}

#[test]
fn round_trips_through_timm_and_npz_are_bit_exact() {
    round_trip("timm_vit", OutputFormat::Timm, "timm");
    round_trip("timm_vit", OutputFormat::Npz, "jax");
    round_trip("timm_vit_noqkvbias", OutputFormat::Timm, "timm");
    round_trip("timm_vit_noqkvbias", OutputFormat::Npz, "jax");
    round_trip("deit_distilled", OutputFormat::Timm, "deit");
    round_trip("dino_backbone", OutputFormat::Timm, "dino");
    round_trip("jax_vit_prelogits", OutputFormat::Npz, "jax");
}

#[test]
fn to_timm_reproduces_the_timm_state_dict() {
    let out = tempfile::tempdir().unwrap();
    let hf = common::fixture("convert", "timm_vit/hf/model.safetensors");
    let opts = ConvertOptions {
        from: Some("hf".parse().unwrap()),
        to: OutputFormat::Timm,
        ..Default::default()
    };
    convert(&hf, out.path(), &opts).unwrap();
    let got = tensors(&out.path().join("model.safetensors"));
    let want = tensors(&common::fixture("convert", "timm_vit/source.pth"));
    assert_eq!(got, want);
}

#[test]
fn deit_distilled_to_npz_is_refused_naming_the_tensor() {
    let out = tempfile::tempdir().unwrap();
    let hf = common::fixture("convert", "deit_distilled/hf/model.safetensors");
    let opts = ConvertOptions {
        from: Some("hf".parse().unwrap()),
        to: OutputFormat::Npz,
        ..Default::default()
    };
    let e = convert(&hf, out.path(), &opts).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Mapping { problem: MappingError::NoPlace { tensor, .. }, .. }
            if tensor.ends_with("embeddings.distillation_token")),
        "{e}"
    );
    assert!(!out.path().join("model.npz").exists());
}

#[test]
fn prelogits_with_head_exports_viewmodel_with_pooler_and_reports_the_dropped_head() {
    let out = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "jax_vit_prelogits/with_head.npz");
    let r = convert(&input, out.path(), &ConvertOptions::default()).unwrap();
    assert_eq!(r.architecture.name(), "ViTModel");
    let dropped: Vec<&str> = r.dropped.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(dropped, ["classifier.weight", "classifier.bias"]);
}

#[test]
fn wrong_family_names_the_unconsumed_tensor_and_table() {
    let out = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "timm_vit/source.pth");
    let opts = ConvertOptions {
        from: Some("jax".parse().unwrap()),
        ..Default::default()
    };
    let e = convert(&input, out.path(), &opts).unwrap_err();
    match e.kind() {
        ErrorKind::Mapping {
            table,
            file,
            problem: MappingError::Unconsumed { names },
            ..
        } => {
            assert_eq!(
                (table.as_str(), file.as_str()),
                ("jax", "mappings/jax.toml")
            );
            assert_eq!(names.first().map(String::as_str), Some("cls_token"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.path(), Some(input.as_path()));
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn unknown_layout_is_a_detection_error_listing_candidates() {
    let out = tempfile::tempdir().unwrap();
    let input = common::fixture("readers", "dtypes_zip.pth");
    let e = convert(&input, out.path(), &ConvertOptions::default()).unwrap_err();
    let src = vit_convert::open(&input).unwrap();
    match e.kind() {
        ErrorKind::NoFamily {
            candidates,
            seen,
            tensors,
        } => {
            let builtin: Vec<String> = vit_convert::mapping::builtin_ids()
                .into_iter()
                .map(String::from)
                .collect();
            assert_eq!(candidates, &builtin);
            let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
            assert_eq!(*tensors, names.len());
            assert_eq!(seen, &names[..names.len().min(6)]);
        }
        other => panic!("{other:?}"),
    }
    // The one Display test of this message.
    let shown = e.to_string();
    assert!(
        shown.contains("cannot detect the checkpoint family: no known family matches (candidates: timm, dino, deit, jax, big_vision, beit, dinov2, clip, siglip, hf"),
        "{shown}"
    );
    assert!(shown.contains("; seen: "), "{shown}");
}

#[test]
fn output_that_would_overwrite_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.safetensors");
    std::fs::copy(
        common::fixture("convert", "timm_vit/hf/model.safetensors"),
        &input,
    )
    .unwrap();
    std::fs::copy(
        common::fixture("convert", "timm_vit/hf/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let before = std::fs::read(&input).unwrap();
    let e = convert(
        &input,
        dir.path(),
        &ConvertOptions {
            from: Some("hf".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::OutputIsInput { input: i, .. } if *i == input),
        "{e}"
    );
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn a_failure_halfway_leaves_no_partial_file_and_keeps_existing_ones() {
    // A deflated npz lists fine (only headers are inflated); corrupting the compressed data of
    // its last member makes that tensor fail when it is read, after others were written.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(common::fixture("readers", "jax_vit_compressed.npz")).unwrap();
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], b"PK\x05\x06");
    let cd = u32::from_le_bytes(bytes[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    bytes[cd - 12] ^= 0xff;
    let input = dir.path().join("cut.npz");
    std::fs::write(&input, &bytes).unwrap();
    assert!(
        vit_convert::open(&input).is_ok(),
        "the listing must still parse"
    );
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("model.safetensors"), b"previous").unwrap();
    let e = convert(&input, &out, &ConvertOptions::default()).unwrap_err();
    assert!(e.tensor().is_some(), "the error names the tensor: {e}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        b"previous"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["model.safetensors"], "no temp files left");
}

#[test]
fn cli_default_command_converts_and_errors_are_one_line() {
    let bin = env!("CARGO_BIN_EXE_vit-convert");
    let out = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "dino_backbone/full_checkpoint.pth");
    let ok = Command::new(bin)
        .args(["--from", "dino", "--to", "safetensors"])
        .arg(&input)
        .arg("-o")
        .arg(out.path())
        .args(["--num-heads", "4", "--json"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["mapping"]["selected"], "teacher");
    assert!(report["mapping"]["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("head.last_layer")));

    let bad = Command::new(bin)
        .args(["--from", "jax"])
        .arg(&input)
        .arg("-o")
        .arg(out.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    let usage = Command::new(bin).args(["--from", "nope"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn library_messages_name_option_fields_and_the_cli_names_flags() {
    // The timm fixture is 24 wide: the head count cannot be guessed (24 is no multiple of 64).
    let out = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "timm_vit/source.pth");
    let e = convert(&input, out.path(), &ConvertOptions::default()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("set option `num_heads`"), "{text}");
    assert!(!text.contains("--"), "{text}");
    let cli = Command::new(env!("CARGO_BIN_EXE_vit-convert"))
        .arg(&input)
        .arg("-o")
        .arg(out.path().join("cli"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("set --num-heads"), "{stderr}");
}
