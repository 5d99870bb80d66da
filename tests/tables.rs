//! `vit-convert tables`, and the worked example of `mappings/README.md`: the table printed there
//! converts a checkpoint of the layout it describes.

mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use vit_convert::ConfigOverrides;
use vit_convert::{
    diff::DiffOptions, source::MemorySource, tensor::Tensor, write::WriteItem, ConvertOptions,
    DType, MappingTable,
};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tables_lists_every_builtin_table_with_families_and_description() {
    let out = common::run_cli(&["tables"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for t in MappingTable::builtins().unwrap() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(t.id()))
            .unwrap_or_else(|| panic!("{} not listed:\n{text}", t.id()));
        assert!(line.contains(t.description()), "{line}");
        assert!(line.contains(&t.families().join(",")), "{line}");
    }

    let json = common::run_cli(&["tables", "--json"]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vit_convert::mapping::builtin_ids());
    assert_eq!(v[0]["file"], "mappings/timm.toml");
    assert!(v[0]["rules"].as_u64().unwrap() > 10);
}

#[test]
fn tables_show_prints_the_shipped_toml_exactly() {
    for id in vit_convert::mapping::builtin_ids() {
        let out = common::run_cli(&["tables", "--show", id]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mappings")
            .join(format!("{id}.toml"));
        assert_eq!(stdout(&out), std::fs::read_to_string(file).unwrap(), "{id}");
    }
}

#[test]
fn tables_show_of_an_unknown_id_names_the_builtin_ones() {
    let out = common::run_cli(&["tables", "--show", "vit_huge"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("vit_huge") && err.contains("timm, dino"),
        "{err}"
    );
}

#[test]
fn tables_check_reports_the_file_and_line_of_a_bad_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = MappingTable::builtin("timm")
        .unwrap()
        .text()
        .replace("ops = [\"split(0, 3)\"]", "ops = [\"explode(0)\"]");
    std::fs::write(&path, &text).unwrap();
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let line = text.lines().position(|l| l.contains("explode")).unwrap() + 1;
    let err = stderr(&out);
    assert!(err.contains("bad.toml:"), "{err}");
    assert!(err.contains("explode"), "{err}");
    // The error names the rule's line (the `[[rule]]` header a few lines above the op).
    let named: usize = err
        .split("bad.toml:")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no line number in {err}"));
    assert!(
        named <= line && line - named < 5,
        "{named} vs {line}: {err}"
    );
}

/// The `toml` block of the README's worked example, verbatim.
fn readme_table() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/README.md"))
            .unwrap();
    let section = readme
        .split("## Worked example")
        .nth(1)
        .expect("mappings/README.md has a worked example");
    let block = section
        .split("```toml\n")
        .nth(1)
        .expect("the worked example has a toml block");
    block
        .split("\n```")
        .next()
        .expect("the toml block is closed")
        .to_string()
}

/// f32 `[r, c]` → `[c, r]`.
fn transpose(t: &Tensor) -> Tensor<'static> {
    let (r, c) = (t.shape[0], t.shape[1]);
    let v: Vec<[u8; 4]> = t
        .data
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect();
    let mut out = Vec::with_capacity(t.data.len());
    for j in 0..c {
        for i in 0..r {
            out.extend_from_slice(&v[i * c + j]);
        }
    }
    Tensor::new(DType::F32, vec![c, r], Cow::Owned(out)).unwrap()
}

