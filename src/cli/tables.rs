//! `vit-convert tables`: the built-in mapping tables, one table's TOML, or a check of a custom one.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use vit_convert::text::{escape, Escaped};
use vit_convert::MappingTable;

use super::{Ui, EXIT_OK};

#[derive(Args)]
pub struct TablesArgs {
    /// Print one built-in table's TOML (by id), e.g. to start a custom table from it.
    #[arg(long, value_name = "ID", conflicts_with = "check")]
    pub show: Option<String>,
    /// Parse and validate a custom table file (what `convert --table` would use).
    #[arg(long, value_name = "FILE.toml")]
    pub check: Option<PathBuf>,
}

/// One table, as listed.
#[derive(Serialize)]
struct Listed<'a> {
    id: &'a str,
    families: &'a [String],
    description: &'a str,
    file: &'a str,
    rules: usize,
    sha256: &'a str,
}

impl<'a> From<&'a MappingTable> for Listed<'a> {
    fn from(t: &'a MappingTable) -> Self {
        Listed {
            id: t.id(),
            families: t.families(),
            description: t.description(),
            file: t.file(),
            rules: t.rule_count(),
            sha256: t.hash(),
        }
    }
}

pub fn run(a: TablesArgs, ui: Ui) -> anyhow::Result<i32> {
    let mut out = ui.text();
    if let Some(id) = &a.show {
        let t = MappingTable::builtin(id)?;
        ui.json(&serde_json::json!({
            "id": t.id(),
            "file": t.file(),
            "sha256": t.hash(),
            "text": t.text(),
        }))?;
        out.write_all(t.text().as_bytes())?;
        return Ok(EXIT_OK);
    }
    if let Some(path) = &a.check {
        let text = vit_convert::mapping::read_table_file(path, &ui.open.limits)?;
        let t = MappingTable::from_toml(&text, &path.display().to_string())?;
        ui.json(&Listed::from(&t))?;
        writeln!(
            out,
            "{}: table `{}` ({}), {} rules: ok",
            Escaped(path.display()),
            Escaped(t.id()),
            Escaped(t.families().join(", ")),
            t.rule_count()
        )?;
        return Ok(EXIT_OK);
    }
    let tables = MappingTable::builtins()?;
    let listed: Vec<Listed> = tables.iter().map(Listed::from).collect();
    ui.json(&listed)?;
    let w_id = listed.iter().map(|t| t.id.len()).max().unwrap_or(2).max(2);
    let fams: Vec<String> = listed.iter().map(|t| t.families.join(",")).collect();
    let w_f = fams.iter().map(String::len).max().unwrap_or(8).max(8);
    writeln!(out, "{:<w_id$}  {:<w_f$}  description", "id", "families")?;
    for (t, f) in listed.iter().zip(&fams) {
        writeln!(
            out,
            "{:<w_id$}  {:<w_f$}  {}",
            escape(t.id),
            escape(f),
            Escaped(t.description)
        )?;
    }
    if ui.verbose > 0 {
        for t in &listed {
            writeln!(
                out,
                "{}: {} ({} rules, sha256 {})",
                Escaped(t.id),
                Escaped(t.file),
                t.rules,
                t.sha256
            )?;
        }
    }
    Ok(EXIT_OK)
}
