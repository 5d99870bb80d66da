//! `vit-convert convert` (also the default command: `vit-convert --from timm in.pth -o out/`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use vit_convert::conversion::OutputFormat;
use vit_convert::labels::Labels;
use vit_convert::mapping::Branch;
use vit_convert::model::Activation;
use vit_convert::text::Escaped;
use vit_convert::ConfigOverrides;
use vit_convert::{ConvertOptions, DType, MappingTable};

use super::progress::Bar;
use super::{branches, families, family_of, with_flags, Ui, EXIT_OK};

#[derive(Args)]
pub struct ConvertArgs {
    /// The checkpoint to convert (.pth/.pt/.bin/.ckpt, .npz, .safetensors, flax_model.msgpack).
    pub input: PathBuf,
    /// Output folder (created): model.safetensors, config.json, preprocessor_config.json.
    #[arg(short = 'o', long = "output", value_name = "OUTDIR")]
    pub output: PathBuf,
    /// Source family (auto: detected from tensor names). Not with --table.
    #[arg(long, default_value = "auto", value_parser = families(), conflicts_with = "table")]
    pub from: String,
    /// Output layout: safetensors (canonical HF), timm (timm-layout safetensors), npz (JAX layout),
    /// flax (HF Flax flax_model.msgpack).
    #[arg(long, default_value = "safetensors", value_parser = ["safetensors", "timm", "npz", "flax"])]
    pub to: String,
    /// Number of attention heads (when the checkpoint does not record it).
    #[arg(long, value_name = "N")]
    pub num_heads: Option<usize>,
    /// A JSON file whose fields override the inferred config.json fields.
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
    /// Convert floating-point weights: keep, f32, f16, bf16.
    #[arg(long, default_value = "keep", value_parser = ["keep", "f32", "f16", "bf16"])]
    pub dtype: String,
    /// With --dtype: accept a cast that turns finite values into ±Inf (torch's .half() behaviour;
    /// the summary notes how many saturated). Without it such a cast is refused.
    #[arg(long)]
    pub allow_overflow: bool,
    /// Convert the backbone alone: `--drop head` drops the head (classifier, distillation head,
    /// masked-image-modelling head), writes the family's headless class and lists what it dropped.
    #[arg(long, value_name = "PART", value_parser = ["head"])]
    pub drop: Option<String>,
    /// DINO training checkpoints: which network to convert.
    #[arg(long, value_parser = branches())]
    pub branch: Option<Branch>,
    /// A custom mapping table (TOML) instead of the built-in ones.
    #[arg(long, value_name = "FILE.toml")]
    pub table: Option<PathBuf>,
    /// Class names for config.json's id2label: imagenet-1k, imagenet-21k (Google's 21 843),
    /// imagenet-22k (BEiT's 21 841), none (LABEL_n), or a FILE (JSON id2label, or one name a line;
    /// a file named like a list: ./NAME).
    /// Default: the bundled list the head's class count matches, if the family trains on it.
    #[arg(long, value_name = "LIST|FILE", default_value = "auto")]
    pub labels: String,
    /// Override the activation written to config.json.
    #[arg(long, value_parser = PossibleValuesParser::new(Activation::names()).try_map(|s| s.parse::<Activation>()))]
    pub hidden_act: Option<Activation>,
}

pub fn run(a: ConvertArgs, ui: Ui) -> anyhow::Result<i32> {
    // The checkpoint, `--config` and `--table` are inputs: no output may replace one of them.
    let to = OutputFormat::parse(&a.to).unwrap_or_default();
    let outputs = to.output_files(&a.output);
    let labels = Labels::from_name(&a.labels);
    let labels_file = labels.is_none().then(|| PathBuf::from(&a.labels));
    let inputs: Vec<&std::path::Path> = std::iter::once(&a.input)
        .chain(&a.config)
        .chain(&a.table)
        .chain(&labels_file)
        .map(PathBuf::as_path)
        .collect();
    let outputs: Vec<&std::path::Path> = outputs.iter().map(PathBuf::as_path).collect();
    vit_convert::write::check_outputs(&outputs, &inputs)?;
    let table = match &a.table {
        Some(p) => {
            let text = vit_convert::mapping::read_table_file(p, &ui.open.limits)?;
            Some(MappingTable::from_toml(&text, &p.display().to_string())?)
        }
        None => None,
    };
    let config = match &a.config {
        Some(p) => {
            let text = vit_convert::model::read_config_file(p, &ui.open.limits)?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", p.display()))?;
            match v {
                serde_json::Value::Object(m) => Some(m),
                _ => anyhow::bail!("{}: --config must hold a JSON object", p.display()),
            }
        }
        None => None,
    };
    let labels = match labels {
        Some(l) => l,
        None => Labels::Custom(vit_convert::labels::read_labels_file(
            &a.labels,
            &ui.open.limits,
        )?),
    };
    let opts = ConvertOptions {
        from: family_of(&a.from)?,
        table,
        to,
        dtype: match a.dtype.as_str() {
            "f32" => Some(DType::F32),
            "f16" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            _ => None,
        },
        allow_overflow: a.allow_overflow,
        drop_head: a.drop.is_some(),
        branch: a.branch,
        overrides: ConfigOverrides {
            num_heads: a.num_heads,
            hidden_act: a.hidden_act,
            config,
        },
        labels,
        open: ui.open,
        fsync: ui.fsync,
    };
    let started = std::time::Instant::now();
    let report = {
        let bar = Bar::for_convert(ui);
        vit_convert::conversion::convert_with_progress(&a.input, &a.output, &opts, &bar)?
    };
    ui.detail(format_args!(
        "converted in {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    ui.json(&report)?;
    let mut out = ui.text();
    let m = &report.mapping;
    writeln!(
        out,
        "{} ({}, table {}{}) → {}: {}, {} tensors, {} bytes",
        Escaped(a.input.display()),
        report.input_format,
        Escaped(&m.table),
        m.selected
            .as_ref()
            .map(|s| format!(", from `{}`", Escaped(s)))
            .unwrap_or_default(),
        Escaped(a.output.display()),
        report.architecture.name(),
        report.tensors,
        report.bytes
    )?;
    for n in &report.notes {
        writeln!(out, "note: {}", with_flags(&Escaped(n).to_string()))?;
    }
    for (n, why) in &report.dropped {
        writeln!(out, "dropped {}: {}", Escaped(n), Escaped(why))?;
    }
    let all = ui.verbose > 0;
    list_some(
        &mut out,
        &m.ignored,
        "ignored {} tensors the table drops",
        all,
    )?;
    list_some(
        &mut out,
        &m.not_selected,
        "left {} tensors outside the converted state dict",
        all,
    )?;
    for p in &report.outputs {
        writeln!(out, "wrote {}", Escaped(p.display()))?;
    }
    Ok(EXIT_OK)
}

/// `what` (with `{}` for the count), then the first name, or every name with `-v`.
fn list_some(out: &mut dyn Write, names: &[String], what: &str, all: bool) -> std::io::Result<()> {
    let Some(first) = names.first() else {
        return Ok(());
    };
    let head = what.replacen("{}", &names.len().to_string(), 1);
    if all {
        writeln!(out, "{head}:")?;
        for n in names {
            writeln!(out, "  {}", Escaped(n))?;
        }
    } else {
        writeln!(out, "{head} (e.g. {}; -v lists all)", Escaped(first))?;
    }
    Ok(())
}
