//! Indexes that let a table meet a listing in near-linear time: a byte trie of literal prefixes
//! ([`PrefixSet`]) and an index of name templates by their literal prefix ([`PatternIndex`]).
//! Each answers for one name in time bounded by the name's length (times a small constant), never
//! by the number of prefixes or templates in the table, so 20 000 rules against 200 000 names
//! cost about as much as 200 000 hash look-ups.

use std::collections::{HashMap, HashSet};

use super::pattern::Pattern;
use super::schema::{MappingTable, RejectMatch};

/// A table's names compiled for matching, built once when the table is loaded.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableIndex {
    /// `strip_prefixes`, by list position.
    pub(crate) strip: PrefixSet,
    /// `ignore_prefixes`.
    pub(crate) ignore: PrefixSet,
    /// Wrappers and branches, each followed by `/`.
    pub(crate) containers: PrefixSet,
    /// `[[reject]]` entries with a `name`, by reject position.
    pub(crate) reject_names: PatternIndex,
    /// `[[reject]]` entries with a `prefix`, by reject position.
    pub(crate) reject_prefixes: PrefixSet,
    /// The first `from` name of each rule, by rule position.
    pub(crate) from: PatternIndex,
    /// The first `to` name of each rule, by rule position.
    pub(crate) to: PatternIndex,
}

impl TableIndex {
    /// Compiles the table's prefixes and templates.
    pub(crate) fn build(t: &MappingTable) -> Self {
        let slashed: Vec<String> = t
            .wrappers
            .iter()
            .map(String::as_str)
            .chain(t.branches.iter().map(|b| b.name()))
            .map(|w| format!("{w}/"))
            .collect();
        TableIndex {
            strip: PrefixSet::new(t.strip_prefixes.iter().map(String::as_str).enumerate()),
            ignore: PrefixSet::new(t.ignore_prefixes.iter().map(String::as_str).enumerate()),
            containers: PrefixSet::new(slashed.iter().map(String::as_str).enumerate()),
            reject_names: PatternIndex::new(t.rejects.iter().enumerate().filter_map(|(k, r)| {
                match &r.matcher {
                    RejectMatch::Name(p) => Some((k, p)),
                    RejectMatch::Prefix(_) => None,
                }
            })),
            reject_prefixes: PrefixSet::new(t.rejects.iter().enumerate().filter_map(|(k, r)| {
                match &r.matcher {
                    RejectMatch::Prefix(p) => Some((k, p.as_str())),
                    RejectMatch::Name(_) => None,
                }
            })),
            from: PatternIndex::new(
                t.rules
                    .iter()
                    .enumerate()
                    .filter_map(|(k, r)| r.from.first().map(|p| (k, p))),
            ),
            to: PatternIndex::new(
                t.rules
                    .iter()
                    .enumerate()
                    .filter_map(|(k, r)| r.to.first().map(|p| (k, p))),
            ),
        }
    }
}

/// Most decimal digits a layer index can have (`usize::MAX` has 20).
const MAX_INDEX_DIGITS: usize = 20;

/// A byte trie: node 0 is the root; edges live in one map.
#[derive(Clone, Debug)]
struct Trie {
    edges: HashMap<(usize, u8), usize>,
    nodes: usize,
}

impl Default for Trie {
    fn default() -> Self {
        Trie::new()
    }
}

impl Trie {
    fn new() -> Self {
        Trie {
            edges: HashMap::new(),
            nodes: 1,
        }
    }

    /// The node for `key`, created if needed.
    fn insert(&mut self, key: &[u8]) -> usize {
        let mut node = 0;
        for &b in key {
            node = match self.edges.get(&(node, b)) {
                Some(&n) => n,
                None => {
                    let n = self.nodes;
                    self.nodes += 1;
                    self.edges.insert((node, b), n);
                    n
                }
            };
        }
        node
    }

