//! Running a [`MappingTable`] over a tensor listing: forward (source layout → canonical) and
//! reverse (canonical → source layout). Planning reads names and shapes only; tensor data is
//! read later, one tensor at a time, by [`PlannedSource`].

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::dims::{show_shape, Bindings, Dim};
use super::index::{PatternIndex, PrefixSet};
use super::names::Branch;
use super::ops::Op;
use super::pattern::Pattern;
use super::schema::{BufferKind, MappingTable, Rule};
use crate::error::{Error, ErrorKind, Result};
use crate::source::Limits;
use crate::tensor::{checked_byte_len, DType, TensorInfo};
use crate::vocab::MappingError;

/// One output tensor of a plan and how to compute it from source tensors.
#[derive(Clone, Debug)]
pub(crate) struct PlannedTensor {
    pub(crate) info: TensorInfo,
    /// Source tensor names (as the source lists them).
    pub(crate) sources: Vec<String>,
    /// Ops applied in order.
    pub(crate) ops: Vec<Op>,
    /// Which output of a final split this tensor is (0 otherwise).
    pub(crate) output: usize,
}

/// What a mapping did: for reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MappingReport {
    /// Table id.
    pub table: String,
    /// Table file.
    pub table_file: String,
    /// sha256 of the table text.
    pub table_hash: String,
    /// The wrapper or branch whose tensors were converted (`model`, `teacher`, …), if any.
    pub selected: Option<String>,
    /// Source tensors consumed by rules.
    pub consumed: usize,
    /// Source tensors dropped because the table ignores them (e.g. DINO head), by name.
    pub ignored: Vec<String>,
    /// Source tensors outside the selected wrapper (optimizer state, other branches …), by name.
    pub not_selected: Vec<String>,
    /// Number of layers found.
    pub layers: usize,
}

/// The result of planning.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) targets: Vec<PlannedTensor>,
    pub(crate) bindings: Bindings,
    pub(crate) report: MappingReport,
    /// Source buffers the table's `[[buffer]]` entries claim (original name, kind, table line):
    /// consumed without a target, for conversion to check against the geometry.
    pub(crate) buffers: Vec<(String, BufferKind, usize)>,
}

fn mapping_err(table: &MappingTable, line: usize, problem: MappingError) -> Error {
    ErrorKind::Mapping {
        table: table.id.clone(),
        file: table.file.clone(),
        line,
        problem,
    }
    .into()
}

/// The table's view of a checkpoint: names after choosing a wrapper/branch and stripping prefixes.
pub(crate) struct View {
    /// (stripped name, original name), in source order.
    pub(crate) names: Vec<(String, String)>,
    pub(crate) selected: Option<String>,
    pub(crate) not_selected: Vec<String>,
}

