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
//! ([`ErrorKind::UnsupportedDType`] `complex`). Arrays over 2^30 bytes are split by flax into
//! `{"__msgpack_chunked_array__": true, "shape": {"0": d0, …}, "chunks": {"0": ext, …}}` with
//! 1-D chunks of one dtype; the reader reassembles them (the one case where `read` copies).
//!
//! Names join the map keys with `/` (`vit/encoder/layer/0/attention/attention/query/kernel`),
//! listed in file order. A msgpack array inside the tree is walked like a map keyed `0`, `1`, ….
//! Other leaves (nil, booleans, numbers, strings, byte strings) are not tensors and are listed in
//! [`TensorSource::notes`].
//!
//! Decoding: [`rmp`]'s marker table classifies every byte that starts a value; the structure
//! walk is this module's own, so that it can hold to the crate's reader contract: the whole file
//! is validated in [`FlaxSource::parse`] with an explicit stack (no recursion on the input's
//! depth), every length is checked against the bytes actually present before it is used, nothing
//! is allocated from a declared count, and tensor data is borrowed from the file. Refused, with
//! specific [`ErrorKind`]s: a non-map or empty top level, trailing bytes, a non-string or repeated map key
//! ([`ErrorKind::Duplicate`]), two paths joining to one name, strings or payloads longer than
//! [`MAX_FLAX_PAYLOAD_LEN`], shapes of rank over [`MAX_FLAX_RANK`] or whose byte size is not the
//! payload's, unknown extension types, and chunked arrays that are not exactly what flax writes.
//!
//! Budgets ([`Limits`], [`ErrorKind::BudgetExceeded`]): nesting deeper than
//! [`Limits::nesting_depth`] (`container nesting`), more than [`Limits::flax_values`] values
//! (`flax values`), more than [`Limits::tensors`] arrays (`tensor count`), and more than
//! [`Limits::tensor_name_bytes`] bytes in one path being walked or in all tensor names together
//! (`tensor name bytes`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use rmp::Marker;

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::mmap::FileBytes;
use crate::source::limits::Limits;
use crate::source::mapped::{Index, Mapped};
use crate::source::{tensor_not_found, to_u64, Format, TensorSource};
use crate::tensor::{self, DType, Tensor, TensorInfo};

/// Longest string, byte string or extension payload accepted: msgpack-python's own limit for
/// one object (flax chunks arrays at 2^30 bytes to stay under it), so a structural limit of the
/// format, not a budget: no flax writer produces a longer one.
pub(crate) const MAX_FLAX_PAYLOAD_LEN: usize = (1 << 31) - 1;

/// Highest array rank accepted (numpy's `NPY_MAXDIMS`).
pub(crate) const MAX_FLAX_RANK: usize = 64;

/// Notes kept about non-tensor leaves (the rest are counted).
const MAX_FLAX_NOTES: usize = 32;

/// The key that marks a chunked array (flax `serialization._chunk`).
pub(crate) const CHUNKED_KEY: &str = "__msgpack_chunked_array__";

/// flax `_MsgpackExtType.ndarray`.
pub(crate) const EXT_NDARRAY: i8 = 1;
/// flax `_MsgpackExtType.native_complex`.
const EXT_COMPLEX: i8 = 2;
/// flax `_MsgpackExtType.npscalar`.
const EXT_NPSCALAR: i8 = 3;

fn budget(budget: &'static str, limit: usize, at: usize) -> Error {
    Error::from(ErrorKind::BudgetExceeded {
        budget,
        limit: to_u64(limit),
        offset: to_u64(at),
    })
}

/// numpy's name for a dtype, as `arr.dtype.name` spells it.
pub(crate) fn numpy_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "float64",
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I16 => "int16",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

fn dtype_from_numpy_name(name: &[u8]) -> Option<DType> {
    DType::ALL
        .into_iter()
        .find(|d| numpy_dtype_name(*d).as_bytes() == name)
}

/// The head of one msgpack value: scalars decoded, containers as counts, byte strings as ranges.
#[derive(Clone, Debug)]
enum Head {
    Nil,
    Bool(bool),
    UInt(u64),
    NegInt,
    Float,
    Str(Range<usize>),
    Bin(Range<usize>),
    Array(usize),
    Map(usize),
    Ext(i8, Range<usize>),
}

