//! Output safety: a full disk and a killed process leave no `model.safetensors` (partial or
//! otherwise) and never touch files already in OUTDIR.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bin;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8) syntax); `Err(reason)` when that is not possible here.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn full_disk_leaves_no_partial_output_and_keeps_existing_files() {
    // The converted model is ~80 KB; the filesystem holds 64 KiB.
    let fs = match Tmpfs::mount("64k") {
        Ok(fs) => fs,
        Err(reason) => {
            println!("skipped full_disk test: {reason}");
            return;
        }
    };
    let out = fs.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("model.safetensors"), b"previous model").unwrap();
    std::fs::write(out.join("config.json"), b"{\"previous\": true}").unwrap();
    let input = fixture("convert/timm_vit/source.pth");
    let before = std::fs::read(&input).unwrap();

    let r = bin()
        .args(["--from", "timm", "--num-heads", "2"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    assert_eq!(
        names_in(&out),
        ["config.json", "model.safetensors"],
        "no temp files left"
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        b"previous model"
    );
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        b"{\"previous\": true}"
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input is never modified"
    );

    // The library says the same, with the I/O kind.
    let e = vit_convert::convert(
        &input,
        &out,
        &vit_convert::ConvertOptions {
            from: Some("timm".parse().unwrap()),
            overrides: vit_convert::ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e.kind(), vit_convert::ErrorKind::Io { .. }), "{e}");
    assert_eq!(names_in(&out), ["config.json", "model.safetensors"]);
}

