//! `convert --labels`: the class names written into `config.json`'s `id2label`, the default
//! choice and its note, and `forward --top-k` printing them.

mod common;

use std::path::Path;

use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `vit-convert convert --from FROM INPUT -o OUT ARGS…`.
fn convert(from: &str, input: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "convert".to_string(),
        "--from".into(),
        from.into(),
        input.to_string_lossy().into_owned(),
        "-o".into(),
        out.to_string_lossy().into_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    common::run_cli(&all)
}

/// `vit-convert convert --from timm INPUT -o OUT --num-heads 2 ARGS…`.
fn convert_timm(input: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    convert("timm", input, out, &[&["--num-heads", "2"], args].concat())
}

fn id2label(out: &Path) -> Vec<String> {
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let m = cfg["id2label"].as_object().unwrap();
    (0..m.len())
        .map(|i| m[&i.to_string()].as_str().unwrap().to_string())
        .collect()
}

/// `forward OUT --image cat.png --top-k K`: the (index, label) pairs of `--json`, each also
/// printed by the text output.
fn top_k(out: &Path, k: usize) -> Vec<(usize, String)> {
    let img = common::fixture("convert", "image/cat.png");
    let k = k.to_string();
    let args = [
        "forward".as_ref(),
        out.as_os_str(),
        "--image".as_ref(),
        img.as_os_str(),
        "--top-k".as_ref(),
        k.as_ref(),
    ];
    let run = common::run_cli(&[&args[..], &["--json".as_ref()]].concat());
    assert!(run.status.success(), "{}", text(&run.stderr));
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    let top: Vec<(usize, String)> = v["top_k"][0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap() as usize,
                c["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let printed = common::run_cli(&args);
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let printed = text(&printed.stdout);
    for (_, label) in &top {
        assert!(printed.contains(label.as_str()), "{label}: {printed}");
    }
    top
}

#[test]
fn a_head_matching_no_list_keeps_label_n_and_says_why() {
    let out = tempfile::tempdir().unwrap();
    let run = convert_timm(
        &common::fixture("convert", "timm_vit/source.pth"),
        out.path(),
        &[],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains(
            "note: id2label: LABEL_n kept: 5 classes match no bundled list (ImageNet-1k 1000, ImageNet-21k 21843, ImageNet-22k 21841); --labels FILE names them"
        ),
        "{}",
        text(&run.stdout)
    );
    assert_eq!(
        id2label(out.path()),
        ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3", "LABEL_4"]
    );
}

#[test]
fn a_labels_file_names_the_classes_in_config_json_and_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["cat", "dog, hound", "fish", "bird", "ox"];
    let lines = dir.path().join("labels.txt");
    std::fs::write(&lines, names.join("\n")).unwrap();
    let json = dir.path().join("id2label.json");
    let obj: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), Value::from(*n)))
        .collect();
    std::fs::write(&json, Value::Object(obj).to_string()).unwrap();
    for file in [&lines, &json] {
        let out = tempfile::tempdir().unwrap();
        let run = convert_timm(
            &common::fixture("convert", "timm_vit/source.pth"),
            out.path(),
            &["--labels", file.to_str().unwrap()],
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert!(
            text(&run.stdout).contains("note: id2label: names (5 classes, --labels)"),
            "{}",
            text(&run.stdout)
        );
        assert_eq!(id2label(out.path()), names);
        let top = top_k(out.path(), 5);
        assert_eq!(top.len(), 5);
        for (i, label) in top {
            assert_eq!(label, names[i]);
        }
    }
}

