//! Planning canonical → source layout by running the table's rules backwards.

use std::collections::HashMap;

use super::budget::OutputBudget;
use super::dims::show_shape;
use super::dims::Bindings;
use super::mapping_err;
use super::plan::{check_coverage, instantiate, resolve_targets, Direction, Plan, PlannedTensor};
use super::report::MappingReport;
use super::schema::{Layout, MappingTable};
use crate::error::Result;
use crate::source::Limits;
use crate::tensor::TensorInfo;
use crate::vocab::MappingError;

/// Plans canonical → source layout by running the table's rules backwards. `bindings` must bind
/// every symbol the table's shapes use (see `model::symbol_bindings`).
#[cfg(test)]
pub(crate) fn plan_reverse(
    table: &MappingTable,
    infos: &[TensorInfo],
    bindings: &Bindings,
) -> Result<Plan> {
    plan_reverse_within(table, None, infos, bindings, &Limits::DEFAULT)
}

/// [`plan_reverse`] within `limits` ([`Limits::table_output_allowance_bytes`]), writing `layout`
/// (one of the table's `[[table.layouts]]`: its rules and the untagged ones, the `zeros` buffers
/// it writes beside a name, and its write prefix) or, with `None`, every rule.
pub(crate) fn plan_reverse_within(
    table: &MappingTable,
    layout: Option<&Layout>,
    infos: &[TensorInfo],
    bindings: &Bindings,
    limits: &Limits,
) -> Result<Plan> {
    let restricted;
    let table = match layout {
        Some(l) => {
            restricted = table.restricted_to(&l.name);
            &restricted
        }
        None => table,
    };
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
    let mut targets =
        resolve_targets(table, Direction::Reverse, &inst.list, bindings, &mut budget)?;
    for b in &table.buffers {
        let Some(w) = &b.written else { continue };
        let Some(beside) = targets.iter().find(|t| t.info.name == w.beside) else {
            continue;
        };
        let shape = w
            .shape
            .iter()
            .map(|d| d.eval(bindings))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                mapping_err(
                    table,
                    b.line,
                    MappingError::UnboundDimension {
                        dim: show_shape(&w.shape),
                        tensor: None,
                    },
                )
            })?;
        let info = TensorInfo {
            name: b.pattern.render(None),
            dtype: beside.info.dtype,
            shape,
        };
        if targets.iter().any(|t| t.info.name == info.name) {
            // A rule writes that name too (reverse: the rules' `from` names are the targets).
            let also_line = table
                .rules
                .iter()
                .find(|r| r.from.iter().any(|p| p.matches(&info.name).is_some()))
                .map_or(b.line, |r| r.line);
            return Err(mapping_err(
                table,
                b.line,
                MappingError::ProducedTwice {
                    target: info.name,
                    also_line,
                },
            ));
        }
        budget.add(table, b.line, &info.name, &info.shape, info.dtype)?;
        targets.push(PlannedTensor {
            info,
            sources: Vec::new(),
            ops: Vec::new(),
            output: 0,
        });
    }
    if let Some(prefix) = layout
        .map(|l| l.write_prefix.as_str())
        .filter(|p| !p.is_empty())
    {
        for t in &mut targets {
            t.info.name.insert_str(0, prefix);
        }
    }

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
