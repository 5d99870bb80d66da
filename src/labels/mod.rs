//! Class names for `config.json`'s `id2label`: the bundled ImageNet lists ([`LabelSet`]), a
//! user's list ([`parse_labels`], [`read_labels_file`]) and which one conversion writes
//! ([`Labels`], `--labels`).
//!
//! timm and JAX checkpoints carry no class names; transformers' own conversion scripts write
//! ImageNet's names into `id2label`, and so does conversion here when the head's class count
//! matches exactly one bundled list and the table says its family trains on that list (the
//! table's `labels` setting, `mappings/README.md`). Otherwise the labels stay `LABEL_0` …
//! and the report's notes say why. Counts are never stretched or cut to fit a list.
//!
//! The lists are WordNet lemma lists per class, as timm's `ImageNetInfo` and transformers'
//! `id2label` files spell them; `scripts/make_labels.py` builds them from timm 1.0.31's files.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::model::MAX_LABELS;

/// ImageNet-1k (ILSVRC-2012), 1000 names, one a line.
const IMAGENET_1K: &str = include_str!("data/imagenet-1k.txt");
/// Google's ImageNet-21k, 21 843 names, one a line.
const IMAGENET_21K: &str = include_str!("data/imagenet-21k.txt");
/// The indices of Google's ImageNet-21k that ImageNet-22k (fall11) lacks (synsets n03931044 and
/// n09859684): transformers' BEiT conversion deletes these two from the 21k list, and so does
/// [`LabelSet::ImageNet22k`].
const NOT_IN_22K: [usize; 2] = [9205, 15027];

pub use crate::vocab::LabelSet;

impl LabelSet {
    /// The class names, in class order.
    ///
    /// ```
    /// use vit_convert::labels::LabelSet;
    /// let names: Vec<&str> = LabelSet::ImageNet1k.names().collect();
    /// assert_eq!(names.len(), 1000);
    /// assert_eq!(names[281], "tabby, tabby cat");
    /// ```
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        let (text, skip): (&'static str, &'static [usize]) = match self {
            LabelSet::ImageNet1k => (IMAGENET_1K, &[]),
            LabelSet::ImageNet21k => (IMAGENET_21K, &[]),
            LabelSet::ImageNet22k => (IMAGENET_21K, &NOT_IN_22K),
        };
        text.lines()
            .enumerate()
            .filter(move |(i, _)| !skip.contains(i))
            .map(|(_, name)| name)
    }

    /// The names as an `id2label` map.
    pub fn id2label(self) -> BTreeMap<usize, String> {
        self.names().map(str::to_string).enumerate().collect()
    }
}

crate::error::impl_names!(LabelSet, "label set", LabelSet::ALL.into_iter());

/// Which class names conversion writes into `config.json`'s `id2label` (`--labels`).
///
/// An `id2label` from the config (option `config`, or the `config.json` beside an `hf` or `flax`
/// input) is kept by [`Auto`](Labels::Auto) and [`None`](Labels::None); giving both option
/// `config`'s `id2label` and a list here is an [`ErrorKind::InvalidOption`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Labels {
    /// The bundled list whose class count the head has, when the table's family trains on it
    /// (its `labels` setting); else `LABEL_n`. The report's notes say which and why.
    #[default]
    Auto,
    /// `LABEL_0` … `LABEL_{n-1}`, as transformers names classes it knows nothing about.
    None,
    /// A bundled list; its class count must be the head's.
    Bundled(LabelSet),
    /// The caller's names (index → name, indices `0..n`); `n` must be the head's class count.
    Custom(BTreeMap<usize, String>),
}

impl Labels {
    /// `auto`, `none` or a [`LabelSet`] name; `None` for anything else (the CLI then reads the
    /// value as a file).
    ///
    /// ```
    /// use vit_convert::labels::{LabelSet, Labels};
    /// assert_eq!(Labels::from_name("imagenet-22k"), Some(Labels::Bundled(LabelSet::ImageNet22k)));
    /// assert_eq!(Labels::from_name("labels.txt"), None);
    /// ```
    pub fn from_name(s: &str) -> Option<Labels> {
        match s {
            "auto" => Some(Labels::Auto),
            "none" => Some(Labels::None),
            _ => s.parse().ok().map(Labels::Bundled),
        }
    }
}

