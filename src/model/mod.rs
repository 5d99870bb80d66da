//! The canonical model: architecture, HF `config.json` fields, and their inference from tensors.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ErrorKind, Result};

mod activation;
mod buffers;
mod config;
mod infer;
pub(crate) mod names;
pub(crate) mod preprocessor;
mod user;
pub(crate) use user::FEATURE_FIELDS;

pub use crate::vocab::ModelType;
pub use activation::Activation;
pub(crate) use buffers::check_buffer;
pub(crate) use config::dinov2_mlp_width;
pub use config::{
    relative_position_grid, relative_position_index, relative_position_rows, Encoder, Mlp, Pooling,
    QkvBias, RelativePosition, ViTConfig,
};
pub(crate) use infer::{
    architecture_of, check_positions, check_relative_rows, classifies, expected_names, family_of,
    infer_config, relative_tables, TableFacts,
};
pub use preprocessor::Preprocessor;

/// Reads a JSON file that is as untrusted as the weights (a `config.json` or
/// `preprocessor_config.json` beside them, a config file named by the caller), refusing it
/// unread when it is larger than [`Limits::config_file_bytes`](crate::Limits::config_file_bytes).
///
/// # Errors
/// [`ErrorKind::Io`] when it cannot be read (or is not UTF-8), [`ErrorKind::NotRegularFile`],
/// [`ErrorKind::BudgetExceeded`] (`config file bytes`) when it is too large; all carry `path`.
pub fn read_config_file(
    path: impl AsRef<std::path::Path>,
    limits: &crate::Limits,
) -> Result<String> {
    crate::fsio::read_text(path.as_ref(), limits.config_file_bytes, "config file bytes")
}

pub use crate::vocab::Architecture;

/// The on-disk name of a canonical tensor under an architecture: the body takes the model
/// prefix (`vit.`, `deit.`, `beit.`); heads do not; DeiT-with-teacher writes its class head
/// `classifier.*` as `cls_classifier.*`.
pub fn disk_name(arch: Architecture, canonical: &str) -> String {
    if names::is_head(arch, canonical) {
        match (arch, canonical.strip_prefix("classifier.")) {
            (Architecture::DeiTForImageClassificationWithTeacher, Some(rest)) => {
                format!("cls_classifier.{rest}")
            }
            _ => canonical.to_string(),
        }
    } else {
        format!("{}{canonical}", arch.prefix())
    }
}

pub(crate) fn cfg_err(reason: impl Into<String>) -> crate::Error {
    ErrorKind::Config {
        reason: reason.into(),
    }
    .into()
}

/// A config value that disagrees with the tensors.
pub(crate) fn mismatch(field: &'static str, config: usize, tensors: usize) -> crate::Error {
    let wide = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    ErrorKind::ConfigMismatch {
        field,
        config: wide(config),
        tensors: wide(tensors),
    }
    .into()
}

/// Most class labels a config or a classifier may have (ImageNet-21k has 21 843).
pub const MAX_LABELS: usize = 1 << 20;

/// A JSON value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s,
    }
}

/// A classifier's class count: at least 1 (transformers replaces a 0-class head with an
/// identity, which computes something else), at most [`MAX_LABELS`].
///
/// # Errors
/// [`ErrorKind::Config`] naming the count.
pub(crate) fn check_classes(k: usize) -> Result<()> {
    if k == 0 || k > MAX_LABELS {
        return Err(cfg_err(format!(
            "the classifier has {k} classes, expected 1..={MAX_LABELS}"
        )));
    }
    Ok(())
}

/// The error for an `architectures` value that is not a list of class names.
fn architectures_err(v: Option<&Value>, origin: &str) -> crate::Error {
    cfg_err(format!(
        "{origin}field `architectures` must be a list of class names, got {}",
        v.map_or_else(String::new, short)
    ))
}

