//! The mapping-table file format (`mappings/*.toml`), parsed and validated into a [`MappingTable`].
//! The format is documented in `mappings/README.md`.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::dims::Dim;
use super::index::TableIndex;
use super::names::Branch;
use super::ops::OpSpec;
use super::pattern::Pattern;
use crate::error::{ErrorKind, Result};
use crate::source::MAX_RANK;
use crate::vocab::{Activation, LabelSet, ModelType, OutputFormat, Preprocessor};

/// Most ops one rule may list. The shipped tables use at most two; every op of a rule runs on
/// every tensor it converts, so a long list would multiply the work a table can ask for.
pub(crate) const MAX_RULE_OPS: usize = 16;

/// Most `from` (concat) or `to` (split) names in one rule. The shipped tables use at most three;
/// each output of a split recomputes the rule's ops on the whole input, so many parts would
/// multiply the work a table can ask for.
pub(crate) const MAX_RULE_NAMES: usize = 64;

/// Most ops besides `split`/`concat` times outputs in one rule (the larger of its `from` and `to`
/// counts, since the rule also runs backwards): each output of a split recomputes the rule's
/// other ops on the whole input, so 64 outputs after 15 transposes copied a tensor 960 times (a
/// 16 MiB checkpoint took 40 s). The shipped tables need at most 3; one output may still have 16.
pub(crate) const MAX_RULE_WORK: usize = MAX_RULE_OPS;

/// Most `ignore_names` in one table (the SigLIP table has two).
pub(crate) const MAX_IGNORE_NAMES: usize = 64;

/// Most `[[buffer]]` entries in one table (the BEiT table has two): each is matched against every
/// source name without an index.
pub(crate) const MAX_BUFFERS: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    table: TableSpec,
    model: ModelSpec,
    #[serde(default)]
    source: SourceSpec,
    #[serde(default)]
    reject: Vec<Spanned<RejectSpec>>,
    #[serde(default)]
    buffer: Vec<Spanned<BufferSpec>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BufferSpec {
    name: String,
    kind: BufferKind,
    /// The source layout this buffer belongs to (one of `[[table.layouts]]`).
    #[serde(default)]
    layout: Option<String>,
    /// Written when the reverse direction writes `beside` in `layout`: a `zeros` buffer of
    /// `shape` (timm CLIP's `head.bias` beside `head.weight`).
    #[serde(default)]
    beside: Option<String>,
    #[serde(default)]
    shape: Option<Vec<DimSpec>>,
}

/// `[[table.layouts]]`: one of several source layouts a table reads. Rules and buffers tagged
/// with its name belong to it alone; untagged ones to every layout. Running the table backwards
/// writes one layout: the one whose `to` is the requested output format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutSpec {
    name: String,
    #[serde(default)]
    to: Option<String>,
    /// A prefix every written name gets (big_vision's `params/`).
    #[serde(default)]
    write_prefix: String,
}

/// A source layout of a multi-layout table (`[[table.layouts]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) name: String,
    /// The output format that writes this layout (`--to timm`, `--to npz`), if any.
    pub(crate) to: Option<OutputFormat>,
    /// Prefixed to every name written in this layout.
    pub(crate) write_prefix: String,
}

/// What a buffer the geometry implies holds: its values are checked, then it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BufferKind {
    /// BEiT's relative position index `[T, T]` (integers), which the patch grid determines.
    RelativePositionIndex,
    /// A float tensor that must be all zeros (timm CLIP's projection bias, which HF's
    /// projection does not have).
    Zeros,
}

/// A stored buffer that the model's geometry implies (BEiT's `relative_position_index`): the
/// engine consumes it without a target; conversion checks its values, then drops it.
#[derive(Clone, Debug)]
pub(crate) struct Buffer {
    pub(crate) pattern: Pattern,
    pub(crate) kind: BufferKind,
    pub(crate) line: usize,
    /// The layout the buffer belongs to (`None`: every layout).
    pub(crate) layout: Option<String>,
    /// Written as zeros of this shape when the reverse direction writes the name beside it.
    pub(crate) written: Option<WrittenBuffer>,
}

