//! The crate's error type: an [`ErrorKind`] plus where it happened (file, tensor).
//!
//! `Display` reads outside-in: `model.pth: tensor blocks.3.attn.qkv.weight: pickle: disallowed
//! global os.system at byte 42`. It is always one line: control characters in file text are
//! escaped ([`crate::text::Escaped`]).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::text::Escaped;
use crate::vocab::{DType, Format, ImageFormat, MappingError, OutputFormat};

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its kind and, where known, the file and tensor it concerns.
///
/// ```
/// use vit_convert::ErrorKind;
/// // A pickle that would call os.system: refused, nothing executed.
/// let err = vit_convert::open("fixtures/hostile/zip_posix_system.pth").err().unwrap();
/// assert!(matches!(err.kind(), ErrorKind::DisallowedGlobal { global, .. } if global == "posix.system"));
/// assert!(err.path().is_some());
/// assert!(err.to_string().contains("disallowed global posix.system"));
/// ```
#[derive(Debug)]
pub struct Error(Box<Inner>);

/// The error's data, boxed: a `Result<T, Error>` stays one pointer wide on the error side
/// however much data a kind carries.
#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    path: Option<PathBuf>,
    tensor: Option<String>,
}

impl Error {
    /// Creates an error of the given kind with no location.
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(Inner {
            kind,
            path: None,
            tensor: None,
        }))
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The file the error concerns, if known.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }

    /// The tensor the error concerns, if known.
    pub fn tensor(&self) -> Option<&str> {
        self.0.tensor.as_deref()
    }

    /// Attaches a file path (keeps an existing one: the innermost location wins).
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        if self.0.path.is_none() {
            self.0.path = Some(path.into());
        }
        self
    }

    /// Attaches a tensor name (keeps an existing one).
    pub fn with_tensor(mut self, tensor: impl Into<String>) -> Self {
        if self.0.tensor.is_none() {
            self.0.tensor = Some(tensor.into());
        }
        self
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // File text (paths, tensor names, table text inside the kind's data) is escaped: an
        // error is always one line, whatever a checkpoint names its tensors.
        if let Some(p) = &self.0.path {
            write!(f, "{}: ", Escaped(p.display()))?;
        }
        if let Some(t) = &self.0.tensor {
            write!(f, "tensor {}: ", Escaped(t))?;
        }
        write!(f, "{}", Escaped(&self.0.kind))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}

