//! The safe pickle machine: reads a pickle stream (protocols 0–5) into an inert value tree.
//!
//! Nothing in a pickle is ever executed. Globals are checked against an allowlist
//! ([`allow`]) at the moment an opcode names them; everything the machine builds is plain data in
//! an arena ([`value::Arena`]), so shared memo entries cost one index, cycles are harmless and
//! dropping a deep tree cannot overflow the stack. Every resource the machine can be made to
//! spend is bounded by a named budget below.
//!
//! Layout: [`opcodes`] (the opcode table), [`text`] (protocol-0 text operands), [`allow`] (the
//! global allowlist), [`value`] (the arena and its nodes), [`vm`] (the machine).

pub(crate) mod allow;
pub(crate) mod opcodes;
mod reduce;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
pub(crate) mod text;
pub(crate) mod value;
pub(crate) mod vm;

pub(crate) use allow::{Global, Rebuild, StorageClass, TorchDType};
pub(crate) use value::{Arena, BigInt, Node, NodeId, StorageRef};
pub(crate) use vm::{parse_pickle, Parsed};

/// Largest pickle stream the machine accepts, in bytes.
pub(crate) const MAX_PICKLE_BYTES: usize = 256 << 20;
/// Most memo entries (PUT/BINPUT/LONG_BINPUT/MEMOIZE) one pickle may create.
pub(crate) const MAX_MEMO_ENTRIES: usize = 1 << 20;
/// Most nodes (values) one pickle may create.
pub(crate) const MAX_NODES: usize = 1 << 22;
/// Most container items (list/tuple/dict/set slots, including copies made by constructors).
pub(crate) const MAX_CONTAINER_ITEMS: usize = 1 << 24;
/// Longest the value stack may grow.
pub(crate) const MAX_STACK_LEN: usize = 1 << 20;
/// Most MARKs open at once.
pub(crate) const MAX_MARK_DEPTH: usize = 1 << 16;
/// Deepest container nesting the tensor walker follows.
pub(crate) const MAX_WALK_DEPTH: usize = 1024;
/// Most tensors one checkpoint may list.
pub(crate) const MAX_TENSORS: usize = 1 << 18;
/// Most string/bytes payload (sum over all strings and byte strings) one pickle may hold.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 256 << 20;
/// Longest decimal literal (INT/LONG text opcodes), as CPython's default `int` digit limit.
pub(crate) const MAX_DECIMAL_DIGITS: usize = 4300;