/// A `zeros` buffer the reverse direction writes beside another name (`[[buffer]]` with `beside`).
#[derive(Clone, Debug)]
pub(crate) struct WrittenBuffer {
    pub(crate) beside: String,
    pub(crate) shape: Vec<Dim>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    id: String,
    description: String,
    families: Vec<String>,
    #[serde(default)]
    detect: DetectSpec,
    #[serde(default)]
    layouts: Vec<LayoutSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DetectSpec {
    #[serde(default)]
    all: Vec<String>,
    #[serde(default)]
    any: Vec<String>,
    #[serde(default)]
    none: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    layer_norm_eps: f64,
    hidden_act: Activation,
    preprocessor: Preprocessor,
    #[serde(default)]
    num_heads: Option<String>,
    #[serde(default)]
    model_type: Option<ModelType>,
    #[serde(default)]
    labels: Vec<LabelSet>,
    #[serde(default)]
    layout_hidden_act: Vec<LayoutActSpec>,
}

/// `[[model.layout_hidden_act]]`: the activation a source layout implies when one of its names is
/// present (timm's CLIP towers use exact GELU where OpenAI's use QuickGELU).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayoutActSpec {
    /// A source name (after unwrapping and stripping) that identifies the layout.
    pub(crate) when: String,
    /// The activation that layout implies.
    pub(crate) hidden_act: Activation,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SourceSpec {
    #[serde(default)]
    wrappers: Vec<Spanned<String>>,
    #[serde(default)]
    branches: Vec<Branch>,
    #[serde(default)]
    strip_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    ignore_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    ignore_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    feature: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum DimSpec {
    Int(u64),
    Expr(String),
}

/// A rule's `shape`: symbolic dimensions, or `"any"` (a plain rename that passes any shape
/// through; the model's checks hold it to the config).
#[derive(Deserialize)]
#[serde(untagged)]
enum ShapeSpec {
    Dims(Vec<DimSpec>),
    Any(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    from: OneOrMany,
    #[serde(default)]
    shape: Option<ShapeSpec>,
    /// One symbolic shape per `from` name (a concat of inputs whose sizes differ along its axis).
    #[serde(default)]
    shapes: Option<Vec<Vec<DimSpec>>>,
    #[serde(default)]
    ops: Vec<String>,
    to: OneOrMany,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    absent: Option<String>,
    #[serde(default)]
    layout: Option<String>,
}

/// Which names must (all), may (any: at least one) and must not (none) appear for a table to
/// claim a checkpoint in `--from auto`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Detect {
    pub(crate) all: Vec<String>,
    pub(crate) any: Vec<String>,
    pub(crate) none: Vec<String>,
}

/// Model facts a table carries.
#[derive(Clone, Debug)]
pub(crate) struct ModelFacts {
    pub(crate) layer_norm_eps: f64,
    pub(crate) hidden_act: Activation,
    pub(crate) preprocessor: Preprocessor,
    /// A shape symbol that gives the head count (JAX kernels), if any.
    pub(crate) num_heads: Option<String>,
    /// The model family the table produces (`None`: decided by the canonical names, for tables
    /// that read every family, like `hf`).
    pub(crate) model_type: Option<ModelType>,
    /// The label lists the family trains on: a head of one of their class counts gets its names.
    pub(crate) labels: Vec<LabelSet>,
    /// Activations implied by source layouts (first match wins over `hidden_act`).
    pub(crate) layout_hidden_act: Vec<LayoutActSpec>,
}

/// A name that marks an architecture HF ViT cannot represent.
#[derive(Clone, Debug)]
pub(crate) struct Reject {
    pub(crate) matcher: RejectMatch,
    pub(crate) feature: String,
    pub(crate) line: usize,
}

/// How a [`Reject`] recognises names.
#[derive(Clone, Debug)]
pub(crate) enum RejectMatch {
    /// A name template.
    Name(Pattern),
    /// Any name starting with this text.
    Prefix(String),
}

/// One rule: source name(s), their symbolic shapes, ops, target name(s).
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) line: usize,
    pub(crate) from: Vec<Pattern>,
    /// One symbolic shape per `from` name, in order (a rule written with `shape` repeats it; a
    /// `shape = "any"` rule has one empty shape).
    pub(crate) shapes: Vec<Vec<Dim>>,
    pub(crate) ops: Vec<OpSpec>,
    pub(crate) to: Vec<Pattern>,
    pub(crate) optional: bool,
    /// `shape = "any"`: a one-to-one rename without ops whose shape is not bound to symbols.
    pub(crate) any_shape: bool,
    /// For a required rule: the feature a checkpoint without its source tensor has (a missing
    /// `cls_token` means global average pooling without a class token), named when refusing.
    pub(crate) absent: Option<String>,
    /// The layout the rule belongs to (`None`: every layout of the table).
    pub(crate) layout: Option<String>,
}

