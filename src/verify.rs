//! Comparing outputs against expected values: tolerances (defined once, here), the comparison
//! and its report, plus `.npy` array input/output for the CLI and tests.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::forward::{ForwardOptions, Model};
use crate::progress::{NoProgress, Progress};
use crate::source::{self, Format};
pub use crate::tensor::F32Array;
use crate::tensor::{cast_float, checked_numel, unravel, DType};

/// Default absolute tolerance (f32 or f64 weights).
pub const DEFAULT_ATOL: f64 = 1e-5;
/// Default tolerance relative to the largest expected magnitude (f32 or f64 weights).
pub const DEFAULT_RTOL: f64 = 1e-4;

// Weights stored in 16 bits cost what their rounding costs, and no reference forward pass can
// give it back: the expected outputs come from the f32 original. How the defaults below were
// chosen: every bundled fixture (`fixtures/convert/*/hf`, 8 models) was converted with
// `--dtype bf16` and `--dtype f16`, and verified against the f32 framework's outputs (the
// single input and the batch of 5: 32 comparisons). Worst cases seen:
//
// | weights | max |Δ|              | max |Δ| / max |expected|          |
// | ------- | -------------------- | ---------------------------------- |
// | bf16    | 2.5e-2 (dino, hidden states) | 1.25e-2 (big_vision logits) |
// | f16     | 2.5e-3 (dino, batch)  | 2.0e-3 (big_vision logits)        |
//
// Both are 6-8 times the format's unit roundoff u (bf16: 2^-9 ≈ 1.95e-3; f16: 2^-12 ≈ 2.4e-4).
// The defaults are rtol = 32·u and atol = 8·u (exact binary fractions): the worst comparison
// uses 17% of its bound in bf16 (big_vision, 1.65e-2 of 9.9e-2) and 21% in f16 (big_vision,
// 2.4e-3 of 1.17e-2). That margin of about 5 is for deeper models, which accumulate more
// rounding than these 2-layer fixtures; a wrong conversion (a transposed or swapped tensor)
// moves outputs by the order of the outputs themselves and still fails.

/// Default absolute tolerance for bf16 weights: 8·2^-9 (see the figures above).
pub const BF16_ATOL: f64 = 1.0 / 64.0;
/// Default relative tolerance for bf16 weights: 32·2^-9.
pub const BF16_RTOL: f64 = 1.0 / 16.0;
/// Default absolute tolerance for f16 weights: 8·2^-12.
pub const F16_ATOL: f64 = 1.0 / 512.0;
/// Default relative tolerance for f16 weights: 32·2^-12.
pub const F16_RTOL: f64 = 1.0 / 128.0;

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

    /// The default tolerance for a model whose weights are stored as `weights`:
    /// [`Tolerance::default`] for f32 and f64, widened to what the rounding costs for bf16
    /// ([`BF16_ATOL`], [`BF16_RTOL`]) and f16 ([`F16_ATOL`], [`F16_RTOL`]); see the figures in
    /// this module's source.
    ///
    /// ```
    /// use vit_convert::{DType, Tolerance};
    /// assert_eq!(Tolerance::for_weights(DType::F32), Tolerance::default());
    /// assert!(Tolerance::for_weights(DType::BF16).rtol > Tolerance::for_weights(DType::F16).rtol);
    /// ```
    pub fn for_weights(weights: DType) -> Self {
        match weights {
            DType::BF16 => Tolerance {
                atol: BF16_ATOL,
                rtol: BF16_RTOL,
            },
            DType::F16 => Tolerance {
                atol: F16_ATOL,
                rtol: F16_RTOL,
            },
            _ => Tolerance::default(),
        }
    }

    /// [`Tolerance::for_weights`] of the model's least precise weights
    /// ([`Model::weight_dtype`]).
    pub fn for_model(model: &Model) -> Self {
        Tolerance::for_weights(model.weight_dtype())
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

/// Why a comparison used the tolerance it did ([`VerifyReport::tolerance_basis`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToleranceBasis {
    /// The caller chose it (a [`Tolerance`] passed to [`verify_model`] or [`compare`]).
    Given,
    /// The default for the model's weights ([`Tolerance::for_weights`]).
    Default {
        /// The least precise dtype among the model's weights.
        weights: DType,
    },
}

