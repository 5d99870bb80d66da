//! The inert value tree a pickle evaluates to, kept in an arena.
//!
//! Nodes refer to each other by [`NodeId`] (an index into [`Arena`]), never by ownership: the memo
//! shares a value by copying its id, mutable containers are updated in place after they were
//! memoised (as APPEND/SETITEMS require), cycles cost nothing, and dropping the arena drops a flat
//! `Vec` — no recursion however deep the tree.

use std::collections::BTreeMap;

use crate::error::{ErrorKind, Result};

use super::allow::{Global, Rebuild, StorageClass};
use crate::limits::Limits;

/// Index of a node in its [`Arena`]. Only the arena hands these out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeId(u32);

impl NodeId {
    /// The index as `usize` (for visited-sets sized by [`Arena::len`]).
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// An integer too large for `i64`, as sign and little-endian magnitude without trailing zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BigInt {
    /// True when the value is negative.
    pub(crate) negative: bool,
    /// Magnitude, little-endian, no trailing zero bytes.
    pub(crate) magnitude: Vec<u8>,
}

/// A persistent storage reference: `('storage', class, key, location, numel[, view])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// The storage class the pickle named.
    pub(crate) class: StorageClass,
    /// Its `module.name`.
    pub(crate) class_name: &'static str,
    /// Storage key (zip record name under `data/`, legacy root key).
    pub(crate) key: String,
    /// Device location string (`cpu`, `cuda:0`); informational only.
    pub(crate) location: String,
    /// Declared size: elements of the class's dtype, or bytes for `UntypedStorage`.
    pub(crate) numel: u64,
    /// Legacy storage view `(view_key, offset, size)` in elements of the root storage.
    pub(crate) view: Option<StorageView>,
}

/// A legacy storage view into a root storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageView {
    /// The view's own key (informational).
    pub(crate) key: String,
    /// First element of the view within the root storage.
    pub(crate) offset: u64,
    /// Elements in the view.
    pub(crate) size: u64,
}

/// One value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A larger integer.
    BigInt(BigInt),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string (also `bytearray`, `_codecs.encode` results).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<NodeId>),
    /// A list.
    List(Vec<NodeId>),
    /// A dict (also `collections.defaultdict`), items in insertion order.
    Dict(Vec<(NodeId, NodeId)>),
    /// A `collections.OrderedDict`; `attrs` is the BUILD state (attributes such as `_metadata`).
    OrderedDict {
        /// Items in order.
        items: Vec<(NodeId, NodeId)>,
        /// Attribute state set by BUILD, kept apart from the items.
        attrs: Option<NodeId>,
    },
    /// A set.
    Set(Vec<NodeId>),
    /// A frozenset.
    FrozenSet(Vec<NodeId>),
    /// An allowlisted global (class, function, dtype, storage class).
    Global {
        /// What it is.
        global: Global,
        /// Its `module.name`.
        name: &'static str,
    },
    /// A call of a tensor rebuild function, interpreted later (`source::torch`).
    Call {
        /// Which rebuild function.
        func: Rebuild,
        /// Its `module.name`.
        name: &'static str,
        /// The argument tuple.
        args: NodeId,
        /// Byte offset of the REDUCE.
        offset: u64,
    },
    /// An allowlisted inert object: kept, never interpreted.
    Object {
        /// Its class or factory `module.name`.
        class: &'static str,
        /// Constructor arguments, if any.
        args: Option<NodeId>,
        /// BUILD state, if any.
        state: Option<NodeId>,
    },
    /// A persistent storage reference.
    Storage(Box<StorageRef>),
}

impl Node {
    /// A short name for the kind of value, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) | Node::BigInt(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::Tuple(_) => "tuple",
            Node::List(_) => "list",
            Node::Dict(_) => "dict",
            Node::OrderedDict { .. } => "collections.OrderedDict",
            Node::Set(_) => "set",
            Node::FrozenSet(_) => "frozenset",
            Node::Global { name, .. } => name,
            Node::Call { name, .. } => name,
            Node::Object { class, .. } => class,
            Node::Storage(_) => "storage",
        }
    }
}

/// The nodes of one pickle, with the budgets that bound them.
#[derive(Debug)]
pub(crate) struct Arena {
    nodes: Vec<Node>,
    payload: usize,
    items: usize,
    limits: Limits,
}

