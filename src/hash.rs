//! `hash`: a per-tensor sha256 manifest and a whole-model digest, so CI can pin weights.
//!
//! # What is hashed
//!
//! Every tensor's data as [`TensorSource::read`] returns it: C-contiguous, little-endian, in
//! the dtype the tensor has (no cast). So the container does not matter — a tensor stored
//! big-endian in a legacy `.pth`, strided in a zip `.pth`, or flat in a safetensors file hashes
//! alike when its values, dtype and shape are alike.
//!
//! Which tensors, under which names, depends on [`ReadAs`]:
//!
//! * **stored** (the default, no `--from`): the tensors as the file lists them, under the
//!   names `vit-convert inspect` shows (nested pickle dicts joined with `/`).
//! * **canonical** (`--from FAMILY`, `--from auto` or `--table FILE`): the tensors conversion
//!   would write, after the mapping table (wrapper chosen, prefixes stripped, q/k/v split,
//!   kernels transposed …), under canonical names without the `vit.`/`deit.` prefix, and
//!   without tensors the model class cannot hold (reported in
//!   [`Reading::dropped`]). A timm `.pth` read `--from timm`, the same weights as a JAX `.npz`
//!   read `--from jax`, and the converted `model.safetensors` read `--from hf` hash alike.
//!
//! # The manifest and the digest
//!
//! One line per tensor, sorted by name (byte order):
//!
//! ```text
//! <sha256 of the data, 64 hex digits> <DTYPE> <shape as [d0,d1,…], no spaces> <name>\n
//! ```
//!
//! The name is written as is, unless it starts with `"` or contains a control character (C0, DEL,
//! C1, U+2028/U+2029, bidi controls: [`crate::text::is_unsafe_char`]); then it is written as a
//! JSON string with those characters as `\uXXXX` escapes, so that no two manifests read alike
//! and every line prints as it is hashed. The whole-model digest is
//! the sha256 of the manifest text ([`HashReport::manifest`]) — what `vit-convert hash` prints —
//! so `vit-convert hash FILE | head -n -1 | sha256sum` reproduces it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::convert::plan_canonical;
use crate::error::Result;
use crate::mapping::{schema::hex, Branch, Family, MappingTable, PlannedSource};
use crate::source::{self, Format, TensorSource};
use crate::tensor::DType;

/// How [`hash()`] and [`diff`](crate::diff::diff()) read a checkpoint: its tensors as stored, or the
/// canonical tensors a mapping table makes of them.
#[derive(Clone, Debug, Default)]
pub struct ReadAs {
    /// Which tensors, under which names: as stored, or canonical through a table.
    pub names: Names,
    /// Checkpoints with branches (DINO training checkpoints): which one (`None`: the first
    /// present, as `convert` does).
    pub branch: Option<Branch>,
    /// How the file is opened (its [`Limits`](crate::Limits), mapping or reading).
    pub open: crate::source::OpenOptions,
}

/// Which tensors [`ReadAs`] reads, under which names.
#[derive(Clone, Debug, Default)]
pub enum Names {
    /// The tensors as the file lists them (`vit-convert hash` without `--from`).
    #[default]
    Stored,
    /// Canonical, through the table of the family detected from the tensor names as `convert`
    /// detects it (`--from auto`).
    Auto,
    /// Canonical, through this family's built-in table (`--from FAMILY`).
    Family(Family),
    /// Canonical, through a custom table (`--table FILE`).
    Table(Box<MappingTable>),
}

impl ReadAs {
    /// The tensors as stored.
    pub fn stored() -> Self {
        ReadAs::default()
    }

    /// The canonical tensors, the family detected from the tensor names.
    pub fn auto() -> Self {
        ReadAs {
            names: Names::Auto,
            ..ReadAs::default()
        }
    }

    /// The canonical tensors through a built-in family's table.
    pub fn family(family: Family) -> Self {
        ReadAs {
            names: Names::Family(family),
            ..ReadAs::default()
        }
    }

    /// The canonical tensors through a custom table.
    pub fn table(table: MappingTable) -> Self {
        ReadAs {
            names: Names::Table(Box::new(table)),
            ..ReadAs::default()
        }
    }