/// Picks the sub-container a table converts and strips the table's prefixes.
pub(crate) fn select_view(
    table: &MappingTable,
    names: &[&str],
    branch: Option<Branch>,
) -> Result<View> {
    // Every wrapper or branch some name sits in: one walk of the index per name.
    let mut present: HashSet<&str> = HashSet::new();
    for &n in names {
        for (len, _) in table.index.containers.matches(n) {
            if let Some(w) = n.get(..len.saturating_sub(1)) {
                present.insert(w);
            }
        }
    }
    let has = |w: &str| present.contains(w);
    let present_branches: Vec<Branch> = table
        .branches
        .iter()
        .copied()
        .filter(|b| has(b.name()))
        .collect();
    let selected: Option<String> = if !present_branches.is_empty() {
        match branch {
            Some(b) if table.branches.contains(&b) => {
                if !has(b.name()) {
                    return Err(ErrorKind::InvalidOption {
                        reason: format!("branch `{b}` is not in this checkpoint"),
                    }
                    .into());
                }
                Some(b.to_string())
            }
            Some(b) => {
                let known: Vec<&str> = table.branches.iter().map(|b| b.name()).collect();
                return Err(ErrorKind::InvalidOption {
                    reason: format!(
                        "unknown branch `{b}` (this table knows: {})",
                        known.join(", ")
                    ),
                }
                .into());
            }
            None => present_branches.first().map(|b| b.to_string()),
        }
    } else {
        if let Some(b) = branch {
            return Err(ErrorKind::InvalidOption {
                reason: format!("option `branch` {b} given, but the checkpoint has no branches"),
            }
            .into());
        }
        table.wrappers.iter().find(|w| has(w)).cloned()
    };
    let mut view = Vec::new();
    let mut not_selected = Vec::new();
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(names.len());
    for &n in names {
        let inner = match &selected {
            Some(w) => match n.strip_prefix(w.as_str()).and_then(|r| r.strip_prefix('/')) {
                Some(r) => r,
                None => {
                    not_selected.push(n.to_string());
                    continue;
                }
            },
            None => n,
        };
        let stripped = strip_prefixes(inner, &table.index.strip);
        if let Some(prev) = seen.insert(stripped, n) {
            return Err(mapping_err(
                table,
                0,
                MappingError::StripCollision {
                    first: prev.to_string(),
                    second: n.to_string(),
                    stripped: stripped.to_string(),
                },
            ));
        }
        view.push((stripped.to_string(), n.to_string()));
    }
    Ok(View {
        names: view,
        selected,
        not_selected,
    })
}

/// Strips the table's prefixes repeatedly: at each step the first prefix (in list order) that
/// leaves something. Every step removes at least one byte (tables cannot hold an empty prefix, and
/// an empty match is skipped here too), so the loop ends; and no prefix starts with another (the
/// table refuses that when it loads), so a step walks no further than what it strips, plus one
/// failed walk at the end: linear in the name.
fn strip_prefixes<'a>(mut name: &'a str, prefixes: &PrefixSet) -> &'a str {
    loop {
        let first = prefixes
            .matches(name)
            .filter(|&(len, _)| len > 0 && len < name.len())
            .min_by_key(|&(_, k)| k);
        match first.and_then(|(len, _)| name.get(len..)) {
            Some(rest) => name = rest,
            None => return name,
        }
    }
}

/// True when the table's detection signature fits the view. A branch of the table's own
/// (DINO's `teacher`/`student`) is evidence enough to waive the `none` list.
pub(crate) fn detect(table: &MappingTable, view: &View) -> bool {
    let has = |n: &String| view.names.iter().any(|(s, _)| s == n);
    let own_branch = view
        .selected
        .as_ref()
        .is_some_and(|b| table.branches.iter().any(|x| x.name() == b));
    !view.names.is_empty()
        && table.detect.all.iter().all(has)
        && (table.detect.any.is_empty() || table.detect.any.iter().any(has))
        && (own_branch || !table.detect.none.iter().any(has))
}

/// Which way a plan runs a table: forward reads each rule's `from` names and writes its `to`
/// names; reverse the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Source layout → canonical.
    Forward,
    /// Canonical → source layout.
    Reverse,
}

impl Direction {
    /// The patterns a rule reads in this direction.
    fn inputs(self, rule: &Rule) -> &[Pattern] {
        match self {
            Direction::Forward => &rule.from,
            Direction::Reverse => &rule.to,
        }
    }

    /// The index of the first input pattern of every rule.
    fn index(self, table: &MappingTable) -> &PatternIndex {
        match self {
            Direction::Forward => &table.index.from,
            Direction::Reverse => &table.index.to,
        }
    }

    /// The first input pattern of `rule`, rendered for `index`.
    fn first_input(self, rule: &Rule, index: Option<usize>) -> String {
        self.inputs(rule)
            .first()
            .map(|p| p.render(index))
            .unwrap_or_default()
    }
}

