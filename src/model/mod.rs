//! The canonical model: architecture, HF `config.json` fields, and their inference from tensors.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{ErrorKind, Result};
use crate::mapping::dims::Bindings;
use crate::tensor::TensorInfo;

mod activation;
pub(crate) mod preprocessor;

pub use activation::Activation;
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

/// Names of head tensors: they never take the body prefix.
pub(crate) fn is_head(name: &str) -> bool {
    ["classifier.", "cls_classifier.", "distillation_classifier."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The on-disk name of a canonical tensor under an architecture: the body takes the model
/// prefix (`vit.`, `deit.`); DeiT-with-teacher writes its class head `classifier.*` as
/// `cls_classifier.*`.
pub fn disk_name(arch: Architecture, canonical: &str) -> String {
    if is_head(canonical) {
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

/// The HF config of a canonical ViT/DeiT checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ViTConfig {
    /// Model class.
    pub architecture: Architecture,
    /// D.
    pub hidden_size: usize,
    /// L.
    pub num_hidden_layers: usize,
    /// H.
    pub num_attention_heads: usize,
    /// M.
    pub intermediate_size: usize,
    /// P.
    pub patch_size: usize,
    /// Input resolution (square).
    pub image_size: usize,
    /// C.
    pub num_channels: usize,
    /// Whether q/k/v have biases.
    pub qkv_bias: bool,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Activation.
    pub hidden_act: Activation,
    /// Class labels (index → name); empty for headless models.
    pub id2label: BTreeMap<usize, String>,
    /// Pooler output size when a pooler exists.
    pub pooler_output_size: Option<usize>,
    /// dtype name of the weights (`float32`, `float16`, `bfloat16`).
    pub dtype: String,
    /// Fields copied verbatim from a user `--config` file that are not modelled above.
    pub extra: Map<String, Value>,
}

impl ViTConfig {
    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// Whether the model has a pooler.
    pub fn has_pooler(&self) -> bool {
        self.pooler_output_size.is_some()
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The `config.json` document.
    pub fn to_json(&self) -> Value {
        let id2label: Map<String, Value> = self
            .id2label
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let label2id: Map<String, Value> = self
            .id2label
            .iter()
            .map(|(k, v)| (v.clone(), json!(k)))
            .collect();
        let mut m = Map::new();
        m.insert("architectures".into(), json!([self.architecture.name()]));
        m.insert("model_type".into(), json!(self.architecture.model_type()));
        m.insert("hidden_size".into(), json!(self.hidden_size));
        m.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        m.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        m.insert("intermediate_size".into(), json!(self.intermediate_size));
        m.insert("hidden_act".into(), json!(self.hidden_act.name()));
        m.insert("hidden_dropout_prob".into(), json!(0.0));
        m.insert("attention_probs_dropout_prob".into(), json!(0.0));
        m.insert("initializer_range".into(), json!(0.02));
        m.insert("layer_norm_eps".into(), json!(self.layer_norm_eps));
        m.insert("image_size".into(), json!(self.image_size));
        m.insert("patch_size".into(), json!(self.patch_size));
        m.insert("num_channels".into(), json!(self.num_channels));
        m.insert("qkv_bias".into(), json!(self.qkv_bias));
        m.insert("encoder_stride".into(), json!(self.patch_size));
        m.insert("pooler_act".into(), json!("tanh"));
        m.insert(
            "pooler_output_size".into(),
            json!(self.pooler_output_size.unwrap_or(self.hidden_size)),
        );
        if !self.id2label.is_empty() {
            m.insert("id2label".into(), Value::Object(id2label));
            m.insert("label2id".into(), Value::Object(label2id));
        }
        m.insert("dtype".into(), json!(self.dtype));
        m.insert("torch_dtype".into(), json!(self.dtype));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// Reads an HF `config.json` document.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when a required field is missing or has the wrong type.
    pub fn from_json(v: &Value) -> Result<ViTConfig> {
        let obj = v
            .as_object()
            .ok_or_else(|| cfg_err("config.json is not an object"))?;
        let uint = |k: &str| -> Result<usize> {
            match obj.get(k) {
                None | Some(Value::Null) => Err(cfg_err(format!("field `{k}` is missing"))),
                Some(v) => v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "field `{k}` must be a non-negative integer, got {}",
                            short(v)
                        ))
                    }),
            }
        };
        let side = |k: &str| -> Result<usize> {
            match obj.get(k) {
                Some(Value::Array(a)) if a.len() == 2 && a.first() == a.get(1) => a
                    .first()
                    .and_then(Value::as_u64)
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| cfg_err(format!("field `{k}` is not an integer pair"))),
                Some(Value::Array(_)) => Err(cfg_err(format!("non-square `{k}` is not supported"))),
                _ => uint(k),
            }
        };
        let arch_name = match obj.get("architectures") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => match a.first() {
                None => None,
                Some(Value::String(n)) => Some(n.as_str()),
                Some(_) => return Err(architectures_err(obj.get("architectures"), "")),
            },
            v => return Err(architectures_err(v, "")),
        };
        let architecture = match arch_name {
            Some(n) => Architecture::from_name(n)
                .ok_or_else(|| cfg_err(format!("unsupported architecture {n:?}")))?,
            None => match obj.get("model_type").and_then(Value::as_str) {
                Some("deit") => Architecture::DeiTModel,
                _ => Architecture::ViTModel,
            },
        };
        let num_labels = match obj.get("num_labels") {
            None | Some(Value::Null) => None,
            Some(_) => Some(uint("num_labels")?),
        };
        let id2label = match (obj.get("id2label"), num_labels) {
            (None | Some(Value::Null), None) => BTreeMap::new(),
            // transformers makes `LABEL_{i}` names from `num_labels` alone.
            (None | Some(Value::Null), Some(n)) => default_labels(n, "")?,
            (Some(Value::Object(m)), _) => parse_id2label(m, "")?,
            (Some(v), _) => {
                return Err(cfg_err(format!(
                    "field `id2label` must be an object, got {}",
                    short(v)
                )))
            }
        };
        check_num_labels(num_labels, id2label.len(), "")?;
        check_pooler_act(obj.get("pooler_act"), "")?;
        let hidden_size = uint("hidden_size")?;
        let pooler = match obj.get("pooler_output_size") {
            Some(Value::Null) | None => hidden_size,
            Some(_) => uint("pooler_output_size")?,
        };
        let layer_norm_eps = match obj.get("layer_norm_eps") {
            None | Some(Value::Null) => 1e-12,
            Some(v) => eps_value(v, "")?,
        };
        let cfg = ViTConfig {
            architecture,
            hidden_size,
            num_hidden_layers: uint("num_hidden_layers")?,
            num_attention_heads: uint("num_attention_heads")?,
            intermediate_size: uint("intermediate_size")?,
            patch_size: side("patch_size")?,
            image_size: side("image_size")?,
            num_channels: match obj.get("num_channels") {
                None | Some(Value::Null) => 3,
                Some(_) => uint("num_channels")?,
            },
            qkv_bias: match obj.get("qkv_bias") {
                None | Some(Value::Null) => true,
                Some(v) => v.as_bool().ok_or_else(|| {
                    cfg_err(format!(
                        "field `qkv_bias` must be true or false, got {}",
                        short(v)
                    ))
                })?,
            },
            layer_norm_eps,
            hidden_act: match obj.get("hidden_act") {
                None | Some(Value::Null) => Activation::Gelu,
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "field `hidden_act` must be a string, got {}",
                            short(v)
                        ))
                    })?
                    .parse()?,
            },
            id2label,
            pooler_output_size: Some(pooler),
            dtype: obj
                .get("dtype")
                .or_else(|| obj.get("torch_dtype"))
                .and_then(Value::as_str)
                .unwrap_or("float32")
                .to_string(),
            extra: Map::new(),
        };
        cfg.tokens()?;
        Ok(cfg)
    }

    /// Checks the config is consistent in itself — every size at least 1, `hidden_size`
    /// divisible by `num_attention_heads`, `image_size` a multiple of `patch_size`, a finite
    /// non-negative `layer_norm_eps` — and returns the tokens per image it implies (patches plus
    /// class/distillation tokens), computed with checked arithmetic.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the field and its value.
    pub fn tokens(&self) -> Result<usize> {
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
            ("num_channels", self.num_channels),
        ] {
            if v == 0 {
                return Err(cfg_err(format!("`{field}` is 0")));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(cfg_err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.image_size % self.patch_size != 0 || self.image_size < self.patch_size {
            return Err(cfg_err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if !self.layer_norm_eps.is_finite() || self.layer_norm_eps < 0.0 {
            return Err(cfg_err(format!(
                "layer_norm_eps {} is not a finite non-negative number",
                self.layer_norm_eps
            )));
        }
        let grid = self.image_size / self.patch_size;
        grid.checked_mul(grid)
            .and_then(|n| n.checked_add(self.architecture.prefix_tokens()))
            .ok_or_else(|| {
                cfg_err(format!(
                    "image_size {} with patch_size {} gives more tokens than fit in memory",
                    self.image_size, self.patch_size
                ))
            })
    }

    /// The symbol values tables use (`D`, `M`, `H`, `hd`, `P`, `C`, `N`, `T`, `K`, `R`, `F`), for
    /// running tables backwards.
    pub(crate) fn symbol_bindings(&self) -> Bindings {
        let mut b = Bindings::new();
        let grid = self.image_size / self.patch_size.max(1);
        let patches = grid.saturating_mul(grid);
        b.insert("D".into(), self.hidden_size);
        b.insert("M".into(), self.intermediate_size);
        b.insert("H".into(), self.num_attention_heads);
        b.insert("hd".into(), self.head_dim());
        b.insert("P".into(), self.patch_size);
        b.insert("C".into(), self.num_channels);
        b.insert("N".into(), patches);
        b.insert(
            "T".into(),
            patches.saturating_add(self.architecture.prefix_tokens()),
        );
        b.insert("K".into(), self.num_labels());
        let r = self.pooler_output_size.unwrap_or(self.hidden_size);
        b.insert("R".into(), r);
        b.insert(
            "F".into(),
            if self.has_pooler() {
                r
            } else {
                self.hidden_size
            },
        );
        b
    }
}

fn cfg_err(reason: impl Into<String>) -> crate::Error {
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

/// What config inference decided and why (for the report).
#[derive(Clone, Debug, Default, Serialize)]
pub struct InferenceNotes {
    /// One line per decision that was not read straight from a tensor shape.
    pub notes: Vec<String>,
}

/// The architecture a set of canonical tensor names implies, plus tensors to drop (with why).
pub(crate) fn architecture_of(names: &BTreeSet<String>) -> (Architecture, Vec<(String, String)>) {
    let has = |n: &str| names.contains(n);
    let mut drop = Vec::new();
    let arch = if has("embeddings.distillation_token") {
        if has("distillation_classifier.weight") {
            Architecture::DeiTForImageClassificationWithTeacher
        } else {
            Architecture::DeiTModel
        }
    } else if has("classifier.weight") && has("pooler.dense.weight") {
        // A representation (pre-logits) layer feeds the original head; HF's classifier reads the
        // raw class token, so the faithful export is ViTModel + pooler without the head.
        for n in ["classifier.weight", "classifier.bias"] {
            if has(n) {
                drop.push((
                    n.to_string(),
                    "the head follows a pre-logits layer, which ViTForImageClassification cannot represent; exported as ViTModel with pooler".to_string(),
                ));
            }
        }
        Architecture::ViTModel
    } else if has("classifier.weight") {
        Architecture::ViTForImageClassification
    } else {
        Architecture::ViTModel
    };
    (arch, drop)
}

/// Infers the config from canonical tensors, the table's model facts and the user's overrides.
pub(crate) fn infer_config(
    arch: Architecture,
    tensors: &[TensorInfo],
    eps: f64,
    hidden_act: Activation,
    heads_from_table: Option<usize>,
    overrides: &ConfigOverrides,
) -> Result<(ViTConfig, InferenceNotes)> {
    let get = |n: &str| tensors.iter().find(|t| t.name == n);
    let mut notes = InferenceNotes::default();
    let patch = get("embeddings.patch_embeddings.projection.weight")
        .ok_or_else(|| cfg_err("embeddings.patch_embeddings.projection.weight is missing"))?;
    let (d, c, ph) = patch_geometry(patch)?;
    let layers = (0..)
        .take_while(|i| get(&format!("encoder.layer.{i}.layernorm_before.weight")).is_some())
        .count();
    let inter = get("encoder.layer.0.intermediate.dense.weight")
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| cfg_err("encoder.layer.0.intermediate.dense.weight is missing"))?;
    let pos = get("embeddings.position_embeddings")
        .ok_or_else(|| cfg_err("embeddings.position_embeddings is missing"))?;
    let rows = pos.shape.get(1).copied().unwrap_or(0);
    let patches = rows
        .checked_sub(arch.prefix_tokens())
        .ok_or_else(|| cfg_err(format!("position embeddings have only {rows} rows")))?;
    let image_size = square_root(patches).and_then(|grid| grid.checked_mul(ph));
    let qkv_bias = get("encoder.layer.0.attention.attention.query.bias").is_some();
    let heads = head_count(d, heads_from_table, overrides, &mut notes)?;
    let k = num_labels(arch, tensors)?;
    let id2label = (0..k).map(|i| (i, format!("LABEL_{i}"))).collect();
    let pooler = get("pooler.dense.weight").and_then(|t| t.shape.first().copied());
    let dtype = config_dtype(tensors);
    let hidden_act = overrides.hidden_act.unwrap_or(hidden_act);
    let mut cfg = ViTConfig {
        architecture: arch,
        hidden_size: d,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: inter,
        patch_size: ph,
        image_size: image_size.unwrap_or(0),
        num_channels: c,
        qkv_bias,
        layer_norm_eps: eps,
        hidden_act,
        id2label,
        pooler_output_size: pooler,
        dtype: dtype.to_string(),
        extra: Map::new(),
    };
    if let Some(user) = &overrides.config {
        apply_user_config(&mut cfg, user, &mut notes)?;
    }
    if cfg.image_size == 0 {
        return Err(cfg_err(format!(
            "{patches} patch positions do not form a square grid; give image_size with option `config`"
        )));
    }
    check_positions(&cfg, rows)?;
    Ok((cfg, notes))
}

/// The hidden size, channel count and patch size from the patch embedding kernel `[D, C, P, P]`.
fn patch_geometry(patch: &TensorInfo) -> Result<(usize, usize, usize)> {
    let [d, c, ph, pw] = patch.shape[..] else {
        return Err(cfg_err(format!(
            "patch embedding has shape {:?}, expected [D, C, P, P]",
            patch.shape
        )));
    };
    if ph != pw {
        return Err(cfg_err(format!(
            "non-square patches {ph}x{pw} are not supported"
        )));
    }
    if d == 0 || c == 0 || ph == 0 {
        return Err(cfg_err(format!(
            "zero-sized patch embedding kernel {:?}",
            patch.shape
        )));
    }
    Ok((d, c, ph))
}

/// The head count: from the attention kernels (when the table can tell), else option
/// `num_heads` or the config's `num_attention_heads`, else hidden size / 64; how it was found
/// goes into `notes`. It must divide the hidden size `d`.
fn head_count(
    d: usize,
    heads_from_table: Option<usize>,
    overrides: &ConfigOverrides,
    notes: &mut InferenceNotes,
) -> Result<usize> {
    let config_heads = match overrides
        .config
        .as_ref()
        .and_then(|c| c.get("num_attention_heads"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|h| usize::try_from(h).ok())
                .ok_or_else(|| {
                    cfg_err(format!(
                        "option `config`: `num_attention_heads` must be a non-negative integer, got {}",
                        short(v)
                    ))
                })?,
        ),
    };
    let heads = match (heads_from_table, overrides.num_heads.or(config_heads)) {
        (Some(h), Some(o)) if h != o => {
            return Err(cfg_err(format!(
                "option `num_heads` {o} contradicts the {h} heads in the attention kernels"
            )))
        }
        (Some(h), _) => {
            notes.notes.push(format!(
                "num_attention_heads = {h} (from the attention kernel shapes)"
            ));
            h
        }
        (None, Some(o)) => {
            notes.notes.push(format!(
                "num_attention_heads = {o} (from {})",
                if overrides.num_heads.is_some() {
                    "option `num_heads`"
                } else {
                    "the config: option `config` or config.json beside the input"
                }
            ));
            o
        }
        (None, None) => {
            if d % 64 != 0 || d == 0 {
                return Err(cfg_err(format!(
                    "cannot infer the head count (num_attention_heads): hidden size {d} is not a multiple of 64; set option `num_heads`"
                )));
            }
            notes.notes.push(format!(
                "num_attention_heads = {} (assumed hidden_size/64; the checkpoint does not record it — set option `num_heads` if wrong)",
                d / 64
            ));
            d / 64
        }
    };
    if heads == 0 || d % heads != 0 {
        return Err(cfg_err(format!(
            "hidden_size {d} is not divisible by num_attention_heads {heads}"
        )));
    }
    Ok(heads)
}

/// The class count of the architecture's head (0 without one), checked.
fn num_labels(arch: Architecture, tensors: &[TensorInfo]) -> Result<usize> {
    let get = |n: &str| tensors.iter().find(|t| t.name == n);
    let head_name = match arch {
        Architecture::DeiTForImageClassificationWithTeacher => Some("classifier.weight"),
        Architecture::ViTForImageClassification => Some("classifier.weight"),
        _ => None,
    };
    let k = head_name
        .and_then(get)
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0);
    if head_name.is_some() {
        check_classes(k)?;
    }
    Ok(k)
}

/// The config's `dtype`: the first layer norm's.
fn config_dtype(tensors: &[TensorInfo]) -> &'static str {
    let ln = tensors
        .iter()
        .find(|t| t.name == "encoder.layer.0.layernorm_before.weight");
    match ln.map(|t| t.dtype) {
        Some(crate::DType::F16) => "float16",
        Some(crate::DType::BF16) => "bfloat16",
        Some(crate::DType::F64) => "float64",
        _ => "float32",
    }
}