    /// True when a mapping table is applied.
    pub fn is_canonical(&self) -> bool {
        !matches!(self.names, Names::Stored)
    }
}

/// How a checkpoint was read: container, and the table applied if any.
#[derive(Clone, Debug, Serialize)]
pub struct Reading {
    /// The file (`None` for a source in memory).
    #[serde(serialize_with = "crate::text::serialize_opt_path_lossy")]
    pub file: Option<PathBuf>,
    /// Its container format.
    pub format: Format,
    /// The mapping table applied (`None`: tensors as stored).
    pub table: Option<String>,
    /// The wrapper or branch converted (`model`, `teacher`, …), if any.
    pub selected: Option<String>,
    /// Canonical tensors left out because the model class cannot hold them, with why.
    pub dropped: Vec<(String, String)>,
}

/// Opens `path` and hands its tensors, read as `how` says, to `f`.
pub(crate) fn with_tensors<R>(
    path: &Path,
    how: &ReadAs,
    f: impl FnOnce(&dyn TensorSource, Reading) -> Result<R>,
) -> Result<R> {
    let src = source::open_with(path, &how.open)?;
    with_source_tensors(src.as_ref(), Some(path), how, f).map_err(|e| e.with_path(path))
}

/// Hands the tensors of `src` (the contents of `file`, if any), read as `how` says, to `f`.
pub(crate) fn with_source_tensors<R>(
    src: &dyn TensorSource,
    file: Option<&Path>,
    how: &ReadAs,
    f: impl FnOnce(&dyn TensorSource, Reading) -> Result<R>,
) -> Result<R> {
    let mut reading = Reading {
        file: file.map(Path::to_path_buf),
        format: src.format(),
        table: None,
        selected: None,
        dropped: Vec::new(),
    };
    let (from, table) = match &how.names {
        Names::Stored => return f(src, reading),
        Names::Auto => (None, None),
        Names::Family(family) => (Some(*family), None),
        Names::Table(table) => (None, Some(table.as_ref())),
    };
    let c = plan_canonical(src, from, table, how.branch, None, false, &how.open.limits)?;
    reading.table = Some(c.table.id().to_string());
    reading.selected = c.plan.report.selected.clone();
    reading.dropped = c.dropped;
    let planned = PlannedSource::new(src, c.plan);
    f(&planned, reading)
}

/// One tensor of a [`HashReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorHash {
    /// Name (stored or canonical, see [`ReadAs`]).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// sha256 (hex) of the C-contiguous little-endian data.
    pub sha256: String,
}

