//! Resource budgets for reading untrusted checkpoints, and how to change them.
//!
//! Every reader bounds what a file can make it spend — bytes parsed, values built, nesting
//! followed, bytes allocated for a tensor — by one of the budgets in [`Limits`]; so do the JSON
//! and TOML files read beside the weights or named on the command line
//! ([`model::read_config_file`](crate::model::read_config_file),
//! [`mapping::read_table_file`](crate::mapping::read_table_file)), image preprocessing and the
//! forward pass a model folder asks for (tokens per image). A file
//! that exceeds a budget is refused with [`ErrorKind::BudgetExceeded`] naming the budget and its
//! limit, before the memory is spent. The defaults ([`Limits::DEFAULT`]) are far above what any
//! real Vision Transformer checkpoint needs and keep a hostile file under about 2 GiB of memory.
//!
//! `Limits` is a plain value: there is no process-wide setting. Every function that reads
//! untrusted input takes one, in its options ([`OpenOptions`](crate::source::OpenOptions),
//! [`ConvertOptions`](crate::ConvertOptions), [`ForwardOptions`](crate::forward::ForwardOptions))
//! or as an argument; the functions without one use [`Limits::DEFAULT`]. Two conversions in one
//! process may use different limits. To read an unusual but trusted file that exceeds a default,
//! raise the budget:
//!
//! * from the command line, with an environment variable `VIT_CONVERT_LIMIT_<FIELD>` (the field
//!   name in upper case, e.g. `VIT_CONVERT_LIMIT_PICKLE_NODES=16777216`; `K`, `M` and `G` suffixes
//!   mean KiB, MiB, GiB). The CLI reads them once at start ([`Limits::from_vars`] over its
//!   environment); an unknown `VIT_CONVERT_LIMIT_*` variable or an unparsable value is an error,
//!   never ignored;
//! * from the library, by passing the raised limits in the options. The library itself never
//!   reads the environment.
//!
//! ```
//! use vit_convert::{source::OpenOptions, Limits};
//! let mut limits = Limits::DEFAULT;
//! limits.pickle_nodes *= 4;
//! let src = vit_convert::source::open_with(
//!     "fixtures/convert/timm_vit/source.pth",
//!     &OpenOptions::with_limits(limits),
//! )?;
//! assert!(!src.tensors().is_empty());
//! # Ok::<(), vit_convert::Error>(())
//! ```
//!
//! [`ErrorKind::BudgetExceeded`]: crate::ErrorKind::BudgetExceeded

use crate::error::{ErrorKind, Result};

/// The prefix of the environment variables the CLI reads into [`Limits::from_vars`].
pub const ENV_PREFIX: &str = "VIT_CONVERT_LIMIT_";

