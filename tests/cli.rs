//! CLI conventions: `--help` with an example and the exit codes on every command, `--json`
//! everywhere, `--quiet`, `-v` error chains, usage errors, the default command, and silence on
//! a non-terminal stderr.

mod common;

use serde_json::Value;

const COMMANDS: [&str; 7] = [
    "convert", "forward", "verify", "inspect", "tables", "hash", "diff",
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `args`, with `-v` appended (a global flag: valid after the command's own arguments) when `v`.
fn verbose(v: bool, mut args: Vec<String>) -> Vec<String> {
    if v {
        args.push("-v".into());
    }
    args
}

fn conv(rel: &str) -> String {
    common::fixture("convert", rel)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_command_help_has_an_example_and_the_exit_codes() {
    let top = common::run_cli(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    let top = text(&top.stdout);
    assert!(top.contains("Examples:") && top.contains("Exit codes: 0 ok, 1 error, 2 usage, 3"));
    for c in COMMANDS {
        assert!(top.contains(c), "top-level help lists {c}");
        let out = common::run_cli(&[c, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{c}");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example:") || help.contains("Examples:"),
            "{c} --help has no example:\n{help}"
        );
        assert!(
            help.contains(&format!("vit-convert {c}"))
                || (c == "convert" && help.contains("vit-convert --from")),
            "{c}'s example runs {c}:\n{help}"
        );
        assert!(help.contains("Exit codes: 0 ok"), "{c}:\n{help}");
        for global in ["--json", "--quiet", "--verbose"] {
            assert!(help.contains(global), "{c} --help shows {global}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["inspect"],
        vec!["hash", "x", "--from", "nope"],
        vec!["tables", "--bogus"],
        vec!["-q", "-v", "tables"],
        vec![],
    ] {
        let out = common::run_cli(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(common::run_cli(&["--version"]).status.code(), Some(0));
}

/// Each command's `--json` output parses, and text output stays off stdout.
#[test]
fn json_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_string_lossy().into_owned();
    let runs: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--json".into(),
                "--from".into(),
                "timm".into(),
                conv("timm_vit/source.pth"),
                "-o".into(),
                out_s.clone(),
                "--num-heads".into(),
                "2".into(),
            ],
            "architecture",
        ),
        (
            vec![
                "inspect".into(),
                conv("timm_vit/source.pth"),
                "--json".into(),
            ],
            "tensors",
        ),
        (vec!["tables".into(), "--json".into()], "0"),
        (
            vec![
                "tables".into(),
                "--show".into(),
                "jax".into(),
                "--json".into(),
            ],
            "text",
        ),
        (
            vec!["hash".into(), conv("timm_vit/source.pth"), "--json".into()],
            "digest",
        ),
        (
            vec![
                "diff".into(),
                conv("timm_vit/source.pth"),
                conv("timm_vit/legacy.pth"),
                "--json".into(),
            ],
            "identical",
        ),
        (
            vec![
                "forward".into(),
                out_s.clone(),
                "--input".into(),
                conv("timm_vit/io/batch5.npy"),
                "--top-k".into(),
                "2".into(),
                "--json".into(),
            ],
            "top_k",
        ),
        (
            vec![
                "verify".into(),
                out_s.clone(),
                "--input".into(),
                conv("timm_vit/io/input.npy"),
                "--expected".into(),
                conv("timm_vit/io/logits_timm.npy"),
                "--json".into(),
            ],
            "passed",
        ),
    ];
    for (args, key) in runs {
        let o = common::run_cli(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o.stdout)));
        let has = match key.parse::<usize>() {
            Ok(i) => v.get(i).is_some(),
            Err(_) => v.get(key).is_some(),
        };
        assert!(has, "{args:?}: no `{key}` in {v}");
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o.stderr));
    }
}

#[test]
fn forward_json_has_the_output_shape_files_and_top_k_classes() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("y.npy");
    let o = common::run_cli(&[
        "forward".into(),
        conv("deit_distilled/hf"),
        "--input".into(),
        conv("deit_distilled/io/batch5.npy"),
        "--output".into(),
        y.to_string_lossy().into_owned(),
        "--top-k".into(),
        "3".into(),
        "--json".into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["output"], "logits");
    assert_eq!(v["shape"][0], 5);
    assert_eq!(v["written"][0], y.to_string_lossy().as_ref());
    let top = v["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let classes = top[0]["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 3);
    let p: Vec<f64> = classes
        .iter()
        .map(|c| c["probability"].as_f64().unwrap())
        .collect();
    assert!(p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0, "{p:?}");
    assert!(y.exists());
}

