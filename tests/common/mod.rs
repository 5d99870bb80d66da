//! Shared helpers for the integration tests: fixture paths, the expected listings written by
//! `fixtures/generate.py`, and small formatting helpers.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cases;
pub mod msgpack;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use vit_convert::ErrorKind;

/// Options for the fixtures' tiny models: 24 wide with 2 heads, which no tensor records (a real
/// model's head count is inferred as hidden/64).
pub fn two_heads() -> vit_convert::ConvertOptions {
    vit_convert::ConvertOptions {
        overrides: vit_convert::ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `<crate>/fixtures/<section>`.
pub fn fixture_dir(section: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(section)
}

/// `<crate>/fixtures/<section>/<file>`.
pub fn fixture(section: &str, file: &str) -> PathBuf {
    fixture_dir(section).join(file)
}

/// One `expected.json` (`fixtures/readers/` or `fixtures/hostile/`).
#[derive(Debug, Deserialize)]
pub struct Expected {
    /// One entry per fixture file, in generation order.
    pub files: Vec<ExpectedFile>,
}

/// One fixture file: either a listing (`format` + `tensors`) or an expected error.
#[derive(Debug, Deserialize)]
pub struct ExpectedFile {
    /// File name inside the section directory.
    pub file: String,
    /// `torch_zip`, `torch_legacy`, `npz`, `npy` or `safetensors` (listing entries).
    pub format: Option<String>,
    /// Tensors in file order (listing entries).
    pub tensors: Option<Vec<ExpectedTensor>>,
    /// `ErrorKind` variant name, or `any` (error entries).
    pub error: Option<String>,
    /// The refused global (`module.name` as the file spells it) or the dtype.
    pub detail: Option<String>,
    /// The Python 3 name of a protocol-2 compatibility spelling (`__builtin__.eval` →
    /// `builtins.eval`); either is accepted.
    pub alias: Option<String>,
    /// The byte offset `DisallowedGlobal` must report (within `data.pkl` for a zip, within the
    /// file for a legacy file).
    pub offset: Option<u64>,
}

/// What a fixture file is expected to produce.
pub enum Expectation<'a> {
    /// Opens; lists and reads these tensors.
    Listing {
        /// Format name.
        format: &'a str,
        /// Tensors in order.
        tensors: &'a [ExpectedTensor],
    },
    /// Fails with this `ErrorKind` variant (`any`: any error).
    Error {
        /// Variant name or `any`.
        kind: &'a str,
        /// See [`ExpectedFile::detail`].
        detail: Option<&'a str>,
        /// See [`ExpectedFile::alias`].
        alias: Option<&'a str>,
        /// See [`ExpectedFile::offset`].
        offset: Option<u64>,
    },
}

impl ExpectedFile {
    /// Which kind of entry this is; panics on a malformed expected.json (a generator bug).
    pub fn expectation(&self) -> Expectation<'_> {
        match (&self.format, &self.tensors, &self.error) {
            (Some(format), Some(tensors), None) => Expectation::Listing { format, tensors },
            (None, None, Some(kind)) => Expectation::Error {
                kind,
                detail: self.detail.as_deref(),
                alias: self.alias.as_deref(),
                offset: self.offset,
            },
            _ => panic!(
                "expected.json entry {} is neither a listing nor an error",
                self.file
            ),
        }
    }
}

/// One tensor of a listing.
#[derive(Debug, Deserialize)]
pub struct ExpectedTensor {
    /// Name in the source.
    pub name: String,
    /// dtype name (`F32`, …, `BOOL`).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// sha256 (hex) of the C-contiguous little-endian bytes.
    pub sha256: String,
    /// Whether `read` must borrow (`true`), must copy (`false`) or may do either (`None`).
    pub borrowed: Option<bool>,
}

/// Parses `fixtures/<section>/expected.json`.
pub fn load_expected(section: &str) -> Expected {
    let path = fixture(section, "expected.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Runs the built `vit-convert` binary with `args` and collects its output.
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vit-convert"))
        .args(args)
        .output()
        .expect("running vit-convert")
}

/// Lowercase hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The variant name of an `ErrorKind` (`DisallowedGlobal`, `Truncated`, …), taken from its
/// derived `Debug` so that variants added later need no change here.
pub fn kind_name(kind: &ErrorKind) -> String {
    format!("{kind:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Fails the test with every collected problem, one per line.
pub fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} problem(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// The conversion manifest `fixtures/convert/cases.json`.
pub fn convert_cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture("convert", "cases.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A case's folder under `fixtures/convert/`.
pub fn case_dir(case: &serde_json::Value) -> PathBuf {
    fixture_dir("convert").join(case["dir"].as_str().unwrap())
}

/// Every tensor of a file: name → (dtype, shape, bytes).
pub fn tensors(path: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let src = vit_convert::open(path).unwrap();
    src.tensors()
        .iter()
        .map(|t| {
            let data = src.read(&t.name).unwrap().data.into_owned();
            (
                t.name.clone(),
                (t.dtype.name().to_string(), t.shape.clone(), data),
            )
        })
        .collect()
}