/// What went wrong. Variants carry the data needed to say where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An operating-system I/O error.
    #[error("{op}: {source}")]
    Io {
        /// What was being done (`open`, `read`, `write`, `rename`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path that must name a regular file (an input, or an output to be replaced) names a FIFO,
    /// socket, device or directory: refused before anything is read or written, so it can never
    /// block or consume a stream.
    #[error("not a regular file (it is a {kind})")]
    NotRegularFile {
        /// What it is: `fifo`, `socket`, `character device`, `block device`, `directory`, `other`.
        kind: &'static str,
    },
    /// The file's leading bytes match no supported container.
    #[error("unrecognised file format (leading bytes {magic})")]
    UnknownFormat {
        /// The first bytes of the file, in hex.
        magic: String,
    },
    /// The input ended before a structure was complete.
    #[error("truncated {what} at byte {offset}: need {needed} bytes, {available} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Byte offset where the read started.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A pickle named a global that is not on the allowlist; nothing was executed.
    #[error("pickle: disallowed global {global} at byte {offset}")]
    DisallowedGlobal {
        /// `module.name` of the refused global.
        global: String,
        /// Byte offset of the opcode within the pickle.
        offset: u64,
    },
    /// A pickle opcode that the safe machine does not implement.
    #[error("pickle: unsupported opcode 0x{opcode:02x} at byte {offset}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Byte offset within the pickle.
        offset: u64,
    },
    /// A pickle that is structurally invalid (stack underflow, wrong operand types, …).
    #[error("pickle: {reason} at byte {offset}")]
    MalformedPickle {
        /// What is wrong.
        reason: String,
        /// Byte offset within the pickle.
        offset: u64,
    },
    /// A resource budget (memo entries, nesting, stack, tensor count, header size …) was exceeded.
    #[error("{budget} budget exceeded: limit {limit} (at byte {offset})")]
    BudgetExceeded {
        /// Which budget.
        budget: &'static str,
        /// Its limit.
        limit: u64,
        /// Byte offset where it was exceeded.
        offset: u64,
    },
    /// A dtype that this crate cannot represent.
    #[error("unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The dtype as the file spells it.
        dtype: String,
    },
    /// A shape, stride or offset that is invalid (negative, overflowing, rank mismatch, …).
    #[error("invalid tensor layout: {reason}")]
    InvalidLayout {
        /// What is wrong.
        reason: String,
    },
    /// A tensor's extent runs past the end of its storage.
    #[error(
        "tensor extends past its storage {storage}: needs {needed} bytes, storage has {available}"
    )]
    StorageOutOfBounds {
        /// Storage key.
        storage: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A storage record named by the pickle is absent from the container.
    #[error("missing storage record {key}")]
    MissingStorage {
        /// Storage key.
        key: String,
    },
    /// A storage record whose size disagrees with what the pickle declares.
    #[error("storage {key} has {found} bytes, pickle declares {declared}")]
    StorageSizeMismatch {
        /// Storage key.
        key: String,
        /// Bytes declared by the pickle.
        declared: u64,
        /// Bytes found in the container.
        found: u64,
    },
    /// The same name appears twice (zip entry, tensor, dict key).
    #[error("duplicate {what} {name}")]
    Duplicate {
        /// What kind of name (`zip entry`, `tensor`, …).
        what: &'static str,
        /// The duplicated name.
        name: String,
    },
    /// A malformed checkpoint container (zip, npy, safetensors, legacy torch, Flax msgpack).
    /// A file cut short is [`ErrorKind::Truncated`] instead, whatever its container.
    #[error("{}: {reason}", container_label(*.format))]
    MalformedContainer {
        /// Which container format ([`Format::Zip`] for the zip layer shared by torch zip and npz).
        format: Format,
        /// What is wrong.
        reason: String,
    },
    /// A malformed image file (PNG or JPEG).
    #[error("{}: {reason}", .format.name())]
    MalformedImage {
        /// Which image format.
        format: ImageFormat,
        /// What is wrong.
        reason: String,
    },
    /// A writer that could not encode its output (other than an I/O error, which is
    /// [`ErrorKind::Io`]).
    #[error("{} writer: {reason}", .format.name())]
    Writer {
        /// The output format being written.
        format: OutputFormat,
        /// What went wrong.
        reason: String,
    },
    /// A mapping table that cannot be parsed or is inconsistent.
    #[error("mapping table {file}:{line}: {reason}")]
    Table {
        /// Table file.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A mapping table did not fit the checkpoint: what did not fit ([`MappingError`]: unconsumed,
    /// missing or twice-produced tensors, shape contradictions, layer gaps, rejected features),
    /// with the table's file and the rule's line.
    #[error("{problem} (table {file}{})", if *.line > 0 { format!(":{}", .line) } else { String::new() })]
    Mapping {
        /// The table's id (`timm`, or a custom table's own).
        table: String,
        /// Table file.
        file: String,
        /// Rule line (0 when no single rule is concerned).
        line: usize,
        /// What did not fit.
        problem: MappingError,
    },
    /// Detection (`--from auto`) found no family whose table fits the checkpoint's tensor names.
    #[error(
        "cannot detect the checkpoint family: no known family matches (candidates: {}; seen: {}{}); set option `from` or option `table`",
        .candidates.join(", "),
        .seen.join(", "),
        if *.tensors > .seen.len() { ", …" } else { "" }
    )]
    NoFamily {
        /// The families tried (the built-in tables' ids).
        candidates: Vec<String>,
        /// The first few tensor names seen (at most six).
        seen: Vec<String>,
        /// How many tensors the checkpoint lists.
        tensors: usize,
    },
    /// Detection (`--from auto`) found several families whose tables fit the checkpoint.
    #[error("cannot detect the checkpoint family: ambiguous: matches {}; set option `from`", .matches.join(", "))]
    AmbiguousFamily {
        /// The ids of the tables that fit.
        matches: Vec<String>,
    },
    /// A config value that is missing or inconsistent.
    #[error("config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A config value (`config.json`, `--config`) that disagrees with the tensors present: the
    /// config says `config`, the weights hold `tensors`.
    #[error("config: `{field}` is {config}, but the weights hold {tensors}")]
    ConfigMismatch {
        /// The config field (`num_hidden_layers`, `hidden_size`, …).
        field: &'static str,
        /// What the config says.
        config: u64,
        /// What the tensors hold.
        tensors: u64,
    },
    /// A name outside a closed set (`hidden_act`, preprocessor preset, family, branch).
    #[error("unknown {field} `{value}` (known: {})", .known.join(", "))]
    UnknownName {
        /// What the name is for (`hidden_act`, `preprocessor`, `family`, `branch`).
        field: &'static str,
        /// The name given.
        value: String,
        /// The names accepted.
        known: Vec<&'static str>,
    },
    /// An output that is one of the inputs (the same file by device and inode: also through a
    /// symlink, a hard link or `./x`).
    #[error("output {} would overwrite the input {}; choose another output", .output.display(), .input.display())]
    OutputIsInput {
        /// The output as given.
        output: PathBuf,
        /// The input it is, as given.
        input: PathBuf,
    },
    /// Two outputs that name the same file.
    #[error("outputs {} and {} name the same file", .first.display(), .second.display())]
    OutputsCollide {
        /// The first output as given.
        first: PathBuf,
        /// The later output naming the same file.
        second: PathBuf,
    },
    /// A tolerance part (`atol`, `rtol`) that is negative, infinite or NaN.
    #[error("tolerance {part} must be a finite number >= 0, got {value}")]
    InvalidTolerance {
        /// `atol` or `rtol`.
        part: &'static str,
        /// The value given.
        value: f64,
    },
    /// A command-line or API option that does not apply.
    #[error("{reason}")]
    InvalidOption {
        /// What is wrong.
        reason: String,
    },
    /// A tensor name that the source does not hold.
    #[error("no tensor named {name}")]
    TensorNotFound {
        /// The requested name.
        name: String,
    },
    /// A computed output and the expected array disagree in shape, or a comparison's value
    /// counts disagree with its shape: nothing was compared.
    #[error("shape mismatch: computed {computed:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Shape of the computed values (for a bare length, one dimension).
        computed: Vec<usize>,
        /// Shape of the expected values (for a bare length, one dimension).
        expected: Vec<usize>,
    },
    /// A comparison with no values in it (an empty batch, a zero dimension) proves nothing.
    #[error("nothing to compare: {what} of shape {shape:?} holds no values")]
    EmptyComparison {
        /// What is empty (`input`, `expected output`).
        what: &'static str,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// An array whose dtype cannot be used here (an integer array where floats are needed).
    #[error("{what} is {found} {shape:?}; a float array (f16, bf16, f32 or f64) is needed")]
    UnexpectedDType {
        /// What the array is for (`a .npy array`).
        what: &'static str,
        /// Its dtype.
        found: DType,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A value that is not finite where only finite values prove anything (input pixels), or a
    /// finite value that a cast would turn into ±Inf (an f64 beyond the f32 range).
    #[error("{what} value {value:e} at {index:?} {problem}")]
    BadValue {
        /// Which array (`input`, `expected`).
        what: &'static str,
        /// Multi-index of the first such value.
        index: Vec<usize>,
        /// The value as stored.
        value: f64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A cast (`ConvertOptions::dtype`) would turn finite values into ±Inf or NaN; refused unless
    /// `ConvertOptions::allow_overflow` asks for torch's `.half()` saturation.
    #[error("casting {from} to {to} turns {count} finite values into Inf or NaN (largest magnitude {max_abs:e}, {to} holds up to {limit:e}); refused unless overflow is allowed (option `allow_overflow`, as torch's .half() saturates)")]
    CastOverflow {
        /// The stored dtype.
        from: DType,
        /// The requested dtype.
        to: DType,
        /// How many finite values the cast makes non-finite.
        count: u64,
        /// The largest magnitude among them.
        max_abs: f64,
        /// The largest finite value of `to`.
        limit: f64,
    },
}

impl ErrorKind {
    /// Wraps an I/O error with the operation that failed.
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        ErrorKind::Io { op, source }
    }

    /// An [`ErrorKind::UnknownName`].
    pub(crate) fn unknown_name(field: &'static str, value: &str, known: Vec<&'static str>) -> Self {
        ErrorKind::UnknownName {
            field,
            value: value.to_string(),
            known,
        }
    }
}

/// `Display` (the name) and `FromStr` (an [`ErrorKind::UnknownName`] for `$field` otherwise) for
/// a type with `fn name(self) -> &'static str` whose values `$all` (an iterator) lists.
macro_rules! impl_names {
    ($t:ty, $field:literal, $all:expr) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::error::Error;

            /// # Errors
            /// [`ErrorKind::UnknownName`](crate::ErrorKind::UnknownName) for any other name.
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                $all.find(|v: &$t| v.name() == s).ok_or_else(|| {
                    $crate::error::ErrorKind::unknown_name(
                        $field,
                        s,
                        $all.map(<$t>::name).collect(),
                    )
                    .into()
                })
            }
        }
    };
}
pub(crate) use impl_names;

