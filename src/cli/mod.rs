//! Argument parsing, output and exit codes. Exit codes: 0 ok, 1 error, 2 usage, 3 mismatch.

use std::io::Write;
use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};
use vit_convert::text::{escape, escape_keeping_newlines, Escaped};

mod convert;
mod forward;
mod hash;
mod inspect;
mod progress;
mod tables;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for any error (bad input, I/O, refused pickle, …).
pub const EXIT_ERROR: i32 = 1;
/// Exit code for a usage error (clap's own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for outputs outside tolerance (`verify`) or checkpoints that differ (`diff`).
pub const EXIT_MISMATCH: i32 = 3;

/// The exit-code paragraph every `--help` ends with.
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 ok, 1 error, 2 usage, 3 verification mismatch (verify) / checkpoints differ (diff)."
    };
}

/// A tolerance: finite and not negative (`inf`, `nan` or `-1` would make any output pass or none).
pub(crate) fn parse_tolerance(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number >= 0")),
        Err(e) => Err(e.to_string()),
    }
}

/// The library names options by their field (``option `num_heads` ``); the CLI prints the flag
/// that sets each (`--num-heads`): every ``option `a_b` `` in `text` becomes `--a-b`.
pub fn with_flags(text: &str) -> String {
    const MARK: &str = "option `";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        match after.find('`') {
            Some(end)
                if end > 0
                    && after[..end]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                out.push_str(&rest[..at]);
                // Options whose flag takes a value rather than being the option's name.
                match &after[..end] {
                    "drop_head" => out.push_str("--drop head"),
                    name => {
                        out.push_str("--");
                        out.push_str(&name.replace('_', "-"));
                    }
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..at + MARK.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The values `--from` accepts: `auto` (detect) and every built-in family.
pub fn families() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        std::iter::once("auto").chain(vit_convert::mapping::Family::names()),
    )
}

/// `--branch` values (DINO training checkpoints), parsed.
pub fn branches() -> impl clap::builder::TypedValueParser<Value = vit_convert::mapping::Branch> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(vit_convert::mapping::Branch::names())
        .try_map(|s| s.parse::<vit_convert::mapping::Branch>())
}

/// A `--from` value as the library takes it: `auto` is `None` (detect).
pub fn family_of(value: &str) -> vit_convert::Result<Option<vit_convert::mapping::Family>> {
    match value {
        "auto" => Ok(None),
        f => f.parse().map(Some),
    }
}

