//! `vit-convert inspect`.

use std::io::Write;
use std::path::Path;

use vit_convert::inspect::Inspection;
use vit_convert::text::{escape, Escaped};

use super::{Ui, EXIT_OK};

pub fn run(file: &Path, ui: Ui) -> anyhow::Result<i32> {
    let info = vit_convert::inspect::inspect_with(file, &ui.open)?;
    ui.json(&info)?;
    print_table(&mut ui.text(), file, &info)?;
    Ok(EXIT_OK)
}

/// Widest the name column is padded to: longer names (a file's names can be megabytes long)
/// are printed whole and shift their row. `std::fmt` also panics on widths over `u16::MAX`.
const MAX_NAME_COLUMN: usize = 96;

fn print_table(out: &mut dyn Write, file: &Path, info: &Inspection) -> std::io::Result<()> {
    writeln!(out, "{}: {}", Escaped(file.display()), info.format.name())?;
    let width = info
        .tensors
        .iter()
        .map(|t| escape(&t.name).len())
        .max()
        .unwrap_or(4)
        .clamp(4, MAX_NAME_COLUMN);
    writeln!(
        out,
        "{:<width$}  {:<5}  {:<20}  {:>12}",
        "name", "dtype", "shape", "bytes"
    )?;
    for t in &info.tensors {
        let shape = format!("{:?}", t.shape);
        writeln!(
            out,
            "{:<width$}  {:<5}  {:<20}  {:>12}",
            escape(&t.name),
            t.dtype,
            shape,
            t.bytes
        )?;
    }
    writeln!(
        out,
        "{} tensors, {} parameters, {} bytes",
        info.tensors.len(),
        info.parameters,
        info.bytes
    )?;
    for (k, v) in &info.metadata {
        writeln!(out, "metadata {}: {}", Escaped(k), Escaped(v))?;
    }
    for n in &info.notes {
        writeln!(out, "note: {}", Escaped(n))?;
    }
    Ok(())
}