/// Budgets every reader enforces. See the [module docs](self) for how to change them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest pickle stream, in bytes (torch `data.pkl`, each legacy pickle).
    pub pickle_bytes: usize,
    /// Most memo entries one pickle may create.
    pub pickle_memo_entries: usize,
    /// Most values one pickle may create (shared memo references count once).
    pub pickle_nodes: usize,
    /// Most container slots (list/tuple/dict/set items) one pickle may create.
    pub pickle_container_items: usize,
    /// Longest the pickle value stack may grow.
    pub pickle_stack_len: usize,
    /// Most pickle MARKs open at once.
    pub pickle_mark_depth: usize,
    /// Most string and bytes payload one pickle may hold, in bytes.
    pub pickle_payload_bytes: usize,
    /// Deepest container nesting followed when looking for tensors in a pickle.
    pub nesting_depth: usize,
    /// Most tensors one checkpoint may list.
    pub tensors: usize,
    /// Most bytes of tensor names (all names together, and the container path being walked).
    pub tensor_name_bytes: usize,
    /// Most bytes the tensors of a torch checkpoint may read beyond what their storages hold:
    /// zero or overlapping strides (`expand`) and many tensors viewing one storage make a small
    /// file read as a large one (reading materialises every tensor).
    pub aliased_tensor_bytes: usize,
    /// Most entries in a zip archive (torch zip, npz).
    pub zip_entries: usize,
    /// Largest `.npy` header, in bytes.
    pub npy_header_bytes: usize,
    /// Largest safetensors JSON header, in bytes (the `safetensors` crate also refuses headers
    /// over 100 MB, so raising this further has no effect).
    pub safetensors_header_bytes: usize,
    /// Largest ratio of inflated to compressed size of a deflated npz member that inflates to
    /// more than [`INFLATE_FREE_BYTES`].
    pub npz_inflate_ratio: usize,
    /// Most msgpack values (map entries, array items, leaves, counted as parsed) one Flax
    /// `flax_model.msgpack` may hold.
    pub flax_values: usize,
    /// Largest JSON file read beside the weights or named on the command line (`config.json`,
    /// `preprocessor_config.json`, `--config`), in bytes.
    pub config_file_bytes: usize,
    /// Largest mapping table (`--table`, TOML) read, in bytes: parsing TOML costs about 80 times
    /// the text in memory.
    pub table_file_bytes: usize,
    /// Most tokens (patches plus class/distillation tokens) per image the forward pass runs: the
    /// attention scores of one head take `tokens² × 4` bytes per thread, and a tiny model
    /// (hidden size 1, patch size 1) or a large input with `--interpolate-pos-encoding` could
    /// otherwise ask for terabytes.
    pub forward_tokens: usize,
    /// Largest input file (checkpoint, `.npy`) opened, in bytes, mapped or read.
    pub input_file_bytes: usize,
    /// Largest input file read into memory rather than mapped (`OpenOptions::mmap` off; the CLI:
    /// `VIT_CONVERT_NO_MMAP=1`), in
    /// bytes: reading takes the file's size in memory, so a sparse or lying file must not choose
    /// it.
    pub read_file_bytes: usize,
    /// Most bytes preprocessing one image may allocate (`--image`): the resize's intermediate
    /// and result, the center crop and the float32 output, computed from the image and
    /// `preprocessor_config.json` before any of them is allocated — a 1×1 PNG with a config
    /// asking for a 13 376² resize would otherwise take gigabytes.
    pub preprocess_bytes: usize,
    /// Most bytes of activations one forward pass may allocate (patches, embeddings, the
    /// per-layer buffers: batch × tokens × hidden size and intermediate size, in float32),
    /// checked before any is allocated.
    pub forward_bytes: usize,
    /// Most bytes a mapping table may add to what it reads: the tensors a table makes (and every
    /// step of every rule) may hold at most the bytes of the tensors they come from plus this.
    /// Table ops only move bytes, except `prepend_zeros` (one class-token row), so a table that
    /// would turn a small checkpoint into a large output (`prepend_zeros(0, 1099511627776)`, a
    /// reshape or concat that grows) is refused while planning, before anything is read or written.
    pub table_output_allowance_bytes: usize,
}

/// `n` bytes as a `usize` budget, or `usize::MAX` where `n` does not fit (32-bit targets).
const fn bytes_or_max(n: u64) -> usize {
    if n > usize::MAX as u64 {
        usize::MAX
    } else {
        n as usize
    }
}

/// A deflated npz member may always inflate to this many bytes, whatever its ratio.
pub const INFLATE_FREE_BYTES: usize = 16 << 20;

/// What one environment variable sets: its name after [`ENV_PREFIX`] and the field.
type Setter = fn(&mut Limits) -> &mut usize;

const FIELDS: &[(&str, Setter)] = &[
    ("PICKLE_BYTES", |l| &mut l.pickle_bytes),
    ("PICKLE_MEMO_ENTRIES", |l| &mut l.pickle_memo_entries),
    ("PICKLE_NODES", |l| &mut l.pickle_nodes),
    ("PICKLE_CONTAINER_ITEMS", |l| &mut l.pickle_container_items),
    ("PICKLE_STACK_LEN", |l| &mut l.pickle_stack_len),
    ("PICKLE_MARK_DEPTH", |l| &mut l.pickle_mark_depth),
    ("PICKLE_PAYLOAD_BYTES", |l| &mut l.pickle_payload_bytes),
    ("NESTING_DEPTH", |l| &mut l.nesting_depth),
    ("TENSORS", |l| &mut l.tensors),
    ("TENSOR_NAME_BYTES", |l| &mut l.tensor_name_bytes),
    ("ALIASED_TENSOR_BYTES", |l| &mut l.aliased_tensor_bytes),
    ("ZIP_ENTRIES", |l| &mut l.zip_entries),
    ("NPY_HEADER_BYTES", |l| &mut l.npy_header_bytes),
    ("SAFETENSORS_HEADER_BYTES", |l| {
        &mut l.safetensors_header_bytes
    }),
    ("NPZ_INFLATE_RATIO", |l| &mut l.npz_inflate_ratio),
    ("FLAX_VALUES", |l| &mut l.flax_values),
    ("CONFIG_FILE_BYTES", |l| &mut l.config_file_bytes),
    ("TABLE_FILE_BYTES", |l| &mut l.table_file_bytes),
    ("FORWARD_TOKENS", |l| &mut l.forward_tokens),
    ("INPUT_FILE_BYTES", |l| &mut l.input_file_bytes),
    ("READ_FILE_BYTES", |l| &mut l.read_file_bytes),
    ("PREPROCESS_BYTES", |l| &mut l.preprocess_bytes),
    ("FORWARD_BYTES", |l| &mut l.forward_bytes),
    ("TABLE_OUTPUT_ALLOWANCE_BYTES", |l| {
        &mut l.table_output_allowance_bytes
    }),
];

