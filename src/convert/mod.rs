//! Conversion: source checkpoint → mapping table → canonical tensors + config → files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::forward::Model;
use crate::hash::{HashReport, Reading};
use crate::mapping::{self, Branch, Family, MappingReport, MappingTable, PlannedSource};
use crate::model::{self, preprocessor, Architecture, ConfigOverrides, ModelType, ViTConfig};
use crate::progress::{NoProgress, Progress, Reporting, Stage};
use crate::source::{self, Limits, OpenOptions, TensorSource};
use crate::tensor::{DType, TensorInfo};
use crate::write::{self, DeferredMeta, WriteItem};

mod dinov2;

pub use crate::vocab::OutputFormat;

/// Options for [`convert`].
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Source family; `None` detects it from tensor names (or uses `table`).
    pub from: Option<Family>,
    /// A custom table instead of a family's; setting both `from` and `table` is an
    /// [`ErrorKind::InvalidOption`].
    pub table: Option<MappingTable>,
    /// Output layout.
    pub to: OutputFormat,
    /// Convert floating-point tensors to this dtype (`None` keeps them). A cast that turns
    /// finite values into ±Inf (e.g. |x| > 65504 to f16) is refused unless `allow_overflow`.
    pub dtype: Option<DType>,
    /// Accept casts that saturate finite values to ±Inf, as torch's `.half()` does; the report's
    /// notes then say how many values saturated (`--allow-overflow`).
    pub allow_overflow: bool,
    /// Convert the backbone alone: the head's tensors (classifier, distillation head,
    /// masked-image-modelling head) are dropped and listed in the report's `dropped`, and the
    /// model class is the family's headless one (`--drop head`).
    pub drop_head: bool,
    /// Training checkpoints with branches (DINO): which to convert (`None`: the first present,
    /// the teacher).
    pub branch: Option<Branch>,
    /// Config overrides (head count, activation, `config.json` fields).
    pub overrides: ConfigOverrides,
    /// The class names written into `config.json`'s `id2label` (`--labels`; default
    /// [`Labels::Auto`](crate::labels::Labels::Auto)).
    pub labels: crate::labels::Labels,
    /// How the input is read: its [`Limits`](crate::Limits) (which also bound the side
    /// `config.json` and the mapping table's output) and whether it is memory-mapped.
    pub open: OpenOptions,
    /// Sync every output file to disk before renaming it into place (see
    /// [`write`](crate::write)'s durability notes; the CLI: `VIT_CONVERT_FSYNC=1`).
    pub fsync: bool,
}

/// What a conversion did.
#[derive(Clone, Debug, Serialize)]
pub struct ConversionReport {
    /// Input file (`None` when a [`Canonical`] made from memory was written).
    #[serde(serialize_with = "crate::text::serialize_opt_path_lossy")]
    pub input: Option<PathBuf>,
    /// sha256 of the input file (`None` without one; then the weights' metadata has no
    /// `source_sha256` either).
    pub input_sha256: Option<String>,
    /// Container format of the input.
    pub input_format: &'static str,
    /// The mapping applied.
    pub mapping: MappingReport,
    /// The model class written.
    pub architecture: Architecture,
    /// The inferred config.
    pub config: serde_json::Value,
    /// Decisions not read straight from tensor shapes.
    pub notes: Vec<String>,
    /// Canonical tensors dropped, with the reason.
    pub dropped: Vec<(String, String)>,
    /// Files written.
    #[serde(serialize_with = "crate::text::serialize_paths_lossy")]
    pub outputs: Vec<PathBuf>,
    /// Number of tensors written.
    pub tensors: usize,
    /// Bytes of the weights file.
    pub bytes: u64,
}

/// Bytes read per call while hashing the input: 256 KiB keeps the buffer in L2 and off the peak
/// memory (1 MiB cost 0.8–1 MiB of peak RSS and no speed: ViT-B and ViT-L convert as fast or
/// faster with 256 KiB, BENCHMARKS.md).
const HASH_CHUNK: usize = 1 << 18;

/// Length of a sha256 in hex.
const SHA256_HEX_LEN: usize = 64;

/// The sha256 of a file, read in chunks into one reused buffer (memory stays flat, and the
/// page cache serves the bytes without faulting a mapping in). Stops with an error between two
/// chunks once `cancel` is set.
fn sha256_file(path: &Path, cancel: &AtomicBool) -> Result<String> {
    let io = |op, e| Error::from(ErrorKind::io(op, e)).with_path(path);
    let mut file = crate::fsio::open_regular(path)?;
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut h = Sha256::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(io("hash", std::io::Error::other("cancelled")));
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("read", e)),
        };
        h.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(mapping::schema::hex(&h.finalize()))
}

