//! `diff`: how two checkpoints differ, tensor by tensor: names only in one, dtype and shape
//! changes, and for tensors of one shape the largest absolute and relative difference.
//!
//! Each side is read as its [`ReadAs`] says (as stored, or canonical through a mapping table),
//! so a `.pth` and its converted `model.safetensors` compare name for name when both are read
//! canonically (`--from auto` detects each side's family).
//!
//! Values are compared as f64 whatever their dtypes (integers and bools included). For each
//! tensor, `max_abs` is the largest `|a − b|` over positions where both values are finite;
//! `max_rel` is `max_abs` divided by the largest finite `|a|` or `|b|` (0 when both are all
//! zero); positions where the two differ and either is NaN or infinite are counted in
//! `non_finite`, NaN against NaN and equal infinities count as equal.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use serde::Serialize;

use crate::error::Result;
use crate::hash::{with_source_tensors, with_tensors, ReadAs, Reading};
use crate::source::TensorSource;
use crate::tensor::{DType, Tensor};
use crate::verify::Tolerance;

/// Options for [`diff`].
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// How to read A.
    pub a: ReadAs,
    /// How to read B.
    pub b: ReadAs,
    /// Accept value differences within this tolerance (and dtype changes): a tensor is within it
    /// when `max_abs ≤ atol + rtol · max |a|`, that bound is finite, and there is no NaN/infinity
    /// mismatch. `None`: only
    /// bit-identical checkpoints are alike.
    pub tolerance: Option<Tolerance>,
}

/// One tensor present in both checkpoints that is not bit-identical.
#[derive(Clone, Debug, Serialize)]
pub struct TensorDiff {
    /// Name.
    pub name: String,
    /// dtype in A.
    pub dtype_a: DType,
    /// dtype in B.
    pub dtype_b: DType,
    /// Shape in A.
    pub shape_a: Vec<usize>,
    /// Shape in B.
    pub shape_b: Vec<usize>,
    /// Largest `|a − b|` over finite pairs (`None` when the shapes differ).
    pub max_abs: Option<f64>,
    /// `max_abs` relative to the largest finite magnitude of either side (`None` when the
    /// shapes differ).
    pub max_rel: Option<f64>,
    /// Positions where the values differ and either is NaN or infinite.
    pub non_finite: u64,
    /// Whether the difference is within [`DiffOptions::tolerance`] (false without one).
    pub within_tolerance: bool,
}

/// What [`diff`] found.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// How A was read.
    pub a: Reading,
    /// How B was read.
    pub b: Reading,
    /// Names only A holds (sorted).
    pub only_in_a: Vec<String>,
    /// Names only B holds (sorted).
    pub only_in_b: Vec<String>,
    /// Tensors in both that are not bit-identical (sorted by name).
    pub changed: Vec<TensorDiff>,
    /// Number of names in both.
    pub common: usize,
    /// Of those, how many are bit-identical (same dtype, shape and bytes).
    pub identical_tensors: usize,
    /// The tolerance applied, if any.
    pub tolerance: Option<Tolerance>,
    /// Same names, and every tensor bit-identical.
    pub identical: bool,
    /// Same names and shapes, and every changed tensor within the tolerance (equals
    /// `identical` without one).
    pub equivalent: bool,
}

/// Compares two checkpoints.
///
/// ```
/// use vit_convert::{diff::{diff, DiffOptions}, hash::ReadAs};
/// // A timm .pth and the HF checkpoint made from it: the same canonical tensors.
/// let opts = DiffOptions {
///     a: ReadAs::family("timm".parse()?),
///     b: ReadAs::family("hf".parse()?),
///     ..Default::default()
/// };
/// let r = diff(
///     "fixtures/convert/timm_vit/source.pth",
///     "fixtures/convert/timm_vit/hf/model.safetensors",
///     &opts,
/// )?;
/// assert!(r.identical);
///
/// // Different weights of one architecture: same names, every tensor changed.
/// let opts = DiffOptions { a: ReadAs::auto(), b: ReadAs::auto(), ..Default::default() };
/// let r = diff(
///     "fixtures/convert/timm_vit/source.pth",
///     "fixtures/convert/timm_vit_noqkvbias/source.pth",
///     &opts,
/// )?;
/// assert!(!r.identical);
/// assert!(r.only_in_a.iter().any(|n| n.ends_with("query.bias")));
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// Reader and mapping errors, naming the file; [`crate::ErrorKind::InvalidOption`] for a
/// tolerance that is negative or not finite.
pub fn diff(a: impl AsRef<Path>, b: impl AsRef<Path>, opts: &DiffOptions) -> Result<DiffReport> {
    // An infinite, NaN or negative tolerance would make any two checkpoints "equivalent".
    if let Some(t) = &opts.tolerance {
        t.check()?;
    }
    with_tensors(a.as_ref(), &opts.a, |sa, ra| {
        with_tensors(b.as_ref(), &opts.b, |sb, rb| {
            compare(sa, ra, sb, rb, opts.tolerance)
        })
    })
}

