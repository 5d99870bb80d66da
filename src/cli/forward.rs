//! `vit-convert forward` and `vit-convert verify`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use vit_convert::forward::{ForwardOptions, Model, Output, PosInterp};
use vit_convert::text::Escaped;
use vit_convert::verify::{self, F32Array, Tolerance, DEFAULT_ATOL, DEFAULT_RTOL};

use super::progress::Bar;
use super::{parse_tolerance, Ui, EXIT_MISMATCH, EXIT_OK};

#[derive(Args)]
pub struct RunArgs {
    /// Folder with model.safetensors and config.json (as written by `convert`).
    pub model_dir: PathBuf,
    /// Input pixels: float32 .npy of shape [B, C, H, W].
    #[arg(long, required_unless_present = "image", conflicts_with = "image")]
    pub input: Option<PathBuf>,
    /// Input images (PNG/JPEG), preprocessed as the model folder's preprocessor_config.json says.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub image: Vec<PathBuf>,
    /// Accept inputs of another size than image_size, resampling the position embeddings.
    #[arg(long)]
    pub interpolate_pos_encoding: bool,
    /// Resampling algorithm: hf (current transformers) or dino (original DINO, +0.1 offset).
    /// DINOv2 always resamples by its own rule (antialiased with registers), as transformers does.
    #[arg(long, default_value = "hf", value_parser = ["hf", "dino"])]
    pub pos_interp: String,
    /// Threads for the forward pass (default: one per available core; at most 256).
    #[arg(long, env = "VIT_CONVERT_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Which output verify compares and forward --output writes: logits, pooler (the
    /// architecture's pooled output: ViT's dense+tanh, BEiT's mean+norm), last_hidden_state or
    /// image_embeds [default: logits when the model has a head, else last_hidden_state].
    #[arg(long, value_name = "WHICH", value_parser = parse_output)]
    pub compare: Option<Output>,
}

fn parse_output(s: &str) -> Result<Output, String> {
    s.parse::<Output>().map_err(|e| e.to_string())
}

impl RunArgs {
    /// The input batch: the .npy as given, or the images preprocessed for this model.
    fn input(&self, ui: Ui) -> anyhow::Result<F32Array> {
        match &self.input {
            Some(p) => Ok(F32Array::read_npy_with(p, &ui.open)?),
            None => {
                let path = self.model_dir.join("preprocessor_config.json");
                if !path.exists() {
                    anyhow::bail!("{}: not found (needed for --image)", path.display());
                }
                let text = vit_convert::model::read_config_file(&path, &ui.open.limits)?;
                let cfg: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(vit_convert::image::preprocess_with(
                    &self.image,
                    &cfg,
                    &ui.open.limits,
                )?)
            }
        }
    }

    fn load(&self, ui: Ui) -> anyhow::Result<Model> {
        let mut model = Model::load_with(&self.model_dir, &ui.open)?;
        if let Some(n) = self.threads {
            model.set_threads(n);
        }
        Ok(model)
    }

    /// The pass's options; `hidden_states`: whether `last_hidden_state` is written besides
    /// the compared output (else the last layer runs only for the tokens the heads read, when
    /// the compared output is one of theirs).
    fn options(&self, ui: Ui, model: &Model, hidden_states: bool) -> ForwardOptions {
        let compared_reads_heads = match self.compare {
            Some(Output::LastHiddenState) => false,
            Some(_) => true,
            None => model.config().architecture.has_head(),
        };
        ForwardOptions {
            interpolate_pos_encoding: self.interpolate_pos_encoding || self.pos_interp == "dino",
            pos_interp: if self.pos_interp == "dino" {
                PosInterp::Dino
            } else {
                PosInterp::Hf
            },
            limits: ui.open.limits,
            compare: self.compare,
            heads_only: compared_reads_heads && !hidden_states,
        }
    }
}