impl TensorHash {
    /// The tensor's manifest line (with its trailing newline), as the module docs define it.
    pub fn manifest_line(&self) -> String {
        let shape: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        let plain =
            !self.name.starts_with('"') && !self.name.chars().any(crate::text::is_unsafe_char);
        let name = if plain {
            self.name.clone()
        } else {
            // A JSON string, with the characters serde leaves raw (DEL, C1, line separators,
            // bidi controls) also written as `\uXXXX` escapes: the line is printable as is.
            serde_json::Value::String(self.name.clone())
                .to_string()
                .chars()
                .map(|c| {
                    if crate::text::is_unsafe_char(c) {
                        format!("\\u{:04x}", u32::from(c))
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        };
        format!(
            "{} {} [{}] {}\n",
            self.sha256,
            self.dtype.name(),
            shape.join(","),
            name
        )
    }
}

/// What [`hash`] computed.
#[derive(Clone, Debug, Serialize)]
pub struct HashReport {
    /// How the file was read.
    #[serde(flatten)]
    pub reading: Reading,
    /// Every tensor, sorted by name.
    pub tensors: Vec<TensorHash>,
    /// sha256 (hex) of [`HashReport::manifest`].
    pub digest: String,
}

impl HashReport {
    /// The manifest: every tensor's [`TensorHash::manifest_line`], in order.
    pub fn manifest(&self) -> String {
        self.tensors.iter().map(TensorHash::manifest_line).collect()
    }
}

/// Hashes a checkpoint's tensors (see the module docs for exactly what is hashed).
///
/// ```
/// use vit_convert::hash::{hash, ReadAs};
/// // The same weights as a timm .pth, a JAX .npz and an HF safetensors: one digest.
/// let pth = hash("fixtures/convert/timm_vit/source.pth", &ReadAs::family("timm".parse()?))?;
/// let npz = hash("fixtures/convert/jax_vit/source.npz", &ReadAs::family("jax".parse()?))?;
/// let hf = hash("fixtures/convert/timm_vit/hf/model.safetensors", &ReadAs::auto())?;
/// assert_eq!(pth.digest, npz.digest);
/// assert_eq!(pth.digest, hf.digest);
/// assert_eq!(pth.tensors[0].name, "classifier.bias");
///
/// // As stored, names (and so the digest) are the container's own.
/// let stored = hash("fixtures/convert/timm_vit/source.pth", &ReadAs::stored())?;
/// assert_ne!(stored.digest, pth.digest);
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// Reader and mapping errors, naming the file.
pub fn hash(path: impl AsRef<Path>, how: &ReadAs) -> Result<HashReport> {
    with_tensors(path.as_ref(), how, hash_tensors)
}

/// [`hash()`] of a source in memory (bytes opened with [`open_bytes`](crate::open_bytes), or
/// any [`TensorSource`]); the report's [`Reading::file`] is `None`.
///
/// ```
/// use vit_convert::{hash::{hash, hash_source, ReadAs}, open_bytes, FileBytes};
/// let path = "fixtures/convert/timm_vit/source.pth";
/// let src = open_bytes(FileBytes::from_vec(std::fs::read(path)?))?;
/// let how = ReadAs::family("timm".parse()?);
/// assert_eq!(hash_source(src.as_ref(), &how)?.digest, hash(path, &how)?.digest);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Reader and mapping errors.
pub fn hash_source(src: &dyn TensorSource, how: &ReadAs) -> Result<HashReport> {
    with_source_tensors(src, None, how, hash_tensors)
}

/// Hashes every tensor of `src`, read as `reading` records.
pub(crate) fn hash_tensors(src: &dyn TensorSource, reading: Reading) -> Result<HashReport> {
    let mut infos: Vec<_> = src.tensors().to_vec();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tensors = Vec::with_capacity(infos.len());
    for info in infos {
        let t = src
            .read(&info.name)
            .map_err(|e| e.with_tensor(info.name.clone()))?;
        tensors.push(TensorHash {
            sha256: hex(&Sha256::digest(&t.data)),
            dtype: t.dtype,
            shape: t.shape.clone(),
            name: info.name,
        });
    }
    let mut report = HashReport {
        reading,
        tensors,
        digest: String::new(),
    };
    report.digest = hex(&Sha256::digest(report.manifest().as_bytes()));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(name: &str) -> TensorHash {
        TensorHash {
            name: name.to_string(),
            dtype: DType::F32,
            shape: vec![2, 3],
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn manifest_line_writes_plain_names_as_is() {
        assert_eq!(
            th("encoder.layer.0.output.dense.bias").manifest_line(),
            format!(
                "{} F32 [2,3] encoder.layer.0.output.dense.bias\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn manifest_line_escapes_line_separators_and_bidi_as_json() {
        let line = th("a\u{2028}b\u{202e}c\u{7f}").manifest_line();
        assert!(line.ends_with(" \"a\\u2028b\\u202ec\\u007f\"\n"), "{line}");
        assert!(!line.trim_end().chars().any(crate::text::is_unsafe_char));
    }

    #[test]
    fn manifest_line_quotes_names_that_could_forge_lines() {
        let forged = th("a\nabab F32 [1] b").manifest_line();
        assert_eq!(forged.lines().count(), 1);
        assert!(forged.ends_with(" \"a\\nabab F32 [1] b\"\n"), "{forged}");
        let quoted = th("\"x\"").manifest_line();
        assert!(quoted.ends_with(" \"\\\"x\\\"\"\n"), "{quoted}");
    }

    #[test]
    fn scalar_shape_is_empty_brackets() {
        let mut t = th("step");
        t.shape.clear();
        assert!(t.manifest_line().contains(" F32 [] step"));
    }
}
