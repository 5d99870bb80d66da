//! `.npz` writer (stored entries, npy format 1.0, little-endian, C order), for `--to npz`.
//! bfloat16 arrays are written as `<V2`, which is what numpy writes for `ml_dtypes.bfloat16`
//! and what timm's JAX loader reads back through `ml_dtypes`.
//!
//! The archive streams into the temporary file one tensor at a time (the zip writer seeks back
//! to fill in each entry's CRC and sizes), so memory does not grow with the model.

use std::io::{Seek, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;

use super::{read_item, AtomicFile, WriteItem};
use crate::error::{Error, ErrorKind, Result};
use crate::source::npy::npy_header;
use crate::source::TensorSource;
use crate::tensor::DType;

/// Writes an npz of the given tensors (entries in the given order, names + `.npy`) to a synced
/// temp file beside `dest`, to be committed by the caller.
///
/// # Errors
/// I/O and source errors; the destination is untouched.
pub(crate) fn stage_npz(
    dest: &Path,
    src: &dyn TensorSource,
    items: &[WriteItem],
    dtype: Option<DType>,
) -> Result<(AtomicFile, u64)> {
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .large_file(false);
    let zerr = |e: zip::result::ZipError| {
        Error::from(match e {
            zip::result::ZipError::Io(e) => ErrorKind::io("write", e),
            other => ErrorKind::Writer {
                format: crate::vocab::OutputFormat::Npz,
                reason: other.to_string(),
            },
        })
        .with_path(dest)
    };
    let io = |e| Error::from(ErrorKind::io("write", e)).with_path(dest);
    let mut out = AtomicFile::create(dest)?;
    let mut zip = zip::ZipWriter::new(out.writer()?);
    for it in items {
        let t = read_item(src, it, dtype)?;
        let header = npy_header(t.dtype, &t.shape).map_err(|e| e.with_tensor(it.name.clone()))?;
        zip.start_file(format!("{}.npy", it.name), opts)
            .map_err(zerr)?;
        zip.write_all(&header).map_err(io)?;
        zip.write_all(&t.data).map_err(io)?;
        drop(t);
        src.release_pages();
    }
    let w = zip.finish().map_err(zerr)?;
    let len = w.stream_position().map_err(io)?;
    out.sync()?;
    Ok((out, len))
}
