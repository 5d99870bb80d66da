//! The bytes a plan may make.

use super::schema::{MappingTable, Rule};
use crate::error::{Error, ErrorKind, Result};
use crate::source::Limits;
use crate::tensor::{checked_byte_len, DType};

/// The budget name of the bytes a table makes ([`Limits::table_output_allowance_bytes`]).
pub(crate) const OUTPUT_BUDGET: &str = "table output bytes";

/// The bytes a plan may make: no more than it reads plus
/// [`Limits::table_output_allowance_bytes`], in total and at every step of every rule. Ops move
/// bytes, so only `prepend_zeros` (a class-token row) ever needs the allowance; a table that
/// would turn a small file into a huge one is refused while planning, before anything is read.
pub(super) struct OutputBudget {
    allowance: usize,
    limit: usize,
    made: usize,
}

impl OutputBudget {
    pub(super) fn new(inputs: impl Iterator<Item = usize>, limits: &Limits) -> Self {
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
        line: usize,
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
        .with_tensor(format!("{name} (rule {}:{line})", table.file))
    }

    /// Every step of one rule instance stays within what it reads plus the allowance.
    pub(super) fn check_stages(
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
                return Err(Self::exceeded(table, rule.line, name, limit, bytes));
            }
        }
        Ok(())
    }

    /// Counts one planned tensor, made by the table entry at `line`, against the plan's total.
    pub(super) fn add(
        &mut self,
        table: &MappingTable,
        line: usize,
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
            _ => Err(Self::exceeded(table, line, name, self.limit, bytes)),
        }
    }
}
