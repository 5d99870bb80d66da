//! Special files never hang: a FIFO (with no writer), a socket, `/dev/zero`, `/dev/null` or a
//! directory given wherever a file is read — checkpoint, `--config`, `--table`, `--input`,
//! `--expected`, `--image`, a model folder's `config.json` / `model.safetensors` /
//! `preprocessor_config.json`, a `config.json` beside `--from hf` weights, either side of
//! `diff`, `hash`, `inspect`, `tables --check` — is refused at once, naming what it is.

use std::ffi::OsString;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vit_convert::ErrorKind;

use crate::bin;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The special files, and the kind each is refused as.
const SPECIALS: &[(&str, &str)] = &[
    ("fifo", "fifo"),
    ("socket", "socket"),
    ("zero", "character device"),
    ("null", "character device"),
    ("dir", "directory"),
];

/// Makes the special file `what` at `path` (a device as a symlink to it: symlinks are
/// followed); the listener keeps a socket bound.
fn make(what: &str, path: &Path) -> Option<UnixListener> {
    match what {
        "fifo" => {
            let ok = Command::new("mkfifo").arg(path).status().unwrap();
            assert!(ok.success(), "mkfifo");
            None
        }
        "socket" => Some(UnixListener::bind(path).unwrap()),
        "zero" => {
            std::os::unix::fs::symlink("/dev/zero", path).unwrap();
            None
        }
        "null" => {
            std::os::unix::fs::symlink("/dev/null", path).unwrap();
            None
        }
        "dir" => {
            std::fs::create_dir(path).unwrap();
            None
        }
        other => panic!("{other}"),
    }
}

/// A model folder: the converted timm fixture (symlinks to it) with a preprocessor config,
/// `special` (one of its three files) replaced by the special file `what`.
fn model_dir(root: &Path, special: &str, what: &str) -> (PathBuf, Option<UnixListener>) {
    let dir = root.join(format!("model-{special}-{what}"));
    std::fs::create_dir(&dir).unwrap();
    let hf = fixture("convert/timm_vit/hf");
    let mut listener = None;
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        let p = dir.join(f);
        if f == special {
            listener = make(what, &p);
        } else if f == "preprocessor_config.json" {
            std::fs::copy(fixture("convert/image/vit/preprocessor_config.json"), &p).unwrap();
        } else {
            std::os::unix::fs::symlink(hf.join(f), &p).unwrap();
        }
    }
    (dir, listener)
}

