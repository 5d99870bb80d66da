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

    /// Builds the index of `bytes` with `parse` and keeps the bytes next to it.
    ///
    /// # Errors
    /// As `parse`.
    pub(crate) fn parse_with(
        bytes: FileBytes,
        parse: impl FnOnce(&[u8]) -> Result<I>,
    ) -> Result<Self> {
        let index = parse(&bytes)?;
        Ok(Mapped::new(Arc::new(bytes), index))
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io::{Read, Seek, SeekFrom};

    use crate::source::{open, Format};

    /// Every reader's source is a [`Mapped`](super::Mapped): a tensor borrowed from a mapped
    /// file is located in that file, at the offset of the very bytes read, after pages are
    /// released too.
    #[test]
    fn every_reader_locates_borrowed_tensors_in_its_file() {
        for (path, format) in [
            (
                "fixtures/convert/timm_vit/hf/model.safetensors",
                Format::Safetensors,
            ),
            ("fixtures/convert/timm_vit/source.pth", Format::TorchZip),
            ("fixtures/convert/timm_vit/legacy.pth", Format::TorchLegacy),
            ("fixtures/convert/jax_vit/source.npz", Format::Npz),
            ("fixtures/convert/image/cat_rgb_u8.npy", Format::Npy),
            ("fixtures/flax/vit_cls/flax_model.msgpack", Format::Flax),
        ] {
            let src = open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(src.format(), format, "{path}");
            let mut borrowed = 0;
            for info in src.tensors() {
                let t = src
                    .read(&info.name)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                src.release_pages();
                let Cow::Borrowed(data) = t.data else {
                    continue;
                };
                borrowed += 1;
                let (file, offset) = src
                    .locate(data)
                    .unwrap_or_else(|| panic!("{path}: {} not located", info.name));
                let mut file = file.try_clone().unwrap();
                file.seek(SeekFrom::Start(offset)).unwrap();
                let mut on_disk = vec![0u8; data.len()];
                file.read_exact(&mut on_disk).unwrap();
                assert_eq!(on_disk, data, "{path}: {}", info.name);
            }
            assert!(borrowed > 0, "{path}: no tensor borrowed from the file");
        }
    }
}