/// Chooses the table for a source: a custom table, a family's, or detection (neither given).
///
/// # Errors
/// [`ErrorKind::InvalidOption`] when both a family and a custom table are given;
/// [`ErrorKind::Mapping`] (`Rejected`) when no family claims the layout but a table names a
/// feature it holds; [`ErrorKind::NoFamily`] or [`ErrorKind::AmbiguousFamily`] when detection finds no family or
/// more than one.
pub(crate) fn choose_table(
    src: &dyn TensorSource,
    from: Option<Family>,
    custom: Option<&MappingTable>,
) -> Result<MappingTable> {
    match (from, custom) {
        (Some(f), Some(t)) => {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "both `from` ({f}) and `table` ({}) are set; set one",
                    t.file
                ),
            }
            .into())
        }
        (None, Some(t)) => return Ok(t.clone()),
        (Some(f), None) => return f.table(),
        (None, None) => {}
    }
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut hits = Vec::new();
    for t in MappingTable::builtins()? {
        if let Ok(view) = mapping::select_view(&t, &names, None) {
            if mapping::detect(&t, &view) {
                hits.push(t);
            }
        }
    }
    if hits.is_empty() {
        // No table claims the layout, but a table may still name a feature it holds (timm's
        // relative-position-MLP or parallel-block ViTs): say that rather than "no family".
        for t in MappingTable::builtins()? {
            if let Err(e) = mapping::plan_forward_within(&t, src.tensors(), None, &Limits::DEFAULT)
            {
                if matches!(
                    e.kind(),
                    ErrorKind::Mapping {
                        problem: mapping::MappingError::Rejected { .. },
                        ..
                    }
                ) {
                    return Err(e);
                }
            }
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(ErrorKind::NoFamily {
            candidates: mapping::builtin_ids()
                .into_iter()
                .map(String::from)
                .collect(),
            seen: names.iter().take(6).map(|n| n.to_string()).collect(),
            tensors: names.len(),
        }
        .into()),
        _ => Err(ErrorKind::AmbiguousFamily {
            matches: hits.iter().map(|t| t.id.clone()).collect(),
        }
        .into()),
    }
}

/// A checkpoint in the canonical layout (the Hugging Face transformers names, PyTorch
/// orientation) with its inferred config: what [`convert`] writes, made from any
/// [`TensorSource`] — a file, bytes in memory ([`open_bytes`](crate::open_bytes)) or your own
/// reader — without touching a file.
///
/// Planning reads names and shapes only; each canonical tensor is computed from the source when
/// it is read. From here you can inspect it ([`tensors`](Canonical::tensors),
/// [`config`](Canonical::config), [`notes`](Canonical::notes),
/// [`mapping`](Canonical::mapping)), read its tensors ([`source`](Canonical::source)), hash it
/// ([`hash`](Canonical::hash)), run it ([`model`](Canonical::model)) or write it
/// ([`write`](Canonical::write)).
///
/// ```
/// use vit_convert::{open_bytes, Canonical, ConfigOverrides, ConvertOptions, FileBytes};
/// let bytes = std::fs::read("fixtures/convert/timm_vit/source.pth")?;
/// let src = open_bytes(FileBytes::from_vec(bytes))?;
/// let opts = ConvertOptions {
///     // tiny test model: 24 wide, 2 heads (real checkpoints default to hidden/64)
///     overrides: ConfigOverrides { num_heads: Some(2), ..Default::default() },
///     ..Default::default()
/// };
/// let canon = Canonical::new(src.as_ref(), &opts)?; // the family is detected: timm
/// assert_eq!(canon.mapping().table, "timm");
/// assert_eq!(canon.config().hidden_size, 24);
/// assert!(canon.tensors().iter().any(|t| t.name == "embeddings.cls_token"));
/// let cls = canon.source().read("embeddings.cls_token")?;
/// assert_eq!(cls.shape, [1, 1, 24]);
/// let model = canon.model()?;
/// assert_eq!(model.config().num_labels(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Canonical<'s> {
    planned: PlannedSource<'s>,
    table: MappingTable,
    config: ViTConfig,
    notes: Vec<String>,
    dropped: Vec<(String, String)>,
}

