//! The `.npy` preamble and the strict parser for its header's dict-literal grammar.

use crate::error::{malformed, Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::source::{to_u64, Format};
use crate::tensor::{self, DType};

use super::{ByteOrder, NpyHeader, MAX_NPY_RANK, NPY_MAGIC, V1_PREAMBLE_LEN, V2_PREAMBLE_LEN};

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
