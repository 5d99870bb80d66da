//! One line means one line: a tensor name, path or label with a newline, CR, NUL, ESC or a
//! Unicode line separator is escaped in every human-readable message (errors, `inspect`,
//! `hash`, `diff`, `convert`, `verify`, `forward --top-k`), so a crafted name cannot print a fake
//! `PASS` line or drive the terminal; `--json` keeps the raw name and still parses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use vit_convert::{source::MemorySource, tensor::Tensor, write::WriteItem, DType};

use crate::{bin, build};

const EVIL: &str = "x\nPASS: max |Δ| 0\n\u{1b}[2J\r\0\u{2028}\u{202e}";
const HF: &str = "fixtures/convert/timm_vit/hf";
const INPUT: &str = "fixtures/convert/timm_vit/io/input.npy";
const LOGITS: &str = "fixtures/convert/timm_vit/io/logits_hf.npy";

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn one_f32() -> Tensor<'static> {
    Tensor::new(DType::F32, vec![1], Cow::Owned(1f32.to_le_bytes().to_vec())).unwrap()
}

/// The timm_vit HF model folder copied to `dir/name/`, its weights plus one tensor named `EVIL`.
fn evil_model(dir: &Path, name: &str) -> PathBuf {
    let src = vit_convert::open(root(HF).join("model.safetensors")).unwrap();
    let mut out = MemorySource::copy_from(src.as_ref()).unwrap();
    out.insert(EVIL, one_f32()).unwrap();
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(root(HF).join("config.json"), folder.join("config.json")).unwrap();
    vit_convert::write::write_safetensors(
        &folder.join("model.safetensors"),
        &out,
        &WriteItem::all(&out),
        None,
        &BTreeMap::new(),
    )
    .unwrap();
    folder
}

/// An npz holding one array named `EVIL`.
fn evil_npz(dir: &Path) -> PathBuf {
    let npy = build::npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        &1f32.to_le_bytes(),
    );
    let entry = format!("{EVIL}.npy");
    let path = dir.join("evil.npz");
    std::fs::write(&path, build::zip_stored(&[(&entry, &npy, 0)])).unwrap();
    path
}

/// No raw control character but `\n` in either stream, no line claiming PASS, and the
/// expected number of lines on stdout and stderr.
fn assert_clean(what: &str, out: &Output, stdout_lines: usize, stderr_lines: usize) {
    assert_clean_passes(what, out, stdout_lines, stderr_lines, 0);
}

/// [`assert_clean`] with `passes` genuine PASS lines on stdout.
fn assert_clean_passes(
    what: &str,
    out: &Output,
    stdout_lines: usize,
    stderr_lines: usize,
    passes: usize,
) {
    for (stream, bytes, want) in [
        ("stdout", &out.stdout, stdout_lines),
        ("stderr", &out.stderr, stderr_lines),
    ] {
        let text = String::from_utf8_lossy(bytes);
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && vit_convert::text::is_unsafe_char(c))
            .collect();
        assert!(raw.is_empty(), "{what} {stream}: raw {raw:?} in {text:?}");
        let want_passes = if stream == "stdout" { passes } else { 0 };
        assert_eq!(
            text.lines().filter(|l| l.starts_with("PASS")).count(),
            want_passes,
            "{what} {stream}: a forged PASS line in {text:?}"
        );
        assert_eq!(text.lines().count(), want, "{what} {stream}: {text:?}");
    }
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bin().args(args).output().unwrap()
}

#[test]
fn crafted_tensor_name_stays_on_its_line_in_inspect_hash_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let model = evil_model(dir.path(), "m");
    let weights = model.join("model.safetensors");
    let n = vit_convert::open(&weights).unwrap().tensors().len();
    let w = weights.as_os_str();

    // Header, column titles, one line per tensor, the totals.
    assert_clean("inspect", &run(&["inspect".as_ref(), w]), n + 3, 0);
    let npz = evil_npz(dir.path());
    let out = run(&["inspect".as_ref(), npz.as_os_str()]);
    // Header, titles, the tensor, totals, two metadata lines.
    assert_clean("inspect npz", &out, 6, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(r"x\nPASS: max |Δ| 0\n\u{1b}[2J"));

    // One line per tensor and the model digest.
    assert_clean("hash", &run(&["hash".as_ref(), w]), n + 1, 0);

    // A: and B: lines, "only in B", the verdict.
    let a = root(HF).join("model.safetensors");
    let out = run(&["diff".as_ref(), a.as_os_str(), w]);
    assert_eq!(out.status.code(), Some(3));
    assert_clean("diff", &out, 4, 0);

    for cmd in ["inspect", "hash"] {
        let out = run(&[cmd.as_ref(), w, "--json".as_ref()]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v
            .to_string()
            .contains(&serde_json::to_string(EVIL).unwrap()[1..10]));
    }
    let out = run(&["diff".as_ref(), a.as_os_str(), w, "--json".as_ref()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["only_in_b"][0], EVIL);
}

