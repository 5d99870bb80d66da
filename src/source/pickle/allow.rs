//! The global allowlist: every `module.name` a pickle may name, and what it means.
//!
//! A global not listed here is refused with [`ErrorKind::DisallowedGlobal`] the moment an opcode
//! (GLOBAL, STACK_GLOBAL, INST) names it — before anything could call it. Listed globals are
//! either interpreted as data (containers, tensor rebuilds, storages, dtypes) or kept as inert
//! opaque objects that are never interpreted.
//!
//! [`ErrorKind::DisallowedGlobal`]: crate::error::ErrorKind::DisallowedGlobal

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::tensor::DType;

/// What an allowlisted global is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `collections.defaultdict` (read as a plain dict; the factory must be allowlisted or None).
    DefaultDict,
    /// `copyreg._reconstructor` (only when its class argument is allowlisted).
    Reconstructor,
    /// A tensor rebuild function.
    Rebuild(Rebuild),
    /// A storage class used in persistent ids.
    Storage(StorageClass),
    /// A `torch.<dtype>` (argument of `_rebuild_tensor_v3`).
    DType(TorchDType),
    /// `torch.Size` (read as a tuple).
    TorchSize,
    /// `torch.device` (inert).
    TorchDevice,
    /// `torch.Tensor` (only as the type argument of `_rebuild_from_type_v2`).
    TorchTensor,
    /// `_codecs.encode` (text → bytes).
    CodecsEncode,
    /// A `builtins` data constructor.
    Builtin(Builtin),
    /// An inert opaque class or factory: kept, never interpreted.
    Inert,
}

/// Tensor rebuild functions (`torch._utils`, `torch._tensor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rebuild {
    /// `_rebuild_tensor(storage, offset, size, stride)`.
    Tensor,
    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    TensorV2,
    /// `_rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])`.
    TensorV3,
    /// `_rebuild_parameter(tensor, requires_grad, hooks)`.
    Parameter,
    /// `_rebuild_parameter_with_state(tensor, requires_grad, hooks, state)`.
    ParameterWithState,
    /// `_rebuild_from_type_v2(func, type, args, state)`.
    FromTypeV2,
}

/// A storage class and the element type it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageClass {
    /// A typed storage of a supported dtype.
    Typed(DType),
    /// `torch.UntypedStorage`: bytes; the tensor's dtype comes from `_rebuild_tensor_v3`.
    Untyped,
    /// A typed storage of a dtype this crate cannot represent (complex, quantized), with its
    /// element size (so a legacy file's storage data can still be stepped over).
    Unsupported(usize),
}

impl StorageClass {
    /// Bytes per storage element (1 for untyped).
    pub(crate) fn elem_size(self) -> usize {
        match self {
            StorageClass::Typed(d) => d.size(),
            StorageClass::Untyped => 1,
            StorageClass::Unsupported(size) => size,
        }
    }
}

/// A `torch.<dtype>` global.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TorchDType {
    /// A dtype this crate supports.
    Supported(DType),
    /// A dtype this crate cannot represent (`torch.uint16`, float8, complex, …).
    Unsupported,
}

/// `builtins` data constructors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// `set`.
    Set,
    /// `frozenset`.
    FrozenSet,
    /// `slice` (inert).
    Slice,
    /// `complex` (inert).
    Complex,
    /// `bytearray`.
    ByteArray,
    /// `list`.
    List,
    /// `dict`.
    Dict,
    /// `tuple`.
    Tuple,
    /// `int`.
    Int,
    /// `float`.
    Float,
    /// `str`.
    Str,
    /// `bool`.
    Bool,
    /// `object` (only as the base argument of `copyreg._reconstructor`).
    Object,
}

/// Typed storage classes of supported dtypes (`torch.X` and the old `torch.cuda.X`).
const SUPPORTED_STORAGES: [(&str, DType); 20] = [
    ("torch.DoubleStorage", DType::F64),
    ("torch.FloatStorage", DType::F32),
    ("torch.HalfStorage", DType::F16),
    ("torch.BFloat16Storage", DType::BF16),
    ("torch.LongStorage", DType::I64),
    ("torch.IntStorage", DType::I32),
    ("torch.ShortStorage", DType::I16),
    ("torch.CharStorage", DType::I8),
    ("torch.ByteStorage", DType::U8),
    ("torch.BoolStorage", DType::Bool),
    ("torch.cuda.DoubleStorage", DType::F64),
    ("torch.cuda.FloatStorage", DType::F32),
    ("torch.cuda.HalfStorage", DType::F16),
    ("torch.cuda.BFloat16Storage", DType::BF16),
    ("torch.cuda.LongStorage", DType::I64),
    ("torch.cuda.IntStorage", DType::I32),
    ("torch.cuda.ShortStorage", DType::I16),
    ("torch.cuda.CharStorage", DType::I8),
    ("torch.cuda.ByteStorage", DType::U8),
    ("torch.cuda.BoolStorage", DType::Bool),
];

