//! The one owner of a checkpoint's bytes: [`Mapped`] pairs the [`FileBytes`] with a parsed
//! [`Index`] and serves reads, page release and byte-range location for every reader.
//!
//! Parsers stay functions over `&[u8]` that build an index; only this type holds the file.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::mmap::FileBytes;
use crate::source::{Format, TensorSource};
use crate::tensor::{Tensor, TensorInfo};

/// What a container parser produces from the file's bytes: the listing, and how to read one
/// tensor back out of those same bytes.
pub(crate) trait Index: Send + Sync {
    /// The container format.
    fn format(&self) -> Format;

    /// Every tensor, in the order the file lists them.
    fn tensors(&self) -> &[TensorInfo];

    /// Reads tensor `name` from `bytes`, the bytes this index was parsed from.
    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>>;

    /// Container metadata, sorted by key.
    fn metadata(&self) -> &BTreeMap<String, String>;

    /// Notes about things seen but not turned into tensors.
    fn notes(&self) -> &[String] {
        &[]
    }
}

/// A checkpoint's bytes and the index parsed from them: the [`TensorSource`] of every reader.
pub(crate) struct Mapped<I> {
    /// Shared so that an index may keep a handle on the bytes too (the npz zip reader does).
    bytes: Arc<FileBytes>,
    index: I,
}

impl<I: Index> Mapped<I> {
    /// Pairs `bytes` with the index parsed from them.
    pub(crate) fn new(bytes: Arc<FileBytes>, index: I) -> Self {
        Mapped { bytes, index }
    }
}

impl<I: Index> TensorSource for Mapped<I> {
    fn format(&self) -> Format {
        self.index.format()
    }

    fn tensors(&self) -> &[TensorInfo] {
        self.index.tensors()
    }

    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        self.index.read(&self.bytes, name)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        self.index.metadata()
    }

    fn notes(&self) -> &[String] {
        self.index.notes()
    }

    fn release_pages(&self) {
        self.bytes.release();
    }

    fn locate(&self, data: &[u8]) -> Option<(&std::fs::File, u64)> {
        self.bytes.locate(data)
    }
}
