//! The walk of a torch pickle's value tree: [`extract`] names every tensor by its container path,
//! interprets the rebuild calls and validates every layout against the declared storage sizes.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, ErrorKind, Result};
use crate::source::limits::Limits;
use crate::source::pickle::{
    Arena, Global, Node, NodeId, Parsed, Rebuild, StorageClass, StorageRef, TorchDType,
};
use crate::source::MAX_RANK;
use crate::tensor::{checked_byte_len, checked_numel, strided_extent, DType, TensorInfo};

/// Deepest chain of wrapping rebuilds (`_rebuild_from_type_v2` → `_rebuild_parameter` → …).
pub(crate) const MAX_REBUILD_WRAPPING: usize = 8;

/// A storage the pickle declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageDecl {
    /// Storage key.
    pub(crate) key: String,
    /// The class `module.name` (for messages).
    pub(crate) class_name: &'static str,
    /// Bytes per storage element.
    pub(crate) elem_size: usize,
    /// Declared elements (bytes for `UntypedStorage`).
    pub(crate) numel: u64,
}

impl StorageDecl {
    /// Declared size in bytes, if it fits.
    pub(crate) fn byte_len(&self) -> Option<usize> {
        usize::try_from(self.numel)
            .ok()?
            .checked_mul(self.elem_size)
    }
}

/// One tensor: its listing and where its elements live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorPlan {
    /// Name, dtype, shape.
    pub(crate) info: TensorInfo,
    /// Strides in elements.
    pub(crate) strides: Vec<usize>,
    /// Storage offset in elements, from `base`.
    pub(crate) offset: usize,
    /// Byte offset of the (legacy view) region within the storage.
    pub(crate) base: usize,
    /// Index into [`Extracted::storages`].
    pub(crate) storage: usize,
}

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

fn malformed(reason: String, offset: u64) -> Error {
    ErrorKind::MalformedPickle { reason, offset }.into()
}