#[test]
fn a_list_of_another_count_is_refused_naming_both_counts() {
    let dir = tempfile::tempdir().unwrap();
    let three = dir.path().join("three.txt");
    std::fs::write(&three, "a\nb\nc\n").unwrap();
    for labels in ["imagenet-1k", three.to_str().unwrap()] {
        let out = dir.path().join("out");
        let run = convert_timm(
            &common::fixture("convert", "timm_vit/source.pth"),
            &out,
            &["--labels", labels],
        );
        assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
        let want = if labels == "imagenet-1k" { 1000 } else { 3 };
        assert!(
            text(&run.stderr).contains(&format!(
                "config: `id2label` is {want}, but the weights hold 5"
            )),
            "{}",
            text(&run.stderr)
        );
        assert!(!out.exists());
    }
    let missing = dir.path().join("missing.txt");
    let run = convert_timm(
        &common::fixture("convert", "timm_vit/source.pth"),
        &dir.path().join("out"),
        &["--labels", missing.to_str().unwrap()],
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(
        text(&run.stderr).contains("missing.txt"),
        "{}",
        text(&run.stderr)
    );
}

/// The timm fixture with its 5-class head widened to 1000 classes, as timm-layout safetensors.
fn thousand_class_timm(path: &Path) {
    let src = vit_convert::open(common::fixture("convert", "timm_vit/source.pth")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for info in src.tensors() {
        let t = src.read(&info.name).unwrap();
        assert_eq!(t.dtype, vit_convert::DType::F32);
        let (shape, data) = match info.name.as_str() {
            "head.weight" | "head.bias" => {
                let row = t.data.len() / t.shape[0];
                let mut shape = t.shape.clone();
                shape[0] = 1000;
                // Every row a copy of an original row, scaled so no two classes tie.
                let mut data = Vec::with_capacity(row * 1000);
                for c in 0..1000 {
                    let from = &t.data[(c % 5) * row..(c % 5 + 1) * row];
                    for v in from.chunks_exact(4) {
                        let x = f32::from_le_bytes(v.try_into().unwrap());
                        let scale = 1.0 + c as f32 / 1000.0;
                        data.extend_from_slice(&(x * scale).to_le_bytes());
                    }
                }
                (shape, data)
            }
            _ => (t.shape.clone(), t.data.to_vec()),
        };
        tensors.push((info.name.clone(), shape, data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn a_1000_class_timm_head_gets_imagenet_names_by_default_and_top_k_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in1k.safetensors");
    thousand_class_timm(&input);
    let out = dir.path().join("out");
    let run = convert_timm(&input, &out, &[]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains(
            "note: id2label: ImageNet-1k names (1000 classes, bundled; --labels none keeps LABEL_n)"
        ),
        "{}",
        text(&run.stdout)
    );
    let names = id2label(&out);
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "tench, Tinca tinca");
    assert_eq!(names[281], "tabby, tabby cat");
    let bundled: Vec<&str> = vit_convert::labels::LabelSet::ImageNet1k.names().collect();
    for (i, label) in top_k(&out, 3) {
        assert_eq!(label, bundled[i]);
    }

    let kept = dir.path().join("kept");
    let run = convert_timm(&input, &kept, &["--labels", "none"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("note: id2label: LABEL_n kept: --labels none"),
        "{}",
        text(&run.stdout)
    );
    assert_eq!(id2label(&kept)[281], "LABEL_281");
}

#[test]
fn a_labels_list_replaces_the_side_config_json_names() {
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("names.txt");
    std::fs::write(&names, "a\nb\nc\nd\ne\n").unwrap();
    let out = dir.path().join("out");
    let hf = common::fixture("convert", "timm_vit/hf/model.safetensors");
    let run = convert("hf", &hf, &out, &["--labels", names.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout)
            .contains("note: id2label: names (5 classes, --labels, replacing the config.json's)"),
        "{}",
        text(&run.stdout)
    );
    assert_eq!(id2label(&out), ["a", "b", "c", "d", "e"]);
    // Without --labels, the config.json's names are kept, without a labels note.
    let kept = dir.path().join("kept");
    let run = convert("hf", &hf, &kept, &[]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        !text(&run.stdout).contains("id2label:"),
        "{}",
        text(&run.stdout)
    );
    assert_eq!(id2label(&kept)[4], "LABEL_4");
}

#[test]
fn the_library_takes_labels_and_refuses_them_beside_a_config_id2label() {
    use vit_convert::labels::parse_labels;
    use vit_convert::labels::Labels;
    use vit_convert::{open, Canonical, ConfigOverrides, ConvertOptions, ErrorKind};
    let src = open(common::fixture("convert", "timm_vit/source.pth")).unwrap();
    let names = parse_labels("v\nw\nx\ny\nz\n").unwrap();
    let mut opts = ConvertOptions {
        overrides: ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        labels: Labels::Custom(names.clone()),
        ..Default::default()
    };
    let canon = Canonical::new(src.as_ref(), &opts).unwrap();
    assert_eq!(canon.config().id2label, names);
    assert!(canon
        .notes()
        .contains(&"id2label: names (5 classes, option `labels`)".to_string()));

    let config: serde_json::Map<String, Value> =
        serde_json::from_str(r#"{"id2label": {"0": "a", "1": "b", "2": "c", "3": "d", "4": "e"}}"#)
            .unwrap();
    opts.overrides.config = Some(config);
    let e = Canonical::new(src.as_ref(), &opts).err().unwrap();
    assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }), "{e:?}");
    opts.labels = Labels::Auto;
    let canon = Canonical::new(src.as_ref(), &opts).unwrap();
    assert_eq!(canon.config().id2label[&4], "e");
}