impl std::fmt::Display for ToleranceBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToleranceBasis::Given => f.write_str("given"),
            ToleranceBasis::Default {
                weights: w @ (DType::BF16 | DType::F16),
            } => write!(
                f,
                "default for {} weights, widened for their rounding",
                w.name()
            ),
            ToleranceBasis::Default { weights } => {
                write!(f, "default for {} weights", weights.name())
            }
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
    /// Whether they agree (never for a row holding a NaN or ±Inf on either side).
    pub agree: bool,
}

/// Where a non-finite value of a comparison was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// In the expected values.
    Expected,
    /// In the computed values.
    Computed,
    /// The tolerance bound `atol + rtol · max |expected|` itself overflowed.
    Tolerance,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Expected => "expected",
            Side::Computed => "computed",
            Side::Tolerance => "tolerance",
        })
    }
}

/// The first non-finite value (NaN or ±Inf) met by a comparison; its presence fails it, since a
/// comparison with NaN or Inf proves nothing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NonFinite {
    /// Which side it is on.
    pub side: Side,
    /// Multi-index of the first one (empty for [`Side::Tolerance`]).
    pub at: Vec<usize>,
    /// The value (`"inf"`, `"-inf"` or `"NaN"` in JSON).
    #[serde(serialize_with = "number_or_text")]
    pub value: f64,
    /// How many positions hold a non-finite value on either side.
    pub count: usize,
}

/// Serializes a finite number as a JSON number and a non-finite one as text (JSON has no Inf).
fn number_or_text<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(&v.to_string())
    }
}

/// The result of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Which output of the model was compared (`None` when two arrays were compared directly).
    pub output: Option<crate::forward::Output>,
    /// Shape compared.
    pub shape: Vec<usize>,
    /// Number of values compared (never 0: an empty comparison is an error).
    pub compared: usize,
    /// Largest absolute difference over the positions where both values are finite.
    pub max_abs_error: f64,
    /// Where it occurs (multi-index).
    pub max_abs_error_at: Vec<usize>,
    /// Largest absolute difference divided by the largest expected magnitude.
    pub max_rel_error: f64,
    /// Largest finite expected magnitude.
    pub max_abs_expected: f64,
    /// Tolerances applied.
    pub tolerance: Tolerance,
    /// Why those: given by the caller, or the default for the model's weights (widened for
    /// f16/bf16 weights).
    pub tolerance_basis: ToleranceBasis,
    /// The bound the differences must stay within: `atol + rtol · max |expected|`.
    #[serde(serialize_with = "number_or_text")]
    pub bound: f64,
    /// The first non-finite value (in either array, or the bound), if any; it fails the comparison.
    pub non_finite: Option<NonFinite>,
    /// Per-sample top-1 agreement (2-D outputs only).
    pub top1: Vec<Top1>,
    /// Whether every value is finite and within tolerance. `passed` implies `compared > 0`,
    /// `non_finite` is `None` and `max_abs_error <= bound`.
    pub passed: bool,
}

impl Tolerance {
    /// Checks that both parts are finite and not negative.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTolerance`] naming the part.
    pub fn check(&self) -> Result<()> {
        for (part, value) in [("atol", self.atol), ("rtol", self.rtol)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ErrorKind::InvalidTolerance { part, value }.into());
            }
        }
        Ok(())
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (k, &v) in row.iter().enumerate() {
        if v > best_v {
            best = k;
            best_v = v;
        }
    }
    best
}