#[test]
fn disk_full_after_the_weights_fit_leaves_outdir_untouched() {
    // Room for the weights and config.json, not for preprocessor_config.json as well: whichever
    // file hits the full disk, no file may be put in place (all three or none).
    let input = fixture("convert/timm_vit/source.pth");
    let args = |out: &Path| {
        let mut c = bin();
        c.args(["--from", "timm", "--num-heads", "2"])
            .arg(&input)
            .arg("-o")
            .arg(out);
        c
    };
    let probe = tempfile::tempdir().unwrap();
    assert!(args(probe.path()).output().unwrap().status.success());
    let pages = |f: &str| {
        let len = std::fs::metadata(probe.path().join(f)).unwrap().len();
        len.div_ceil(4096)
    };
    let room = pages("model.safetensors") + pages("config.json");
    let fs = match Tmpfs::mount(&format!("{}k", room * 4)) {
        Ok(fs) => fs,
        Err(reason) => {
            println!("skipped disk_full_after_the_weights test: {reason}");
            return;
        }
    };
    let out = fs.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let r = args(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(
        names_in(&out),
        Vec::<String>::new(),
        "all three files or none"
    );
}

/// A timm-layout safetensors checkpoint of width `d` and `depth` blocks (f32, all zeros but
/// distinct per tensor), large enough that writing its conversion takes a while.
fn big_timm_checkpoint(path: &Path, d: usize, depth: usize) {
    let (patch, image, classes) = (16usize, 64usize, 10usize);
    let tokens = (image / patch) * (image / patch) + 1;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, d]),
        ("pos_embed".into(), vec![1, tokens, d]),
        ("patch_embed.proj.weight".into(), vec![d, 3, patch, patch]),
        ("patch_embed.proj.bias".into(), vec![d]),
        ("norm.weight".into(), vec![d]),
        ("norm.bias".into(), vec![d]),
        ("head.weight".into(), vec![classes, d]),
        ("head.bias".into(), vec![classes]),
    ];
    for i in 0..depth {
        let b = |s: &str| format!("blocks.{i}.{s}");
        shapes.extend([
            (b("norm1.weight"), vec![d]),
            (b("norm1.bias"), vec![d]),
            (b("attn.qkv.weight"), vec![3 * d, d]),
            (b("attn.qkv.bias"), vec![3 * d]),
            (b("attn.proj.weight"), vec![d, d]),
            (b("attn.proj.bias"), vec![d]),
            (b("norm2.weight"), vec![d]),
            (b("norm2.bias"), vec![d]),
            (b("mlp.fc1.weight"), vec![4 * d, d]),
            (b("mlp.fc1.bias"), vec![4 * d]),
            (b("mlp.fc2.weight"), vec![d, 4 * d]),
            (b("mlp.fc2.bias"), vec![d]),
        ]);
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(n, s)| {
            let len = s.iter().product::<usize>() * 4;
            (n, s, vec![0u8; len])
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn killed_conversion_leaves_no_model_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.safetensors");
    // ~100 MB of f32: writing the conversion takes long enough to be killed in the middle.
    big_timm_checkpoint(&input, 512, 8);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{\"previous\": true}").unwrap();

    let mut killed_mid_write = false;
    for _attempt in 0..5 {
        let mut child = bin()
            .args(["--from", "timm", "--num-heads", "8"])
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        // Wait until the temp file of model.safetensors holds some bytes, then SIGKILL.
        let tmp = loop {
            let found = std::fs::read_dir(&out).unwrap().find_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with(".model.safetensors.tmp-") && e.metadata().ok()?.len() > 0)
                    .then_some(name)
            });
            if found.is_some() || child.try_wait().unwrap().is_some() {
                break found;
            }
            if start.elapsed() > Duration::from_secs(60) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        child.kill().ok(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        if tmp.is_some() && !status.success() {
            killed_mid_write = true;
            break;
        }
        // Finished before we caught it: start again from an empty OUTDIR.
        for n in names_in(&out) {
            if n != "config.json" {
                std::fs::remove_file(out.join(n)).unwrap();
            }
        }
    }
    assert!(killed_mid_write, "never caught the conversion mid-write");
    let names = names_in(&out);
    assert!(!names.iter().any(|n| n == "model.safetensors"), "{names:?}");
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        b"{\"previous\": true}"
    );

    // The next run completes; the dead run's temp file stays (nothing proves a file named so
    // was written by this tool, so none is ever removed), a hidden file never under the final
    // name.
    let leftovers: Vec<String> = names_in(&out)
        .into_iter()
        .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
        .collect();
    assert!(leftovers
        .iter()
        .any(|n| n.starts_with(".model.safetensors.tmp-")));
    let r = bin()
        .args(["--from", "timm", "--num-heads", "8"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mut want = leftovers;
    want.extend(
        [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
        ]
        .map(String::from),
    );
    assert_eq!(names_in(&out), want, "the killed run's temp files are kept");
}

#[test]
fn a_file_named_like_a_stale_temp_file_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    // Not an input: a file of the user's that happens to be named as a dead process's temp
    // file would be (Linux pids never exceed 2^22).
    let notes = out.join(".config.json.tmp-999999999-0");
    std::fs::write(&notes, b"my notes").unwrap();
    let input = fixture("convert/timm_vit/source.pth");
    let (code, stderr) = convert_timm(&input, out, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(&notes).unwrap(), b"my notes");
    vit_convert::convert(&input, out, &timm_opts()).unwrap();
    assert_eq!(std::fs::read(&notes).unwrap(), b"my notes");
    assert_eq!(
        names_in(out),
        [
            ".config.json.tmp-999999999-0",
            "config.json",
            "model.safetensors",
            "preprocessor_config.json"
        ]
    );
}

/// Every entry of `dir`: name → bytes (`None` for a directory).
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes =
                (!e.file_type().unwrap().is_dir()).then(|| std::fs::read(e.path()).unwrap());
            (name, bytes)
        })
        .collect()
}