#[derive(Parser)]
#[command(
    name = "vit-convert",
    version,
    about = "Convert and verify Vision Transformer checkpoints without Python",
    long_about = "Convert and verify Vision Transformer checkpoints without Python.\n\n\
        Reads PyTorch .pth (zip and legacy), JAX .npz and safetensors checkpoints from timm, DINO, \
        DeiT, google-research/vision_transformer, big_vision and Hugging Face; writes the Hugging \
        Face transformers layout; proves the result with a reference forward pass. Without a \
        command, the arguments are those of `convert`.",
    after_help = concat!(
        "Examples:\n",
        "  vit-convert --from timm vit.pth -o out/                     convert (the default command)\n",
        "  vit-convert verify out/ --input x.npy --expected logits.npy  prove it against the source's outputs\n",
        "  vit-convert hash out/model.safetensors --from hf              pin the weights in CI\n",
        "\n",
        exit_codes!()
    )
)]
struct Cli {
    /// Print nothing but errors (and --json output); no progress bar. The exit code tells.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More detail: errors print their cause chain and kind; summaries list every name; timings.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a checkpoint to the HF transformers layout (or timm / npz / flax). Also the default command.
    #[command(after_help = concat!(
        "Examples:\n",
        "  vit-convert --from timm --to safetensors vit.pth -o out/\n",
        "  vit-convert convert --from dino --branch teacher checkpoint.pth -o dino-out/\n",
        "  vit-convert --from jax ViT-B_16.npz -o vit-b16/ --dtype f16\n",
        "  vit-convert --from flax flax_model.msgpack -o vit-pt/       (config.json beside it)\n",
        "  vit-convert --from hf model.safetensors --to flax -o vit-flax/\n",
        "  vit-convert --table mynet.toml --num-heads 12 ckpt.pth -o out/\n",
        "\n",
        exit_codes!()
    ))]
    Convert(convert::ConvertArgs),
    /// Run the reference forward pass on a [B, C, H, W] float32 .npy input or on images.
    #[command(after_help = concat!(
        "Examples:\n",
        "  vit-convert forward out/ --input x.npy --output logits.npy\n",
        "  vit-convert forward out/ --image cat.png --top-k 5\n",
        "\n",
        exit_codes!()
    ))]
    Forward(forward::ForwardArgs),
    /// Run the forward pass and compare with expected outputs: exit 0 within tolerance, 3 outside.
    #[command(after_help = concat!(
        "Example:\n",
        "  vit-convert verify out/ --input x.npy --expected logits_timm.npy --json\n",
        "\n",
        "Passes when max |got - expected| <= atol + rtol * max |expected| and every value is finite;\n",
        "a NaN or Inf on either side fails (3), an empty batch or a shape mismatch is an error (1).\n",
        "The default tolerance (atol 1e-5 + rtol 1e-4) widens for f16/bf16 weights to what their\n",
        "rounding costs; the result line says which applied. --atol/--rtol, when given, win.\n",
        exit_codes!()
    ))]
    Verify(forward::VerifyArgs),
    /// List a checkpoint's tensors (name, dtype, shape, bytes) without reading their data.
    #[command(after_help = concat!(
        "Example:\n",
        "  vit-convert inspect model.pth --json\n",
        "\n",
        exit_codes!()
    ))]
    Inspect {
        /// The checkpoint (.pth/.pt/.bin/.ckpt, .npz/.npy, .safetensors; format sniffed from its bytes).
        file: PathBuf,
    },
    /// List the built-in mapping tables, print one, or check a custom one.
    #[command(after_help = concat!(
        "Examples:\n",
        "  vit-convert tables\n",
        "  vit-convert tables --show timm > mynet.toml    start a custom table from a built-in one\n",
        "  vit-convert tables --check mynet.toml\n",
        "\n",
        "The table format: mappings/README.md.\n",
        exit_codes!()
    ))]
    Tables(tables::TablesArgs),
    /// sha256 of every tensor (canonical little-endian bytes) and of the whole model.
    #[command(after_help = concat!(
        "Examples:\n",
        "  vit-convert hash model.safetensors                    the tensors as stored\n",
        "  vit-convert hash vit.pth --from timm                  the canonical tensors conversion writes\n",
        "  vit-convert hash out/model.safetensors --from hf      ... the same digest as the line above\n",
        "\n",
        "Each line: <sha256> <DTYPE> [<shape>] <name>, sorted by name; the last line is the model\n",
        "digest, the sha256 of the lines before it. Without --from the tensors are hashed as stored\n",
        "(names as `inspect` shows them); with --from (or --table) the mapping table is applied\n",
        "first, so the same weights hash alike in any container or layout.\n",
        exit_codes!()
    ))]
    Hash(hash::HashArgs),
    /// Compare two checkpoints tensor by tensor: exit 0 when identical, 3 when they differ.
    #[command(after_help = concat!(
        "Examples:\n",
        "  vit-convert diff a.safetensors b.safetensors\n",
        "  vit-convert diff vit.pth out/model.safetensors --from auto\n",
        "  vit-convert diff out-f32/model.safetensors out-f16/model.safetensors --atol 1e-3\n",
        "\n",
        "Reports names only in A or B, dtype and shape changes, and per tensor the largest\n",
        "absolute difference and that difference relative to the largest magnitude.\n",
        exit_codes!()
    ))]
    Diff(hash::DiffArgs),
}

/// Settings every command follows: output, and how inputs are read and outputs written.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// `--json`: one JSON document on stdout.
    pub json: bool,
    /// `--quiet`: no text output, no progress.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
    /// Budgets (`VIT_CONVERT_LIMIT_*`) and mapping (`VIT_CONVERT_NO_MMAP`) for every input.
    pub open: vit_convert::OpenOptions,
    /// `VIT_CONVERT_FSYNC`: sync outputs to disk before renaming them into place.
    pub fsync: bool,
}

/// The CLI's settings from its environment — the only place `VIT_CONVERT_*` variables are read
/// (`VIT_CONVERT_THREADS` aside, which clap reads for `--threads`).
fn from_env() -> vit_convert::Result<(vit_convert::OpenOptions, bool)> {
    // Budgets for untrusted input: VIT_CONVERT_LIMIT_<FIELD> raises one (see SECURITY.md).
    let prefix = vit_convert::limits::ENV_PREFIX;
    let limits = vit_convert::Limits::from_vars(std::env::vars_os().filter_map(|(k, v)| {
        let k = k.into_string().ok()?;
        k.starts_with(prefix)
            .then(|| (k, v.to_string_lossy().into_owned()))
    }))?;
    let mut open = vit_convert::OpenOptions::with_limits(limits);
    open.mmap = std::env::var_os("VIT_CONVERT_NO_MMAP").is_none_or(|v| v == "0");
    let fsync = std::env::var_os("VIT_CONVERT_FSYNC").is_some_and(|v| !v.is_empty() && v != "0");
    Ok((open, fsync))
}

