//! Placeholder until the reader lands (same commit series).
#![allow(dead_code)]
use crate::error::{ErrorKind, Result};
use crate::mmap::FileBytes;
use crate::source::{Format, TensorSource};
use crate::tensor::{Tensor, TensorInfo};
use std::collections::BTreeMap;

pub(crate) struct SafetensorsSource {
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsSource {
    pub(crate) fn parse(_bytes: FileBytes) -> Result<Self> {
        Err(ErrorKind::MalformedContainer {
            container: "safetensors",
            reason: "reader not built yet".into(),
        }
        .into())
    }
}

impl TensorSource for SafetensorsSource {
    fn format(&self) -> Format {
        Format::Npy
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        Err(ErrorKind::TensorNotFound { name: name.into() }.into())
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}