/// Storage classes that may be named but whose dtype this crate cannot represent.
const UNSUPPORTED_STORAGES: [(&str, usize); 7] = [
    ("torch.ComplexFloatStorage", 8),
    ("torch.ComplexDoubleStorage", 16),
    ("torch.QInt8Storage", 1),
    ("torch.QUInt8Storage", 1),
    ("torch.QInt32Storage", 4),
    ("torch.QUInt4x2Storage", 1),
    ("torch.QUInt2x4Storage", 1),
];

/// `torch.<dtype>` globals of supported dtypes.
const SUPPORTED_DTYPES: [(&str, DType); 16] = [
    ("torch.float64", DType::F64),
    ("torch.double", DType::F64),
    ("torch.float32", DType::F32),
    ("torch.float", DType::F32),
    ("torch.float16", DType::F16),
    ("torch.half", DType::F16),
    ("torch.bfloat16", DType::BF16),
    ("torch.int64", DType::I64),
    ("torch.long", DType::I64),
    ("torch.int32", DType::I32),
    ("torch.int", DType::I32),
    ("torch.int16", DType::I16),
    ("torch.short", DType::I16),
    ("torch.int8", DType::I8),
    ("torch.uint8", DType::U8),
    ("torch.bool", DType::Bool),
];

/// Torch dtypes that may be named (so the error can say which) but cannot be read.
const UNSUPPORTED_DTYPES: [&str; 39] = [
    "torch.uint16",
    "torch.uint32",
    "torch.uint64",
    "torch.complex32",
    "torch.chalf",
    "torch.complex64",
    "torch.cfloat",
    "torch.complex128",
    "torch.cdouble",
    "torch.float8_e4m3fn",
    "torch.float8_e5m2",
    "torch.float8_e4m3fnuz",
    "torch.float8_e5m2fnuz",
    "torch.float8_e8m0fnu",
    "torch.float4_e2m1fn_x2",
    "torch.qint8",
    "torch.quint8",
    "torch.qint32",
    "torch.quint4x2",
    "torch.quint2x4",
    "torch.bits1x8",
    "torch.bits2x4",
    "torch.bits4x2",
    "torch.bits8",
    "torch.bits16",
    "torch.uint1",
    "torch.uint2",
    "torch.uint3",
    "torch.uint4",
    "torch.uint5",
    "torch.uint6",
    "torch.uint7",
    "torch.int1",
    "torch.int2",
    "torch.int3",
    "torch.int4",
    "torch.int5",
    "torch.int6",
    "torch.int7",
];

/// Globals interpreted as data or functions, by `module.name`.
const INTERPRETED: [(&str, Global); 27] = [
    ("collections.OrderedDict", Global::OrderedDict),
    ("collections.defaultdict", Global::DefaultDict),
    ("copyreg._reconstructor", Global::Reconstructor),
    (
        "torch._utils._rebuild_tensor",
        Global::Rebuild(Rebuild::Tensor),
    ),
    (
        "torch._utils._rebuild_tensor_v2",
        Global::Rebuild(Rebuild::TensorV2),
    ),
    (
        "torch._utils._rebuild_tensor_v3",
        Global::Rebuild(Rebuild::TensorV3),
    ),
    (
        "torch._utils._rebuild_parameter",
        Global::Rebuild(Rebuild::Parameter),
    ),
    (
        "torch._utils._rebuild_parameter_with_state",
        Global::Rebuild(Rebuild::ParameterWithState),
    ),
    (
        "torch._tensor._rebuild_from_type_v2",
        Global::Rebuild(Rebuild::FromTypeV2),
    ),
    (
        "torch.UntypedStorage",
        Global::Storage(StorageClass::Untyped),
    ),
    (
        "torch.storage.UntypedStorage",
        Global::Storage(StorageClass::Untyped),
    ),
    ("torch.Size", Global::TorchSize),
    ("torch.device", Global::TorchDevice),
    ("torch.Tensor", Global::TorchTensor),
    ("_codecs.encode", Global::CodecsEncode),
    ("builtins.set", Global::Builtin(Builtin::Set)),
    ("builtins.frozenset", Global::Builtin(Builtin::FrozenSet)),
    ("builtins.slice", Global::Builtin(Builtin::Slice)),
    ("builtins.complex", Global::Builtin(Builtin::Complex)),
    ("builtins.bytearray", Global::Builtin(Builtin::ByteArray)),
    ("builtins.list", Global::Builtin(Builtin::List)),
    ("builtins.dict", Global::Builtin(Builtin::Dict)),
    ("builtins.tuple", Global::Builtin(Builtin::Tuple)),
    ("builtins.int", Global::Builtin(Builtin::Int)),
    ("builtins.float", Global::Builtin(Builtin::Float)),
    ("builtins.str", Global::Builtin(Builtin::Str)),
    ("builtins.bool", Global::Builtin(Builtin::Bool)),
];

