//! Name templates: literal names with at most one `{i}` placeholder (a layer index). No regex.

use std::fmt;

/// A literal name with an optional `{i}` placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    prefix: String,
    /// `None` when the pattern has no placeholder.
    suffix: Option<String>,
}

/// Why a template string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PatternError(pub(crate) String);

impl Pattern {
    /// Parses a template. `{i}` may appear at most once; other braces are refused.
    pub(crate) fn parse(text: &str) -> Result<Self, PatternError> {
        let (prefix, suffix) = match text.split_once("{i}") {
            Some((p, s)) => (p, Some(s)),
            None => (text, None),
        };
        let bad = |s: &str| s.contains('{') || s.contains('}');
        if bad(prefix) || suffix.is_some_and(bad) {
            return Err(PatternError(format!(
                "name template `{text}`: only one `{{i}}` placeholder is allowed"
            )));
        }
        if text.is_empty() {
            return Err(PatternError("empty name template".into()));
        }
        Ok(Pattern {
            prefix: prefix.to_string(),
            suffix: suffix.map(str::to_string),
        })
    }

    /// A literal template of exactly `text` (no placeholder parsing).
    pub(crate) fn literal(text: &str) -> Self {
        Pattern {
            prefix: text.to_string(),
            suffix: None,
        }
    }

    /// The literal text before `{i}` (the whole name for a literal template).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The literal text after `{i}`, or `None` for a literal template.
    pub(crate) fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }

    /// True when the template contains `{i}`.
    pub(crate) fn is_indexed(&self) -> bool {
        self.suffix.is_some()
    }

    /// Matches a name. Returns `Some(None)` for a literal match, `Some(Some(i))` for an indexed one.
    /// Indices are decimal without leading zeros. The engine matches through
    /// [`PatternIndex`](super::index::PatternIndex), which is tested against this; the few
    /// `[[buffer]]` templates of a table (at most [`MAX_BUFFERS`](super::schema::MAX_BUFFERS))
    /// match with it directly.
    pub(crate) fn matches(&self, name: &str) -> Option<Option<usize>> {
        match &self.suffix {
            None => (name == self.prefix).then_some(None),
            Some(suffix) => {
                let rest = name.strip_prefix(self.prefix.as_str())?;
                let digits = rest.strip_suffix(suffix.as_str())?;
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || (digits.len() > 1 && digits.starts_with('0'))
                {
                    return None;
                }
                digits.parse::<usize>().ok().map(Some)
            }
        }
    }

    /// Renders the name for index `i` (ignored for literal templates).
    pub(crate) fn render(&self, i: Option<usize>) -> String {
        match (&self.suffix, i) {
            (Some(s), Some(i)) => format!("{}{i}{s}", self.prefix),
            (Some(s), None) => format!("{}{{i}}{s}", self.prefix),
            (None, _) => self.prefix.clone(),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_pattern_matches_decimal_indices_only() {
        let p = Pattern::parse("blocks.{i}.attn.qkv.weight").unwrap();
        assert_eq!(p.matches("blocks.11.attn.qkv.weight"), Some(Some(11)));
        assert_eq!(p.matches("blocks.0.attn.qkv.weight"), Some(Some(0)));
        assert_eq!(p.matches("blocks.01.attn.qkv.weight"), None);
        assert_eq!(p.matches("blocks.x.attn.qkv.weight"), None);
        assert_eq!(p.matches("blocks..attn.qkv.weight"), None);
        assert_eq!(p.matches("blocks.1.attn.qkv.bias"), None);
        assert_eq!(p.render(Some(3)), "blocks.3.attn.qkv.weight");
    }

    #[test]
    fn literal_pattern_matches_exactly() {
        let p = Pattern::parse("cls_token").unwrap();
        assert_eq!(p.matches("cls_token"), Some(None));
        assert_eq!(p.matches("cls_token2"), None);
        assert!(!p.is_indexed());
    }

    #[test]
    fn two_placeholders_are_refused() {
        assert!(Pattern::parse("a.{i}.b.{i}").is_err());
        assert!(Pattern::parse("a.{j}.b").is_err());
    }
}
