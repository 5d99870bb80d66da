//! Every reader against real files written by torch, numpy and safetensors
//! (`fixtures/generate.py`): names, dtypes, shapes in file order and the sha256 of every
//! tensor's bytes, byte for byte; the expected errors for newer dtypes, hostile pickles and
//! truncated files; and the `inspect` CLI end to end. No Python is needed: the expectations are
//! committed in `fixtures/{readers,hostile}/expected.json`. Nothing here writes into the tree.

mod common;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;

use common::{
    assert_no_failures, fixture, fixture_dir, kind_name, load_expected, sha256_hex, Expectation,
    ExpectedTensor,
};
use vit_convert::{Error, ErrorKind, TensorSource};

// ---------------------------------------------------------------------------------------------
// Listings

/// Opens `path` and checks format, listing and every tensor's bytes; returns the problems.
fn check_listing(path: &Path, format: &str, expected: &[ExpectedTensor]) -> Vec<String> {
    let file = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    let src = match vit_convert::open(path) {
        Ok(src) => src,
        Err(e) => {
            return vec![format!(
                "{file}: open failed: {e} ({})",
                kind_name(e.kind())
            )]
        }
    };
    let mut problems = Vec::new();
    if src.format().name() != format {
        problems.push(format!(
            "{file}: format {} != {format}",
            src.format().name()
        ));
    }
    let got: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    if got != want {
        problems.push(format!(
            "{file}: tensor names/order differ:\n    got  {got:?}\n    want {want:?}"
        ));
        return problems;
    }
    for (info, exp) in src.tensors().iter().zip(expected) {
        let at = format!("{file}: {}", exp.name);
        if info.dtype.name() != exp.dtype {
            problems.push(format!(
                "{at}: listed dtype {} != {}",
                info.dtype, exp.dtype
            ));
        }
        if info.shape != exp.shape {
            problems.push(format!(
                "{at}: listed shape {:?} != {:?}",
                info.shape, exp.shape
            ));
        }
        match src.read(&exp.name) {
            Err(e) => problems.push(format!("{at}: read failed: {e}")),
            Ok(t) => {
                if t.dtype.name() != exp.dtype || t.shape != exp.shape {
                    problems.push(format!(
                        "{at}: read gave {} {:?}, want {} {:?}",
                        t.dtype, t.shape, exp.dtype, exp.shape
                    ));
                }
                let want_len = exp.shape.iter().product::<usize>() * info.dtype.size();
                if t.data.len() != want_len {
                    problems.push(format!(
                        "{at}: {} data bytes, want {want_len}",
                        t.data.len()
                    ));
                }
                let sha = sha256_hex(&t.data);
                if sha != exp.sha256 {
                    problems.push(format!("{at}: sha256 {sha} != {}", exp.sha256));
                }
            }
        }
    }
    problems
}

/// Checks every `readers/expected.json` listing of one format.
fn check_format(format: &str) {
    let expected = load_expected("readers");
    let mut failures = Vec::new();
    let mut files = 0;
    for entry in &expected.files {
        if let Expectation::Listing { format: f, tensors } = entry.expectation() {
            if f == format {
                files += 1;
                failures.extend(check_listing(&fixture("readers", &entry.file), f, tensors));
            }
        }
    }
    assert!(files > 0, "no {format} fixtures in expected.json");
    assert_no_failures(&format!("{format} fixtures ({files} files)"), &failures);
}

#[test]
fn torch_zip_fixtures_list_and_read_every_tensor_exactly() {
    check_format("torch_zip");
}

#[test]
fn torch_legacy_fixtures_list_and_read_every_tensor_exactly() {
    check_format("torch_legacy");
}

#[test]
fn npz_fixtures_list_and_read_every_tensor_exactly() {
    check_format("npz");
}

#[test]
fn npy_fixtures_list_and_read_every_tensor_exactly() {
    check_format("npy");
}

#[test]
fn safetensors_fixtures_list_and_read_every_tensor_exactly() {
    check_format("safetensors");
}