/// [`diff()`] of two sources in memory (bytes opened with [`open_bytes`](crate::open_bytes),
/// or any [`TensorSource`]); the report's [`Reading::file`]s are `None`.
///
/// # Errors
/// As [`diff()`].
pub fn diff_sources(
    a: &dyn TensorSource,
    b: &dyn TensorSource,
    opts: &DiffOptions,
) -> Result<DiffReport> {
    if let Some(t) = &opts.tolerance {
        t.check()?;
    }
    with_source_tensors(a, None, &opts.a, |sa, ra| {
        with_source_tensors(b, None, &opts.b, |sb, rb| {
            compare(sa, ra, sb, rb, opts.tolerance)
        })
    })
}

fn compare(
    sa: &dyn TensorSource,
    ra: Reading,
    sb: &dyn TensorSource,
    rb: Reading,
    tolerance: Option<Tolerance>,
) -> Result<DiffReport> {
    let na: BTreeMap<&str, ()> = sa.tensors().iter().map(|t| (t.name.as_str(), ())).collect();
    let nb: BTreeMap<&str, ()> = sb.tensors().iter().map(|t| (t.name.as_str(), ())).collect();
    let only_in_a: Vec<String> = na
        .keys()
        .filter(|n| !nb.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    let only_in_b: Vec<String> = nb
        .keys()
        .filter(|n| !na.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    let mut changed = Vec::new();
    let mut common = 0usize;
    let mut identical_tensors = 0usize;
    for name in na.keys().filter(|n| nb.contains_key(*n)) {
        common += 1;
        let ta = sa.read(name).map_err(|e| e.with_tensor(*name))?;
        let tb = sb.read(name).map_err(|e| e.with_tensor(*name))?;
        if ta.dtype == tb.dtype && ta.shape == tb.shape && ta.data == tb.data {
            identical_tensors += 1;
            continue;
        }
        changed.push(tensor_diff(name, &ta, &tb, tolerance));
    }
    let identical = only_in_a.is_empty() && only_in_b.is_empty() && changed.is_empty();
    let equivalent = identical
        || (tolerance.is_some()
            && only_in_a.is_empty()
            && only_in_b.is_empty()
            && changed.iter().all(|c| c.within_tolerance));
    Ok(DiffReport {
        a: ra,
        b: rb,
        only_in_a,
        only_in_b,
        changed,
        common,
        identical_tensors,
        tolerance,
        identical,
        equivalent,
    })
}

fn tensor_diff(name: &str, a: &Tensor, b: &Tensor, tolerance: Option<Tolerance>) -> TensorDiff {
    let mut d = TensorDiff {
        name: name.to_string(),
        dtype_a: a.dtype,
        dtype_b: b.dtype,
        shape_a: a.shape.clone(),
        shape_b: b.shape.clone(),
        max_abs: None,
        max_rel: None,
        non_finite: 0,
        within_tolerance: false,
    };
    if a.shape != b.shape {
        return d;
    }
    let mut max_abs = 0f64;
    let mut max_a = 0f64;
    let mut max_mag = 0f64;
    let pairs = a
        .data
        .chunks_exact(a.dtype.size())
        .zip(b.data.chunks_exact(b.dtype.size()));
    for (ca, cb) in pairs {
        let (x, y) = (value(a.dtype, ca), value(b.dtype, cb));
        if x.is_finite() && y.is_finite() {
            max_abs = max_abs.max((x - y).abs());
            max_a = max_a.max(x.abs());
            max_mag = max_mag.max(x.abs()).max(y.abs());
        } else if !(x == y || (x.is_nan() && y.is_nan())) {
            d.non_finite = d.non_finite.saturating_add(1);
        }
    }
    d.max_abs = Some(max_abs);
    d.max_rel = Some(if max_mag > 0.0 {
        max_abs / max_mag
    } else {
        0.0
    });
    // A bound that overflows to Inf (f64 values near f64::MAX, rtol > 1) proves nothing: even an
    // infinite difference would be "within" it.
    d.within_tolerance = tolerance.is_some_and(|t| {
        let bound = t.atol + t.rtol * max_a;
        d.non_finite == 0 && bound.is_finite() && max_abs <= bound
    });
    d
}

/// One element as f64 (`bytes` holds exactly one element of `dtype`, little-endian).
fn value(dtype: DType, bytes: &[u8]) -> f64 {
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        <[u8; N]>::try_from(b).unwrap_or([0; N])
    }
    match dtype {
        DType::F64 => f64::from_le_bytes(arr(bytes)),
        DType::F32 => f64::from(f32::from_le_bytes(arr(bytes))),
        DType::F16 => f16::from_le_bytes(arr(bytes)).to_f64(),
        DType::BF16 => bf16::from_le_bytes(arr(bytes)).to_f64(),
        // i64 beyond 2^53 loses precision here; bit-identical tensors never get this far.
        DType::I64 => i64::from_le_bytes(arr(bytes)) as f64,
        DType::I32 => f64::from(i32::from_le_bytes(arr(bytes))),
        DType::I16 => f64::from(i16::from_le_bytes(arr(bytes))),
        DType::I8 => f64::from(i8::from_le_bytes(arr(bytes))),
        DType::U8 | DType::Bool => f64::from(u8::from_le_bytes(arr(bytes))),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn f32s(v: &[f32]) -> Tensor<'static> {
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor {
            dtype: DType::F32,
            shape: vec![v.len()],
            data: Cow::Owned(data),
        }
    }

    #[test]
    fn max_abs_and_rel_are_over_finite_pairs() {
        let d = tensor_diff(
            "t",
            &f32s(&[1.0, -4.0, f32::NAN, f32::INFINITY]),
            &f32s(&[1.5, -4.0, f32::NAN, f32::INFINITY]),
            None,
        );
        assert_eq!(d.max_abs, Some(0.5));
        assert_eq!(d.max_rel, Some(0.125));
        assert_eq!(d.non_finite, 0);
        assert!(!d.within_tolerance);
    }

    #[test]
    fn nan_against_a_number_is_counted_and_never_within_tolerance() {
        let tol = Tolerance {
            atol: 1.0,
            rtol: 1.0,
        };
        let d = tensor_diff("t", &f32s(&[1.0, 2.0]), &f32s(&[1.0, f32::NAN]), Some(tol));
        assert_eq!(d.non_finite, 1);
        assert!(!d.within_tolerance);
    }

    #[test]
    fn an_overflowing_bound_is_never_within_tolerance() {
        // Before: |1e308 - -1e308| = inf <= 0 + 2 · 1e308 = inf, "equivalent within the tolerance".
        let f64s = |v: &[f64]| Tensor {
            dtype: DType::F64,
            shape: vec![v.len()],
            data: Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        let tol = Tolerance {
            atol: 0.0,
            rtol: 2.0,
        };
        let d = tensor_diff("t", &f64s(&[1e308, 1.0]), &f64s(&[-1e308, 1.0]), Some(tol));
        assert_eq!(d.max_abs, Some(f64::INFINITY));
        assert!(!d.within_tolerance);
        let d = tensor_diff("t", &f64s(&[1e308]), &f64s(&[1e308 * 0.999]), Some(tol));
        assert!(
            !d.within_tolerance,
            "a finite difference against an Inf bound"
        );
    }

    #[test]
    fn f16_against_f32_compares_values() {
        let half: Vec<u8> = [0.5f32, 0.25]
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let b = Tensor {
            dtype: DType::F16,
            shape: vec![2],
            data: Cow::Owned(half),
        };
        let tol = Tolerance {
            atol: 0.0,
            rtol: 0.0,
        };
        let d = tensor_diff("t", &f32s(&[0.5, 0.25]), &b, Some(tol));
        assert_eq!(d.max_abs, Some(0.0));
        assert!(d.within_tolerance);
    }

    #[test]
    fn different_shapes_have_no_value_difference() {
        let d = tensor_diff("t", &f32s(&[1.0]), &f32s(&[1.0, 2.0]), None);
        assert_eq!(d.max_abs, None);
        assert!(!d.within_tolerance);
    }
}
