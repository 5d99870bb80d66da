//! Property test: hostile `config.json` / `--config` values (0, 1, -1, huge, 2^63 − 1, 2^64,
//! floats, strings, null, values that disagree with the tensors) driven through
//! [`Model::load`] + forward + [`verify_model`](crate::verify::verify_model) and through
//! [`convert`](crate::convert::convert) on a tiny model, with a fixed xorshift seed. Nothing
//! panics; a config that agrees with the tensors loads, converts and verifies; every refusal is
//! a typed config error naming a field that was changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::tiny::{tiny_config, tiny_source};
use super::{ForwardOptions, Model};
use crate::convert::{convert, ConvertOptions};
use crate::error::{Error, ErrorKind};
use crate::verify::{verify_model, F32Array, Tolerance};
use crate::write::{write_safetensors, WriteItem};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.next() % items.len() as u64).unwrap_or(0);
        &items[i]
    }
}

/// Integers and not-quite-integers.
fn int_values() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(2),
        json!(3),
        json!(4),
        json!(8),
        json!(-1),
        json!(1_000_000_000_000u64),
        json!(i64::MAX),
        json!(1u64 << 63),
        json!(u64::MAX),
        json!(18_446_744_073_709_551_616.0f64),
        json!(1.5),
        json!(4.0),
        json!("4"),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
    ]
}

/// What the tiny model's tensors hold, per integer field.
const TRUTH: &[(&str, u64)] = &[
    ("hidden_size", 4),
    ("num_hidden_layers", 1),
    ("intermediate_size", 8),
    ("patch_size", 2),
    ("image_size", 4),
    ("num_channels", 3),
];

fn values_for(field: &str) -> Vec<Value> {
    match field {
        "layer_norm_eps" => vec![
            json!(0),
            json!(1e-6),
            json!(-1.0),
            json!(1e300),
            json!("1e-6"),
            json!(null),
        ],
        "qkv_bias" => vec![json!(true), json!(false), json!("yes"), json!(null)],
        "hidden_act" => vec![json!("gelu"), json!("gelu_new"), json!(7), json!(null)],
        "num_labels" => vec![
            json!(3),
            json!(0),
            json!(2),
            json!(1u64 << 63),
            json!("3"),
            json!(null),
        ],
        "pooler_act" => vec![json!("tanh"), json!("relu"), json!(7), json!(null)],
        "architectures" => vec![
            json!(["ViTForImageClassification"]),
            json!("ViTForImageClassification"),
            json!([7]),
            json!({}),
        ],
        "model_type" => vec![json!("vit"), json!("deit"), json!(7), json!(null)],
        "id2label" => vec![
            json!({"0": "a", "1": "b", "2": "c"}),
            json!({"0": "a", "1": "b"}),
            json!({"0": "a", "1": "b", "5": "c"}),
            json!({"0": "a", "00": "b", "1": "c"}),
            json!({"x": "a", "1": "b", "2": "c"}),
            json!([]),
        ],
        _ => int_values(),
    }
}

const FIELDS: &[&str] = &[
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "image_size",
    "num_channels",
    "layer_norm_eps",
    "qkv_bias",
    "hidden_act",
    "id2label",
    "num_labels",
    "pooler_act",
    "architectures",
    "model_type",
];

/// Fields the convert path does not take from the `config.json` beside an hf input.
const NOT_FROM_SIDECAR: &[&str] = &["num_labels", "architectures", "model_type"];

/// Whether every changed value agrees with the tiny model (see [`agrees`]); `num_labels` alone
/// (no `id2label`) names the labels as transformers does.
fn all_agree(changed: &Map<String, Value>, load: bool, sidecar: bool) -> bool {
    changed.iter().all(|(k, v)| {
        (sidecar && NOT_FROM_SIDECAR.contains(&k.as_str()))
            || agrees(k, v, load)
            || (load
                && k == "id2label"
                && v.is_null()
                && changed.get("num_labels") == Some(&json!(3)))
    })
}