/// The timm fixture's weights in the README's layout: `net/…` names, Linear weights `[in, out]`,
/// plus an optimizer entry outside `net/`.
fn mynet_checkpoint(dir: &Path) -> PathBuf {
    let timm = vit_convert::open(common::fixture("convert", "timm_vit/source.pth")).unwrap();
    let mut src = MemorySource::new();
    for info in timm.tensors() {
        let t = timm.read(&info.name).unwrap();
        let n = info.name.as_str();
        let linear = n.ends_with(".weight")
            && (n.contains(".attn.") || n.contains(".mlp.") || n.starts_with("head."));
        let name = n
            .replace("cls_token", "encoder.cls")
            .replace("pos_embed", "encoder.pos")
            .replace("patch_embed.proj", "encoder.patch")
            .replace("blocks.", "encoder.blocks.")
            .replace(".norm1.", ".ln1.")
            .replace(".norm2.", ".ln2.")
            .replace(".attn.proj.", ".attn.out.")
            .replace(".mlp.fc1.", ".mlp.0.")
            .replace(".mlp.fc2.", ".mlp.2.");
        let name = match name.strip_prefix("norm.") {
            Some(rest) => format!("encoder.norm.{rest}"),
            None => name,
        };
        let t = if linear {
            transpose(&t)
        } else {
            t.into_owned()
        };
        src.insert(&format!("net/{name}"), t).unwrap();
    }
    let step = Tensor::new(
        DType::I64,
        vec![],
        Cow::Owned(1234i64.to_le_bytes().to_vec()),
    )
    .unwrap();
    src.insert("optimizer/step", step).unwrap();
    let items = WriteItem::all(&src);
    let path = dir.join("ckpt.safetensors");
    vit_convert::write::write_safetensors(&path, &src, &items, None, &BTreeMap::new()).unwrap();
    path
}

