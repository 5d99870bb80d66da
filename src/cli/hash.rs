//! `vit-convert hash` and `vit-convert diff`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use vit_convert::diff::DiffOptions;
use vit_convert::hash::{Names, ReadAs, Reading};
use vit_convert::mapping::Branch;
use vit_convert::text::Escaped;
use vit_convert::{MappingTable, Tolerance};

use super::{branches, families, family_of, parse_tolerance, Ui, EXIT_MISMATCH, EXIT_OK};

#[derive(Args)]
pub struct HashArgs {
    /// The checkpoint.
    pub file: PathBuf,
    /// Hash the canonical tensors this family's table makes (auto: detect) instead of the
    /// tensors as stored.
    #[arg(long, value_parser = families(), conflicts_with = "table")]
    pub from: Option<String>,
    /// Hash the canonical tensors a custom mapping table makes.
    #[arg(long, value_name = "FILE.toml")]
    pub table: Option<PathBuf>,
    /// Checkpoints with branches (DINO training checkpoints): which network.
    #[arg(long, value_parser = branches())]
    pub branch: Option<Branch>,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The first checkpoint (A).
    pub a: PathBuf,
    /// The second checkpoint (B).
    pub b: PathBuf,
    /// Compare canonical tensors: read both sides through this family's table (auto: detect
    /// each side's family). Without it, the tensors are compared as stored.
    #[arg(long, value_parser = families(), conflicts_with = "table")]
    pub from: Option<String>,
    /// Read B through this family's table instead (default: as --from says).
    #[arg(long, value_parser = families())]
    pub from_b: Option<String>,
    /// Read both sides (B: unless --from-b) through a custom mapping table.
    #[arg(long, value_name = "FILE.toml")]
    pub table: Option<PathBuf>,
    /// Branch of A (DINO training checkpoints).
    #[arg(long, value_parser = branches())]
    pub branch: Option<Branch>,
    /// Branch of B.
    #[arg(long, value_parser = branches())]
    pub branch_b: Option<Branch>,
    /// Accept value differences up to atol + rtol * max |A| per tensor (and dtype changes).
    #[arg(long, value_parser = parse_tolerance)]
    pub atol: Option<f64>,
    /// See --atol.
    #[arg(long, value_parser = parse_tolerance)]
    pub rtol: Option<f64>,
}

fn read_table(path: &Option<PathBuf>, ui: Ui) -> anyhow::Result<Option<MappingTable>> {
    let Some(p) = path else {
        return Ok(None);
    };
    Ok(Some(MappingTable::from_file_with(p, &ui.open.limits)?))
}

/// What `--from` (a family or `auto`) and `--table` ask for; neither: the tensors as stored.
fn names(from: Option<&str>, table: Option<MappingTable>) -> anyhow::Result<Names> {
    Ok(match (table, from) {
        (Some(t), _) => Names::Table(Box::new(t)),
        (None, None) => Names::Stored,
        (None, Some(f)) => family_of(f)?.map_or(Names::Auto, Names::Family),
    })
}

fn describe(r: &Reading) -> String {
    let how = match &r.table {
        Some(t) => format!(
            "canonical tensors via table {t}{}",
            r.selected
                .as_ref()
                .map(|s| format!(", from `{s}`"))
                .unwrap_or_default()
        ),
        None => "tensors as stored".to_string(),
    };
    Escaped(format_args!(
        "{} ({}, {how})",
        r.file
            .as_deref()
            .unwrap_or(std::path::Path::new("-"))
            .display(),
        r.format.name()
    ))
    .to_string()
}

pub fn hash(a: HashArgs, ui: Ui) -> anyhow::Result<i32> {
    let how = ReadAs {
        names: names(a.from.as_deref(), read_table(&a.table, ui)?)?,
        branch: a.branch,
        open: ui.open,
    };
    let r = vit_convert::hash::hash(&a.file, &how)?;
    ui.detail(format_args!("{}", describe(&r.reading)));
    for (n, why) in &r.reading.dropped {
        ui.detail(format_args!("left out {}: {}", Escaped(n), Escaped(why)));
    }
    ui.json(&r)?;
    let mut out = ui.text();
    out.write_all(r.manifest().as_bytes())?;
    writeln!(out, "{} model ({} tensors)", r.digest, r.tensors.len())?;
    Ok(EXIT_OK)
}

pub fn diff(a: DiffArgs, ui: Ui) -> anyhow::Result<i32> {
    let table = read_table(&a.table, ui)?;
    let side_a = ReadAs {
        names: names(a.from.as_deref(), table.clone())?,
        branch: a.branch,
        open: ui.open,
    };
    let side_b = ReadAs {
        names: match a.from_b {
            Some(f) => names(Some(&f), None)?,
            None => names(a.from.as_deref(), table)?,
        },
        branch: a.branch_b,
        open: ui.open,
    };
    let tolerance = (a.atol.is_some() || a.rtol.is_some()).then(|| Tolerance {
        atol: a.atol.unwrap_or(0.0),
        rtol: a.rtol.unwrap_or(0.0),
    });
    let opts = DiffOptions {
        a: side_a,
        b: side_b,
        tolerance,
    };
    let r = vit_convert::diff::diff(&a.a, &a.b, &opts)?;
    ui.json(&r)?;
    let mut out = ui.text();
    writeln!(out, "A: {}", describe(&r.a))?;
    writeln!(out, "B: {}", describe(&r.b))?;
    for n in &r.only_in_a {
        writeln!(out, "only in A: {}", Escaped(n))?;
    }
    for n in &r.only_in_b {
        writeln!(out, "only in B: {}", Escaped(n))?;
    }
    for c in &r.changed {
        let mut line = format!("changed: {}", Escaped(&c.name));
        if c.dtype_a != c.dtype_b {
            line.push_str(&format!("  dtype {} → {}", c.dtype_a, c.dtype_b));
        }
        if c.shape_a != c.shape_b {
            line.push_str(&format!("  shape {:?} → {:?}", c.shape_a, c.shape_b));
        }
        if let (Some(abs), Some(rel)) = (c.max_abs, c.max_rel) {
            line.push_str(&format!("  max |Δ| {abs:.3e}  relative {rel:.3e}"));
        }
        if c.non_finite > 0 {
            line.push_str(&format!("  {} NaN/inf mismatches", c.non_finite));
        }
        if r.tolerance.is_some() && c.within_tolerance {
            line.push_str("  (within tolerance)");
        }
        writeln!(out, "{line}")?;
    }
    let verdict = if r.identical {
        "identical".to_string()
    } else if r.equivalent {
        "equivalent within the tolerance".to_string()
    } else {
        "differ".to_string()
    };
    writeln!(
        out,
        "{} common tensors ({} identical, {} changed), {} only in A, {} only in B: {verdict}",
        r.common,
        r.identical_tensors,
        r.changed.len(),
        r.only_in_a.len(),
        r.only_in_b.len()
    )?;
    if r.common == 0 && r.a.table.is_none() && r.b.table.is_none() {
        writeln!(
            out,
            "hint: no names in common; --from auto compares the canonical tensors of any two layouts"
        )?;
    }
    Ok(if r.identical || r.equivalent {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    })
}
