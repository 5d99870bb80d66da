//! One tensor's rebuild call, interpreted: [`rebuild`] resolves the chain of rebuild calls to a
//! dtype, shape, strides and storage, [`declare`] records the storage, [`plan`] validates the
//! layout against it into a [`TensorPlan`], and [`Aliasing`] budgets bytes read beyond bytes
//! stored.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::source::pickle::{
    Arena, Global, Node, NodeId, Rebuild, StorageClass, StorageRef, TorchDType,
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
    /// Index into the checkpoint's storages, in first-use order.
    pub(crate) storage: usize,
}

pub(super) fn malformed(reason: String, offset: u64) -> Error {
    ErrorKind::MalformedPickle { reason, offset }.into()
}

pub(super) fn invalid(reason: String) -> Error {
    ErrorKind::InvalidLayout { reason }.into()
}

/// A tensor rebuild call, resolved.
pub(super) struct Spec {
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Interprets a chain of rebuild calls down to `_rebuild_tensor{,_v2,_v3}`.
///
/// Also returns the Python state of wrapping rebuilds, which the caller checks for tensors.
pub(super) fn rebuild(arena: &Arena, call: NodeId) -> Result<(Spec, StorageRef, Vec<NodeId>)> {
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
pub(super) fn tensor_dtype(
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
pub(super) fn dims(arena: &Arena, id: NodeId, what: &str) -> Result<Vec<usize>> {
    match arena.get(id) {
        Node::Tuple(v) | Node::List(v) => v.iter().map(|d| dim(arena.get(*d), what)).collect(),
        other => Err(invalid(format!(
            "{what} is a {}, not a tuple",
            other.kind()
        ))),
    }
}

pub(super) fn dim(node: &Node, what: &str) -> Result<usize> {
    match node {
        Node::Int(i) if *i < 0 => Err(invalid(format!("negative {what} {i}"))),
        Node::Int(i) => usize::try_from(*i).map_err(|_| invalid(format!("{what} {i} too large"))),
        Node::BigInt(_) => Err(invalid(format!("{what} does not fit 64 bits"))),
        other => Err(invalid(format!("{what} is a {}, not an int", other.kind()))),
    }
}

/// Records a storage's declaration, checking that every use agrees.
pub(super) fn declare(
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
pub(super) fn plan(
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
pub(super) struct Aliasing {
    tensor_bytes: u64,
    storage_bytes: u64,
    storages_counted: usize,
}

impl Aliasing {
    pub(super) fn add(
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