impl<'s> Canonical<'s> {
    /// Maps `src` to the canonical layout with `opts.from` / `opts.table` (detected from the
    /// tensor names when neither is set), `opts.branch` and `opts.overrides`, and infers the
    /// config, its class names chosen by `opts.labels`. `opts.to`, `opts.dtype` and `opts.allow_overflow` matter only to
    /// [`write`](Canonical::write).
    ///
    /// Unlike [`convert`], nothing is read beside the source: the `config.json` that `convert`
    /// takes from beside an `hf` or `flax` input is given here as `opts.overrides.config`.
    ///
    /// # Errors
    /// [`ErrorKind::NoFamily`] ([`ErrorKind::AmbiguousFamily`]) when no family (or more than one)
    /// matches; mapping errors naming the table's file and line; config errors; class names
    /// (`opts.labels`) that do not fit the head.
    pub fn new(src: &'s dyn TensorSource, opts: &ConvertOptions) -> Result<Canonical<'s>> {
        canonicalize(src, None, opts)
    }

    /// The canonical tensors (names without the `vit.` / `deit.` prefix), as planned.
    pub fn tensors(&self) -> &[TensorInfo] {
        self.planned.tensors()
    }

    /// The canonical tensors as a source: [`read`](TensorSource::read) computes one from the
    /// underlying source (renames, q/k/v splits, transposes …).
    pub fn source(&self) -> &dyn TensorSource {
        &self.planned
    }

    /// The inferred config (what `config.json` holds).
    pub fn config(&self) -> &ViTConfig {
        &self.config
    }

    /// Decisions not read straight from tensor shapes.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Canonical tensors the model class cannot hold, left out, with why.
    pub fn dropped(&self) -> &[(String, String)] {
        &self.dropped
    }

    /// What the mapping did: the table, the wrapper or branch selected, the tensors ignored.
    pub fn mapping(&self) -> &MappingReport {
        &self.planned.plan().report
    }

    /// The mapping table applied.
    pub fn table(&self) -> &MappingTable {
        &self.table
    }

    /// The reference model of these tensors and config (weights copied as f32; their stored
    /// dtype is kept as [`Model::weight_dtype`]).
    ///
    /// # Errors
    /// Reader errors while the tensors are computed; a tensor whose shape disagrees with the
    /// config.
    pub fn model(&self) -> Result<Model> {
        Model::from_source(&self.planned, self.config.clone())
    }

    /// The per-tensor manifest and digest of the canonical tensors: the same as
    /// [`hash()`](crate::hash::hash()) of the file read with its family's table
    /// (`vit-convert hash --from FAMILY`). [`Reading::file`](crate::hash::Reading::file) is `None`.
    ///
    /// # Errors
    /// Reader errors, naming the tensor.
    pub fn hash(&self) -> Result<HashReport> {
        let reading = Reading {
            file: None,
            format: self.planned.format(),
            table: Some(self.table.id().to_string()),
            selected: self.mapping().selected.clone(),
            dropped: self.dropped.clone(),
        };
        crate::hash::hash_tensors(&self.planned, reading)
    }

    /// Writes the model into `outdir` as [`convert`] does, in the layout `opts.to`, cast to
    /// `opts.dtype` (`opts.allow_overflow` as in [`ConvertOptions`]); the other fields of
    /// `opts` are not used. The weights' metadata holds no `source_sha256` (there is no
    /// source file), and the report's `input` is `None`.
    ///
    /// # Errors
    /// Reader, cast and I/O errors. On error no partial file is left in `outdir` and existing
    /// files there are untouched.
    pub fn write(
        &self,
        outdir: impl AsRef<Path>,
        opts: &ConvertOptions,
    ) -> Result<ConversionReport> {
        let outdir = outdir.as_ref();
        let [weights, cfg_path, pre_path] = opts.to.output_files(outdir);
        write::check_outputs(&[&weights, &cfg_path, &pre_path], &[])?;
        write_canonical(self, outdir, opts, None, &NoProgress)
    }
}

/// The canonical tensors conversion writes, before any config is inferred.
pub(crate) struct CanonicalPlan {
    pub(crate) table: MappingTable,
    pub(crate) plan: mapping::Plan,
    pub(crate) arch: Architecture,
    /// Tensors the model class cannot hold, dropped, with why.
    pub(crate) dropped: Vec<(String, String)>,
    /// Layout changes made after the table (timm's DINOv2 quirks), for the notes.
    pub(crate) quirks: Vec<String>,
}

/// Chooses the table and plans the canonical tensors that conversion writes (tensors the model
/// class cannot hold are dropped, with why), without inferring a config.
pub(crate) fn plan_canonical(
    src: &dyn TensorSource,
    from: Option<Family>,
    custom: Option<&MappingTable>,
    branch: Option<Branch>,
    family: Option<ModelType>,
    drop_head: bool,
    limits: &Limits,
) -> Result<CanonicalPlan> {
    let table = choose_table(src, from, custom)?;
    let mut plan = mapping::plan_forward_within(&table, src.tensors(), branch, limits)?;
    let mut names: BTreeSet<String> = plan.targets.iter().map(|t| t.info.name.clone()).collect();
    let family = family
        .or(table.facts.model_type)
        .unwrap_or_else(|| model::family_of(&names));
    let mut quirks = Vec::new();
    if family.is_dinov2() {
        quirks = dinov2::undo_timm_layout(&mut plan, family);
        names = plan.targets.iter().map(|t| t.info.name.clone()).collect();
    }
    let (mut arch, mut dropped) = model::architecture_of(family, &names);
    if drop_head && arch.has_head() {
        // The backbone alone: the head's tensors are dropped and reported, and the class is the
        // family's headless one.
        for n in names.iter().filter(|n| model::names::is_head(arch, n)) {
            dropped.push((n.clone(), "dropped by option `drop_head`".to_string()));
        }
        names.retain(|n| !model::names::is_head(arch, n));
        let (headless, more) = model::architecture_of(family, &names);
        arch = headless;
        dropped.extend(more);
    }
    let drop_names: BTreeSet<&str> = dropped.iter().map(|(n, _)| n.as_str()).collect();
    plan.targets
        .retain(|t| !drop_names.contains(t.info.name.as_str()));
    Ok(CanonicalPlan {
        table,
        plan,
        arch,
        dropped,
        quirks,
    })
}

/// Plans a source into canonical tensors and infers the config (with the side `config.json`
/// beside `input`, for the tables that read one).
fn canonicalize<'s>(
    src: &'s dyn TensorSource,
    input: Option<&Path>,
    opts: &ConvertOptions,
) -> Result<Canonical<'s>> {
    let CanonicalPlan {
        table,
        plan,
        arch,
        dropped,
        mut quirks,
    } = plan_canonical(
        src,
        opts.from,
        opts.table.as_ref(),
        opts.branch,
        opts.overrides.model_type(),
        opts.drop_head,
        &opts.open.limits,
    )?;
    let heads = table
        .facts
        .num_heads
        .as_ref()
        .and_then(|sym| plan.bindings.get(sym).copied());
    let mut overrides = opts.overrides.clone();
    if let Some(side) = input.and_then(|input| sidecar_config(input, &table.id)) {
        merge_sidecar_config(&side, &mut overrides, arch, &opts.open.limits)?;
    }
    let infos: Vec<TensorInfo> = plan.targets.iter().map(|t| t.info.clone()).collect();
    // A source layout may imply another activation than the table's default: its marker name is
    // looked for as the table sees the names (wrapper chosen, prefixes stripped).
    let layout_act = if table.facts.layout_hidden_act.is_empty() {
        None
    } else {
        let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
        let view = mapping::select_view(&table, &names, opts.branch)?;
        table
            .facts
            .layout_hidden_act
            .iter()
            .find(|l| view.names.iter().any(|(stripped, _)| *stripped == l.when))
    };
    if let Some(l) = layout_act.filter(|_| opts.overrides.hidden_act.is_none()) {
        quirks.push(format!(
            "hidden_act = {} (the {} layout; set option `hidden_act` otherwise)",
            l.hidden_act.name(),
            l.when
        ));
    }
    let facts = model::TableFacts {
        eps: table.facts.layer_norm_eps,
        hidden_act: layout_act.map_or(table.facts.hidden_act, |l| l.hidden_act),
        heads,
    };
    let (mut config, mut inf) = model::infer_config(arch, &infos, &facts, &overrides)?;
    let expected = model::expected_names(&config);
    let got: BTreeSet<String> = infos.iter().map(|t| t.name.clone()).collect();
    if let Some(missing) = expected.difference(&got).next() {
        return Err(Error::from(ErrorKind::Mapping {
            table: table.id.clone(),
            file: table.file.clone(),
            line: 0,
            problem: mapping::MappingError::ArchitectureLacks {
                architecture: arch,
                tensor: missing.to_string(),
            },
        }));
    }
    if let Some(extra) = got.difference(&expected).next() {
        return Err(Error::from(ErrorKind::Mapping {
            table: table.id.clone(),
            file: table.file.clone(),
            line: 0,
            problem: mapping::MappingError::ArchitectureExtra {
                architecture: arch,
                tensor: extra.to_string(),
            },
        }));
    }
    crate::labels::apply(
        &opts.labels,
        &table,
        &opts.overrides,
        &overrides,
        &mut config,
        &mut inf.notes,
    )?;
    let mut notes = inf.notes;
    notes.extend(quirks);
    for (name, kind, line) in &plan.buffers {
        model::check_buffer(src, &table, (name, *kind, *line), &config)?;
    }
    if let Some((first, _, _)) = plan.buffers.first() {
        notes.push(format!(
            "{} stored buffer(s) the geometry implies ({first}, …) match it and were dropped",
            plan.buffers.len()
        ));
    }
    Ok(Canonical {
        planned: PlannedSource::new(src, plan),
        table,
        config,
        notes,
        dropped,
    })
}