#[derive(Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Where to write the output --compare selects: logits ([B, K], or [B, N, V] for a
    /// masked-image-modelling head) for models with a head, else last_hidden_state [B, T, D].
    #[arg(long, required_unless_present = "top_k")]
    pub output: Option<PathBuf>,
    /// Print the N most likely labels (from config.json id2label) for each sample.
    #[arg(long, value_name = "N")]
    pub top_k: Option<usize>,
    /// Also write last_hidden_state [B, T, D].
    #[arg(long, value_name = "H.npy")]
    pub hidden_states: Option<PathBuf>,
    /// Also write the pooler output [B, R] (models with a pooler).
    #[arg(long, value_name = "P.npy")]
    pub pooled: Option<PathBuf>,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Expected output computed by the original framework (float .npy).
    #[arg(long)]
    pub expected: PathBuf,
    /// Absolute tolerance (a finite number >= 0) [default: 1e-5, or with neither --atol nor
    /// --rtol and f16/bf16 weights, widened to what their rounding costs: 1.953125e-3 / 1.5625e-2].
    #[arg(long, value_parser = parse_tolerance)]
    pub atol: Option<f64>,
    /// Tolerance relative to the largest expected magnitude (a finite number >= 0) [default:
    /// 1e-4, or as --atol says for f16/bf16 weights: 7.8125e-3 / 6.25e-2].
    #[arg(long, value_parser = parse_tolerance)]
    pub rtol: Option<f64>,
}

/// The progress bar for a forward pass over the model in `dir` (sized by its weights file).
fn forward_bar(ui: Ui, dir: &Path) -> Bar {
    let bytes = std::fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len());
    Bar::for_forward(ui, bytes)
}

/// What `forward --json` prints.
#[derive(serde::Serialize)]
struct ForwardReport {
    /// `logits`, `pooler`, `last_hidden_state` (what `--output` holds).
    output: &'static str,
    shape: Vec<usize>,
    #[serde(serialize_with = "vit_convert::text::serialize_paths_lossy")]
    written: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_k: Vec<TopK>,
}

/// The most likely classes of one sample.
#[derive(serde::Serialize)]
struct TopK {
    sample: String,
    classes: Vec<Class>,
}

#[derive(serde::Serialize)]
struct Class {
    index: usize,
    label: Option<String>,
    probability: f64,
    logit: f32,
}

/// Refuses `forward` outputs that would replace one of its inputs (the `--input` array, an
/// `--image`, a file of the model folder; by device and inode) or name one file twice.
fn check_forward_outputs(a: &ForwardArgs) -> anyhow::Result<()> {
    let outputs: Vec<&Path> = [&a.output, &a.hidden_states, &a.pooled]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
    let dir = &a.run.model_dir;
    let folder = [
        dir.join("config.json"),
        dir.join("model.safetensors"),
        dir.join("preprocessor_config.json"),
    ];
    let inputs: Vec<&Path> = a
        .run
        .input
        .iter()
        .chain(&a.run.image)
        .chain(&folder)
        .map(PathBuf::as_path)
        .collect();
    Ok(vit_convert::write::check_outputs(&outputs, &inputs)?)
}

/// The process exits next: the weights' mapping is left for the exit to tear down with the rest
/// of the address space (one pass, measured 6–10 ms faster for ViT-B's 346 MB than unmapping it
/// first, BENCHMARKS.md), not unmapped page range by page range when the model drops.
fn exit_keeping(model: Model) {
    std::mem::forget(model);
}

pub fn forward(a: ForwardArgs, ui: Ui) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    check_forward_outputs(&a)?;
    let model = a.run.load(ui)?;
    let input = a.run.input(ui)?;
    let out = {
        let bar = forward_bar(ui, &a.run.model_dir);
        let opts = a.run.options(ui, &model, a.hidden_states.is_some());
        model.forward_with_progress(input.as_nchw()?, &opts, &bar)?
    };
    ui.detail(format_args!(
        "forward pass on {:?} in {:.2} s",
        input.shape,
        started.elapsed().as_secs_f64()
    ));
    let top_k = match a.top_k {
        Some(k) => top_k(&model, &out, k, &a.run.image)?,
        None => Vec::new(),
    };
    let (which, shape, data) = out.select(a.run.compare)?;
    let mut report = ForwardReport {
        output: which.name(),
        shape: shape.clone(),
        written: Vec::new(),
        top_k,
    };
    // Every output is written before any is put in place: all of them, or none.
    let mut files: Vec<(&Path, Vec<u8>)> = Vec::new();
    if let Some(p) = &a.output {
        files.push((p, F32Array { shape, data }.to_npy()?));
    }
    if let Some(p) = &a.hidden_states {
        let h = &out.last_hidden_state;
        let array = F32Array {
            shape: h.shape().to_vec(),
            data: h.iter().copied().collect(),
        };
        files.push((p, array.to_npy()?));
    }
    if let Some(p) = &a.pooled {
        let pooled = out.pooler_output.as_ref().ok_or_else(|| {
            anyhow::anyhow!("{}: the model has no pooler", a.run.model_dir.display())
        })?;
        let array = F32Array {
            shape: pooled.shape().to_vec(),
            data: pooled.iter().copied().collect(),
        };
        files.push((p, array.to_npy()?));
    }
    let views: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    vit_convert::write::write_files(&views)?;
    report
        .written
        .extend(files.iter().map(|(p, _)| p.to_path_buf()));
    ui.json(&report)?;
    let mut text = ui.text();
    for t in &report.top_k {
        writeln!(text, "{}:", Escaped(&t.sample))?;
        for c in &t.classes {
            writeln!(
                text,
                "  {:>6}  {:>7.4}  {:>9.4}  {}",
                c.index,
                c.probability,
                c.logit,
                Escaped(c.label.as_deref().unwrap_or("?"))
            )?;
        }
    }
    for p in &report.written {
        ui.detail(format_args!(
            "wrote {} {:?} to {}",
            report.output,
            report.shape,
            Escaped(p.display())
        ));
    }
    exit_keeping(model);
    Ok(EXIT_OK)
}