/// `builtins.object`: allowed only so `copyreg._reconstructor(cls, object, None)` can name it.
const OBJECT: (&str, Global) = ("builtins.object", Global::Builtin(Builtin::Object));

/// Globals kept as inert opaque objects: read, never interpreted.
const INERT: [&str; 15] = [
    "argparse.Namespace",
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "torch.serialization._get_layout",
    "torch.nn.parameter.Parameter",
    "torch.strided",
    "torch.sparse_coo",
];

/// Python 2 module names that CPython's unpickler maps for protocols < 3 (`fix_imports`).
const PY2_MODULES: [(&str, &str); 2] = [("__builtin__", "builtins"), ("copy_reg", "copyreg")];

fn table() -> &'static HashMap<&'static str, Global> {
    static TABLE: OnceLock<HashMap<&'static str, Global>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = HashMap::new();
        t.extend(INTERPRETED);
        t.insert(OBJECT.0, OBJECT.1);
        t.extend(INERT.map(|n| (n, Global::Inert)));
        t.extend(SUPPORTED_STORAGES.map(|(n, d)| (n, Global::Storage(StorageClass::Typed(d)))));
        t.extend(
            UNSUPPORTED_STORAGES.map(|(n, e)| (n, Global::Storage(StorageClass::Unsupported(e)))),
        );
        t.extend(SUPPORTED_DTYPES.map(|(n, d)| (n, Global::DType(TorchDType::Supported(d)))));
        t.extend(UNSUPPORTED_DTYPES.map(|n| (n, Global::DType(TorchDType::Unsupported))));
        t
    })
}

/// Looks up `module.name`; `None` when it is not allowlisted.
///
/// Returns the global and its canonical `module.name` (Python 2 module names mapped as CPython's
/// `fix_imports` does).
pub(crate) fn lookup(module: &str, name: &str) -> Option<(Global, &'static str)> {
    let module = PY2_MODULES
        .iter()
        .find(|(old, _)| *old == module)
        .map_or(module, |(_, new)| new);
    table()
        .get_key_value(format!("{module}.{name}").as_str())
        .map(|(k, g)| (*g, *k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_refuses_code_execution_globals() {
        for (m, n) in [
            ("posix", "system"),
            ("os", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("__builtin__", "eval"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("torch.cuda", "float32"),
            ("collections", "Counter"),
        ] {
            assert!(lookup(m, n).is_none(), "{m}.{n} must be refused");
        }
    }

    #[test]
    fn allowlist_maps_storages_dtypes_and_py2_names() {
        assert_eq!(
            lookup("torch", "FloatStorage").map(|g| g.0),
            Some(Global::Storage(StorageClass::Typed(DType::F32)))
        );
        assert_eq!(
            lookup("torch.cuda", "HalfStorage").map(|g| g.0),
            Some(Global::Storage(StorageClass::Typed(DType::F16)))
        );
        assert_eq!(
            lookup("torch", "uint16"),
            Some((Global::DType(TorchDType::Unsupported), "torch.uint16"))
        );
        assert_eq!(
            lookup("__builtin__", "set").map(|g| g.0),
            Some(Global::Builtin(Builtin::Set))
        );
        assert_eq!(
            lookup("collections", "OrderedDict"),
            Some((Global::OrderedDict, "collections.OrderedDict"))
        );
    }
}
