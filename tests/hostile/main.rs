//! Hostile inputs end to end: every refusal the threat model (SECURITY.md) promises, through the
//! library (asserting the error kind and its key fields) and through the CLI (exit 1, one line on
//! stderr naming the file, never a panic), plus the output-safety guarantees.
//!
//! Set `VIT_CONVERT_WRITE_HOSTILE=DIR` to also write every case into DIR (for
//! `fuzz/seed_corpus.sh` and `scripts`-style measurements); tests never write into the tree.

mod build;
mod cases;
mod inputs;
#[path = "../common/msgpack.rs"]
mod msgpack;
mod output;
mod overflow;
mod side;
#[cfg(unix)]
mod special;
mod text;
mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;

use vit_convert::{Error, TensorSource};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vit-convert"))
}

/// Opens and reads every tensor; the first error.
fn first_error(path: &Path) -> Option<Error> {
    let src: Box<dyn TensorSource> = match vit_convert::open(path) {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    for t in src.tensors() {
        if let Err(e) = src.read(&t.name) {
            return Some(e);
        }
    }
    None
}

/// Every case, built once for all tests of this binary.
fn all_cases() -> &'static [cases::Case] {
    static CASES: std::sync::OnceLock<Vec<cases::Case>> = std::sync::OnceLock::new();
    CASES.get_or_init(cases::all)
}