impl Ui {
    /// Where text output goes: stdout, or nowhere with `--quiet` or `--json`. No control
    /// character but the newline ever reaches it (ESC, CR, NUL, U+2028 … are escaped); names,
    /// paths and labels from files go through [`Escaped`] where they are formatted, so that an
    /// embedded newline cannot start a line of its own either.
    pub fn text(&self) -> Box<dyn Write> {
        if self.quiet || self.json {
            Box::new(std::io::sink())
        } else {
            Box::new(LineSafe(std::io::stdout().lock()))
        }
    }

    /// Prints `value` as pretty JSON on stdout when `--json` was given.
    pub fn json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if self.json {
            // Serialized whole before any byte is written: a failure never leaves half a document.
            let mut doc = serde_json::to_vec_pretty(value)?;
            doc.push(b'\n');
            std::io::stdout().lock().write_all(&doc)?;
        }
        Ok(())
    }

    /// A line on stderr for `-v` (escaped: always one line).
    pub fn detail(&self, line: std::fmt::Arguments) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{}", Escaped(line));
        }
    }
}

/// A writer that escapes every control character except the newline (see [`Ui::text`]).
struct LineSafe<W: Write>(W);

impl<W: Write> Write for LineSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(escape_keeping_newlines(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

const SUBCOMMANDS: &[&str] = &[
    "convert", "forward", "verify", "inspect", "tables", "hash", "diff", "help",
];

/// Global flags that may precede the command.
fn is_global_flag(a: &str) -> bool {
    matches!(a, "-q" | "--quiet" | "--verbose" | "--json")
        || a.strip_prefix('-')
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b == b'v'))
}

/// `vit-convert --from timm in.pth -o out/` means `vit-convert convert …`: insert the subcommand
/// when the first argument after any global flags is neither a subcommand nor help/version.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut at = 1;
    while args
        .get(at)
        .and_then(|a| a.to_str())
        .is_some_and(is_global_flag)
    {
        at += 1;
    }
    let first = args.get(at).and_then(|a| a.to_str()).map(str::to_string);
    let insert = match first.as_deref() {
        None => false,
        Some("-h" | "--help" | "-V" | "--version") => false,
        Some(a) => !SUBCOMMANDS.contains(&a),
    };
    if insert {
        args.insert(at, "convert".into());
    }
    args
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse_from(with_default_command(std::env::args_os().collect())) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version: clap's own text, nothing from the user in it.
            let _ = e.print();
            return EXIT_OK;
        }
        Err(e) => {
            eprintln!("{}", usage_error_line(e));
            return EXIT_USAGE;
        }
    };
    let (open, fsync) = match from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let ui = Ui {
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
        open,
        fsync,
    };
    let result = match cli.command {
        Command::Inspect { file } => inspect::run(&file, ui),
        Command::Convert(a) => convert::run(a, ui),
        Command::Forward(a) => forward::forward(a, ui),
        Command::Verify(a) => forward::verify(a, ui),
        Command::Tables(a) => tables::run(a, ui),
        Command::Hash(a) => hash::hash(a, ui),
        Command::Diff(a) => hash::diff(a, ui),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => EXIT_OK,
        Err(e) => {
            print_error(&e, ui.verbose);
            EXIT_ERROR
        }
    }
}

/// A usage error on one line, with every value clap echoes (an argument, an environment
/// variable's value) escaped: `--from $'x\nPASS'` must not print a line of its own. Clap's
/// layout (message, tip, usage, "For more information") is joined with "; ".
fn usage_error_line(mut e: clap::Error) -> String {
    use clap::builder::StyledStr;
    use clap::error::ContextValue;
    let escaped = |s: &str| escape(s).into_owned();
    let changes: Vec<_> = e
        .context()
        .filter_map(|(kind, value)| {
            let value = match value {
                ContextValue::String(s) => ContextValue::String(escaped(s)),
                ContextValue::Strings(v) => {
                    ContextValue::Strings(v.iter().map(|s| escaped(s)).collect())
                }
                ContextValue::StyledStr(s) if escape(&s.to_string()) != s.to_string() => {
                    ContextValue::StyledStr(StyledStr::from(escaped(&s.to_string())))
                }
                ContextValue::StyledStrs(v) => ContextValue::StyledStrs(
                    v.iter()
                        .map(|s| StyledStr::from(escaped(&s.to_string())))
                        .collect(),
                ),
                _ => return None,
            };
            Some((kind, value))
        })
        .collect();
    for (kind, value) in changes {
        e.insert(kind, value);
    }
    let text = e.render().to_string();
    let mut line = String::new();
    for part in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    // Whatever clap printed that did not come through its context (none today) is escaped too.
    escape(&line).into_owned()
}

