//! The safetensors twin of a flax checkpoint (`format = flax` metadata), listed under flax names.

use std::collections::{BTreeMap, HashMap};

use crate::error::{ErrorKind, Result};
use crate::source::{tensor_not_found, Format, TensorSource};
use crate::tensor::{Tensor, TensorInfo};

/// A safetensors file written by late transformers 4.x `FlaxPreTrainedModel.save_pretrained(…,
/// safe_serialization=True)`: metadata `format = flax`, Flax kernel layouts, names flattened with
/// `.` (`flatten_dict(params, sep=".")`). Listed under the `/`-joined names of the Flax tree, so
/// that it converts with the `flax` table like `flax_model.msgpack` and is never mistaken for a
/// PyTorch-layout HF checkpoint (`.kernel`/`.scale` names would not match `hf` anyway).
pub(crate) struct FlaxSafetensors {
    inner: Box<dyn TensorSource>,
    tensors: Vec<TensorInfo>,
    inner_names: HashMap<String, String>,
}

impl FlaxSafetensors {
    /// True when safetensors metadata says the tensors are Flax's.
    pub(crate) fn is_flax(metadata: &BTreeMap<String, String>) -> bool {
        metadata.get("format").is_some_and(|f| f == "flax")
    }

    /// Renames the tensors of `inner` (`a.b.c` → `a/b/c`).
    ///
    /// # Errors
    /// [`ErrorKind::Duplicate`] if two names become one (a name that already held `/`).
    pub(crate) fn new(inner: Box<dyn TensorSource>) -> Result<Self> {
        let mut tensors = Vec::with_capacity(inner.tensors().len());
        let mut inner_names = HashMap::with_capacity(inner.tensors().len());
        for t in inner.tensors() {
            let name = t.name.replace('.', "/");
            if inner_names.insert(name.clone(), t.name.clone()).is_some() {
                return Err(ErrorKind::Duplicate {
                    what: "tensor",
                    name,
                }
                .into());
            }
            tensors.push(TensorInfo {
                name,
                dtype: t.dtype,
                shape: t.shape.clone(),
            });
        }
        Ok(FlaxSafetensors {
            inner,
            tensors,
            inner_names,
        })
    }
}

impl TensorSource for FlaxSafetensors {
    fn format(&self) -> Format {
        self.inner.format()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        let inner = self
            .inner_names
            .get(name)
            .ok_or_else(|| tensor_not_found(name))?;
        self.inner.read(inner)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner.metadata()
    }

    fn notes(&self) -> &[String] {
        self.inner.notes()
    }
}