    /// The nodes along `key` (after 1, 2, … bytes), with the number of bytes consumed; stops where
    /// the trie ends. The root (0 bytes) comes first.
    fn walk<'k>(&'k self, key: &'k [u8]) -> impl Iterator<Item = (usize, usize)> + 'k {
        let mut node = Some(0usize);
        let mut depth = 0usize;
        std::iter::from_fn(move || {
            let n = node?;
            let here = (depth, n);
            node = key
                .get(depth)
                .and_then(|b| self.edges.get(&(n, *b)).copied());
            depth += 1;
            Some(here)
        })
    }
}

/// A set of literal prefixes, each with its position in the table's list.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixSet {
    trie: Trie,
    /// The smallest list position of the prefix ending at a node.
    ends: HashMap<usize, usize>,
}

impl PrefixSet {
    /// Indexes `(position, prefix)` pairs ([`PrefixSet::matches`] reports the positions).
    pub(crate) fn new<'a>(prefixes: impl IntoIterator<Item = (usize, &'a str)>) -> Self {
        let mut trie = Trie::new();
        let mut ends = HashMap::new();
        for (k, p) in prefixes {
            let node = trie.insert(p.as_bytes());
            let end = ends.entry(node).or_insert(k);
            *end = (*end).min(k);
        }
        PrefixSet { trie, ends }
    }

    /// `(length, list position)` of every prefix `name` starts with, shortest first.
    pub(crate) fn matches<'n>(
        &'n self,
        name: &'n str,
    ) -> impl Iterator<Item = (usize, usize)> + 'n {
        self.trie
            .walk(name.as_bytes())
            .filter_map(|(len, node)| self.ends.get(&node).map(|&k| (len, k)))
    }

    /// True when `name` starts with one of the prefixes.
    pub(crate) fn any_match(&self, name: &str) -> bool {
        self.matches(name).next().is_some()
    }
}

/// Name templates indexed for matching: literal names by the whole name, `{i}` templates by their
/// literal prefix (a trie walked from the name's start) and their literal suffix (a trie of
/// reversed suffixes walked from the name's end), so no look-up hashes the rest of a name: one
/// forward and one backward walk per name, whatever the number or length of the templates.
#[derive(Clone, Debug, Default)]
pub(crate) struct PatternIndex {
    literals: HashMap<String, Vec<usize>>,
    prefixes: Trie,
    /// Every template's suffix, reversed.
    suffixes: Trie,
    /// (prefix node, suffix node) → template positions (ascending).
    templates: HashMap<(usize, usize), Vec<usize>>,
    /// The prefix nodes some template's prefix ends at.
    prefix_ends: HashSet<usize>,
}