/// The `config.json` beside `input` that the `hf` and `flax` tables read (see
/// [`merge_sidecar_config`]); `None` for other tables.
fn sidecar_config(input: &Path, table_id: &str) -> Option<PathBuf> {
    if table_id != "hf" && table_id != "flax" {
        return None;
    }
    Some(input.parent()?.join("config.json"))
}

/// For `--from hf` and `--from flax`: a `config.json` next to the input supplies what tensors cannot (heads, eps,
/// labels, activation); explicit options still win. A headless model's `id2label` (transformers
/// 4.x saves its two default labels in every config) describes no head and is not taken.
fn merge_sidecar_config(
    path: &Path,
    o: &mut ConfigOverrides,
    arch: Architecture,
    limits: &Limits,
) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    // Downloaded beside the weights, so as untrusted as they are: bounded before it is read
    // (HF configs with 21k labels are ~1 MB).
    let text = model::read_config_file(path, limits)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::from(ErrorKind::Config {
            reason: format!("{e}"),
        })
        .with_path(path)
    })?;
    let Some(side) = v.as_object() else {
        return Ok(());
    };
    // The sizes are checked against the tensors (a disagreement is an error, never a model cut
    // to fit); the rest fills in what the tensors do not record.
    let keep = [
        "num_attention_heads",
        "layer_norm_eps",
        "hidden_act",
        "id2label",
        "image_size",
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "patch_size",
        "num_channels",
        "qkv_bias",
        "pooler_act",
    ];
    let mut merged: serde_json::Map<String, serde_json::Value> = side
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()) || model::FEATURE_FIELDS.contains(&k.as_str()))
        .filter(|(k, _)| *k != "id2label" || model::classifies(arch))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(user) = &o.config {
        for (k, v) in user {
            merged.insert(k.clone(), v.clone());
        }
    }
    if let Some(h) = o.num_heads {
        merged.insert("num_attention_heads".into(), serde_json::json!(h));
    }
    if let Some(a) = &o.hidden_act {
        merged.insert("hidden_act".into(), serde_json::json!(a));
    }
    o.config = Some(merged);
    o.num_heads = None;
    Ok(())
}

