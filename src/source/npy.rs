//! numpy `.npy`: one array, header versions 1.0, 2.0 and 3.0 (numpy `lib/format.py`).
//!
//! Layout: the magic `\x93NUMPY`, a major and a minor version byte, the header length (u16 LE for
//! v1, u32 LE for v2/v3), then the header — a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` padded with spaces and ended by a
//! newline (latin-1 for v1/v2, UTF-8 for v3) — then the raw array bytes.
//!
//! The header is read by a small strict parser for exactly that literal grammar: single- or
//! double-quoted strings without escapes, `True`/`False`, tuples of non-negative integers (a
//! Python 2 `L` suffix is tolerated) with an optional trailing comma, whitespace. The dict must
//! hold exactly the keys `descr`, `fortran_order` and `shape`, each once, in any order. Anything
//! else (a structured dtype given as a list, a nested dict, an expression) is
//! [`ErrorKind::MalformedContainer`] naming what was found.
//!
//! dtypes (`descr`, byte order `<` `>` `|` `=` or none, then kind and size):
//! `f8 f4 f2 i8 i4 i2 i1 u1 b1` → F64 F32 F16 I64 I32 I16 I8 U8 BOOL; bfloat16 as written by
//! `ml_dtypes` + `np.save` (`<V2`, also `|V2`, and the name `bfloat16`) → BF16. Everything else is
//! [`ErrorKind::UnsupportedDType`] with the descr as written. Big-endian (`>`) arrays are
//! byte-swapped on read; Fortran-order arrays are gathered into C order on read.
//!
//! A `.npy` file holds one array; its [`NpySource`] lists it under the name [`NPY_TENSOR_NAME`]
//! (`array`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::mmap::FileBytes;
use crate::source::limits::Limits;
use crate::source::mapped::{Index, Mapped};
use crate::source::{to_u64, Format};
use crate::tensor::{self, DType, Tensor, TensorInfo};

