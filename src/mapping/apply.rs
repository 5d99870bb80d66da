//! Running a [`MappingTable`] over a tensor listing: forward (source layout → canonical) and
//! reverse (canonical → source layout). Planning reads names and shapes only; tensor data is
//! read later, one tensor at a time, by [`PlannedSource`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::dims::{show_shape, Bindings};
use super::ops::Op;
use super::schema::{MappingTable, Rule};
use crate::error::{Error, ErrorKind, Result};
use crate::tensor::{DType, TensorInfo};

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
}

fn mapping_err(table: &MappingTable, line: usize, reason: String) -> Error {
    ErrorKind::Mapping {
        file: table.file.clone(),
        line,
        reason,
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
    branch: Option<&str>,
) -> Result<View> {
    let has = |w: &str| {
        let p = format!("{w}/");
        names.iter().any(|n| n.starts_with(&p))
    };
    let present_branches: Vec<&String> = table.branches.iter().filter(|b| has(b)).collect();
    let selected: Option<String> = if !present_branches.is_empty() {
        match branch {
            Some(b) if table.branches.iter().any(|x| x == b) => {
                if !has(b) {
                    return Err(ErrorKind::InvalidOption {
                        reason: format!("branch `{b}` is not in this checkpoint"),
                    }
                    .into());
                }
                Some(b.to_string())
            }
            Some(b) => {
                return Err(ErrorKind::InvalidOption {
                    reason: format!(
                        "unknown branch `{b}` (this table knows: {})",
                        table.branches.join(", ")
                    ),
                }
                .into())
            }
            None => present_branches.first().map(|b| b.to_string()),
        }
    } else {
        if let Some(b) = branch {
            return Err(ErrorKind::InvalidOption {
                reason: format!("--branch {b} given, but the checkpoint has no branches"),
            }
            .into());
        }
        table.wrappers.iter().find(|w| has(w)).cloned()
    };
    let mut view = Vec::new();
    let mut not_selected = Vec::new();
    let mut seen = BTreeMap::new();
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
        let stripped = strip_prefixes(inner, &table.strip_prefixes);
        if let Some(prev) = seen.insert(stripped.to_string(), n.to_string()) {
            return Err(mapping_err(
                table,
                0,
                format!("{prev} and {n} both become {stripped} after stripping prefixes"),
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

fn strip_prefixes<'a>(mut name: &'a str, prefixes: &[String]) -> &'a str {
    'outer: loop {
        for p in prefixes {
            if let Some(rest) = name.strip_prefix(p.as_str()) {
                if !rest.is_empty() {
                    name = rest;
                    continue 'outer;
                }
            }
        }
        return name;
    }
}

/// True when the table's detection signature fits the view. A branch of the table's own
/// (DINO's `teacher`/`student`) is evidence enough to waive the `none` list.
pub(crate) fn detect(table: &MappingTable, view: &View) -> bool {
    let has = |n: &String| view.names.iter().any(|(s, _)| s == n);
    let own_branch = view
        .selected
        .as_ref()
        .is_some_and(|b| table.branches.contains(b));
    !view.names.is_empty()
        && table.detect.all.iter().all(has)
        && (table.detect.any.is_empty() || table.detect.any.iter().any(has))
        && (own_branch || !table.detect.none.iter().any(has))
}

struct Instance<'r> {
    rule: &'r Rule,
    index: Option<usize>,
    /// Input infos (stripped name, original name, dtype, shape).
    inputs: Vec<(String, TensorInfo)>,
}

/// Plans source → canonical.
pub(crate) fn plan_forward(
    table: &MappingTable,
    infos: &[TensorInfo],
    branch: Option<&str>,
) -> Result<Plan> {
    let names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
    let view = select_view(table, &names, branch)?;
    let by_orig: BTreeMap<&str, &TensorInfo> = infos.iter().map(|t| (t.name.as_str(), t)).collect();
    let lookup: BTreeMap<&str, &str> = view
        .names
        .iter()
        .map(|(s, o)| (s.as_str(), o.as_str()))
        .collect();

    for (s, o) in &view.names {
        for r in &table.rejects {
            if r.matches(s) {
                return Err(ErrorKind::UnsupportedFeature {
                    feature: r.feature.clone(),
                    tensor: o.clone(),
                    rule: format!("{}:{}", table.file, r.line),
                }
                .into());
            }
        }
    }

    // Instantiate rules.
    let mut consumed: BTreeMap<String, usize> = BTreeMap::new();
    let mut instances: Vec<Instance> = Vec::new();
    for rule in &table.rules {
        for (s, _) in &view.names {
            let Some(index) = rule.from[0].matches(s) else {
                continue;
            };
            let mut inputs = Vec::new();
            for p in &rule.from {
                let want = p.render(index);
                let orig = lookup.get(want.as_str()).ok_or_else(|| {
                    mapping_err(
                        table,
                        rule.line,
                        format!("{s} needs {want}, which is missing"),
                    )
                })?;
                let info = by_orig.get(orig).ok_or_else(|| {
                    mapping_err(table, rule.line, format!("internal: {orig} vanished"))
                })?;
                if let Some(prev) = consumed.insert(want.clone(), rule.line) {
                    return Err(mapping_err(
                        table,
                        rule.line,
                        format!("{want} is consumed by two rules (also line {prev})"),
                    ));
                }
                inputs.push((want, (*info).clone()));
            }
            instances.push(Instance {
                rule,
                index,
                inputs,
            });
        }
    }

    // Every source tensor is consumed or ignored.
    let mut ignored = Vec::new();
    let mut unconsumed = Vec::new();
    for (s, o) in &view.names {
        if consumed.contains_key(s) {
            continue;
        }
        if table
            .ignore_prefixes
            .iter()
            .any(|p| s.starts_with(p.as_str()))
        {
            ignored.push(o.clone());
        } else {
            unconsumed.push(o.clone());
        }
    }
    if let Some(first) = unconsumed.first() {
        let more = if unconsumed.len() > 1 {
            format!(
                " (and {} more: {})",
                unconsumed.len() - 1,
                preview(&unconsumed[1..])
            )
        } else {
            String::new()
        };
        return Err(mapping_err(
            table,
            0,
            format!("no rule consumes source tensor {first}{more}"),
        ));
    }

    // Bind symbols and check shapes.
    let bindings = bind_shapes(table, &instances)?;

    // Layers: contiguous indices, every required per-layer rule present in each layer.
    let layers = check_layers(table, &instances)?;

    // Required non-indexed rules.
    for rule in &table.rules {
        if rule.optional || rule.is_indexed() {
            continue;
        }
        if !instances.iter().any(|ins| std::ptr::eq(ins.rule, rule)) {
            return Err(mapping_err(
                table,
                rule.line,
                format!("required source tensor {} is missing", rule.from[0]),
            ));
        }
    }

    // Resolve ops and targets.
    let mut targets = Vec::new();
    let mut produced: BTreeMap<String, usize> = BTreeMap::new();
    for ins in &instances {
        let rule = ins.rule;
        let ops = rule
            .ops
            .iter()
            .map(|o| {
                o.resolve(&bindings)
                    .map_err(|e| mapping_err(table, rule.line, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let shapes: Vec<Vec<usize>> = ins.inputs.iter().map(|(_, i)| i.shape.clone()).collect();
        let outs = trace(&ops, shapes).map_err(|e| mapping_err(table, rule.line, e))?;
        let dtype = common_dtype(table, rule, &ins.inputs)?;
        for (k, (pat, shape)) in rule.to.iter().zip(outs).enumerate() {
            let name = pat.render(ins.index);
            claim_target(table, rule, &mut produced, &name)?;
            targets.push(PlannedTensor {
                info: TensorInfo { name, dtype, shape },
                sources: ins.inputs.iter().map(|(_, i)| i.name.clone()).collect(),
                ops: ops.clone(),
                output: k,
            });
        }
    }

    Ok(Plan {
        targets,
        bindings,
        report: MappingReport {
            table: table.id.clone(),
            table_file: table.file.clone(),
            table_hash: table.hash.clone(),
            selected: view.selected,
            consumed: consumed.len(),
            ignored,
            not_selected: view.not_selected,
            layers,
        },
    })
}

/// Records that `rule` produces `name`; a second producer is an error naming both lines.
fn claim_target(
    table: &MappingTable,
    rule: &Rule,
    produced: &mut BTreeMap<String, usize>,
    name: &str,
) -> Result<()> {
    match produced.insert(name.to_string(), rule.line) {
        Some(prev) => Err(mapping_err(
            table,
            rule.line,
            format!("target {name} is produced twice (also line {prev})"),
        )),
        None => Ok(()),
    }
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let tail = if names.len() > 4 { ", …" } else { "" };
    format!("{}{tail}", shown.join(", "))
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
            format!("{n} is {} but {} is {first}", i.dtype, inputs[0].0),
        ));
    }
    Ok(first)
}

/// Applies ops to shapes; returns the final output shapes.
fn trace(ops: &[Op], mut shapes: Vec<Vec<usize>>) -> std::result::Result<Vec<Vec<usize>>, String> {
    for op in ops {
        shapes = op.out_shapes(&shapes)?;
    }
    if ops.is_empty() && shapes.len() != 1 {
        return Err("several inputs need concat".into());
    }
    Ok(shapes)
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
    // Bind to a fixpoint.
    loop {
        let mut progress = false;
        for ins in instances {
            for (n, info) in &ins.inputs {
                for (d, &actual) in ins.rule.shape.iter().zip(&info.shape) {
                    match d.solve(actual, &mut b) {
                        Ok(bound) => progress |= bound,
                        Err(()) => return Err(shape_err(table, ins.rule, n, &info.shape)),
                    }
                }
            }
        }
        if !progress {
            break;
        }
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
                            format!("cannot determine dimension `{d}` of {n}"),
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
        format!(
            "{name} has shape {actual:?}, which contradicts the table's {}",
            show_shape(&rule.shape)
        ),
    )
}

fn check_layers(table: &MappingTable, instances: &[Instance]) -> Result<usize> {
    let indices: BTreeSet<usize> = instances.iter().filter_map(|i| i.index).collect();
    let layers = match indices.last() {
        Some(&max) => max + 1,
        None => 0,
    };
    if let Some(missing) = (0..layers).find(|i| !indices.contains(i)) {
        return Err(mapping_err(
            table,
            0,
            format!(
                "layer indices have a gap: layer {missing} is missing (found up to {})",
                layers - 1
            ),
        ));
    }
    for rule in table.rules.iter().filter(|r| r.is_indexed()) {
        let have: BTreeSet<usize> = instances
            .iter()
            .filter(|i| std::ptr::eq(i.rule, rule))
            .filter_map(|i| i.index)
            .collect();
        if rule.optional && have.is_empty() {
            continue;
        }
        if let Some(i) = (0..layers).find(|i| !have.contains(i)) {
            return Err(mapping_err(
                table,
                rule.line,
                format!("source tensor {} is missing", rule.from[0].render(Some(i))),
            ));
        }
    }
    Ok(layers)
}

/// Plans canonical → source layout by running the table's rules backwards. `bindings` must bind
/// every symbol the table's shapes use (see `model::symbol_bindings`).
pub(crate) fn plan_reverse(
    table: &MappingTable,
    infos: &[TensorInfo],
    bindings: &Bindings,
) -> Result<Plan> {
    let by_name: BTreeMap<&str, &TensorInfo> = infos.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    let mut targets = Vec::new();
    let mut produced: BTreeMap<String, usize> = BTreeMap::new();
    let mut layers = 0;
    for rule in &table.rules {
        let mut found_any = false;
        for info in infos {
            let Some(index) = rule.to[0].matches(&info.name) else {
                continue;
            };
            found_any = true;
            if let Some(i) = index {
                layers = layers.max(i + 1);
            }
            let mut inputs = Vec::new();
            for p in &rule.to {
                let want = p.render(index);
                let t = by_name.get(want.as_str()).ok_or_else(|| {
                    mapping_err(
                        table,
                        rule.line,
                        format!("{} needs {want}, which is missing", info.name),
                    )
                })?;
                if !consumed.insert(want.clone()) {
                    return Err(mapping_err(
                        table,
                        rule.line,
                        format!("{want} is consumed twice"),
                    ));
                }
                inputs.push((*t).clone());
            }
            // Forward trace from the source's symbolic shape.
            let src_shape = rule
                .shape
                .iter()
                .map(|d| {
                    d.eval(bindings).ok_or_else(|| {
                        mapping_err(
                            table,
                            rule.line,
                            format!("dimension `{d}` is not known for the reverse direction"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let fwd = rule
                .ops
                .iter()
                .map(|o| {
                    o.resolve(bindings)
                        .map_err(|e| mapping_err(table, rule.line, e))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut stage_inputs: Vec<Vec<Vec<usize>>> = Vec::new();
            let mut shapes = vec![src_shape.clone(); rule.from.len()];
            for op in &fwd {
                stage_inputs.push(shapes.clone());
                shapes = op
                    .out_shapes(&shapes)
                    .map_err(|e| mapping_err(table, rule.line, e))?;
            }
            for (t, s) in inputs.iter().zip(&shapes) {
                if &t.shape != s {
                    return Err(mapping_err(
                        table,
                        rule.line,
                        format!("{} has shape {:?}, expected {s:?}", t.name, t.shape),
                    ));
                }
            }
            let inv: Vec<Op> = fwd
                .iter()
                .zip(&stage_inputs)
                .rev()
                .map(|(op, ins)| op.inverse(ins))
                .collect();
            let dtype = inputs[0].dtype;
            if inputs.iter().any(|t| t.dtype != dtype) {
                return Err(mapping_err(
                    table,
                    rule.line,
                    "inputs have different dtypes".into(),
                ));
            }
            for (k, p) in rule.from.iter().enumerate() {
                let name = p.render(index);
                claim_target(table, rule, &mut produced, &name)?;
                targets.push(PlannedTensor {
                    info: TensorInfo {
                        name,
                        dtype,
                        shape: src_shape.clone(),
                    },
                    sources: inputs.iter().map(|t| t.name.clone()).collect(),
                    ops: inv.clone(),
                    output: k,
                });
            }
        }
        if !found_any && !rule.optional && !rule.is_indexed() {
            return Err(mapping_err(
                table,
                rule.line,
                format!("canonical tensor {} is missing", rule.to[0]),
            ));
        }
    }
    if let Some(left) = infos.iter().find(|t| !consumed.contains(&t.name)) {
        return Err(mapping_err(
            table,
            0,
            format!("the {} layout has no place for {}", table.id, left.name),
        ));
    }
    Ok(Plan {
        targets,
        bindings: bindings.clone(),
        report: MappingReport {
            table: table.id.clone(),
            table_file: table.file.clone(),
            table_hash: table.hash.clone(),
            consumed: consumed.len(),
            layers,
            ..MappingReport::default()
        },
    })
}