impl Head {
    fn kind(&self) -> &'static str {
        match self {
            Head::Nil => "nil",
            Head::Bool(_) => "a boolean",
            Head::UInt(_) | Head::NegInt => "an integer",
            Head::Float => "a float",
            Head::Str(_) => "a string",
            Head::Bin(_) => "a byte string",
            Head::Array(_) => "an array",
            Head::Map(_) => "a map",
            Head::Ext(..) => "an extension value",
        }
    }
}

/// Reads msgpack heads from `bytes[pos..end]`; offsets are absolute within the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    /// Most items one container may declare ([`Limits::flax_values`]).
    max_values: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let avail = self.end.saturating_sub(self.pos);
        let out = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .and_then(|e| self.bytes.get(self.pos..e))
            .ok_or_else(|| {
                Error::from(ErrorKind::Truncated {
                    what,
                    offset: to_u64(self.pos),
                    needed: to_u64(n),
                    available: to_u64(avail),
                })
            })?;
        self.pos = self.pos.saturating_add(n);
        Ok(out)
    }

    /// A big-endian unsigned integer of `n` ≤ 8 bytes.
    fn be(&mut self, n: usize, what: &'static str) -> Result<u64> {
        Ok(self
            .take(n, what)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A length field of `n` bytes, checked against [`MAX_FLAX_PAYLOAD_LEN`].
    fn len(&mut self, n: usize, at: usize) -> Result<usize> {
        let v = self.be(n, "msgpack length")?;
        usize::try_from(v)
            .ok()
            .filter(|&l| l <= MAX_FLAX_PAYLOAD_LEN)
            .ok_or_else(|| {
                malformed(
                    Format::Flax,
                    format!(
                    "the value at byte {at} declares {v} bytes, more than msgpack allows in one \
                     object ({MAX_FLAX_PAYLOAD_LEN})"
                ),
                )
            })
    }

    /// Skips `n` bytes and returns their absolute range.
    fn span(&mut self, n: usize, what: &'static str) -> Result<Range<usize>> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(start..self.pos)
    }

    /// A container count: bounded by the value budget and by the bytes left (each item takes at
    /// least `min_item` bytes), so a forged count fails here and is never used to allocate.
    fn count(&mut self, n: usize, min_item: usize, at: usize) -> Result<usize> {
        let v = self.be(n, "msgpack count")?;
        let c = usize::try_from(v)
            .ok()
            .filter(|&c| c <= self.max_values)
            .ok_or_else(|| budget("flax values", self.max_values, at))?;
        self.fits(c, min_item)?;
        Ok(c)
    }

    fn fits(&self, count: usize, min_item: usize) -> Result<()> {
        let avail = self.end.saturating_sub(self.pos);
        let need = count.saturating_mul(min_item);
        if need > avail {
            return Err(ErrorKind::Truncated {
                what: "msgpack container",
                offset: to_u64(self.pos),
                needed: to_u64(need),
                available: to_u64(avail),
            }
            .into());
        }
        Ok(())
    }

    /// Reads one value head; returns it with its byte offset.
    fn head(&mut self) -> Result<(Head, usize)> {
        let at = self.pos;
        let byte = *self.take(1, "msgpack value")?.first().unwrap_or(&0xc1);
        let head = match Marker::from_u8(byte) {
            Marker::Null => Head::Nil,
            Marker::True => Head::Bool(true),
            Marker::False => Head::Bool(false),
            Marker::FixPos(v) => Head::UInt(u64::from(v)),
            Marker::U8 => Head::UInt(self.be(1, "msgpack integer")?),
            Marker::U16 => Head::UInt(self.be(2, "msgpack integer")?),
            Marker::U32 => Head::UInt(self.be(4, "msgpack integer")?),
            Marker::U64 => Head::UInt(self.be(8, "msgpack integer")?),
            Marker::FixNeg(_) => Head::NegInt,
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                let n = 1usize << (byte - 0xd0);
                let raw = self.be(n, "msgpack integer")?;
                let bits = u32::try_from(n * 8).unwrap_or(64);
                if (raw >> (bits - 1)) & 1 == 1 {
                    Head::NegInt
                } else {
                    Head::UInt(raw)
                }
            }
            Marker::F32 => {
                self.take(4, "msgpack float")?;
                Head::Float
            }
            Marker::F64 => {
                self.take(8, "msgpack float")?;
                Head::Float
            }
            Marker::FixStr(n) => Head::Str(self.span(usize::from(n), "msgpack string")?),
            Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.len(1 << (byte - 0xd9), at)?;
                Head::Str(self.span(n, "msgpack string")?)
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.len(1 << (byte - 0xc4), at)?;
                Head::Bin(self.span(n, "msgpack byte string")?)
            }
            Marker::FixArray(n) => {
                self.fits(usize::from(n), 1)?;
                Head::Array(usize::from(n))
            }
            Marker::Array16 => Head::Array(self.count(2, 1, at)?),
            Marker::Array32 => Head::Array(self.count(4, 1, at)?),
            Marker::FixMap(n) => {
                self.fits(usize::from(n), 2)?;
                Head::Map(usize::from(n))
            }
            Marker::Map16 => Head::Map(self.count(2, 2, at)?),
            Marker::Map32 => Head::Map(self.count(4, 2, at)?),
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16 => {
                let n = 1usize << (byte - 0xd4);
                let code = self.be(1, "msgpack extension type")?;
                let code = i8::from_be_bytes([u8::try_from(code).unwrap_or(0)]);
                Head::Ext(code, self.span(n, "msgpack extension payload")?)
            }
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
                let n = self.len(1 << (byte - 0xc7), at)?;
                let code = self.be(1, "msgpack extension type")?;
                let code = i8::from_be_bytes([u8::try_from(code).unwrap_or(0)]);
                Head::Ext(code, self.span(n, "msgpack extension payload")?)
            }
            Marker::Reserved => {
                return Err(malformed(
                    Format::Flax,
                    format!("byte 0x{byte:02x} at byte {at} is not a msgpack value"),
                ))
            }
        };
        Ok((head, at))
    }
}

