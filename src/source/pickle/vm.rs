//! The pickle machine: opcodes in, an inert value tree out.
//!
//! The whole stream is parsed before anything acts on it. No opcode runs code: globals are
//! allowlisted when named, REDUCE/NEWOBJ build data nodes (containers, inert objects, deferred
//! rebuild calls), BUILD attaches state to the few kinds that take it, and persistent ids resolve
//! only storage references. The machine is a loop over opcodes with an explicit stack — no
//! recursion on input depth.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Result};

use super::allow::{self, Global};
use super::opcodes::*;
use super::text;
use super::value::{budget, Arena, BigInt, Node, NodeId};
use crate::limits::Limits;

/// A parsed pickle: its values and where it ended.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// Every value the pickle built.
    pub(crate) arena: Arena,
    /// The value STOP returned.
    pub(crate) root: NodeId,
    /// The protocol named by the first PROTO opcode, if any.
    pub(crate) protocol: Option<u8>,
    /// Byte position just after STOP.
    pub(crate) end: usize,
}

/// Parses one pickle starting at `bytes[start]`.
///
/// Error offsets are positions in `bytes`. At most [`Limits::pickle_bytes`] bytes are read; the
/// other budgets are those of `limits` too.
///
/// # Errors
/// `Truncated`, `MalformedPickle`, `UnsupportedOpcode`, `DisallowedGlobal`, `BudgetExceeded`.
pub(crate) fn parse_pickle(bytes: &[u8], start: usize, limits: &Limits) -> Result<Parsed> {
    let limits = *limits;
    let limit = start.saturating_add(limits.pickle_bytes).min(bytes.len());
    let cut = limit < bytes.len();
    let buf = bytes.get(..limit).unwrap_or_default();
    if start > buf.len() {
        return Err(truncated("pickle", start, 1, 0));
    }
    let mut vm = Vm {
        buf,
        cut,
        pos: start,
        arena: Arena::new(limits),
        limits,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        protocol: None,
    };
    let root = vm.run()?;
    Ok(Parsed {
        arena: vm.arena,
        root,
        protocol: vm.protocol,
        end: vm.pos,
    })
}

pub(super) struct Vm<'a> {
    pub(super) buf: &'a [u8],
    /// True when `buf` was cut at the pickle-size budget (a short read is then a budget error).
    pub(super) cut: bool,
    pub(super) pos: usize,
    pub(super) arena: Arena,
    pub(super) limits: Limits,
    pub(super) stack: Vec<NodeId>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u64, NodeId>,
    pub(super) protocol: Option<u8>,
}

pub(super) fn off(pos: usize) -> u64 {
    pos as u64
}

fn truncated(what: &'static str, offset: usize, needed: usize, available: usize) -> Error {
    ErrorKind::Truncated {
        what,
        offset: off(offset),
        needed: needed as u64,
        available: available as u64,
    }
    .into()
}

/// A `MalformedPickle` error.
pub(crate) fn malformed(reason: impl Into<String>, offset: u64) -> Error {
    ErrorKind::MalformedPickle {
        reason: reason.into(),
        offset,
    }
    .into()
}

fn disallowed(module: &str, name: &str, offset: usize) -> Error {
    ErrorKind::DisallowedGlobal {
        global: format!("{module}.{name}"),
        offset: off(offset),
    }
    .into()
}

