//! Progress reporting for long operations. The library never prints: a caller that wants a
//! progress bar implements [`Progress`] and passes it to
//! [`convert_with_progress`](crate::conversion::convert_with_progress) or
//! [`Model::forward_with_progress`](crate::forward::Model::forward_with_progress). The
//! `vit-convert` binary drives an indicatif bar through it, on a terminal only.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::source::{Format, TensorSource};
use crate::tensor::{Tensor, TensorInfo};

/// What a progress report counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Writing the converted tensors; units are bytes of tensor data as read from the source.
    Write,
    /// The forward pass; units are encoder layers run (layers × samples).
    Forward,
}

/// An observer of long operations: one [`start`](Progress::start), then
/// [`advance`](Progress::advance) calls adding up to `total`, then [`finish`](Progress::finish)
/// (not called when the operation fails). Every method has an empty default.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use vit_convert::progress::{Progress, Stage};
///
/// #[derive(Default)]
/// struct Count(AtomicU64, AtomicU64);
/// impl Progress for Count {
///     fn start(&self, _stage: Stage, total: u64) {
///         self.0.store(total, Ordering::Relaxed);
///     }
///     fn advance(&self, n: u64) {
///         self.1.fetch_add(n, Ordering::Relaxed);
///     }
/// }
///
/// let seen = Count::default();
/// let out = tempfile::tempdir()?;
/// let opts = vit_convert::ConvertOptions {
///     from: Some("timm".parse()?),
///     overrides: vit_convert::ConfigOverrides { num_heads: Some(2), ..Default::default() },
///     ..Default::default()
/// };
/// vit_convert::conversion::convert_with_progress(
///     "fixtures/convert/timm_vit/source.pth",
///     out.path(),
///     &opts,
///     &seen,
/// )?;
/// assert!(seen.0.load(Ordering::Relaxed) > 0);
/// assert_eq!(seen.0.load(Ordering::Relaxed), seen.1.load(Ordering::Relaxed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Progress: Sync {
    /// The operation begins; `total` units of `stage` are expected.
    fn start(&self, stage: Stage, total: u64) {
        let _ = (stage, total);
    }

    /// `n` more units are done.
    fn advance(&self, n: u64) {
        let _ = n;
    }

    /// The operation completed.
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything (what [`convert`](crate::convert()) and
/// [`Model::forward`](crate::forward::Model::forward) use).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A source that reports the bytes of every tensor read to a [`Progress`].
pub(crate) struct Reporting<'a> {
    pub(crate) inner: &'a dyn TensorSource,
    pub(crate) progress: &'a dyn Progress,
}

impl Reporting<'_> {
    /// Total bytes of every listed tensor.
    pub(crate) fn total(&self) -> u64 {
        self.inner
            .tensors()
            .iter()
            .map(|t| u64::try_from(t.byte_len()).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add)
    }
}

impl TensorSource for Reporting<'_> {
    fn format(&self) -> Format {
        self.inner.format()
    }

    fn tensors(&self) -> &[TensorInfo] {
        self.inner.tensors()
    }

    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        let t = self.inner.read(name)?;
        self.progress
            .advance(u64::try_from(t.data.len()).unwrap_or(u64::MAX));
        Ok(t)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner.metadata()
    }

    fn notes(&self) -> &[String] {
        self.inner.notes()
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.inner.info(name)
    }

    fn release_pages(&self) {
        self.inner.release_pages();
    }

    fn locate(&self, data: &[u8]) -> Option<(&std::fs::File, u64)> {
        self.inner.locate(data)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::forward::{ForwardOptions, Model};
    use crate::verify::F32Array;

    #[derive(Default)]
    struct Log(Mutex<Vec<(&'static str, u64)>>);

    impl Progress for Log {
        fn start(&self, stage: Stage, total: u64) {
            let what = match stage {
                Stage::Write => "write",
                Stage::Forward => "forward",
            };
            self.0.lock().unwrap().push((what, total));
        }
        fn advance(&self, n: u64) {
            self.0.lock().unwrap().push(("advance", n));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push(("finish", 0));
        }
    }

    fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/convert")
            .join(rel)
    }

    #[test]
    fn forward_reports_one_unit_per_layer_and_sample() {
        let model = Model::load(fixture("deit_distilled/hf")).unwrap();
        let x = F32Array::read_npy(fixture("deit_distilled/io/batch5.npy")).unwrap();
        let log = Log::default();
        model
            .forward_with_progress(x.as_nchw().unwrap(), &ForwardOptions::default(), &log)
            .unwrap();
        let events = log.0.into_inner().unwrap();
        let layers = model.config().num_hidden_layers as u64;
        assert_eq!(events.first(), Some(&("forward", 5 * layers)));
        assert_eq!(events.last(), Some(&("finish", 0)));
        let advanced: u64 = events
            .iter()
            .filter(|e| e.0 == "advance")
            .map(|e| e.1)
            .sum();
        assert_eq!(advanced, 5 * layers);
    }

    #[test]
    fn conversion_reports_every_byte_it_reads_for_every_output_layout() {
        for to in [
            crate::convert::OutputFormat::Safetensors,
            crate::convert::OutputFormat::Timm,
            crate::convert::OutputFormat::Npz,
            crate::convert::OutputFormat::Flax,
        ] {
            let out = tempfile::tempdir().unwrap();
            let opts = crate::ConvertOptions {
                from: Some("timm".parse().unwrap()),
                to,
                overrides: crate::model::ConfigOverrides {
                    num_heads: Some(2),
                    ..Default::default()
                },
                ..Default::default()
            };
            let log = Log::default();
            crate::convert::convert_with_progress(
                fixture("timm_vit/source.pth"),
                out.path(),
                &opts,
                &log,
            )
            .unwrap();
            let events = log.0.into_inner().unwrap();
            let Some(&("write", total)) = events.first() else {
                panic!("{to:?}: {events:?}");
            };
            let advanced: u64 = events
                .iter()
                .filter(|e| e.0 == "advance")
                .map(|e| e.1)
                .sum();
            assert!(total > 0);
            assert_eq!(advanced, total, "{to:?}");
            assert_eq!(events.last(), Some(&("finish", 0)), "{to:?}");
        }
    }

    #[test]
    fn a_failed_conversion_does_not_finish() {
        let out = tempfile::tempdir().unwrap();
        let opts = crate::ConvertOptions {
            from: Some("jax".parse().unwrap()),
            ..Default::default()
        };
        let log = Log::default();
        let r = crate::convert::convert_with_progress(
            fixture("timm_vit/source.pth"),
            out.path(),
            &opts,
            &log,
        );
        assert!(r.is_err());
        assert!(!log.0.into_inner().unwrap().contains(&("finish", 0)));
    }
}
