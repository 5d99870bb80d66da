//! `.npz` writer (stored entries, npy format 1.0, little-endian, C order), for `--to npz`.
//! bfloat16 arrays are written as `<V2`, which is what numpy writes for `ml_dtypes.bfloat16`
//! and what timm's JAX loader reads back through `ml_dtypes`.

use std::io::{Cursor, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;

use super::{AtomicFile, WriteItem};
use crate::error::{Error, ErrorKind, Result};
use crate::source::TensorSource;
use crate::tensor::{cast_float, DType};

fn descr(d: DType) -> &'static str {
    match d {
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

/// The npy 1.0 header for a C-order little-endian array (padded so data starts at a multiple of 64).
pub(crate) fn npy_header(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        descr(dtype)
    );
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes an npz of the given tensors (entries in the given order, names + `.npy`).
///
/// # Errors
/// I/O and source errors; the destination is untouched on failure.
pub fn write_npz(
    dest: &Path,
    src: &dyn TensorSource,
    items: &[WriteItem],
    dtype: Option<DType>,
) -> Result<u64> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .large_file(false);
    let zerr = |e: zip::result::ZipError| {
        Error::from(ErrorKind::MalformedContainer {
            container: "npz writer",
            reason: e.to_string(),
        })
        .with_path(dest)
    };
    for it in items {
        let t = src
            .read(&it.source)
            .map_err(|e| e.with_tensor(it.source.clone()))?;
        let t = match dtype {
            Some(d) => cast_float(t, d),
            None => t,
        };
        zip.start_file(format!("{}.npy", it.name), opts)
            .map_err(zerr)?;
        let io = |e| Error::from(ErrorKind::io("write", e)).with_path(dest);
        zip.write_all(&npy_header(t.dtype, &t.shape)).map_err(io)?;
        zip.write_all(&t.data).map_err(io)?;
    }
    let bytes = zip.finish().map_err(zerr)?.into_inner();
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&bytes)?;
    out.commit()?;
    Ok(bytes.len() as u64)
}