/// Whether `value` for `field` agrees with the tiny model. `load`: read by `Model::load` (a
/// null leaves an optional field at its default, but a required one missing); else merged into
/// `convert`'s overrides (a null is absent).
fn agrees(field: &str, value: &Value, load: bool) -> bool {
    if value.is_null() {
        // The tiny model's hidden size (4) does not let convert infer the head count.
        return (!load && field != "num_attention_heads")
            || [
                "num_channels",
                "layer_norm_eps",
                "qkv_bias",
                "hidden_act",
                "num_labels",
                "pooler_act",
                "model_type",
            ]
            .contains(&field);
    }
    if let Some((_, t)) = TRUTH.iter().find(|(f, _)| *f == field) {
        return value.as_u64() == Some(*t);
    }
    match field {
        "num_attention_heads" => matches!(value.as_u64(), Some(1 | 2 | 4)),
        "layer_norm_eps" => value.as_f64().is_some_and(|e| e.is_finite() && e >= 0.0),
        "qkv_bias" => value == &json!(true),
        "hidden_act" => value.is_string(),
        "id2label" => value == &json!({"0": "a", "1": "b", "2": "c"}),
        "num_labels" => value.as_u64() == Some(3),
        "pooler_act" => value == &json!("tanh"),
        "architectures" => value == &json!(["ViTForImageClassification"]),
        // `Model::load` takes the class from `architectures`; convert checks it.
        "model_type" => load || value == &json!("vit"),
        _ => false,
    }
}

/// A refusal must be a config error naming one of the changed fields.
fn assert_names_a_field(e: &Error, changed: &Map<String, Value>, what: &str) {
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Config { .. } | ErrorKind::ConfigMismatch { .. }
        ),
        "{what} {changed:?}: {e:?}"
    );
    let msg = e.to_string();
    assert!(
        changed.keys().any(|k| msg.contains(k.as_str())),
        "{what} {changed:?}: {msg}"
    );
}

fn write_model(dir: &Path, config: &Value) {
    let src = tiny_source();
    let items = WriteItem::all(&src);
    write_safetensors(
        &dir.join("model.safetensors"),
        &src,
        &items,
        None,
        &BTreeMap::new(),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

fn input() -> F32Array {
    F32Array {
        shape: vec![2, 3, 4, 4],
        data: (0..96u16).map(|i| f32::from(i % 13) / 13.0 - 0.4).collect(),
    }
}

/// Asserts the loaded model has exactly the tiny model's sizes (nothing truncated).
fn assert_tiny_sizes(m: &Model) {
    let c = m.config();
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.intermediate_size,
            c.patch_size,
            c.image_size,
            c.num_channels,
            c.num_labels()
        ),
        (4, 1, 8, 2, 4, 3, 3)
    );
}

#[test]
fn hostile_config_values_are_refused_by_load_forward_verify_and_convert_without_panic() {
    let mut rng = XorShift(0x5eed_c0ff_ee00_1234);
    let tmp = tempfile::tempdir().unwrap();
    let (mut loaded, mut converted) = (0, 0);
    for case in 0..300 {
        let mut changed = Map::new();
        for _ in 0..=(rng.next() % 2) {
            let field = *rng.pick(FIELDS);
            changed.insert(field.to_string(), rng.pick(&values_for(field)).clone());
        }
        let mut config = tiny_config();
        if let Some(o) = config.as_object_mut() {
            o.extend(changed.clone());
        }

        // forward / verify: the model folder's config.json.
        let dir = tmp.path().join(format!("m{case}"));
        std::fs::create_dir(&dir).unwrap();
        write_model(&dir, &config);
        let ok = all_agree(&changed, true, false);
        match Model::load(&dir) {
            Ok(m) => {
                assert!(ok, "loaded {changed:?}");
                assert_tiny_sizes(&m);
                let x = input();
                let out = m.forward(x.as_nchw().unwrap(), &ForwardOptions::default());
                let (_, shape, data) = out.unwrap().select(None).unwrap();
                let expected = F32Array { shape, data };
                let r = verify_model(
                    &m,
                    &x,
                    &expected,
                    &ForwardOptions::default(),
                    Some(Tolerance::strict()),
                );
                assert!(r.unwrap().passed, "{changed:?}");
                loaded += 1;
            }
            Err(e) => {
                assert!(!ok, "refused {changed:?}: {e}");
                assert_names_a_field(&e, &changed, "load");
            }
        }

        // convert: the same values in the config.json beside an hf input, then as --config.
        let ok = all_agree(&changed, false, case % 2 == 0);
        let mut opts = ConvertOptions {
            from: Some("hf".parse().unwrap()),
            ..ConvertOptions::default()
        };
        if case % 2 == 1 {
            std::fs::write(dir.join("config.json"), tiny_config().to_string()).unwrap();
            opts.overrides.config = Some(changed.clone());
        }
        let out = tmp.path().join(format!("o{case}"));
        match convert(dir.join("model.safetensors"), &out, &opts) {
            Ok(_) => {
                assert!(ok, "converted {changed:?}");
                let m = Model::load(&out).unwrap();
                assert_tiny_sizes(&m);
                converted += 1;
            }
            Err(e) => {
                assert!(!ok, "convert refused {changed:?}: {e}");
                assert_names_a_field(&e, &changed, "convert");
            }
        }
    }
    // The seed reaches both outcomes on both paths.
    assert!(loaded > 20 && converted > 20, "{loaded} {converted}");
}