pub fn verify(a: VerifyArgs, ui: Ui) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    let model = a.run.load(ui)?;
    let input = a.run.input(ui)?;
    let expected = F32Array::read_npy_with(&a.expected, &ui.open)?;
    // Given values win, as before the precision-aware default: a part not given is the plain
    // default. With neither, the library picks the default for the model's weights.
    let tol = (a.atol.is_some() || a.rtol.is_some()).then(|| Tolerance {
        atol: a.atol.unwrap_or(DEFAULT_ATOL),
        rtol: a.rtol.unwrap_or(DEFAULT_RTOL),
    });
    let r = {
        let bar = forward_bar(ui, &a.run.model_dir);
        verify::verify_model_with_progress(
            &model,
            &input,
            &expected,
            &a.run.options(ui, &model, false),
            tol,
            &bar,
        )?
    };
    ui.detail(format_args!(
        "forward pass and comparison in {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    ui.json(&r)?;
    let mut out = ui.text();
    let agree = r.top1.iter().filter(|t| t.agree).count();
    let top1 = if r.top1.is_empty() {
        String::new()
    } else {
        format!("; top-1 agrees on {agree}/{} samples", r.top1.len())
    };
    match &r.non_finite {
        Some(nf) if nf.side == verify::Side::Tolerance => writeln!(
            out,
            "FAIL: the bound atol {:e} + rtol {:e} * max |expected| {:e} is {}; nothing is proven",
            r.tolerance.atol, r.tolerance.rtol, r.max_abs_expected, nf.value
        )?,
        Some(nf) => writeln!(
            out,
            "FAIL: {} value {} at {:?} is not finite ({} of {} positions hold NaN or Inf); a comparison with NaN or Inf proves nothing{top1}",
            nf.side, nf.value, nf.at, nf.count, r.compared
        )?,
        None => writeln!(
            out,
            "{} ({} {:?}): max |Δ| {:.3e} at {:?} (relative {:.3e} of max |expected| {:.4}), tolerance atol {:e} + rtol {:e} ({}){top1}",
            if r.passed { "PASS" } else { "FAIL" },
            r.output.map_or("output", |o| o.name()),
            r.shape,
            r.max_abs_error,
            r.max_abs_error_at,
            r.max_rel_error,
            r.max_abs_expected,
            r.tolerance.atol,
            r.tolerance.rtol,
            r.tolerance_basis,
        )?,
    }
    for t in r.top1.iter().filter(|t| !t.agree || ui.verbose > 0) {
        writeln!(
            out,
            "  sample {}: expected class {}, got {}",
            t.sample, t.expected, t.got
        )?;
    }
    exit_keeping(model);
    Ok(if r.passed { EXIT_OK } else { EXIT_MISMATCH })
}

fn top_k(
    model: &Model,
    out: &vit_convert::forward::ForwardOutput,
    k: usize,
    images: &[PathBuf],
) -> anyhow::Result<Vec<TopK>> {
    let logits = out
        .logits
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--top-k needs a model with a classification head"))?;
    let labels = &model.config().id2label;
    let mut all = Vec::new();
    for (i, row) in logits.rows().into_iter().enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&x, &y| row[y].total_cmp(&row[x]).then(x.cmp(&y)));
        let sample = images
            .get(i)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("sample {i}"));
        let classes = order
            .iter()
            .take(k)
            .map(|&c| Class {
                index: c,
                label: labels.get(&c).cloned(),
                probability: f64::from(row[c] - max).exp() / sum,
                logit: row[c],
            })
            .collect();
        all.push(TopK { sample, classes });
    }
    Ok(all)
}