/// The budget names [`ErrorKind::BudgetExceeded`] reports, and the field each is a limit of.
const BUDGETS: &[(&str, &str)] = &[
    ("pickle bytes", "PICKLE_BYTES"),
    ("pickle memo entries", "PICKLE_MEMO_ENTRIES"),
    ("pickle nodes", "PICKLE_NODES"),
    ("pickle container items", "PICKLE_CONTAINER_ITEMS"),
    ("pickle stack", "PICKLE_STACK_LEN"),
    ("pickle MARK depth", "PICKLE_MARK_DEPTH"),
    ("pickle string/bytes payload", "PICKLE_PAYLOAD_BYTES"),
    ("container nesting", "NESTING_DEPTH"),
    ("tensor count", "TENSORS"),
    ("tensor name bytes", "TENSOR_NAME_BYTES"),
    ("aliased tensor bytes", "ALIASED_TENSOR_BYTES"),
    ("zip entries", "ZIP_ENTRIES"),
    ("npy header length", "NPY_HEADER_BYTES"),
    ("safetensors header length", "SAFETENSORS_HEADER_BYTES"),
    ("npz inflate ratio", "NPZ_INFLATE_RATIO"),
    ("flax values", "FLAX_VALUES"),
    ("config file bytes", "CONFIG_FILE_BYTES"),
    ("table file bytes", "TABLE_FILE_BYTES"),
    ("forward tokens", "FORWARD_TOKENS"),
    ("input file bytes", "INPUT_FILE_BYTES"),
    ("read file bytes", "READ_FILE_BYTES"),
    ("preprocess bytes", "PREPROCESS_BYTES"),
    ("forward bytes", "FORWARD_BYTES"),
    ("table output bytes", "TABLE_OUTPUT_ALLOWANCE_BYTES"),
];

impl Limits {
    /// The defaults.
    pub const DEFAULT: Limits = Limits {
        pickle_bytes: 256 << 20,
        pickle_memo_entries: 1 << 20,
        pickle_nodes: 1 << 22,
        pickle_container_items: 1 << 24,
        pickle_stack_len: 1 << 20,
        pickle_mark_depth: 1 << 16,
        pickle_payload_bytes: 256 << 20,
        nesting_depth: 1024,
        tensors: 1 << 18,
        tensor_name_bytes: 64 << 20,
        aliased_tensor_bytes: 64 << 20,
        zip_entries: 1 << 20,
        npy_header_bytes: 1 << 20,
        safetensors_header_bytes: 100_000_000,
        npz_inflate_ratio: 64,
        flax_values: 1 << 20,
        config_file_bytes: 16 << 20,
        table_file_bytes: 1 << 20,
        forward_tokens: 1 << 13,
        input_file_bytes: bytes_or_max(64 << 30),
        read_file_bytes: bytes_or_max(8 << 30),
        preprocess_bytes: 256 << 20,
        forward_bytes: 1 << 31,
        table_output_allowance_bytes: 16 << 20,
    };

    /// The defaults with `(VIT_CONVERT_LIMIT_<FIELD>, value)` pairs applied.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidOption`] for a `VIT_CONVERT_LIMIT_*` variable that names no budget or
    /// whose value is not a positive integer (optionally with a `K`, `M` or `G` suffix).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Limits> {
        let mut limits = Limits::DEFAULT;
        for (key, value) in vars {
            let field = key.strip_prefix(ENV_PREFIX).unwrap_or(&key);
            let Some((_, setter)) = FIELDS.iter().find(|(name, _)| *name == field) else {
                let known: Vec<String> = FIELDS
                    .iter()
                    .map(|(n, _)| format!("{ENV_PREFIX}{n}"))
                    .collect();
                return Err(ErrorKind::InvalidOption {
                    reason: format!("{key} names no budget (known: {})", known.join(", ")),
                }
                .into());
            };
            let n = parse_size(&value).ok_or_else(|| ErrorKind::InvalidOption {
                reason: format!(
                    "{key}={value:?}: expected a positive integer, optionally with K, M or G"
                ),
            })?;
            *setter(&mut limits) = n;
        }
        Ok(limits)
    }
}