/// One parsed value of the tree.
enum Node {
    Map {
        at: usize,
        entries: Vec<(Range<usize>, usize)>,
    },
    List {
        at: usize,
        items: Vec<usize>,
    },
    Leaf {
        head: Head,
        at: usize,
    },
}

/// Parses the whole file into a flat arena of nodes (root first), iteratively.
fn parse_tree(bytes: &[u8], limits: &Limits) -> Result<Vec<Node>> {
    struct Frame {
        node: usize,
        remaining: usize,
    }
    let mut c = Cursor {
        bytes,
        pos: 0,
        end: bytes.len(),
        max_values: limits.flax_values,
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let (root, at) = c.head()?;
    let Head::Map(n) = root else {
        return Err(malformed(
            Format::Flax,
            format!(
                "the top level is {}, expected a map of parameter names",
                root.kind()
            ),
        ));
    };
    if n == 0 {
        // `\x80`, flax's `to_bytes({})`, is also what a pickle truncated after its PROTO opcode
        // leaves: either way there is nothing to convert.
        return Err(malformed(
            Format::Flax,
            "the top-level map is empty: no parameters (or a pickle cut off after its first byte)",
        ));
    }
    nodes.push(Node::Map {
        at,
        entries: Vec::new(),
    });
    stack.push(Frame {
        node: 0,
        remaining: n,
    });
    while let Some(top) = stack.last_mut() {
        if top.remaining == 0 {
            stack.pop();
            continue;
        }
        top.remaining -= 1;
        let parent = top.node;
        let is_map = matches!(nodes.get(parent), Some(Node::Map { .. }));
        let key = if is_map {
            match c.head()? {
                (Head::Str(r), _)
                    if std::str::from_utf8(bytes.get(r.clone()).unwrap_or(&[])).is_ok() =>
                {
                    Some(r)
                }
                (h, at) => {
                    return Err(malformed(
                        Format::Flax,
                        format!(
                            "map key at byte {at} is {}, expected a UTF-8 string",
                            if matches!(h, Head::Str(_)) {
                                "not UTF-8"
                            } else {
                                h.kind()
                            }
                        ),
                    ))
                }
            }
        } else {
            None
        };
        let (head, at) = c.head()?;
        let id = nodes.len();
        if id >= limits.flax_values {
            return Err(budget("flax values", limits.flax_values, at));
        }
        let child_count = match head {
            Head::Map(n) | Head::Array(n) => Some(n),
            _ => None,
        };
        nodes.push(match head {
            Head::Map(_) => Node::Map {
                at,
                entries: Vec::new(),
            },
            Head::Array(_) => Node::List {
                at,
                items: Vec::new(),
            },
            head => Node::Leaf { head, at },
        });
        match (nodes.get_mut(parent), key) {
            (Some(Node::Map { entries, .. }), Some(k)) => entries.push((k, id)),
            (Some(Node::List { items, .. }), None) => items.push(id),
            _ => {
                return Err(malformed(
                    Format::Flax,
                    "internal: parent is not a container",
                ))
            }
        }
        if let Some(n) = child_count.filter(|&n| n > 0) {
            if stack.len() >= limits.nesting_depth {
                return Err(budget("container nesting", limits.nesting_depth, at));
            }
            stack.push(Frame {
                node: id,
                remaining: n,
            });
        }
    }
    if c.pos != bytes.len() {
        return Err(malformed(
            Format::Flax,
            format!(
                "{} trailing bytes after the top-level map, from byte {}",
                bytes.len().saturating_sub(c.pos),
                c.pos
            ),
        ));
    }
    Ok(nodes)
}

/// A validated array payload (extension types 1 and 3).
struct ArrayPayload {
    dtype: DType,
    shape: Vec<usize>,
    data: Range<usize>,
}

/// Parses an ndarray payload `(shape, dtype name, bytes)` held in `bytes[payload]`.
fn parse_array_payload(bytes: &[u8], payload: Range<usize>) -> Result<ArrayPayload> {
    let start = payload.start;
    let mut c = Cursor {
        bytes,
        pos: payload.start,
        end: payload.end,
        // The only container here is the shape, whose rank is checked as soon as it is read
        // (its count is first checked against the bytes of the payload).
        max_values: usize::MAX,
    };
    let bad = |what: &str, h: &Head, at: usize| {
        malformed(
            Format::Flax,
            format!(
                "array payload at byte {start}: {what} at byte {at} is {}",
                h.kind()
            ),
        )
    };
    match c.head()? {
        (Head::Array(3), _) => {}
        (h, at) => {
            return Err(bad(
                "expected a 3-element array (shape, dtype, data); the value",
                &h,
                at,
            ))
        }
    }
    let rank = match c.head()? {
        (Head::Array(n), _) => n,
        (h, at) => return Err(bad("the shape", &h, at)),
    };
    if rank > MAX_FLAX_RANK {
        return Err(ErrorKind::InvalidLayout {
            reason: format!("rank {rank} exceeds the limit {MAX_FLAX_RANK} (byte {start})"),
        }
        .into());
    }
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        match c.head()? {
            (Head::UInt(d), at) => shape.push(usize::try_from(d).map_err(|_| {
                Error::from(ErrorKind::InvalidLayout {
                    reason: format!("dimension {d} at byte {at} overflows the address space"),
                })
            })?),
            (Head::NegInt, at) => {
                return Err(ErrorKind::InvalidLayout {
                    reason: format!("negative dimension at byte {at}"),
                }
                .into())
            }
            (h, at) => return Err(bad("a dimension", &h, at)),
        }
    }
    let name = match c.head()? {
        (Head::Str(r) | Head::Bin(r), _) => bytes.get(r).unwrap_or(&[]),
        (h, at) => return Err(bad("the dtype name", &h, at)),
    };
    let dtype = dtype_from_numpy_name(name).ok_or_else(|| {
        let shown = String::from_utf8_lossy(name.get(..64).unwrap_or(name)).into_owned();
        Error::from(ErrorKind::UnsupportedDType { dtype: shown })
    })?;
    let data = match c.head()? {
        (Head::Bin(r) | Head::Str(r), _) => r,
        (h, at) => return Err(bad("the data", &h, at)),
    };
    if c.pos != payload.end {
        return Err(malformed(
            Format::Flax,
            format!(
                "array payload at byte {start}: {} trailing bytes at byte {}",
                payload.end.saturating_sub(c.pos),
                c.pos
            ),
        ));
    }
    let want = tensor::checked_byte_len(dtype, &shape).ok_or_else(|| {
        Error::from(ErrorKind::InvalidLayout {
            reason: format!("shape {shape:?} of {dtype} overflows the address space"),
        })
    })?;
    if want != data.len() {
        return Err(ErrorKind::InvalidLayout {
            reason: format!(
                "shape {shape:?} of {} needs {want} bytes, the payload at byte {start} holds {}",
                numpy_dtype_name(dtype),
                data.len()
            ),
        }
        .into());
    }
    Ok(ArrayPayload { dtype, shape, data })
}

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