/// The magic string every `.npy` starts with.
pub(crate) const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest rank accepted (numpy's `NPY_MAXDIMS` is 64 since numpy 2.0).
pub(crate) const MAX_NPY_RANK: usize = super::MAX_RANK;

/// Bytes before the header text of a v1 file (magic, version, u16 length).
const V1_PREAMBLE_LEN: usize = 10;

/// Bytes before the header text of a v2/v3 file (magic, version, u32 length).
const V2_PREAMBLE_LEN: usize = 12;

/// Alignment numpy pads `preamble + header` to (`ARRAY_ALIGN` in `format.py`).
#[cfg_attr(not(test), allow(dead_code))]
const NPY_HEADER_ALIGN: usize = 64;

/// The name under which a `.npy` file's single array is listed.
pub(crate) const NPY_TENSOR_NAME: &str = "array";

/// Byte order of the stored elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    /// Little-endian (`<`, `=`, `|` or no prefix; native is little on every supported host).
    Little,
    /// Big-endian (`>`): swapped on read.
    Big,
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NpyHeader {
    /// Format version `(major, minor)`.
    pub(crate) version: (u8, u8),
    /// The descr as written (`<f4`, `<V2`, …).
    pub(crate) descr: String,
    /// Element type.
    pub(crate) dtype: DType,
    /// Byte order of the stored elements.
    pub(crate) byte_order: ByteOrder,
    /// True when the data is stored in Fortran (column-major) order.
    pub(crate) fortran_order: bool,
    /// Shape (empty for a 0-d array).
    pub(crate) shape: Vec<usize>,
    /// Offset of the array data from the start of the `.npy` bytes.
    pub(crate) data_offset: usize,
    /// Length of the array data, `numel × itemsize` (checked).
    pub(crate) data_len: usize,
}

impl NpyHeader {
    /// True when the stored bytes already are C-order little-endian.
    pub(crate) fn is_c_little_endian(&self) -> bool {
        let elem_order_irrelevant = self.dtype.size() == 1;
        let order_irrelevant =
            !self.fortran_order || self.shape.iter().filter(|&&d| d != 1).count() <= 1;
        (self.byte_order == ByteOrder::Little || elem_order_irrelevant) && order_irrelevant
    }

    /// Listing entry for this array under `name`.
    pub(crate) fn info(&self, name: &str) -> TensorInfo {
        TensorInfo {
            name: name.to_string(),
            dtype: self.dtype,
            shape: self.shape.clone(),
        }
    }
}

/// Returns `(version, header_start, header_len)` from the fixed-size preamble.
///
/// Needs at most [`V2_PREAMBLE_LEN`] bytes; `bytes` may be a prefix of the file.
pub(crate) fn parse_npy_preamble(
    bytes: &[u8],
    limits: &Limits,
) -> Result<((u8, u8), usize, usize)> {
    let truncated = |needed: usize| {
        Error::from(ErrorKind::Truncated {
            what: "npy preamble",
            offset: 0,
            needed: to_u64(needed),
            available: to_u64(bytes.len()),
        })
    };
    let magic = bytes
        .get(..NPY_MAGIC.len())
        .ok_or_else(|| truncated(V1_PREAMBLE_LEN))?;
    if magic != NPY_MAGIC {
        return Err(malformed(
            Format::Npy,
            format!("bad magic {magic:02x?}, expected \\x93NUMPY at byte 0"),
        ));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(truncated(V1_PREAMBLE_LEN)),
    };
    if minor != 0 || !(1..=3).contains(&major) {
        return Err(malformed(
            Format::Npy,
            format!(
                "unsupported format version {major}.{minor} at byte 6 (supported: 1.0, 2.0, 3.0)"
            ),
        ));
    }
    let (header_start, header_len) = if major == 1 {
        match bytes.get(8..V1_PREAMBLE_LEN) {
            Some(&[a, b]) => (V1_PREAMBLE_LEN, usize::from(u16::from_le_bytes([a, b]))),
            _ => return Err(truncated(V1_PREAMBLE_LEN)),
        }
    } else {
        match bytes.get(8..V2_PREAMBLE_LEN) {
            Some(&[a, b, c, d]) => {
                let len = u32::from_le_bytes([a, b, c, d]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                (V2_PREAMBLE_LEN, len)
            }
            _ => return Err(truncated(V2_PREAMBLE_LEN)),
        }
    };
    let max = limits.npy_header_bytes;
    if header_len > max {
        return Err(ErrorKind::BudgetExceeded {
            budget: "npy header length",
            limit: to_u64(max),
            offset: 8,
        }
        .into());
    }
    Ok(((major, minor), header_start, header_len))
}

/// Total length of preamble + header (the data offset), from the fixed-size preamble.
///
/// Lets a caller holding a stream (a deflated npz member) read exactly the header and no more.
pub(crate) fn npy_header_total_len(preamble: &[u8], limits: &Limits) -> Result<usize> {
    let (_, start, len) = parse_npy_preamble(preamble, limits)?;
    // Both are bounded (≤ 12 and ≤ Limits::npy_header_bytes): checked anyway.
    start
        .checked_add(len)
        .ok_or_else(|| malformed(Format::Npy, "header length overflows"))
}

/// Bytes of preamble needed before [`npy_header_total_len`] can answer.
pub(crate) const NPY_PREAMBLE_MAX: usize = V2_PREAMBLE_LEN;

/// Parses the preamble and header of a `.npy` held in `bytes` (which may end right after the
/// header: the data is not looked at).
///
/// # Errors
/// [`ErrorKind::Truncated`] when the header is incomplete, [`ErrorKind::BudgetExceeded`] for a
/// header longer than [`Limits::npy_header_bytes`], [`ErrorKind::MalformedContainer`] for a bad magic,
/// version or header literal, [`ErrorKind::UnsupportedDType`] for a descr outside the supported
/// set, [`ErrorKind::InvalidLayout`] for a negative, overflowing or too-high-rank shape.
pub(crate) fn parse_npy_header(bytes: &[u8], limits: &Limits) -> Result<NpyHeader> {
    let (version, header_start, header_len) = parse_npy_preamble(bytes, limits)?;
    let data_offset = header_start
        .checked_add(header_len)
        .ok_or_else(|| malformed(Format::Npy, "header length overflows"))?;
    let text = bytes.get(header_start..data_offset).ok_or_else(|| {
        Error::from(ErrorKind::Truncated {
            what: "npy header",
            offset: to_u64(header_start),
            needed: to_u64(header_len),
            available: to_u64(bytes.len().saturating_sub(header_start)),
        })
    })?;
    let utf8 = version.0 >= 3;
    if utf8 && std::str::from_utf8(text).is_err() {
        return Err(malformed(Format::Npy, "v3 header is not valid UTF-8"));
    }
    let dict = HeaderParser {
        text,
        pos: 0,
        base: header_start,
        utf8,
    }
    .parse_dict()?;
    let (dtype, byte_order) = parse_descr(&dict.descr)?;
    let data_len = tensor::checked_byte_len(dtype, &dict.shape).ok_or_else(|| {
        Error::from(ErrorKind::InvalidLayout {
            reason: format!(
                "npy shape {:?} of {} overflows the address space",
                dict.shape, dict.descr
            ),
        })
    })?;
    Ok(NpyHeader {
        version,
        descr: dict.descr,
        dtype,
        byte_order,
        fortran_order: dict.fortran_order,
        shape: dict.shape,
        data_offset,
        data_len,
    })
}

/// Maps a descr to a dtype and byte order.
fn parse_descr(descr: &str) -> Result<(DType, ByteOrder)> {
    let unsupported = || {
        Error::from(ErrorKind::UnsupportedDType {
            dtype: descr.to_string(),
        })
    };
    if descr == "bfloat16" {
        return Ok((DType::BF16, ByteOrder::Little));
    }
    let (order, code) = match descr.as_bytes().first() {
        Some(b'>') => (ByteOrder::Big, descr.get(1..).unwrap_or_default()),
        Some(b'<' | b'|' | b'=') => (ByteOrder::Little, descr.get(1..).unwrap_or_default()),
        _ => (ByteOrder::Little, descr),
    };
    let dtype = match code {
        "f8" => DType::F64,
        "f4" => DType::F32,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        // ml_dtypes' bfloat16 is a 2-byte void to numpy; a `>V2` comes from a big-endian host.
        "V2" => DType::BF16,
        _ => return Err(unsupported()),
    };
    Ok((dtype, order))
}

/// The `.npy` header dict, after parsing.
struct HeaderDict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A Python literal value as the header grammar allows it.
enum Literal {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl Literal {
    fn kind(&self) -> &'static str {
        match self {
            Literal::Str(_) => "a string",
            Literal::Bool(_) => "a bool",
            Literal::Tuple(_) => "a tuple",
        }
    }
}

/// Strict recursive-descent parser for the header dict literal.
struct HeaderParser<'a> {
    text: &'a [u8],
    pos: usize,
    /// Offset of `text` within the file, for error messages.
    base: usize,
    /// Header is UTF-8 (v3) rather than latin-1.
    utf8: bool,
}

impl HeaderParser<'_> {
    fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    fn err(&self, what: &str) -> Error {
        let found = match self.peek() {
            Some(b) if b.is_ascii_graphic() => format!("'{}'", char::from(b)),
            Some(b) => format!("byte 0x{b:02x}"),
            None => "end of header".to_string(),
        };
        malformed(
            Format::Npy,
            format!(
                "header: expected {what}, found {found} at byte {}",
                self.offset()
            ),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn parse_dict(mut self) -> Result<HeaderDict> {
        self.expect(b'{', "'{' opening the header dict")?;
        let mut descr = None;
        let mut fortran = None;
        let mut shape = None;
        loop {
            if self.eat(b'}') {
                break;
            }
            self.skip_ws();
            let key_at = self.offset();
            let key = match self.peek() {
                Some(b'\'' | b'"') => self.parse_string()?,
                _ => return Err(self.err("a quoted key or '}'")),
            };
            self.expect(b':', "':' after a key")?;
            let value_at = {
                self.skip_ws();
                self.offset()
            };
            let value = self.parse_value()?;
            let wrong = |want: &str, v: &Literal| {
                malformed(
                    Format::Npy,
                    format!(
                        "header: '{key}' must be {want}, found {} at byte {value_at}",
                        v.kind()
                    ),
                )
            };
            let slot_taken = match key.as_str() {
                "descr" => match value {
                    Literal::Str(s) => descr.replace(s).is_some(),
                    v => return Err(wrong("a string", &v)),
                },
                "fortran_order" => match value {
                    Literal::Bool(b) => fortran.replace(b).is_some(),
                    v => return Err(wrong("True or False", &v)),
                },
                "shape" => match value {
                    Literal::Tuple(t) => shape.replace(t).is_some(),
                    v => return Err(wrong("a tuple of integers", &v)),
                },
                other => {
                    return Err(malformed(
                        Format::Npy,
                        format!(
                            "header: unexpected key '{other}' at byte {key_at} \
                         (expected descr, fortran_order, shape)"
                        ),
                    ))
                }
            };
            if slot_taken {
                return Err(malformed(
                    Format::Npy,
                    format!("header: key '{key}' repeated at byte {key_at}"),
                ));
            }
            if self.eat(b',') {
                continue;
            }
            self.expect(b'}', "',' or '}' after a value")?;
            break;
        }
        self.skip_ws();
        if self.pos < self.text.len() {
            return Err(self.err("only padding after the header dict"));
        }
        let missing = |k: &str| malformed(Format::Npy, format!("header: key '{k}' missing"));
        Ok(HeaderDict {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }

    fn parse_value(&mut self) -> Result<Literal> {
        self.skip_ws();
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Literal::Str(self.parse_string()?)),
            Some(b'(') => Ok(Literal::Tuple(self.parse_tuple()?)),
            Some(b'T' | b'F') => {
                let rest = self.text.get(self.pos..).unwrap_or_default();
                for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
                    if rest.starts_with(word)
                        && !rest
                            .get(word.len())
                            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    {
                        self.pos = self.pos.saturating_add(word.len());
                        return Ok(Literal::Bool(value));
                    }
                }
                Err(self.err("True or False"))
            }
            Some(b'[') => Err(malformed(
                Format::Npy,
                format!(
                    "header: found a list at byte {} where a descr string was expected \
                 (structured dtypes are not supported)",
                    self.offset()
                ),
            )),
            Some(b'{') => Err(malformed(
                Format::Npy,
                format!(
                    "header: found a nested dict at byte {} (not supported)",
                    self.offset()
                ),
            )),
            _ => Err(self.err("a string, True, False or a tuple")),
        }
    }

    fn parse_string(&mut self) -> Result<String> {
        let start = self.offset();
        let quote = self.peek().ok_or_else(|| self.err("a string"))?;
        self.bump();
        let body_start = self.pos;
        loop {
            match self.peek() {
                None | Some(b'\n') => {
                    return Err(malformed(
                        Format::Npy,
                        format!("header: unterminated string starting at byte {start}"),
                    ))
                }
                Some(b'\\') => {
                    return Err(malformed(
                        Format::Npy,
                        format!(
                            "header: escape sequence in string at byte {} (not supported)",
                            self.offset()
                        ),
                    ))
                }
                Some(c) if c == quote => break,
                Some(_) => self.bump(),
            }
        }
        let body = self.text.get(body_start..self.pos).unwrap_or_default();
        self.bump();
        Ok(if self.utf8 {
            String::from_utf8_lossy(body).into_owned()
        } else {
            body.iter().map(|&b| char::from(b)).collect()
        })
    }

    fn parse_tuple(&mut self) -> Result<Vec<usize>> {
        self.expect(b'(', "'('")?;
        let mut dims = Vec::new();
        if self.eat(b')') {
            return Ok(dims);
        }
        loop {
            if dims.len() >= MAX_NPY_RANK {
                return Err(ErrorKind::InvalidLayout {
                    reason: format!("npy shape has more than {MAX_NPY_RANK} dimensions"),
                }
                .into());
            }
            dims.push(self.parse_dim()?);
            let comma = self.eat(b',');
            if self.eat(b')') {
                if dims.len() == 1 && !comma {
                    // `(3)` is an int in Python, not a tuple.
                    return Err(malformed(
                        Format::Npy,
                        format!(
                            "header: shape '(n)' without a comma is not a tuple (byte {})",
                            self.offset()
                        ),
                    ));
                }
                return Ok(dims);
            }
            if !comma {
                return Err(self.err("',' or ')' in the shape tuple"));
            }
        }
    }

    fn parse_dim(&mut self) -> Result<usize> {
        self.skip_ws();
        let start = self.offset();
        if self.peek() == Some(b'-') {
            return Err(ErrorKind::InvalidLayout {
                reason: format!("npy shape has a negative dimension at byte {start}"),
            }
            .into());
        }
        let mut value: usize = 0;
        let mut digits = 0usize;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(usize::from(c - b'0')))
                .ok_or_else(|| {
                    Error::from(ErrorKind::InvalidLayout {
                        reason: format!("npy shape dimension at byte {start} overflows"),
                    })
                })?;
            digits = digits.saturating_add(1);
            self.bump();
        }
        if digits == 0 {
            return Err(self.err("a non-negative integer"));
        }
        // Python 2 wrote long integers as `3L`; numpy still reads them.
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.bump();
        }
        Ok(value)
    }
}

