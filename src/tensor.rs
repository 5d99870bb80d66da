//! Tensor metadata ([`DType`], [`TensorInfo`]) and tensor data ([`Tensor`]).
//!
//! Tensor data is always C-contiguous and little-endian, whatever the container held.

use std::borrow::Cow;

use serde::Serialize;

use crate::error::{ErrorKind, Result};

pub use crate::vocab::DType;

/// Number of elements of a shape, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Byte length of a C-contiguous tensor, or `None` on overflow.
pub fn checked_byte_len(dtype: DType, shape: &[usize]) -> Option<usize> {
    checked_numel(shape)?.checked_mul(dtype.size())
}

/// A tensor's name, dtype and shape: what a listing shows, without data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// The tensor's name in its source (container path for nested checkpoints).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (empty for scalars).
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements. Readers validate shapes, so this does not overflow for listed tensors;
    /// it saturates otherwise.
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// Size of the tensor's data in bytes (saturating, as [`TensorInfo::numel`]).
    pub fn byte_len(&self) -> usize {
        checked_byte_len(self.dtype, &self.shape).unwrap_or(usize::MAX)
    }
}

/// A tensor's data: C-contiguous little-endian bytes, borrowed from the source when possible.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<'a> {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// `numel × dtype.size()` bytes, little-endian, C order.
    pub data: Cow<'a, [u8]>,
}

impl<'a> Tensor<'a> {
    /// Builds a tensor, checking that the data length matches the shape.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidLayout`] when `data.len()` is not `numel × dtype.size()`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Cow<'a, [u8]>) -> Result<Self> {
        let want = checked_byte_len(dtype, &shape).ok_or_else(|| ErrorKind::InvalidLayout {
            reason: format!("shape {shape:?} overflows"),
        })?;
        if want != data.len() {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "shape {shape:?} of {dtype} needs {want} bytes, got {}",
                    data.len()
                ),
            }
            .into());
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// Detaches the tensor from its source, copying borrowed data.
    pub fn into_owned(self) -> Tensor<'static> {
        Tensor {
            dtype: self.dtype,
            shape: self.shape,
            data: Cow::Owned(self.data.into_owned()),
        }
    }
}

/// Copies the elements of a strided view into C order.
///
/// `storage` holds little-endian elements of `elem` bytes each; `offset` and `strides` are in
/// elements. The caller has validated (with [`strided_extent`]) that every element lies inside
/// `storage`; this function re-checks and returns `None` rather than panic if it does not.
pub(crate) fn gather_strided(
    storage: &[u8],
    elem: usize,
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) -> Option<Vec<u8>> {
    let numel = checked_numel(shape)?;
    let total = numel.checked_mul(elem)?;
    let mut out = Vec::with_capacity(total);
    if numel == 0 {
        return Some(out);
    }
    let rank = shape.len();
    let mut index = vec![0usize; rank];
    let mut pos = offset;
    // Innermost dimension handled as a run when its stride is 1.
    let (inner_len, inner_stride) = match rank {
        0 => (1, 1),
        _ => (shape[rank - 1], strides[rank - 1]),
    };
    let outer_rank = rank.saturating_sub(1);
    loop {
        if inner_stride == 1 {
            let start = pos.checked_mul(elem)?;
            let end = start.checked_add(inner_len.checked_mul(elem)?)?;
            out.extend_from_slice(storage.get(start..end)?);
        } else {
            let mut p = pos;
            for _ in 0..inner_len {
                let start = p.checked_mul(elem)?;
                out.extend_from_slice(storage.get(start..start.checked_add(elem)?)?);
                p = p.checked_add(inner_stride)?;
            }
        }
        // Advance the outer index (odometer), adjusting `pos`.
        let mut d = outer_rank;
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            index[d] += 1;
            pos = pos.checked_add(strides[d])?;
            if index[d] < shape[d] {
                break;
            }
            pos = pos.checked_sub(strides[d].checked_mul(shape[d])?)?;
            index[d] = 0;
        }
    }
}

/// Number of storage elements a strided view touches, `offset + Σ (shape_k − 1)·stride_k + 1`,
/// or 0 for an empty view; `None` on overflow.
pub(crate) fn strided_extent(shape: &[usize], strides: &[usize], offset: usize) -> Option<usize> {
    if shape.len() != strides.len() {
        return None;
    }
    if shape.contains(&0) {
        return Some(0);
    }
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(strides) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}

/// True when `strides` describe the C-contiguous layout of `shape` (size-1 dims ignored).
pub(crate) fn is_c_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = match expected.checked_mul(d) {
            Some(e) => e,
            None => return false,
        };
    }
    true
}