#[test]
fn readme_worked_example_table_converts_its_layout_to_the_transformers_checkpoint() {
    let text = readme_table();
    let table = MappingTable::from_toml(&text, "mappings/README.md (worked example)").unwrap();
    assert_eq!(table.id(), "mynet");
    let dir = tempfile::tempdir().unwrap();
    let ckpt = mynet_checkpoint(dir.path());

    // The layout the README prints under "1. Look at the names".
    let listed = vit_convert::inspect::inspect(&ckpt).unwrap();
    let qkv = listed
        .tensors
        .iter()
        .find(|t| t.name == "net/encoder.blocks.0.attn.qkv.weight")
        .unwrap();
    assert_eq!(qkv.shape, [24, 72]);

    let out = dir.path().join("out");
    let opts = ConvertOptions {
        table: Some(table),
        overrides: ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let report = vit_convert::convert(&ckpt, &out, &opts).unwrap();
    assert_eq!(report.mapping.table, "mynet");
    assert_eq!(report.mapping.selected.as_deref(), Some("net"));
    assert_eq!(report.mapping.not_selected, ["optimizer/step"]);
    assert_eq!(report.architecture.name(), "ViTForImageClassification");

    // Tensor for tensor what transformers made from the original timm model.
    let d = vit_convert::diff::diff(
        out.join("model.safetensors"),
        common::fixture("convert", "timm_vit/hf/model.safetensors"),
        &DiffOptions::default(),
    )
    .unwrap();
    assert!(
        d.identical,
        "only in A {:?}, only in B {:?}, changed {:?}",
        d.only_in_a, d.only_in_b, d.changed
    );
    assert_eq!(d.common, 40);
}

#[test]
fn readme_worked_example_commands_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("mynet.toml");
    std::fs::write(&table, readme_table()).unwrap();
    let ckpt = mynet_checkpoint(dir.path());
    let table_arg = table.to_str().unwrap();

    let check = common::run_cli(&["tables", "--check", table_arg]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(stdout(&check).contains("table `mynet`"));

    let out = dir.path().join("out");
    let conv = common::run_cli(&[
        "--table",
        table_arg,
        "--num-heads",
        "2",
        ckpt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(conv.status.code(), Some(0), "{}", stderr(&conv));

    let verify = common::run_cli(&[
        "verify",
        out.to_str().unwrap(),
        "--input",
        common::fixture("convert", "timm_vit/io/input.npy")
            .to_str()
            .unwrap(),
        "--expected",
        common::fixture("convert", "timm_vit/io/logits_timm.npy")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));

    // hash --table on the checkpoint == hash --from hf on the output.
    let a = common::run_cli(&["hash", ckpt.to_str().unwrap(), "--table", table_arg]);
    let b = common::run_cli(&[
        "hash",
        out.join("model.safetensors").to_str().unwrap(),
        "--from",
        "hf",
    ]);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
}

/// Asserts exit 1 and exactly one stderr line holding every one of `needles`, no panic.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

/// The timm table with `pos_embed`'s rule given `ops`, written to `dir/evil.toml`; returns the
/// path and the rule's line.
fn timm_with_pos_ops(dir: &Path, ops: &str) -> (PathBuf, usize) {
    let timm = MappingTable::builtin("timm").unwrap().text().to_string();
    let text = timm.replace(
        "from = \"pos_embed\"\nshape = [1, \"T\", \"D\"]\n",
        &format!("from = \"pos_embed\"\nshape = [1, \"T\", \"D\"]\nops = [{ops}]\n"),
    );
    assert_ne!(text, timm);
    let line = text
        .lines()
        .position(|l| l == "from = \"pos_embed\"")
        .unwrap();
    let path = dir.join("evil.toml");
    std::fs::write(&path, text).unwrap();
    (path, line)
}

#[test]
fn tables_check_refuses_an_empty_strip_prefix_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loop.toml");
    let text = MappingTable::builtin("timm").unwrap().text().replace(
        "strip_prefixes = [\"module.\", \"_orig_mod.\"]",
        "strip_prefixes = [\"module.\", \"\"]",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("strip_prefixes"))
        .unwrap()
        + 1;
    std::fs::write(&path, &text).unwrap();
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    assert_refused(
        &out,
        &[
            &format!("loop.toml:{line}"),
            "strip_prefixes: an empty entry strips nothing",
        ],
    );
    // `--table` loads it the same way: refused before the checkpoint is looked at.
    let out_dir = dir.path().join("out");
    let conv = convert_timm_with(&path, &out_dir);
    assert_refused(&conv, &[&format!("loop.toml:{line}"), "strip_prefixes"]);
    assert!(!out_dir.exists());
}

#[test]
fn tables_check_of_a_one_mebibyte_table_is_quick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let mut text = MappingTable::builtin("timm").unwrap().text().to_string();
    let mut k = 0;
    while text.len() < (1 << 20) - 200 {
        text.push_str(&format!(
            "\n[[rule]]\nfrom = \"extra{k}.{{i}}.w\"\nshape = [\"D\"]\nto = \"x{k}.{{i}}\"\noptional = true\n"
        ));
        k += 1;
    }
    std::fs::write(&path, &text).unwrap();
    let start = std::time::Instant::now();
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rules = MappingTable::builtin("timm").unwrap().rule_count() + k;
    assert!(
        stdout(&out).contains(&format!("{rules} rules: ok")),
        "{}",
        stdout(&out)
    );
    // Linear in the text: well under a second; line numbers found by scanning the text from the
    // start for each of the ~13 000 rules took far longer.
    assert!(took.as_secs() < 30, "{took:?}");

    // The last rule's line is still exact.
    let bad = text.replace(&format!("to = \"x{}.{{i}}\"", k - 1), "to = \"\"");
    std::fs::write(&path, &bad).unwrap();
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    let line = bad.lines().count() - 4;
    assert_refused(&out, &[&format!("big.toml:{line}"), "empty name template"]);
}

#[test]
fn a_table_that_would_amplify_is_refused_before_outdir_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "timm_vit/source.pth");
    for ops in [
        "\"prepend_zeros(1, 1099511627776)\"",
        "\"prepend_zeros(1, 1073741824)\", \"drop_zeros(1, 1073741824)\"",
    ] {
        let (table, line) = timm_with_pos_ops(dir.path(), ops);
        let out_dir = dir.path().join("out");
        let out = common::run_cli(&[
            "--table",
            table.to_str().unwrap(),
            input.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
        ]);
        assert_refused(
            &out,
            &[
                &format!(
                    "tensor embeddings.position_embeddings (rule {}:{line})",
                    table.display()
                ),
                "table output bytes budget exceeded",
                "VIT_CONVERT_LIMIT_TABLE_OUTPUT_ALLOWANCE_BYTES",
            ],
        );
        assert!(!out_dir.exists(), "{ops}");
    }
}

