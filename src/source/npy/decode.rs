//! Stored `.npy` array bytes to C-order little-endian: byte swaps and Fortran-order gathers.

use std::borrow::Cow;

use crate::error::{Error, ErrorKind, Result};
use crate::tensor;

use super::{ByteOrder, NpyHeader};

/// Turns stored array bytes (exactly `header.data_len` of them) into C-order little-endian bytes:
/// borrowed as they are when already so, otherwise byte-swapped and/or gathered.
pub(crate) fn decode_npy_data<'a>(
    header: &NpyHeader,
    data: Cow<'a, [u8]>,
) -> Result<Cow<'a, [u8]>> {
    if data.len() != header.data_len {
        return Err(ErrorKind::InvalidLayout {
            reason: format!(
                "npy data has {} bytes, shape {:?} of {} needs {}",
                data.len(),
                header.shape,
                header.descr,
                header.data_len
            ),
        }
        .into());
    }
    if header.is_c_little_endian() {
        return Ok(data);
    }
    let elem = header.dtype.size();
    let mut out = if header.fortran_order {
        // Fortran order: element (i0, …, in) at Σ ik·sk with s0 = 1, sk = sk-1 · dk-1.
        let mut strides = Vec::with_capacity(header.shape.len());
        let mut stride = 1usize;
        for &d in &header.shape {
            strides.push(stride);
            stride = stride.saturating_mul(d);
        }
        tensor::gather_strided(&data, elem, &header.shape, &strides, 0).ok_or_else(|| {
            Error::from(ErrorKind::InvalidLayout {
                reason: format!(
                    "npy Fortran-order shape {:?} does not fit its {} data bytes",
                    header.shape,
                    data.len()
                ),
            })
        })?
    } else {
        data.into_owned()
    };
    if header.byte_order == ByteOrder::Big {
        tensor::swap_bytes_in_place(&mut out, elem);
    }
    Ok(Cow::Owned(out))
}
