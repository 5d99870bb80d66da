//! The walk of a torch pickle's value tree: [`extract`] names every tensor by its container path,
//! each tensor's rebuild call is interpreted and its layout validated against the declared storage
//! sizes by [`super::layout`].

use std::collections::{HashMap, HashSet};

use super::layout::{declare, malformed, plan, rebuild, Aliasing, StorageDecl, TensorPlan};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::source::pickle::{Arena, Node, NodeId, Parsed};

/// What a torch pickle holds.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Tensors in file order.
    pub(crate) tensors: Vec<TensorPlan>,
    /// Storages in first-use order.
    pub(crate) storages: Vec<StorageDecl>,
    /// Notes about things skipped.
    pub(crate) notes: Vec<String>,
}

/// A path component, kept as a reference into the arena until a name is needed, so that a
/// long key shared by many entries costs nothing until it ends up in a tensor name.
#[derive(Clone, Copy)]
enum Key {
    /// A dict key.
    Node(NodeId),
    /// A list or tuple index.
    Index(usize),
}

/// Upper bound of a key's length as a path component, in O(1).
fn key_len(arena: &Arena, key: Key) -> usize {
    const SHORT: usize = 32;
    match key {
        Key::Index(_) => SHORT,
        Key::Node(k) => match arena.get(k) {
            Node::Str(s) => s.len(),
            // Lossy UTF-8: each byte becomes at most one 3-byte replacement character.
            Node::Bytes(b) => b.len().saturating_mul(3),
            _ => SHORT,
        },
    }
}

/// Appends a key as a path component: strings as they are, integers in decimal.
fn push_key(arena: &Arena, key: Key, out: &mut String) {
    match key {
        Key::Index(i) => out.push_str(&i.to_string()),
        Key::Node(k) => match arena.get(k) {
            Node::Str(s) => out.push_str(s),
            Node::Int(i) => out.push_str(&i.to_string()),
            Node::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Node::None => out.push_str("None"),
            Node::Float(f) => out.push_str(&f.to_string()),
            Node::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
            other => {
                out.push('<');
                out.push_str(other.kind());
                out.push('>');
            }
        },
    }
}

