//! What a mapping did, for reports.

use serde::Serialize;

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
