//! The table's view of a checkpoint: which wrapper or branch it converts, and the names it sees
//! once the table's prefixes are stripped.

use std::collections::{HashMap, HashSet};

use super::index::PrefixSet;
use super::mapping_err;
use super::names::Branch;
use super::schema::MappingTable;
use crate::error::{ErrorKind, Result};
use crate::vocab::MappingError;

/// The table's view of a checkpoint: names after choosing a wrapper/branch and stripping prefixes.
pub(crate) struct View {
    /// (stripped name, original name), in source order.
    pub(crate) names: Vec<(String, String)>,
    pub(crate) selected: Option<String>,
    pub(crate) not_selected: Vec<String>,
}

/// Picks the sub-container a table converts and strips the table's prefixes.
pub(crate) fn select_view(
    table: &MappingTable,
    names: &[&str],
    branch: Option<Branch>,
) -> Result<View> {
    // Every wrapper or branch some name sits in: one walk of the index per name.
    let mut present: HashSet<&str> = HashSet::new();
    for &n in names {
        for (len, _) in table.index.containers.matches(n) {
            if let Some(w) = n.get(..len.saturating_sub(1)) {
                present.insert(w);
            }
        }
    }
    let has = |w: &str| present.contains(w);
    let present_branches: Vec<Branch> = table
        .branches
        .iter()
        .copied()
        .filter(|b| has(b.name()))
        .collect();
    let selected: Option<String> = if !present_branches.is_empty() {
        match branch {
            Some(b) if table.branches.contains(&b) => {
                if !has(b.name()) {
                    return Err(ErrorKind::InvalidOption {
                        reason: format!("branch `{b}` is not in this checkpoint"),
                    }
                    .into());
                }
                Some(b.to_string())
            }
            Some(b) => {
                let known: Vec<&str> = table.branches.iter().map(|b| b.name()).collect();
                return Err(ErrorKind::InvalidOption {
                    reason: format!(
                        "unknown branch `{b}` (this table knows: {})",
                        known.join(", ")
                    ),
                }
                .into());
            }
            None => present_branches.first().map(|b| b.to_string()),
        }
    } else {
        if let Some(b) = branch {
            return Err(ErrorKind::InvalidOption {
                reason: format!("option `branch` {b} given, but the checkpoint has no branches"),
            }
            .into());
        }
        table.wrappers.iter().find(|w| has(w)).cloned()
    };
    let mut view = Vec::new();
    let mut not_selected = Vec::new();
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(names.len());
    for &n in names {
        let inner = match &selected {
            Some(w) => match n.strip_prefix(w.as_str()).and_then(|r| r.strip_prefix('/')) {
                Some(r) => r,
                None => {
                    not_selected.push(n.to_string());
                    continue;
                }
            },
            None => n,
        };
        let stripped = strip_prefixes(inner, &table.index.strip);
        if let Some(prev) = seen.insert(stripped, n) {
            return Err(mapping_err(
                table,
                0,
                MappingError::StripCollision {
                    first: prev.to_string(),
                    second: n.to_string(),
                    stripped: stripped.to_string(),
                },
            ));
        }
        view.push((stripped.to_string(), n.to_string()));
    }
    Ok(View {
        names: view,
        selected,
        not_selected,
    })
}

/// Strips the table's prefixes repeatedly: at each step the first prefix (in list order) that
/// leaves something. Every step removes at least one byte (tables cannot hold an empty prefix, and
/// an empty match is skipped here too), so the loop ends; and no prefix starts with another (the
/// table refuses that when it loads), so a step walks no further than what it strips, plus one
/// failed walk at the end: linear in the name.
fn strip_prefixes<'a>(mut name: &'a str, prefixes: &PrefixSet) -> &'a str {
    loop {
        let first = prefixes
            .matches(name)
            .filter(|&(len, _)| len > 0 && len < name.len())
            .min_by_key(|&(_, k)| k);
        match first.and_then(|(len, _)| name.get(len..)) {
            Some(rest) => name = rest,
            None => return name,
        }
    }
}