/// Turns stored array bytes (exactly `header.data_len` of them) into C-order little-endian bytes:
/// borrowed as they are when already so, otherwise byte-swapped and/or gathered.
pub(crate) fn decode_npy_data<'a>(
    header: &NpyHeader,
    data: Cow<'a, [u8]>,
) -> Result<Cow<'a, [u8]>> {
    if data.len() != header.data_len {
        return Err(ErrorKind::InvalidLayout {
            reason: format!(
                "npy data has {} bytes, shape {:?} of {} needs {}",
                data.len(),
                header.shape,
                header.descr,
                header.data_len
            ),
        }
        .into());
    }
    if header.is_c_little_endian() {
        return Ok(data);
    }
    let elem = header.dtype.size();
    let mut out = if header.fortran_order {
        // Fortran order: element (i0, …, in) at Σ ik·sk with s0 = 1, sk = sk-1 · dk-1.
        let mut strides = Vec::with_capacity(header.shape.len());
        let mut stride = 1usize;
        for &d in &header.shape {
            strides.push(stride);
            stride = stride.saturating_mul(d);
        }
        tensor::gather_strided(&data, elem, &header.shape, &strides, 0).ok_or_else(|| {
            Error::from(ErrorKind::InvalidLayout {
                reason: format!(
                    "npy Fortran-order shape {:?} does not fit its {} data bytes",
                    header.shape,
                    data.len()
                ),
            })
        })?
    } else {
        data.into_owned()
    };
    if header.byte_order == ByteOrder::Big {
        tensor::swap_bytes_in_place(&mut out, elem);
    }
    Ok(Cow::Owned(out))
}

