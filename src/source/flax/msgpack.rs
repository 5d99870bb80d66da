//! The msgpack codec of flax files: a bounds-checked cursor over msgpack heads, flax's extension
//! types and the ndarray payload `(shape, dtype name, bytes)`, and numpy's dtype names — shared by
//! the reader ([`super`]) and the writer (`write::flax`).

use std::ops::Range;

use rmp::Marker;

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::source::{to_u64, Format};
use crate::tensor::{self, DType};

/// Longest string, byte string or extension payload accepted: msgpack-python's own limit for
/// one object (flax chunks arrays at 2^30 bytes to stay under it), so a structural limit of the
/// format, not a budget: no flax writer produces a longer one.
pub(crate) const MAX_FLAX_PAYLOAD_LEN: usize = (1 << 31) - 1;

/// Highest array rank accepted (numpy's `NPY_MAXDIMS`).
pub(crate) const MAX_FLAX_RANK: usize = 64;

/// The key that marks a chunked array (flax `serialization._chunk`).
pub(crate) const CHUNKED_KEY: &str = "__msgpack_chunked_array__";

/// flax `_MsgpackExtType.ndarray`.
pub(crate) const EXT_NDARRAY: i8 = 1;
/// flax `_MsgpackExtType.native_complex`.
pub(super) const EXT_COMPLEX: i8 = 2;
/// flax `_MsgpackExtType.npscalar`.
pub(super) const EXT_NPSCALAR: i8 = 3;

pub(super) fn budget(budget: &'static str, limit: usize, at: usize) -> Error {
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

pub(super) fn dtype_from_numpy_name(name: &[u8]) -> Option<DType> {
    DType::ALL
        .into_iter()
        .find(|d| numpy_dtype_name(*d).as_bytes() == name)
}

/// The head of one msgpack value: scalars decoded, containers as counts, byte strings as ranges.
#[derive(Clone, Debug)]
pub(super) enum Head {
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
    pub(super) fn kind(&self) -> &'static str {
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
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) end: usize,
    /// Most items one container may declare ([`Limits::flax_values`](crate::limits::Limits::flax_values)).
    pub(super) max_values: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
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
    pub(super) fn be(&mut self, n: usize, what: &'static str) -> Result<u64> {
        Ok(self
            .take(n, what)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A length field of `n` bytes, checked against [`MAX_FLAX_PAYLOAD_LEN`].
    pub(super) fn len(&mut self, n: usize, at: usize) -> Result<usize> {
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
    pub(super) fn span(&mut self, n: usize, what: &'static str) -> Result<Range<usize>> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(start..self.pos)
    }

    /// A container count: bounded by the value budget and by the bytes left (each item takes at
    /// least `min_item` bytes), so a forged count fails here and is never used to allocate.
    pub(super) fn count(&mut self, n: usize, min_item: usize, at: usize) -> Result<usize> {
        let v = self.be(n, "msgpack count")?;
        let c = usize::try_from(v)
            .ok()
            .filter(|&c| c <= self.max_values)
            .ok_or_else(|| budget("flax values", self.max_values, at))?;
        self.fits(c, min_item)?;
        Ok(c)
    }

    pub(super) fn fits(&self, count: usize, min_item: usize) -> Result<()> {
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
    pub(super) fn head(&mut self) -> Result<(Head, usize)> {
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

/// A validated array payload (extension types 1 and 3).
pub(super) struct ArrayPayload {
    pub(super) dtype: DType,
    pub(super) shape: Vec<usize>,
    pub(super) data: Range<usize>,
}

/// Parses an ndarray payload `(shape, dtype name, bytes)` held in `bytes[payload]`.
pub(super) fn parse_array_payload(bytes: &[u8], payload: Range<usize>) -> Result<ArrayPayload> {
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