/// One rule applied to one match (one layer, for a per-layer rule).
struct Instance<'r> {
    rule: &'r Rule,
    index: Option<usize>,
    /// Input infos, each with the name the table knows it by (after prefix stripping).
    inputs: Vec<(String, TensorInfo)>,
}

/// Every rule instantiated over a listing.
struct Instances<'r> {
    /// In rule-then-name order.
    list: Vec<Instance<'r>>,
    /// For each rule (by position), the positions in `list` of its instances.
    by_rule: Vec<Vec<usize>>,
    /// Consumed input names → the line of the rule that consumed them.
    consumed: HashMap<String, usize>,
}

/// Instantiates the rules over `names` (the names the table sees, in listing order), rule by rule
/// and name by name (the order fixes which error comes first): every input a rule reads must be
/// in `lookup`, and no input may be read twice.
fn instantiate<'r>(
    table: &'r MappingTable,
    dir: Direction,
    names: &[&str],
    lookup: &HashMap<&str, &TensorInfo>,
) -> Result<Instances<'r>> {
    let matched = match_rules(dir.index(table), table.rules.len(), names);
    let mut consumed: HashMap<String, usize> = HashMap::new();
    let mut list: Vec<Instance> = Vec::new();
    let mut by_rule: Vec<Vec<usize>> = vec![Vec::new(); table.rules.len()];
    for (rule, (matches, mine)) in table.rules.iter().zip(matched.iter().zip(&mut by_rule)) {
        for &(n, index) in matches {
            let Some(s) = names.get(n) else {
                continue;
            };
            let mut inputs = Vec::new();
            for p in dir.inputs(rule) {
                let want = p.render(index);
                let info = lookup.get(want.as_str()).ok_or_else(|| {
                    mapping_err(
                        table,
                        rule.line,
                        MappingError::InputMissing {
                            needed_by: s.to_string(),
                            missing: want.clone(),
                        },
                    )
                })?;
                if let Some(prev) = consumed.insert(want.clone(), rule.line) {
                    return Err(mapping_err(
                        table,
                        rule.line,
                        MappingError::ConsumedTwice {
                            source: want.clone(),
                            also_line: Some(prev),
                        },
                    ));
                }
                inputs.push((want, (*info).clone()));
            }
            mine.push(list.len());
            list.push(Instance {
                rule,
                index,
                inputs,
            });
        }
    }
    Ok(Instances {
        list,
        by_rule,
        consumed,
    })
}

/// Checks that the instances cover the table: layer indices without a gap, every required
/// per-layer rule in each layer, every required non-indexed rule once. Returns the layer count.
fn check_coverage(table: &MappingTable, dir: Direction, inst: &Instances) -> Result<usize> {
    // Layers: contiguous indices, every required per-layer rule present in each layer.
    let layers = check_layers(table, dir, &inst.list, &inst.by_rule)?;

    // Required non-indexed rules.
    for (rule, mine) in table.rules.iter().zip(&inst.by_rule) {
        if rule.optional || rule.is_indexed() || !mine.is_empty() {
            continue;
        }
        let tensor = dir.first_input(rule, None);
        let problem = match dir {
            Direction::Forward => MappingError::RequiredMissing { tensor },
            Direction::Reverse => MappingError::CanonicalMissing { tensor },
        };
        return Err(mapping_err(table, rule.line, problem));
    }
    Ok(layers)
}