#[test]
fn hostile_preprocessor_values_are_refused_or_give_finite_pixels_without_panic() {
    use crate::image::{preprocess_image, Decoded, PreprocessorConfig, RgbImage};
    let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
    // Valid values come up more often, so that whole configs pass too.
    let sides = [
        json!(1),
        json!(3),
        json!(7),
        json!(1),
        json!(3),
        json!(7),
        json!(0),
        json!(1),
        json!(3),
        json!(7),
        json!(-1),
        json!(13_376),
        json!(32_768),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(2.5),
        json!("8"),
        json!(null),
    ];
    let numbers = [
        json!(0.5),
        json!([0.5, 0.5, 0.5]),
        json!(null),
        json!(0.5),
        json!([0.5, 0.5, 0.5]),
        json!(null),
        json!(0),
        json!(1e-300),
        json!(-0.5),
        json!(0.5),
        json!(1e300),
        json!(1e38),
        json!("x"),
        json!(null),
        json!([0.5, 0.5]),
        json!([0.5, 0.5, 0.5]),
        json!([0.5, 0.0, 0.5]),
    ];
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..300 {
        let side = |rng: &mut XorShift| rng.pick(&sides).clone();
        let size = match rng.next() % 4 {
            0 => json!({"height": side(&mut rng), "width": side(&mut rng)}),
            1 => json!({"shortest_edge": side(&mut rng)}),
            2 => json!({"shortest_edge": side(&mut rng), "longest_edge": side(&mut rng)}),
            _ => side(&mut rng),
        };
        let cfg = json!({
            "image_processor_type": rng.pick(&["ViTImageProcessor", "BitImageProcessor", "X"]),
            "size": size,
            "crop_size": {"height": side(&mut rng), "width": side(&mut rng)},
            "do_center_crop": rng.next() % 2 == 0,
            "resample": rng.pick(&[json!(0), json!(2), json!(3), json!(2), json!(6), json!(-1), json!("2")]),
            "rescale_factor": rng.pick(&numbers),
            "image_mean": rng.pick(&numbers),
            "image_std": rng.pick(&numbers),
        });
        let (w, h) = (rng.next() % 5 + 1, rng.next() % 5 + 1);
        let (w, h) = (usize::try_from(w).unwrap(), usize::try_from(h).unwrap());
        let rgb = RgbImage::new(w, h, (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect());
        let decoded = Decoded {
            rgb: rgb.unwrap(),
            transparent: None,
        };
        match PreprocessorConfig::from_json(&cfg)
            .and_then(|c| preprocess_image(decoded, &c, &crate::Limits::DEFAULT))
        {
            Ok((oh, ow, values)) => {
                assert_eq!(values.len(), 3 * oh * ow, "{cfg}");
                assert!(values.iter().all(|v| v.is_finite()), "{cfg}");
                ok += 1;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::Config { .. }
                            | ErrorKind::BudgetExceeded { .. }
                            | ErrorKind::InvalidOption { .. }
                    ),
                    "{cfg}: {e:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(ok > 5 && refused > 100, "{ok} {refused}");
}
