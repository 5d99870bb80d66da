//! Comparing outputs against expected values: tolerances (defined once, here), the comparison
//! and its report, plus `.npy` array input/output for the CLI and tests.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::forward::{ForwardOptions, Model};
use crate::progress::{NoProgress, Progress};
use crate::source::{self, Format};
use crate::tensor::{cast_float, DType};

/// Default absolute tolerance.
pub const DEFAULT_ATOL: f64 = 1e-5;
/// Default tolerance relative to the largest expected magnitude.
pub const DEFAULT_RTOL: f64 = 1e-4;

/// Tolerances: an output passes when `max |got − expected| ≤ atol + rtol · max |expected|`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f64,
    /// Part relative to the largest expected magnitude.
    pub rtol: f64,
}

/// Absolute part of [`Tolerance::strict`].
pub const STRICT_ATOL: f64 = 1e-6;
/// Relative part of [`Tolerance::strict`].
pub const STRICT_RTOL: f64 = 1e-5;

impl Tolerance {
    /// The tighter tolerance the reference forward pass holds against transformers and timm on
    /// this crate's fixtures (observed relative errors are below 1e-6); the test suite uses it.
    /// Deeper models accumulate more rounding, so the CLI default stays [`Tolerance::default`].
    pub fn strict() -> Self {
        Tolerance {
            atol: STRICT_ATOL,
            rtol: STRICT_RTOL,
        }
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            atol: DEFAULT_ATOL,
            rtol: DEFAULT_RTOL,
        }
    }
}

/// Top-1 agreement of one sample (for `[B, K]` outputs).
#[derive(Clone, Debug, Serialize)]
pub struct Top1 {
    /// Sample index.
    pub sample: usize,
    /// Arg-max of the expected row.
    pub expected: usize,
    /// Arg-max of the computed row.
    pub got: usize,
    /// Whether they agree.
    pub agree: bool,
}

/// The result of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Shape compared.
    pub shape: Vec<usize>,
    /// Largest absolute difference.
    pub max_abs_error: f64,
    /// Where it occurs (multi-index).
    pub max_abs_error_at: Vec<usize>,
    /// Largest absolute difference divided by the largest expected magnitude.
    pub max_rel_error: f64,
    /// Largest expected magnitude.
    pub max_abs_expected: f64,
    /// Tolerances applied.
    pub tolerance: Tolerance,
    /// Per-sample top-1 agreement (2-D outputs only).
    pub top1: Vec<Top1>,
    /// Whether every value is within tolerance (and no value is NaN).
    pub passed: bool,
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = flat % d;
            flat /= d;
        }
    }
    idx
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

/// Compares computed values with expected ones of the same shape.
///
/// ```
/// use vit_convert::verify::{compare, Tolerance};
/// let r = compare(&[1.0, 2.0], &[1.0, 2.00001], &[1, 2], Tolerance::default())?;
/// assert!(r.passed);
/// assert_eq!(r.top1[0].expected, 1);
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidOption`] when the lengths or shapes differ.
pub fn compare(
    got: &[f32],
    expected: &[f32],
    shape: &[usize],
    tol: Tolerance,
) -> Result<VerifyReport> {
    let n: usize = shape.iter().product();
    if got.len() != expected.len() || got.len() != n {
        return Err(ErrorKind::InvalidOption {
            reason: format!(
                "shape mismatch: computed {} values, expected {} values of shape {shape:?}",
                got.len(),
                expected.len()
            ),
        }
        .into());
    }
    let mut max_abs = 0f64;
    let mut at = 0usize;
    let mut max_exp = 0f64;
    let mut nan = false;
    for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let diff = (f64::from(g) - f64::from(e)).abs();
        if diff.is_nan() {
            nan = true;
            at = k;
            max_abs = f64::INFINITY;
        } else if diff > max_abs {
            max_abs = diff;
            at = k;
        }
        max_exp = max_exp.max(f64::from(e).abs());
    }
    let top1 = if shape.len() == 2 && shape[1] > 0 {
        let k = shape[1];
        (0..shape[0])
            .map(|i| {
                let e = argmax(&expected[i * k..(i + 1) * k]);
                let g = argmax(&got[i * k..(i + 1) * k]);
                Top1 {
                    sample: i,
                    expected: e,
                    got: g,
                    agree: e == g,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let passed = !nan && max_abs <= tol.atol + tol.rtol * max_exp;
    Ok(VerifyReport {
        shape: shape.to_vec(),
        max_abs_error: max_abs,
        max_abs_error_at: unravel(at, shape),
        max_rel_error: if max_exp > 0.0 {
            max_abs / max_exp
        } else {
            max_abs
        },
        max_abs_expected: max_exp,
        tolerance: tol,
        top1,
        passed,
    })
}

/// Runs the model on `input` (`[B, C, H, W]`) and compares its primary output (logits, or
/// `last_hidden_state` for headless models) with `expected`.
///
/// ```
/// use vit_convert::{verify::Array, verify, Model, Tolerance};
/// let model = Model::load("fixtures/convert/deit_distilled/hf".as_ref())?;
/// let input = Array::read_npy("fixtures/convert/deit_distilled/io/batch5.npy".as_ref())?;
/// // Logits transformers computed on the same input.
/// let expected = Array::read_npy("fixtures/convert/deit_distilled/io/logits_batch5_hf.npy".as_ref())?;
/// let r = verify(&model, &input, &expected, &Default::default(), Tolerance::strict())?;
/// assert!(r.passed && r.top1.iter().all(|t| t.agree));
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// Forward errors, or a shape mismatch between the output and `expected`.
pub fn verify(
    model: &Model,
    input: &Array,
    expected: &Array,
    opts: &ForwardOptions,
    tol: Tolerance,
) -> Result<VerifyReport> {
    verify_with_progress(model, input, expected, opts, tol, &NoProgress)
}