impl Rule {
    /// The symbolic shape of `from` name `k` (empty past the last).
    pub(crate) fn shape_of(&self, k: usize) -> &[Dim] {
        self.shapes.get(k).map_or(&[], Vec::as_slice)
    }

    /// True when the rule is instantiated once per layer (`{i}`).
    pub(crate) fn is_indexed(&self) -> bool {
        self.from.first().is_some_and(Pattern::is_indexed)
    }
}

/// A parsed, validated mapping table.
#[derive(Clone, Debug)]
pub struct MappingTable {
    pub(crate) id: String,
    pub(crate) description: String,
    pub(crate) families: Vec<String>,
    /// The source layouts of a multi-layout table (empty: one layout, every rule).
    pub(crate) layouts: Vec<Layout>,
    /// Where the table came from (`mappings/timm.toml` or a user path), for error messages.
    pub(crate) file: String,
    /// sha256 of the table text.
    pub(crate) hash: String,
    pub(crate) text: String,
    pub(crate) detect: Detect,
    pub(crate) facts: ModelFacts,
    pub(crate) wrappers: Vec<String>,
    pub(crate) branches: Vec<Branch>,
    pub(crate) strip_prefixes: Vec<String>,
    pub(crate) ignore_prefixes: Vec<String>,
    /// Source tensors dropped on purpose, by exact name (reported).
    pub(crate) ignore_names: Vec<String>,
    pub(crate) rejects: Vec<Reject>,
    /// Buffers checked against the geometry, then dropped.
    pub(crate) buffers: Vec<Buffer>,
    pub(crate) rules: Vec<Rule>,
    /// The names above compiled for matching.
    pub(crate) index: TableIndex,
}

/// Byte offsets of line starts, computed once: a line number is a binary search, so a table with
/// many rules costs no more than its length.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|k| k + 1));
        Lines(starts)
    }

    /// The 1-based line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&s| s <= offset).max(1)
    }
}

/// Refuses an empty entry of a `[source]` list, naming its line.
fn source_list(
    list: Vec<Spanned<String>>,
    key: &str,
    why: &str,
    lines: &Lines,
    file: &str,
) -> Result<Vec<String>> {
    list.into_iter()
        .map(|s| {
            if s.get_ref().is_empty() {
                Err(table_error(
                    file,
                    lines.line_of(s.span().start),
                    format!("{key}: an empty entry {why}"),
                ))
            } else {
                Ok(s.into_inner())
            }
        })
        .collect()
}

fn table_error(file: &str, line: usize, reason: impl Into<String>) -> crate::Error {
    ErrorKind::Table {
        file: file.to_string(),
        line,
        reason: reason.into(),
    }
    .into()
}