/// Compares computed values with expected ones of the same shape.
///
/// Passes only when at least one value is compared, every value on both sides is finite, the
/// bound `atol + rtol · max |expected|` is finite, and every difference is within it. A NaN or
/// ±Inf anywhere is a failure with its place in [`VerifyReport::non_finite`], never a pass.
///
/// ```
/// use vit_convert::verify::{compare, Side, Tolerance};
/// let r = compare(&[1.0, 2.0], &[1.0, 2.00001], &[1, 2], Tolerance::default())?;
/// assert!(r.passed);
/// assert_eq!(r.top1[0].expected, 1);
/// let r = compare(&[1.0, 2.0], &[1.0, f32::INFINITY], &[1, 2], Tolerance::default())?;
/// assert!(!r.passed);
/// assert_eq!(r.non_finite.unwrap().side, Side::Expected);
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::ShapeMismatch`] when a length differs from the shape's element count,
/// [`ErrorKind::EmptyComparison`] when the shape holds no values, [`ErrorKind::InvalidOption`]
/// for a negative or non-finite tolerance.
pub fn compare(
    got: &[f32],
    expected: &[f32],
    shape: &[usize],
    tol: Tolerance,
) -> Result<VerifyReport> {
    tol.check()?;
    let n = checked_numel(shape).ok_or_else(|| ErrorKind::InvalidLayout {
        reason: format!("shape {shape:?} overflows"),
    })?;
    if got.len() != n {
        return Err(ErrorKind::ShapeMismatch {
            computed: vec![got.len()],
            expected: shape.to_vec(),
        }
        .into());
    }
    if expected.len() != n {
        return Err(ErrorKind::ShapeMismatch {
            computed: shape.to_vec(),
            expected: vec![expected.len()],
        }
        .into());
    }
    if n == 0 {
        return Err(ErrorKind::EmptyComparison {
            what: "expected output",
            shape: shape.to_vec(),
        }
        .into());
    }
    let mut max_abs = 0f64;
    let mut at = 0usize;
    let mut max_exp = 0f64;
    let mut first: Option<(Side, usize, f64)> = None;
    let mut count = 0usize;
    for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let bad = if !e.is_finite() {
            Some((Side::Expected, e))
        } else if !g.is_finite() {
            Some((Side::Computed, g))
        } else {
            None
        };
        if let Some((side, v)) = bad {
            count += 1;
            first.get_or_insert((side, k, f64::from(v)));
            continue;
        }
        let diff = (f64::from(g) - f64::from(e)).abs();
        if diff > max_abs {
            max_abs = diff;
            at = k;
        }
        max_exp = max_exp.max(f64::from(e).abs());
    }
    let bound = tol.atol + tol.rtol * max_exp;
    let non_finite = match first {
        Some((side, k, value)) => Some(NonFinite {
            side,
            at: unravel(k, shape),
            value,
            count,
        }),
        None if !bound.is_finite() => Some(NonFinite {
            side: Side::Tolerance,
            at: Vec::new(),
            value: bound,
            count: 0,
        }),
        None => None,
    };
    let top1 = match shape {
        &[b, k] if k > 0 => (0..b)
            .filter_map(|i| {
                let row = i.checked_mul(k)?..i.checked_add(1)?.checked_mul(k)?;
                let (erow, grow) = (expected.get(row.clone())?, got.get(row)?);
                let (e, g) = (argmax(erow), argmax(grow));
                // An arg-max over NaN or ±Inf proves no agreement.
                let finite = erow.iter().chain(grow).all(|v| v.is_finite());
                Some(Top1 {
                    sample: i,
                    expected: e,
                    got: g,
                    agree: e == g && finite,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let passed = non_finite.is_none() && max_abs <= bound;
    Ok(VerifyReport {
        output: None,
        shape: shape.to_vec(),
        compared: n,
        max_abs_error: max_abs,
        max_abs_error_at: unravel(at, shape),
        max_rel_error: if max_exp > 0.0 {
            max_abs / max_exp
        } else {
            max_abs
        },
        max_abs_expected: max_exp,
        tolerance: tol,
        tolerance_basis: ToleranceBasis::Given,
        bound,
        non_finite,
        top1,
        passed,
    })
}

/// Runs the model on `input` (`[B, C, H, W]`) and compares its primary output (logits, or
/// `last_hidden_state` for headless models) with `expected`, under `tol` or, when `None`, the
/// default for the model's weights ([`Tolerance::for_model`]: widened for f16/bf16 weights).
/// [`VerifyReport::tolerance_basis`] says which applied.
///
/// ```
/// use vit_convert::{verify_model, F32Array, Model, Tolerance};
/// let model = Model::load("fixtures/convert/deit_distilled/hf")?;
/// let input = F32Array::read_npy("fixtures/convert/deit_distilled/io/batch5.npy")?;
/// // Logits transformers computed on the same input.
/// let expected = F32Array::read_npy("fixtures/convert/deit_distilled/io/logits_batch5_hf.npy")?;
/// let r = verify_model(&model, &input, &expected, &Default::default(), Some(Tolerance::strict()))?;
/// assert!(r.passed && r.top1.iter().all(|t| t.agree));
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// Forward errors; [`ErrorKind::EmptyComparison`] for an input with no values;
/// [`ErrorKind::BadValue`] for a NaN or ±Inf input pixel; [`ErrorKind::ShapeMismatch`] naming
/// both shapes when the output's differs from `expected`'s; the errors of [`compare`].
pub fn verify_model(
    model: &Model,
    input: &F32Array,
    expected: &F32Array,
    opts: &ForwardOptions,
    tol: Option<Tolerance>,
) -> Result<VerifyReport> {
    verify_model_with_progress(model, input, expected, opts, tol, &NoProgress)
}