#[test]
fn contiguous_little_endian_tensors_are_read_borrowed_and_others_owned() {
    let expected = load_expected("readers");
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in &expected.files {
        let Expectation::Listing { tensors, .. } = entry.expectation() else {
            continue;
        };
        let Ok(src) = vit_convert::open(fixture("readers", &entry.file)) else {
            failures.push(format!(
                "{}: does not open (see the listing tests)",
                entry.file
            ));
            continue;
        };
        for exp in tensors {
            let Some(want_borrowed) = exp.borrowed else {
                continue;
            };
            checked += 1;
            match src.read(&exp.name) {
                Ok(t) => {
                    let borrowed = matches!(t.data, Cow::Borrowed(_));
                    if borrowed != want_borrowed {
                        failures.push(format!(
                            "{}: {}: read returned {}, want {}",
                            entry.file,
                            exp.name,
                            if borrowed {
                                "Cow::Borrowed"
                            } else {
                                "Cow::Owned"
                            },
                            if want_borrowed {
                                "Cow::Borrowed (stored bytes already are C-contiguous LE)"
                            } else {
                                "Cow::Owned"
                            },
                        ));
                    }
                }
                Err(e) => failures.push(format!("{}: {}: read failed: {e}", entry.file, exp.name)),
            }
        }
    }
    assert!(checked > 0);
    assert_no_failures("borrowed vs owned reads", &failures);
}

#[test]
fn reading_an_unknown_name_is_tensor_not_found() {
    for file in [
        "zip_p2.pth",
        "legacy_p2.pth",
        "jax_vit.npz",
        "c_order_f4.npy",
        "small.safetensors",
    ] {
        let src = vit_convert::open(fixture("readers", file))
            .unwrap_or_else(|e| panic!("{file}: open failed: {e}"));
        match src.read("no such tensor") {
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::TensorNotFound { name } if name == "no such tensor"),
                "{file}: want TensorNotFound, got {} ({e})",
                kind_name(e.kind())
            ),
            Ok(_) => panic!("{file}: read of an unknown name succeeded"),
        }
    }
}

#[test]
fn every_fixture_file_has_exactly_one_expectation() {
    for section in ["readers", "hostile"] {
        let expected = load_expected(section);
        let listed: Vec<&str> = expected.files.iter().map(|f| f.file.as_str()).collect();
        let unique: BTreeSet<&str> = listed.iter().copied().collect();
        assert_eq!(
            unique.len(),
            listed.len(),
            "{section}: a file is listed twice"
        );
        let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir(section))
            .unwrap_or_else(|e| panic!("{section}: {e}"))
            .map(|e| {
                e.expect("directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name != "expected.json")
            .collect();
        let listed: BTreeSet<String> = unique.into_iter().map(str::to_owned).collect();
        assert_eq!(on_disk, listed, "{section}: files on disk vs expected.json");
    }
}

// ---------------------------------------------------------------------------------------------
// Expected errors

/// Opens the file and reads every tensor; returns the first error, or None if all succeed.
/// A panic is reported as an error message, not propagated, so one bad file names itself.
fn first_error(path: &Path) -> Result<Option<Error>, String> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        let src = match vit_convert::open(path) {
            Ok(src) => src,
            Err(e) => return Some(e),
        };
        read_all(src.as_ref()).err()
    }))
    .map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        format!("{}: PANICKED: {msg}", path.display())
    })
}

fn read_all(src: &dyn TensorSource) -> Result<(), Error> {
    for t in src.tensors() {
        src.read(&t.name)?;
    }
    Ok(())
}

/// Checks one error entry; the error must come from `open` (readers validate up front) except
/// for kind `any`, which may also come from a `read`.
fn check_error(
    section: &str,
    file: &str,
    kind: &str,
    detail: Option<&str>,
    alias: Option<&str>,
    offset: Option<u64>,
) -> Option<String> {
    let path = fixture(section, file);
    let err = if kind == "any" {
        match first_error(&path) {
            Err(panicked) => return Some(panicked),
            Ok(None) => return Some(format!("{file}: opened and read without error")),
            Ok(Some(e)) => e,
        }
    } else {
        match panic::catch_unwind(AssertUnwindSafe(|| vit_convert::open(&path).err())) {
            Err(_) => return Some(format!("{file}: PANICKED in open")),
            Ok(None) => return Some(format!("{file}: opened, want {kind} from open")),
            Ok(Some(e)) => e,
        }
    };
    if kind == "any" {
        return None;
    }
    let got = kind_name(err.kind());
    if got != kind {
        return Some(format!("{file}: got {got} ({err}), want {kind}"));
    }
    if err.path() != Some(path.as_path()) {
        return Some(format!("{file}: error does not carry the file path: {err}"));
    }
    let display = err.to_string();
    match (err.kind(), detail) {
        (ErrorKind::DisallowedGlobal { global, offset: at }, Some(detail)) => {
            let ok = global == detail || alias == Some(global.as_str());
            if !ok {
                return Some(format!("{file}: refused global {global}, want {detail}"));
            }
            if offset.is_some_and(|o| o != *at) {
                return Some(format!("{file}: refused at byte {at}, want {offset:?}"));
            }
            if !display.contains(&format!("disallowed global {global}")) {
                return Some(format!(
                    "{file}: Display does not say `disallowed global {global}`: {display}"
                ));
            }
        }
        (ErrorKind::UnsupportedDType { dtype }, Some(detail)) if !dtype.contains(detail) => {
            return Some(format!(
                "{file}: UnsupportedDType names {dtype:?}, want it to name {detail}"
            ));
        }
        _ => {}
    }
    None
}