/// Writes every case into a fresh temp dir (and into `VIT_CONVERT_WRITE_HOSTILE` if set).
fn written() -> (tempfile::TempDir, Vec<(&'static cases::Case, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    let export = std::env::var_os("VIT_CONVERT_WRITE_HOSTILE").map(PathBuf::from);
    let out = all_cases()
        .iter()
        .map(|c| {
            let p = dir.path().join(c.name);
            std::fs::write(&p, &c.bytes).unwrap();
            if let Some(d) = &export {
                std::fs::create_dir_all(d).unwrap();
                std::fs::write(d.join(c.name), &c.bytes).unwrap();
            }
            (c, p)
        })
        .collect();
    (dir, out)
}

#[test]
fn every_hostile_case_is_refused_with_its_error_kind() {
    let (_dir, cases) = written();
    let mut failures = Vec::new();
    for (case, path) in &cases {
        match first_error(path) {
            None => failures.push(format!("{}: opened and read without error", case.name)),
            Some(e) if !(case.check)(&e) => failures.push(format!(
                "{}: got {:?}\n    want {}",
                case.name,
                e.kind(),
                case.expect
            )),
            Some(e) => {
                // Every error names the file it concerns.
                if e.path() != Some(path.as_path()) {
                    failures.push(format!("{}: error without its path: {e}", case.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 50, "{} cases", cases.len());
}

/// Runs the CLI; asserts exit 1 and exactly one stderr line naming the file, no panic.
fn assert_cli_refuses(args: &[&std::ffi::OsStr], file: &Path, failures: &mut Vec<String>) {
    let out = bin().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file.file_name().unwrap().to_string_lossy();
    let lines: Vec<&str> = stderr.lines().collect();
    let ok = out.status.code() == Some(1)
        && lines.len() == 1
        && lines[0].starts_with("error: ")
        && lines[0].contains(name.as_ref())
        && !stderr.contains("panicked");
    if !ok {
        failures.push(format!(
            "{name}: {:?}: exit {:?}, stderr {stderr:?}",
            args.first(),
            out.status.code()
        ));
    }
}

#[test]
fn every_hostile_case_through_cli_inspect_exits_1_with_one_line() {
    let (_dir, cases) = written();
    let mut failures = Vec::new();
    for (_, path) in &cases {
        assert_cli_refuses(&["inspect".as_ref(), path.as_os_str()], path, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `vit-convert --from timm FILE -o OUT` must refuse the file and write no weights.
fn assert_cli_convert_refuses(file: &Path, out: &Path, failures: &mut Vec<String>) {
    let args = [
        "--from".as_ref(),
        "timm".as_ref(),
        file.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    assert_cli_refuses(&args, file, failures);
    if out.join("model.safetensors").exists() {
        failures.push(format!("{}: model.safetensors written", file.display()));
    }
}

#[test]
fn every_hostile_case_through_cli_convert_exits_1_and_writes_nothing() {
    let (dir, cases) = written();
    let mut failures = Vec::new();
    for (case, path) in &cases {
        let out = dir.path().join(format!("out-{}", case.name));
        assert_cli_convert_refuses(path, &out, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn committed_hostile_fixtures_through_cli_exit_1_with_one_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile");
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            continue;
        }
        n += 1;
        // Truncated files may list fine and fail only when read: convert reads every tensor.
        let tmp = tempfile::tempdir().unwrap();
        assert_cli_convert_refuses(&path, &tmp.path().join("out"), &mut failures);
    }
    assert!(n >= 10, "{n} hostile fixtures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cli_budgets_are_raised_and_lowered_by_environment_variables() {
    let (_dir, cases) = written();
    let deep = &cases
        .iter()
        .find(|(c, _)| c.name == "deep_nesting.pth")
        .unwrap()
        .1;
    // Refused by default, naming the variable that raises the budget …
    let out = bin().arg("inspect").arg(deep).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("container nesting budget exceeded"),
        "{stderr}"
    );
    assert!(
        stderr.contains("VIT_CONVERT_LIMIT_NESTING_DEPTH"),
        "{stderr}"
    );
    // … which, raised, lets the (tensor-less) file through.
    let out = bin()
        .arg("inspect")
        .arg(deep)
        .env("VIT_CONVERT_LIMIT_NESTING_DEPTH", "200000")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A lowered budget refuses ordinary files, in every container that lists many tensors.
    let readers = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/readers");
    for file in [
        "zip_p2.pth",
        "legacy_p2.pth",
        "jax_vit.npz",
        "small.safetensors",
    ] {
        let out = bin()
            .arg("inspect")
            .arg(readers.join(file))
            .env("VIT_CONVERT_LIMIT_TENSORS", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(
            stderr.contains("tensor count budget exceeded: limit 1"),
            "{stderr}"
        );
    }
    let fixture = readers.join("zip_p2.pth");

    // A misspelt or malformed variable is a usage error, never ignored.
    for (k, v) in [
        ("VIT_CONVERT_LIMIT_TENSOR", "10"),
        ("VIT_CONVERT_LIMIT_TENSORS", "ten"),
    ] {
        let out = bin()
            .arg("inspect")
            .arg(&fixture)
            .env(k, v)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{k}={v}: {stderr}");
        assert!(stderr.contains(k), "{stderr}");
    }
}

#[test]
fn memo_bomb_opens_in_linear_work_with_shared_references() {
    use build::*;
    // t0 = (T, T); t_{i+1} = (t_i, t_i): 2^64 tensor references if copied, 64 tuples when shared.
    let mut p = P::new(2)
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .op(&[BINPUT, 0, POP]);
    for _ in 0..64 {
        p = p.op(&[BINGET, 0, BINGET, 0, TUPLE2, BINPUT, 0, POP]);
    }
    let bytes = torch_zip(&p.op(&[BINGET, 0]).stop(), &[("0", &six())], None);
    let src = vit_convert::open_bytes(vit_convert::FileBytes::from_vec(bytes)).unwrap();
    // Each shared tuple is walked once: the innermost pair holds the two listed tensors.
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|n| n.split('/').count() == 64),
        "{names:?}"
    );
}

#[test]
fn oversized_config_json_beside_hf_weights_is_refused_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/convert/timm_vit/hf/model.safetensors"),
        &weights,
    )
    .unwrap();
    let mut config = vec![b' '; 17 << 20];
    config[0] = b'{';
    *config.last_mut().unwrap() = b'}';
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let out = dir.path().join("out");
    let r = bin()
        .args(["--from", "hf"])
        .arg(&weights)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("config.json")
            && stderr.contains("config file bytes budget exceeded")
            && stderr.contains("VIT_CONVERT_LIMIT_CONFIG_FILE_BYTES"),
        "{stderr}"
    );
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn flax_budgets_name_their_variables_and_yield_to_them() {
    let (_dir, cases) = written();
    let file = |name: &str| &cases.iter().find(|(c, _)| c.name == name).unwrap().1;
    for (name, budget, var, raised) in [
        (
            "flax_values_bomb.msgpack",
            "flax values budget exceeded",
            "VIT_CONVERT_LIMIT_FLAX_VALUES",
            "2M",
        ),
        (
            "flax_deep_maps.msgpack",
            "container nesting budget exceeded",
            "VIT_CONVERT_LIMIT_NESTING_DEPTH",
            "4K",
        ),
        (
            "flax_tensor_count.msgpack",
            "tensor count budget exceeded",
            "VIT_CONVERT_LIMIT_TENSORS",
            "1M",
        ),
        (
            "flax_tensor_name_bytes.msgpack",
            "tensor name bytes budget exceeded",
            "VIT_CONVERT_LIMIT_TENSOR_NAME_BYTES",
            "128M",
        ),
    ] {
        let out = bin().arg("inspect").arg(file(name)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(budget) && stderr.contains(var),
            "{name}: {stderr}"
        );
        let out = bin()
            .arg("inspect")
            .arg(file(name))
            .env(var, raised)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} with {var}={raised}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn cli_inspect_lists_a_tensor_name_longer_than_any_format_width() {
    // `std::fmt` panics on a padding width over u16::MAX; names are budgeted at 64 MiB.
    let name = "n".repeat(70_000);
    let bytes = build::safetensors(
        &format!(r#"{{"{name}":{{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}}}"#),
        &[7],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long_name.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let out = bin().arg("inspect").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
}