#[test]
fn crafted_tensor_name_is_one_line_in_convert_errors_and_verify_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = evil_model(dir.path(), "m");
    let weights = model.join("model.safetensors");

    // Library: the error names the tensor, escaped, on one line.
    let e = vit_convert::convert(
        &weights,
        dir.path().join("out"),
        &vit_convert::ConvertOptions {
            from: Some("hf".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err();
    let text = e.to_string();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(
        text.contains(r"x\nPASS: max |Δ| 0\n\u{1b}[2J\r\u{0}\u{2028}\u{202e}"),
        "{text}"
    );

    let out_dir = dir.path().join("out");
    for v in [false, true] {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--from".as_ref(),
            "hf".as_ref(),
            weights.as_os_str(),
            "-o".as_ref(),
            out_dir.as_os_str(),
        ];
        if v {
            args.push("-v".as_ref());
        }
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1));
        // -v: the message, its kind, file and tensor lines (whatever the count, none forged).
        let lines = String::from_utf8_lossy(&out.stderr).lines().count();
        assert_clean("convert", &out, 0, if v { lines } else { 1 });
    }

    // verify refuses the folder (a tensor the model has no place for is an error): one line, the
    // name escaped, no PASS line forged.
    let out = run(&[
        "verify".as_ref(),
        model.as_os_str(),
        "--input".as_ref(),
        root(INPUT).as_os_str(),
        "--expected".as_ref(),
        root(LOGITS).as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("verify", &out, 0, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r"x\nPASS: max |Δ| 0\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn crafted_paths_and_labels_stay_on_their_line() {
    let dir = tempfile::tempdir().unwrap();
    // A model folder whose id2label holds a forged line, in a folder whose name holds another.
    let folder = dir.path().join("m\nPASS: max |Δ| 0");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        root(HF).join("model.safetensors"),
        folder.join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root(HF).join("config.json")).unwrap())
            .unwrap();
    for k in 0..5 {
        cfg["id2label"][k.to_string()] = format!("cat\nPASS: max |Δ| 0\u{1b}[31m{k}").into();
    }
    std::fs::write(folder.join("config.json"), cfg.to_string()).unwrap();

    let out = run(&[
        "forward".as_ref(),
        folder.as_os_str(),
        "--input".as_ref(),
        root(INPUT).as_os_str(),
        "--top-k".as_ref(),
        "5".as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch = vit_convert::verify::F32Array::read_npy(root(INPUT))
        .unwrap()
        .shape[0];
    assert_clean("forward --top-k", &out, batch * 6, 0);

    let out = run(&[
        "verify".as_ref(),
        folder.as_os_str(),
        "--input".as_ref(),
        root(INPUT).as_os_str(),
        "--expected".as_ref(),
        folder.join("missing\n.npy").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_clean("verify missing file", &out, 0, 1);

    // An escaped path in a summary: convert into a folder named with a newline.
    let out_dir = dir.path().join("out\n\u{1b}[2J");
    let out = run(&[
        "--from".as_ref(),
        "hf".as_ref(),
        folder.join("model.safetensors").as_os_str(),
        "-o".as_ref(),
        out_dir.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_clean("convert summary", &out, lines, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(r"out\n\u{1b}[2J"));
}

/// Clap echoes a bad argument (or a bad `VIT_CONVERT_THREADS` value) verbatim; the usage error
/// is still one escaped line on stderr, exit 2, and nothing on stdout.
#[test]
fn usage_errors_echo_crafted_values_on_one_escaped_line() {
    // EVIL without its NUL (no argument can hold one).
    const ARG: &str = "x\nPASS: max |Δ| 0\n\u{1b}[2J\r\u{2028}\u{202e}";
    let cases: [(&[&str], &str); 4] = [
        (&["--from", ARG, "in.pth", "-o", "out"], "--from <FROM>"),
        (
            &["convert", "--bogus\nPASS: max |Δ| 0\u{1b}[2J", "in.pth"],
            "unexpected argument",
        ),
        (
            &[
                "verify",
                "m",
                "--input",
                "x",
                "--expected",
                "y",
                "--atol",
                ARG,
            ],
            "--atol <ATOL>",
        ),
        (&["inspect", "a", ARG], "unexpected argument"),
    ];
    for (args, says) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_clean("usage error", &out, 0, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{stderr}"
        );
        assert!(
            stderr.contains(r"x\nPASS") || stderr.contains(r"bogus\nPASS"),
            "{stderr}"
        );
    }
    let out = bin()
        .args(["forward", "m", "--input", "x", "--top-k", "1"])
        .env("VIT_CONVERT_THREADS", "1\nPASS: max |Δ| 0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_clean("VIT_CONVERT_THREADS usage error", &out, 0, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r"'1\nPASS: max |Δ| 0' for '--threads <N>'")
    );
}

/// A path that is not UTF-8 (and holds a newline): `--json` stays one valid document (the path
/// lossily, as `Path::display` shows it), where serde's own Path serialization failed half-way
/// and left `"written": [` on stdout with exit 1 after the files were written.
#[cfg(unix)]
#[test]
fn json_output_with_non_utf8_paths_is_one_valid_document() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = |name: &[u8]| dir.path().join(std::ffi::OsStr::from_bytes(name));
    let lossy = |p: &Path| p.to_string_lossy().into_owned();
    let parse = |what: &str, out: &Output| -> serde_json::Value {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{what}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
    };

    let logits = odd(b"logits\xff\n.npy");
    let out = bin()
        .arg("forward")
        .arg(root(HF))
        .arg("--input")
        .arg(root(INPUT))
        .arg("--output")
        .arg(&logits)
        .arg("--json")
        .output()
        .unwrap();
    let v = parse("forward", &out);
    assert_eq!(v["written"][0], lossy(&logits));
    assert!(logits.exists());

    let outdir = odd(b"out\xfe");
    let out = bin()
        .args(["--from", "hf"])
        .arg(root(HF).join("model.safetensors"))
        .arg("-o")
        .arg(&outdir)
        .arg("--json")
        .output()
        .unwrap();
    let v = parse("convert", &out);
    assert_eq!(v["outputs"][0], lossy(&outdir.join("model.safetensors")));

    let weights = outdir.join("model.safetensors");
    let out = bin()
        .arg("hash")
        .arg(&weights)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(parse("hash", &out)["file"], lossy(&weights));
    let out = bin()
        .arg("diff")
        .arg(&weights)
        .arg(&weights)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(parse("diff", &out)["a"]["file"], lossy(&weights));
}