impl MappingTable {
    /// Parses a table from TOML text. `file` names it in error messages. The format is
    /// documented in `mappings/README.md`.
    ///
    /// ```
    /// use vit_convert::{ErrorKind, MappingTable};
    /// let text = MappingTable::builtin("timm")?.text().replace("id = \"timm\"", "id = \"mine\"");
    /// let t = MappingTable::from_toml(&text, "mine.toml")?;
    /// assert_eq!(t.id(), "mine");
    ///
    /// // Problems name the file and line.
    /// let err = MappingTable::from_toml("[table]\nid = 3\n", "bad.toml").unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::Table { line: 2, .. }));
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Table`] naming the file and line of the first problem.
    pub fn from_toml(text: &str, file: &str) -> Result<MappingTable> {
        let lines = Lines::new(text);
        let spec: FileSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| lines.line_of(s.start));
            table_error(file, line, e.message().to_string())
        })?;
        let mut rules = Vec::with_capacity(spec.rule.len());
        for r in spec.rule {
            let line = lines.line_of(r.span().start);
            rules.push(build_rule(r.into_inner(), file, line)?);
        }
        if let Some(b) = spec.buffer.get(MAX_BUFFERS) {
            return Err(table_error(
                file,
                lines.line_of(b.span().start),
                format!("more than {MAX_BUFFERS} [[buffer]] entries"),
            ));
        }
        let mut buffers = Vec::with_capacity(spec.buffer.len());
        for b in spec.buffer {
            let line = lines.line_of(b.span().start);
            let b = b.into_inner();
            let err = |m: String| table_error(file, line, m);
            let pattern = Pattern::parse(&b.name).map_err(|e| err(e.0))?;
            let written = match (b.beside, b.shape) {
                (None, None) => None,
                (Some(beside), Some(shape)) => {
                    if b.kind != BufferKind::Zeros || b.layout.is_none() || pattern.is_indexed() {
                        return Err(err(
                            "a buffer written `beside` a name is a `zeros` one of one layout, without `{i}`".into(),
                        ));
                    }
                    Some(WrittenBuffer {
                        beside,
                        shape: parse_shape(shape, &err)?,
                    })
                }
                _ => return Err(err("`beside` and `shape` go together".into())),
            };
            buffers.push(Buffer {
                pattern,
                kind: b.kind,
                line,
                layout: b.layout,
                written,
            });
        }
        let mut rejects = Vec::new();
        for r in spec.reject {
            let line = lines.line_of(r.span().start);
            let r = r.into_inner();
            let matcher = match (r.name, r.prefix) {
                (Some(n), None) => {
                    RejectMatch::Name(Pattern::parse(&n).map_err(|e| table_error(file, line, e.0))?)
                }
                (None, Some(p)) if !p.is_empty() => RejectMatch::Prefix(p),
                _ => {
                    return Err(table_error(
                        file,
                        line,
                        "a reject needs exactly one of `name` or `prefix`",
                    ))
                }
            };
            rejects.push(Reject {
                matcher,
                feature: r.feature,
                line,
            });
        }
        if spec.table.id.is_empty() {
            return Err(table_error(file, 1, "table id is empty"));
        }
        let src = spec.source;
        let wrappers = source_list(
            src.wrappers,
            "wrappers",
            "names no sub-container",
            &lines,
            file,
        )?;
        let branches = src.branches;
        let strip_lines: Vec<usize> = src
            .strip_prefixes
            .iter()
            .map(|s| lines.line_of(s.span().start))
            .collect();
        let strip_prefixes = source_list(
            src.strip_prefixes,
            "strip_prefixes",
            "strips nothing, so stripping would never end",
            &lines,
            file,
        )?;
        let ignore_prefixes = source_list(
            src.ignore_prefixes,
            "ignore_prefixes",
            "would ignore every tensor",
            &lines,
            file,
        )?;
        if src.ignore_names.len() > MAX_IGNORE_NAMES {
            return Err(table_error(
                file,
                0,
                format!(
                    "{} `ignore_names` (at most {MAX_IGNORE_NAMES}: each is compared with every name no rule reads)",
                    src.ignore_names.len()
                ),
            ));
        }
        let layouts = build_layouts(spec.table.layouts, file)?;
        let tags = rules
            .iter()
            .map(|r| (r.line, &r.layout))
            .chain(buffers.iter().map(|b| (b.line, &b.layout)));
        for (line, tag) in tags {
            if let Some(t) = tag
                .as_ref()
                .filter(|t| !layouts.iter().any(|l| &l.name == *t))
            {
                return Err(table_error(
                    file,
                    line,
                    format!("layout {t:?} is not one of the table's `[[table.layouts]]`"),
                ));
            }
        }
        let hash = hex(&Sha256::digest(text.as_bytes()));
        let mut table = MappingTable {
            id: spec.table.id,
            description: spec.table.description,
            families: spec.table.families,
            layouts,
            file: file.to_string(),
            hash,
            text: text.to_string(),
            detect: Detect {
                all: spec.table.detect.all,
                any: spec.table.detect.any,
                none: spec.table.detect.none,
            },
            facts: ModelFacts {
                layer_norm_eps: spec.model.layer_norm_eps,
                hidden_act: spec.model.hidden_act,
                preprocessor: spec.model.preprocessor,
                num_heads: spec.model.num_heads,
                model_type: spec.model.model_type,
                labels: spec.model.labels,
                layout_hidden_act: spec.model.layout_hidden_act,
            },
            wrappers,
            branches,
            strip_prefixes,
            ignore_prefixes,
            ignore_names: src.ignore_names,
            rejects,
            buffers,
            rules,
            index: TableIndex::default(),
        };
        table.index = TableIndex::build(&table);
        check_strip_prefixes(&table, &strip_lines)?;
        check_reachable(&table)?;
        Ok(table)
    }

    /// The table's id (`timm`, `dino`, …).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One-line description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Source families the table serves.
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// sha256 (hex) of the table's text.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The table's TOML text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where the table came from: `mappings/<id>.toml` for built-in tables, else the name given
    /// to [`MappingTable::from_toml`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Number of `[[rule]]` entries.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The layout written by `to`, if the table declares one.
    pub(crate) fn layout_written_by(&self, to: OutputFormat) -> Option<&Layout> {
        self.layouts.iter().find(|l| l.to == Some(to))
    }

    /// The table as `layout` alone sees it: its rules and buffers and the untagged ones.
    pub(crate) fn restricted_to(&self, layout: &str) -> MappingTable {
        let mine = |tag: &Option<String>| tag.as_deref().is_none_or(|t| t == layout);
        let mut t = self.clone();
        t.rules.retain(|r| mine(&r.layout));
        t.buffers.retain(|b| mine(&b.layout));
        t.index = TableIndex::build(&t);
        t
    }
}

/// The strip prefix that keeps `pattern` from ever matching: names are stripped before they are
/// matched, and a stripped name never starts with a strip prefix unless it is that prefix.
fn stripped_away<'t>(table: &'t MappingTable, pattern: &Pattern) -> Option<&'t str> {
    let text = pattern.prefix();
    let indexed = pattern.is_indexed();
    table
        .index
        .strip
        .matches(text)
        .find(|&(len, _)| indexed || len < text.len())
        .and_then(|(_, k)| table.strip_prefixes.get(k))
        .map(String::as_str)
}

/// Refuses a strip prefix that starts with another one (`module.` and `module.x.`): one of the
/// two is dead or shadowed, and without such pairs a trie walk meets at most one prefix, at its
/// end, so stripping a name costs time linear in its length (with them, a name of `a`s and the
/// prefixes `a` and 100 000 `a`s then `b` took a walk of 100 000 bytes per byte stripped).
fn check_strip_prefixes(table: &MappingTable, lines: &[usize]) -> Result<()> {
    for (k, p) in table.strip_prefixes.iter().enumerate() {
        let shorter = table
            .index
            .strip
            .matches(p)
            .find(|&(len, at)| len < p.len() || at != k)
            .and_then(|(_, at)| table.strip_prefixes.get(at));
        if let Some(q) = shorter {
            return Err(table_error(
                &table.file,
                lines.get(k).copied().unwrap_or(0),
                format!("strip_prefixes: `{p}` starts with `{q}`, also listed; list one of them"),
            ));
        }
    }
    Ok(())
}

/// Refuses rules, rejects and buffers whose names can never match, because a strip prefix removes what
/// they start with: such a rule is dead, and such a reject would let the feature through.
fn check_reachable(table: &MappingTable) -> Result<()> {
    let dead = |line: usize, p: &Pattern, strip: &str| {
        Err(table_error(
            &table.file,
            line,
            format!("`{p}` can never match: `{strip}` is stripped from every name first"),
        ))
    };
    for rule in &table.rules {
        for p in &rule.from {
            if let Some(strip) = stripped_away(table, p) {
                return dead(rule.line, p, strip);
            }
        }
    }
    for r in &table.rejects {
        let p = match &r.matcher {
            RejectMatch::Name(p) => p.clone(),
            RejectMatch::Prefix(q) => Pattern::literal(q),
        };
        if let Some(strip) = stripped_away(table, &p) {
            return dead(r.line, &p, strip);
        }
    }
    for b in &table.buffers {
        if let Some(strip) = stripped_away(table, &b.pattern) {
            return dead(b.line, &b.pattern, strip);
        }
    }
    Ok(())
}

fn build_rule(spec: RuleSpec, file: &str, line: usize) -> Result<Rule> {
    let err = |m: String| table_error(file, line, m);
    let parse_all = |v: Vec<String>| -> Result<Vec<Pattern>> {
        v.iter()
            .map(|s| Pattern::parse(s).map_err(|e| err(e.0)))
            .collect()
    };
    let (from, to) = (spec.from.into_vec(), spec.to.into_vec());
    if from.len().max(to.len()) > MAX_RULE_NAMES {
        return Err(err(format!(
            "{} `from` and {} `to` names (at most {MAX_RULE_NAMES} each)",
            from.len(),
            to.len()
        )));
    }
    let from = parse_all(from)?;
    let to = parse_all(to)?;
    if from.is_empty() || to.is_empty() {
        return Err(err(
            "a rule needs at least one `from` and one `to` name".into()
        ));
    }
    let indexed = from[0].is_indexed();
    if from.iter().chain(&to).any(|p| p.is_indexed() != indexed) {
        return Err(err(
            "either every name of a rule has `{i}` or none has".into()
        ));
    }
    let explicit = spec.shapes.is_some();
    let (dims, any_shape) = match (spec.shape, spec.shapes) {
        (Some(_), Some(_)) => {
            return Err(err(
                "a rule gives `shape` or `shapes` (one per `from` name), not both".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "a rule needs `shape` (or `shapes`, one per `from` name)".into(),
            ))
        }
        (None, Some(list)) => {
            if from.len() < 2 {
                return Err(err(
                    "`shapes` is for a rule with several `from` names; one name takes `shape`"
                        .into(),
                ));
            }
            if list.len() != from.len() {
                return Err(err(format!(
                    "{} `shapes` for {} `from` names (one shape per name)",
                    list.len(),
                    from.len()
                )));
            }
            if list.iter().any(|d| d.len() != list[0].len()) {
                let ranks: Vec<usize> = list.iter().map(Vec::len).collect();
                return Err(err(format!(
                    "`shapes` of different ranks {ranks:?}: concat joins tensors of one rank"
                )));
            }
            (list, false)
        }
        (Some(ShapeSpec::Dims(d)), None) => (vec![d; from.len()], false),
        (Some(ShapeSpec::Any(a)), None) if a == "any" => {
            if !spec.ops.is_empty() || from.len() != 1 || to.len() != 1 {
                return Err(err(
                    "`shape = \"any\"` is for a one-to-one rename without ops".into(),
                ));
            }
            (vec![Vec::new()], true)
        }
        (Some(ShapeSpec::Any(a)), None) => {
            return Err(err(format!("shape {a:?}: a list of dimensions or \"any\"")))
        }
    };
    if let Some(d) = dims.first().filter(|d| d.len() > MAX_RANK) {
        return Err(err(format!(
            "shape has {} dimensions (at most {MAX_RANK})",
            d.len()
        )));
    }
    if spec.ops.len() > MAX_RULE_OPS {
        return Err(err(format!(
            "{} ops (at most {MAX_RULE_OPS} per rule)",
            spec.ops.len()
        )));
    }
    let shapes = dims
        .into_iter()
        .map(|shape| parse_shape(shape, &err))
        .collect::<Result<Vec<_>>>()?;
    let ops = spec
        .ops
        .iter()
        .map(|s| OpSpec::parse(s).map_err(err))
        .collect::<Result<Vec<_>>>()?;
    for (k, op) in ops.iter().enumerate() {
        match op {
            OpSpec::Concat { .. } if k != 0 => {
                return Err(err("concat must be the first op".into()))
            }
            OpSpec::Split { .. } if k + 1 != ops.len() => {
                return Err(err("split must be the last op".into()))
            }
            _ => {}
        }
    }
    let outputs = from.len().max(to.len());
    let recomputed = ops
        .iter()
        .filter(|o| !matches!(o, OpSpec::Split { .. } | OpSpec::Concat { .. }))
        .count();
    if outputs.saturating_mul(recomputed) > MAX_RULE_WORK {
        return Err(err(format!(
            "{recomputed} ops besides split/concat for each of {outputs} outputs: every output recomputes them (ops × outputs at most {MAX_RULE_WORK})"
        )));
    }
    let concat = matches!(ops.first(), Some(OpSpec::Concat { .. }));
    if let (true, Some(OpSpec::Concat { axis }), Some(first)) =
        (explicit, ops.first(), shapes.first())
    {
        check_concat_shapes(*axis, first, &shapes).map_err(err)?;
    }
    if concat != (from.len() > 1) {
        return Err(err("a rule with several `from` names must start with concat(axis), and only such a rule may".into()));
    }
    match ops.last() {
        Some(OpSpec::Split { parts, .. }) if *parts != to.len() => {
            return Err(err(format!(
                "split into {parts} parts needs {parts} `to` names, found {}",
                to.len()
            )))
        }
        Some(OpSpec::Split { .. }) => {}
        _ if to.len() != 1 => {
            return Err(err(
                "several `to` names need a final split(axis, parts)".into()
            ))
        }
        _ => {}
    }
    Ok(Rule {
        line,
        from,
        shapes,
        ops,
        to,
        optional: spec.optional,
        any_shape,
        absent: spec.absent,
        layout: spec.layout,
    })
}