/// [`verify()`], reporting the forward pass to `progress`.
///
/// # Errors
/// As [`verify()`].
pub fn verify_with_progress(
    model: &Model,
    input: &Array,
    expected: &Array,
    opts: &ForwardOptions,
    tol: Tolerance,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let x = input.as_nchw()?;
    let out = model.forward_with_progress(x, opts, progress)?;
    let (shape, got) = out.primary();
    if shape != expected.shape {
        return Err(ErrorKind::InvalidOption {
            reason: format!(
                "the model produced shape {shape:?}, the expected file holds {:?}",
                expected.shape
            ),
        }
        .into());
    }
    compare(&got, &expected.data, &shape, tol)
}

/// A float32 array read from or written to `.npy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub data: Vec<f32>,
}

impl Array {
    /// Reads a `.npy` file of any float dtype (converted to f32).
    ///
    /// # Errors
    /// Format errors, or a non-float array.
    pub fn read_npy(path: &Path) -> Result<Array> {
        let src = source::open(path)?;
        let wrong = || {
            Error::from(ErrorKind::InvalidOption {
                reason: "expected a single float array in a .npy file".into(),
            })
            .with_path(path)
        };
        if src.format() != Format::Npy || src.tensors().len() != 1 {
            return Err(wrong());
        }
        let name = src.tensors()[0].name.clone();
        let t = src.read(&name).map_err(|e| e.with_path(path))?;
        if !t.dtype.is_float() {
            return Err(wrong());
        }
        let t = cast_float(t, DType::F32);
        Ok(Array {
            shape: t.shape.clone(),
            data: t
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }

    /// Writes a float32 `.npy` file atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        crate::write::write_files(&[(path, &self.to_npy()?)])
    }

    /// The bytes of the float32 `.npy` file [`Array::write_npy`] writes (for
    /// [`crate::write::write_files`], which puts several files in place together).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidLayout`] when the shape does not hold the data.
    pub fn to_npy(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(self.data.len() * 4);
        for v in &self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut npy = Vec::new();
        crate::source::npy::write_npy(&mut npy, DType::F32, &self.shape, &bytes)?;
        Ok(npy)
    }

    /// A `[B, C, H, W]` view.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidOption`] when the array is not 4-D.
    pub fn as_nchw(&self) -> Result<ndarray::ArrayView4<'_, f32>> {
        match self.shape[..] {
            [b, c, h, w] => {
                ndarray::ArrayView4::from_shape((b, c, h, w), &self.data).map_err(|e| {
                    ErrorKind::InvalidOption {
                        reason: e.to_string(),
                    }
                    .into()
                })
            }
            _ => Err(ErrorKind::InvalidOption {
                reason: format!("input must be [B, C, H, W], got shape {:?}", self.shape),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reports_position_and_fails_outside_tolerance() {
        let exp = [1.0f32, -4.0, 0.5, 2.0];
        let mut got = exp;
        got[2] += 0.01;
        let r = compare(&got, &exp, &[2, 2], Tolerance::default()).unwrap();
        assert!(!r.passed);
        assert_eq!(r.max_abs_error_at, vec![1, 0]);
        assert!((r.max_rel_error - 0.01 / 4.0).abs() < 1e-6);
        assert!(r.top1.iter().all(|t| t.agree));
    }

    #[test]
    fn nan_never_passes() {
        let r = compare(&[f32::NAN], &[1.0], &[1], Tolerance::default()).unwrap();
        assert!(!r.passed);
    }

    #[test]
    fn top1_disagreement_is_reported() {
        let r = compare(
            &[0.0, 1.0],
            &[1.0, 0.0],
            &[1, 2],
            Tolerance {
                atol: 10.0,
                rtol: 0.0,
            },
        )
        .unwrap();
        assert!(r.passed);
        assert!(!r.top1[0].agree);
    }
}