/// The `/`-joined name of `path` (+ `last`), cut (with `…`) once it passes `cap` bytes.
fn path_name(arena: &Arena, path: &[Key], last: Option<Key>, cap: usize) -> String {
    let mut out = String::new();
    for key in path.iter().chain(last.as_ref()) {
        if !out.is_empty() {
            out.push('/');
        }
        push_key(arena, *key, &mut out);
        if out.len() > cap {
            let mut cut = cap;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// Longest path shown in a note.
const NOTE_PATH_CAP: usize = 1024;

enum Work {
    /// Visit a node; `key` names it in the path; `forbidden` says a tensor here is an error
    /// (constructor arguments of opaque objects, set members, OrderedDict attributes).
    Enter {
        id: NodeId,
        key: Option<Key>,
        forbidden: Option<&'static str>,
    },
    /// Visit the children of container `id` from child `next` on, one at a time, so the queue
    /// grows with the nesting depth, not with the containers' widths.
    Children {
        id: NodeId,
        next: usize,
        forbidden: Option<&'static str>,
    },
    /// Leave a node that pushed a path component of `len` bytes.
    Exit { len: usize },
}

/// Walks a torch pickle's value tree and lists its tensors.
///
/// # Errors
/// `MalformedPickle` for rebuild calls with wrong arguments or tensors inside opaque objects,
/// `InvalidLayout`/`StorageOutOfBounds`/`UnsupportedDType` for tensors that cannot be read,
/// `Duplicate` for two tensors with one name, `BudgetExceeded` for too deep, too many tensors,
/// names too long, or tensors reading more than their storages hold by more than
/// [`Limits::aliased_tensor_bytes`].
///
/// The budgets are those the pickle was parsed within.
pub(crate) fn extract(parsed: &Parsed) -> Result<Extracted> {
    let limits = *parsed.arena.limits();
    let arena = &parsed.arena;
    let mut walk = Walk {
        arena,
        limits: &limits,
        out: Extracted::default(),
        storage_index: HashMap::new(),
        names: HashSet::new(),
        name_bytes: 0,
        aliased: Aliasing::default(),
        visited: vec![false; arena.len()],
        notes: Vec::new(),
        path: Vec::new(),
        path_bytes: 0,
        work: vec![Work::Enter {
            id: parsed.root,
            key: None,
            forbidden: None,
        }],
    };
    while let Some(item) = walk.work.pop() {
        let (id, key, forbidden) = match item {
            Work::Exit { len } => {
                walk.path.pop();
                walk.path_bytes = walk.path_bytes.saturating_sub(len);
                continue;
            }
            Work::Children {
                id,
                next,
                forbidden,
            } => {
                if let Some((child, following)) = child_at(arena.get(id), next, forbidden) {
                    walk.work.push(Work::Children {
                        id,
                        next: following,
                        forbidden,
                    });
                    walk.work.push(child);
                }
                continue;
            }
            Work::Enter { id, key, forbidden } => (id, key, forbidden),
        };
        let node = arena.get(id);
        match node {
            Node::Call { offset, .. } => walk.tensor(id, key, forbidden, *offset)?,
            Node::Storage(s) => {
                let class = s.class_name;
                let (arena, path) = (walk.arena, &walk.path);
                push_note(
                    &mut walk.notes,
                    class,
                    " (storage outside a tensor, skipped)",
                    || path_name(arena, path, key, NOTE_PATH_CAP),
                );
            }
            Node::Dict(_)
            | Node::OrderedDict { .. }
            | Node::List(_)
            | Node::Tuple(_)
            | Node::Set(_)
            | Node::FrozenSet(_)
            | Node::Object { .. } => walk.container(id, node, key, forbidden)?,
            _ => {}
        }
    }
    let mut out = walk.out;
    out.notes = render_notes(walk.notes);
    Ok(out)
}

/// The state of [`extract`]'s walk: what it found so far, and where it is.
struct Walk<'a> {
    arena: &'a Arena,
    limits: &'a Limits,
    out: Extracted,
    storage_index: HashMap<String, usize>,
    names: HashSet<String>,
    name_bytes: usize,
    aliased: Aliasing,
    visited: Vec<bool>,
    notes: Vec<Note>,
    path: Vec<Key>,
    /// Upper bound of the joined path's length (components + separators).
    path_bytes: usize,
    work: Vec<Work>,
}

impl Walk<'_> {
    fn names_budget(&self, offset: u64) -> Error {
        ErrorKind::BudgetExceeded {
            budget: "tensor name bytes",
            limit: self.limits.tensor_name_bytes as u64,
            offset,
        }
        .into()
    }

    /// A rebuild call: a tensor, named by its path, checked against its storage and the limits.
    fn tensor(
        &mut self,
        id: NodeId,
        key: Option<Key>,
        forbidden: Option<&'static str>,
        offset: u64,
    ) -> Result<()> {
        let (arena, limits) = (self.arena, self.limits);
        let here_len = self
            .path_bytes
            .saturating_add(key.map_or(0, |k| key_len(arena, k)));
        if here_len > limits.tensor_name_bytes {
            return Err(self.names_budget(offset));
        }
        let name = path_name(arena, &self.path, key, usize::MAX);
        if let Some(context) = forbidden {
            return Err(malformed(
                format!("tensor at {name:?} inside {context}, which is never interpreted"),
                offset,
            ));
        }
        let name = if name.is_empty() {
            "tensor".to_string()
        } else {
            name
        };
        if self.out.tensors.len() >= limits.tensors {
            return Err(ErrorKind::BudgetExceeded {
                budget: "tensor count",
                limit: limits.tensors as u64,
                offset,
            }
            .into());
        }
        self.name_bytes = self
            .name_bytes
            .checked_add(name.len())
            .filter(|&n| n <= limits.tensor_name_bytes)
            .ok_or_else(|| self.names_budget(offset))?;
        let (spec, storage, states) =
            rebuild(arena, id).map_err(|e| e.with_tensor(name.as_str()))?;
        // Python state attached to a tensor is not interpreted; a tensor in it would be
        // lost silently, so it is an error (shared state is still walked only once).
        self.work.extend(states.into_iter().map(|id| Work::Enter {
            id,
            key: None,
            forbidden: Some("tensor state"),
        }));
        let index = declare(
            &mut self.out.storages,
            &mut self.storage_index,
            &storage,
            offset,
        )
        .map_err(|e| e.with_tensor(name.as_str()))?;
        let plan = plan(name.clone(), spec, &storage, &self.out.storages, index)
            .map_err(|e| e.with_tensor(name.as_str()))?;
        self.aliased
            .add(&plan, &self.out.storages, limits, offset)
            .map_err(|e| e.with_tensor(name.as_str()))?;
        if !self.names.insert(name.clone()) {
            return Err(ErrorKind::Duplicate {
                what: "tensor",
                name,
            }
            .into());
        }
        self.out.tensors.push(plan);
        Ok(())
    }

    /// A container, entered once however often it is shared: its key joins the path, its
    /// children are queued.
    fn container(
        &mut self,
        id: NodeId,
        node: &Node,
        key: Option<Key>,
        forbidden: Option<&'static str>,
    ) -> Result<()> {
        let (arena, limits) = (self.arena, self.limits);
        let Some(seen) = self.visited.get_mut(id.index()) else {
            return Ok(());
        };
        if *seen {
            return Ok(());
        }
        *seen = true;
        if let Some(k) = key {
            if self.path.len() >= limits.nesting_depth {
                return Err(ErrorKind::BudgetExceeded {
                    budget: "container nesting",
                    limit: limits.nesting_depth as u64,
                    offset: 0,
                }
                .into());
            }
            let len = key_len(arena, k).saturating_add(1);
            self.path_bytes = self.path_bytes.saturating_add(len);
            if self.path_bytes > limits.tensor_name_bytes {
                return Err(self.names_budget(0));
            }
            self.path.push(k);
            self.work.push(Work::Exit { len });
        }
        if let Node::Object { class, .. } = node {
            let path = &self.path;
            push_note(&mut self.notes, class, " (inert)", || {
                path_name(arena, path, None, NOTE_PATH_CAP)
            });
        }
        self.work.push(Work::Children {
            id,
            next: 0,
            forbidden,
        });
        Ok(())
    }
}

/// The notes as lines: `path: class suffix[, N more like it]`.
fn render_notes(notes: Vec<Note>) -> Vec<String> {
    notes
        .into_iter()
        .map(|n| {
            let at = if n.path.is_empty() {
                "(top level)"
            } else {
                n.path.as_str()
            };
            match n.count {
                1 => format!("{at}: {}{}", n.class, n.suffix),
                c => format!("{at}: {}{}, {} more like it", n.class, n.suffix, c - 1),
            }
        })
        .collect()
}

/// One kind of skipped object: the first path where it was seen and how often.
struct Note {
    class: &'static str,
    suffix: &'static str,
    path: String,
    count: usize,
}

/// Notes are keyed by kind; the first path is kept (computed only then) and later ones counted.
fn push_note(
    notes: &mut Vec<Note>,
    class: &'static str,
    suffix: &'static str,
    path: impl FnOnce() -> String,
) {
    match notes
        .iter_mut()
        .find(|n| n.class == class && n.suffix == suffix)
    {
        Some(n) => n.count = n.count.saturating_add(1),
        None => notes.push(Note {
            class,
            suffix,
            path: path(),
            count: 1,
        }),
    }
}

/// The first child of a container at position `index` or later, in file order (dict and list
/// items, then an OrderedDict's attributes; an object's constructor arguments, then its state),
/// with the position after it.
fn child_at(
    node: &Node,
    mut index: usize,
    forbidden: Option<&'static str>,
) -> Option<(Work, usize)> {
    let enter = |id: NodeId, key: Option<Key>, forbidden: Option<&'static str>| Work::Enter {
        id,
        key,
        forbidden,
    };
    loop {
        let found = match node {
            Node::Dict(items) | Node::OrderedDict { items, .. } => match items.get(index) {
                Some((k, v)) => Some(enter(*v, Some(Key::Node(*k)), forbidden)),
                None => match node {
                    Node::OrderedDict { attrs: Some(a), .. } if index == items.len() => {
                        Some(enter(*a, None, Some("OrderedDict attributes")))
                    }
                    _ => return None,
                },
            },
            Node::List(items) | Node::Tuple(items) => Some(enter(
                *items.get(index)?,
                Some(Key::Index(index)),
                forbidden,
            )),
            Node::Set(items) | Node::FrozenSet(items) => {
                Some(enter(*items.get(index)?, None, Some("a set")))
            }
            Node::Object { class, args, state } => match index {
                0 => args.map(|a| enter(a, None, Some(*class))),
                1 => state.map(|s| enter(s, None, forbidden)),
                _ => return None,
            },
            _ => return None,
        };
        index = index.checked_add(1)?;
        if let Some(w) = found {
            return Some((w, index));
        }
    }
}