/// Resolves every instance's ops against `bindings` and computes the targets it produces, with
/// their shapes and dtype; the bytes they make are budgeted before anything is read. A target
/// produced twice is an error.
fn resolve_targets(
    table: &MappingTable,
    dir: Direction,
    instances: &[Instance],
    bindings: &Bindings,
    budget: &mut OutputBudget,
) -> Result<Vec<PlannedTensor>> {
    let mut targets = Vec::new();
    let mut produced: HashMap<String, usize> = HashMap::new();
    for ins in instances {
        let rule = ins.rule;
        let (ops, stages, outputs) = match dir {
            Direction::Forward => {
                let ops = resolve_ops(table, rule, bindings)?;
                let shapes: Vec<Vec<usize>> =
                    ins.inputs.iter().map(|(_, i)| i.shape.clone()).collect();
                let stages = trace(&ops, shapes)
                    .map_err(|reason| mapping_err(table, rule.line, MappingError::Op { reason }))?;
                let outs = stages.last().cloned().unwrap_or_default();
                let outputs: Vec<(String, Vec<usize>)> = rule
                    .to
                    .iter()
                    .zip(outs)
                    .map(|(p, shape)| (p.render(ins.index), shape))
                    .collect();
                (ops, stages, outputs)
            }
            Direction::Reverse => reverse_stages(table, ins, bindings)?,
        };
        let dtype = common_dtype(table, rule, &ins.inputs)?;
        let first = outputs.first().map_or("", |(name, _)| name.as_str());
        budget.check_stages(
            table,
            rule,
            first,
            ins.inputs.iter().map(|(_, i)| i.byte_len()),
            &stages,
            dtype,
        )?;
        for (k, (name, shape)) in outputs.into_iter().enumerate() {
            claim_target(table, rule, &mut produced, &name)?;
            budget.add(table, rule, &name, &shape, dtype)?;
            targets.push(PlannedTensor {
                info: TensorInfo { name, dtype, shape },
                sources: ins.inputs.iter().map(|(_, i)| i.name.clone()).collect(),
                ops: ops.clone(),
                output: k,
            });
        }
    }
    Ok(targets)
}

/// A rule's ops with every symbol resolved.
fn resolve_ops(table: &MappingTable, rule: &Rule, bindings: &Bindings) -> Result<Vec<Op>> {
    rule.ops
        .iter()
        .map(|o| {
            o.resolve(bindings)
                .map_err(|reason| mapping_err(table, rule.line, MappingError::Op { reason }))
        })
        .collect()
}

