//! `flax_model.msgpack` writer, for `--to flax`: the bytes `flax.serialization.to_bytes(params)`
//! writes for the same tree.
//!
//! What flax does, and so what this writer does: the `/`-separated names become nested msgpack
//! maps whose keys are sorted at every level (jax's pytree flattening sorts dict keys, and HF's
//! params come out of it); every array is msgpack extension type 1 whose payload is the msgpack
//! array `(shape, dtype name, C-order bytes)` (`_ndarray_to_bytes`, `use_bin_type=True`); an array
//! over 2^30 bytes is written as flax's chunked map `{"__msgpack_chunked_array__": true, "shape":
//! {"0": …}, "chunks": {"0": …}}` with 1-D chunks of `2^30 / itemsize` elements. msgpack-python and
//! [`rmp::encode`] both choose the shortest encoding for every length and integer, so the bytes
//! agree. Tensors are read and written one at a time.

use std::collections::BTreeMap;
use std::path::Path;

use rmp::encode;

use super::{read_item, AtomicFile, WriteItem};
use crate::error::{Error, ErrorKind, Result};
use crate::source::flax::msgpack::{numpy_dtype_name, CHUNKED_KEY, EXT_NDARRAY};
use crate::source::TensorSource;
use crate::tensor::DType;

/// Arrays larger than this many bytes are chunked (flax `serialization.MAX_CHUNK_SIZE`).
pub(crate) const FLAX_MAX_CHUNK_SIZE: usize = 1 << 30;

fn encode_err<E: std::fmt::Display>(e: E) -> Error {
    Error::from(ErrorKind::InvalidOption {
        reason: format!("msgpack encoding: {e}"),
    })
}

fn len_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::from(ErrorKind::InvalidLayout {
            reason: format!("{what} of {n} bytes does not fit msgpack's 32-bit length"),
        })
    })
}

/// The nested maps of the output: each map's children sorted by key.
enum TreeNode {
    Map(BTreeMap<String, usize>),
    Leaf(usize),
}

/// Builds the key tree of `items` (names split at `/`).
fn build_tree(items: &[WriteItem]) -> Result<Vec<TreeNode>> {
    let mut nodes = vec![TreeNode::Map(BTreeMap::new())];
    for (k, it) in items.iter().enumerate() {
        let parts: Vec<&str> = it.name.split('/').collect();
        let mut cur = 0usize;
        for (j, part) in parts.iter().enumerate() {
            let last = j + 1 == parts.len();
            let next_id = nodes.len();
            let conflict = || {
                Error::from(ErrorKind::Duplicate {
                    what: "flax tree path",
                    name: it.name.clone(),
                })
            };
            let TreeNode::Map(children) = nodes.get_mut(cur).ok_or_else(conflict)? else {
                return Err(conflict());
            };
            match children.get(*part) {
                Some(_) if last => return Err(conflict()),
                Some(&c) => cur = c,
                None => {
                    children.insert((*part).to_string(), next_id);
                    nodes.push(if last {
                        TreeNode::Leaf(k)
                    } else {
                        TreeNode::Map(BTreeMap::new())
                    });
                    cur = next_id;
                }
            }
        }
    }
    Ok(nodes)
}

/// Streams msgpack to an [`AtomicFile`], counting bytes.
struct Out<'f> {
    file: &'f mut AtomicFile,
    buf: Vec<u8>,
    written: u64,
}

impl Out<'_> {
    /// Writes the encoded bytes collected in `buf`.
    fn flush(&mut self) -> Result<()> {
        self.file.write_all(&self.buf)?;
        self.written = self.written.saturating_add(self.buf.len() as u64);
        self.buf.clear();
        Ok(())
    }

    fn raw(&mut self, data: &[u8]) -> Result<()> {
        self.flush()?;
        self.file.write_all(data)?;
        self.written = self.written.saturating_add(data.len() as u64);
        Ok(())
    }

    fn map_len(&mut self, n: usize) -> Result<()> {
        encode::write_map_len(&mut self.buf, len_u32(n, "map")?).map_err(encode_err)?;
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<()> {
        len_u32(s.len(), "string")?;
        encode::write_str(&mut self.buf, s).map_err(encode_err)
    }

    fn uint(&mut self, v: usize) -> Result<()> {
        encode::write_uint(&mut self.buf, v as u64).map_err(encode_err)?;
        Ok(())
    }

    /// One ndarray extension value: `ext 1 [(shape…), "dtype", bin data]`.
    fn ndarray(&mut self, dtype: DType, shape: &[usize], data: &[u8]) -> Result<()> {
        let mut head = Vec::new();
        encode::write_array_len(&mut head, 3).map_err(encode_err)?;
        encode::write_array_len(&mut head, len_u32(shape.len(), "shape")?).map_err(encode_err)?;
        for &d in shape {
            encode::write_uint(&mut head, d as u64).map_err(encode_err)?;
        }
        encode::write_str(&mut head, numpy_dtype_name(dtype)).map_err(encode_err)?;
        encode::write_bin_len(&mut head, len_u32(data.len(), "array data")?).map_err(encode_err)?;
        let payload = head
            .len()
            .checked_add(data.len())
            .ok_or_else(|| encode_err("payload length overflows"))?;
        encode::write_ext_meta(
            &mut self.buf,
            len_u32(payload, "array payload")?,
            EXT_NDARRAY,
        )
        .map_err(encode_err)?;
        self.buf.extend_from_slice(&head);
        self.raw(data)
    }

    /// An array as flax writes it: one ndarray, or the chunked map above `chunk_bytes`.
    fn array(
        &mut self,
        dtype: DType,
        shape: &[usize],
        data: &[u8],
        chunk_bytes: usize,
    ) -> Result<()> {
        if data.len() <= chunk_bytes {
            return self.ndarray(dtype, shape, data);
        }
        // flax `_chunk`: chunksize = max(1, int(MAX_CHUNK_SIZE / itemsize)) elements.
        let elems = (chunk_bytes / dtype.size()).max(1);
        let step = elems.saturating_mul(dtype.size());
        let chunks: Vec<&[u8]> = data.chunks(step).collect();
        self.map_len(3)?;
        self.str(CHUNKED_KEY)?;
        encode::write_bool(&mut self.buf, true).map_err(encode_err)?;
        self.str("shape")?;
        self.map_len(shape.len())?;
        for (i, &d) in shape.iter().enumerate() {
            self.str(&i.to_string())?;
            self.uint(d)?;
        }
        self.str("chunks")?;
        self.map_len(chunks.len())?;
        for (i, c) in chunks.iter().enumerate() {
            self.str(&i.to_string())?;
            self.ndarray(dtype, &[c.len() / dtype.size()], c)?;
        }
        Ok(())
    }
}