#[test]
fn a_table_with_an_overflowing_shape_is_refused_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (table, line) = timm_with_pos_ops(
        dir.path(),
        &format!("\"prepend_zeros(1, {})\"", u64::MAX - 1),
    );
    let out_dir = dir.path().join("out");
    let out = convert_timm_with(&table, &out_dir);
    assert_refused(&out, &[&format!("evil.toml:{line}"), "size overflow"]);
    assert!(!out_dir.exists());
}

#[test]
fn the_table_output_allowance_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::fixture("convert", "timm_vit/source.pth");
    // Three zero rows of a tiny position embedding: within the default allowance, over 16 bytes.
    let (table, _) = timm_with_pos_ops(dir.path(), "\"prepend_zeros(1, 3)\"");
    let hash = |env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vit-convert"));
        cmd.args([
            "hash",
            input.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
        ]);
        if let Some(v) = env {
            cmd.env("VIT_CONVERT_LIMIT_TABLE_OUTPUT_ALLOWANCE_BYTES", v);
        }
        cmd.output().unwrap()
    };
    let ok = hash(None);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_refused(&hash(Some("16")), &["table output bytes budget exceeded"]);
}

#[test]
fn library_apply_refuses_an_amplifying_table_before_reading() {
    let text = MappingTable::builtin("timm").unwrap().text().replace(
        "from = \"pos_embed\"\nshape = [1, \"T\", \"D\"]\n",
        "from = \"pos_embed\"\nshape = [1, \"T\", \"D\"]\nops = [\"prepend_zeros(1, 1099511627776)\"]\n",
    );
    let table = MappingTable::from_toml(&text, "evil.toml").unwrap();
    let src = vit_convert::open(common::fixture("convert", "timm_vit/source.pth")).unwrap();
    let err = match table.apply(src.as_ref()) {
        Err(e) => e,
        Ok(_) => panic!("planned"),
    };
    match err.kind() {
        vit_convert::ErrorKind::BudgetExceeded {
            budget,
            limit,
            offset,
        } => {
            assert_eq!(*budget, "table output bytes");
            assert!(*offset > *limit && *offset > 1 << 40, "{offset} vs {limit}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tables_check_refuses_an_unknown_activation_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gleu.toml");
    let text = MappingTable::builtin("timm")
        .unwrap()
        .text()
        .replace("hidden_act = \"gelu\"", "hidden_act = \"gleu\"");
    assert!(text.contains("\"gleu\""));
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.contains("gleu")).unwrap() + 1;
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("gleu.toml:{line}:")), "{err}");
    // The library says the same, as a table error with the line.
    match MappingTable::from_toml(&text, "gleu.toml")
        .unwrap_err()
        .kind()
    {
        vit_convert::ErrorKind::Table { line: at, .. } => assert_eq!(*at, line),
        other => panic!("{other:?}"),
    }
    // And `convert --table` refuses it before converting anything.
    let out_dir = dir.path().join("out");
    let conv = common::run_cli(&[
        common::fixture("convert", "timm_vit/source.pth").as_os_str(),
        "-o".as_ref(),
        out_dir.as_os_str(),
        "--table".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(conv.status.code(), Some(1), "{}", stderr(&conv));
    assert!(!out_dir.join("config.json").exists());
}

#[test]
fn a_family_and_a_custom_table_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timm.toml");
    std::fs::write(&path, MappingTable::builtin("timm").unwrap().text()).unwrap();
    let input = common::fixture("convert", "timm_vit/source.pth");
    let out_dir = dir.path().join("out");
    let cli = common::run_cli(&[
        input.as_os_str(),
        "-o".as_ref(),
        out_dir.as_os_str(),
        "--from".as_ref(),
        "timm".as_ref(),
        "--table".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    assert!(!out_dir.exists());
    // The library: an InvalidOption, not the table silently winning.
    let opts = ConvertOptions {
        from: Some("timm".parse().unwrap()),
        table: Some(MappingTable::builtin("timm").unwrap()),
        ..Default::default()
    };
    let e = vit_convert::convert(&input, &out_dir, &opts).unwrap_err();
    assert!(
        matches!(e.kind(), vit_convert::ErrorKind::InvalidOption { .. }),
        "{e}"
    );
    assert!(!out_dir.join("model.safetensors").exists());
}

#[test]
fn tables_check_refuses_strip_prefixes_that_start_with_one_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.toml");
    let text = MappingTable::builtin("timm").unwrap().text().replace(
        "strip_prefixes = [\"module.\", \"_orig_mod.\"]",
        "strip_prefixes = [\"module.module.module.x\", \"module.\"]",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("strip_prefixes"))
        .unwrap()
        + 1;
    std::fs::write(&path, &text).unwrap();
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    let needles = [
        &format!("nested.toml:{line}") as &str,
        "strip_prefixes: `module.module.module.x` starts with `module.`",
    ];
    assert_refused(&out, &needles);
    let out_dir = dir.path().join("out");
    let conv = convert_timm_with(&path, &out_dir);
    assert_refused(&conv, &needles);
    assert!(!out_dir.exists());
}

#[test]
fn table_ops_on_an_empty_tensor_with_a_huge_axis_finish_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = MemorySource::new();
    let empty = Tensor::new(DType::F32, vec![1 << 60, 4, 0], Cow::Owned(Vec::new())).unwrap();
    src.insert("w", empty).unwrap();
    let ckpt = dir.path().join("empty.safetensors");
    let items = WriteItem::all(&src);
    vit_convert::write::write_safetensors(&ckpt, &src, &items, None, &BTreeMap::new()).unwrap();
    for ops in ["split(1, 2)", "prepend_zeros(1, 1)", "drop_zeros(1, 1)"] {
        let to = if ops.starts_with("split") {
            "[\"a\", \"b\"]"
        } else {
            "\"a\""
        };
        let table = dir.path().join("t.toml");
        std::fs::write(
            &table,
            format!(
                "[table]\nid = \"z\"\ndescription = \"z\"\nfamilies = [\"z\"]\n[model]\nlayer_norm_eps = 1e-6\nhidden_act = \"gelu\"\npreprocessor = \"vit\"\n[[rule]]\nfrom = \"w\"\nshape = [\"A\", \"B\", \"C\"]\nops = [\"{ops}\"]\nto = {to}\n"
            ),
        )
        .unwrap();
        let start = std::time::Instant::now();
        let out = common::run_cli(&[
            "hash",
            ckpt.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{ops}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("[1152921504606846976,"),
            "{}",
            stdout(&out)
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{ops}"
        );
    }
}

#[test]
fn tables_check_refuses_a_rule_whose_split_outputs_recompute_many_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("amp.toml");
    let ops = vec!["\"transpose(1, 0)\""; 15].join(", ");
    let to: Vec<String> = (0..64).map(|k| format!("\"o{k}\"")).collect();
    std::fs::write(
        &path,
        format!(
            "[table]\nid = \"z\"\ndescription = \"z\"\nfamilies = [\"z\"]\n[model]\nlayer_norm_eps = 1e-6\nhidden_act = \"gelu\"\npreprocessor = \"vit\"\n[[rule]]\nfrom = \"w\"\nshape = [\"A\", \"B\"]\nops = [{ops}, \"split(0, 64)\"]\nto = [{}]\n",
            to.join(", ")
        ),
    )
    .unwrap();
    let out = common::run_cli(&["tables", "--check", path.to_str().unwrap()]);
    assert_refused(
        &out,
        &[
            "amp.toml:9",
            "15 ops besides split/concat for each of 64 outputs",
        ],
    );
}

/// `vit-convert --table TABLE <the timm fixture> -o OUT`.
fn convert_timm_with(table: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    common::run_cli(&[
        "--table",
        table.to_str().unwrap(),
        common::fixture("convert", "timm_vit/source.pth")
            .to_str()
            .unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
}
