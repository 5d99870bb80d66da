//! What can go wrong when a mapping table meets a checkpoint: [`MappingError`], carried by
//! [`ErrorKind::Mapping`](crate::ErrorKind::Mapping) with the table's file and the rule's line.

use std::fmt;

use super::Architecture;
use super::DType;

/// How many further names an [`MappingError::Unconsumed`] message shows after the first.
const PREVIEW: usize = 4;

/// A mapping table that does not fit a checkpoint. Each variant carries the names and shapes
/// that did not fit; [`ErrorKind::Mapping`](crate::ErrorKind::Mapping) adds the table's file and
/// the rule's line.
///
/// ```
/// use std::borrow::Cow;
/// use vit_convert::mapping::MappingError;
/// use vit_convert::source::MemorySource;
/// use vit_convert::tensor::Tensor;
/// use vit_convert::{DType, ErrorKind, MappingTable};
/// let mut src = MemorySource::new();
/// src.insert("stray", Tensor::new(DType::F32, vec![1], Cow::Owned(vec![0; 4]))?)?;
/// let table = MappingTable::builtin("timm")?;
/// let err = table.apply(&src).err().unwrap();
/// match err.kind() {
///     ErrorKind::Mapping { problem: MappingError::Unconsumed { names }, .. } => {
///         assert_eq!(names, &["stray".to_string()]);
///     }
///     other => panic!("{other}"),
/// }
/// # Ok::<(), vit_convert::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingError {
    /// Source tensors that no rule consumes and the table does not ignore: every one of them,
    /// in source order (the message shows the first few).
    Unconsumed {
        /// The unconsumed names, as the checkpoint spells them.
        names: Vec<String>,
    },
    /// Two source names that become the same name once the table's prefixes are stripped.
    StripCollision {
        /// The first name.
        first: String,
        /// The second name.
        second: String,
        /// What both become.
        stripped: String,
    },
    /// A rule's input that the checkpoint lacks, although another input of the rule is present.
    InputMissing {
        /// The present tensor that needs it.
        needed_by: String,
        /// The missing tensor.
        missing: String,
    },
    /// A source tensor that two rules consume, in either direction (`also_line` is the other
    /// rule's line; the engine always knows it, `None` is kept for callers that build one).
    ConsumedTwice {
        /// The tensor.
        source: String,
        /// The other rule's line, when known.
        also_line: Option<usize>,
    },
    /// A target tensor that two rules produce.
    ProducedTwice {
        /// The target name.
        target: String,
        /// The line of the rule that produced it first.
        also_line: usize,
    },
    /// A source tensor that a required (not optional) rule needs is absent.
    RequiredMissing {
        /// The source tensor the rule names.
        tensor: String,
    },
    /// A canonical tensor that a required rule needs is absent (reverse direction).
    CanonicalMissing {
        /// The canonical tensor.
        tensor: String,
    },
    /// The layer indices found are not `0, 1, …, max`.
    LayerGap {
        /// The first missing layer.
        missing: usize,
        /// The largest layer index found.
        found_up_to: usize,
    },
    /// A per-layer tensor absent from one layer while other layers have it.
    LayerTensorMissing {
        /// The missing tensor (the rule's pattern rendered for that layer).
        tensor: String,
    },
    /// A tensor whose shape contradicts the table's symbolic shape (or the shapes bound earlier).
    ShapeContradiction {
        /// The tensor.
        tensor: String,
        /// The table's shape, as written (`[D, M]`).
        expected: String,
        /// The tensor's shape.
        actual: Vec<usize>,
    },
    /// A tensor whose shape differs from what the rule's ops produce (reverse direction).
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// The shape the rule expects.
        expected: Vec<usize>,
        /// The tensor's shape.
        actual: Vec<usize>,
    },
    /// A symbolic dimension that no tensor binds.
    UnboundDimension {
        /// The dimension expression.
        dim: String,
        /// The tensor whose shape needed it, if any (`None`: reverse direction).
        tensor: Option<String>,
    },
    /// A rule's inputs of different dtypes.
    DTypeMismatch {
        /// The first input.
        first: String,
        /// Its dtype.
        first_dtype: DType,
        /// An input of another dtype.
        other: String,
        /// That input's dtype.
        other_dtype: DType,
    },
    /// A rule's op that does not apply to the shapes it gets (a split that does not divide, a
    /// reshape that changes the element count, a size that overflows, …).
    Op {
        /// What the op found.
        reason: String,
    },
    /// A tensor the table rejects: the checkpoint uses a feature that the HF ViT/DeiT layout
    /// cannot represent (layer scale, average pooling, …).
    Rejected {
        /// The feature, as the table names it.
        feature: String,
        /// The tensor that revealed it.
        tensor: String,
    },
    /// A required tensor is missing, and its absence means a feature the target cannot represent
    /// (no `cls_token`: global average pooling without a class token).
    Absent {
        /// The feature, as the table names it.
        feature: String,
        /// The missing tensor.
        tensor: String,
    },
    /// A canonical tensor the target layout has no place for (reverse direction).
    NoPlace {
        /// The table's id (the layout).
        layout: String,
        /// The tensor.
        tensor: String,
    },
    /// The checkpoint lacks a tensor that its architecture requires.
    ArchitectureLacks {
        /// The architecture.
        architecture: Architecture,
        /// The missing canonical tensor.
        tensor: String,
    },
    /// The checkpoint holds a tensor its architecture has no place for.
    ArchitectureExtra {
        /// The architecture.
        architecture: Architecture,
        /// The extra canonical tensor.
        tensor: String,
    },
    /// A stored buffer that the model's geometry implies (BEiT's `relative_position_index`) has
    /// another shape or element type than that geometry gives.
    BufferLayout {
        /// The buffer (source name).
        tensor: String,
        /// Its dtype.
        dtype: DType,
        /// Its shape.
        shape: Vec<usize>,
        /// The shape the geometry gives (integer elements).
        expected: Vec<usize>,
    },
    /// A tensor the layout requires to be all zeros is not a floating-point tensor.
    BufferNotFloat {
        /// The tensor (source name).
        tensor: String,
        /// Its dtype.
        dtype: DType,
    },
    /// A tensor the layout requires to be zero (one the target has no place for) is not.
    BufferNotZero {
        /// The tensor (source name).
        tensor: String,
        /// Where (row-major index per axis).
        at: Vec<usize>,
        /// The value found, as printed.
        value: String,
    },
    /// A stored buffer that the model's geometry implies holds another value than the geometry
    /// gives: the checkpoint was made for another geometry, or altered.
    BufferMismatch {
        /// The buffer (source name).
        tensor: String,
        /// Where (row-major index per axis).
        at: Vec<usize>,
        /// The value the geometry gives.
        expected: i64,
        /// The stored value.
        found: i64,
    },
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingError::Unconsumed { names } => {
                write!(f, "no rule consumes source tensor ")?;
                let Some((first, rest)) = names.split_first() else {
                    return write!(f, "(none)");
                };
                write!(f, "{first}")?;
                if !rest.is_empty() {
                    let shown: Vec<&str> = rest.iter().take(PREVIEW).map(String::as_str).collect();
                    let tail = if rest.len() > PREVIEW { ", …" } else { "" };
                    write!(f, " (and {} more: {}{tail})", rest.len(), shown.join(", "))?;
                }
                Ok(())
            }
            MappingError::StripCollision {
                first,
                second,
                stripped,
            } => write!(
                f,
                "{first} and {second} both become {stripped} after stripping prefixes"
            ),
            MappingError::InputMissing { needed_by, missing } => {
                write!(f, "{needed_by} needs {missing}, which is missing")
            }
            MappingError::ConsumedTwice {
                source,
                also_line: Some(l),
            } => write!(f, "{source} is consumed by two rules (also line {l})"),
            MappingError::ConsumedTwice {
                source,
                also_line: None,
            } => write!(f, "{source} is consumed twice"),
            MappingError::ProducedTwice { target, also_line } => {
                write!(
                    f,
                    "target {target} is produced twice (also line {also_line})"
                )
            }
            MappingError::RequiredMissing { tensor } => {
                write!(f, "required source tensor {tensor} is missing")
            }
            MappingError::CanonicalMissing { tensor } => {
                write!(f, "canonical tensor {tensor} is missing")
            }
            MappingError::LayerGap {
                missing,
                found_up_to,
            } => write!(
                f,
                "layer indices have a gap: layer {missing} is missing (found up to {found_up_to})"
            ),
            MappingError::LayerTensorMissing { tensor } => {
                write!(f, "source tensor {tensor} is missing")
            }
            MappingError::ShapeContradiction {
                tensor,
                expected,
                actual,
            } => write!(
                f,
                "{tensor} has shape {actual:?}, which contradicts the table's {expected}"
            ),
            MappingError::ShapeMismatch {
                tensor,
                expected,
                actual,
            } => write!(f, "{tensor} has shape {actual:?}, expected {expected:?}"),
            MappingError::UnboundDimension {
                dim,
                tensor: Some(t),
            } => write!(f, "cannot determine dimension `{dim}` of {t}"),
            MappingError::UnboundDimension { dim, tensor: None } => {
                write!(
                    f,
                    "dimension `{dim}` is not known for the reverse direction"
                )
            }
            MappingError::DTypeMismatch {
                first,
                first_dtype,
                other,
                other_dtype,
            } => write!(f, "{other} is {other_dtype} but {first} is {first_dtype}"),
            MappingError::Op { reason } => write!(f, "{reason}"),
            MappingError::Rejected { feature, tensor } => write!(
                f,
                "unsupported architecture: {feature} (found {tensor}); the Hugging Face target \
                 cannot represent it, refusing rather than dropping it"
            ),
            MappingError::Absent { feature, tensor } => write!(
                f,
                "unsupported architecture: {feature} (no {tensor}); the Hugging Face target \
                 cannot represent it"
            ),
            MappingError::NoPlace { layout, tensor } => {
                write!(f, "the {layout} layout has no place for {tensor}")
            }
            MappingError::ArchitectureLacks {
                architecture,
                tensor,
            } => write!(
                f,
                "the checkpoint lacks {tensor}, which {} requires",
                architecture.name()
            ),
            MappingError::ArchitectureExtra {
                architecture,
                tensor,
            } => write!(f, "{tensor} has no place in {}", architecture.name()),
            MappingError::BufferLayout {
                tensor,
                dtype,
                shape,
                expected,
            } => write!(
                f,
                "{tensor} is {dtype} {shape:?}; the model's geometry gives an integer {expected:?}"
            ),
            MappingError::BufferNotFloat { tensor, dtype } => write!(
                f,
                "{tensor} is {dtype}; the layout holds it as floating-point zeros"
            ),
            MappingError::BufferNotZero { tensor, at, value } => write!(
                f,
                "{tensor} holds {value} at {at:?}: the target has no place for it, so only an all-zero {tensor} (which adds nothing) converts"
            ),
            MappingError::BufferMismatch {
                tensor,
                at,
                expected,
                found,
            } => write!(
                f,
                "{tensor} holds {found} at {at:?} where the model's geometry gives {expected}: the buffer was made for another geometry or altered"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconsumed_keeps_every_name_and_shows_a_preview() {
        let names: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
        let e = MappingError::Unconsumed {
            names: names.clone(),
        };
        assert_eq!(
            e.to_string(),
            "no rule consumes source tensor t0 (and 29 more: t1, t2, t3, t4, …)"
        );
        assert!(matches!(e, MappingError::Unconsumed { names: n } if n == names));
    }
}
