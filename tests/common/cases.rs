//! The case lists of `fixtures/convert/*_cases.json` (BEiT's, made by `generate_beit.py`; DINOv2's,
//! CLIP's and SigLIP's, made by `generate_vlm.py`), and the two checks every family runs on them:
//! each source converts to exactly the tensors transformers saved, and the forward pass reproduces
//! every output transformers recorded.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vit_convert::forward::{ForwardOptions, Output};
use vit_convert::verify::F32Array;
use vit_convert::{convert, verify_model, ConvertOptions, Model};

/// The cases of `fixtures/convert/<file>`.
pub fn load(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(super::fixture("convert", file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A case's folder.
pub fn dir(case: &Value) -> PathBuf {
    super::fixture_dir("convert").join(case["dir"].as_str().unwrap())
}

/// A JSON file.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Converts every source of every case twice, naming the case's family and detecting it
/// (`opts(case, family)` gives the options; `family` is `"auto"` for detection). Each time the
/// report must name the family's table and the case's architecture, and the written tensors must
/// equal those transformers saved (`expected_dir`), names and bytes; then
/// `check_config(written, transformers', label)` compares the two `config.json`s. Returns the
/// number of conversions.
pub fn convert_every_source(
    cases: &[Value],
    opts: impl Fn(&Value, &str) -> ConvertOptions,
    check_config: impl Fn(&Value, &Value, &str),
) -> usize {
    let mut checked = 0;
    for case in cases {
        let d = dir(case);
        let expected_dir = d.join(case["expected_dir"].as_str().unwrap());
        let expected = super::tensors(&expected_dir.join("model.safetensors"));
        let want = read_json(&expected_dir.join("config.json"));
        let family = case["family"].as_str().unwrap();
        for source in case["sources"].as_array().unwrap() {
            let input = d.join(source["file"].as_str().unwrap());
            for f in [family, "auto"] {
                let label = format!("{} --from {f}", input.display());
                let out = tempfile::tempdir().unwrap();
                let r = convert(&input, out.path(), &opts(case, f))
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(r.mapping.table, family, "{label}");
                assert_eq!(
                    r.architecture.name(),
                    case["architecture"].as_str().unwrap(),
                    "{label}"
                );
                let got = super::tensors(&out.path().join("model.safetensors"));
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    expected.keys().collect::<Vec<_>>(),
                    "{label}"
                );
                assert!(got == expected, "{label}: tensor values differ");
                check_config(&read_json(&out.path().join("config.json")), &want, &label);
                checked += 1;
            }
        }
    }
    checked
}

/// Loads every case's expected checkpoint and runs each of its io inputs through `verify_model`
/// (the default strict tolerance), once for every output transformers recorded and every
/// `interpolate_pos_encoding` flag `flags(case, io)` gives. Returns the number of comparisons.
pub fn forward_matches_every_output(
    cases: &[Value],
    flags: impl Fn(&Value, &Value) -> Vec<bool>,
) -> usize {
    let mut compared = 0;
    for case in cases {
        let d = dir(case);
        let model = Model::load(d.join(case["expected_dir"].as_str().unwrap())).unwrap();
        for (name, io) in case["io"].as_object().unwrap() {
            let input = F32Array::read_npy(d.join(io["input"].as_str().unwrap())).unwrap();
            for (key, file) in io["outputs"].as_object().unwrap() {
                let expected = F32Array::read_npy(d.join(file.as_str().unwrap())).unwrap();
                let which: Output = match key.as_str() {
                    "pooler_output" => Output::Pooler,
                    k => k.parse().unwrap(),
                };
                for interpolate in flags(case, io) {
                    let opts = ForwardOptions {
                        interpolate_pos_encoding: interpolate,
                        compare: Some(which),
                        ..Default::default()
                    };
                    let r = verify_model(&model, &input, &expected, &opts, None).unwrap();
                    assert!(
                        r.passed,
                        "{} {name} {key} (interpolate {interpolate}): max |Δ| {}",
                        case["case"], r.max_abs_error
                    );
                    assert_eq!(r.output, Some(which));
                    compared += 1;
                }
            }
        }
    }
    compared
}