/// Converts `input` into `outdir`: `model.safetensors` (or `model.npz`), `config.json` and
/// `preprocessor_config.json`. A thin wrapper: [`open`](crate::open) →
/// [`Canonical::new`] (plus, for `hf` and `flax` inputs, the `config.json` beside the input) →
/// [`Canonical::write`] (plus the input's sha256 in the weights' metadata).
///
/// ```
/// use vit_convert::{convert, ConfigOverrides, ConvertOptions};
/// let opts = ConvertOptions {
///     from: Some("timm".parse()?),
///     // tiny test model: 24 wide, 2 heads (real checkpoints default to hidden/64)
///     overrides: ConfigOverrides { num_heads: Some(2), ..Default::default() },
///     ..Default::default()
/// };
/// let out = tempfile::tempdir()?;
/// let report = convert("fixtures/convert/timm_vit/source.pth", out.path(), &opts)?;
/// assert_eq!(report.architecture.name(), "ViTForImageClassification");
/// assert!(out.path().join("model.safetensors").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Any reader, mapping, config or I/O error. On error no partial file is left in `outdir` and
/// existing files there are untouched; the input is never written.
pub fn convert(
    input: impl AsRef<Path>,
    outdir: impl AsRef<Path>,
    opts: &ConvertOptions,
) -> Result<ConversionReport> {
    convert_with_progress(input, outdir, opts, &NoProgress)
}

/// [`convert`], reporting the bytes written to `progress` ([`Stage::Write`]).
///
/// # Errors
/// As [`convert`].
pub fn convert_with_progress(
    input: impl AsRef<Path>,
    outdir: impl AsRef<Path>,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConversionReport> {
    let (input, outdir) = (input.as_ref(), outdir.as_ref());
    let [weights, cfg_path, pre_path] = opts.to.output_files(outdir);
    refuse_overwriting_input(input, &[&weights, &cfg_path, &pre_path])?;
    // The input's sha256 (recorded in the output's metadata) needs only the path: it is computed
    // on another thread from here on, while the input is parsed and the tensors stream. Any
    // error cancels it (it stops within one chunk), so a refusal returns without waiting for it.
    let cancel = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let cancel = &cancel;
        let mut hash = PendingHash {
            thread: Some(scope.spawn(move || sha256_file(input, cancel))),
            value: None,
        };
        let converted = (|| {
            let src = source::open_with(input, &opts.open)?;
            let canon =
                canonicalize(src.as_ref(), Some(input), opts).map_err(|e| e.with_path(input))?;
            if let Some(side) = sidecar_config(input, &canon.table.id) {
                // The `config.json` read beside the input is an input too: `-o` the input's own
                // folder must not replace it.
                write::check_outputs(&[&weights, &cfg_path, &pre_path], &[input, &side])?;
            }
            write_canonical(&canon, outdir, opts, Some((input, &mut hash)), progress)
        })();
        if converted.is_err() {
            cancel.store(true, Ordering::Relaxed);
            // Joined here so that a panic on the thread is not re-raised by the scope; its
            // result (cancelled) is not the error to report.
            let _ = hash.get();
        }
        converted
    })
}