/// Writes `flax_model.msgpack`: `items` named with `/`-separated paths, read from `src`, to a
/// synced temp file beside `dest`, to be committed by the caller. `chunk_bytes` is the chunking
/// threshold ([`FLAX_MAX_CHUNK_SIZE`]; tests use small ones).
///
/// `dtype` converts floating-point tensors (integers are kept).
///
/// # Errors
/// [`ErrorKind::Duplicate`] when two names collide or one name is a prefix of another, I/O and
/// source errors; the destination is untouched on failure.
pub(crate) fn stage_flax(
    dest: &Path,
    src: &dyn TensorSource,
    items: &[WriteItem],
    dtype: Option<DType>,
    chunk_bytes: usize,
) -> Result<(AtomicFile, u64)> {
    let tree = build_tree(items)?;
    let mut file = AtomicFile::create(dest)?;
    let mut out = Out {
        file: &mut file,
        buf: Vec::new(),
        written: 0,
    };
    // Explicit stack of (children in key order, next index); the tree is as deep as the names.
    let children = |id: usize| -> Vec<(String, usize)> {
        match tree.get(id) {
            Some(TreeNode::Map(m)) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            _ => Vec::new(),
        }
    };
    let root = children(0);
    out.map_len(root.len())?;
    let mut stack = vec![(root, 0usize)];
    while let Some((kids, next)) = stack.last_mut() {
        let Some((key, id)) = kids.get(*next).cloned() else {
            stack.pop();
            continue;
        };
        *next += 1;
        out.str(&key)?;
        match tree.get(id) {
            Some(TreeNode::Leaf(k)) => {
                let it = items.get(*k).ok_or_else(|| encode_err("dangling item"))?;
                let t = read_item(src, it, dtype)?;
                out.array(t.dtype, &t.shape, &t.data, chunk_bytes)
                    .map_err(|e| e.with_tensor(it.name.clone()))?;
            }
            _ => {
                let kids = children(id);
                out.map_len(kids.len())?;
                stack.push((kids, 0));
            }
        }
    }
    out.flush()?;
    let written = out.written;
    file.sync()?;
    Ok((file, written))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::mmap::FileBytes;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/flax")
            .join(name)
    }

    fn rewrite(input: &str, chunk_bytes: usize) -> Vec<u8> {
        let src = crate::source::open(fixture(input)).unwrap();
        let items: Vec<WriteItem> = src
            .tensors()
            .iter()
            .map(|t| WriteItem {
                name: t.name.clone(),
                source: t.name.clone(),
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.msgpack");
        let (f, n) = stage_flax(&dest, src.as_ref(), &items, None, chunk_bytes).unwrap();
        f.commit().unwrap();
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(n, bytes.len() as u64);
        bytes
    }

    #[test]
    fn chunking_is_byte_identical_to_flax_chunk() {
        let small: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
        let small = small["small_chunk"].as_u64().unwrap() as usize;
        let chunked = std::fs::read(fixture("vit_model_chunked.msgpack")).unwrap();
        let whole = std::fs::read(fixture("vit_model/flax_model.msgpack")).unwrap();
        assert!(rewrite("vit_model/flax_model.msgpack", small) == chunked);
        assert!(rewrite("vit_model_chunked.msgpack", FLAX_MAX_CHUNK_SIZE) == whole);
    }

    #[test]
    fn generic_state_rewrites_its_arrays_in_sorted_order() {
        // scalars.msgpack holds non-array leaves too; its arrays alone, sorted, read back equal.
        let out = rewrite("scalars.msgpack", FLAX_MAX_CHUNK_SIZE);
        let src = crate::source::open_bytes(FileBytes::from_vec(out)).unwrap();
        let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["params/b", "params/w", "step"]);
    }

    #[test]
    fn colliding_paths_are_refused() {
        let item = |n: &str| WriteItem {
            name: n.into(),
            source: n.into(),
        };
        for names in [["a/b", "a"], ["a", "a/b"], ["a", "a"]] {
            let items: Vec<WriteItem> = names.iter().map(|n| item(n)).collect();
            let e = build_tree(&items).err().unwrap();
            assert!(matches!(e.kind(), ErrorKind::Duplicate { .. }), "{names:?}");
        }
    }
}