/// Parses one symbolic shape.
fn parse_shape(shape: Vec<DimSpec>, err: &dyn Fn(String) -> crate::Error) -> Result<Vec<Dim>> {
    shape
        .into_iter()
        .map(|d| match d {
            DimSpec::Int(v) => usize::try_from(v)
                .map(Dim::int)
                .map_err(|_| err(format!("dimension {v} too large"))),
            DimSpec::Expr(s) => Dim::parse(&s).map_err(err),
        })
        .collect()
}

/// Parses `[[table.layouts]]`: distinct non-empty names, each output format at most once.
fn build_layouts(specs: Vec<LayoutSpec>, file: &str) -> Result<Vec<Layout>> {
    let mut layouts: Vec<Layout> = Vec::with_capacity(specs.len());
    for l in specs {
        let err = |m: String| table_error(file, 0, format!("layout {:?}: {m}", l.name));
        if l.name.is_empty() || layouts.iter().any(|o| o.name == l.name) {
            return Err(err("layout names are distinct and non-empty".into()));
        }
        let to = match l.to.as_deref() {
            None => None,
            Some(t) => match OutputFormat::parse(t) {
                Some(f @ (OutputFormat::Timm | OutputFormat::Npz)) => Some(f),
                _ => {
                    return Err(err(format!(
                        "`to = {t:?}`: a layout is written by `timm` or `npz`"
                    )))
                }
            },
        };
        if to.is_some() && layouts.iter().any(|o| o.to == to) {
            return Err(err("two layouts written by one output format".into()));
        }
        layouts.push(Layout {
            name: l.name,
            to,
            write_prefix: l.write_prefix,
        });
    }
    Ok(layouts)
}