impl Arena {
    /// The budgets this arena (and the pickle it holds) was parsed within.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// An empty arena bounded by `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Arena {
            nodes: Vec::new(),
            payload: 0,
            items: 0,
            limits,
        }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Adds a node, charging the node, payload and item budgets; `offset` is for the error.
    pub(crate) fn push(&mut self, node: Node, offset: u64) -> Result<NodeId> {
        let max_nodes = self.limits.pickle_nodes;
        if self.nodes.len() >= max_nodes {
            return Err(budget("pickle nodes", max_nodes, offset));
        }
        let payload = match &node {
            Node::Str(s) => s.len(),
            Node::Bytes(b) => b.len(),
            Node::BigInt(b) => b.magnitude.len(),
            _ => 0,
        };
        self.charge_payload(payload, offset)?;
        let items = match &node {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) | Node::FrozenSet(v) => v.len(),
            Node::Dict(v) | Node::OrderedDict { items: v, .. } => v.len(),
            _ => 0,
        };
        self.charge_items(items, offset)?;
        let id = NodeId(
            u32::try_from(self.nodes.len())
                .map_err(|_| budget("pickle nodes", max_nodes, offset))?,
        );
        self.nodes.push(node);
        Ok(id)
    }

    /// Charges `n` bytes of string/bytes payload against [`Limits::pickle_payload_bytes`].
    pub(crate) fn charge_payload(&mut self, n: usize, offset: u64) -> Result<()> {
        let max = self.limits.pickle_payload_bytes;
        self.payload = self
            .payload
            .checked_add(n)
            .filter(|&p| p <= max)
            .ok_or_else(|| budget("pickle string/bytes payload", max, offset))?;
        Ok(())
    }

    /// Charges `n` container slots against [`Limits::pickle_container_items`].
    pub(crate) fn charge_items(&mut self, n: usize, offset: u64) -> Result<()> {
        let max = self.limits.pickle_container_items;
        self.items = self
            .items
            .checked_add(n)
            .filter(|&p| p <= max)
            .ok_or_else(|| budget("pickle container items", max, offset))?;
        Ok(())
    }

    /// Every node, in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }

    /// The node behind an id.
    pub(crate) fn get(&self, id: NodeId) -> &Node {
        // Ids are only created by `push`, so they are always in range.
        &self.nodes[id.index()]
    }

    /// The node behind an id, mutably.
    pub(crate) fn get_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }
}

/// A `BudgetExceeded` error.
pub(crate) fn budget(name: &'static str, limit: usize, offset: u64) -> crate::error::Error {
    ErrorKind::BudgetExceeded {
        budget: name,
        limit: limit as u64,
        offset,
    }
    .into()
}

impl BigInt {
    /// Builds an integer node from little-endian two's-complement bytes (LONG1/LONG4): `Int`
    /// when it fits `i64`, `BigInt` otherwise. Any length; never overflows.
    pub(crate) fn node_from_twos_complement(bytes: &[u8]) -> Node {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        // Magnitude: negate when negative (invert and add one), little-endian.
        let mut magnitude: Vec<u8> = if negative {
            let mut carry = true;
            bytes
                .iter()
                .map(|&b| {
                    let (v, c) = (!b).overflowing_add(u8::from(carry));
                    carry = c;
                    v
                })
                .collect()
        } else {
            bytes.to_vec()
        };
        while magnitude.last() == Some(&0) {
            magnitude.pop();
        }
        BigInt {
            negative,
            magnitude,
        }
        .into_node()
    }

    /// `Int` when the value fits `i64`, else `BigInt`.
    pub(crate) fn into_node(self) -> Node {
        match self.to_i64() {
            Some(v) => Node::Int(v),
            None => Node::BigInt(self),
        }
    }

    /// The value as `i64`, if it fits.
    pub(crate) fn to_i64(&self) -> Option<i64> {
        if self.magnitude.len() > 8 {
            return None;
        }
        let mut m = 0u64;
        for (i, &b) in self.magnitude.iter().enumerate() {
            m |= u64::from(b) << (8 * i);
        }
        if self.negative {
            if m <= 1u64 << 63 {
                Some(0i64.wrapping_sub_unsigned(m))
            } else {
                None
            }
        } else {
            i64::try_from(m).ok()
        }
    }
}

/// Items of a tuple or list node, if it is one.
pub(crate) fn sequence(node: &Node) -> Option<&[NodeId]> {
    match node {
        Node::Tuple(v) | Node::List(v) => Some(v),
        _ => None,
    }
}

/// Collects `key -> value` string pairs of a dict-like node whose keys are strings
/// (used for small metadata dicts such as the legacy `sys_info`).
pub(crate) fn string_keyed(arena: &Arena, id: NodeId) -> BTreeMap<String, NodeId> {
    let mut out = BTreeMap::new();
    if let Node::Dict(items) | Node::OrderedDict { items, .. } = arena.get(id) {
        for (k, v) in items {
            if let Node::Str(s) = arena.get(*k) {
                out.entry(s.clone()).or_insert(*v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twos_complement_sign_extends_and_keeps_big_values() {
        assert_eq!(BigInt::node_from_twos_complement(&[]), Node::Int(0));
        assert_eq!(BigInt::node_from_twos_complement(&[0xff]), Node::Int(-1));
        assert_eq!(
            BigInt::node_from_twos_complement(&[0x00, 0x80]),
            Node::Int(-32768)
        );
        assert_eq!(
            BigInt::node_from_twos_complement(&[0, 0, 0, 0, 0, 0, 0, 0x80]),
            Node::Int(i64::MIN)
        );
        let n = BigInt::node_from_twos_complement(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        assert_eq!(
            n,
            Node::BigInt(BigInt {
                negative: false,
                magnitude: vec![0, 0, 0, 0, 0, 0, 0, 0x80]
            })
        );
        // -2^64 needs 9 bytes.
        let n = BigInt::node_from_twos_complement(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
        assert_eq!(
            n,
            Node::BigInt(BigInt {
                negative: true,
                magnitude: vec![0, 0, 0, 0, 0, 0, 0, 0, 1]
            })
        );
        // 9-byte encoding of a small value collapses to Int.
        assert_eq!(
            BigInt::node_from_twos_complement(&[5, 0, 0, 0, 0, 0, 0, 0, 0]),
            Node::Int(5)
        );
        assert_eq!(
            BigInt::node_from_twos_complement(&[
                0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]),
            Node::Int(-5)
        );
    }
}
