//! Whether a table's detection signature fits a checkpoint.

use super::schema::MappingTable;
use super::view::View;

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
