//! Argument parsing, output and exit codes. Exit codes: 0 ok, 1 error, 2 usage, 3 mismatch.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod inspect;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for any error (bad input, I/O, refused pickle, …).
pub const EXIT_ERROR: i32 = 1;
/// Exit code for a usage error (clap's own).
pub const EXIT_USAGE: i32 = 2;

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

/// Parses the command line, runs the command and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Inspect { file, json } => inspect::run(&file, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}