/// Tree walk state: builds names and collects tensors.
struct Walk<'a> {
    bytes: &'a [u8],
    nodes: &'a [Node],
    tensors: Vec<TensorInfo>,
    stored: Vec<Stored>,
    by_name: HashMap<String, usize>,
    notes: Vec<String>,
    skipped: usize,
    chunked: usize,
    limits: Limits,
    /// Bytes of all tensor names so far ([`Limits::tensor_name_bytes`]).
    name_bytes: usize,
}

impl<'a> Walk<'a> {
    fn key(&self, r: &Range<usize>) -> &'a str {
        self.bytes
            .get(r.clone())
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
    }

    fn node(&self, id: usize) -> Result<&'a Node> {
        self.nodes
            .get(id)
            .ok_or_else(|| malformed(Format::Flax, "internal: dangling node"))
    }

    /// Lists one tensor found at byte `at`, within the tensor count and name budgets.
    fn add(
        &mut self,
        name: &str,
        at: usize,
        (dtype, shape, stored): (DType, Vec<usize>, Stored),
    ) -> Result<()> {
        if self.tensors.len() >= self.limits.tensors {
            return Err(budget("tensor count", self.limits.tensors, at));
        }
        self.name_bytes = self
            .name_bytes
            .checked_add(name.len())
            .filter(|&n| n <= self.limits.tensor_name_bytes)
            .ok_or_else(|| budget("tensor name bytes", self.limits.tensor_name_bytes, at))?;
        if self.by_name.contains_key(name) {
            return Err(ErrorKind::Duplicate {
                what: "tensor",
                name: name.to_string(),
            }
            .into());
        }
        self.by_name.insert(name.to_string(), self.tensors.len());
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
        });
        self.stored.push(stored);
        Ok(())
    }

    /// Handles one child named `name`; returns true when it is a container to descend into.
    fn visit(&mut self, name: &str, id: usize) -> Result<bool> {
        match self.node(id)? {
            Node::Map { entries, at } => {
                check_unique_keys(self, name, entries)?;
                if entries.iter().any(|(k, _)| self.key(k) == CHUNKED_KEY) {
                    let (dtype, shape, chunks) = self.parse_chunked(entries, *at)?;
                    self.chunked += 1;
                    self.add(name, *at, (dtype, shape, Stored::Chunked(chunks)))?;
                    return Ok(false);
                }
                Ok(true)
            }
            Node::List { .. } => Ok(true),
            Node::Leaf {
                head: Head::Ext(code, payload),
                at,
            } => match *code {
                EXT_NDARRAY | EXT_NPSCALAR => {
                    let a = parse_array_payload(self.bytes, payload.clone())?;
                    self.add(name, *at, (a.dtype, a.shape, Stored::Contiguous(a.data)))?;
                    Ok(false)
                }
                EXT_COMPLEX => Err(ErrorKind::UnsupportedDType {
                    dtype: "complex".into(),
                }
                .into()),
                other => Err(malformed(
                    Format::Flax,
                    format!(
                        "unknown msgpack extension type {other} at byte {at} (flax writes 1, 2, 3)"
                    ),
                )),
            },
            Node::Leaf { head, at } => {
                if self.notes.len() < MAX_FLAX_NOTES {
                    self.notes.push(format!(
                        "{name}: {} at byte {at} is not an array; skipped",
                        head.kind()
                    ));
                } else {
                    self.skipped += 1;
                }
                Ok(false)
            }
        }
    }

    /// Reassembles a chunked array map (flax `_chunk`): returns dtype, shape and chunk ranges.
    fn parse_chunked(
        &self,
        entries: &[(Range<usize>, usize)],
        at: usize,
    ) -> Result<(DType, Vec<usize>, Vec<Range<usize>>)> {
        let bad =
            |what: String| malformed(Format::Flax, format!("chunked array at byte {at}: {what}"));
        let mut marker = None;
        let mut shape_node = None;
        let mut chunks_node = None;
        for (k, v) in entries {
            let slot = match self.key(k) {
                CHUNKED_KEY => &mut marker,
                "shape" => &mut shape_node,
                "chunks" => &mut chunks_node,
                other => return Err(bad(format!("unexpected key {other:?}"))),
            };
            *slot = Some(*v);
        }
        let (Some(marker), Some(shape_node), Some(chunks_node)) = (marker, shape_node, chunks_node)
        else {
            return Err(bad(
                "needs the keys __msgpack_chunked_array__, shape, chunks".into(),
            ));
        };
        if !matches!(
            self.node(marker)?,
            Node::Leaf {
                head: Head::Bool(true),
                ..
            }
        ) {
            return Err(bad(format!("{CHUNKED_KEY} is not true")));
        }
        let dims = self.indexed(shape_node, "shape")?;
        if dims.len() > MAX_FLAX_RANK {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "rank {} exceeds the limit {MAX_FLAX_RANK} (byte {at})",
                    dims.len()
                ),
            }
            .into());
        }
        let mut shape = Vec::with_capacity(dims.len());
        for d in dims {
            match self.node(d)? {
                Node::Leaf {
                    head: Head::UInt(v),
                    ..
                } => shape.push(
                    usize::try_from(*v).map_err(|_| bad(format!("dimension {v} overflows")))?,
                ),
                _ => return Err(bad("a shape entry is not a non-negative integer".into())),
            }
        }
        let parts = self.indexed(chunks_node, "chunks")?;
        if parts.is_empty() {
            return Err(bad("no chunks".into()));
        }
        let mut dtype = None;
        let mut ranges = Vec::with_capacity(parts.len());
        let mut elements = 0usize;
        for p in parts {
            let Node::Leaf {
                head: Head::Ext(EXT_NDARRAY, payload),
                ..
            } = self.node(p)?
            else {
                return Err(bad("a chunk is not an array".into()));
            };
            let a = parse_array_payload(self.bytes, payload.clone())?;
            let [n] = a.shape.as_slice() else {
                return Err(bad(format!(
                    "a chunk has shape {:?}, flax writes 1-D chunks",
                    a.shape
                )));
            };
            if *dtype.get_or_insert(a.dtype) != a.dtype {
                return Err(bad("chunks of different dtypes".into()));
            }
            elements = elements
                .checked_add(*n)
                .ok_or_else(|| bad("chunk sizes overflow".into()))?;
            ranges.push(a.data);
        }
        let dtype = dtype.ok_or_else(|| bad("no chunks".into()))?;
        let numel = tensor::checked_numel(&shape).ok_or_else(|| {
            Error::from(ErrorKind::InvalidLayout {
                reason: format!("shape {shape:?} overflows the address space"),
            })
        })?;
        if numel != elements || tensor::checked_byte_len(dtype, &shape).is_none() {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "chunked array at byte {at}: shape {shape:?} has {numel} elements, the chunks {elements}"
                ),
            }
            .into());
        }
        Ok((dtype, shape, ranges))
    }

    /// The children of a map keyed `"0"`, `"1"`, … `"n-1"` (flax `_tuple_to_dict`), in index order.
    fn indexed(&self, id: usize, what: &str) -> Result<Vec<usize>> {
        let Node::Map { entries, at } = self.node(id)? else {
            return Err(malformed(
                Format::Flax,
                format!("chunked array: {what} is not a map"),
            ));
        };
        let mut slots: Vec<Option<usize>> = vec![None; entries.len()];
        for (k, v) in entries {
            let key = self.key(k);
            let slot = key
                .parse::<usize>()
                .ok()
                .filter(|i| i.to_string() == key)
                .and_then(|i| slots.get_mut(i))
                .ok_or_else(|| {
                    malformed(
                        Format::Flax,
                        format!(
                        "chunked array: {what} map at byte {at} has key {key:?}, expected 0..{}",
                        entries.len()
                    ),
                    )
                })?;
            *slot = Some(*v);
        }
        slots
            .into_iter()
            .map(|s| {
                s.ok_or_else(|| malformed(Format::Flax, format!("chunked array: {what} has a gap")))
            })
            .collect()
    }
}

