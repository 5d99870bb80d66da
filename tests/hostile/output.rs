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
            from: Some("timm".into()),
            overrides: vit_convert::model::ConfigOverrides {
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

    // The next run cleans the dead run's temp file and completes.
    let r = bin()
        .args(["--from", "timm", "--num-heads", "8"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        names_in(&out),
        [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json"
        ],
        "stale temp files of the killed run are removed"
    );
}