fn labels_err(reason: impl Into<String>) -> Error {
    ErrorKind::Config {
        reason: reason.into(),
    }
    .into()
}

/// Parses a list of class names: a JSON object (`{"0": "cat", "1": "dog"}`, an `id2label`; a
/// whole `config.json` holding one is read for its `id2label`), or else one name per line (`\n`
/// or `\r\n`; a final newline is optional).
///
/// ```
/// use vit_convert::labels::parse_labels;
/// let json = parse_labels(r#"{"1": "dog", "0": "cat"}"#)?;
/// let lines = parse_labels("cat\ndog\n")?;
/// assert_eq!(json, lines);
/// assert_eq!(lines[&1], "dog");
/// # Ok::<(), vit_convert::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::Config`]: no names, more than [`MAX_LABELS`], an empty name (naming its line), a
/// JSON object whose keys are not the indices `0..n` or whose values are not strings, JSON that
/// does not parse.
pub fn parse_labels(text: &str) -> Result<BTreeMap<usize, String>> {
    let labels = if text.trim_start().starts_with('{') {
        parse_json(text)?
    } else {
        parse_lines(text)?
    };
    if labels.is_empty() {
        return Err(labels_err("labels: no names"));
    }
    Ok(labels)
}

/// One name per line.
fn parse_lines(text: &str) -> Result<BTreeMap<usize, String>> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut labels = BTreeMap::new();
    if body.is_empty() {
        return Ok(labels);
    }
    for (i, line) in body.split('\n').enumerate() {
        if i >= MAX_LABELS {
            return Err(labels_err(format!("labels: more than {MAX_LABELS} lines")));
        }
        let name = line.strip_suffix('\r').unwrap_or(line);
        if name.is_empty() {
            return Err(labels_err(format!("labels: line {} is empty", i + 1)));
        }
        labels.insert(i, name.to_string());
    }
    Ok(labels)
}

/// A JSON `id2label` object, or an object holding one under `id2label`.
fn parse_json(text: &str) -> Result<BTreeMap<usize, String>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| labels_err(format!("labels: {e}")))?;
    let obj = match v.get("id2label") {
        Some(inner) => inner,
        None => &v,
    };
    let Some(m) = obj.as_object() else {
        return Err(labels_err("labels: `id2label` is not an object"));
    };
    if m.len() > MAX_LABELS {
        return Err(labels_err(format!(
            "labels: {} names, more than {MAX_LABELS}",
            m.len()
        )));
    }
    let mut labels = BTreeMap::new();
    for (k, name) in m {
        let shown: String = k.chars().take(40).collect();
        let i = k
            .parse::<usize>()
            .ok()
            .filter(|&i| i < m.len() && k == &i.to_string())
            .ok_or_else(|| {
                labels_err(format!(
                    "labels: key {shown:?} is not an index below {}",
                    m.len()
                ))
            })?;
        let Some(name) = name.as_str() else {
            return Err(labels_err(format!(
                "labels: the name of {i} is not a string"
            )));
        };
        if name.is_empty() {
            return Err(labels_err(format!("labels: the name of {i} is empty")));
        }
        // Keys are distinct strings and canonical decimals, so indices are too.
        labels.insert(i, name.to_string());
    }
    Ok(labels)
}

/// Reads and parses a labels file ([`parse_labels`]), as untrusted as the weights: refused unread
/// when larger than [`Limits::config_file_bytes`](crate::Limits::config_file_bytes).
///
/// # Errors
/// As [`model::read_config_file`](crate::model::read_config_file) (not UTF-8:
/// [`ErrorKind::Io`]; too large: [`ErrorKind::BudgetExceeded`]) and [`parse_labels`]; all carry
/// `path`.
pub fn read_labels_file(
    path: impl AsRef<Path>,
    limits: &crate::Limits,
) -> Result<BTreeMap<usize, String>> {
    let path = path.as_ref();
    let text = crate::model::read_config_file(path, limits)?;
    parse_labels(&text).map_err(|e| e.with_path(path))
}