fn timm_opts() -> vit_convert::ConvertOptions {
    vit_convert::ConvertOptions {
        from: Some("timm".parse().unwrap()),
        overrides: vit_convert::ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs the CLI; (exit code, stderr).
/// `vit-convert --from timm --num-heads 2 EXTRA… INPUT -o OUT`: the exit code and stderr.
fn convert_timm(input: &Path, out: &Path, extra: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--from".as_ref(),
        "timm".as_ref(),
        "--num-heads".as_ref(),
        "2".as_ref(),
    ];
    args.extend_from_slice(extra);
    args.extend([input.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    run(&args)
}

fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let r = bin().args(args).output().unwrap();
    (
        r.status.code(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

#[test]
fn a_directory_where_an_output_file_goes_leaves_outdir_exactly_as_it_was() {
    let input = fixture("convert/timm_vit/source.pth");
    for blocked in [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        for f in [
            "model.safetensors",
            "config.json",
            "preprocessor_config.json",
        ] {
            if f == blocked {
                std::fs::create_dir(out.join(f)).unwrap();
                std::fs::write(out.join(f).join("inside"), b"kept").unwrap();
            } else {
                std::fs::write(out.join(f), format!("previous {f}")).unwrap();
            }
        }
        let before = snapshot(out);
        let (code, stderr) = convert_timm(&input, out, &[]);
        assert_eq!(code, Some(1), "{blocked}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("not a regular file (it is a directory)") && stderr.contains(blocked),
            "{stderr}"
        );
        assert_eq!(snapshot(out), before, "{blocked}: OUTDIR changed");
        assert_eq!(
            std::fs::read(out.join(blocked).join("inside")).unwrap(),
            b"kept"
        );

        let e = vit_convert::convert(&input, out, &timm_opts()).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                vit_convert::ErrorKind::NotRegularFile { kind: "directory" }
            ),
            "{e}"
        );
        assert_eq!(e.path(), Some(out.join(blocked).as_path()));
        assert_eq!(snapshot(out), before, "{blocked}: OUTDIR changed (library)");
    }
}

#[test]
fn an_input_named_like_a_stale_temp_file_survives_and_converts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    // Named as a dead process's temp files would be (Linux pids never exceed 2^22).
    let input = out.join(".model.safetensors.tmp-999999999-0");
    std::fs::copy(fixture("convert/timm_vit/source.pth"), &input).unwrap();
    let config = out.join(".config.json.tmp-999999999-0");
    std::fs::write(&config, b"{\"layer_norm_eps\": 1e-6}").unwrap();
    let before = std::fs::read(&input).unwrap();
    let (code, stderr) = convert_timm(&input, out, &["--config".as_ref(), config.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input survives");
    assert!(config.exists(), "the --config file survives");
    assert_eq!(
        names_in(out),
        [
            ".config.json.tmp-999999999-0",
            ".model.safetensors.tmp-999999999-0",
            "config.json",
            "model.safetensors",
            "preprocessor_config.json"
        ]
    );
    // The library too, for the input it opened.
    vit_convert::convert(&input, out, &timm_opts()).unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn convert_refuses_an_output_that_is_its_input_by_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A hard link: another name for the same file (no symlink to resolve).
    let st = fixture("convert/timm_vit/hf/model.safetensors");
    let input = dir.path().join("in.safetensors");
    std::fs::copy(&st, &input).unwrap();
    std::fs::hard_link(&input, out.join("model.safetensors")).unwrap();
    let before = std::fs::read(&input).unwrap();
    let opts = vit_convert::ConvertOptions {
        from: Some("hf".parse().unwrap()),
        ..Default::default()
    };
    let e = vit_convert::convert(&input, &out, &opts).unwrap_err();
    assert!(
        matches!(e.kind(), vit_convert::ErrorKind::OutputIsInput { output, .. }
            if *output == out.join("model.safetensors")),
        "{e}"
    );
    let (code, stderr) = run(&[
        "--from".as_ref(),
        "hf".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("would overwrite the input"), "{stderr}");
    assert_eq!(std::fs::read(&input).unwrap(), before);

    // `--config` and `--table` are inputs too.
    let cfg = out.join("config.json");
    std::fs::write(&cfg, b"{\"layer_norm_eps\": 1e-6}").unwrap();
    let pth = fixture("convert/timm_vit/source.pth");
    let (code, stderr) = convert_timm(&pth, &out, &["--config".as_ref(), cfg.as_os_str()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("would overwrite the input"), "{stderr}");
    assert_eq!(std::fs::read(&cfg).unwrap(), b"{\"layer_norm_eps\": 1e-6}");
}

#[test]
fn forward_refuses_outputs_that_are_inputs_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    std::fs::create_dir(&model).unwrap();
    let hf = fixture("convert/timm_vit/hf");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(hf.join(f), model.join(f)).unwrap();
    }
    std::fs::copy(
        fixture("convert/image/vit/preprocessor_config.json"),
        model.join("preprocessor_config.json"),
    )
    .unwrap();
    let input = d.join("input.npy");
    std::fs::copy(fixture("convert/timm_vit/io/input.npy"), &input).unwrap();
    let image = d.join("cat.png");
    std::fs::copy(fixture("convert/image/cat.png"), &image).unwrap();
    let link = d.join("link.npy");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let dotted = d.join(".").join("input.npy");
    let o = d.join("o.npy");
    let o_dotted = d.join(".").join("o.npy");
    let before = snapshot(d);

    let with_input = |outs: &[(&str, &Path)]| {
        let mut a: Vec<std::ffi::OsString> = vec!["forward".into(), model.clone().into()];
        a.extend(["--input".into(), input.clone().into()]);
        for (flag, p) in outs {
            a.push(flag.into());
            a.push(p.into());
        }
        a
    };
    let with_image = |out: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "forward".into(),
            model.clone().into(),
            "--image".into(),
            image.clone().into(),
            "--output".into(),
            out.into(),
        ]
    };
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            with_input(&[("--output", &input)]),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &link)]),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &dotted)]),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &o), ("--hidden-states", &input)]),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &o), ("--pooled", &input)]),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &model.join("model.safetensors"))]),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &model.join("config.json"))]),
            "would overwrite the input",
        ),
        (with_image(&image), "would overwrite the input"),
        (
            with_image(&model.join("preprocessor_config.json")),
            "would overwrite the input",
        ),
        (
            with_input(&[("--output", &o), ("--hidden-states", &o_dotted)]),
            "name the same file",
        ),
    ];
    for (args, want) in cases {
        let r = bin().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(snapshot(d), before, "{args:?} changed a file");
    }
    // The library check says the same.
    let e = vit_convert::write::check_outputs(&[&link], &[&input]).unwrap_err();
    assert!(
        matches!(e.kind(), vit_convert::ErrorKind::OutputIsInput { output, input: i } if *output == link && *i == input),
        "{e}"
    );
    // Distinct outputs are written, all of them.
    let h = d.join("h.npy");
    let r = bin()
        .args(with_input(&[("--output", &o), ("--hidden-states", &h)]))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(o.exists() && h.exists());
}