/// [`verify_model`], reporting the forward pass to `progress`.
///
/// # Errors
/// As [`verify_model`].
pub fn verify_model_with_progress(
    model: &Model,
    input: &F32Array,
    expected: &F32Array,
    opts: &ForwardOptions,
    tol: Option<Tolerance>,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let numel = checked_numel(&input.shape).unwrap_or(0);
    if numel == 0 {
        return Err(ErrorKind::EmptyComparison {
            what: "input",
            shape: input.shape.clone(),
        }
        .into());
    }
    input.check_finite("input")?;
    let x = input.as_nchw()?;
    let out = model.forward_with_progress(x, opts, progress)?;
    let (which, shape, got) = out.select(opts.compare)?;
    if shape != expected.shape {
        return Err(ErrorKind::ShapeMismatch {
            computed: shape,
            expected: expected.shape.clone(),
        }
        .into());
    }
    let (tol, basis) = match tol {
        Some(t) => (t, ToleranceBasis::Given),
        None => (
            Tolerance::for_model(model),
            ToleranceBasis::Default {
                weights: model.weight_dtype(),
            },
        ),
    };
    let mut report = compare(&got, &expected.data, &shape, tol)?;
    report.tolerance_basis = basis;
    report.output = Some(which);
    if which != crate::forward::Output::Logits {
        // Top-1 agreement means something for class logits only.
        report.top1.clear();
    }
    Ok(report)
}

/// The former name of [`F32Array`] (it clashed with `ndarray::Array`).
#[deprecated(since = "0.1.0", note = "renamed F32Array")]
pub type Array = F32Array;

/// Reading and writing `.npy` (the array itself lives with the tensors, in [`crate::tensor`]).
impl F32Array {
    /// Reads a `.npy` file of any float dtype as f32. f16, bf16 and f32 convert exactly, and f64
    /// rounds to nearest; NaN and ±Inf are kept as they are (a comparison then fails on them, an
    /// input is refused by [`verify_model`]).
    ///
    /// # Errors
    /// Format errors; [`ErrorKind::UnexpectedDType`] for a non-float array;
    /// [`ErrorKind::BadValue`] naming the index and value of the first finite f64 beyond the f32
    /// range (it would silently become ±Inf).
    pub fn read_npy(path: impl AsRef<Path>) -> Result<F32Array> {
        F32Array::read_npy_with(path, &source::OpenOptions::default())
    }

    /// [`F32Array::read_npy`], opening the file as `opts` says.
    ///
    /// # Errors
    /// As [`F32Array::read_npy`].
    pub fn read_npy_with(path: impl AsRef<Path>, opts: &source::OpenOptions) -> Result<F32Array> {
        let path = path.as_ref();
        let src = source::open_with(path, opts)?;
        F32Array::from_npy_source(src.as_ref()).map_err(|e| e.with_path(path))
    }

    /// [`F32Array::read_npy`] on the bytes of a `.npy` file, in memory.
    ///
    /// ```
    /// let bytes = std::fs::read("fixtures/convert/timm_vit/io/logits_timm.npy")?;
    /// let logits = vit_convert::F32Array::parse_npy(bytes)?;
    /// assert_eq!(logits.shape, [2, 5]); // 2 samples, 5 classes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`F32Array::read_npy`].
    pub fn parse_npy(bytes: Vec<u8>) -> Result<F32Array> {
        let src = source::open_bytes(crate::mmap::FileBytes::from_vec(bytes))?;
        F32Array::from_npy_source(src.as_ref())
    }