/// Where a config's `id2label` came from, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigNames {
    /// The config names no classes.
    Absent,
    /// The `config.json` beside the input names them.
    Sidecar,
    /// Option `config` names them.
    Option,
}

/// What [`choose`] decided: the names to write (`None`: keep the config's) and a note for the
/// report.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) id2label: Option<BTreeMap<usize, String>>,
    pub(crate) note: Option<String>,
}

/// Chooses the class names for a head of `classes` classes (0: no head) converted with table
/// `table_id`, whose family trains on `trained_on`.
///
/// # Errors
/// [`ErrorKind::InvalidOption`] for a list given for a model without a head, together with
/// option `config`'s `id2label`, or whose indices are not `0..n`; [`ErrorKind::ConfigMismatch`] (`id2label`) when a given list's
/// count is not the head's.
pub(crate) fn choose(
    labels: &Labels,
    trained_on: &[LabelSet],
    table_id: &str,
    classes: usize,
    from_config: ConfigNames,
) -> Result<Choice> {
    let given = match labels {
        Labels::Bundled(set) => Some((set.id2label(), format!("{} names", set.title()))),
        Labels::Custom(m) => Some((m.clone(), "names".to_string())),
        Labels::Auto | Labels::None => None,
    };
    if let Some((names, what)) = given {
        if classes == 0 {
            return Err(ErrorKind::InvalidOption {
                reason: "option `labels`: the model has no classification head".to_string(),
            }
            .into());
        }
        if from_config == ConfigNames::Option {
            return Err(ErrorKind::InvalidOption {
                reason: "option `labels` and option `config`'s `id2label` both name the classes; give one".to_string(),
            }
            .into());
        }
        if !names.keys().copied().eq(0..names.len()) {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "option `labels`: the names' indices are not 0..{}",
                    names.len()
                ),
            }
            .into());
        }
        if names.len() != classes {
            return Err(crate::model::mismatch("id2label", names.len(), classes));
        }
        let replaced = if from_config == ConfigNames::Sidecar {
            ", replacing the config.json's"
        } else {
            ""
        };
        return Ok(Choice {
            id2label: Some(names),
            note: Some(format!(
                "id2label: {what} ({classes} classes, option `labels`{replaced})"
            )),
        });
    }
    if classes == 0 || from_config != ConfigNames::Absent {
        return Ok(Choice {
            id2label: None,
            note: None,
        });
    }
    let keep = |why: String| Choice {
        id2label: None,
        note: Some(format!("id2label: LABEL_n kept: {why}")),
    };
    if *labels == Labels::None {
        return Ok(keep("option `labels` none".to_string()));
    }
    let Some(set) = LabelSet::ALL.into_iter().find(|s| s.classes() == classes) else {
        let known: Vec<String> = LabelSet::ALL
            .iter()
            .map(|s| format!("{} {}", s.title(), s.classes()))
            .collect();
        return Ok(keep(format!(
            "{classes} classes match no bundled list ({}); option `labels` FILE names them",
            known.join(", ")
        )));
    };
    if !trained_on.contains(&set) {
        return Ok(keep(format!(
            "the head's {classes} classes match {}, but table `{table_id}` does not list it in `labels`; option `labels` {} writes its names",
            set.title(),
            set.name()
        )));
    }
    Ok(Choice {
        id2label: Some(set.id2label()),
        note: Some(format!(
            "id2label: {} names ({classes} classes, bundled; option `labels` none keeps LABEL_n)",
            set.title()
        )),
    })
}

