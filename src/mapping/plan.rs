//! The planning steps forward and reverse share: instantiating the rules over a listing,
//! checking that the instances cover the table, and resolving the targets they produce (in
//! reverse, by tracing each rule's source shape forward and inverting its ops).

use std::collections::{BTreeSet, HashMap};

use super::budget::OutputBudget;
use super::dims::Bindings;
use super::index::PatternIndex;
use super::mapping_err;
use super::ops::Op;
use super::pattern::Pattern;
use super::report::MappingReport;
use super::schema::{BufferKind, MappingTable, Rule};
use crate::error::Result;
use crate::tensor::{DType, TensorInfo};
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

/// Which way a plan runs a table: forward reads each rule's `from` names and writes its `to`
/// names; reverse the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
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
pub(super) struct Instance<'r> {
    pub(super) rule: &'r Rule,
    pub(super) index: Option<usize>,
    /// Input infos, each with the name the table knows it by (after prefix stripping).
    pub(super) inputs: Vec<(String, TensorInfo)>,
}

/// Every rule instantiated over a listing.
pub(super) struct Instances<'r> {
    /// In rule-then-name order.
    pub(super) list: Vec<Instance<'r>>,
    /// For each rule (by position), the positions in `list` of its instances.
    pub(super) by_rule: Vec<Vec<usize>>,
    /// Consumed input names → the line of the rule that consumed them.
    pub(super) consumed: HashMap<String, usize>,
}

/// Instantiates the rules over `names` (the names the table sees, in listing order), rule by rule
/// and name by name (the order fixes which error comes first): every input a rule reads must be
/// in `lookup`, and no input may be read twice.
pub(super) fn instantiate<'r>(
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
pub(super) fn check_coverage(
    table: &MappingTable,
    dir: Direction,
    inst: &Instances,
) -> Result<usize> {
    // Layers: contiguous indices, every required per-layer rule present in each layer.
    let layers = check_layers(table, dir, &inst.list, &inst.by_rule)?;

    // Required non-indexed rules.
    for (rule, mine) in table.rules.iter().zip(&inst.by_rule) {
        if rule.optional || rule.is_indexed() || !mine.is_empty() {
            continue;
        }
        let tensor = dir.first_input(rule, None);
        let problem = match (dir, &rule.absent) {
            (Direction::Forward, Some(feature)) => MappingError::Absent {
                feature: feature.clone(),
                tensor,
            },
            (Direction::Forward, None) => MappingError::RequiredMissing { tensor },
            (Direction::Reverse, _) => MappingError::CanonicalMissing { tensor },
        };
        return Err(mapping_err(table, rule.line, problem));
    }
    Ok(layers)
}

/// Resolves every instance's ops against `bindings` and computes the targets it produces, with
/// their shapes and dtype; the bytes they make are budgeted before anything is read. A target
/// produced twice is an error.
pub(super) fn resolve_targets(
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
            budget.add(table, rule.line, &name, &shape, dtype)?;
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
    if rule.any_shape {
        // A one-to-one rename: the source has the canonical tensor's shape.
        let (_, t) = ins.inputs.first().ok_or_else(|| {
            mapping_err(
                table,
                rule.line,
                MappingError::Op {
                    reason: "a rename without its input".into(),
                },
            )
        })?;
        let name = rule
            .from
            .first()
            .map(|p| p.render(ins.index))
            .unwrap_or_default();
        return Ok((Vec::new(), Vec::new(), vec![(name, t.shape.clone())]));
    }
    // Forward trace from the sources' symbolic shapes.
    let src_shapes = rule
        .shapes
        .iter()
        .map(|shape| {
            shape
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
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let fwd = resolve_ops(table, rule, bindings)?;
    let mut stage_inputs: Vec<Vec<Vec<usize>>> = Vec::new();
    let mut shapes = src_shapes.clone();
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
        .zip(src_shapes)
        .map(|(p, shape)| (p.render(ins.index), shape))
        .collect();
    Ok((inv, stage_inputs, outputs))
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
