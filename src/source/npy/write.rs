//! The `.npy` writer: the one codec `verify` and the writers (`write/`) import.

use crate::error::{Error, ErrorKind, Result};
use crate::tensor::{self, DType};

use super::{NPY_HEADER_ALIGN, NPY_MAGIC, V1_PREAMBLE_LEN, V2_PREAMBLE_LEN};

/// The descr [`write_npy`] writes for a dtype.
// Used by the npz writer (`--to npz`), which lands later.
#[cfg_attr(not(test), allow(dead_code))]
///
/// BF16 is written as `<V2`, exactly what `np.save` writes for an `ml_dtypes.bfloat16` array:
/// `np.load` reads it back (as a 2-byte void array, to be `.view(ml_dtypes.bfloat16)`, which is
/// what JAX/big_vision checkpoints hold) without needing `ml_dtypes` installed, whereas a
/// `'bfloat16'` descr only loads where `ml_dtypes` has been imported.
pub(crate) fn npy_descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "<f8",
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => "<V2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
    }
}

/// Appends a `.npy` (v1.0 little-endian C order, as `np.save` writes it; v2.0 only if the
/// header would not fit v1's u16 length) holding `data_le` to `out`.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when `data_le` is not `numel × dtype.size()` bytes.
pub(crate) fn write_npy(
    out: &mut Vec<u8>,
    dtype: DType,
    shape: &[usize],
    data_le: &[u8],
) -> Result<()> {
    let want = tensor::checked_byte_len(dtype, shape);
    if want != Some(data_le.len()) {
        return Err(ErrorKind::InvalidLayout {
            reason: format!(
                "write_npy: shape {shape:?} of {dtype} needs {want:?} bytes, got {}",
                data_le.len()
            ),
        }
        .into());
    }
    let header = npy_header(dtype, shape)?;
    out.reserve(header.len() + data_le.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(data_le);
    Ok(())
}

/// The magic, version, length and padded header of a `.npy` of `shape` (what [`write_npy`]
/// writes before the data), for writers that stream the data separately.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when the header does not fit npy 2.0's length field.
pub(crate) fn npy_header(dtype: DType, shape: &[usize]) -> Result<Vec<u8>> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        npy_descr(dtype)
    );
    // numpy: pad with spaces so preamble + header + '\n' is a multiple of 64.
    let mut preamble = V1_PREAMBLE_LEN;
    let padded = |preamble: usize, len: usize| {
        let unpadded = preamble + len + 1;
        len + (NPY_HEADER_ALIGN - unpadded % NPY_HEADER_ALIGN) % NPY_HEADER_ALIGN + 1
    };
    let mut total = padded(preamble, header.len());
    let v1 = u16::try_from(total).is_ok();
    if !v1 {
        preamble = V2_PREAMBLE_LEN;
        total = padded(preamble, header.len());
    }
    while header.len() + 1 < total {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(preamble + header.len());
    out.extend_from_slice(NPY_MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        let len = u16::try_from(header.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        let len = u32::try_from(header.len()).map_err(|_| {
            Error::from(ErrorKind::InvalidLayout {
                reason: format!("write_npy: header for shape {shape:?} too long"),
            })
        })?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}