/// `LABEL_{i}` names for `n` labels, as transformers makes them from `num_labels` alone.
fn default_labels(n: usize, origin: &str) -> Result<BTreeMap<usize, String>> {
    if n > MAX_LABELS {
        return Err(cfg_err(format!(
            "{origin}`num_labels` {n} is more than {MAX_LABELS}"
        )));
    }
    Ok((0..n).map(|i| (i, format!("LABEL_{i}"))).collect())
}

/// `num_labels`, when given, must count the labels of `id2label`.
fn check_num_labels(num_labels: Option<usize>, labels: usize, origin: &str) -> Result<()> {
    match num_labels {
        Some(n) if n != labels => Err(cfg_err(format!(
            "{origin}`num_labels` is {n}, but `id2label` has {labels} labels"
        ))),
        _ => Ok(()),
    }
}

/// `pooler_act`: the pooler computes `tanh` only; any other activation would silently give
/// another pooler output, so it is refused (absent or null means `tanh`).
fn check_pooler_act(v: Option<&Value>, origin: &str) -> Result<()> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == "tanh" => Ok(()),
        Some(v) => Err(cfg_err(format!(
            "{origin}unsupported `pooler_act` {} (only \"tanh\" is computed)",
            short(v)
        ))),
    }
}

/// `layer_norm_eps`: a finite non-negative number.
fn eps_value(v: &Value, origin: &str) -> Result<f64> {
    v.as_f64()
        .filter(|e| e.is_finite() && *e >= 0.0)
        .ok_or_else(|| {
            cfg_err(format!(
                "{origin}`layer_norm_eps` must be a finite non-negative number, got {}",
                short(v)
            ))
        })
}

/// `id2label`: keys are the indices `0..n` (in any order), at most [`MAX_LABELS`] of them.
fn parse_id2label(m: &Map<String, Value>, origin: &str) -> Result<BTreeMap<usize, String>> {
    if m.len() > MAX_LABELS {
        return Err(cfg_err(format!(
            "{origin}id2label has {} labels, more than {MAX_LABELS}",
            m.len()
        )));
    }
    let mut labels = BTreeMap::new();
    for (k, name) in m {
        let i = k
            .parse::<usize>()
            .ok()
            .filter(|&i| i < m.len())
            .ok_or_else(|| {
                cfg_err(format!(
                    "{origin}id2label key {:?} is not an index below {}",
                    k.chars().take(40).collect::<String>(),
                    m.len()
                ))
            })?;
        if labels
            .insert(i, name.as_str().unwrap_or_default().to_string())
            .is_some()
        {
            return Err(cfg_err(format!("{origin}id2label names index {i} twice")));
        }
    }
    Ok(labels)
}

/// Options that override what inference would choose.
#[derive(Clone, Debug, Default)]
pub struct ConfigOverrides {
    /// The head count, when the checkpoint does not record it.
    pub num_heads: Option<usize>,
    /// The activation written to `config.json` (`None`: the table's).
    pub hidden_act: Option<Activation>,
    /// `--config FILE.json` contents: any field given here wins.
    pub config: Option<Map<String, Value>>,
}

impl ConfigOverrides {
    /// The family option `config` names (`model_type`), if it names a known one.
    pub(crate) fn model_type(&self) -> Option<ModelType> {
        let name = self.config.as_ref()?.get("model_type")?.as_str()?;
        ModelType::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What config inference decided and why (for the report).
#[derive(Clone, Debug, Default, Serialize)]
pub struct InferenceNotes {
    /// One line per decision that was not read straight from a tensor shape.
    pub notes: Vec<String>,
}

/// `s` when `n == s²`.
pub(crate) fn square_root(n: usize) -> Option<usize> {
    // The float root is within one of the integer root for every usize.
    let guess = (n as f64).sqrt() as usize;
    (guess.saturating_sub(1)..=guess.saturating_add(1)).find(|&s| s.checked_mul(s) == Some(n))
}
