//! REDUCE, NEWOBJ and persistent ids: what "calling" an allowlisted global means, as inert data.

use crate::error::Result;

use super::allow::{Builtin, Global, Rebuild};
use super::value::{sequence, Node, NodeId, StorageRef, StorageView};
use super::vm::{malformed, off, Vm};

/// `torch.nn.parameter.Parameter`, inert unless it wraps a tensor.
const PARAMETER: &str = "torch.nn.parameter.Parameter";

impl Vm<'_> {
    /// `cls(*args)` for NEWOBJ/INST/OBJ: classes only.
    pub(super) fn instantiate(
        &mut self,
        cls: NodeId,
        args: NodeId,
        at: usize,
        op: &str,
    ) -> Result<Node> {
        match self.arena.get(cls) {
            Node::Global {
                global:
                    Global::Rebuild(_)
                    | Global::Reconstructor
                    | Global::CodecsEncode
                    | Global::Storage(_)
                    | Global::DType(_)
                    | Global::TorchTensor
                    | Global::Builtin(Builtin::Object),
                name,
            } => Err(malformed(
                format!("{op} on {name}, which is not an allowed class"),
                off(at),
            )),
            _ => self.call(cls, args, at, op),
        }
    }

    /// `func(*args)` for an allowlisted callable, as inert data.
    pub(super) fn call(&mut self, func: NodeId, args: NodeId, at: usize, op: &str) -> Result<Node> {
        let Node::Global { global, name } = *self.arena.get(func) else {
            let kind = self.arena.get(func).kind();
            return Err(malformed(
                format!("{op} on {kind}, which is not callable"),
                off(at),
            ));
        };
        let Node::Tuple(argv) = self.arena.get(args) else {
            let kind = self.arena.get(args).kind();
            return Err(malformed(
                format!("{op} arguments are a {kind}, not a tuple"),
                off(at),
            ));
        };
        let argv = argv.clone();
        let bad_args = || malformed(format!("{op} on {name}: unexpected arguments"), off(at));
        match global {
            Global::Rebuild(func) => Ok(Node::Call {
                func,
                name,
                args,
                offset: off(at),
            }),
            Global::OrderedDict => {
                let items = match argv.as_slice() {
                    [] => Vec::new(),
                    [src] => self.pairs_of(*src).ok_or_else(bad_args)?,
                    _ => return Err(bad_args()),
                };
                self.arena.charge_items(items.len(), off(at))?;
                Ok(Node::OrderedDict { items, attrs: None })
            }
            Global::DefaultDict => match argv.as_slice() {
                [] => Ok(Node::Dict(Vec::new())),
                [factory, ..] if argv.len() <= 2 => {
                    let ok = matches!(self.arena.get(*factory), Node::None | Node::Global { .. });
                    if !ok {
                        let kind = self.arena.get(*factory).kind();
                        return Err(malformed(
                            format!("collections.defaultdict factory is a {kind}"),
                            off(at),
                        ));
                    }
                    let items = match argv.get(1) {
                        Some(src) => self.pairs_of(*src).ok_or_else(bad_args)?,
                        None => Vec::new(),
                    };
                    self.arena.charge_items(items.len(), off(at))?;
                    Ok(Node::Dict(items))
                }
                _ => Err(bad_args()),
            },
            Global::Reconstructor => {
                // copyreg._reconstructor(cls, base, state): `cls` is allowlisted (it was named).
                let [cls, base, _state] = argv.as_slice() else {
                    return Err(bad_args());
                };
                if !matches!(self.arena.get(*base), Node::Global { .. }) {
                    return Err(bad_args());
                }
                let empty = self.arena.push(Node::Tuple(Vec::new()), off(at))?;
                self.instantiate(*cls, empty, at, "copyreg._reconstructor")
            }
            Global::TorchSize => match argv.as_slice() {
                [] => Ok(Node::Tuple(Vec::new())),
                [dims] => {
                    let items = self.items_of(*dims).ok_or_else(bad_args)?;
                    self.arena.charge_items(items.len(), off(at))?;
                    Ok(Node::Tuple(items))
                }
                _ => Err(bad_args()),
            },
            Global::CodecsEncode => {
                let (text, encoding) = match argv.as_slice() {
                    [t] => (*t, None),
                    [t, e] => (*t, Some(*e)),
                    _ => return Err(bad_args()),
                };
                let Node::Str(text) = self.arena.get(text) else {
                    return Err(bad_args());
                };
                let encoding = match encoding.map(|e| self.arena.get(e)) {
                    None => "utf-8",
                    Some(Node::Str(e)) => e.as_str(),
                    Some(_) => return Err(bad_args()),
                };
                Ok(Node::Bytes(encode(text, encoding).ok_or_else(|| {
                    malformed(
                        format!("_codecs.encode to {encoding:?} is not supported"),
                        off(at),
                    )
                })?))
            }
            Global::Builtin(b) => self.builtin(b, name, &argv, args, at),
            // torch 0.4 pickled parameters as `Parameter(tensor, requires_grad)`.
            Global::Inert
                if name == PARAMETER
                    && argv
                        .first()
                        .is_some_and(|a| matches!(self.arena.get(*a), Node::Call { .. })) =>
            {
                Ok(Node::Call {
                    func: Rebuild::Parameter,
                    name,
                    args,
                    offset: off(at),
                })
            }
            Global::TorchDevice | Global::Inert => Ok(Node::Object {
                class: name,
                args: Some(args),
                state: None,
            }),
            Global::Storage(_) | Global::DType(_) | Global::TorchTensor => Err(malformed(
                format!("{op} on {name}, which is not callable here"),
                off(at),
            )),
        }
    }

    fn builtin(
        &mut self,
        b: Builtin,
        name: &'static str,
        argv: &[NodeId],
        args: NodeId,
        at: usize,
    ) -> Result<Node> {
        let inert = Node::Object {
            class: name,
            args: Some(args),
            state: None,
        };
        let copy = |vm: &mut Self| -> Result<Option<Vec<NodeId>>> {
            let items = match argv {
                [] => Some(Vec::new()),
                [src] => vm.items_of(*src),
                _ => None,
            };
            if let Some(items) = &items {
                vm.arena.charge_items(items.len(), off(at))?;
            }
            Ok(items)
        };
        Ok(match b {
            Builtin::Set => copy(self)?.map_or(inert, Node::Set),
            Builtin::FrozenSet => copy(self)?.map_or(inert, Node::FrozenSet),
            Builtin::List => copy(self)?.map_or(inert, Node::List),
            Builtin::Tuple => copy(self)?.map_or(inert, Node::Tuple),
            Builtin::Dict => {
                let items = match argv {
                    [] => Some(Vec::new()),
                    [src] => self.pairs_of(*src),
                    _ => None,
                };
                match items {
                    Some(items) => {
                        self.arena.charge_items(items.len(), off(at))?;
                        Node::Dict(items)
                    }
                    None => inert,
                }
            }
            Builtin::ByteArray => match argv {
                [] => Node::Bytes(Vec::new()),
                [src] => match self.arena.get(*src) {
                    Node::Bytes(v) => Node::Bytes(v.clone()),
                    _ => inert,
                },
                [t, e] => match (self.arena.get(*t), self.arena.get(*e)) {
                    (Node::Str(t), Node::Str(e)) => encode(t, e).map_or(inert, Node::Bytes),
                    _ => inert,
                },
                _ => inert,
            },
            Builtin::Int | Builtin::Float | Builtin::Str | Builtin::Bool => {
                let same = match argv {
                    [v] => {
                        let v = self.arena.get(*v);
                        let same = matches!(
                            (b, v),
                            (Builtin::Int, Node::Int(_) | Node::BigInt(_))
                                | (Builtin::Float, Node::Float(_))
                                | (Builtin::Str, Node::Str(_))
                                | (Builtin::Bool, Node::Bool(_))
                        );
                        same.then(|| v.clone())
                    }
                    _ => None,
                };
                same.unwrap_or(inert)
            }
            Builtin::Slice | Builtin::Complex => inert,
            Builtin::Object => {
                return Err(malformed(format!("{name} is not callable here"), off(at)));
            }
        })
    }

    /// Items of a list/tuple/set, or dict keys.
    fn items_of(&self, src: NodeId) -> Option<Vec<NodeId>> {
        match self.arena.get(src) {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) | Node::FrozenSet(v) => Some(v.clone()),
            Node::Dict(v) | Node::OrderedDict { items: v, .. } => {
                Some(v.iter().map(|(k, _)| *k).collect())
            }
            _ => None,
        }
    }

    /// Items of a dict, or of a sequence of 2-item sequences.
    fn pairs_of(&self, src: NodeId) -> Option<Vec<(NodeId, NodeId)>> {
        match self.arena.get(src) {
            Node::Dict(v) | Node::OrderedDict { items: v, .. } => Some(v.clone()),
            Node::Tuple(v) | Node::List(v) => v
                .iter()
                .map(|p| match sequence(self.arena.get(*p)) {
                    Some([k, v]) => Some((*k, *v)),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// Resolves a persistent id: only `('storage', class, key, location, numel[, view])`.
    pub(super) fn persistent_load(&self, pid: NodeId, at: usize) -> Result<StorageRef> {
        let a = &self.arena;
        let Node::Tuple(fields) = a.get(pid) else {
            let kind = a.get(pid).kind();
            return Err(malformed(
                format!("persistent id is a {kind}, not a tuple"),
                off(at),
            ));
        };
        let tag = fields.first().map(|f| a.get(*f));
        let tag = tag.and_then(|t| match t {
            Node::Str(s) => Some(s.as_str()),
            Node::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        });
        if tag != Some("storage") {
            return Err(malformed(
                format!(
                    "persistent id {:?} is not a storage reference",
                    tag.unwrap_or("(not a string)")
                ),
                off(at),
            ));
        }
        let (class_id, key, location, numel, view) = match fields.as_slice() {
            [_, c, k, l, n] => (*c, *k, *l, *n, None),
            [_, c, k, l, n, v] => (*c, *k, *l, *n, Some(*v)),
            _ => {
                return Err(malformed(
                    format!(
                        "storage persistent id has {} fields (expected 5 or 6)",
                        fields.len()
                    ),
                    off(at),
                ))
            }
        };
        let (class, class_name) = match a.get(class_id) {
            Node::Global {
                global: Global::Storage(class),
                name,
            } => (*class, *name),
            other => {
                return Err(malformed(
                    format!(
                        "storage persistent id names {}, not a storage class",
                        other.kind()
                    ),
                    off(at),
                ))
            }
        };
        let key = key_string(a.get(key))
            .ok_or_else(|| malformed("storage key is not a string", off(at)))?;
        let location = match a.get(location) {
            Node::Str(s) => s.clone(),
            Node::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            _ => {
                return Err(malformed(
                    format!("storage {key}: location is not a string"),
                    off(at),
                ))
            }
        };
        let numel = non_negative(a.get(numel)).ok_or_else(|| {
            malformed(
                format!("storage {key}: numel is not a non-negative int"),
                off(at),
            )
        })?;
        let view = match view.map(|v| a.get(v)) {
            None | Some(Node::None) => None,
            Some(Node::Tuple(v)) => match v.as_slice() {
                [vk, o, s] => {
                    let vk = key_string(a.get(*vk));
                    let o = non_negative(a.get(*o));
                    let s = non_negative(a.get(*s));
                    match (vk, o, s) {
                        (Some(key), Some(offset), Some(size)) => {
                            Some(StorageView { key, offset, size })
                        }
                        _ => {
                            return Err(malformed(
                                format!("storage {key}: malformed view metadata"),
                                off(at),
                            ))
                        }
                    }
                }
                _ => {
                    return Err(malformed(
                        format!("storage {key}: malformed view metadata"),
                        off(at),
                    ))
                }
            },
            Some(other) => {
                return Err(malformed(
                    format!("storage {key}: view metadata is a {}", other.kind()),
                    off(at),
                ))
            }
        };
        Ok(StorageRef {
            class,
            class_name,
            key,
            location,
            numel,
            view,
        })
    }
}

/// `str.encode(encoding)` for the encodings pickles use.
fn encode(text: &str, encoding: &str) -> Option<Vec<u8>> {
    match encoding.to_ascii_lowercase().replace('_', "-").as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect(),
        "utf-8" | "utf8" => Some(text.as_bytes().to_vec()),
        "ascii" => text.is_ascii().then(|| text.as_bytes().to_vec()),
        _ => None,
    }
}

fn key_string(node: &Node) -> Option<String> {
    match node {
        Node::Str(s) => Some(s.clone()),
        Node::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
        Node::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn non_negative(node: &Node) -> Option<u64> {
    match node {
        Node::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}
