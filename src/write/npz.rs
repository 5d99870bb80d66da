//! `.npz` writer (stored entries, npy format 1.0, little-endian, C order), for `--to npz`.
//! bfloat16 arrays are written as `<V2`, which is what numpy writes for `ml_dtypes.bfloat16`
//! and what timm's JAX loader reads back through `ml_dtypes`.

use std::io::{Cursor, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;

use super::{AtomicFile, WriteItem};
use crate::error::{Error, ErrorKind, Result};
use crate::source::npy::write_npy;
use crate::source::TensorSource;
use crate::tensor::{cast_float, DType};

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
        let mut npy = Vec::new();
        write_npy(&mut npy, t.dtype, &t.shape, &t.data)
            .map_err(|e| e.with_tensor(it.name.clone()))?;
        zip.write_all(&npy).map_err(io)?;
    }
    let bytes = zip.finish().map_err(zerr)?.into_inner();
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&bytes)?;
    out.commit()?;
    Ok(bytes.len() as u64)
}
