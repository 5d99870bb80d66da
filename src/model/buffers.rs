//! Stored buffers that a model's geometry implies (BEiT's `relative_position_index`, which the
//! microsoft/unilm checkpoints persist and timm and transformers compute): a table lists them in
//! `[[buffer]]`; conversion checks each against the geometry and drops it. One that differs is
//! refused: it says the weights were trained for another geometry (or the file was altered), and
//! dropping it silently would hide that.

use super::{relative_position_index, ViTConfig};
use crate::error::{ErrorKind, Result};
use crate::mapping::{BufferKind, MappingError, MappingTable};
use crate::source::TensorSource;
use crate::tensor::{unravel, DType};

/// Checks the buffer `name` of `src` against what `config`'s geometry gives for `kind`.
///
/// # Errors
/// Reader errors naming the tensor; [`ErrorKind::Mapping`] with
/// [`MappingError::BufferLayout`] (another shape or a non-integer dtype) or
/// [`MappingError::BufferMismatch`] (the first value that differs), naming the table's line.
pub(crate) fn check_buffer(
    src: &dyn TensorSource,
    table: &MappingTable,
    (name, kind, line): (&str, BufferKind, usize),
    config: &ViTConfig,
) -> Result<()> {
    let err = |problem| -> crate::Error {
        ErrorKind::Mapping {
            table: table.id.clone(),
            file: table.file.clone(),
            line,
            problem,
        }
        .into()
    };
    let info = src.info(name).ok_or_else(|| ErrorKind::TensorNotFound {
        name: name.to_string(),
    })?;
    if kind == BufferKind::Zeros {
        if !info.dtype.is_float() {
            return Err(err(MappingError::BufferNotFloat {
                tensor: name.to_string(),
                dtype: info.dtype,
            }));
        }
        let t = src
            .read(name)
            .map_err(|e| e.with_tensor(name.to_string()))?;
        let values = crate::tensor::cast_float(t, DType::F64);
        let shape = values.shape.clone();
        for (k, chunk) in values.data.chunks_exact(8).enumerate() {
            let v = f64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if v != 0.0 {
                return Err(err(MappingError::BufferNotZero {
                    tensor: name.to_string(),
                    at: unravel(k, &shape),
                    value: v.to_string(),
                }));
            }
        }
        return Ok(());
    }
    let g = config.grid();
    let shape = {
        let t = g.saturating_mul(g).saturating_add(1);
        vec![t, t]
    };
    let width = match info.dtype {
        DType::I64 => 8,
        DType::I32 => 4,
        _ => 0,
    };
    if width == 0 || info.shape != shape {
        return Err(err(MappingError::BufferLayout {
            tensor: name.to_string(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            expected: shape,
        }));
    }
    // The buffer holds as many elements as the index has: computing it costs what the file
    // already holds, never what a config alone asks for.
    let expected = relative_position_index(g, g);
    let t = src
        .read(name)
        .map_err(|e| e.with_tensor(name.to_string()))?;
    for (k, (chunk, want)) in t.data.chunks_exact(width).zip(&expected).enumerate() {
        let found = match *chunk {
            [a, b, c, d, e, f, g, h] => i64::from_le_bytes([a, b, c, d, e, f, g, h]),
            [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
            _ => 0,
        };
        let want = i64::try_from(*want).unwrap_or(i64::MAX);
        if found != want {
            return Err(err(MappingError::BufferMismatch {
                tensor: name.to_string(),
                at: unravel(k, &shape),
                expected: want,
                found,
            }));
        }
    }
    Ok(())
}