/// The descr [`write_npy`] writes for a dtype.
// Used by the npz writer (`--to npz`), which lands later.
#[cfg_attr(not(test), allow(dead_code))]
///
/// BF16 is written as `<V2`, exactly what `np.save` writes for an `ml_dtypes.bfloat16` array:
/// `np.load` reads it back (as a 2-byte void array, to be `.view(ml_dtypes.bfloat16)`, which is
/// what JAX/big_vision checkpoints hold) without needing `ml_dtypes` installed, whereas a
/// `'bfloat16'` descr only loads where `ml_dtypes` has been imported.
pub(crate) fn npy_descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "<f8",
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => "<V2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
    }
}

/// Appends a `.npy` (v1.0 little-endian C order, as `np.save` writes it; v2.0 only if the
/// header would not fit v1's u16 length) holding `data_le` to `out`.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when `data_le` is not `numel × dtype.size()` bytes.
pub(crate) fn write_npy(
    out: &mut Vec<u8>,
    dtype: DType,
    shape: &[usize],
    data_le: &[u8],
) -> Result<()> {
    let want = tensor::checked_byte_len(dtype, shape);
    if want != Some(data_le.len()) {
        return Err(ErrorKind::InvalidLayout {
            reason: format!(
                "write_npy: shape {shape:?} of {dtype} needs {want:?} bytes, got {}",
                data_le.len()
            ),
        }
        .into());
    }
    let header = npy_header(dtype, shape)?;
    out.reserve(header.len() + data_le.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(data_le);
    Ok(())
}

/// The magic, version, length and padded header of a `.npy` of `shape` (what [`write_npy`]
/// writes before the data), for writers that stream the data separately.
///
/// # Errors
/// [`ErrorKind::InvalidLayout`] when the header does not fit npy 2.0's length field.
pub(crate) fn npy_header(dtype: DType, shape: &[usize]) -> Result<Vec<u8>> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        npy_descr(dtype)
    );
    // numpy: pad with spaces so preamble + header + '\n' is a multiple of 64.
    let mut preamble = V1_PREAMBLE_LEN;
    let padded = |preamble: usize, len: usize| {
        let unpadded = preamble + len + 1;
        len + (NPY_HEADER_ALIGN - unpadded % NPY_HEADER_ALIGN) % NPY_HEADER_ALIGN + 1
    };
    let mut total = padded(preamble, header.len());
    let v1 = u16::try_from(total).is_ok();
    if !v1 {
        preamble = V2_PREAMBLE_LEN;
        total = padded(preamble, header.len());
    }
    while header.len() + 1 < total {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(preamble + header.len());
    out.extend_from_slice(NPY_MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        let len = u16::try_from(header.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        let len = u32::try_from(header.len()).map_err(|_| {
            Error::from(ErrorKind::InvalidLayout {
                reason: format!("write_npy: header for shape {shape:?} too long"),
            })
        })?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// A single `.npy` array: its bytes and their [`Npy`] index.
pub(crate) type NpySource = Mapped<Npy>;

impl NpySource {
    /// Parses the file ([`Npy::parse`]) and keeps its bytes.
    ///
    /// # Errors
    /// As [`Npy::parse`].
    pub(crate) fn parse(bytes: FileBytes, limits: &Limits) -> Result<Self> {
        let index = Npy::parse(&bytes, limits)?;
        Ok(Mapped::new(Arc::new(bytes), index))
    }
}

/// The index of a single `.npy` array, listed as [`NPY_TENSOR_NAME`].
pub(crate) struct Npy {
    header: NpyHeader,
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl Npy {
    /// Parses and validates a whole `.npy` file.
    ///
    /// # Errors
    /// As [`parse_npy_header`]; [`ErrorKind::Truncated`] when the data is shorter than the shape
    /// needs, [`ErrorKind::MalformedContainer`] when bytes follow the data.
    pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let header = parse_npy_header(bytes, limits)?;
        check_data_len(&header, bytes.len())?;
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "npy_version".to_string(),
            format!("{}.{}", header.version.0, header.version.1),
        );
        metadata.insert("descr".to_string(), header.descr.clone());
        metadata.insert(
            "fortran_order".to_string(),
            header.fortran_order.to_string(),
        );
        Ok(Npy {
            tensors: vec![header.info(NPY_TENSOR_NAME)],
            header,
            metadata,
        })
    }
}

/// Checks that a `.npy` of `total_len` bytes holds exactly the header's data after its header.
pub(crate) fn check_data_len(header: &NpyHeader, total_len: usize) -> Result<()> {
    let available = total_len.saturating_sub(header.data_offset);
    if available < header.data_len {
        return Err(ErrorKind::Truncated {
            what: "npy data",
            offset: to_u64(header.data_offset),
            needed: to_u64(header.data_len),
            available: to_u64(available),
        }
        .into());
    }
    if available > header.data_len {
        return Err(malformed(
            Format::Npy,
            format!(
                "{} trailing bytes after the array data (shape {:?} of {} ends at byte {})",
                available - header.data_len,
                header.shape,
                header.descr,
                header.data_offset.saturating_add(header.data_len)
            ),
        ));
    }
    Ok(())
}

impl Index for Npy {
    fn format(&self) -> Format {
        Format::Npy
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read<'a>(&'a self, bytes: &'a [u8], name: &str) -> Result<Tensor<'a>> {
        if name != NPY_TENSOR_NAME {
            return Err(ErrorKind::TensorNotFound { name: name.into() }.into());
        }
        let h = &self.header;
        let end = h.data_offset.checked_add(h.data_len);
        let stored = end
            .and_then(|end| bytes.get(h.data_offset..end))
            .ok_or_else(|| {
                Error::from(ErrorKind::Truncated {
                    what: "npy data",
                    offset: to_u64(h.data_offset),
                    needed: to_u64(h.data_len),
                    available: to_u64(bytes.len().saturating_sub(h.data_offset)),
                })
            })?;
        let data = decode_npy_data(h, Cow::Borrowed(stored)).map_err(|e| e.with_tensor(name))?;
        Tensor::new(h.dtype, h.shape.clone(), data).map_err(|e| e.with_tensor(name))
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TensorSource;

    /// A `.npy` with the given version, header text (used verbatim) and data.
    fn npy_bytes(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = NPY_MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn dict(descr: &str, fortran: bool, shape: &str) -> String {
        let f = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}\n")
    }

    fn parse(bytes: Vec<u8>) -> Result<NpySource> {
        NpySource::parse(FileBytes::from_vec(bytes), &Limits::DEFAULT)
    }

    fn read_all(bytes: Vec<u8>) -> Result<(DType, Vec<usize>, Vec<u8>, bool)> {
        let src = parse(bytes)?;
        let t = src.read(NPY_TENSOR_NAME)?;
        let borrowed = matches!(t.data, Cow::Borrowed(_));
        Ok((t.dtype, t.shape.clone(), t.data.into_owned(), borrowed))
    }

    fn f32_le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f32_be(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    #[test]
    fn npy_reads_v1_v2_v3_headers_alike() {
        let data = f32_le(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for major in 1..=3 {
            let bytes = npy_bytes(major, &dict("<f4", false, "(2, 3)"), &data);
            let (dtype, shape, out, borrowed) = read_all(bytes).unwrap();
            assert_eq!((dtype, shape.as_slice()), (DType::F32, &[2, 3][..]));
            assert_eq!(out, data);
            assert!(borrowed, "little-endian C order is borrowed (v{major})");
        }
    }

    #[test]
    fn npy_v3_header_accepts_utf8_padding_and_rejects_invalid_utf8() {
        let mut header = dict("<f4", false, "(1,)");
        header.insert(header.len() - 1, ' ');
        assert!(read_all(npy_bytes(3, &header, &f32_le(&[1.0]))).is_ok());
        let mut bytes = npy_bytes(3, &dict("<f4", false, "(1,)"), &f32_le(&[1.0]));
        // Replace a padding-free byte inside the header with invalid UTF-8.
        let at = bytes.iter().position(|&b| b == b'}').unwrap() + 1;
        bytes.insert(at, 0xff);
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) + 1;
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        let e = parse(bytes).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
            "{e}"
        );
    }

    #[test]
    fn npy_maps_every_supported_descr() {
        let table = [
            ("<f8", DType::F64),
            ("<f4", DType::F32),
            ("<f2", DType::F16),
            ("<i8", DType::I64),
            ("<i4", DType::I32),
            ("<i2", DType::I16),
            ("|i1", DType::I8),
            ("|u1", DType::U8),
            ("|b1", DType::Bool),
            ("|V2", DType::BF16),
            ("<V2", DType::BF16),
            ("bfloat16", DType::BF16),
            ("=f4", DType::F32),
            ("f4", DType::F32),
        ];
        for (descr, want) in table {
            let data: Vec<u8> = (0..2 * want.size()).map(|i| i as u8 % 2).collect();
            let bytes = npy_bytes(1, &dict(descr, false, "(2,)"), &data);
            let (dtype, shape, out, _) = read_all(bytes).unwrap();
            assert_eq!(dtype, want, "{descr}");
            assert_eq!(shape, vec![2]);
            assert_eq!(out, data, "{descr}");
        }
    }

    #[test]
    fn npy_bf16_void_reads_raw_le_pairs() {
        // ml_dtypes writes bfloat16 1.0, 2.0 as '<V2' with bytes 80 3f 00 40.
        let data = [0x80, 0x3f, 0x00, 0x40];
        for descr in ["|V2", "<V2"] {
            let (dtype, _, out, borrowed) =
                read_all(npy_bytes(1, &dict(descr, false, "(2,)"), &data)).unwrap();
            assert_eq!(dtype, DType::BF16);
            assert_eq!(out, data);
            assert!(borrowed);
        }
    }

    #[test]
    fn npy_big_endian_is_swapped_to_exact_values() {
        let v = [1.0f32, -2.5, 3.25e-3];
        let (_, _, out, borrowed) =
            read_all(npy_bytes(1, &dict(">f4", false, "(3,)"), &f32_be(&v))).unwrap();
        assert_eq!(out, f32_le(&v));
        assert!(!borrowed);

        let v = [i64::MIN, 1, 0x0102_0304_0506_0708];
        let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let (_, _, out, _) = read_all(npy_bytes(1, &dict(">i8", false, "(3,)"), &be)).unwrap();
        assert_eq!(out, le);

        let (dtype, _, out, _) = read_all(npy_bytes(
            1,
            &dict(">V2", false, "(2,)"),
            &[0x3f, 0x80, 0x40, 0x00],
        ))
        .unwrap();
        assert_eq!((dtype, out), (DType::BF16, vec![0x80, 0x3f, 0x00, 0x40]));

        // Single-byte elements have no byte order.
        let (_, _, out, borrowed) =
            read_all(npy_bytes(1, &dict(">i1", false, "(2,)"), &[1, 2])).unwrap();
        assert_eq!(out, vec![1, 2]);
        assert!(borrowed);
    }

    #[test]
    fn npy_fortran_order_2d_is_gathered_into_c_order() {
        // [[0, 1, 2], [3, 4, 5]] stored column-major: 0 3 1 4 2 5.
        let stored: Vec<u8> = [0i16, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let want: Vec<u8> = (0i16..6).flat_map(|x| x.to_le_bytes()).collect();
        let (dtype, shape, out, borrowed) =
            read_all(npy_bytes(1, &dict("<i2", true, "(2, 3)"), &stored)).unwrap();
        assert_eq!((dtype, shape), (DType::I16, vec![2, 3]));
        assert_eq!(out, want);
        assert!(!borrowed);
    }

    #[test]
    fn npy_fortran_order_3d_is_gathered_into_c_order() {
        // v[i,j,k] = 12i + 4j + k lives at Fortran index i + 2j + 6k.
        let mut stored = [0u16; 24];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    stored[i + 2 * j + 6 * k] = (12 * i + 4 * j + k) as u16;
                }
            }
        }
        let stored_be: Vec<u8> = stored.iter().flat_map(|x| x.to_be_bytes()).collect();
        let stored: Vec<u8> = stored.iter().flat_map(|x| x.to_le_bytes()).collect();
        let want: Vec<u8> = (0i16..24).flat_map(|x| x.to_le_bytes()).collect();
        let (_, shape, out, _) =
            read_all(npy_bytes(1, &dict("<i2", true, "(2, 3, 4)"), &stored)).unwrap();
        assert_eq!(shape, vec![2, 3, 4]);
        assert_eq!(out, want);
        // Fortran order and big-endian together.
        let (_, _, out, _) =
            read_all(npy_bytes(1, &dict(">i2", true, "(2, 3, 4)"), &stored_be)).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn npy_fortran_order_with_one_non_unit_dim_is_borrowed() {
        let data = f32_le(&[1.0, 2.0, 3.0]);
        let (_, _, out, borrowed) =
            read_all(npy_bytes(1, &dict("<f4", true, "(1, 3, 1)"), &data)).unwrap();
        assert_eq!(out, data);
        assert!(borrowed);
    }

    #[test]
    fn npy_scalar_and_empty_arrays() {
        let (_, shape, out, _) =
            read_all(npy_bytes(1, &dict("<i8", false, "()"), &7i64.to_le_bytes())).unwrap();
        assert_eq!((shape, out), (vec![], 7i64.to_le_bytes().to_vec()));
        let (_, shape, out, _) = read_all(npy_bytes(1, &dict("<f4", true, "(0, 3)"), &[])).unwrap();
        assert_eq!((shape, out), (vec![0, 3], vec![]));
    }

    #[test]
    fn npy_unsupported_descr_error_names_it() {
        for descr in [
            "<u2", "<u4", "<u8", "<c8", "|O", "<U3", "|S4", "|V4", "<M8[ns]", ">f16",
        ] {
            let e = parse(npy_bytes(1, &dict(descr, false, "(1,)"), &[0; 16]))
                .err()
                .unwrap();
            match e.kind() {
                ErrorKind::UnsupportedDType { dtype } => assert_eq!(dtype, descr),
                other => panic!("{descr}: {other}"),
            }
        }
    }

    #[test]
    fn npy_structured_descr_list_is_malformed_container() {
        let header = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
        let e = parse(npy_bytes(1, header, &[0; 4])).err().unwrap();
        match e.kind() {
            ErrorKind::MalformedContainer { format, reason } => {
                assert_eq!(*format, Format::Npy);
                assert!(reason.contains("list"), "{reason}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn npy_header_grammar_accepts_python_literal_variants() {
        let data = f32_le(&[1.0, 2.0]);
        for header in [
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
            "{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}",
            "{'descr':'<f4','fortran_order':False,'shape':(2L,),}",
            "  {'descr': '<f4', 'fortran_order': False, 'shape': ( 2 , ) }   \n",
            "{'descr': '<f4',\n 'fortran_order': False,\t'shape': (1, 2), }",
        ] {
            let (_, _, out, _) =
                read_all(npy_bytes(1, header, &data)).unwrap_or_else(|e| panic!("{header}: {e}"));
            assert_eq!(out, data, "{header}");
        }
    }

    #[test]
    fn npy_header_grammar_rejects_everything_else() {
        for header in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2), }",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2 1,)}",
            "{'descr': {'a': 1}, 'fortran_order': False, 'shape': (2,)}",
            "",
            "{",
        ] {
            let e = parse(npy_bytes(1, header, &[0; 8])).err();
            match e.as_ref().map(Error::kind) {
                Some(ErrorKind::MalformedContainer { .. }) => {}
                other => panic!("{header:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn npy_absurd_header_length_is_refused_before_reading() {
        let mut bytes = npy_bytes(2, &dict("<f4", false, "(1,)"), &[0; 4]);
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse(bytes).err().unwrap();
        assert!(matches!(e.kind(), ErrorKind::BudgetExceeded { .. }), "{e}");

        let mut bytes = npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 4]);
        bytes[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        let e = parse(bytes).err().unwrap();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Truncated {
                    what: "npy header",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn npy_shape_larger_than_data_is_truncated() {
        let e = parse(npy_bytes(1, &dict("<f4", false, "(1000,)"), &[0; 16]))
            .err()
            .unwrap();
        match e.kind() {
            ErrorKind::Truncated {
                what,
                needed,
                available,
                ..
            } => {
                assert_eq!((*what, *needed, *available), ("npy data", 4000, 16));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn npy_trailing_bytes_after_data_are_malformed() {
        let e = parse(npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 5]))
            .err()
            .unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
            "{e}"
        );
    }

    #[test]
    fn npy_overflowing_or_negative_shape_is_invalid_layout() {
        for shape in [
            "(4294967296, 4294967296)",
            "(18446744073709551615, 2)",
            "(99999999999999999999999,)",
            "(-1,)",
        ] {
            let e = parse(npy_bytes(1, &dict("<f4", false, shape), &[]))
                .err()
                .unwrap();
            assert!(
                matches!(e.kind(), ErrorKind::InvalidLayout { .. }),
                "{shape}: {e}"
            );
        }
        let deep = format!("({})", vec!["1"; MAX_NPY_RANK + 1].join(", "));
        let e = parse(npy_bytes(1, &dict("<f4", false, &deep), &[0; 4]))
            .err()
            .unwrap();
        assert!(matches!(e.kind(), ErrorKind::InvalidLayout { .. }), "{e}");
    }

    #[test]
    fn npy_bad_magic_or_version_is_malformed() {
        let good = npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 4]);
        for (at, byte) in [(0, b'X'), (6, 4), (6, 0), (7, 1)] {
            let mut bytes = good.clone();
            bytes[at] = byte;
            let e = parse(bytes).err().unwrap();
            assert!(
                matches!(e.kind(), ErrorKind::MalformedContainer { .. }),
                "{at}: {e}"
            );
        }
    }

    #[test]
    fn npy_truncated_at_every_offset_errors_without_panic() {
        for major in 1..=3 {
            let full = npy_bytes(major, &dict(">f4", true, "(2, 3)"), &[7; 24]);
            assert!(parse(full.clone()).is_ok());
            for cut in 0..full.len() {
                let r = parse(full[..cut].to_vec());
                assert!(r.is_err(), "v{major} cut at {cut}");
            }
        }
    }

    #[test]
    fn npy_read_of_other_name_is_not_found() {
        let src = parse(npy_bytes(1, &dict("<f4", false, "(1,)"), &[0; 4])).unwrap();
        let e = src.read("weight").err().unwrap();
        assert!(matches!(e.kind(), ErrorKind::TensorNotFound { .. }));
        assert_eq!(src.tensors()[0].name, "array");
        assert_eq!(src.metadata()["descr"], "<f4");
    }

    #[test]
    fn write_npy_matches_numpy_header_bytes() {
        // np.save(np.zeros((2, 3), '<f4')) writes this 118-byte header (10 + 118 = 128).
        let mut out = Vec::new();
        write_npy(&mut out, DType::F32, &[2, 3], &[0; 24]).unwrap();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(&out[..10], b"\x93NUMPY\x01\x00\x76\x00");
        assert!(out[10..].starts_with(header.as_bytes()));
        assert_eq!(out.len(), 128 + 24);
        assert_eq!(out[127], b'\n');
        assert!(out[10 + header.len()..127].iter().all(|&b| b == b' '));
    }

    #[test]
    fn write_npy_round_trips_every_dtype() {
        for dtype in DType::ALL {
            for shape in [vec![], vec![3], vec![2, 0], vec![2, 3, 1]] {
                let n = tensor::checked_byte_len(dtype, &shape).unwrap();
                let data: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
                let mut out = Vec::new();
                write_npy(&mut out, dtype, &shape, &data).unwrap();
                let h = parse_npy_header(&out, &Limits::DEFAULT).unwrap();
                assert_eq!(h.data_offset % NPY_HEADER_ALIGN, 0);
                assert_eq!(h.descr, npy_descr(dtype));
                let (d, s, back, _) = read_all(out).unwrap();
                assert_eq!((d, s, back), (dtype, shape.clone(), data));
            }
        }
        let mut out = Vec::new();
        write_npy(&mut out, DType::BF16, &[1], &[0, 0]).unwrap();
        assert_eq!(
            parse_npy_header(&out, &Limits::DEFAULT).unwrap().descr,
            "<V2"
        );
    }

    #[test]
    fn write_npy_rejects_data_of_wrong_length() {
        let e = write_npy(&mut Vec::new(), DType::F32, &[2], &[0; 7])
            .err()
            .unwrap();
        assert!(matches!(e.kind(), ErrorKind::InvalidLayout { .. }));
    }
}