/// `shapes` joined by `concat(axis)`: the axis exists, and every other dimension is written the
/// same in every shape (only the axis may differ; its inverse splits at the sizes it joined).
fn check_concat_shapes(
    axis: usize,
    first: &[Dim],
    shapes: &[Vec<Dim>],
) -> std::result::Result<(), String> {
    if axis >= first.len() {
        return Err(format!("concat({axis}) on a rank-{} shape", first.len()));
    }
    for s in shapes {
        let differs = s
            .iter()
            .zip(first)
            .enumerate()
            .find(|(k, (a, b))| *k != axis && a != b);
        if let Some((k, (a, b))) = differs {
            return Err(format!(
                "`shapes` differ in dimension {k} (`{b}` and `{a}`): concat({axis}) joins shapes that differ only along its axis"
            ));
        }
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[table]
id = "t"
description = "test"
families = ["x"]

[model]
layer_norm_eps = 1e-6
hidden_act = "gelu"
preprocessor = "vit"

[[rule]]
from = "a.{i}.qkv"
shape = ["3*D", "D"]
ops = ["split(0, 3)"]
to = ["q.{i}", "k.{i}", "v.{i}"]
"#;

    #[test]
    fn minimal_table_parses_with_line_numbers() {
        let t = MappingTable::from_toml(MINIMAL, "t.toml").unwrap();
        assert_eq!(t.rules.len(), 1);
        assert_eq!(t.rules[0].line, 12);
        assert!(t.rules[0].is_indexed());
    }

    #[test]
    fn split_with_wrong_target_count_names_the_line() {
        let bad = MINIMAL.replace(
            r#"to = ["q.{i}", "k.{i}", "v.{i}"]"#,
            r#"to = ["q.{i}", "k.{i}"]"#,
        );
        let e = MappingTable::from_toml(&bad, "t.toml").unwrap_err();
        match e.kind() {
            ErrorKind::Table { file, line, reason } => {
                assert_eq!(file, "t.toml");
                assert_eq!(*line, 12);
                assert!(reason.contains("split into 3 parts"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = MINIMAL
            .replace("optional", "x")
            .replace("hidden_act", "hiden_act");
        assert!(matches!(
            MappingTable::from_toml(&bad, "t.toml").unwrap_err().kind(),
            ErrorKind::Table { .. }
        ));
    }

    /// `[[table.layouts]]` and the `layout` tags: a tag names a declared layout, a layout is
    /// written by `timm` or `npz` and by one format at most, a buffer written `beside` a name is
    /// a `zeros` one of one layout with a shape; restricting keeps a layout's rules and the
    /// untagged ones.
    #[test]
    fn layouts_are_declared_tagged_and_restricted() {
        let two = MINIMAL.replace(
            "families = [\"x\"]\n",
            "families = [\"x\"]\n[[table.layouts]]\nname = \"a\"\n[[table.layouts]]\nname = \"b\"\nto = \"timm\"\n",
        );
        let tagged = format!(
            "{two}layout = \"b\"\n\n[[rule]]\nfrom = \"x\"\nshape = [\"D\"]\nto = \"y\"\n\n[[buffer]]\nname = \"z\"\nkind = \"zeros\"\nlayout = \"b\"\nbeside = \"x\"\nshape = [\"D\"]\n"
        );
        let t = MappingTable::from_toml(&tagged, "t.toml").unwrap();
        assert_eq!(t.layouts.len(), 2);
        let b = t.layout_written_by(OutputFormat::Timm).unwrap();
        assert_eq!(b.name, "b");
        assert!(t.layout_written_by(OutputFormat::Npz).is_none());
        assert_eq!(t.restricted_to("b").rules.len(), 2);
        let a = t.restricted_to("a");
        assert_eq!((a.rules.len(), a.buffers.len()), (1, 0));
        assert_eq!(a.rules[0].from[0].render(None), "x");

        let reason = |text: &str| match MappingTable::from_toml(text, "t.toml").unwrap_err().kind()
        {
            ErrorKind::Table { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert!(
            reason(&tagged.replacen("layout = \"b\"", "layout = \"c\"", 1))
                .contains("layout \"c\" is not one of the table's")
        );
        assert!(reason(&tagged.replace("to = \"timm\"", "to = \"flax\""))
            .contains("written by `timm` or `npz`"));
        assert!(reason(&tagged.replace("name = \"a\"", "name = \"b\"")).contains("distinct"));
        assert!(
            reason(&tagged.replace("name = \"a\"", "name = \"a\"\nto = \"timm\""))
                .contains("two layouts written by one output format")
        );
        assert!(reason(&tagged.replacen("beside = \"x\"\n", "", 1)).contains("go together"));
        assert!(reason(
            &tagged.replace("kind = \"zeros\"\nlayout = \"b\"\n", "kind = \"zeros\"\n")
        )
        .contains("a `zeros` one of one layout"));
    }
}