/// Writes `canon` into `outdir` (the outputs already checked against the inputs); with an
/// `input` file, its sha256 (being computed by `hash`) goes into the weights' metadata and the
/// report, and errors name it.
fn write_canonical(
    canon: &Canonical<'_>,
    outdir: &Path,
    opts: &ConvertOptions,
    input: Option<(&Path, &mut PendingHash<'_>)>,
    progress: &dyn Progress,
) -> Result<ConversionReport> {
    let (input, mut hash) = input.unzip();
    let [weights, cfg_path, pre_path] = opts.to.output_files(outdir);
    let arch = canon.config.architecture;

    let mut notes = canon.notes.clone();
    if opts.to == OutputFormat::Flax {
        notes.extend(flax_notes(arch, &canon.config)?);
    }
    // Folders created for OUTDIR are removed again if the conversion fails.
    let created = write::CreatedDirs::create(outdir)?;
    let mut config = canon.config.clone();
    if let Some(d) = opts.dtype {
        config.dtype = match d {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            _ => "float32",
        }
        .to_string();
    }

    // All three files are written and synced to temp files first, then put in place together
    // (`write::OutputSet`): a failure anywhere — a full disk, a directory where a file should
    // go, a failed rename — leaves OUTDIR exactly as it was.
    let config_json = config.to_json();
    let cfg_file = write::prepare_json(&cfg_path, &config_json)?;
    let pre = preprocessor::preprocessor_config(canon.table.facts.preprocessor, config.image_size);
    let pre_file = write::prepare_json(&pre_path, &pre)?;
    let name_input = |e: Error| match input {
        Some(input) => e.with_path(input),
        None => e,
    };

    // The input's sha256 is being computed on another thread while the tensors stream; the
    // safetensors header is written with a placeholder of the hash's length and rewritten in
    // place once the hash is known.
    let mut get = || match hash.as_deref_mut() {
        Some(h) => h.get(),
        None => Err(ErrorKind::io("hash", std::io::Error::other("no input file")).into()),
    };
    let deferred = input.is_some().then_some(DeferredMeta {
        key: "source_sha256",
        len: SHA256_HEX_LEN,
        value: &mut get,
    });
    let written =
        write_weights(canon, &config, &weights, opts, deferred, progress).map_err(name_input)?;
    let input_sha256 = hash.map(PendingHash::get).transpose()?;
    notes.extend(written.notes);
    let mut set = write::OutputSet::with_fsync(opts.fsync);
    set.push(written.file);
    set.push(cfg_file);
    set.push(pre_file);
    set.commit()?;
    created.keep();
    let outputs = vec![weights, cfg_path, pre_path];
    progress.finish();

    Ok(ConversionReport {
        input: input.map(Path::to_path_buf),
        input_sha256,
        input_format: canon.planned.format().name(),
        mapping: canon.planned.plan().report.clone(),
        architecture: arch,
        config: config_json,
        notes,
        dropped: canon.dropped.clone(),
        outputs,
        tensors: written.tensors,
        bytes: written.bytes,
    })
}

/// The name of a `mappings/flax.toml` tensor in a Flax checkpoint of `arch`:
/// `FlaxViTForImageClassification` nests the body under `vit/`.
fn flax_disk_name(arch: Architecture, name: &str) -> String {
    if arch == Architecture::ViTForImageClassification && !name.starts_with("classifier/") {
        format!("vit/{name}")
    } else {
        name.to_string()
    }
}

/// Refuses what transformers' Flax ViT cannot load and says how to load the rest.
fn flax_notes(arch: Architecture, config: &ViTConfig) -> Result<Vec<String>> {
    match arch {
        Architecture::ViTForImageClassification => Ok(Vec::new()),
        Architecture::ViTModel if config.has_pooler() => Ok(Vec::new()),
        Architecture::ViTModel => Ok(vec![
            "no pooler: load with FlaxViTModel.from_pretrained(dir, add_pooling_layer=False)"
                .to_string(),
        ]),
        other => Err(ErrorKind::InvalidOption {
            reason: format!(
                "option `to` flax: transformers has no Flax {} (Flax ViT only: FlaxViTModel, FlaxViTForImageClassification)",
                other.name()
            ),
        }
        .into()),
    }
}

/// The input's sha256, being computed on a scoped thread.
struct PendingHash<'scope> {
    thread: Option<std::thread::ScopedJoinHandle<'scope, Result<String>>>,
    value: Option<String>,
}

