//! The progress bar: an indicatif bar on stderr, driven through the library's [`Progress`]
//! observer, drawn only for large jobs, only when stderr is a terminal, never with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use vit_convert::progress::{Progress, Stage};

use super::Ui;

/// Jobs smaller than this (bytes of weights) finish too fast for a bar to help.
pub const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// A bar that appears on [`Progress::start`] when enabled, and is cleared when done or dropped.
pub struct Bar {
    enabled: bool,
    /// [`Stage::Write`] totals (bytes) below this draw nothing.
    min_write_bytes: u64,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    fn new(ui: Ui, enabled: bool, min_write_bytes: u64) -> Bar {
        Bar {
            enabled: enabled && !ui.quiet && std::io::stderr().is_terminal(),
            min_write_bytes,
            bar: Mutex::new(None),
        }
    }

    /// For a conversion: drawn when the tensors to write reach [`PROGRESS_MIN_BYTES`].
    pub fn for_convert(ui: Ui) -> Bar {
        Bar::new(ui, true, PROGRESS_MIN_BYTES)
    }

    /// For a forward pass over a model whose weights file has `weight_bytes` bytes.
    pub fn for_forward(ui: Ui, weight_bytes: u64) -> Bar {
        Bar::new(ui, weight_bytes >= PROGRESS_MIN_BYTES, 0)
    }

    fn clear(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for Bar {
    fn start(&self, stage: Stage, total: u64) {
        if !self.enabled || (stage == Stage::Write && total < self.min_write_bytes) {
            return;
        }
        // At most ~70 columns, so the bar never wraps on an 80-column terminal.
        let template = match stage {
            Stage::Write => "{msg:>10} [{bar:30}] {binary_bytes}/{binary_total_bytes} eta {eta}",
            _ => "{msg:>10} [{bar:30}] {pos}/{len} layers, eta {eta}",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::new(total)
            .with_style(style)
            .with_message(match stage {
                Stage::Write => "converting",
                _ => "forward",
            });
        if let Ok(mut b) = self.bar.lock() {
            if let Some(old) = b.replace(bar) {
                old.finish_and_clear();
            }
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn finish(&self) {
        self.clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.clear();
    }
}
