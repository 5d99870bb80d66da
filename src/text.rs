//! Text from files (tensor names, paths, table text, labels) made safe for one-line,
//! human-readable messages.
//!
//! A tensor name is attacker-controlled: `"x\nPASS: max |Δ| 0"` must not print a second line,
//! and `"\x1b[2J"` must not clear the terminal. [`Escaped`] writes any value with every control
//! character escaped: C0 (newline, carriage return, NUL, ESC, …), DEL, C1, the Unicode line and
//! paragraph separators U+2028/U+2029 and the bidirectional overrides and isolates
//! (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F). Newline, carriage return and tab print as
//! `\n`, `\r`, `\t`; the others as `\u{…}`. Everything else, backslashes included, is unchanged,
//! so escaping already-escaped text changes nothing. JSON output keeps the raw names (serde
//! escapes them).
//!
//! [`Error`](crate::Error)'s `Display` goes through it, so every error is one line.
//!
//! ```
//! use vit_convert::text::Escaped;
//! let name = "x\nPASS: max |Δ| 0\n\x1b[2J";
//! assert_eq!(Escaped(name).to_string(), r"x\nPASS: max |Δ| 0\n\u{1b}[2J");
//! ```

use std::fmt::{self, Write as _};

/// Displays the inner value with control characters escaped (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// Serializes a path as a JSON string, lossily (invalid UTF-8 becomes U+FFFD) like
/// `Path::display`: serde's own `Path` serialization fails on a non-UTF-8 path, and `--json`
/// output must stay one valid document whatever the file names. For `#[serde(serialize_with)]`.
///
/// # Errors
/// Those of the serializer.
pub fn serialize_path_lossy<S: serde::Serializer>(
    path: &std::path::Path,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`serialize_path_lossy`] for a list of paths.
///
/// # Errors
/// Those of the serializer.
pub fn serialize_paths_lossy<S: serde::Serializer>(
    paths: &[std::path::PathBuf],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

/// [`serialize_path_lossy`] for an optional path (`null` for `None`).
///
/// # Errors
/// Those of the serializer.
pub fn serialize_opt_path_lossy<S: serde::Serializer>(
    path: &Option<std::path::PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => serialize_path_lossy(p, s),
        None => s.serialize_none(),
    }
}

/// Whether `c` must not reach a terminal raw.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with control characters escaped; borrowed when there are none.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(is_unsafe_char) {
        std::borrow::Cow::Owned(Escaped(s).to_string())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Writes one character, escaped if it is unsafe.
fn write_char_escaped(out: &mut dyn fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if is_unsafe_char(c) => write!(out, "\\u{{{:x}}}", u32::from(c)),
        c => out.write_char(c),
    }
}

/// A `fmt::Write` that escapes everything written through it.
struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.chars().any(is_unsafe_char) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            write_char_escaped(self.0, c)?;
        }
        Ok(())
    }
}

/// Escapes control characters in `s` except newlines, for multi-line text a program composes
/// (each line of which already went through [`Escaped`] where it embeds file text). Used by the
/// CLI's stdout so that no ESC, CR, NUL or line separator reaches the terminal whatever a
/// message forgot.
pub fn escape_keeping_newlines(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe_char(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\n' {
            out.push('\n');
        } else {
            // Writing to a String cannot fail.
            let _ = write_char_escaped(&mut out, c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_escaped_and_nothing_else() {
        for c in (0u32..0x30000).filter_map(char::from_u32) {
            let s = Escaped(c).to_string();
            if is_unsafe_char(c) {
                assert!(s.starts_with('\\'), "{c:?} printed as {s:?}");
                assert!(!s.chars().any(is_unsafe_char), "{c:?} printed as {s:?}");
            } else {
                assert_eq!(s, c.to_string());
            }
        }
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = Escaped("a\nb\u{2028}\u{1b}[2J\r\0\u{202e}").to_string();
        assert_eq!(Escaped(&once).to_string(), once);
        assert_eq!(escape(&once), once);
        assert_eq!(once, r"a\nb\u{2028}\u{1b}[2J\r\u{0}\u{202e}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_serialize_lossily() {
        use std::os::unix::ffi::OsStrExt;
        #[derive(serde::Serialize)]
        struct R {
            #[serde(serialize_with = "serialize_path_lossy")]
            one: std::path::PathBuf,
            #[serde(serialize_with = "serialize_paths_lossy")]
            many: Vec<std::path::PathBuf>,
        }
        let p = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"o\xff\n.npy"));
        // serde's own Path serialization refuses it: the reason this exists.
        assert!(serde_json::to_string(&p).is_err());
        let json = serde_json::to_string(&R {
            one: p.clone(),
            many: vec![p],
        })
        .unwrap();
        assert_eq!(
            json,
            "{\"one\":\"o\u{fffd}\\n.npy\",\"many\":[\"o\u{fffd}\\n.npy\"]}"
        );
    }

    #[test]
    fn newlines_can_be_kept() {
        assert_eq!(escape_keeping_newlines("a\u{1b}\nb\n"), "a\\u{1b}\nb\n");
        assert!(matches!(
            escape_keeping_newlines("a\nb"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