impl PendingHash<'_> {
    /// Waits for the hash (once) and returns it.
    fn get(&mut self) -> Result<String> {
        if let Some(thread) = self.thread.take() {
            let sha = thread.join().map_err(|_| {
                Error::from(ErrorKind::io(
                    "hash",
                    std::io::Error::other("the hashing thread panicked"),
                ))
            })??;
            self.value = Some(sha);
        }
        self.value.clone().ok_or_else(|| {
            Error::from(ErrorKind::io(
                "hash",
                std::io::Error::other("the input hash is unavailable"),
            ))
        })
    }
}

/// `--dtype`: `inner` cast as the writer reads it, refusing overflow unless allowed (the writers
/// then get no dtype of their own).
fn casting<'a>(
    inner: &'a dyn TensorSource,
    opts: &ConvertOptions,
) -> Option<write::cast::Casting<'a>> {
    opts.dtype
        .map(|d| write::cast::Casting::new(inner, d, opts.allow_overflow))
}

/// What [`write_weights`] wrote.
struct Written {
    /// Tensors written.
    tensors: usize,
    /// Bytes of the weights file.
    bytes: u64,
    /// What writing changed: with `allow_overflow`, how many values the cast saturated; in a
    /// reverse layout, what it could not hold the same way.
    notes: Vec<String>,
    /// The staged weights file, committed with the JSON files.
    file: write::AtomicFile,
}

/// Writes the weights file in the requested layout, cast to `opts.dtype`, to a temp file (the
/// caller commits it with the JSON files).
fn write_weights(
    canon: &Canonical<'_>,
    config: &ViTConfig,
    weights: &Path,
    opts: &ConvertOptions,
    sha: Option<DeferredMeta<'_>>,
    progress: &dyn Progress,
) -> Result<Written> {
    let arch = canon.config.architecture;
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(
        "vit_convert_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    meta.insert("mapping_table".to_string(), canon.table.id.clone());
    meta.insert("mapping_table_sha256".to_string(), canon.table.hash.clone());

    if opts.to == OutputFormat::Safetensors {
        let casting = casting(&canon.planned, opts);
        let src = Reporting {
            inner: casting
                .as_ref()
                .map_or(&canon.planned as &dyn TensorSource, |c| c),
            progress,
        };
        progress.start(Stage::Write, src.total());
        let disk: Vec<WriteItem> = canon
            .planned
            .tensors()
            .iter()
            .map(|t| WriteItem {
                name: model::disk_name(arch, &t.name),
                source: t.name.clone(),
            })
            .collect();
        let (f, b) = write::stage_safetensors(weights, &src, &disk, None, &meta, sha)?;
        return Ok(Written {
            tensors: disk.len(),
            bytes: b,
            notes: casting.and_then(|c| c.note()).into_iter().collect(),
            file: f,
        });
    }
    let family = arch.family();
    let id = match (opts.to, family) {
        (OutputFormat::Npz, ModelType::SiglipVision) => "siglip",
        (
            OutputFormat::Npz,
            ModelType::Beit
            | ModelType::Dinov2
            | ModelType::Dinov2WithRegisters
            | ModelType::ClipVision,
        ) => {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "option `to` npz: the npz layouts hold ViT/DeiT (google-research) and SigLIP (big_vision); {} writes safetensors or timm",
                    family.name()
                ),
            }
            .into())
        }
        (
            OutputFormat::Flax,
            ModelType::Dinov2
            | ModelType::Dinov2WithRegisters
            | ModelType::ClipVision
            | ModelType::SiglipVision,
        ) => {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "option `to` flax: the Flax layout is written for ViT only; {} writes safetensors or timm",
                    family.name()
                ),
            }
            .into())
        }
        (OutputFormat::Npz, _) => "jax",
        (OutputFormat::Flax, _) => "flax",
        (_, ModelType::Beit) => "beit",
        (_, ModelType::Deit) => "deit",
        (_, ModelType::Vit) => "timm",
        (_, ModelType::Dinov2 | ModelType::Dinov2WithRegisters) => "dinov2",
        (_, ModelType::ClipVision) => "clip",
        (_, ModelType::SiglipVision) => "siglip",
    };
    let table = MappingTable::builtin(id)?;
    let layout = if table.layouts.is_empty() {
        None
    } else {
        Some(table.layout_written_by(opts.to).ok_or_else(|| {
            crate::Error::from(ErrorKind::InvalidOption {
                reason: format!(
                    "option `to` {}: table {} writes no layout in that format",
                    opts.to.name(),
                    table.id
                ),
            })
        })?)
    };
    let mut infos = canon.planned.tensors().to_vec();
    let mut bindings = config.symbol_bindings();
    let redo = if family.is_dinov2() {
        Some(dinov2::redo_timm_layout(
            &canon.planned,
            &mut infos,
            &mut bindings,
            family,
        )?)
    } else {
        None
    };
    let mut plan =
        mapping::plan_reverse_within(&table, layout, &infos, &bindings, &opts.open.limits)?;
    let mut notes = redo.map(|r| r.finish(&mut plan)).unwrap_or_default();
    let rev = PlannedSource::new(&canon.planned, plan);
    let casting = casting(&rev, opts);
    let src = Reporting {
        inner: casting.as_ref().map_or(&rev as &dyn TensorSource, |c| c),
        progress,
    };
    progress.start(Stage::Write, src.total());
    let (tensors, bytes, file) = match opts.to {
        OutputFormat::Npz => {
            let items = WriteItem::all(&rev);
            let (f, b) = write::npz::stage_npz(weights, &src, &items, None)?;
            (items.len(), b, f)
        }
        OutputFormat::Flax => {
            let items: Vec<WriteItem> = rev
                .tensors()
                .iter()
                .map(|t| WriteItem {
                    name: flax_disk_name(arch, &t.name),
                    source: t.name.clone(),
                })
                .collect();
            let (f, b) = write::flax::stage_flax(
                weights,
                &src,
                &items,
                None,
                write::flax::FLAX_MAX_CHUNK_SIZE,
            )?;
            (items.len(), b, f)
        }
        OutputFormat::Safetensors | OutputFormat::Timm => {
            let items = WriteItem::all(&rev);
            let (f, b) = write::stage_safetensors(weights, &src, &items, None, &meta, sha)?;
            (items.len(), b, f)
        }
    };
    notes.extend(casting.and_then(|c| c.note()));
    Ok(Written {
        tensors,
        bytes,
        notes,
        file,
    })
}

