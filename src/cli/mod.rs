//! Argument parsing, output and exit codes. Exit codes: 0 ok, 1 error, 2 usage, 3 mismatch.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod convert;
mod forward;
mod inspect;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for any error (bad input, I/O, refused pickle, …).
pub const EXIT_ERROR: i32 = 1;
/// Exit code for a usage error (clap's own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for outputs outside tolerance (`verify`).
pub const EXIT_MISMATCH: i32 = 3;

#[derive(Parser)]
#[command(
    name = "vit-convert",
    version,
    about = "Convert and verify Vision Transformer checkpoints without Python",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 verification mismatch.\n\nExample:\n  vit-convert inspect fixtures/readers/zip_p2.pth"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a checkpoint to the canonical HF layout (or timm / npz). This is also the default:
    /// `vit-convert --from timm --to safetensors in.pth -o out/`.
    #[command(
        after_help = "Examples:\n  vit-convert --from timm --to safetensors vit.pth -o out/\n  vit-convert convert --from dino --branch teacher checkpoint.pth -o dino-out/\n  vit-convert --from jax --to safetensors ViT-B_16.npz -o vit-b16/"
    )]
    Convert(convert::ConvertArgs),
    /// Run the reference forward pass on a [B, C, H, W] float32 .npy input.
    #[command(
        after_help = "Example:\n  vit-convert forward out/ --input x.npy --output logits.npy"
    )]
    Forward(forward::ForwardArgs),
    /// Run the forward pass and compare with expected outputs: exit 0 within tolerance, 3 outside, 1 on error.
    #[command(
        after_help = "Example:\n  vit-convert verify out/ --input x.npy --expected logits_timm.npy --json"
    )]
    Verify(forward::VerifyArgs),
    /// List a checkpoint's tensors (name, dtype, shape, bytes) without reading their data.
    #[command(after_help = "Example:\n  vit-convert inspect model.pth --json")]
    Inspect {
        /// The checkpoint (.pth/.pt/.bin/.ckpt, .npz/.npy, .safetensors; format sniffed from its bytes).
        file: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

const SUBCOMMANDS: &[&str] = &["convert", "forward", "inspect", "verify", "help"];

/// `vit-convert --from timm in.pth -o out/` means `vit-convert convert …`: insert the subcommand
/// when the first argument is neither a subcommand nor a top-level flag.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).map(str::to_string);
    let insert = match first.as_deref() {
        None => false,
        Some("-h" | "--help" | "-V" | "--version") => false,
        Some(a) => !SUBCOMMANDS.contains(&a),
    };
    if insert {
        args.insert(1, "convert".into());
    }
    args
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse_from(with_default_command(std::env::args_os().collect())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    // Budgets for untrusted input: VIT_CONVERT_LIMIT_<FIELD> raises one (see SECURITY.md).
    match vit_convert::Limits::from_env() {
        Ok(limits) => limits.set(),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let result = match cli.command {
        Command::Inspect { file, json } => inspect::run(&file, json),
        Command::Convert(a) => convert::run(a),
        Command::Forward(a) => forward::forward(a),
        Command::Verify(a) => forward::verify(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}{}", budget_hint(&e));
            EXIT_ERROR
        }
    }
}

/// For a budget refusal, how to raise the budget (on the same line).
fn budget_hint(e: &anyhow::Error) -> String {
    let budget = e
        .chain()
        .find_map(|c| match c.downcast_ref::<vit_convert::Error>()?.kind() {
            vit_convert::ErrorKind::BudgetExceeded { budget, .. } => Some(*budget),
            _ => None,
        });
    match budget.and_then(vit_convert::source::limits::env_var_for) {
        Some(var) => format!(" (if the file is trusted, raise the limit with {var}=N)"),
        None => String::new(),
    }
}
