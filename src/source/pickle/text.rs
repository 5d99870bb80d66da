//! Operands of the protocol-0 text opcodes: decimal integers, floats, quoted strings and
//! raw-unicode-escaped text. Each function takes the line without its newline and returns `None`
//! when the text is malformed.

use super::value::{BigInt, Node};
use super::MAX_DECIMAL_DIGITS;

/// Parses an optionally signed decimal integer (`INT`, `LONG` without its `L`).
pub(crate) fn decimal(text: &[u8]) -> Option<Node> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > MAX_DECIMAL_DIGITS {
        return None;
    }
    // Little-endian base-2^32 limbs; limbs = limbs * 10 + digit.
    let mut limbs: Vec<u32> = Vec::new();
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let mut carry = u64::from(c - b'0');
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * 10 + carry;
            *limb = u32::try_from(v & 0xffff_ffff).unwrap_or_default();
            carry = v >> 32;
        }
        if carry != 0 {
            limbs.push(u32::try_from(carry).unwrap_or_default()); // carry < 10 here
        }
    }
    let mut magnitude: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    while magnitude.last() == Some(&0) {
        magnitude.pop();
    }
    let negative = negative && !magnitude.is_empty();
    Some(
        BigInt {
            negative,
            magnitude,
        }
        .into_node(),
    )
}

/// Parses a float as Python's `repr` writes it (`1.5`, `-inf`, `nan`, `1e-05`).
pub(crate) fn float(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.trim().parse::<f64>().ok()
}

/// Decodes a `STRING` operand: a quoted Python bytes literal body with `\` escapes
/// (`codecs.escape_decode`).
pub(crate) fn quoted_string(text: &[u8]) -> Option<Vec<u8>> {
    let (&first, rest) = text.split_first()?;
    let (&last, body) = rest.split_last()?;
    if first != last || !(first == b'\'' || first == b'"') {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0usize;
    while let Some(&c) = body.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = body.get(i) else {
            return None; // trailing backslash
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(v & 0xff).unwrap_or_default()); // CPython keeps the low byte
            }
            b'x' => {
                let hi = hex_digit(*body.get(i)?)?;
                let lo = hex_digit(*body.get(i + 1)?)?;
                i += 2;
                out.push(u8::try_from((hi << 4) | lo).unwrap_or_default());
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Decodes a `UNICODE` operand (`raw-unicode-escape`): bytes are Latin-1 characters except
/// `\uXXXX` and `\UXXXXXXXX` after an odd run of backslashes.
pub(crate) fn raw_unicode_escape(text: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut i = 0usize;
    let mut backslashes = 0usize;
    while let Some(&c) = text.get(i) {
        i += 1;
        if c == b'\\' {
            backslashes += 1;
            out.push('\\');
            continue;
        }
        let odd = backslashes % 2 == 1;
        backslashes = 0;
        let width = match c {
            b'u' if odd => 4,
            b'U' if odd => 8,
            _ => {
                out.push(char::from(c));
                continue;
            }
        };
        out.pop(); // the escaping backslash
        let mut v = 0u32;
        for _ in 0..width {
            v = (v << 4) | hex_digit(*text.get(i)?)?;
            i += 1;
        }
        out.push(char::from_u32(v)?);
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_reads_small_big_and_negative_values() {
        assert_eq!(decimal(b"42"), Some(Node::Int(42)));
        assert_eq!(decimal(b"-7"), Some(Node::Int(-7)));
        assert_eq!(decimal(b"-0"), Some(Node::Int(0)));
        assert_eq!(decimal(b"-9223372036854775808"), Some(Node::Int(i64::MIN)));
        // 0x1950a86a20f9469cfc6c, the legacy torch magic number.
        assert_eq!(
            decimal(b"119547037146038801333356"),
            Some(Node::BigInt(BigInt {
                negative: false,
                magnitude: vec![0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]
            }))
        );
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"12a"), None);
        assert_eq!(decimal(&[b'9'; MAX_DECIMAL_DIGITS + 1]), None);
    }

    #[test]
    fn quoted_string_decodes_escapes() {
        assert_eq!(
            quoted_string(br"'a\nb\x41\101\\\''").as_deref(),
            Some(&b"a\nbAA\\'"[..])
        );
        assert_eq!(quoted_string(b"\"x\""), Some(b"x".to_vec()));
        assert_eq!(quoted_string(b"'x\""), None);
        assert_eq!(quoted_string(br"'\x4'"), None);
        assert_eq!(quoted_string(b"'"), None);
    }

    #[test]
    fn raw_unicode_escape_decodes_only_odd_backslash_runs() {
        assert_eq!(raw_unicode_escape(br"a\u00e9").as_deref(), Some("a\u{e9}"));
        assert_eq!(raw_unicode_escape(br"\\u0041").as_deref(), Some(r"\\u0041"));
        assert_eq!(raw_unicode_escape(b"\xe9").as_deref(), Some("\u{e9}"));
        assert_eq!(
            raw_unicode_escape(br"\U0001F600").as_deref(),
            Some("\u{1F600}")
        );
        assert_eq!(raw_unicode_escape(br"\u12"), None);
        assert_eq!(raw_unicode_escape(br"\ud800"), None);
    }
}