/// Runs the CLI, failing the test if it has not finished within 20 seconds (it is killed).
fn run_bounded(args: &[OsString]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            child.wait().ok();
            panic!("vit-convert {args:?} hung (killed after 20 s)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn os(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

/// Every entry point of the CLI with the special file `what` in one place; for each, the
/// arguments and the path that must be named.
fn cases(root: &Path, what: &str) -> (Vec<(Vec<OsString>, PathBuf)>, Vec<UnixListener>) {
    let mut keep = Vec::new();
    let special = root.join(format!("special-{what}"));
    keep.extend(make(what, &special));
    let pth = fixture("convert/timm_vit/source.pth");
    let hf = fixture("convert/timm_vit/hf");
    let input = fixture("convert/timm_vit/io/input.npy");
    let expected = fixture("convert/timm_vit/io/logits_hf.npy");
    let out = root.join(format!("out-{what}"));
    let npy = root.join(format!("o-{what}.npy"));
    let mut v: Vec<(Vec<OsString>, PathBuf)> = vec![
        (os(&[&"convert", &special, &"-o", &out]), special.clone()),
        (
            os(&[
                &"convert",
                &"--from",
                &"timm",
                &pth,
                &"--config",
                &special,
                &"-o",
                &out,
            ]),
            special.clone(),
        ),
        (
            os(&[&"convert", &pth, &"--table", &special, &"-o", &out]),
            special.clone(),
        ),
        (
            os(&[&"forward", &hf, &"--input", &special, &"--output", &npy]),
            special.clone(),
        ),
        (
            os(&[&"verify", &hf, &"--input", &input, &"--expected", &special]),
            special.clone(),
        ),
        (
            os(&[
                &"verify",
                &hf,
                &"--input",
                &special,
                &"--expected",
                &expected,
            ]),
            special.clone(),
        ),
        (os(&[&"diff", &special, &pth]), special.clone()),
        (os(&[&"diff", &pth, &special]), special.clone()),
        (os(&[&"hash", &special]), special.clone()),
        (os(&[&"inspect", &special]), special.clone()),
        (os(&[&"tables", &"--check", &special]), special.clone()),
    ];
    // An image, and the three files of a model folder.
    let (good, l) = model_dir(root, "none", what);
    keep.extend(l);
    v.push((
        os(&[&"forward", &good, &"--image", &special, &"--output", &npy]),
        special.clone(),
    ));
    for f in ["config.json", "model.safetensors"] {
        let (dir, l) = model_dir(root, f, what);
        keep.extend(l);
        v.push((
            os(&[&"forward", &dir, &"--input", &input, &"--output", &npy]),
            dir.join(f),
        ));
    }
    let (dir, l) = model_dir(root, "preprocessor_config.json", what);
    keep.extend(l);
    let cat = fixture("convert/image/cat.png");
    v.push((
        os(&[&"forward", &dir, &"--image", &cat, &"--output", &npy]),
        dir.join("preprocessor_config.json"),
    ));
    // config.json beside `--from hf` weights.
    let side = root.join(format!("side-{what}"));
    std::fs::create_dir(&side).unwrap();
    std::fs::copy(hf.join("model.safetensors"), side.join("model.safetensors")).unwrap();
    keep.extend(make(what, &side.join("config.json")));
    v.push((
        os(&[
            &"convert",
            &"--from",
            &"hf",
            &side.join("model.safetensors"),
            &"-o",
            &out,
        ]),
        side.join("config.json"),
    ));
    (v, keep)
}

#[test]
fn special_files_anywhere_in_the_cli_are_refused_at_once() {
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (what, kind) in SPECIALS {
        let (cases, _keep) = cases(root.path(), what);
        for (args, path) in cases {
            let r = run_bounded(&args);
            let stderr = String::from_utf8_lossy(&r.stderr);
            let want = format!("not a regular file (it is a {kind})");
            let ok = r.status.code() == Some(1)
                && stderr.lines().count() == 1
                && stderr.contains(&want)
                && stderr.contains(&path.display().to_string());
            if !ok {
                failures.push(format!(
                    "{args:?}: exit {:?}, stderr {stderr:?}, want {want:?} naming {}",
                    r.status.code(),
                    path.display()
                ));
            }
        }
        // Nothing was written for any of them.
        assert!(!root.path().join(format!("out-{what}")).exists());
        assert!(!root.path().join(format!("o-{what}.npy")).exists());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn assert_not_regular(r: Result<impl Sized, vit_convert::Error>, kind: &str, path: &Path) {
    let e = r.err().expect("refused");
    assert!(
        matches!(e.kind(), ErrorKind::NotRegularFile { kind: k } if *k == kind),
        "{e}"
    );
    assert_eq!(e.path(), Some(path), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("not a regular file (it is a {kind})")),
        "{e}"
    );
}

#[test]
fn special_files_anywhere_in_the_library_are_refused_at_once() {
    use vit_convert::{mapping::read_table_file, model::read_config_file, Limits};
    let root = tempfile::tempdir().unwrap();
    let pth = fixture("convert/timm_vit/source.pth");
    for (what, kind) in SPECIALS {
        let special = root.path().join(format!("special-{what}"));
        let _keep = make(what, &special);
        assert_not_regular(vit_convert::open(&special), kind, &special);
        assert_not_regular(vit_convert::FileBytes::read(&special), kind, &special);
        assert_not_regular(vit_convert::inspect::inspect(&special), kind, &special);
        let stored = vit_convert::hash::ReadAs::stored();
        assert_not_regular(vit_convert::hash::hash(&special, &stored), kind, &special);
        let opts = vit_convert::diff::DiffOptions::default();
        assert_not_regular(
            vit_convert::diff::diff(&special, &pth, &opts),
            kind,
            &special,
        );
        assert_not_regular(
            vit_convert::diff::diff(&pth, &special, &opts),
            kind,
            &special,
        );
        assert_not_regular(read_config_file(&special, &Limits::DEFAULT), kind, &special);
        assert_not_regular(read_table_file(&special, &Limits::DEFAULT), kind, &special);
        assert_not_regular(
            vit_convert::verify::F32Array::read_npy(&special),
            kind,
            &special,
        );
        assert_not_regular(vit_convert::image::read_image(&special), kind, &special);
        let out = root.path().join(format!("out-{what}"));
        let opts = vit_convert::ConvertOptions::default();
        assert_not_regular(vit_convert::convert(&special, &out, &opts), kind, &special);
        for f in ["config.json", "model.safetensors"] {
            let (dir, _l) = model_dir(root.path(), f, what);
            assert_not_regular(vit_convert::Model::load(&dir), kind, &dir.join(f));
        }
    }
}

#[test]
fn no_mmap_reads_go_through_the_file_size_budgets() {
    let pth = fixture("convert/timm_vit/source.pth");
    let size = std::fs::metadata(&pth).unwrap().len();
    let inspect = |env: &[(&str, &str)]| {
        let mut c = bin();
        c.arg("inspect").arg(&pth);
        for (k, v) in env {
            c.env(k, v);
        }
        let r = c.output().unwrap();
        (
            r.status.code(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    };
    // Read into memory: refused over `read file bytes`, naming its variable …
    let (code, stderr) = inspect(&[
        ("VIT_CONVERT_NO_MMAP", "1"),
        ("VIT_CONVERT_LIMIT_READ_FILE_BYTES", "1K"),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("read file bytes budget exceeded: limit 1024")
            && stderr.contains("VIT_CONVERT_LIMIT_READ_FILE_BYTES"),
        "{stderr}"
    );
    // … and over `input file bytes`, the budget of mapped files, mapped or not.
    for no_mmap in ["0", "1"] {
        let (code, stderr) = inspect(&[
            ("VIT_CONVERT_NO_MMAP", no_mmap),
            ("VIT_CONVERT_LIMIT_INPUT_FILE_BYTES", "2K"),
        ]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("input file bytes budget exceeded: limit 2048"),
            "{stderr}"
        );
    }
    // Within both, the file reads as mapped.
    let exact = size.to_string();
    let (code, stderr) = inspect(&[
        ("VIT_CONVERT_NO_MMAP", "1"),
        ("VIT_CONVERT_LIMIT_READ_FILE_BYTES", &exact),
    ]);
    assert_eq!(code, Some(0), "{stderr}");

    // The defaults (the library's own tests exercise FileBytes::read against both).
    assert_eq!(vit_convert::Limits::DEFAULT.read_file_bytes, 8 << 30);
    assert_eq!(vit_convert::Limits::DEFAULT.input_file_bytes, 64 << 30);
}