/// The environment variable that raises the budget an [`ErrorKind::BudgetExceeded`] names
/// (`"pickle nodes"` → `VIT_CONVERT_LIMIT_PICKLE_NODES`), if it has one.
pub fn env_var_for(budget: &str) -> Option<String> {
    BUDGETS
        .iter()
        .find(|(name, _)| *name == budget)
        .map(|(_, field)| format!("{ENV_PREFIX}{field}"))
}

/// [`ErrorKind::BudgetExceeded`] (offset 0) unless `used` is known (computing it did not
/// overflow) and at most `limit`.
pub(crate) fn check_within(budget: &'static str, used: Option<usize>, limit: usize) -> Result<()> {
    if used.is_none_or(|n| n > limit) {
        return Err(ErrorKind::BudgetExceeded {
            budget,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            offset: 0,
        }
        .into());
    }
    Ok(())
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// `123`, `64K`, `256M`, `2G` (binary multiples); zero and overflow are refused.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (s.get(..s.len() - 1)?, 10),
        b'm' | b'M' => (s.get(..s.len() - 1)?, 20),
        b'g' | b'G' => (s.get(..s.len() - 1)?, 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    let n = n.checked_mul(1usize.checked_shl(shift)?)?;
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_values_raise_named_budgets_with_binary_suffixes() {
        let l = Limits::from_vars(vars(&[
            ("VIT_CONVERT_LIMIT_PICKLE_NODES", "8388608"),
            ("VIT_CONVERT_LIMIT_PICKLE_BYTES", "1G"),
            ("VIT_CONVERT_LIMIT_NPY_HEADER_BYTES", "4m"),
            ("VIT_CONVERT_LIMIT_TENSORS", "512K"),
        ]))
        .unwrap();
        assert_eq!(l.pickle_nodes, 8 << 20);
        assert_eq!(l.pickle_bytes, 1 << 30);
        assert_eq!(l.npy_header_bytes, 4 << 20);
        assert_eq!(l.tensors, 512 << 10);
        assert_eq!(l.pickle_memo_entries, Limits::DEFAULT.pickle_memo_entries);
    }

    #[test]
    fn unknown_budget_or_bad_value_is_an_invalid_option() {
        for (k, v) in [
            ("VIT_CONVERT_LIMIT_PICKLE_NODE", "10"),
            ("VIT_CONVERT_LIMIT_TENSORS", "0"),
            ("VIT_CONVERT_LIMIT_TENSORS", "-1"),
            ("VIT_CONVERT_LIMIT_TENSORS", "1.5G"),
            ("VIT_CONVERT_LIMIT_TENSORS", "G"),
            ("VIT_CONVERT_LIMIT_TENSORS", "99999999999999999999"),
            ("VIT_CONVERT_LIMIT_TENSORS", "9999999999999G"),
        ] {
            let e = Limits::from_vars(vars(&[(k, v)])).unwrap_err();
            match e.kind() {
                ErrorKind::InvalidOption { reason } => assert!(reason.contains(k), "{reason}"),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_budget_name_maps_to_a_known_variable() {
        for (budget, field) in BUDGETS {
            assert!(FIELDS.iter().any(|(f, _)| f == field), "{budget}");
        }
        assert_eq!(BUDGETS.len(), FIELDS.len());
        assert_eq!(
            env_var_for("pickle nodes").as_deref(),
            Some("VIT_CONVERT_LIMIT_PICKLE_NODES")
        );
        assert_eq!(env_var_for("no such budget"), None);
    }

    #[test]
    fn every_field_has_one_variable() {
        let mut l = Limits::DEFAULT;
        for (i, (_, setter)) in FIELDS.iter().enumerate() {
            *setter(&mut l) = 1000 + i;
        }
        let mut seen: Vec<usize> = FIELDS.iter().map(|(_, s)| *s(&mut l)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), FIELDS.len());
        // Every field was overwritten: none keeps its default.
        assert_ne!(l.pickle_bytes, Limits::DEFAULT.pickle_bytes);
        assert_ne!(l.npz_inflate_ratio, Limits::DEFAULT.npz_inflate_ratio);
    }
}