/// The reverse of one instance: the rule's source shape from `bindings`, traced forward through
/// its ops and checked against the canonical inputs; returns the inverse ops, the shapes after
/// each of them (the last are the outputs) and the outputs (the rule's `from` names).
#[allow(clippy::type_complexity)]
fn reverse_stages(
    table: &MappingTable,
    ins: &Instance,
    bindings: &Bindings,
) -> Result<(Vec<Op>, Vec<Vec<Vec<usize>>>, Vec<(String, Vec<usize>)>)> {
    let rule = ins.rule;
    // Forward trace from the source's symbolic shape.
    let src_shape = rule
        .shape
        .iter()
        .map(|d| {
            d.eval(bindings).ok_or_else(|| {
                mapping_err(
                    table,
                    rule.line,
                    MappingError::UnboundDimension {
                        dim: d.to_string(),
                        tensor: None,
                    },
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let fwd = resolve_ops(table, rule, bindings)?;
    let mut stage_inputs: Vec<Vec<Vec<usize>>> = Vec::new();
    let mut shapes = vec![src_shape.clone(); rule.from.len()];
    for op in &fwd {
        stage_inputs.push(shapes.clone());
        shapes = op
            .out_shapes(&shapes)
            .map_err(|reason| mapping_err(table, rule.line, MappingError::Op { reason }))?;
    }
    for ((_, t), s) in ins.inputs.iter().zip(&shapes) {
        if &t.shape != s {
            return Err(mapping_err(
                table,
                rule.line,
                MappingError::ShapeMismatch {
                    tensor: t.name.clone(),
                    expected: s.clone(),
                    actual: t.shape.clone(),
                },
            ));
        }
    }
    let inv: Vec<Op> = fwd
        .iter()
        .zip(&stage_inputs)
        .rev()
        .map(|(op, ins)| op.inverse(ins))
        .collect();
    stage_inputs.push(shapes);
    let outputs = rule
        .from
        .iter()
        .map(|p| (p.render(ins.index), src_shape.clone()))
        .collect();
    Ok((inv, stage_inputs, outputs))
}

/// Plans source → canonical within the default [`Limits`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn plan_forward(
    table: &MappingTable,
    infos: &[TensorInfo],
    branch: Option<Branch>,
) -> Result<Plan> {
    plan_forward_within(table, infos, branch, &Limits::DEFAULT)
}

/// Plans source → canonical, the tensors made budgeted by
/// [`Limits::table_output_allowance_bytes`].
pub(crate) fn plan_forward_within(
    table: &MappingTable,
    infos: &[TensorInfo],
    branch: Option<Branch>,
    limits: &Limits,
) -> Result<Plan> {
    let names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
    let view = select_view(table, &names, branch)?;
    let by_orig: HashMap<&str, &TensorInfo> = infos.iter().map(|t| (t.name.as_str(), t)).collect();
    let lookup: HashMap<&str, &TensorInfo> = view
        .names
        .iter()
        .filter_map(|(s, o)| Some((s.as_str(), *by_orig.get(o.as_str())?)))
        .collect();

    for (s, o) in &view.names {
        // The first reject (in table order) that matches.
        let mut first = table.index.reject_prefixes.matches(s).map(|(_, k)| k).min();
        table.index.reject_names.candidates(s, 1, |k, _| {
            first = Some(first.map_or(k, |f| f.min(k)));
        });
        if let Some(r) = first.and_then(|k| table.rejects.get(k)) {
            return Err(mapping_err(
                table,
                r.line,
                MappingError::Rejected {
                    feature: r.feature.clone(),
                    tensor: o.clone(),
                },
            ));
        }
    }

    let stripped: Vec<&str> = view.names.iter().map(|(s, _)| s.as_str()).collect();
    let inst = instantiate(table, Direction::Forward, &stripped, &lookup)?;

    // Every source tensor is consumed, a buffer the geometry implies, or ignored.
    let mut ignored = Vec::new();
    let mut unconsumed = Vec::new();
    let mut buffers = Vec::new();
    for (s, o) in &view.names {
        if inst.consumed.contains_key(s) {
            continue;
        }
        if let Some(b) = table
            .buffers
            .iter()
            .find(|b| b.pattern.matches(s).is_some())
        {
            buffers.push((o.clone(), b.kind, b.line));
            continue;
        }
        if table.index.ignore.any_match(s) {
            ignored.push(o.clone());
        } else {
            unconsumed.push(o.clone());
        }
    }
    if !unconsumed.is_empty() {
        return Err(mapping_err(
            table,
            0,
            MappingError::Unconsumed { names: unconsumed },
        ));
    }

    // Bind symbols and check shapes.
    let bindings = bind_shapes(table, &inst.list)?;

    let layers = check_coverage(table, Direction::Forward, &inst)?;

    let mut budget = OutputBudget::new(
        inst.list
            .iter()
            .flat_map(|ins| &ins.inputs)
            .map(|(_, i)| i.byte_len()),
        limits,
    );
    let targets = resolve_targets(
        table,
        Direction::Forward,
        &inst.list,
        &bindings,
        &mut budget,
    )?;

    Ok(Plan {
        targets,
        bindings,
        report: MappingReport {
            table: table.id.clone(),
            table_file: table.file.clone(),
            table_hash: table.hash.clone(),
            selected: view.selected,
            consumed: inst.consumed.len(),
            ignored,
            not_selected: view.not_selected,
            layers,
        },
        buffers,
    })
}

/// Records that `rule` produces `name`; a second producer is an error naming both lines.
fn claim_target(
    table: &MappingTable,
    rule: &Rule,
    produced: &mut HashMap<String, usize>,
    name: &str,
) -> Result<()> {
    match produced.insert(name.to_string(), rule.line) {
        Some(prev) => Err(mapping_err(
            table,
            rule.line,
            MappingError::ProducedTwice {
                target: name.to_string(),
                also_line: prev,
            },
        )),
        None => Ok(()),
    }
}

fn common_dtype(
    table: &MappingTable,
    rule: &Rule,
    inputs: &[(String, TensorInfo)],
) -> Result<DType> {
    let first = inputs[0].1.dtype;
    if let Some((n, i)) = inputs.iter().find(|(_, i)| i.dtype != first) {
        return Err(mapping_err(
            table,
            rule.line,
            MappingError::DTypeMismatch {
                first: inputs[0].0.clone(),
                first_dtype: first,
                other: n.clone(),
                other_dtype: i.dtype,
            },
        ));
    }
    Ok(first)
}

/// Applies ops to shapes; returns the shapes after each op (the last are the outputs; with no
/// ops, the inputs).
fn trace(ops: &[Op], shapes: Vec<Vec<usize>>) -> std::result::Result<Vec<Vec<Vec<usize>>>, String> {
    if ops.is_empty() && shapes.len() != 1 {
        return Err("several inputs need concat".into());
    }
    let mut stages = vec![shapes];
    for op in ops {
        let next = match stages.last() {
            Some(cur) => op.out_shapes(cur)?,
            None => break,
        };
        stages.push(next);
    }
    if stages.len() > 1 {
        stages.remove(0);
    }
    Ok(stages)
}

/// The budget name of the bytes a table makes ([`Limits::table_output_allowance_bytes`]).
pub(crate) const OUTPUT_BUDGET: &str = "table output bytes";

/// The bytes a plan may make: no more than it reads plus
/// [`Limits::table_output_allowance_bytes`], in total and at every step of every rule. Ops move
/// bytes, so only `prepend_zeros` (a class-token row) ever needs the allowance; a table that
/// would turn a small file into a huge one is refused while planning, before anything is read.
struct OutputBudget {
    allowance: usize,
    limit: usize,
    made: usize,
}

impl OutputBudget {
    fn new(inputs: impl Iterator<Item = usize>, limits: &Limits) -> Self {
        let allowance = limits.table_output_allowance_bytes;
        let read = inputs.fold(0usize, usize::saturating_add);
        OutputBudget {
            allowance,
            limit: read.saturating_add(allowance),
            made: 0,
        }
    }

    fn exceeded(
        table: &MappingTable,
        rule: &Rule,
        name: &str,
        limit: usize,
        bytes: Option<usize>,
    ) -> Error {
        Error::from(ErrorKind::BudgetExceeded {
            budget: OUTPUT_BUDGET,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            offset: bytes
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(u64::MAX),
        })
        .with_tensor(format!("{name} (rule {}:{})", table.file, rule.line))
    }

    /// Every step of one rule instance stays within what it reads plus the allowance.
    fn check_stages(
        &self,
        table: &MappingTable,
        rule: &Rule,
        name: &str,
        inputs: impl Iterator<Item = usize>,
        stages: &[Vec<Vec<usize>>],
        dtype: DType,
    ) -> Result<()> {
        let limit = inputs
            .fold(0usize, usize::saturating_add)
            .saturating_add(self.allowance);
        for stage in stages {
            let bytes = stage.iter().try_fold(0usize, |acc, s| {
                acc.checked_add(checked_byte_len(dtype, s)?)
            });
            if bytes.is_none_or(|b| b > limit) {
                return Err(Self::exceeded(table, rule, name, limit, bytes));
            }
        }
        Ok(())
    }

    /// Counts one planned tensor against the plan's total.
    fn add(
        &mut self,
        table: &MappingTable,
        rule: &Rule,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<()> {
        let bytes = checked_byte_len(dtype, shape).and_then(|b| self.made.checked_add(b));
        match bytes {
            Some(b) if b <= self.limit => {
                self.made = b;
                Ok(())
            }
            _ => Err(Self::exceeded(table, rule, name, self.limit, bytes)),
        }
    }
}

fn bind_shapes(table: &MappingTable, instances: &[Instance]) -> Result<Bindings> {
    let mut b = Bindings::new();
    // Rank checks first.
    for ins in instances {
        for (n, info) in &ins.inputs {
            if info.shape.len() != ins.rule.shape.len() {
                return Err(shape_err(table, ins.rule, n, &info.shape));
            }
        }
    }
    // Bind to a fixpoint: passes over every dimension in order until one binds nothing. A
    // dimension's outcome depends only on the bindings of its own symbols, so a pass revisits only
    // the dimensions one of whose symbols was bound since they were last solved: the same
    // bindings and the same first error as full passes, without passes × dimensions work.
    let mut slots: Vec<(&Instance, &str, &[usize], &Dim, usize)> = Vec::new();
    for ins in instances {
        for (n, info) in &ins.inputs {
            for (d, &actual) in ins.rule.shape.iter().zip(&info.shape) {
                slots.push((ins, n, &info.shape, d, actual));
            }
        }
    }
    let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, (_, _, _, d, _)) in slots.iter().enumerate() {
        for sym in d.symbols() {
            let list = users.entry(sym).or_default();
            if list.last() != Some(&k) {
                list.push(k);
            }
        }
    }
    let mut now: BTreeSet<usize> = (0..slots.len()).collect();
    loop {
        let mut next: BTreeSet<usize> = BTreeSet::new();
        let mut progress = false;
        while let Some(k) = now.pop_first() {
            let Some(&(ins, n, shape, d, actual)) = slots.get(k) else {
                continue;
            };
            let unbound: Vec<&str> = d.symbols().filter(|s| !b.contains_key(*s)).collect();
            match d.solve(actual, &mut b) {
                Ok(true) => {
                    progress = true;
                    for sym in unbound.iter().filter(|s| b.contains_key(**s)) {
                        for &u in users.get(sym).map_or(&[][..], Vec::as_slice) {
                            if u > k {
                                now.insert(u);
                            } else if u < k {
                                next.insert(u);
                            }
                        }
                    }
                }
                Ok(false) => {}
                Err(()) => return Err(shape_err(table, ins.rule, n, shape)),
            }
        }
        if !progress {
            break;
        }
        now = next;
    }
    for ins in instances {
        for (n, info) in &ins.inputs {
            for (d, &actual) in ins.rule.shape.iter().zip(&info.shape) {
                match d.eval(&b) {
                    Some(v) if v == actual => {}
                    Some(_) => return Err(shape_err(table, ins.rule, n, &info.shape)),
                    None => {
                        return Err(mapping_err(
                            table,
                            ins.rule.line,
                            MappingError::UnboundDimension {
                                dim: d.to_string(),
                                tensor: Some(n.to_string()),
                            },
                        ))
                    }
                }
            }
        }
    }
    Ok(b)
}

fn shape_err(table: &MappingTable, rule: &Rule, name: &str, actual: &[usize]) -> Error {
    mapping_err(
        table,
        rule.line,
        MappingError::ShapeContradiction {
            tensor: name.to_string(),
            expected: show_shape(&rule.shape),
            actual: actual.to_vec(),
        },
    )
}

/// The first of `0, 1, 2, …` missing from `present` (ascending, distinct), in time linear in
/// `present` however large its values.
fn first_gap(present: impl Iterator<Item = usize>) -> Option<usize> {
    let mut expect = 0usize;
    for v in present {
        if v != expect {
            return Some(expect);
        }
        expect = expect.checked_add(1)?;
    }
    None
}

fn check_layers(
    table: &MappingTable,
    dir: Direction,
    instances: &[Instance],
    by_rule: &[Vec<usize>],
) -> Result<usize> {
    let indices: BTreeSet<usize> = instances.iter().filter_map(|i| i.index).collect();
    let max = indices.last().copied();
    if let (Some(missing), Some(max)) = (first_gap(indices.iter().copied()), max) {
        return Err(mapping_err(
            table,
            0,
            MappingError::LayerGap {
                missing,
                found_up_to: max,
            },
        ));
    }
    // No gap: the indices are exactly 0..=max.
    let layers = indices.len();
    for (rule, mine) in table.rules.iter().zip(by_rule) {
        if !rule.is_indexed() {
            continue;
        }
        let have: BTreeSet<usize> = mine
            .iter()
            .filter_map(|&k| instances.get(k).and_then(|i| i.index))
            .collect();
        if rule.optional && have.is_empty() {
            continue;
        }
        let missing =
            first_gap(have.iter().copied()).or_else(|| (have.len() < layers).then_some(have.len()));
        if let Some(i) = missing {
            return Err(mapping_err(
                table,
                rule.line,
                MappingError::LayerTensorMissing {
                    tensor: dir.first_input(rule, Some(i)),
                },
            ));
        }
    }
    Ok(layers)
}

/// For each rule (by position), the names its first pattern matches: `(name position, index)`
/// in name order. A name matched by several rules keeps only its first two: the second of them
/// already fails (the name is consumed twice), and planning stops at the first failure in
/// rule-then-name order, before any later rule could be reached.
fn match_rules(
    index: &PatternIndex,
    rules: usize,
    names: &[&str],
) -> Vec<Vec<(usize, Option<usize>)>> {
    let mut per_rule: Vec<Vec<(usize, Option<usize>)>> = vec![Vec::new(); rules];
    let mut found: Vec<(usize, Option<usize>)> = Vec::new();
    for (n, name) in names.iter().enumerate() {
        found.clear();
        index.candidates(name, 2, |k, i| found.push((k, i)));
        found.sort_unstable();
        for &(k, i) in found.iter().take(2) {
            if let Some(list) = per_rule.get_mut(k) {
                list.push((n, i));
            }
        }
    }
    per_rule
}

/// Plans canonical → source layout by running the table's rules backwards. `bindings` must bind
/// every symbol the table's shapes use (see `model::symbol_bindings`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn plan_reverse(
    table: &MappingTable,
    infos: &[TensorInfo],
    bindings: &Bindings,
) -> Result<Plan> {
    plan_reverse_within(table, infos, bindings, &Limits::DEFAULT)
}

/// [`plan_reverse`] within `limits` ([`Limits::table_output_allowance_bytes`]).
pub(crate) fn plan_reverse_within(
    table: &MappingTable,
    infos: &[TensorInfo],
    bindings: &Bindings,
    limits: &Limits,
) -> Result<Plan> {
    let lookup: HashMap<&str, &TensorInfo> = infos.iter().map(|t| (t.name.as_str(), t)).collect();
    let names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
    let inst = instantiate(table, Direction::Reverse, &names, &lookup)?;

    // Every canonical tensor has a place in the layout.
    if let Some(left) = infos.iter().find(|t| !inst.consumed.contains_key(&t.name)) {
        return Err(mapping_err(
            table,
            0,
            MappingError::NoPlace {
                layout: table.id.clone(),
                tensor: left.name.clone(),
            },
        ));
    }

    let layers = check_coverage(table, Direction::Reverse, &inst)?;

    let mut budget = OutputBudget::new(infos.iter().map(TensorInfo::byte_len), limits);
    let targets = resolve_targets(table, Direction::Reverse, &inst.list, bindings, &mut budget)?;

    Ok(Plan {
        targets,
        bindings: bindings.clone(),
        report: MappingReport {
            table: table.id.clone(),
            table_file: table.file.clone(),
            table_hash: table.hash.clone(),
            consumed: inst.consumed.len(),
            layers,
            ..MappingReport::default()
        },
        buffers: Vec::new(),
    })
}