#[test]
fn forward_writes_all_its_outputs_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hf = fixture("convert/timm_vit/hf");
    let input = fixture("convert/timm_vit/io/input.npy");
    let o = d.join("o.npy");
    std::fs::write(&o, b"previous").unwrap();
    let h = d.join("h.npy");
    std::fs::create_dir(&h).unwrap();
    let before = snapshot(d);
    let r = bin()
        .arg("forward")
        .arg(&hf)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&o)
        .arg("--hidden-states")
        .arg(&h)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a regular file (it is a directory)"),
        "{stderr}"
    );
    assert_eq!(snapshot(d), before);
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

#[test]
fn an_output_that_is_a_symlink_is_written_through_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = d.join("real.npy");
    std::fs::write(&real, b"previous").unwrap();
    let link = d.join("link.npy");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // `--output /dev/stdout` with stdout a pipe: a symlink to a FIFO (never the real
    // /dev/stdout here: before the fix, the link itself was replaced by a regular file).
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let to_fifo = d.join("to_fifo.npy");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    let dangling = d.join("dangling.npy");
    std::os::unix::fs::symlink(d.join("nothing"), &dangling).unwrap();
    let before = names_in(d);

    let forward = |out: &Path| {
        let mut a: Vec<std::ffi::OsString> = vec!["forward".into()];
        a.push(fixture("convert/timm_vit/hf").into());
        a.push("--input".into());
        a.push(fixture("convert/timm_vit/io/input.npy").into());
        a.push("--output".into());
        a.push(out.into());
        let r = bin().args(&a).output().unwrap();
        (
            r.status.code(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    };
    let (code, stderr) = forward(&link);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read(&real).unwrap().starts_with(b"\x93NUMPY"));
    for (out, want) in [
        (&to_fifo, "not a regular file (it is a fifo)"),
        (&dangling, "not a regular file (it is a symlink to nothing)"),
    ] {
        let (code, stderr) = forward(out);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(std::fs::symlink_metadata(out)
            .unwrap()
            .file_type()
            .is_symlink());
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(names_in(d), before, "no temp file left, no link replaced");

    // The library: the same, through `write_files`.
    vit_convert::write::write_files(&[(&link, b"new")]).unwrap();
    assert_eq!(std::fs::read(&real).unwrap(), b"new");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let kind = |p: &Path| {
        let e = vit_convert::write::write_files(&[(p, b"x")]).unwrap_err();
        assert_eq!(e.path(), Some(p));
        match e.kind() {
            vit_convert::ErrorKind::NotRegularFile { kind } => *kind,
            _ => panic!("{e}"),
        }
    };
    assert_eq!(kind(&to_fifo), "fifo");
    assert_eq!(kind(&dangling), "symlink to nothing");
    assert_eq!(names_in(d), before);

    // A conversion into an OUTDIR whose config.json links elsewhere replaces the target.
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let elsewhere = d.join("elsewhere.json");
    std::fs::write(&elsewhere, b"{}").unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("config.json")).unwrap();
    let input = fixture("convert/timm_vit/source.pth");
    vit_convert::convert(&input, &out, &timm_opts()).unwrap();
    assert!(std::fs::symlink_metadata(out.join("config.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&elsewhere)
        .unwrap()
        .contains("\"hidden_size\": 24"));
}

#[test]
fn convert_refuses_replacing_the_config_json_it_read_beside_the_input() {
    // `--from hf` reads the config.json beside the weights: `-o` that folder must not replace it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hf = fixture("convert/timm_vit/hf");
    std::fs::copy(hf.join("config.json"), d.join("config.json")).unwrap();
    let input = d.join("pytorch.safetensors");
    std::fs::copy(hf.join("model.safetensors"), &input).unwrap();
    let before = snapshot(d);
    let opts = vit_convert::ConvertOptions {
        from: Some("hf".parse().unwrap()),
        ..Default::default()
    };
    let e = vit_convert::convert(&input, d, &opts).unwrap_err();
    assert!(
        matches!(e.kind(), vit_convert::ErrorKind::OutputIsInput { output, .. }
            if output.file_name() == Some("config.json".as_ref())),
        "{e}"
    );
    assert_eq!(snapshot(d), before);
    for from in ["hf", "auto"] {
        let (code, stderr) = run(&[
            "--from".as_ref(),
            from.as_ref(),
            input.as_os_str(),
            "-o".as_ref(),
            d.as_os_str(),
        ]);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("config.json would overwrite the input"),
            "{stderr}"
        );
        assert_eq!(snapshot(d), before, "--from {from}");
    }
}

#[test]
fn a_failed_conversion_leaves_no_outdir_it_created() {
    // Refused after the weights were read: the new folders are not even created.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new").join("nested");
    let deit = fixture("convert/deit_distilled/source.pth");
    let (code, stderr) = run(&[
        "--from".as_ref(),
        "deit".as_ref(),
        "--num-heads".as_ref(),
        "2".as_ref(),
        "--to".as_ref(),
        "flax".as_ref(),
        deit.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--to flax"), "{stderr}");
    assert!(names_in(dir.path()).is_empty(), "a folder was left");

    // A full disk after the folders were created: they are removed again, and a folder that
    // existed before is kept.
    let fs = match Tmpfs::mount("64k") {
        Ok(fs) => fs,
        Err(reason) => {
            println!("skipped full-disk part: {reason}");
            return;
        }
    };
    std::fs::create_dir(fs.path().join("kept")).unwrap();
    let out = fs.path().join("kept").join("new").join("nested");
    let input = fixture("convert/timm_vit/source.pth");
    let (code, stderr) = convert_timm(&input, &out, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        names_in(&fs.path().join("kept")).is_empty(),
        "a folder was left"
    );
    let e = vit_convert::convert(&input, &out, &timm_opts()).unwrap_err();
    assert!(matches!(e.kind(), vit_convert::ErrorKind::Io { .. }), "{e}");
    assert!(names_in(&fs.path().join("kept")).is_empty());
}