impl<'a> Vm<'a> {
    // ----- reading operands -----

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let available = self.buf.len().saturating_sub(self.pos);
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            if self.cut {
                return Err(budget(
                    "pickle bytes",
                    self.limits.pickle_bytes,
                    off(self.pos),
                ));
            }
            return Err(truncated(what, self.pos, n, available));
        };
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32_le(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A length operand as `usize` (lengths past the input are caught by `take`).
    fn len_u64(&mut self, what: &'static str) -> Result<usize> {
        let at = self.pos;
        let n = u64::from_le_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| truncated(what, at, usize::MAX, 0))
    }

    fn len_i32(&mut self, what: &'static str) -> Result<usize> {
        let at = self.pos;
        let n = i32::from_le_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| malformed(format!("negative {what} length {n}"), off(at)))
    }

    /// A text line without its `\n`.
    fn line(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let s = self.take(i, what)?;
                self.pos += 1; // the newline, known present
                Ok(s)
            }
            None if self.cut => Err(budget(
                "pickle bytes",
                self.limits.pickle_bytes,
                off(self.pos),
            )),
            None => Err(truncated(what, self.pos, rest.len() + 1, rest.len())),
        }
    }

    // ----- the stack -----

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push_id(&mut self, id: NodeId, at: usize) -> Result<()> {
        if self.stack.len() >= self.limits.pickle_stack_len {
            return Err(budget(
                "pickle stack",
                self.limits.pickle_stack_len,
                off(at),
            ));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, node: Node, at: usize) -> Result<NodeId> {
        let id = self.arena.push(node, off(at))?;
        self.push_id(id, at)?;
        Ok(id)
    }

    fn pop(&mut self, at: usize, op: &str) -> Result<NodeId> {
        if self.stack.len() <= self.floor() {
            return Err(malformed(format!("stack underflow in {op}"), off(at)));
        }
        self.stack
            .pop()
            .ok_or_else(|| malformed(format!("stack underflow in {op}"), off(at)))
    }

    fn top(&self, at: usize, op: &str) -> Result<NodeId> {
        if self.stack.len() <= self.floor() {
            return Err(malformed(format!("stack underflow in {op}"), off(at)));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| malformed(format!("stack underflow in {op}"), off(at)))
    }

    fn pop_mark(&mut self, at: usize, op: &str) -> Result<Vec<NodeId>> {
        let Some(mark) = self.marks.pop() else {
            return Err(malformed(format!("{op} without MARK"), off(at)));
        };
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn pairs(items: Vec<NodeId>, at: usize, op: &str) -> Result<Vec<(NodeId, NodeId)>> {
        if items.len() % 2 != 0 {
            return Err(malformed(
                format!("{op} with an odd number of items"),
                off(at),
            ));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn memo_put(&mut self, index: u64, at: usize) -> Result<()> {
        let top = self.top(at, "PUT")?;
        let max_memo = self.limits.pickle_memo_entries;
        if self.memo.len() >= max_memo && !self.memo.contains_key(&index) {
            return Err(budget("pickle memo entries", max_memo, off(at)));
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u64, at: usize) -> Result<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| malformed(format!("memo entry {index} is not defined"), off(at)))?;
        self.push_id(id, at)
    }

    fn decimal_index(line: &[u8], at: usize) -> Result<u64> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| malformed("memo index is not a decimal number", off(at)))
    }

    // ----- the loop -----

    fn run(&mut self) -> Result<NodeId> {
        loop {
            let at = self.pos;
            let op = self.u8("pickle opcode")?;
            match op {
                PROTO | FRAME | STOP | MARK | POP | POP_MARK | DUP => {
                    if let Some(root) = self.control_op(op, at)? {
                        return Ok(root);
                    }
                }
                NONE | NEWTRUE | NEWFALSE | INT | LONG | FLOAT | BININT | BININT1 | BININT2
                | LONG1 | LONG4 | BINFLOAT => self.scalar_op(op, at)?,
                STRING | BINSTRING | SHORT_BINSTRING | UNICODE | BINUNICODE | SHORT_BINUNICODE
                | BINUNICODE8 | BINBYTES | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                    self.text_op(op, at)?
                }
                EMPTY_TUPLE | EMPTY_LIST | EMPTY_DICT | EMPTY_SET | TUPLE | TUPLE1 | TUPLE2
                | TUPLE3 | LIST | DICT | FROZENSET | APPEND | APPENDS | SETITEM | SETITEMS
                | ADDITEMS => self.collection_op(op, at)?,
                GET | BINGET | LONG_BINGET | PUT | BINPUT | LONG_BINPUT | MEMOIZE => {
                    self.memo_op(op, at)?
                }
                GLOBAL | STACK_GLOBAL | INST | OBJ | REDUCE | NEWOBJ | NEWOBJ_EX | BUILD
                | BINPERSID | PERSID => self.object_op(op, at)?,
                // The extension registry and out-of-band buffers are refused.
                EXT1 | EXT2 | EXT4 | NEXT_BUFFER | READONLY_BUFFER => {
                    return Err(unsupported(op, at))
                }
                // A byte that is no pickle opcode.
                _ => return Err(unsupported(op, at)),
            }
        }
    }

    /// Protocol, framing and stack control: `PROTO`, `FRAME`, `STOP` (the root, when it ends the
    /// pickle), `MARK`, `POP`, `POP_MARK`, `DUP`.
    fn control_op(&mut self, op: u8, at: usize) -> Result<Option<NodeId>> {
        match op {
            PROTO => {
                let p = self.u8("protocol")?;
                if p > HIGHEST_PROTOCOL {
                    return Err(malformed(
                        format!("unsupported pickle protocol {p}"),
                        off(at),
                    ));
                }
                self.protocol.get_or_insert(p);
            }
            FRAME => {
                let n = self.len_u64("frame length")?;
                let available = self.buf.len().saturating_sub(self.pos);
                if n > available {
                    if self.cut {
                        return Err(budget(
                            "pickle bytes",
                            self.limits.pickle_bytes,
                            off(self.pos),
                        ));
                    }
                    return Err(truncated("frame", self.pos, n, available));
                }
            }
            STOP => {
                if !self.marks.is_empty() {
                    return Err(malformed("STOP with an open MARK", off(at)));
                }
                return match self.stack.as_slice() {
                    [root] => Ok(Some(*root)),
                    s => Err(malformed(
                        format!("STOP with {} values on the stack (expected 1)", s.len()),
                        off(at),
                    )),
                };
            }
            MARK => {
                let max_marks = self.limits.pickle_mark_depth;
                if self.marks.len() >= max_marks {
                    return Err(budget("pickle MARK depth", max_marks, off(at)));
                }
                self.marks.push(self.stack.len());
            }
            POP => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else if !self.marks.is_empty() {
                    self.marks.pop();
                } else {
                    return Err(malformed("stack underflow in POP", off(at)));
                }
            }
            POP_MARK => {
                self.pop_mark(at, "POP_MARK")?;
            }
            DUP => {
                let id = self.top(at, "DUP")?;
                self.push_id(id, at)?;
            }
            _ => return Err(unsupported(op, at)),
        }
        Ok(None)
    }

    /// Scalars: `None`, booleans, integers (text, binary, long) and floats.
    fn scalar_op(&mut self, op: u8, at: usize) -> Result<()> {
        match op {
            NONE => {
                self.push(Node::None, at)?;
            }
            NEWTRUE => {
                self.push(Node::Bool(true), at)?;
            }
            NEWFALSE => {
                self.push(Node::Bool(false), at)?;
            }
            INT => {
                let line = self.line("INT operand")?;
                let node = match line {
                    b"00" => Node::Bool(false),
                    b"01" => Node::Bool(true),
                    _ => text::decimal(line).ok_or_else(|| {
                        malformed("INT operand is not a decimal integer", off(at))
                    })?,
                };
                self.push(node, at)?;
            }
            LONG => {
                let line = self.line("LONG operand")?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                let node = text::decimal(digits)
                    .ok_or_else(|| malformed("LONG operand is not a decimal integer", off(at)))?;
                self.push(node, at)?;
            }
            FLOAT => {
                let line = self.line("FLOAT operand")?;
                let v = text::float(line)
                    .ok_or_else(|| malformed("FLOAT operand is not a number", off(at)))?;
                self.push(Node::Float(v), at)?;
            }
            BININT => {
                let v = i32::from_le_bytes(self.array("BININT operand")?);
                self.push(Node::Int(i64::from(v)), at)?;
            }
            BININT1 => {
                let v = self.u8("BININT1 operand")?;
                self.push(Node::Int(i64::from(v)), at)?;
            }
            BININT2 => {
                let v = u16::from_le_bytes(self.array("BININT2 operand")?);
                self.push(Node::Int(i64::from(v)), at)?;
            }
            LONG1 | LONG4 => {
                let n = if op == LONG1 {
                    usize::from(self.u8("LONG1 length")?)
                } else {
                    self.len_i32("LONG4")?
                };
                self.arena.charge_payload(n, off(at))?;
                let bytes = self.take(n, "long integer")?;
                self.push(BigInt::node_from_twos_complement(bytes), at)?;
            }
            BINFLOAT => {
                let v = f64::from_be_bytes(self.array("BINFLOAT operand")?);
                self.push(Node::Float(v), at)?;
            }
            _ => return Err(unsupported(op, at)),
        }
        Ok(())
    }

    /// Strings and bytes: text-line, length-prefixed and 8-byte-length forms.
    fn text_op(&mut self, op: u8, at: usize) -> Result<()> {
        match op {
            STRING => {
                let line = self.line("STRING operand")?;
                let bytes = text::quoted_string(line)
                    .ok_or_else(|| malformed("STRING operand is not a quoted string", off(at)))?;
                self.push(decode_string(bytes), at)?;
            }
            BINSTRING | SHORT_BINSTRING => {
                let n = if op == BINSTRING {
                    self.len_i32("BINSTRING")?
                } else {
                    usize::from(self.u8("SHORT_BINSTRING length")?)
                };
                let bytes = self.take(n, "string")?;
                self.push(decode_string(bytes.to_vec()), at)?;
            }
            UNICODE => {
                let line = self.line("UNICODE operand")?;
                let s = text::raw_unicode_escape(line)
                    .ok_or_else(|| malformed("UNICODE operand has a bad escape", off(at)))?;
                self.push(Node::Str(s), at)?;
            }
            BINUNICODE | SHORT_BINUNICODE | BINUNICODE8 => {
                let n = match op {
                    BINUNICODE => {
                        usize::try_from(self.u32_le("BINUNICODE length")?).unwrap_or(usize::MAX)
                    }
                    SHORT_BINUNICODE => usize::from(self.u8("SHORT_BINUNICODE length")?),
                    _ => self.len_u64("BINUNICODE8 length")?,
                };
                let bytes = self.take(n, "unicode string")?;
                let s = utf8(bytes, "unicode string", at)?;
                self.push(Node::Str(s.to_string()), at)?;
            }
            BINBYTES | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                let n = match op {
                    BINBYTES => {
                        usize::try_from(self.u32_le("BINBYTES length")?).unwrap_or(usize::MAX)
                    }
                    SHORT_BINBYTES => usize::from(self.u8("SHORT_BINBYTES length")?),
                    _ => self.len_u64("bytes length")?,
                };
                let bytes = self.take(n, "bytes")?;
                self.push(Node::Bytes(bytes.to_vec()), at)?;
            }
            _ => return Err(unsupported(op, at)),
        }
        Ok(())
    }

    /// Tuples, lists, dicts and sets: empty ones, ones built from the stack, and additions to them.
    fn collection_op(&mut self, op: u8, at: usize) -> Result<()> {
        match op {
            EMPTY_TUPLE => {
                self.push(Node::Tuple(Vec::new()), at)?;
            }
            EMPTY_LIST => {
                self.push(Node::List(Vec::new()), at)?;
            }
            EMPTY_DICT => {
                self.push(Node::Dict(Vec::new()), at)?;
            }
            EMPTY_SET => {
                self.push(Node::Set(Vec::new()), at)?;
            }
            TUPLE => {
                let items = self.pop_mark(at, "TUPLE")?;
                self.push(Node::Tuple(items), at)?;
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1) + 1;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop(at, "TUPLEn")?);
                }
                items.reverse();
                self.push(Node::Tuple(items), at)?;
            }
            LIST => {
                let items = self.pop_mark(at, "LIST")?;
                self.push(Node::List(items), at)?;
            }
            DICT => {
                let items = self.pop_mark(at, "DICT")?;
                let pairs = Self::pairs(items, at, "DICT")?;
                self.push(Node::Dict(pairs), at)?;
            }
            FROZENSET => {
                let items = self.pop_mark(at, "FROZENSET")?;
                self.push(Node::FrozenSet(items), at)?;
            }
            APPEND => {
                let v = self.pop(at, "APPEND")?;
                self.append(vec![v], at, "APPEND")?;
            }
            APPENDS => {
                let items = self.pop_mark(at, "APPENDS")?;
                self.append(items, at, "APPENDS")?;
            }
            SETITEM => {
                let v = self.pop(at, "SETITEM")?;
                let k = self.pop(at, "SETITEM")?;
                self.set_items(vec![(k, v)], at, "SETITEM")?;
            }
            SETITEMS => {
                let items = self.pop_mark(at, "SETITEMS")?;
                let pairs = Self::pairs(items, at, "SETITEMS")?;
                self.set_items(pairs, at, "SETITEMS")?;
            }
            ADDITEMS => {
                let items = self.pop_mark(at, "ADDITEMS")?;
                let target = self.top(at, "ADDITEMS")?;
                self.arena.charge_items(items.len(), off(at))?;
                match self.arena.get_mut(target) {
                    Node::Set(v) => v.extend(items),
                    other => {
                        let kind = other.kind();
                        return Err(malformed(format!("ADDITEMS to {kind}, not a set"), off(at)));
                    }
                }
            }
            _ => return Err(unsupported(op, at)),
        }
        Ok(())
    }

    /// The memo: `GET`/`PUT` and their binary forms, `MEMOIZE`.
    fn memo_op(&mut self, op: u8, at: usize) -> Result<()> {
        match op {
            GET => {
                let line = self.line("GET operand")?;
                let i = Self::decimal_index(line, at)?;
                self.memo_get(i, at)?;
            }
            BINGET => {
                let i = self.u8("BINGET operand")?;
                self.memo_get(u64::from(i), at)?;
            }
            LONG_BINGET => {
                let i = self.u32_le("LONG_BINGET operand")?;
                self.memo_get(u64::from(i), at)?;
            }
            PUT => {
                let line = self.line("PUT operand")?;
                let i = Self::decimal_index(line, at)?;
                self.memo_put(i, at)?;
            }
            BINPUT => {
                let i = self.u8("BINPUT operand")?;
                self.memo_put(u64::from(i), at)?;
            }
            LONG_BINPUT => {
                let i = self.u32_le("LONG_BINPUT operand")?;
                self.memo_put(u64::from(i), at)?;
            }
            MEMOIZE => {
                let i = self.memo.len() as u64;
                self.memo_put(i, at)?;
            }
            _ => return Err(unsupported(op, at)),
        }
        Ok(())
    }

    /// Globals (through the allowlist), calls and instances, `BUILD`, persistent ids (storages).
    fn object_op(&mut self, op: u8, at: usize) -> Result<()> {
        match op {
            GLOBAL => {
                let module = self.line("GLOBAL module")?;
                let name = self.line("GLOBAL name")?;
                let g = self.global(module, name, at)?;
                self.push(g, at)?;
            }
            STACK_GLOBAL => {
                let name = self.pop(at, "STACK_GLOBAL")?;
                let module = self.pop(at, "STACK_GLOBAL")?;
                let (Node::Str(module), Node::Str(name)) =
                    (self.arena.get(module), self.arena.get(name))
                else {
                    return Err(malformed("STACK_GLOBAL operands are not strings", off(at)));
                };
                let g = match allow::lookup(module, name) {
                    Some((global, name)) => Node::Global { global, name },
                    None => return Err(disallowed(module, name, at)),
                };
                self.push(g, at)?;
            }
            INST => {
                let module = self.line("INST module")?;
                let name = self.line("INST name")?;
                let g = self.global(module, name, at)?;
                let items = self.pop_mark(at, "INST")?;
                let cls = self.arena.push(g, off(at))?;
                let args = self.arena.push(Node::Tuple(items), off(at))?;
                let obj = self.instantiate(cls, args, at, "INST")?;
                self.push(obj, at)?;
            }
            OBJ => {
                let mut items = self.pop_mark(at, "OBJ")?;
                if items.is_empty() {
                    return Err(malformed("OBJ without a class", off(at)));
                }
                let cls = items.remove(0);
                let args = self.arena.push(Node::Tuple(items), off(at))?;
                let obj = self.instantiate(cls, args, at, "OBJ")?;
                self.push(obj, at)?;
            }
            REDUCE => {
                let args = self.pop(at, "REDUCE")?;
                let func = self.pop(at, "REDUCE")?;
                let node = self.call(func, args, at, "REDUCE")?;
                self.push(node, at)?;
            }
            NEWOBJ => {
                let args = self.pop(at, "NEWOBJ")?;
                let cls = self.pop(at, "NEWOBJ")?;
                let obj = self.instantiate(cls, args, at, "NEWOBJ")?;
                self.push(obj, at)?;
            }
            NEWOBJ_EX => {
                let kwargs = self.pop(at, "NEWOBJ_EX")?;
                let args = self.pop(at, "NEWOBJ_EX")?;
                let cls = self.pop(at, "NEWOBJ_EX")?;
                let empty = matches!(self.arena.get(kwargs), Node::Dict(v) if v.is_empty());
                let inert = matches!(
                    self.arena.get(cls),
                    Node::Global {
                        global: Global::Inert,
                        ..
                    }
                );
                if !empty && !inert {
                    return Err(malformed(
                        format!(
                            "NEWOBJ_EX with keyword arguments on {}",
                            self.arena.get(cls).kind()
                        ),
                        off(at),
                    ));
                }
                let obj = self.instantiate(cls, args, at, "NEWOBJ_EX")?;
                self.push(obj, at)?;
            }
            BUILD => {
                let state = self.pop(at, "BUILD")?;
                let target = self.top(at, "BUILD")?;
                match self.arena.get_mut(target) {
                    Node::OrderedDict { attrs, .. } => *attrs = Some(state),
                    Node::Object { state: s, .. } => *s = Some(state),
                    other => {
                        let kind = other.kind();
                        return Err(malformed(
                            format!("BUILD on {kind} is not allowed"),
                            off(at),
                        ));
                    }
                }
            }
            BINPERSID => {
                let pid = self.pop(at, "BINPERSID")?;
                let storage = self.persistent_load(pid, at)?;
                self.push(Node::Storage(Box::new(storage)), at)?;
            }
            PERSID => {
                let line = self.line("PERSID operand")?;
                return Err(malformed(
                    format!(
                        "text persistent id {:?} is not a storage reference",
                        String::from_utf8_lossy(line)
                    ),
                    off(at),
                ));
            }
            _ => return Err(unsupported(op, at)),
        }
        Ok(())
    }

    fn global(&self, module: &[u8], name: &[u8], at: usize) -> Result<Node> {
        let module = utf8(module, "global module", at)?;
        let name = utf8(name, "global name", at)?;
        match allow::lookup(module, name) {
            Some((global, name)) => Ok(Node::Global { global, name }),
            None => Err(disallowed(module, name, at)),
        }
    }

    fn append(&mut self, items: Vec<NodeId>, at: usize, op: &str) -> Result<()> {
        let target = self.top(at, op)?;
        self.arena.charge_items(items.len(), off(at))?;
        match self.arena.get_mut(target) {
            Node::List(v) => {
                v.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(malformed(format!("{op} to {kind}, not a list"), off(at)))
            }
        }
    }

    fn set_items(&mut self, pairs: Vec<(NodeId, NodeId)>, at: usize, op: &str) -> Result<()> {
        let target = self.top(at, op)?;
        self.arena.charge_items(pairs.len(), off(at))?;
        match self.arena.get_mut(target) {
            Node::Dict(v) | Node::OrderedDict { items: v, .. } => {
                v.extend(pairs);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(malformed(format!("{op} on {kind}, not a dict"), off(at)))
            }
        }
    }
}

fn utf8<'b>(bytes: &'b [u8], what: &str, at: usize) -> Result<&'b str> {
    std::str::from_utf8(bytes).map_err(|e| malformed(format!("{what} is not UTF-8: {e}"), off(at)))
}

/// An opcode the machine refuses (or a byte that is no opcode).
fn unsupported(op: u8, at: usize) -> Error {
    ErrorKind::UnsupportedOpcode {
        opcode: op,
        offset: off(at),
    }
    .into()
}

/// Legacy `STRING`/`BINSTRING` payloads: text when UTF-8 (as `torch.load`'s `encoding='utf-8'`),
/// bytes otherwise.
fn decode_string(bytes: Vec<u8>) -> Node {
    match String::from_utf8(bytes) {
        Ok(s) => Node::Str(s),
        Err(e) => Node::Bytes(e.into_bytes()),
    }
}