fn check_unique_keys(w: &Walk<'_>, name: &str, entries: &[(Range<usize>, usize)]) -> Result<()> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (k, _) in entries {
        let key = w.key(k);
        if !seen.insert(key) {
            return Err(ErrorKind::Duplicate {
                what: "msgpack map key",
                name: if name.is_empty() {
                    key.to_string()
                } else {
                    format!("{name}/{key}")
                },
            }
            .into());
        }
    }
    Ok(())
}

impl Flax {
    /// Parses and validates a whole `flax_model.msgpack`.
    ///
    /// # Errors
    /// As listed in the module docs; errors about one array carry its tensor name.
    pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let limits = *limits;
        let nodes = parse_tree(bytes, &limits)?;
        let mut w = Walk {
            bytes,
            nodes: &nodes,
            tensors: Vec::new(),
            stored: Vec::new(),
            by_name: HashMap::new(),
            notes: Vec::new(),
            skipped: 0,
            chunked: 0,
            limits,
            name_bytes: 0,
        };
        struct Frame {
            node: usize,
            next: usize,
            name_len: usize,
        }
        if let Some(Node::Map { entries, .. }) = nodes.first() {
            check_unique_keys(&w, "", entries)?;
            if entries.iter().any(|(k, _)| w.key(k) == CHUNKED_KEY) {
                return Err(malformed(
                    Format::Flax,
                    "the top level is a chunked array, not a map of parameter names",
                ));
            }
        }
        let mut name = String::new();
        let mut stack = vec![Frame {
            node: 0,
            next: 0,
            name_len: 0,
        }];
        while let Some(f) = stack.last_mut() {
            let child = match w.node(f.node)? {
                Node::Map { entries, .. } => {
                    entries.get(f.next).map(|(k, v)| (w.key(k).to_string(), *v))
                }
                Node::List { items, .. } => items.get(f.next).map(|v| (f.next.to_string(), *v)),
                Node::Leaf { .. } => None,
            };
            let Some((key, id)) = child else {
                stack.pop();
                continue;
            };
            f.next += 1;
            name.truncate(f.name_len);
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&key);
            if name.len() > limits.tensor_name_bytes {
                let at = match w.node(id)? {
                    Node::Map { at, .. } | Node::List { at, .. } | Node::Leaf { at, .. } => *at,
                };
                return Err(budget("tensor name bytes", limits.tensor_name_bytes, at));
            }
            if w.visit(&name, id)
                .map_err(|e| e.with_tensor(name.clone()))?
            {
                stack.push(Frame {
                    node: id,
                    next: 0,
                    name_len: name.len(),
                });
            }
        }
        let mut notes = std::mem::take(&mut w.notes);
        if w.skipped > 0 {
            notes.push(format!("{} more non-array leaves skipped", w.skipped));
        }
        let mut metadata = BTreeMap::new();
        if w.chunked > 0 {
            metadata.insert("chunked_arrays".to_string(), w.chunked.to_string());
        }
        let (tensors, stored, by_name) = (w.tensors, w.stored, w.by_name);
        Ok(Flax {
            tensors,
            stored,
            by_name,
            metadata,
            notes,
        })
    }
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
