//! The structure walk of a flax file: the iterative msgpack tree parse and the walk that names
//! tensors and builds the [`Flax`] index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use super::msgpack::{
    budget, parse_array_payload, Cursor, Head, CHUNKED_KEY, EXT_COMPLEX, EXT_NDARRAY, EXT_NPSCALAR,
    MAX_FLAX_RANK,
};
use super::{Flax, Stored};
use crate::error::{malformed, Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::source::Format;
use crate::tensor::{self, DType, TensorInfo};

/// Notes kept about non-tensor leaves (the rest are counted).
const MAX_FLAX_NOTES: usize = 32;

/// One parsed value of the tree.
enum Node {
    Map {
        at: usize,
        entries: Vec<(Range<usize>, usize)>,
    },
    List {
        at: usize,
        items: Vec<usize>,
    },
    Leaf {
        head: Head,
        at: usize,
    },
}

/// Parses the whole file into a flat arena of nodes (root first), iteratively.
fn parse_tree(bytes: &[u8], limits: &Limits) -> Result<Vec<Node>> {
    struct Frame {
        node: usize,
        remaining: usize,
    }
    let mut c = Cursor {
        bytes,
        pos: 0,
        end: bytes.len(),
        max_values: limits.flax_values,
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let (root, at) = c.head()?;
    let Head::Map(n) = root else {
        return Err(malformed(
            Format::Flax,
            format!(
                "the top level is {}, expected a map of parameter names",
                root.kind()
            ),
        ));
    };
    if n == 0 {
        // `\x80`, flax's `to_bytes({})`, is also what a pickle truncated after its PROTO opcode
        // leaves: either way there is nothing to convert.
        return Err(malformed(
            Format::Flax,
            "the top-level map is empty: no parameters (or a pickle cut off after its first byte)",
        ));
    }
    nodes.push(Node::Map {
        at,
        entries: Vec::new(),
    });
    stack.push(Frame {
        node: 0,
        remaining: n,
    });
    while let Some(top) = stack.last_mut() {
        if top.remaining == 0 {
            stack.pop();
            continue;
        }
        top.remaining -= 1;
        let parent = top.node;
        let is_map = matches!(nodes.get(parent), Some(Node::Map { .. }));
        let key = if is_map {
            match c.head()? {
                (Head::Str(r), _)
                    if std::str::from_utf8(bytes.get(r.clone()).unwrap_or(&[])).is_ok() =>
                {
                    Some(r)
                }
                (h, at) => {
                    return Err(malformed(
                        Format::Flax,
                        format!(
                            "map key at byte {at} is {}, expected a UTF-8 string",
                            if matches!(h, Head::Str(_)) {
                                "not UTF-8"
                            } else {
                                h.kind()
                            }
                        ),
                    ))
                }
            }
        } else {
            None
        };
        let (head, at) = c.head()?;
        let id = nodes.len();
        if id >= limits.flax_values {
            return Err(budget("flax values", limits.flax_values, at));
        }
        let child_count = match head {
            Head::Map(n) | Head::Array(n) => Some(n),
            _ => None,
        };
        nodes.push(match head {
            Head::Map(_) => Node::Map {
                at,
                entries: Vec::new(),
            },
            Head::Array(_) => Node::List {
                at,
                items: Vec::new(),
            },
            head => Node::Leaf { head, at },
        });
        match (nodes.get_mut(parent), key) {
            (Some(Node::Map { entries, .. }), Some(k)) => entries.push((k, id)),
            (Some(Node::List { items, .. }), None) => items.push(id),
            _ => {
                return Err(malformed(
                    Format::Flax,
                    "internal: parent is not a container",
                ))
            }
        }
        if let Some(n) = child_count.filter(|&n| n > 0) {
            if stack.len() >= limits.nesting_depth {
                return Err(budget("container nesting", limits.nesting_depth, at));
            }
            stack.push(Frame {
                node: id,
                remaining: n,
            });
        }
    }
    if c.pos != bytes.len() {
        return Err(malformed(
            Format::Flax,
            format!(
                "{} trailing bytes after the top-level map, from byte {}",
                bytes.len().saturating_sub(c.pos),
                c.pos
            ),
        ));
    }
    Ok(nodes)
}

/// Tree walk state: builds names and collects tensors.
struct Walk<'a> {
    bytes: &'a [u8],
    nodes: &'a [Node],
    tensors: Vec<TensorInfo>,
    stored: Vec<Stored>,
    by_name: HashMap<String, usize>,
    notes: Vec<String>,
    skipped: usize,
    chunked: usize,
    limits: Limits,
    /// Bytes of all tensor names so far ([`Limits::tensor_name_bytes`]).
    name_bytes: usize,
}

impl<'a> Walk<'a> {
    fn key(&self, r: &Range<usize>) -> &'a str {
        self.bytes
            .get(r.clone())
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
    }

    fn node(&self, id: usize) -> Result<&'a Node> {
        self.nodes
            .get(id)
            .ok_or_else(|| malformed(Format::Flax, "internal: dangling node"))
    }

    /// Lists one tensor found at byte `at`, within the tensor count and name budgets.
    fn add(
        &mut self,
        name: &str,
        at: usize,
        (dtype, shape, stored): (DType, Vec<usize>, Stored),
    ) -> Result<()> {
        if self.tensors.len() >= self.limits.tensors {
            return Err(budget("tensor count", self.limits.tensors, at));
        }
        self.name_bytes = self
            .name_bytes
            .checked_add(name.len())
            .filter(|&n| n <= self.limits.tensor_name_bytes)
            .ok_or_else(|| budget("tensor name bytes", self.limits.tensor_name_bytes, at))?;
        if self.by_name.contains_key(name) {
            return Err(ErrorKind::Duplicate {
                what: "tensor",
                name: name.to_string(),
            }
            .into());
        }
        self.by_name.insert(name.to_string(), self.tensors.len());
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
        });
        self.stored.push(stored);
        Ok(())
    }

    /// Handles one child named `name`; returns true when it is a container to descend into.
    fn visit(&mut self, name: &str, id: usize) -> Result<bool> {
        match self.node(id)? {
            Node::Map { entries, at } => {
                check_unique_keys(self, name, entries)?;
                if entries.iter().any(|(k, _)| self.key(k) == CHUNKED_KEY) {
                    let (dtype, shape, chunks) = self.parse_chunked(entries, *at)?;
                    self.chunked += 1;
                    self.add(name, *at, (dtype, shape, Stored::Chunked(chunks)))?;
                    return Ok(false);
                }
                Ok(true)
            }
            Node::List { .. } => Ok(true),
            Node::Leaf {
                head: Head::Ext(code, payload),
                at,
            } => match *code {
                EXT_NDARRAY | EXT_NPSCALAR => {
                    let a = parse_array_payload(self.bytes, payload.clone())?;
                    self.add(name, *at, (a.dtype, a.shape, Stored::Contiguous(a.data)))?;
                    Ok(false)
                }
                EXT_COMPLEX => Err(ErrorKind::UnsupportedDType {
                    dtype: "complex".into(),
                }
                .into()),
                other => Err(malformed(
                    Format::Flax,
                    format!(
                        "unknown msgpack extension type {other} at byte {at} (flax writes 1, 2, 3)"
                    ),
                )),
            },
            Node::Leaf { head, at } => {
                if self.notes.len() < MAX_FLAX_NOTES {
                    self.notes.push(format!(
                        "{name}: {} at byte {at} is not an array; skipped",
                        head.kind()
                    ));
                } else {
                    self.skipped += 1;
                }
                Ok(false)
            }
        }
    }

    /// Reassembles a chunked array map (flax `_chunk`): returns dtype, shape and chunk ranges.
    fn parse_chunked(
        &self,
        entries: &[(Range<usize>, usize)],
        at: usize,
    ) -> Result<(DType, Vec<usize>, Vec<Range<usize>>)> {
        let bad =
            |what: String| malformed(Format::Flax, format!("chunked array at byte {at}: {what}"));
        let mut marker = None;
        let mut shape_node = None;
        let mut chunks_node = None;
        for (k, v) in entries {
            let slot = match self.key(k) {
                CHUNKED_KEY => &mut marker,
                "shape" => &mut shape_node,
                "chunks" => &mut chunks_node,
                other => return Err(bad(format!("unexpected key {other:?}"))),
            };
            *slot = Some(*v);
        }
        let (Some(marker), Some(shape_node), Some(chunks_node)) = (marker, shape_node, chunks_node)
        else {
            return Err(bad(
                "needs the keys __msgpack_chunked_array__, shape, chunks".into(),
            ));
        };
        if !matches!(
            self.node(marker)?,
            Node::Leaf {
                head: Head::Bool(true),
                ..
            }
        ) {
            return Err(bad(format!("{CHUNKED_KEY} is not true")));
        }
        let dims = self.indexed(shape_node, "shape")?;
        if dims.len() > MAX_FLAX_RANK {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "rank {} exceeds the limit {MAX_FLAX_RANK} (byte {at})",
                    dims.len()
                ),
            }
            .into());
        }
        let mut shape = Vec::with_capacity(dims.len());
        for d in dims {
            match self.node(d)? {
                Node::Leaf {
                    head: Head::UInt(v),
                    ..
                } => shape.push(
                    usize::try_from(*v).map_err(|_| bad(format!("dimension {v} overflows")))?,
                ),
                _ => return Err(bad("a shape entry is not a non-negative integer".into())),
            }
        }
        let parts = self.indexed(chunks_node, "chunks")?;
        if parts.is_empty() {
            return Err(bad("no chunks".into()));
        }
        let mut dtype = None;
        let mut ranges = Vec::with_capacity(parts.len());
        let mut elements = 0usize;
        for p in parts {
            let Node::Leaf {
                head: Head::Ext(EXT_NDARRAY, payload),
                ..
            } = self.node(p)?
            else {
                return Err(bad("a chunk is not an array".into()));
            };
            let a = parse_array_payload(self.bytes, payload.clone())?;
            let [n] = a.shape.as_slice() else {
                return Err(bad(format!(
                    "a chunk has shape {:?}, flax writes 1-D chunks",
                    a.shape
                )));
            };
            if *dtype.get_or_insert(a.dtype) != a.dtype {
                return Err(bad("chunks of different dtypes".into()));
            }
            elements = elements
                .checked_add(*n)
                .ok_or_else(|| bad("chunk sizes overflow".into()))?;
            ranges.push(a.data);
        }
        let dtype = dtype.ok_or_else(|| bad("no chunks".into()))?;
        let numel = tensor::checked_numel(&shape).ok_or_else(|| {
            Error::from(ErrorKind::InvalidLayout {
                reason: format!("shape {shape:?} overflows the address space"),
            })
        })?;
        if numel != elements || tensor::checked_byte_len(dtype, &shape).is_none() {
            return Err(ErrorKind::InvalidLayout {
                reason: format!(
                    "chunked array at byte {at}: shape {shape:?} has {numel} elements, the chunks {elements}"
                ),
            }
            .into());
        }
        Ok((dtype, shape, ranges))
    }

    /// The children of a map keyed `"0"`, `"1"`, … `"n-1"` (flax `_tuple_to_dict`), in index order.
    fn indexed(&self, id: usize, what: &str) -> Result<Vec<usize>> {
        let Node::Map { entries, at } = self.node(id)? else {
            return Err(malformed(
                Format::Flax,
                format!("chunked array: {what} is not a map"),
            ));
        };
        let mut slots: Vec<Option<usize>> = vec![None; entries.len()];
        for (k, v) in entries {
            let key = self.key(k);
            let slot = key
                .parse::<usize>()
                .ok()
                .filter(|i| i.to_string() == key)
                .and_then(|i| slots.get_mut(i))
                .ok_or_else(|| {
                    malformed(
                        Format::Flax,
                        format!(
                        "chunked array: {what} map at byte {at} has key {key:?}, expected 0..{}",
                        entries.len()
                    ),
                    )
                })?;
            *slot = Some(*v);
        }
        slots
            .into_iter()
            .map(|s| {
                s.ok_or_else(|| malformed(Format::Flax, format!("chunked array: {what} has a gap")))
            })
            .collect()
    }
}