    /// [`F32Array::read_npy`] on an opened source (a `.npy`).
    pub(crate) fn from_npy_source(src: &dyn source::TensorSource) -> Result<F32Array> {
        let wrong = || {
            Error::from(ErrorKind::InvalidOption {
                reason: "expected a single float array in a .npy file".into(),
            })
        };
        if src.format() != Format::Npy || src.tensors().len() != 1 {
            return Err(wrong());
        }
        let name = src.tensors().first().ok_or_else(wrong)?.name.clone();
        let t = src.read(&name)?;
        if !t.dtype.is_float() {
            return Err(Error::from(ErrorKind::UnexpectedDType {
                what: "a .npy array",
                found: t.dtype,
                shape: t.shape.clone(),
            }));
        }
        if t.dtype == DType::F64 {
            let beyond = t
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .enumerate()
                .find(|&(_, v)| v.is_finite() && (v as f32).is_infinite());
            if let Some((k, v)) = beyond {
                return Err(Error::from(ErrorKind::BadValue {
                    what: "f64",
                    index: unravel(k, &t.shape),
                    value: v,
                    problem: "is beyond the f32 range (±3.4028235e38) and would become ±Inf",
                }));
            }
        }
        let t = cast_float(t, DType::F32);
        Ok(F32Array {
            shape: t.shape.clone(),
            data: t
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }

    /// The bytes of the float32 `.npy` file [`F32Array::write_npy`] writes (for
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
}

/// Panics unless a passing report was proven: something compared, every value finite, a
/// finite bound, every difference within it. Does nothing for a failing report. For the
/// property test and the `verify_compare` fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn assert_pass_is_proven(got: &[f32], exp: &[f32], tol: Tolerance, r: &VerifyReport) {
    if !r.passed {
        return;
    }
    assert!(r.compared > 0 && !got.is_empty() && got.len() == exp.len());
    assert!(r.non_finite.is_none() && r.bound.is_finite());
    let max_exp = exp.iter().map(|&e| f64::from(e).abs()).fold(0.0, f64::max);
    let bound = tol.atol + tol.rtol * max_exp;
    assert!(bound.is_finite(), "the bound {bound} is not finite");
    for (&g, &e) in got.iter().zip(exp) {
        assert!(g.is_finite() && e.is_finite(), "{g} vs {e} passed");
        assert!(
            (f64::from(g) - f64::from(e)).abs() <= bound,
            "{g} vs {e} passed with bound {bound}"
        );
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
        let nf = r.non_finite.unwrap();
        assert_eq!((nf.side, nf.at, nf.count), (Side::Computed, vec![0], 1));
    }

    #[test]
    fn top1_never_agrees_on_a_row_holding_nan_or_inf() {
        // Before: the arg-max skipped the NaN, so the row "agreed" on class 1.
        let exp = [0.0f32, 1.0, 0.0, 1.0];
        let got = [f32::NAN, 1.0, 0.0, 1.0];
        let r = compare(&got, &exp, &[2, 2], Tolerance::default()).unwrap();
        assert!(!r.passed);
        assert_eq!((r.top1[0].expected, r.top1[0].got), (1, 1));
        assert!(!r.top1[0].agree);
        assert!(r.top1[1].agree);
        let r = compare(
            &exp,
            &[0.0, f32::INFINITY, 0.0, 1.0],
            &[2, 2],
            Tolerance::default(),
        );
        assert!(!r.unwrap().top1[0].agree);
    }

    #[test]
    fn inf_in_expected_fails_with_its_place_instead_of_widening_the_tolerance() {
        // Before: max |expected| = inf made the bound inf and every output passed.
        let exp = [1.0f32, 2.0, 3.0, f32::INFINITY];
        let got = [100.0f32, 2.0, 3.0, f32::INFINITY];
        let r = compare(&got, &exp, &[2, 2], Tolerance::default()).unwrap();
        assert!(!r.passed);
        let nf = r.non_finite.unwrap();
        assert_eq!(nf.side, Side::Expected);
        assert_eq!(nf.at, vec![1, 1]);
        assert_eq!(nf.value, f64::INFINITY);
        assert!(r.max_abs_error.is_finite() && r.bound.is_finite());
        let r = compare(&got, &exp, &[2, 2], Tolerance::default()).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["non_finite"]["value"], "inf");
        assert_eq!(json["non_finite"]["side"], "expected");
    }

    #[test]
    fn overflowing_tolerance_bound_fails() {
        let tol = Tolerance {
            atol: 0.0,
            rtol: 1e300,
        };
        let r = compare(&[1e30, 0.0], &[f32::MAX, 0.0], &[2], tol).unwrap();
        assert!(!r.passed);
        assert_eq!(r.non_finite.unwrap().side, Side::Tolerance);
    }

