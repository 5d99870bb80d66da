//! [`MemorySource`]: tensors held in memory, behind the same trait as the file readers — for
//! converters that build tensors themselves and write them with
//! [`write_safetensors`](crate::write::write_safetensors), and for tests.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{tensor_not_found, Format, TensorSource};
use crate::error::{ErrorKind, Result};
use crate::tensor::{Tensor, TensorInfo};

/// Tensors held in memory, listed in insertion order.
///
/// ```
/// use std::borrow::Cow;
/// use vit_convert::{source::MemorySource, tensor::Tensor, DType, TensorSource};
///
/// let mut src = MemorySource::new();
/// let bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
/// src.insert("bias", Tensor::new(DType::F32, vec![2], Cow::Owned(bytes))?)?;
/// assert_eq!(src.tensors()[0].shape, [2]);
/// assert_eq!(src.read("bias")?.data.len(), 8);
/// # Ok::<(), vit_convert::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    infos: Vec<TensorInfo>,
    data: Vec<Vec<u8>>,
    index: BTreeMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        MemorySource::default()
    }

    /// Adds a tensor (its data is copied if borrowed).
    ///
    /// # Errors
    /// [`ErrorKind::Duplicate`] when the name is already present; [`ErrorKind::InvalidLayout`]
    /// when the data length does not match the dtype and shape.
    pub fn insert(&mut self, name: &str, tensor: Tensor<'_>) -> Result<()> {
        let tensor = Tensor::new(tensor.dtype, tensor.shape, tensor.data)?;
        if self.index.contains_key(name) {
            return Err(ErrorKind::Duplicate {
                what: "tensor",
                name: name.to_string(),
            }
            .into());
        }
        self.index.insert(name.to_string(), self.infos.len());
        self.infos.push(TensorInfo {
            name: name.to_string(),
            dtype: tensor.dtype,
            shape: tensor.shape,
        });
        self.data.push(tensor.data.into_owned());
        Ok(())
    }

    /// Copies every tensor of another source (in its order).
    ///
    /// # Errors
    /// Read errors of `src`; [`ErrorKind::Duplicate`] for a name already present.
    pub fn copy_from(src: &dyn TensorSource) -> Result<MemorySource> {
        let mut out = MemorySource::new();
        for t in src.tensors() {
            out.insert(&t.name, src.read(&t.name)?)?;
        }
        Ok(out)
    }
}

impl TensorSource for MemorySource {
    /// Reported as safetensors, the layout the data is kept in (C order, little-endian).
    fn format(&self) -> Format {
        Format::Safetensors
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        let k = *self.index.get(name).ok_or_else(|| tensor_not_found(name))?;
        match (self.infos.get(k), self.data.get(k)) {
            (Some(info), Some(data)) => Ok(Tensor {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data: Cow::Borrowed(data),
            }),
            _ => Err(tensor_not_found(name)),
        }
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).and_then(|&k| self.infos.get(k))
    }
}