/// Reverses the byte order of every `elem`-byte element in place (big-endian → little-endian).
pub(crate) fn swap_bytes_in_place(data: &mut [u8], elem: usize) {
    if elem > 1 {
        for chunk in data.chunks_exact_mut(elem) {
            chunk.reverse();
        }
    }
}

/// Converts a floating-point tensor to another floating-point dtype (round to nearest even, as
/// torch does). Integer and bool tensors, and tensors already of `to`, are returned unchanged.
/// Finite values beyond `to`'s range become ±Inf, as torch's `.half()` makes them; use
/// [`cast_float_checked`] to count or refuse that.
pub fn cast_float(t: Tensor<'_>, to: DType) -> Tensor<'_> {
    cast_float_counted(t, to).0
}

/// What a cast did to finite values: how many it turned into ±Inf or NaN, and the largest
/// magnitude among them. Values already non-finite in the source are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CastDamage {
    /// Finite values made non-finite.
    pub overflowed: u64,
    /// The largest magnitude among them (0 when none).
    pub max_abs: f64,
}

impl CastDamage {
    /// Adds another tensor's damage.
    pub fn add(&mut self, other: CastDamage) {
        self.overflowed = self.overflowed.saturating_add(other.overflowed);
        self.max_abs = self.max_abs.max(other.max_abs);
    }
}

/// The largest finite value of a float dtype (`f64::MAX` for non-float dtypes, which no cast
/// changes).
pub fn float_max(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => half::f16::MAX.to_f64(),
        DType::BF16 => half::bf16::MAX.to_f64(),
        DType::F32 => f64::from(f32::MAX),
        _ => f64::MAX,
    }
}