fn invalid(reason: String) -> Error {
    ErrorKind::InvalidLayout { reason }.into()
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

/// A tensor rebuild call, resolved.
struct Spec {
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Interprets a chain of rebuild calls down to `_rebuild_tensor{,_v2,_v3}`.
///
/// Also returns the Python state of wrapping rebuilds, which the caller checks for tensors.
fn rebuild(arena: &Arena, call: NodeId) -> Result<(Spec, StorageRef, Vec<NodeId>)> {
    let Node::Call {
        func,
        name,
        args,
        offset,
    } = arena.get(call)
    else {
        return Err(malformed("not a tensor rebuild call".into(), 0));
    };
    let (mut func, mut name, mut args, offset) = (*func, *name, *args, *offset);
    let mut states = Vec::new();
    for _ in 0..MAX_REBUILD_WRAPPING {
        let argv = match arena.get(args) {
            Node::Tuple(v) => v.as_slice(),
            other => {
                return Err(malformed(
                    format!("{name} arguments are a {}, not a tuple", other.kind()),
                    offset,
                ))
            }
        };
        let bad = |what: &str| malformed(format!("{name}: {what}"), offset);
        match func {
            Rebuild::Tensor | Rebuild::TensorV2 | Rebuild::TensorV3 => {
                let (want, dtype_arg) = match func {
                    Rebuild::Tensor => (4..=4, None),
                    Rebuild::TensorV2 => (6..=7, None),
                    _ => (7..=8, argv.get(6)),
                };
                if !want.contains(&argv.len()) {
                    return Err(bad(&format!("{} arguments", argv.len())));
                }
                let [storage, storage_offset, size, stride, ..] = argv else {
                    return Err(bad("too few arguments"));
                };
                let Node::Storage(storage) = arena.get(*storage) else {
                    return Err(bad("first argument is not a storage"));
                };
                let shape = dims(arena, *size, "size")?;
                let strides = dims(arena, *stride, "stride")?;
                let storage_offset = dim(arena.get(*storage_offset), "storage offset")?;
                let dtype = tensor_dtype(arena, storage, dtype_arg.copied(), name, offset)?;
                return Ok((
                    Spec {
                        dtype,
                        shape,
                        strides,
                        offset: storage_offset,
                    },
                    (**storage).clone(),
                    states,
                ));
            }
            Rebuild::Parameter | Rebuild::ParameterWithState => {
                // `_rebuild_parameter(data, requires_grad, hooks)`, torch 0.4's
                // `Parameter(data, requires_grad)`, `_rebuild_parameter_with_state(…, state)`.
                let want = if func == Rebuild::Parameter {
                    1..=3
                } else {
                    4..=4
                };
                if !want.contains(&argv.len()) {
                    return Err(bad(&format!("{} arguments", argv.len())));
                }
                if func == Rebuild::ParameterWithState {
                    states.extend(argv.get(3).copied());
                }
                let Some(Node::Call {
                    func: f,
                    name: n,
                    args: a,
                    ..
                }) = argv.first().map(|d| arena.get(*d))
                else {
                    return Err(bad("data is not a tensor"));
                };
                (func, name, args) = (*f, *n, *a);
            }
            Rebuild::FromTypeV2 => {
                let [f, ty, a, state] = argv else {
                    return Err(bad(&format!("{} arguments", argv.len())));
                };
                let Node::Global {
                    global: Global::Rebuild(f),
                    name: n,
                } = arena.get(*f)
                else {
                    return Err(bad(&format!(
                        "wraps {}, not a tensor rebuild function",
                        arena.get(*f).kind()
                    )));
                };
                match arena.get(*ty) {
                    Node::Global {
                        global: Global::TorchTensor,
                        ..
                    } => {}
                    Node::Global {
                        name: "torch.nn.parameter.Parameter",
                        ..
                    } => {}
                    other => {
                        return Err(bad(&format!(
                            "tensor type {} is not supported",
                            other.kind()
                        )))
                    }
                }
                states.push(*state);
                (func, name, args) = (*f, *n, *a);
            }
        }
    }
    Err(malformed(
        format!("tensor rebuild calls nested deeper than {MAX_REBUILD_WRAPPING}"),
        offset,
    ))
}

/// The element type of a tensor: the storage's, or v3's explicit dtype.
fn tensor_dtype(
    arena: &Arena,
    storage: &StorageRef,
    dtype_arg: Option<NodeId>,
    name: &str,
    offset: u64,
) -> Result<DType> {
    let unsupported = |dtype: &str| -> Error {
        ErrorKind::UnsupportedDType {
            dtype: dtype.to_string(),
        }
        .into()
    };
    let from_storage = match storage.class {
        StorageClass::Typed(d) => Some(d),
        StorageClass::Untyped => None,
        StorageClass::Unsupported(_) => return Err(unsupported(storage.class_name)),
    };
    let Some(arg) = dtype_arg else {
        return Ok(from_storage.unwrap_or(DType::U8));
    };
    let explicit = match arena.get(arg) {
        Node::Global {
            global: Global::DType(TorchDType::Supported(d)),
            ..
        } => *d,
        Node::Global {
            global: Global::DType(TorchDType::Unsupported),
            name,
        } => return Err(unsupported(name)),
        other => {
            return Err(malformed(
                format!("{name}: dtype argument is {}", other.kind()),
                offset,
            ))
        }
    };
    match from_storage {
        Some(d) if d != explicit => Err(malformed(
            format!(
                "{name}: dtype {explicit} disagrees with storage {}",
                storage.class_name
            ),
            offset,
        )),
        _ => Ok(explicit),
    }
}

/// A `torch.Size` / tuple of non-negative ints.
fn dims(arena: &Arena, id: NodeId, what: &str) -> Result<Vec<usize>> {
    match arena.get(id) {
        Node::Tuple(v) | Node::List(v) => v.iter().map(|d| dim(arena.get(*d), what)).collect(),
        other => Err(invalid(format!(
            "{what} is a {}, not a tuple",
            other.kind()
        ))),
    }
}

fn dim(node: &Node, what: &str) -> Result<usize> {
    match node {
        Node::Int(i) if *i < 0 => Err(invalid(format!("negative {what} {i}"))),
        Node::Int(i) => usize::try_from(*i).map_err(|_| invalid(format!("{what} {i} too large"))),
        Node::BigInt(_) => Err(invalid(format!("{what} does not fit 64 bits"))),
        other => Err(invalid(format!("{what} is a {}, not an int", other.kind()))),
    }
}

/// Records a storage's declaration, checking that every use agrees.
fn declare(
    storages: &mut Vec<StorageDecl>,
    index: &mut HashMap<String, usize>,
    s: &StorageRef,
    offset: u64,
) -> Result<usize> {
    let elem_size = s.class.elem_size();
    let decl = StorageDecl {
        key: s.key.clone(),
        class_name: s.class_name,
        elem_size,
        numel: s.numel,
    };
    if let Some(&i) = index.get(&s.key) {
        match storages.get(i) {
            Some(prev) if *prev == decl => return Ok(i),
            Some(prev) => {
                return Err(malformed(
                    format!(
                        "storage {} declared as {} × {} and as {} × {}",
                        s.key, prev.numel, prev.class_name, decl.numel, decl.class_name
                    ),
                    offset,
                ))
            }
            None => {}
        }
    }
    storages.push(decl);
    let i = storages.len() - 1;
    index.insert(s.key.clone(), i);
    Ok(i)
}

/// Validates a tensor's layout against its storage's declared size.
fn plan(
    name: String,
    spec: Spec,
    s: &StorageRef,
    storages: &[StorageDecl],
    index: usize,
) -> Result<TensorPlan> {
    let Spec {
        dtype,
        shape,
        strides,
        offset,
    } = spec;
    let decl = storages
        .get(index)
        .ok_or_else(|| invalid("storage index".into()))?;
    if shape.len() != strides.len() {
        return Err(invalid(format!(
            "size {shape:?} and stride {strides:?} differ in rank"
        )));
    }
    if shape.len() > MAX_RANK {
        return Err(invalid(format!(
            "size has {} dimensions (at most {MAX_RANK})",
            shape.len()
        )));
    }
    if checked_byte_len(dtype, &shape).is_none() {
        return Err(invalid(format!("size {shape:?} of {dtype} overflows")));
    }
    let oob = |needed: u64, available: u64| -> Error {
        ErrorKind::StorageOutOfBounds {
            storage: s.key.clone(),
            needed,
            available,
        }
        .into()
    };
    let storage_bytes = decl.byte_len().ok_or_else(|| oob(u64::MAX, 0))?;
    // A legacy view selects [offset, offset + size) elements of the root storage.
    let (base, region) = match &s.view {
        None => (0usize, storage_bytes),
        Some(v) => {
            let e = decl.elem_size as u64;
            let start = v.offset.checked_mul(e);
            let len = v.size.checked_mul(e);
            let end = start.zip(len).and_then(|(a, b)| a.checked_add(b));
            match (start, len, end) {
                (Some(start), Some(len), Some(end)) if end <= storage_bytes as u64 => (
                    usize::try_from(start).map_err(|_| oob(end, storage_bytes as u64))?,
                    usize::try_from(len).map_err(|_| oob(end, storage_bytes as u64))?,
                ),
                (_, _, end) => return Err(oob(end.unwrap_or(u64::MAX), storage_bytes as u64)),
            }
        }
    };
    let extent = strided_extent(&shape, &strides, offset).ok_or_else(|| {
        invalid(format!(
            "size {shape:?}, stride {strides:?}, offset {offset} overflow"
        ))
    })?;
    let needed = extent.checked_mul(dtype.size());
    match needed {
        Some(n) if n <= region => {}
        _ => return Err(oob(needed.map_or(u64::MAX, |n| n as u64), region as u64)),
    }
    debug_assert!(checked_numel(&shape).is_some());
    Ok(TensorPlan {
        info: TensorInfo { name, dtype, shape },
        strides,
        offset,
        base,
        storage: index,
    })
}

/// Bytes the tensors read against bytes their storages hold. Reading materialises each tensor,
/// so tensors that read more than is stored — zero or overlapping strides (`expand`), many
/// tensors viewing one storage — would turn a small file into a large output; the excess is
/// budgeted by [`Limits::aliased_tensor_bytes`].
#[derive(Default)]
struct Aliasing {
    tensor_bytes: u64,
    storage_bytes: u64,
    storages_counted: usize,
}

impl Aliasing {
    fn add(
        &mut self,
        plan: &TensorPlan,
        storages: &[StorageDecl],
        limits: &Limits,
        offset: u64,
    ) -> Result<()> {
        for s in storages.get(self.storages_counted..).unwrap_or_default() {
            let bytes = s.byte_len().map_or(u64::MAX, |b| b as u64);
            self.storage_bytes = self.storage_bytes.saturating_add(bytes);
        }
        self.storages_counted = storages.len();
        self.tensor_bytes = self
            .tensor_bytes
            .saturating_add(plan.info.byte_len() as u64);
        let allowed = self
            .storage_bytes
            .saturating_add(limits.aliased_tensor_bytes as u64);
        if self.tensor_bytes > allowed {
            return Err(ErrorKind::BudgetExceeded {
                budget: "aliased tensor bytes",
                limit: limits.aliased_tensor_bytes as u64,
                offset,
            }
            .into());
        }
        Ok(())
    }
}