    #[test]
    fn empty_comparison_is_an_error() {
        let e = compare(&[], &[], &[0, 10], Tolerance::default()).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::EmptyComparison { shape, .. } if shape == &[0, 10]),
            "{e}"
        );
    }

    #[test]
    fn length_mismatch_names_both_shapes() {
        let e = compare(&[1.0], &[1.0, 2.0], &[2], Tolerance::default()).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::ShapeMismatch { computed, expected } if computed == &[1] && expected == &[2]),
            "{e}"
        );
    }

    #[test]
    fn bad_tolerances_are_refused() {
        for (atol, rtol, bad) in [
            (f64::INFINITY, 0.0, "atol"),
            (0.0, f64::NAN, "rtol"),
            (-1.0, 0.0, "atol"),
        ] {
            let e = compare(&[1.0], &[1.0], &[1], Tolerance { atol, rtol }).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::InvalidTolerance { part, .. } if *part == bad),
                "{e}"
            );
        }
        // The one Display test of this message.
        let e = Tolerance {
            atol: -1.0,
            rtol: 0.0,
        }
        .check()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tolerance atol must be a finite number >= 0, got -1"
        );
    }

    /// xorshift64*, for the property test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn value(&mut self) -> f32 {
            const EDGES: [f32; 10] = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                -f32::MAX,
                f32::MIN_POSITIVE,
                0.0,
                -0.0,
                1e-45,
                1.0,
            ];
            match self.below(4) {
                0 => EDGES[self.below(EDGES.len() as u64) as usize],
                1 => f32::from_bits(self.next() as u32),
                _ => (self.below(2001) as f32 - 1000.0) / 100.0,
            }
        }
    }

    /// The invariant the fuzz target `verify_compare` also checks, over many random and edge
    /// inputs: `passed` implies something was compared, every value was finite, and every
    /// difference lies within a finite bound.
    #[test]
    fn passed_implies_finite_nonempty_and_within_tolerance() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut passes = 0;
        for _ in 0..20_000 {
            let n = rng.below(6) as usize;
            let expected: Vec<f32> = (0..n).map(|_| rng.value()).collect();
            let got: Vec<f32> = expected
                .iter()
                .map(|&e| match rng.below(3) {
                    0 => e,
                    1 => e + (rng.below(3) as f32 - 1.0) * 1e-6,
                    _ => rng.value(),
                })
                .collect();
            let tol = Tolerance {
                atol: [0.0, 1e-5, 1.0, 1e300][rng.below(4) as usize],
                rtol: [0.0, 1e-4, 1e300][rng.below(3) as usize],
            };
            let shape = if n > 0 && rng.below(2) == 0 {
                vec![1, n]
            } else {
                vec![n]
            };
            if let Ok(r) = compare(&got, &expected, &shape, tol) {
                if r.passed {
                    passes += 1;
                }
                assert_pass_is_proven(&got, &expected, tol, &r);
            }
        }
        assert!(
            passes > 1000,
            "the property was exercised ({passes} passes)"
        );
    }

    #[test]
    fn default_tolerance_follows_the_weights_precision() {
        assert_eq!(Tolerance::for_weights(DType::F32), Tolerance::default());
        assert_eq!(Tolerance::for_weights(DType::F64), Tolerance::default());
        let (f16, bf16) = (
            Tolerance::for_weights(DType::F16),
            Tolerance::for_weights(DType::BF16),
        );
        assert_eq!((f16.atol, f16.rtol), (F16_ATOL, F16_RTOL));
        assert_eq!((bf16.atol, bf16.rtol), (BF16_ATOL, BF16_RTOL));
        assert!(Tolerance::default().rtol < f16.rtol && f16.rtol < bf16.rtol);
        // 32 and 8 times the unit roundoff (2^-9 for bf16, 2^-12 for f16).
        assert_eq!(bf16.rtol, 32.0 * 2f64.powi(-9));
        assert_eq!(f16.atol, 8.0 * 2f64.powi(-12));
        let basis = |weights| ToleranceBasis::Default { weights }.to_string();
        assert_eq!(
            basis(DType::BF16),
            "default for BF16 weights, widened for their rounding"
        );
        assert_eq!(basis(DType::F32), "default for F32 weights");
        assert_eq!(ToleranceBasis::Given.to_string(), "given");
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