/// For a budget refusal, how to raise the budget (on the same line).
fn budget_hint(e: &anyhow::Error) -> String {
    let budget = e
        .chain()
        .find_map(|c| match c.downcast_ref::<vit_convert::Error>()?.kind() {
            vit_convert::ErrorKind::BudgetExceeded { budget, .. } => Some(*budget),
            _ => None,
        });
    match budget.and_then(vit_convert::limits::env_var_for) {
        Some(var) => format!(" (if the file is trusted, raise the limit with {var}=N)"),
        None => String::new(),
    }
}

/// `vit-convert hash big.pth | head`: the reader went away; not an error worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind())
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// One line by default: the outermost message followed by each cause it does not already say.
/// With `-v`: the message, then one `caused by:` line per cause, then the crate error's kind.
fn print_error(e: &anyhow::Error, verbose: u8) {
    let mut stderr = std::io::stderr().lock();
    // Every cause escaped (the crate's errors already are; the CLI's own messages embed paths):
    // one line means one line.
    let causes: Vec<String> = e
        .chain()
        .map(|c| with_flags(&Escaped(c).to_string()))
        .collect();
    if verbose == 0 {
        let mut line = String::new();
        for c in &causes {
            if !line.contains(c.as_str()) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(c);
            }
        }
        let _ = writeln!(stderr, "error: {line}{}", budget_hint(e));
        return;
    }
    let mut lines = causes.iter();
    if let Some(first) = lines.next() {
        let _ = writeln!(stderr, "error: {first}");
    }
    for c in lines {
        let _ = writeln!(stderr, "  caused by: {c}");
    }
    let hint = budget_hint(e);
    if !hint.is_empty() {
        let _ = writeln!(stderr, " {hint}");
    }
    if let Some(err) = e
        .chain()
        .find_map(|c| c.downcast_ref::<vit_convert::Error>())
    {
        let kind = format!("{:?}", err.kind());
        let _ = writeln!(stderr, "  kind: {}", Escaped(&kind));
        if let Some(p) = err.path() {
            let _ = writeln!(stderr, "  file: {}", Escaped(p.display()));
        }
        if let Some(t) = err.tensor() {
            let _ = writeln!(stderr, "  tensor: {}", Escaped(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        with_default_command(v.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn option_fields_print_as_flags() {
        assert_eq!(
            with_flags("set option `num_heads`; option `config`: `qkv_bias` bad"),
            "set --num-heads; --config: `qkv_bias` bad"
        );
        assert_eq!(
            with_flags("option `interpolate_pos_encoding` and option `X` and option `"),
            "--interpolate-pos-encoding and option `X` and option `"
        );
    }

    #[test]
    fn default_command_is_inserted_after_global_flags() {
        assert_eq!(
            args(&["vc", "-v", "--from", "timm", "x.pth"]),
            ["vc", "-v", "convert", "--from", "timm", "x.pth"]
        );
        assert_eq!(args(&["vc", "x.pth"]), ["vc", "convert", "x.pth"]);
    }

    #[test]
    fn named_commands_and_help_are_left_alone() {
        assert_eq!(args(&["vc", "-q", "hash", "x"]), ["vc", "-q", "hash", "x"]);
        assert_eq!(args(&["vc", "-vv", "diff"]), ["vc", "-vv", "diff"]);
        assert_eq!(args(&["vc", "--help"]), ["vc", "--help"]);
        assert_eq!(args(&["vc"]), ["vc"]);
    }

    #[test]
    fn usage_errors_are_one_line_with_echoed_values_escaped() {
        for argv in [
            &[
                "vc",
                "convert",
                "--from",
                "x\nPASS: max |Δ| 0",
                "in.pth",
                "-o",
                "o",
            ][..],
            &["vc", "convert", "--bogus\nPASS\u{1b}[2J", "in.pth"],
            &[
                "vc",
                "verify",
                "m",
                "--input",
                "x",
                "--expected",
                "y",
                "--atol",
                "1\r\nPASS",
            ],
            &["vc", "hash", "x", "--from=t\u{2028}PASS"],
            &["vc", "inspect", "a", "b\nPASS\0"],
            &["vc", "tables", "--show"],
        ] {
            let Err(e) = Cli::try_parse_from(argv) else {
                panic!("{argv:?} parsed");
            };
            let line = usage_error_line(e);
            assert!(line.starts_with("error: "), "{line:?}");
            assert!(!line.contains('\n'), "{argv:?}: {line:?}");
            assert!(
                !line.chars().any(vit_convert::text::is_unsafe_char),
                "{argv:?}: {line:?}"
            );
        }
        let Err(e) = Cli::try_parse_from(["vc", "convert", "--from", "x\nPASS", "i", "-o", "o"])
        else {
            panic!("parsed");
        };
        let line = usage_error_line(e);
        assert!(
            line.starts_with(r"error: invalid value 'x\nPASS' for '--from <FROM>'"),
            "{line}"
        );
        assert!(line.contains("possible values: auto"), "{line}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
