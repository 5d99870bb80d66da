//! `vit-convert inspect`.

use std::io::Write;
use std::path::Path;

use vit_convert::Inspection;

use super::{Ui, EXIT_OK};

pub fn run(file: &Path, ui: Ui) -> anyhow::Result<i32> {
    let info = vit_convert::inspect(file)?;
    ui.json(&info)?;
    print_table(&mut ui.text(), file, &info)?;
    Ok(EXIT_OK)
}

fn print_table(out: &mut dyn Write, file: &Path, info: &Inspection) -> std::io::Result<()> {
    writeln!(out, "{}: {}", file.display(), info.format.name())?;
    let width = info
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
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
            t.name, t.dtype, shape, t.bytes
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
        writeln!(out, "metadata {k}: {v}")?;
    }
    for n in &info.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
