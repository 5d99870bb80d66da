//! Planning source layout → canonical: the view, the table's rejects, every source tensor
//! consumed or ignored, shapes bound, then the shared steps.

use std::collections::HashMap;

use super::bind::bind_shapes;
use super::budget::OutputBudget;
use super::mapping_err;
use super::names::Branch;
use super::plan::{check_coverage, instantiate, resolve_targets, Direction, Plan};
use super::report::MappingReport;
use super::schema::MappingTable;
use super::view::select_view;
use crate::error::Result;
use crate::source::Limits;
use crate::tensor::TensorInfo;
use crate::vocab::MappingError;

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
        if table.index.ignore.any_match(s) || table.ignore_names.iter().any(|n| n == s) {
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
