//! Flax `flax_model.msgpack`: what `flax.serialization.to_bytes(params)` writes (HF
//! `FlaxPreTrainedModel.save_pretrained`).
//!
//! The file is one msgpack value: a map of parameter names whose values are maps again (the
//! module tree) or arrays. An array is a msgpack extension value of type 1 whose payload is itself
//! msgpack: a 3-element array `(shape, dtype name, raw bytes)` — the shape an array of
//! non-negative integers, the dtype numpy's name (`float32`, `bfloat16`, …), the bytes C order in
//! the writer's native byte order (little-endian on every host flax runs on; the format does not
//! record it). Extension type 3 is a numpy scalar in the same encoding (listed as a tensor of the
//! shape it records, `[]` for a true scalar); type 2 is a Python complex
//! ([`ErrorKind::UnsupportedDType`](crate::error::ErrorKind::UnsupportedDType) `complex`). Arrays over 2^30 bytes are split by flax into
//! `{"__msgpack_chunked_array__": true, "shape": {"0": d0, …}, "chunks": {"0": ext, …}}` with
//! 1-D chunks of one dtype; the reader reassembles them (the one case where `read` copies).
//!
//! Names join the map keys with `/` (`vit/encoder/layer/0/attention/attention/query/kernel`),
//! listed in file order. A msgpack array inside the tree is walked like a map keyed `0`, `1`, ….
//! Other leaves (nil, booleans, numbers, strings, byte strings) are not tensors and are listed in
//! [`TensorSource::notes`](crate::source::TensorSource::notes).
//!
//! Decoding: [`rmp`]'s marker table classifies every byte that starts a value; the structure
//! walk is this module's own, so that it can hold to the crate's reader contract: the whole file
//! is validated in [`FlaxSource::parse`] with an explicit stack (no recursion on the input's
//! depth), every length is checked against the bytes actually present before it is used, nothing
//! is allocated from a declared count, and tensor data is borrowed from the file. Refused, with
//! specific [`ErrorKind`](crate::error::ErrorKind)s: a non-map or empty top level, trailing bytes, a non-string or repeated map key
//! ([`ErrorKind::Duplicate`](crate::error::ErrorKind::Duplicate)), two paths joining to one name, strings or payloads longer than
//! [`MAX_FLAX_PAYLOAD_LEN`](msgpack::MAX_FLAX_PAYLOAD_LEN), shapes of rank over [`MAX_FLAX_RANK`](msgpack::MAX_FLAX_RANK) or whose byte size is not the
//! payload's, unknown extension types, and chunked arrays that are not exactly what flax writes.
//!
//! Budgets ([`Limits`], [`ErrorKind::BudgetExceeded`](crate::error::ErrorKind::BudgetExceeded)): nesting deeper than
//! [`Limits::nesting_depth`] (`container nesting`), more than [`Limits::flax_values`] values
//! (`flax values`), more than [`Limits::tensors`] arrays (`tensor count`), and more than
//! [`Limits::tensor_name_bytes`] bytes in one path being walked or in all tensor names together
//! (`tensor name bytes`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::error::{malformed, Result};
use crate::limits::Limits;
use crate::mmap::FileBytes;
use crate::source::mapped::{Index, Mapped};
use crate::source::{tensor_not_found, Format};
use crate::tensor::{Tensor, TensorInfo};

pub(crate) mod msgpack;
mod tree;
mod twin;

pub(crate) use twin::FlaxSafetensors;

/// Where a tensor's bytes are.
#[derive(Clone, Debug)]
enum Stored {
    /// One range of the file.
    Contiguous(Range<usize>),
    /// The chunks of a chunked array, in order.
    Chunked(Vec<Range<usize>>),
}

/// A `flax_model.msgpack` file: its bytes and their [`Flax`] index.
pub(crate) type FlaxSource = Mapped<Flax>;

impl FlaxSource {
    /// Parses the file ([`Flax::parse`]) and keeps its bytes.
    ///
    /// # Errors
    /// As [`Flax::parse`].
    pub(crate) fn parse(bytes: FileBytes, limits: &Limits) -> Result<Self> {
        Mapped::parse_with(bytes, |b| Flax::parse(b, limits))
    }
}

/// The index of a `flax_model.msgpack` file.
pub(crate) struct Flax {
    tensors: Vec<TensorInfo>,
    stored: Vec<Stored>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    notes: Vec<String>,
}

impl Index for Flax {
    fn format(&self) -> Format {
        Format::Flax
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        let not_found = || tensor_not_found(name);
        let k = *self.by_name.get(name).ok_or_else(not_found)?;
        let info = self.tensors.get(k).ok_or_else(not_found)?;
        let outside = || {
            malformed(
                Format::Flax,
                format!("tensor {name}: data outside the file"),
            )
        };
        let data = match self.stored.get(k).ok_or_else(not_found)? {
            Stored::Contiguous(r) => Cow::Borrowed(bytes.get(r.clone()).ok_or_else(outside)?),
            Stored::Chunked(parts) => {
                // Validated at parse: the chunks add up to the listed shape.
                let mut out = Vec::with_capacity(info.byte_len());
                for r in parts {
                    out.extend_from_slice(bytes.get(r.clone()).ok_or_else(outside)?);
                }
                Cow::Owned(out)
            }
        };
        Tensor::new(info.dtype, info.shape.clone(), data)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }
}