/// [`cast_float`] that refuses (unless `allow_overflow`) to turn finite values into ±Inf or NaN,
/// and otherwise says how many it did.
///
/// ```
/// use std::borrow::Cow;
/// use vit_convert::tensor::{cast_float_checked, DType, Tensor};
/// let bytes: Vec<u8> = [1.0f32, 1e5, f32::INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
/// let t = || Tensor::new(DType::F32, vec![3], Cow::Owned(bytes.clone())).unwrap();
/// let err = cast_float_checked(t(), DType::F16, false).err().unwrap();
/// assert!(matches!(err.kind(), vit_convert::ErrorKind::CastOverflow { count: 1, .. }));
/// let (half, damage) = cast_float_checked(t(), DType::F16, true)?;
/// assert_eq!((half.dtype, damage.overflowed, damage.max_abs), (DType::F16, 1, 1e5));
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::CastOverflow`] with the count and the largest
/// magnitude, when a finite value overflows and `allow_overflow` is false.
pub fn cast_float_checked(
    t: Tensor<'_>,
    to: DType,
    allow_overflow: bool,
) -> Result<(Tensor<'_>, CastDamage)> {
    let from = t.dtype;
    let (t, damage) = cast_float_counted(t, to);
    if damage.overflowed > 0 && !allow_overflow {
        return Err(crate::ErrorKind::CastOverflow {
            from,
            to,
            count: damage.overflowed,
            max_abs: damage.max_abs,
            limit: float_max(to),
        }
        .into());
    }
    Ok((t, damage))
}

fn cast_float_counted(t: Tensor<'_>, to: DType) -> (Tensor<'_>, CastDamage) {
    use half::{bf16, f16};
    let mut damage = CastDamage::default();
    if t.dtype == to || !t.dtype.is_float() || !to.is_float() {
        return (t, damage);
    }
    let values: Vec<f64> = match t.dtype {
        DType::F64 => t
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        DType::F32 => t
            .data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::F16 => t
            .data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DType::BF16 => t
            .data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => return (t, damage),
    };
    let mut out = Vec::with_capacity(values.len() * to.size());
    for v in values {
        let finite = match to {
            DType::F64 => {
                out.extend_from_slice(&v.to_le_bytes());
                true
            }
            // f64 → f32 → f16/bf16 would round twice; convert from f64 directly where it matters.
            DType::F32 => {
                let x = v as f32;
                out.extend_from_slice(&x.to_le_bytes());
                x.is_finite()
            }
            DType::F16 => {
                let x = f16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.is_finite()
            }
            DType::BF16 => {
                let x = bf16_from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.is_finite()
            }
            _ => true,
        };
        if !finite && v.is_finite() {
            damage.overflowed += 1;
            damage.max_abs = damage.max_abs.max(v.abs());
        }
    }
    (
        Tensor {
            dtype: to,
            shape: t.shape,
            data: Cow::Owned(out),
        },
        damage,
    )
}

/// f64 → bf16 rounded once, to nearest even. (`half`'s `bf16::from_f64` misrounds about one
/// value in 20 000, e.g. f32 `0x3D328005`.) Rounds to f32 *to odd*, then to bf16: with 16 spare
/// bits, round-to-odd followed by round-to-nearest-even is the correctly rounded result.
fn bf16_from_f64(v: f64) -> half::bf16 {
    let t = v as f32;
    if t.is_nan() || t.is_infinite() || f64::from(t) == v {
        return half::bf16::from_f32(t);
    }
    let bits = t.to_bits();
    let odd = if bits & 1 == 1 {
        bits
    } else if f64::from(t).abs() < v.abs() {
        bits.wrapping_add(1)
    } else {
        bits.wrapping_sub(1)
    };
    half::bf16::from_f32(f32::from_bits(odd))
}

/// The multi-index of the `flat`th element (C order) of an array of `shape`.
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = flat % d;
            flat /= d;
        }
    }
    idx
}

/// A float32 array read from or written to `.npy`: a model's input batch `[B, C, H, W]`, or its
/// expected or computed outputs. (Named apart from `ndarray::Array`; [`F32Array::as_nchw`]
/// gives an `ndarray` view.)
#[derive(Clone, Debug, PartialEq)]
pub struct F32Array {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub data: Vec<f32>,
}

impl F32Array {
    /// Checks that every value is finite.
    ///
    /// # Errors
    /// [`ErrorKind::BadValue`] naming the first NaN or ±Inf and its multi-index.
    pub fn check_finite(&self, what: &'static str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(k) => Err(ErrorKind::BadValue {
                what,
                index: unravel(k, &self.shape),
                value: self.data.get(k).copied().map_or(f64::NAN, f64::from),
                problem: "is not finite; a non-finite input proves nothing",
            }
            .into()),
        }
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
    fn bf16_cast_rounds_to_nearest_even_once() {
        // 0x3D328005: the dropped bits 0x8005 are above half: rounds up (torch, numpy, jax agree).
        let x = f32::from_bits(0x3D32_8005);
        assert_eq!(bf16_from_f64(f64::from(x)).to_bits(), 0x3D33);
        let t = Tensor::new(DType::F32, vec![1], Cow::Owned(x.to_le_bytes().to_vec())).unwrap();
        assert_eq!(cast_float(t, DType::BF16).data.as_ref(), &[0x33, 0x3D]);
        // Every f32 bit pattern class agrees with a direct f32 -> bf16 rounding.
        let mut s: u32 = 12345;
        for _ in 0..200_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = f32::from_bits(s);
            if x.is_finite() {
                let want = half::bf16::from_f32(x).to_bits();
                assert_eq!(bf16_from_f64(f64::from(x)).to_bits(), want, "{s:08x}");
            }
        }
        // A true f64 just above a bf16 tie rounds up; exactly on the tie rounds to even.
        let tie = f64::from(f32::from_bits(0x3F80_8000));
        assert_eq!(bf16_from_f64(tie).to_bits(), 0x3F80);
        assert_eq!(bf16_from_f64(tie + 1e-12).to_bits(), 0x3F81);
    }

    #[test]
    fn gather_transposed_matrix_reads_columns() {
        // storage is a 2x3 row-major matrix of u8; view is its transpose (3x2, strides [1,3]).
        let storage = [0u8, 1, 2, 3, 4, 5];
        let out = gather_strided(&storage, 1, &[3, 2], &[1, 3], 0).unwrap();
        assert_eq!(out, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn gather_honours_offset_and_zero_strides() {
        let storage = [9u8, 9, 7, 8];
        let out = gather_strided(&storage, 1, &[2, 2], &[0, 1], 2).unwrap();
        assert_eq!(out, vec![7, 8, 7, 8]);
    }

    #[test]
    fn gather_out_of_range_returns_none() {
        let storage = [0u8; 4];
        assert!(gather_strided(&storage, 1, &[5], &[1], 0).is_none());
    }

    #[test]
    fn extent_counts_last_element() {
        assert_eq!(strided_extent(&[2, 3], &[3, 1], 4), Some(10));
        assert_eq!(strided_extent(&[2, 0], &[3, 1], 4), Some(0));
        assert_eq!(strided_extent(&[usize::MAX, 2], &[2, 1], 0), None);
        assert_eq!(strided_extent(&[], &[], 5), Some(6));
    }

    #[test]
    fn contiguity_ignores_unit_dims() {
        assert!(is_c_contiguous(&[2, 1, 3], &[3, 99, 1]));
        assert!(!is_c_contiguous(&[3, 2], &[1, 3]));
    }

    #[test]
    fn tensor_new_rejects_wrong_length() {
        let e = Tensor::new(DType::F32, vec![2], Cow::Owned(vec![0; 7])).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidLayout { .. }));
    }
}
