//! The safe pickle machine: reads a pickle stream (protocols 0–5) into an inert value tree.
//!
//! Nothing in a pickle is ever executed. Globals are checked against an allowlist
//! ([`allow`]) at the moment an opcode names them; everything the machine builds is plain data in
//! an arena ([`value::Arena`]), so shared memo entries cost one index, cycles are harmless and
//! dropping a deep tree cannot overflow the stack. Every resource the machine can be made to
//! spend is bounded by a budget of [`crate::source::Limits`].
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

// The budgets live in [`crate::source::Limits`]: the machine takes a copy of the limits its
// caller passes (from the `OpenOptions` the file was opened with) when it starts a pickle.

/// Longest decimal literal (INT/LONG text opcodes), as CPython's default `int` digit limit
/// (fixed: no real checkpoint comes near it).
pub(crate) const MAX_DECIMAL_DIGITS: usize = 4300;