#[test]
fn quiet_prints_nothing_and_the_exit_code_tells() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Global flags before the default command.
    let o = common::run_cli(&[
        "-q".into(),
        "--from".into(),
        "timm".into(),
        conv("timm_vit/source.pth"),
        "-o".into(),
        out.to_string_lossy().into_owned(),
        "--num-heads".into(),
        "2".into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    assert!(out.join("model.safetensors").exists());

    let bad = common::fixture("convert", "timm_vit/io/logits_hf.npy");
    let mut perturbed = vit_convert::verify::F32Array::read_npy(&bad).unwrap();
    perturbed.data[0] += 1.0;
    let p = dir.path().join("bad.npy");
    perturbed.write_npy(&p).unwrap();
    let o = common::run_cli(&[
        "verify".into(),
        out.to_string_lossy().into_owned(),
        "--input".into(),
        conv("timm_vit/io/input.npy"),
        "--expected".into(),
        p.to_string_lossy().into_owned(),
        "--quiet".into(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());

    // Errors still print.
    let o = common::run_cli(&["-q", "inspect", "/nonexistent/model.pth"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr).lines().count(), 1);
}

#[test]
fn errors_are_one_line_and_verbose_prints_the_chain_and_kind() {
    let missing = "/nonexistent/overrides.json";
    let args = |v: bool| {
        verbose(
            v,
            vec![
                "--from".into(),
                "timm".into(),
                conv("timm_vit/source.pth"),
                "-o".into(),
                "/nonexistent/out".into(),
                "--config".into(),
                missing.into(),
            ],
        )
    };
    let o = common::run_cli(&args(false));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {missing}: open: ")) && err.contains("os error"),
        "{err}"
    );

    let o = common::run_cli(&args(true));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&format!("error: {missing}: open: ")),
        "{err}"
    );
    assert!(
        lines[1].starts_with("  caused by: ") && lines[1].contains("os error"),
        "{err}"
    );

    let hostile = common::fixture("hostile", "zip_posix_system.pth");
    let o = common::run_cli(&[
        "-v".into(),
        "inspect".into(),
        hostile.to_string_lossy().into_owned(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("  kind: DisallowedGlobal {"), "{err}");
    assert!(
        err.contains(&format!("  file: {}", hostile.display())),
        "{err}"
    );
}

#[test]
fn verbose_lists_every_ignored_tensor_and_timings_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let run = |v: bool| {
        common::run_cli(&verbose(
            v,
            vec![
                "--from".into(),
                "dino".into(),
                conv("dino_backbone/full_checkpoint.pth"),
                "-o".into(),
                dir.path().join("o").to_string_lossy().into_owned(),
                "--num-heads".into(),
                "4".into(),
            ],
        ))
    };
    let short = run(false);
    assert_eq!(short.status.code(), Some(0), "{}", text(&short.stderr));
    let short_out = text(&short.stdout);
    assert!(short_out.contains("-v lists all"), "{short_out}");
    assert!(
        short.stderr.is_empty(),
        "no progress or detail off a terminal"
    );
    let long = run(true);
    let long_out = text(&long.stdout);
    let ignored = long_out
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("head."))
        .count();
    assert!(ignored > 1, "{long_out}");
    assert!(
        text(&long.stderr).contains("converted in"),
        "{}",
        text(&long.stderr)
    );
}

/// `vit-convert inspect x --json | head -0`: the reader is gone before anything is written. The
/// JSON writer's broken pipe (a serde_json error wrapping the I/O error) is no error message,
/// just as a text writer's is not.
#[test]
fn json_into_a_closed_pipe_is_silent() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let file = conv("timm_vit/hf/model.safetensors");
    for json in [true, false] {
        let mut args = vec!["inspect", file.as_str()];
        if json {
            args.push("--json");
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vit-convert"))
            .args(&args)
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
}