/// Refuses outputs that would replace the input (by device and inode: also through a symlink,
/// a hard link or `./x`), and outputs naming one file twice.
fn refuse_overwriting_input(input: &Path, outputs: &[&Path]) -> Result<()> {
    write::check_outputs(outputs, &[input]).map_err(|e| e.with_path(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input's hash stops between two chunks once cancelled (a refused conversion does not
    /// wait for the hash of a large input), and hashes the whole file otherwise.
    #[test]
    fn the_input_hash_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let bytes: Vec<u8> = (0..3 * HASH_CHUNK + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let e = sha256_file(&path, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Io { op: "hash", .. }), "{e}");
        let sha = sha256_file(&path, &AtomicBool::new(false)).unwrap();
        assert_eq!(sha, mapping::schema::hex(&Sha256::digest(&bytes)));
    }

    /// timm's fused `qkv` is split along its rows: each of query, key and value is one byte
    /// range of the input (located, so the writer copies it from the file and never holds it),
    /// and the written tensors equal the materialised split byte for byte.
    #[test]
    fn qkv_split_parts_are_ranges_of_the_input_and_written_exactly() {
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/convert/timm_vit/source.pth");
        let src = source::open(&input).unwrap();
        let opts = ConvertOptions {
            overrides: ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let canon = Canonical::new(src.as_ref(), &opts).unwrap();
        let out = tempfile::tempdir().unwrap();
        convert(&input, out.path(), &opts).unwrap();
        let written = source::open(out.path().join("model.safetensors")).unwrap();
        let mut checked = 0;
        for kind in ["weight", "bias"] {
            let fused = src.read(&format!("blocks.0.attn.qkv.{kind}")).unwrap();
            let (_, fused_at) = src.locate(&fused.data).unwrap();
            let third = fused.data.len() / 3;
            for (part, name) in ["query", "key", "value"].into_iter().enumerate() {
                let name = format!("encoder.layer.0.attention.attention.{name}.{kind}");
                let t = canon.source().read(&name).unwrap();
                assert!(matches!(t.data, std::borrow::Cow::Borrowed(_)), "{name}");
                let (_, at) = canon.source().locate(&t.data).unwrap();
                assert_eq!(at, fused_at + (part * third) as u64, "{name}");
                let materialised = fused.data[part * third..(part + 1) * third].to_vec();
                let on_disk = written.read(&format!("vit.{name}")).unwrap();
                assert_eq!(&on_disk.data[..], &materialised[..], "{name}");
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
    }

    /// timm's CLIP layout implies exact GELU however its names are wrapped or prefixed: the
    /// marker is looked for as the table sees the names (a `module.` prefix once made it
    /// QuickGELU).
    #[test]
    fn a_layout_activation_is_found_after_prefixes_are_stripped() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/convert/clip_timm");
        let plain = source::open(dir.join("source.pth")).unwrap();
        let mut prefixed = crate::source::MemorySource::new();
        for t in plain.tensors() {
            let tensor = plain.read(&t.name).unwrap();
            prefixed
                .insert(&format!("module.{}", t.name), tensor)
                .unwrap();
        }
        let opts = ConvertOptions {
            overrides: ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        for src in [plain.as_ref(), &prefixed as &dyn TensorSource] {
            let canon = Canonical::new(src, &opts).unwrap();
            assert_eq!(canon.config().hidden_act, model::Activation::Gelu);
        }
    }
}
