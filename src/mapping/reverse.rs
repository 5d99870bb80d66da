//! Planning canonical → source layout by running the table's rules backwards.

use std::collections::HashMap;

use super::budget::OutputBudget;
use super::dims::Bindings;
use super::mapping_err;
use super::plan::{check_coverage, instantiate, resolve_targets, Direction, Plan};
use super::report::MappingReport;
use super::schema::MappingTable;
use crate::error::Result;
use crate::source::Limits;
use crate::tensor::TensorInfo;
use crate::vocab::MappingError;

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