/// `s` when `n == s²`.
pub(crate) fn square_root(n: usize) -> Option<usize> {
    // The float root is within one of the integer root for every usize.
    let guess = (n as f64).sqrt() as usize;
    (guess.saturating_sub(1)..=guess.saturating_add(1)).find(|&s| s.checked_mul(s) == Some(n))
}

/// Checks `config` in itself ([`ViTConfig::tokens`]) and that its `image_size` / `patch_size`
/// give the `rows` position embeddings the tensors hold.
///
/// # Errors
/// [`ErrorKind::Config`] naming `image_size`, `patch_size` and both position counts.
pub(crate) fn check_positions(config: &ViTConfig, rows: usize) -> Result<()> {
    let tokens = config.tokens()?;
    if tokens != rows {
        let held = rows
            .checked_sub(config.architecture.prefix_tokens())
            .and_then(square_root)
            .filter(|&g| g > 0)
            .and_then(|g| g.checked_mul(config.patch_size))
            .map_or(String::new(), |s| format!(", i.e. image_size {s}"));
        return Err(cfg_err(format!(
            "image_size {} with patch_size {} gives {tokens} positions, the weights hold {rows}{held}",
            config.image_size, config.patch_size
        )));
    }
    Ok(())
}

fn apply_user_config(
    cfg: &mut ViTConfig,
    user: &Map<String, Value>,
    notes: &mut InferenceNotes,
) -> Result<()> {
    // A null field is as good as absent.
    let user: Map<String, Value> = user
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let user = &user;
    let check_usize =
        |key: &'static str, slot: &mut usize, inferred_from_tensors: bool| -> Result<()> {
            if let Some(v) = user.get(key) {
                // `patch_size` and `image_size` may be written as a square pair `[n, n]`.
                let x = match v.as_array().map(Vec::as_slice) {
                    Some([a, b]) if a == b => a.as_u64(),
                    _ => v.as_u64(),
                }
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| {
                    cfg_err(format!(
                        "option `config`: `{key}` must be a non-negative integer, got {}",
                        short(v)
                    ))
                })?;
                if inferred_from_tensors && x != *slot {
                    return Err(mismatch(key, x, *slot));
                }
                *slot = x;
            }
            Ok(())
        };
    check_usize("hidden_size", &mut cfg.hidden_size, true)?;
    check_usize("num_hidden_layers", &mut cfg.num_hidden_layers, true)?;
    check_usize("intermediate_size", &mut cfg.intermediate_size, true)?;
    check_usize("patch_size", &mut cfg.patch_size, true)?;
    check_usize("num_channels", &mut cfg.num_channels, true)?;
    check_usize("num_attention_heads", &mut cfg.num_attention_heads, false)?;
    check_usize("image_size", &mut cfg.image_size, false)?;
    if let Some(v) = user.get("layer_norm_eps") {
        cfg.layer_norm_eps = eps_value(v, "option `config`: ")?;
    }
    if let Some(v) = user.get("qkv_bias") {
        let b = v.as_bool().ok_or_else(|| {
            cfg_err(format!(
                "option `config`: `qkv_bias` must be true or false, got {}",
                short(v)
            ))
        })?;
        if b != cfg.qkv_bias {
            return Err(mismatch(
                "qkv_bias",
                usize::from(b),
                usize::from(cfg.qkv_bias),
            ));
        }
    }
    if let Some(v) = user.get("hidden_act") {
        cfg.hidden_act = v
            .as_str()
            .ok_or_else(|| cfg_err("option `config`: `hidden_act` must be a string"))?
            .parse()?;
    }
    check_pooler_act(user.get("pooler_act"), "option `config`: ")?;
    if let Some(v) = user.get("id2label") {
        let m = v
            .as_object()
            .ok_or_else(|| cfg_err("option `config`: `id2label` must be an object"))?;
        let labels = parse_id2label(m, "option `config`: ")?;
        if labels.len() != cfg.id2label.len() {
            return Err(mismatch("id2label", labels.len(), cfg.id2label.len()));
        }
        cfg.id2label = labels;
    }
    let mut num_labels = cfg.id2label.len();
    check_usize("num_labels", &mut num_labels, true)?;
    // Checked against the pooler's rows when the tensors hold a pooler.
    let mut pooler = cfg.pooler_output_size.unwrap_or(0);
    check_usize(
        "pooler_output_size",
        &mut pooler,
        cfg.pooler_output_size.is_some(),
    )?;
    match user.get("architectures") {
        None => {}
        Some(Value::Array(a)) => match a.first() {
            None => {}
            Some(Value::String(n)) if n == cfg.architecture.name() => {}
            Some(Value::String(n)) => {
                return Err(cfg_err(format!(
                    "option `config`: `architectures` names {:?}, the tensors make a {}",
                    n.chars().take(40).collect::<String>(),
                    cfg.architecture.name()
                )))
            }
            Some(_) => {
                return Err(architectures_err(
                    user.get("architectures"),
                    "option `config`: ",
                ))
            }
        },
        v => return Err(architectures_err(v, "option `config`: ")),
    }
    if let Some(v) = user.get("model_type") {
        if v.as_str() != Some(cfg.architecture.model_type()) {
            return Err(cfg_err(format!(
                "option `config`: `model_type` is {}, the tensors make a {:?} model",
                short(v),
                cfg.architecture.model_type()
            )));
        }
    }
    if cfg.hidden_size % cfg.num_attention_heads.max(1) != 0 || cfg.num_attention_heads == 0 {
        return Err(cfg_err(
            "option `config`: hidden_size is not divisible by num_attention_heads",
        ));
    }
    const MODELLED: &[&str] = &[
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "patch_size",
        "num_channels",
        "num_attention_heads",
        "image_size",
        "layer_norm_eps",
        "hidden_act",
        "id2label",
        "label2id",
        "architectures",
        "model_type",
        "qkv_bias",
        "pooler_output_size",
        "pooler_act",
        "num_labels",
        "dtype",
        "torch_dtype",
    ];
    for (k, v) in user {
        if !MODELLED.contains(&k.as_str()) {
            cfg.extra.insert(k.clone(), v.clone());
        }
    }
    notes.notes.push(format!(
        "config fields applied: {}",
        user.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    Ok(())
}

/// The exact set of canonical tensor names a config implies (unprefixed; heads as is).
pub(crate) fn expected_names(cfg: &ViTConfig) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for n in [
        "embeddings.cls_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
        "layernorm.weight",
        "layernorm.bias",
    ] {
        s.insert(n.to_string());
    }
    if cfg.architecture.prefix_tokens() == 2 {
        s.insert("embeddings.distillation_token".into());
    }
    for i in 0..cfg.num_hidden_layers {
        let mut parts = vec![
            "layernorm_before.weight",
            "layernorm_before.bias",
            "attention.attention.query.weight",
            "attention.attention.key.weight",
            "attention.attention.value.weight",
            "attention.output.dense.weight",
            "attention.output.dense.bias",
            "layernorm_after.weight",
            "layernorm_after.bias",
            "intermediate.dense.weight",
            "intermediate.dense.bias",
            "output.dense.weight",
            "output.dense.bias",
        ];
        if cfg.qkv_bias {
            parts.extend([
                "attention.attention.query.bias",
                "attention.attention.key.bias",
                "attention.attention.value.bias",
            ]);
        }
        for p in parts {
            s.insert(format!("encoder.layer.{i}.{p}"));
        }
    }
    if cfg.has_pooler() {
        s.insert("pooler.dense.weight".into());
        s.insert("pooler.dense.bias".into());
    }
    match cfg.architecture {
        Architecture::ViTForImageClassification => {
            s.insert("classifier.weight".into());
            s.insert("classifier.bias".into());
        }
        Architecture::DeiTForImageClassificationWithTeacher => {
            for n in [
                "classifier.weight",
                "classifier.bias",
                "distillation_classifier.weight",
                "distillation_classifier.bias",
            ] {
                s.insert(n.to_string());
            }
        }
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ViTConfig {
        ViTConfig::from_json(&json!({
            "architectures": ["ViTModel"], "hidden_size": 8, "num_hidden_layers": 0,
            "num_attention_heads": 1, "intermediate_size": 4, "patch_size": 8, "image_size": 32
        }))
        .unwrap()
    }

    #[test]
    fn positions_that_hold_no_patch_name_no_image_size() {
        for rows in [0, 1] {
            let e = check_positions(&config(), rows).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("gives 17 positions, the weights hold {rows}"))
                    && !msg.contains("i.e."),
                "{msg}"
            );
        }
        let msg = check_positions(&config(), 65).unwrap_err().to_string();
        assert!(
            msg.ends_with("the weights hold 65, i.e. image_size 64"),
            "{msg}"
        );
    }

    #[test]
    fn num_labels_must_count_id2label_and_alone_names_the_labels() {
        let mut v = config().to_json();
        v["num_labels"] = json!(2);
        let c = ViTConfig::from_json(&v).unwrap();
        assert_eq!(c.id2label.get(&1).map(String::as_str), Some("LABEL_1"));
        v["id2label"] = json!({"0": "a"});
        let e = ViTConfig::from_json(&v).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Config { reason } if reason == "`num_labels` is 2, but `id2label` has 1 labels"),
            "{e:?}"
        );
    }
}
