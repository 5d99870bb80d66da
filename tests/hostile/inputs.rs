//! The inputs besides the weights, as untrusted as they are: `config.json` and
//! `preprocessor_config.json` in a model folder, `--config` JSON, `--table` TOML, `.npy` inputs
//! to `forward`/`verify`, images, and the forward pass a model folder makes us run. Each is
//! refused through the CLI with exit 1, one stderr line naming the file or budget, no panic.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::bin;
use crate::build::crc32;

pub(crate) fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A copy of a converted ViT (`model.safetensors`, `config.json`) plus the 32×32 ViT
/// `preprocessor_config.json`, in a temp dir.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(fixture("convert/timm_vit/hf").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        fixture("convert/image/vit/preprocessor_config.json"),
        dir.path().join("preprocessor_config.json"),
    )
    .unwrap();
    dir
}

/// A file of `len` bytes that is valid JSON (an object padded with spaces).
fn padded_json(path: &Path, len: usize) {
    let mut text = vec![b' '; len];
    text[0] = b'{';
    text[len - 1] = b'}';
    std::fs::write(path, text).unwrap();
}

/// Asserts exit 1 and one stderr line holding every one of `needles`, no panic.
pub(crate) fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in {stderr}");
    }
}

const TOO_BIG: usize = (16 << 20) + 1;

/// `vit-convert forward DIR --output DIR/out.npy FLAG FILE`, with `env` set.
fn forward(dir: &Path, flag: &str, file: &Path, env: &[(&str, &str)]) -> Output {
    bin()
        .arg("forward")
        .arg(dir)
        .arg("--output")
        .arg(dir.join("out.npy"))
        .arg(flag)
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `vit-convert verify DIR --input INPUT --expected EXPECTED`.
fn verify(dir: &Path, input: &Path, expected: &Path) -> Output {
    bin()
        .arg("verify")
        .arg(dir)
        .arg("--input")
        .arg(input)
        .arg("--expected")
        .arg(expected)
        .output()
        .unwrap()
}

#[test]
fn oversized_config_json_in_a_model_folder_is_refused_by_forward_and_verify() {
    let dir = model_dir();
    padded_json(&dir.path().join("config.json"), TOO_BIG);
    let input = fixture("convert/timm_vit/io/input.npy");
    let out = forward(dir.path(), "--input", &input, &[]);
    assert_refused(
        &out,
        &[
            "config.json",
            "config file bytes budget exceeded",
            "VIT_CONVERT_LIMIT_CONFIG_FILE_BYTES",
        ],
    );
    let out = verify(
        dir.path(),
        &input,
        &fixture("convert/timm_vit/io/logits_hf.npy"),
    );
    assert_refused(&out, &["config.json", "config file bytes budget exceeded"]);
}

#[test]
fn oversized_preprocessor_config_is_refused_before_any_image_is_read() {
    let dir = model_dir();
    padded_json(&dir.path().join("preprocessor_config.json"), TOO_BIG);
    let out = forward(
        dir.path(),
        "--image",
        &fixture("convert/image/cat.png"),
        &[],
    );
    assert_refused(
        &out,
        &[
            "preprocessor_config.json",
            "config file bytes budget exceeded",
        ],
    );
}

#[test]
fn oversized_table_and_config_options_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("big.toml");
    let mut text = b"id = \"x\"\n".to_vec();
    text.resize((1 << 20) + 1, b'\n');
    std::fs::write(&table, text).unwrap();
    let config = dir.path().join("big.json");
    padded_json(&config, TOO_BIG);
    let input = fixture("convert/timm_vit/source.pth");
    for (flag, file, budget) in [
        ("--table", &table, "table file bytes budget exceeded"),
        ("--config", &config, "config file bytes budget exceeded"),
    ] {
        let out_dir = dir.path().join("out");
        // No `--from`: a family and a table together are a usage error.
        let out = bin()
            .arg(&input)
            .arg("-o")
            .arg(&out_dir)
            .arg(flag)
            .arg(file)
            .output()
            .unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_refused(&out, &[name, budget]);
        assert!(!out_dir.join("model.safetensors").exists());
    }
    // `tables --check` and `diff --table` read tables the same way.
    let out = bin()
        .args(["tables", "--check"])
        .arg(&table)
        .output()
        .unwrap();
    assert_refused(
        &out,
        &[
            "big.toml",
            "table file bytes budget exceeded",
            "VIT_CONVERT_LIMIT_TABLE_FILE_BYTES",
        ],
    );
    // Raised, the same table is read (and then refused for what it holds, not its size).
    let out = bin()
        .args(["tables", "--check"])
        .arg(&table)
        .env("VIT_CONVERT_LIMIT_TABLE_FILE_BYTES", "2M")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("budget"), "{stderr}");
}

#[test]
fn hostile_npy_inputs_to_forward_and_verify_are_refused() {
    let dir = model_dir();
    // A header declaring 2^40 floats over 16 bytes of data; a header far over its budget.
    let npy = |header: &str, data: &[u8]| {
        let mut h = header.to_string();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&u16::try_from(h.len()).unwrap().to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    };
    let forged = dir.path().join("forged.npy");
    std::fs::write(
        &forged,
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1024, 1024, 1024, 1024), }",
            &[0; 16],
        ),
    )
    .unwrap();
    let pickled = dir.path().join("object.npy");
    std::fs::write(
        &pickled,
        npy(
            "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
            b"\x80\x02cposix\nsystem\n.",
        ),
    )
    .unwrap();
    for file in [&forged, &pickled] {
        let name = file.file_name().unwrap().to_str().unwrap();
        let out = forward(dir.path(), "--input", file, &[]);
        assert_refused(&out, &[name]);
        let out = verify(dir.path(), &fixture("convert/timm_vit/io/input.npy"), file);
        assert_refused(&out, &[name]);
    }
}

/// A PNG of `width × height` (`depth` bits, PNG colour type `colour`) whose image data is one
/// empty zlib stream.
fn png_header_only(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn decompression_bomb_images_are_refused() {
    let dir = model_dir();
    for (name, w, h, depth, colour, why) in [
        // Over the side limit; over Pillow's pixel limit; 16-bit RGBA within the pixel limit
        // but needing 538 MB to decode (a blank one compresses to ~1 MB); within every limit
        // but with no data.
        ("wide.png", 100_000, 1, 8, 2, "budget exceeded"),
        (
            "area.png",
            30_000,
            30_000,
            8,
            2,
            "image pixels budget exceeded",
        ),
        (
            "deep.png",
            8_200,
            8_200,
            16,
            6,
            "image decoder memory budget exceeded",
        ),
        ("empty.png", 4_000, 4_000, 8, 2, "png"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, png_header_only(w, h, depth, colour)).unwrap();
        let out = forward(dir.path(), "--image", &path, &[]);
        assert_refused(&out, &[name, why]);
    }
}

#[test]
fn forward_tokens_are_budgeted_and_the_budget_is_named() {
    let dir = model_dir();
    let input = fixture("convert/timm_vit/io/input.npy");
    let out = forward(
        dir.path(),
        "--input",
        &input,
        &[("VIT_CONVERT_LIMIT_FORWARD_TOKENS", "4")],
    );
    assert_refused(
        &out,
        &[
            "forward tokens budget exceeded: limit 4",
            "VIT_CONVERT_LIMIT_FORWARD_TOKENS",
        ],
    );
    // The default admits the fixture.
    let out = forward(dir.path(), "--input", &input, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