fn check_unique_keys(w: &Walk<'_>, name: &str, entries: &[(Range<usize>, usize)]) -> Result<()> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (k, _) in entries {
        let key = w.key(k);
        if !seen.insert(key) {
            return Err(ErrorKind::Duplicate {
                what: "msgpack map key",
                name: if name.is_empty() {
                    key.to_string()
                } else {
                    format!("{name}/{key}")
                },
            }
            .into());
        }
    }
    Ok(())
}

impl Flax {
    /// Parses and validates a whole `flax_model.msgpack`.
    ///
    /// # Errors
    /// As listed in the module docs; errors about one array carry its tensor name.
    pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let limits = *limits;
        let nodes = parse_tree(bytes, &limits)?;
        let mut w = Walk {
            bytes,
            nodes: &nodes,
            tensors: Vec::new(),
            stored: Vec::new(),
            by_name: HashMap::new(),
            notes: Vec::new(),
            skipped: 0,
            chunked: 0,
            limits,
            name_bytes: 0,
        };
        struct Frame {
            node: usize,
            next: usize,
            name_len: usize,
        }
        if let Some(Node::Map { entries, .. }) = nodes.first() {
            check_unique_keys(&w, "", entries)?;
            if entries.iter().any(|(k, _)| w.key(k) == CHUNKED_KEY) {
                return Err(malformed(
                    Format::Flax,
                    "the top level is a chunked array, not a map of parameter names",
                ));
            }
        }
        let mut name = String::new();
        let mut stack = vec![Frame {
            node: 0,
            next: 0,
            name_len: 0,
        }];
        while let Some(f) = stack.last_mut() {
            let child = match w.node(f.node)? {
                Node::Map { entries, .. } => {
                    entries.get(f.next).map(|(k, v)| (w.key(k).to_string(), *v))
                }
                Node::List { items, .. } => items.get(f.next).map(|v| (f.next.to_string(), *v)),
                Node::Leaf { .. } => None,
            };
            let Some((key, id)) = child else {
                stack.pop();
                continue;
            };
            f.next += 1;
            name.truncate(f.name_len);
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&key);
            if name.len() > limits.tensor_name_bytes {
                let at = match w.node(id)? {
                    Node::Map { at, .. } | Node::List { at, .. } | Node::Leaf { at, .. } => *at,
                };
                return Err(budget("tensor name bytes", limits.tensor_name_bytes, at));
            }
            if w.visit(&name, id)
                .map_err(|e| e.with_tensor(name.clone()))?
            {
                stack.push(Frame {
                    node: id,
                    next: 0,
                    name_len: name.len(),
                });
            }
        }
        let mut notes = std::mem::take(&mut w.notes);
        if w.skipped > 0 {
            notes.push(format!("{} more non-array leaves skipped", w.skipped));
        }
        let mut metadata = BTreeMap::new();
        if w.chunked > 0 {
            metadata.insert("chunked_arrays".to_string(), w.chunked.to_string());
        }
        let (tensors, stored, by_name) = (w.tensors, w.stored, w.by_name);
        Ok(Flax {
            tensors,
            stored,
            by_name,
            metadata,
            notes,
        })
    }
}