#[cfg(test)]
thread_local! {
    /// Index probes made on this thread (tests bound the matching work with it).
    pub(crate) static PROBES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn probe() {
    #[cfg(test)]
    PROBES.with(|p| p.set(p.get() + 1));
}

impl PatternIndex {
    /// Indexes `(position, pattern)` pairs, positions ascending; [`PatternIndex::candidates`]
    /// reports the positions.
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = (usize, &'a Pattern)>) -> Self {
        let mut index = PatternIndex::default();
        for (k, p) in patterns {
            match p.suffix() {
                None => index
                    .literals
                    .entry(p.prefix().to_string())
                    .or_default()
                    .push(k),
                Some(s) => {
                    let node = index.prefixes.insert(p.prefix().as_bytes());
                    let reversed: Vec<u8> = s.bytes().rev().collect();
                    let tail = index.suffixes.insert(&reversed);
                    index.prefix_ends.insert(node);
                    index.templates.entry((node, tail)).or_default().push(k);
                }
            }
        }
        index
    }

    /// Calls `found(position, index)` for the patterns that match `name` (as [`Pattern::matches`]
    /// would), at most `per_form` of them for each distinct template (the lowest positions): a
    /// caller that needs the first few matches by position asks for that many.
    pub(crate) fn candidates(
        &self,
        name: &str,
        per_form: usize,
        mut found: impl FnMut(usize, Option<usize>),
    ) {
        probe();
        if let Some(ks) = self.literals.get(name) {
            for &k in ks.iter().take(per_form) {
                found(k, None);
            }
        }
        let bytes = name.as_bytes();
        if self.prefix_ends.is_empty() {
            return;
        }
        // tails[l]: the suffix-trie node of the name's last l bytes, while the trie has them.
        let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
        let tails: Vec<usize> = self.suffixes.walk(&reversed).map(|(_, n)| n).collect();
        for (len, node) in self.prefixes.walk(bytes) {
            if !self.prefix_ends.contains(&node) {
                continue;
            }
            let rest = bytes.get(len..).unwrap_or_default();
            let run = rest
                .iter()
                .take(MAX_INDEX_DIGITS)
                .take_while(|b| b.is_ascii_digit())
                .count();
            // Decimal without leading zeros: "0" alone, or a run not starting with '0'.
            let longest = if rest.first() == Some(&b'0') { 1 } else { run };
            for digits in 1..=longest.min(run) {
                probe();
                let Some(tail) = rest.len().checked_sub(digits).and_then(|l| tails.get(l)) else {
                    continue;
                };
                let Some(ks) = self.templates.get(&(node, *tail)) else {
                    continue;
                };
                let Some(Ok(i)) = name.get(len..len + digits).map(str::parse::<usize>) else {
                    continue;
                };
                for &k in ks.iter().take(per_form) {
                    found(k, Some(i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(patterns: &[Pattern], name: &str) -> Vec<(usize, Option<usize>)> {
        patterns
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.matches(name).map(|i| (k, i)))
            .collect()
    }

    #[test]
    fn pattern_index_finds_what_pattern_matches_finds() {
        let texts = [
            "blocks.{i}.attn.qkv.weight",
            "blocks.{i}.attn.qkv.weight",
            "blocks.{i}0",
            "blocks.{i}",
            "blocks.1.x",
            "b{i}",
            "{i}",
            "{i}.w",
            "cls_token",
            "cls_token",
            "blocks.{i}.attn.qkv.bias",
        ];
        let patterns: Vec<Pattern> = texts.iter().map(|t| Pattern::parse(t).unwrap()).collect();
        let index = PatternIndex::new(patterns.iter().enumerate());
        for name in [
            "blocks.11.attn.qkv.weight",
            "blocks.0.attn.qkv.weight",
            "blocks.01.attn.qkv.weight",
            "blocks.120",
            "blocks.100",
            "blocks.0",
            "blocks.00",
            "blocks.1.x",
            "b7",
            "7",
            "0.w",
            "cls_token",
            "blocks.99999999999999999999999.attn.qkv.weight",
            "blocks.18446744073709551615",
            "",
            "blocks.",
        ] {
            let mut got = Vec::new();
            index.candidates(name, usize::MAX, |k, i| got.push((k, i)));
            got.sort_unstable();
            assert_eq!(got, brute(&patterns, name), "{name}");
        }
    }

    #[test]
    fn template_matching_does_not_hash_the_rest_of_a_long_name_per_template() {
        // 900 templates whose prefixes all lie along `a1a1a1…`, each followed by a digit in the
        // name: matching used to hash the rest of the name once per template.
        let patterns: Vec<Pattern> = (0..900)
            .map(|j| Pattern::parse(&format!("{}a{{i}}x", "a1".repeat(j))).unwrap())
            .collect();
        let index = PatternIndex::new(patterns.iter().enumerate());
        let start = std::time::Instant::now();
        for n in 0..300 {
            let name = format!("{}a{n:06}{}", "a1".repeat(900), "z".repeat(10_000));
            index.candidates(&name, 2, |k, _| panic!("{k} matched"));
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let name = format!("{}a7x", "a1".repeat(899));
        let mut got = Vec::new();
        index.candidates(&name, 2, |k, i| got.push((k, i)));
        assert_eq!(got, brute(&patterns, &name));
        assert_eq!(got, vec![(899, Some(7))]);
    }

    #[test]
    fn prefix_set_reports_every_prefix_shortest_first() {
        let set = PrefixSet::new(["module.", "mod", "module.", "x"].into_iter().enumerate());
        let got: Vec<_> = set.matches("module.a").collect();
        assert_eq!(got, vec![(3, 1), (7, 0)]);
        assert!(set.any_match("xy"));
        assert!(!set.any_match("y"));
        assert!(!PrefixSet::new(std::iter::empty()).any_match("y"));
    }
}