fn check_errors(section: &str) -> usize {
    let expected = load_expected(section);
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in &expected.files {
        if let Expectation::Error {
            kind,
            detail,
            alias,
            offset,
        } = entry.expectation()
        {
            n += 1;
            failures.extend(check_error(
                section,
                &entry.file,
                kind,
                detail,
                alias,
                offset,
            ));
        }
    }
    assert_no_failures(&format!("{section} expected errors ({n} files)"), &failures);
    n
}

#[test]
fn dtypes_only_torch_v3_can_save_fail_with_unsupported_dtype() {
    assert!(check_errors("readers") >= 3);
}

#[test]
fn hostile_files_fail_with_their_expected_error_and_never_panic() {
    assert!(check_errors("hostile") >= 10);
}

#[test]
fn os_system_pickle_is_refused_naming_posix_system() {
    let path = fixture("hostile", "zip_posix_system.pth");
    let err = vit_convert::open(&path)
        .err()
        .expect("a refused pickle must not open");
    match err.kind() {
        ErrorKind::DisallowedGlobal { global, .. } => assert_eq!(global, "posix.system"),
        other => panic!("want DisallowedGlobal, got {other:?}"),
    }
    assert!(
        err.to_string().contains("disallowed global posix.system"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// CLI end to end

fn vit_convert_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vit-convert"))
}

#[test]
fn cli_inspect_json_matches_the_expected_listing() {
    let expected = load_expected("readers");
    for file in ["zip_p2.pth", "legacy_p2.pth", "jax_vit.npz"] {
        let entry = expected
            .files
            .iter()
            .find(|f| f.file == file)
            .unwrap_or_else(|| panic!("{file} missing from expected.json"));
        let Expectation::Listing { format, tensors } = entry.expectation() else {
            panic!("{file}: expected.json has no listing");
        };
        let out = vit_convert_cmd()
            .args(["inspect", "--json"])
            .arg(fixture("readers", file))
            .output()
            .expect("running vit-convert");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{file}: exit {:?}, stderr: {stderr}",
            out.status.code()
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{file}: stdout is not JSON ({e})"));
        assert_eq!(json["format"], format, "{file}: format");
        let listed = json["tensors"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no `tensors` array"));
        assert_eq!(listed.len(), tensors.len(), "{file}: tensor count");
        for (got, want) in listed.iter().zip(tensors) {
            assert_eq!(got["name"], want.name.as_str(), "{file}: name");
            assert_eq!(
                got["dtype"],
                want.dtype.as_str(),
                "{file}: {} dtype",
                want.name
            );
            let shape: Vec<usize> = serde_json::from_value(got["shape"].clone())
                .unwrap_or_else(|e| panic!("{file}: {} shape: {e}", want.name));
            assert_eq!(shape, want.shape, "{file}: {} shape", want.name);
        }
    }
}

#[test]
fn cli_refuses_a_hostile_pickle_with_exit_1_and_one_line_on_stderr() {
    let out = vit_convert_cmd()
        .arg("inspect")
        .arg(fixture("hostile", "zip_posix_system.pth"))
        .output()
        .expect("running vit-convert");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one line on stderr, got: {stderr}"
    );
    assert!(lines[0].contains("posix.system"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        !stdout.contains("owned"),
        "the payload ran? stdout: {stdout}"
    );
}

#[test]
fn truncated_zip_pth_and_npz_are_truncated_like_legacy_files() {
    for file in ["zip_p2.pth", "jax_vit.npz", "legacy_p2.pth"] {
        let bytes = std::fs::read(fixture("readers", file)).unwrap();
        for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
            let e =
                vit_convert::open_bytes(vit_convert::FileBytes::from_vec(bytes[..cut].to_vec()))
                    .err()
                    .unwrap_or_else(|| panic!("{file} cut at {cut} opened"));
            assert!(
                matches!(e.kind(), ErrorKind::Truncated { .. }),
                "{file} cut at {cut}: {e}"
            );
        }
    }
}