/// How container errors name the format (`flax msgpack`: the Flax format's own name is `flax`).
fn container_label(format: Format) -> &'static str {
    match format {
        Format::Flax => "flax msgpack",
        other => other.name(),
    }
}

/// The one constructor of [`ErrorKind::MalformedContainer`].
pub(crate) fn malformed(format: Format, reason: impl Into<String>) -> Error {
    Error::from(ErrorKind::MalformedContainer {
        format,
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_whatever_the_names_hold() {
        let evil = "x\nPASS: max |Δ| 0\n\u{1b}[2J\r\0\u{2028}";
        let e = Error::from(ErrorKind::TensorNotFound { name: evil.into() })
            .with_path(format!("dir\n{evil}"))
            .with_tensor(evil);
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.chars().any(crate::text::is_unsafe_char), "{text:?}");
        assert!(text.contains(r"tensor x\nPASS: max |Δ| 0\n\u{1b}[2J\r\u{0}\u{2028}: "));
    }

    #[test]
    fn detection_errors_read_as_before_they_were_typed() {
        let none = ErrorKind::NoFamily {
            candidates: vec!["timm".into(), "jax".into()],
            seen: vec!["a".into(), "b".into()],
            tensors: 7,
        };
        assert_eq!(
            none.to_string(),
            "cannot detect the checkpoint family: no known family matches (candidates: timm, jax; \
             seen: a, b, …); set option `from` or option `table`"
        );
        let all_seen = ErrorKind::NoFamily {
            candidates: vec!["timm".into()],
            seen: vec!["a".into()],
            tensors: 1,
        };
        assert!(all_seen.to_string().contains("seen: a); set"));
        let two = ErrorKind::AmbiguousFamily {
            matches: vec!["timm".into(), "deit".into()],
        };
        assert_eq!(
            two.to_string(),
            "cannot detect the checkpoint family: ambiguous: matches timm, deit; set option `from`"
        );
    }
}