/// Writes the class names [`choose`] picks into `config` (inferred by table `table`, with the
/// caller's overrides `user` and those merged with a side `config.json`, `merged`), and its note
/// into `notes`.
///
/// # Errors
/// As [`choose`].
pub(crate) fn apply(
    labels: &Labels,
    table: &crate::MappingTable,
    user: &crate::ConfigOverrides,
    merged: &crate::ConfigOverrides,
    config: &mut crate::model::ViTConfig,
    notes: &mut Vec<String>,
) -> Result<()> {
    let names = |o: &crate::ConfigOverrides| {
        o.config
            .as_ref()
            .and_then(|c| c.get("id2label"))
            .is_some_and(|v| !v.is_null())
    };
    let from_config = if names(user) {
        ConfigNames::Option
    } else if names(merged) {
        ConfigNames::Sidecar
    } else {
        ConfigNames::Absent
    };
    let choice = choose(
        labels,
        &table.facts.labels,
        &table.id,
        config.num_labels(),
        from_config,
    )?;
    if let Some(id2label) = choice.id2label {
        config.id2label = id2label;
    }
    notes.extend(choice.note);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn sha(names: impl Iterator<Item = &'static str>) -> String {
        let mut h = Sha256::new();
        for n in names {
            h.update(n.as_bytes());
            h.update(b"\n");
        }
        crate::mapping::schema::hex(&h.finalize())
    }

    /// The sha256s `scripts/make_labels.py` printed when it wrote the files from timm 1.0.31
    /// (after checking them against `timm.data.ImageNetInfo`).
    #[test]
    fn bundled_lists_are_the_generated_files() {
        assert_eq!(
            crate::mapping::schema::hex(&Sha256::digest(IMAGENET_1K.as_bytes())),
            "4eb3da435cf544e4a6f390f62c84cb9c9bb68cf8b14e97f8a063452382e5efd2"
        );
        assert_eq!(
            crate::mapping::schema::hex(&Sha256::digest(IMAGENET_21K.as_bytes())),
            "2d3f16a9c5ff5ad08448ec9e2dfa38a0ae620f645f5831ed3b2da3df5e61cf07"
        );
        assert_eq!(
            sha(LabelSet::ImageNet22k.names()),
            "ad55747b99050b2f621259647dd3f0bf2f1944bf796421d54466b26b2f654df2"
        );
        for set in LabelSet::ALL {
            assert_eq!(set.names().count(), set.classes(), "{set}");
            assert_eq!(set.id2label().len(), set.classes(), "{set}");
            assert_eq!(set.name().parse::<LabelSet>().unwrap(), set);
        }
    }

    #[test]
    fn imagenet_1k_names_are_transformers_names() {
        // transformers' ViT configs (google/vit-base-patch16-224) and utils/imagenet_classes.py.
        let m = LabelSet::ImageNet1k.id2label();
        assert_eq!(m[&0], "tench, Tinca tinca");
        assert_eq!(m[&1], "goldfish, Carassius auratus");
        assert_eq!(m[&281], "tabby, tabby cat");
        assert_eq!(m[&999], "toilet tissue, toilet paper, bathroom tissue");
    }

    #[test]
    fn imagenet_22k_is_21k_without_the_two_classes_fall11_lacks() {
        let g: Vec<&str> = LabelSet::ImageNet21k.names().collect();
        let m: Vec<&str> = LabelSet::ImageNet22k.names().collect();
        assert_eq!(m[..9205], g[..9205]);
        assert_eq!(m[9205..15026], g[9206..15027]);
        assert_eq!(m[15026..], g[15028..]);
    }

    #[test]
    fn parse_reads_lines_and_json_alike() {
        let want: BTreeMap<usize, String> = [(0, "a b".to_string()), (1, "c".to_string())].into();
        for text in [
            "a b\nc",
            "a b\nc\n",
            "a b\r\nc\r\n",
            r#"{"0": "a b", "1": "c"}"#,
            " \n{\"1\": \"c\", \"0\": \"a b\"}",
            r#"{"architectures": ["ViTForImageClassification"], "id2label": {"0": "a b", "1": "c"}}"#,
        ] {
            assert_eq!(parse_labels(text).unwrap(), want, "{text:?}");
        }
    }

    fn reason(text: &str) -> String {
        match parse_labels(text).unwrap_err().kind() {
            ErrorKind::Config { reason } => reason.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_refuses_malformed_lists() {
        assert_eq!(reason(""), "labels: no names");
        assert_eq!(reason("\n"), "labels: no names");
        assert_eq!(reason("\n\n"), "labels: line 1 is empty");
        assert_eq!(reason("a\n\nb\n"), "labels: line 2 is empty");
        assert_eq!(reason("{}"), "labels: no names");
        assert_eq!(
            reason(r#"{"0": 3}"#),
            "labels: the name of 0 is not a string"
        );
        assert_eq!(reason(r#"{"0": ""}"#), "labels: the name of 0 is empty");
        assert_eq!(
            reason(r#"{"0": "a", "2": "b"}"#),
            r#"labels: key "2" is not an index below 2"#
        );
        assert_eq!(
            reason(r#"{"0": "a", "01": "b"}"#),
            r#"labels: key "01" is not an index below 2"#
        );
        assert_eq!(
            reason(r#"{"id2label": [1]}"#),
            "labels: `id2label` is not an object"
        );
        assert!(reason("{\"0\": ").starts_with("labels: EOF"));
        let many = "x\n".repeat(MAX_LABELS + 1);
        assert_eq!(
            reason(&many),
            format!("labels: more than {MAX_LABELS} lines")
        );
    }

    #[test]
    fn read_refuses_non_utf8_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, b"cat\n\xff\n").unwrap();
        let e = read_labels_file(&bad, &crate::Limits::default()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Io { .. }), "{e:?}");
        assert_eq!(e.path(), Some(bad.as_path()));
        let big = dir.path().join("big.txt");
        std::fs::write(&big, "cat\n".repeat(100)).unwrap();
        let limits = crate::Limits {
            config_file_bytes: 64,
            ..Default::default()
        };
        let e = read_labels_file(&big, &limits).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::BudgetExceeded { .. }),
            "{e:?}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let e = read_labels_file(&empty, &crate::Limits::default()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Config { .. }), "{e:?}");
        assert_eq!(e.path(), Some(empty.as_path()));
    }

    #[test]
    fn builtin_tables_list_the_sets_their_families_train_on() {
        use LabelSet::{ImageNet1k, ImageNet21k, ImageNet22k};
        for (id, want) in [
            ("beit", &[ImageNet1k, ImageNet22k][..]),
            ("timm", &[ImageNet1k, ImageNet21k]),
            ("jax", &[ImageNet1k, ImageNet21k]),
            ("big_vision", &[ImageNet1k, ImageNet21k]),
            ("deit", &[ImageNet1k]),
            ("dino", &[]),
            ("hf", &[]),
            ("flax", &[]),
        ] {
            let t = crate::MappingTable::builtin(id).unwrap();
            assert_eq!(t.facts.labels, want, "{id}");
        }
    }

    #[test]
    fn a_table_naming_an_unknown_set_is_refused_at_its_line() {
        let text = crate::MappingTable::builtin("timm")
            .unwrap()
            .text()
            .to_string();
        let at = text.find("labels = [").unwrap();
        let line = text[..at].lines().count() + 1;
        let bad = text.replacen("\"imagenet-21k\"]", "\"imagenet-12k\"]", 1);
        let e = crate::MappingTable::from_toml(&bad, "t.toml").unwrap_err();
        match e.kind() {
            ErrorKind::Table {
                line: l, reason, ..
            } => {
                assert_eq!(*l, line);
                assert!(reason.contains("imagenet-12k"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let none = text.replacen("labels = [\"imagenet-1k\", \"imagenet-21k\"]\n", "", 1);
        let t = crate::MappingTable::from_toml(&none, "t.toml").unwrap();
        assert!(t.facts.labels.is_empty());
    }

    const BOTH: &[LabelSet] = &[LabelSet::ImageNet1k, LabelSet::ImageNet21k];

    #[test]
    fn auto_names_a_head_that_matches_one_list_the_family_trains_on() {
        let c = choose(&Labels::Auto, BOTH, "timm", 1000, ConfigNames::Absent).unwrap();
        assert_eq!(c.id2label.unwrap()[&0], "tench, Tinca tinca");
        assert_eq!(
            c.note.unwrap(),
            "id2label: ImageNet-1k names (1000 classes, bundled; option `labels` none keeps LABEL_n)"
        );
        let c = choose(&Labels::Auto, BOTH, "jax", 21_843, ConfigNames::Absent).unwrap();
        assert_eq!(c.id2label.unwrap().len(), 21_843);
    }

    #[test]
    fn auto_keeps_label_n_when_the_family_does_not_train_on_the_list() {
        // ImageNet-22k's count, but the ViT tables list 1k and 21k only: never guess across lists.
        let c = choose(&Labels::Auto, BOTH, "timm", 21_841, ConfigNames::Absent).unwrap();
        assert_eq!(c.id2label, None);
        assert_eq!(
            c.note.unwrap(),
            "id2label: LABEL_n kept: the head's 21841 classes match ImageNet-22k, but table `timm` does not list it in `labels`; option `labels` imagenet-22k writes its names"
        );
        let c = choose(&Labels::Auto, &[], "dino", 1000, ConfigNames::Absent).unwrap();
        assert_eq!(c.id2label, None);
        assert!(c.note.unwrap().contains("table `dino` does not list it"));
    }

    #[test]
    fn auto_keeps_label_n_for_a_count_matching_no_list() {
        let c = choose(&Labels::Auto, BOTH, "timm", 5, ConfigNames::Absent).unwrap();
        assert_eq!(c.id2label, None);
        assert_eq!(
            c.note.unwrap(),
            "id2label: LABEL_n kept: 5 classes match no bundled list (ImageNet-1k 1000, ImageNet-21k 21843, ImageNet-22k 21841); option `labels` FILE names them"
        );
    }

    #[test]
    fn a_config_id2label_wins_over_the_default() {
        for from in [ConfigNames::Sidecar, ConfigNames::Option] {
            for labels in [Labels::Auto, Labels::None] {
                let c = choose(&labels, BOTH, "hf", 1000, from).unwrap();
                assert_eq!(
                    c,
                    Choice {
                        id2label: None,
                        note: None
                    }
                );
            }
        }
        let c = choose(&Labels::None, BOTH, "timm", 1000, ConfigNames::Absent).unwrap();
        assert_eq!(c.id2label, None);
        assert_eq!(
            c.note.unwrap(),
            "id2label: LABEL_n kept: option `labels` none"
        );
    }

    #[test]
    fn given_lists_must_fit_the_head() {
        let set = Labels::Bundled(LabelSet::ImageNet21k);
        let e = choose(&set, BOTH, "timm", 1000, ConfigNames::Absent).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::ConfigMismatch {
                    field: "id2label",
                    config: 21_843,
                    tensors: 1000
                }
            ),
            "{e:?}"
        );
        let custom = Labels::Custom(parse_labels("a\nb\n").unwrap());
        let e = choose(&custom, &[], "dino", 3, ConfigNames::Absent).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: `id2label` is 2, but the weights hold 3"
        );
        let gap = Labels::Custom([(0, "a".to_string()), (2, "b".to_string())].into());
        let e = choose(&gap, &[], "dino", 2, ConfigNames::Absent).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option `labels`: the names' indices are not 0..2"
        );
        let e = choose(&custom, &[], "dino", 0, ConfigNames::Absent).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }), "{e:?}");
        let e = choose(&custom, &[], "hf", 2, ConfigNames::Option).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidOption { .. }), "{e:?}");
        let c = choose(&custom, &[], "hf", 2, ConfigNames::Sidecar).unwrap();
        assert_eq!(c.id2label.unwrap()[&1], "b");
        assert_eq!(
            c.note.unwrap(),
            "id2label: names (2 classes, option `labels`, replacing the config.json's)"
        );
        // A bundled list is given even for a family not listed as trained on it.
        let c = choose(
            &Labels::Bundled(LabelSet::ImageNet1k),
            &[],
            "dino",
            1000,
            ConfigNames::Absent,
        )
        .unwrap();
        assert_eq!(c.id2label.unwrap()[&1], "goldfish, Carassius auratus");
    }
}
