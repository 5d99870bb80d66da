//! Planning canonical → source layout by running the table's rules backwards.

use std::collections::HashMap;

use super::budget::OutputBudget;
use super::dims::Bindings;
use super::mapping_err;
use super::ops::Op;
use super::plan::{
    check_coverage, instantiate, resolve_ops, resolve_targets, Direction, Instance, Plan,
};
use super::report::MappingReport;
use super::schema::MappingTable;
use crate::error::Result;
use crate::source::Limits;
use crate::tensor::TensorInfo;
use crate::vocab::MappingError;

/// The reverse of one instance: the rule's source shape from `bindings`, traced forward through
/// its ops and checked against the canonical inputs; returns the inverse ops, the shapes after
/// each of them (the last are the outputs) and the outputs (the rule's `from` names).
#[allow(clippy::type_complexity)]
pub(super) fn reverse_stages(
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
