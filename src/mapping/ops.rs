//! The closed op set a mapping rule may use. Every op checks shapes; all are pure and exact
//! (they move bytes, never change values), so every op has an exact inverse.

use std::borrow::Cow;
use std::fmt;

use super::dims::{Bindings, Dim};
use crate::source::MAX_RANK;
use crate::tensor::{checked_numel, gather_strided, Tensor};

/// An op as written in a table, with symbolic dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpSpec {
    /// `transpose(p0, p1, …)`: output axis k is input axis p_k.
    Transpose(Vec<usize>),
    /// `reshape(d0, d1, …)`: same elements, new shape.
    Reshape(Vec<Dim>),
    /// `split(axis, parts)`: equal parts along an axis (one input → `parts` outputs).
    Split { axis: usize, parts: usize },
    /// `concat(axis)`: all inputs joined along an axis (many inputs → one output).
    Concat { axis: usize },
    /// `squeeze(axis)`: drop a size-1 axis.
    Squeeze(usize),
    /// `unsqueeze(axis)`: insert a size-1 axis.
    Unsqueeze(usize),
    /// `prepend_zeros(axis, n)`: n zero slices before the data along an axis (a class-token row
    /// for position embeddings that had none).
    PrependZeros { axis: usize, n: usize },
    /// `drop_zeros(axis, n)`: remove n leading slices, which must be zero (else an error).
    DropZeros { axis: usize, n: usize },
}

/// An op with concrete dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Transpose(Vec<usize>),
    Reshape(Vec<usize>),
    Split {
        axis: usize,
        parts: usize,
    },
    /// Parts of the given sizes along an axis: the inverse of a `concat` whose inputs differ in
    /// size along it (a rule with `shapes`). Internal: tables cannot write it.
    SplitAt {
        axis: usize,
        sizes: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    Squeeze(usize),
    Unsqueeze(usize),
    PrependZeros {
        axis: usize,
        n: usize,
    },
    DropZeros {
        axis: usize,
        n: usize,
    },
}

impl OpSpec {
    /// Parses `name(arg, …)`.
    pub(crate) fn parse(text: &str) -> Result<OpSpec, String> {
        let text = text.trim();
        let (name, rest) = text
            .split_once('(')
            .ok_or_else(|| format!("op `{text}`: expected name(args)"))?;
        let args = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("op `{text}`: missing `)`"))?;
        let args: Vec<&str> = if args.trim().is_empty() {
            Vec::new()
        } else {
            args.split(',').map(str::trim).collect()
        };
        let int = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("op `{text}`: `{s}` is not a non-negative integer"))
        };
        let want = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "op `{text}`: expected {n} argument(s), got {}",
                    args.len()
                ))
            }
        };
        if args.len() > MAX_RANK {
            return Err(format!(
                "op `{name}(…)`: {} arguments (at most {MAX_RANK})",
                args.len()
            ));
        }
        match name.trim() {
            "transpose" => {
                let perm = args.iter().map(|a| int(a)).collect::<Result<Vec<_>, _>>()?;
                let mut seen = perm.clone();
                seen.sort_unstable();
                if perm.is_empty() || seen != (0..perm.len()).collect::<Vec<_>>() {
                    return Err(format!("op `{text}`: not a permutation"));
                }
                Ok(OpSpec::Transpose(perm))
            }
            "reshape" => {
                if args.is_empty() {
                    return Err(format!("op `{text}`: reshape needs dimensions"));
                }
                let dims = args
                    .iter()
                    .map(|a| Dim::parse(a))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(OpSpec::Reshape(dims))
            }
            "split" => {
                want(2)?;
                let parts = int(args[1])?;
                if parts < 2 {
                    return Err(format!("op `{text}`: split needs at least 2 parts"));
                }
                Ok(OpSpec::Split {
                    axis: int(args[0])?,
                    parts,
                })
            }
            "concat" => {
                want(1)?;
                Ok(OpSpec::Concat {
                    axis: int(args[0])?,
                })
            }
            "squeeze" => {
                want(1)?;
                Ok(OpSpec::Squeeze(int(args[0])?))
            }
            "unsqueeze" => {
                want(1)?;
                Ok(OpSpec::Unsqueeze(int(args[0])?))
            }
            "prepend_zeros" | "drop_zeros" => {
                want(2)?;
                let (axis, n) = (int(args[0])?, int(args[1])?);
                if n == 0 {
                    return Err(format!("op `{text}`: n must be at least 1"));
                }
                Ok(if name.trim() == "prepend_zeros" {
                    OpSpec::PrependZeros { axis, n }
                } else {
                    OpSpec::DropZeros { axis, n }
                })
            }
            other => Err(format!(
                "unknown op `{other}` (ops: transpose, reshape, split, concat, squeeze, unsqueeze, prepend_zeros, drop_zeros)"
            )),
        }
    }

    /// Resolves symbolic dimensions.
    pub(crate) fn resolve(&self, b: &Bindings) -> Result<Op, String> {
        Ok(match self {
            OpSpec::Transpose(p) => Op::Transpose(p.clone()),
            OpSpec::Reshape(dims) => Op::Reshape(
                dims.iter()
                    .map(|d| {
                        d.eval(b)
                            .ok_or_else(|| format!("reshape dimension `{d}` is not bound"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            OpSpec::Split { axis, parts } => Op::Split {
                axis: *axis,
                parts: *parts,
            },
            OpSpec::Concat { axis } => Op::Concat { axis: *axis },
            OpSpec::Squeeze(a) => Op::Squeeze(*a),
            OpSpec::Unsqueeze(a) => Op::Unsqueeze(*a),
            OpSpec::PrependZeros { axis, n } => Op::PrependZeros { axis: *axis, n: *n },
            OpSpec::DropZeros { axis, n } => Op::DropZeros { axis: *axis, n: *n },
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[usize]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Op::Transpose(p) => write!(f, "transpose({})", list(p)),
            Op::Reshape(d) => write!(f, "reshape({})", list(d)),
            Op::Split { axis, parts } => write!(f, "split({axis}, {parts})"),
            Op::SplitAt { axis, sizes } => write!(f, "split_at({axis}, [{}])", list(sizes)),
            Op::Concat { axis } => write!(f, "concat({axis})"),
            Op::Squeeze(a) => write!(f, "squeeze({a})"),
            Op::Unsqueeze(a) => write!(f, "unsqueeze({a})"),
            Op::PrependZeros { axis, n } => write!(f, "prepend_zeros({axis}, {n})"),
            Op::DropZeros { axis, n } => write!(f, "drop_zeros({axis}, {n})"),
        }
    }
}

impl Op {
    /// Output shapes for the given input shapes, or why the op does not apply (including an
    /// output whose element count overflows).
    pub(crate) fn out_shapes(&self, inputs: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, String> {
        let outs = self.out_shapes_unchecked(inputs)?;
        if let Some(big) = outs.iter().find(|s| checked_numel(s).is_none()) {
            return Err(format!("{self}: output shape {big:?} overflows"));
        }
        Ok(outs)
    }

    fn out_shapes_unchecked(&self, inputs: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, String> {
        let single = || match inputs {
            [one] => Ok(one),
            _ => Err(format!("{self} takes one input, got {}", inputs.len())),
        };
        match self {
            Op::Transpose(p) => {
                let s = single()?;
                if p.len() != s.len() {
                    return Err(format!("{self} on a rank-{} tensor", s.len()));
                }
                Ok(vec![p.iter().map(|&k| s[k]).collect()])
            }
            Op::Reshape(to) => {
                let s = single()?;
                if checked_numel(s).is_none() || checked_numel(s) != checked_numel(to) {
                    return Err(format!("{self} of shape {s:?} changes the element count"));
                }
                Ok(vec![to.clone()])
            }
            Op::Split { axis, parts } => {
                let s = single()?;
                let len = *s
                    .get(*axis)
                    .ok_or_else(|| format!("{self} on a rank-{} tensor", s.len()))?;
                if len.checked_rem(*parts) != Some(0) {
                    return Err(format!(
                        "{self}: axis length {len} is not divisible by {parts}"
                    ));
                }
                let mut part = s.clone();
                part[*axis] = len / parts;
                Ok(vec![part; *parts])
            }
            Op::SplitAt { axis, sizes } => {
                let s = single()?;
                let len = *s
                    .get(*axis)
                    .ok_or_else(|| format!("{self} on a rank-{} tensor", s.len()))?;
                if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(len) {
                    return Err(format!("{self}: axis length {len} is not the sizes' sum"));
                }
                Ok(sizes
                    .iter()
                    .map(|&n| {
                        let mut part = s.clone();
                        part[*axis] = n;
                        part
                    })
                    .collect())
            }
            Op::Concat { axis } => {
                let first = inputs
                    .first()
                    .ok_or_else(|| format!("{self} with no inputs"))?;
                if *axis >= first.len() {
                    return Err(format!("{self} on a rank-{} tensor", first.len()));
                }
                let mut out = first.clone();
                out[*axis] = 0;
                for s in inputs {
                    let same_other = s.len() == first.len()
                        && s.iter()
                            .zip(first)
                            .enumerate()
                            .all(|(k, (a, b))| k == *axis || a == b);
                    if !same_other {
                        return Err(format!("{self}: shapes {first:?} and {s:?} do not line up"));
                    }
                    out[*axis] = out[*axis]
                        .checked_add(s[*axis])
                        .ok_or_else(|| format!("{self}: size overflow"))?;
                }
                Ok(vec![out])
            }
            Op::Squeeze(a) => {
                let s = single()?;
                if s.get(*a) != Some(&1) {
                    return Err(format!("{self} of shape {s:?}: axis is not of size 1"));
                }
                let mut out = s.clone();
                out.remove(*a);
                Ok(vec![out])
            }
            Op::Unsqueeze(a) => {
                let s = single()?;
                if *a > s.len() {
                    return Err(format!("{self} on a rank-{} tensor", s.len()));
                }
                let mut out = s.clone();
                out.insert(*a, 1);
                Ok(vec![out])
            }
            Op::PrependZeros { axis, n } | Op::DropZeros { axis, n } => {
                let s = single()?;
                let len = *s
                    .get(*axis)
                    .ok_or_else(|| format!("{self} on a rank-{} tensor", s.len()))?;
                let mut out = s.clone();
                out[*axis] = if matches!(self, Op::PrependZeros { .. }) {
                    len.checked_add(*n)
                        .ok_or_else(|| format!("{self}: size overflow"))?
                } else {
                    len.checked_sub(*n)
                        .ok_or_else(|| format!("{self}: axis has only {len} slices"))?
                };
                Ok(vec![out])
            }
        }
    }

    /// The inverse op, given the input shapes this op was applied to.
    pub(crate) fn inverse(&self, inputs: &[Vec<usize>]) -> Op {
        match self {
            Op::Transpose(p) => {
                let mut inv = vec![0; p.len()];
                for (k, &pk) in p.iter().enumerate() {
                    if let Some(slot) = inv.get_mut(pk) {
                        *slot = k;
                    }
                }
                Op::Transpose(inv)
            }
            Op::Reshape(_) => Op::Reshape(inputs.first().cloned().unwrap_or_default()),
            Op::Split { axis, .. } | Op::SplitAt { axis, .. } => Op::Concat { axis: *axis },
            Op::Concat { axis } => {
                let sizes: Vec<usize> = inputs
                    .iter()
                    .map(|s| s.get(*axis).copied().unwrap_or(0))
                    .collect();
                if sizes.windows(2).all(|w| w[0] == w[1]) {
                    Op::Split {
                        axis: *axis,
                        parts: inputs.len(),
                    }
                } else {
                    Op::SplitAt { axis: *axis, sizes }
                }
            }
            Op::Squeeze(a) => Op::Unsqueeze(*a),
            Op::Unsqueeze(a) => Op::Squeeze(*a),
            Op::PrependZeros { axis, n } => Op::DropZeros { axis: *axis, n: *n },
            Op::DropZeros { axis, n } => Op::PrependZeros { axis: *axis, n: *n },
        }
    }

    /// Applies the op. For `split`, only output `want` is produced (the others are not needed).
    pub(crate) fn apply<'a>(
        &self,
        inputs: Vec<Tensor<'a>>,
        want: usize,
    ) -> Result<Tensor<'a>, String> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        let mut outs = self.out_shapes(&shapes)?;
        let out_shape = if want < outs.len() {
            outs.swap_remove(want)
        } else {
            return Err(format!("{self}: no output {want}"));
        };
        let dtype = match inputs.first() {
            Some(t) => t.dtype,
            None => return Err(format!("{self} with no inputs")),
        };
        if inputs.iter().any(|t| t.dtype != dtype) {
            return Err(format!("{self}: inputs have different dtypes"));
        }
        // Nothing in, nothing out: answered here, because the copy loops below run once per
        // outer index, and a shape like [2^60, 4, 0] has 2^60 of them and no bytes at all.
        if checked_numel(&out_shape) == Some(0) && inputs.iter().all(|t| t.data.is_empty()) {
            return Tensor::new(dtype, out_shape, Cow::Borrowed(&[]))
                .map_err(|e| format!("{self}: {e}"));
        }
        let elem = dtype.size();
        let mut inputs = inputs;
        let data: Cow<'a, [u8]> = match self {
            Op::Reshape(_) | Op::Squeeze(_) | Op::Unsqueeze(_) => inputs.swap_remove(0).data,
            Op::Transpose(p) => {
                let t = &inputs[0];
                let strides = c_strides(&t.shape);
                let view_strides: Vec<usize> = p.iter().map(|&k| strides[k]).collect();
                Cow::Owned(
                    gather_strided(&t.data, elem, &out_shape, &view_strides, 0)
                        .ok_or_else(|| format!("{self}: data shorter than shape"))?,
                )
            }
            Op::Split { axis, .. } | Op::SplitAt { axis, .. } => {
                let t = inputs.swap_remove(0);
                let (outer, len, inner) = axis_split(&t.shape, *axis, elem)?;
                // Output `want` is `part` slices along the axis from slice `first`.
                let (first, part) = match self {
                    Op::SplitAt { sizes, .. } => (
                        sizes.get(..want).map_or(0, |s| s.iter().sum()),
                        sizes.get(want).copied().unwrap_or(0),
                    ),
                    Op::Split { parts, .. } => {
                        let part = len.checked_div(*parts).ok_or_else(|| overflow(self))?;
                        (mul(self, want, part)?, part)
                    }
                    _ => return Err(format!("{self}: not a split")),
                };
                let block = mul(self, part, inner)?;
                let start = mul(self, first, inner)?;
                let end = start.checked_add(block).ok_or_else(|| overflow(self))?;
                let short = || format!("{self}: data shorter than shape");
                if outer == 1 {
                    match t.data {
                        Cow::Borrowed(b) => Cow::Borrowed(b.get(start..end).ok_or_else(short)?),
                        Cow::Owned(v) => Cow::Owned(v.get(start..end).ok_or_else(short)?.to_vec()),
                    }
                } else {
                    let row = mul(self, len, inner)?;
                    let mut out = Vec::with_capacity(mul(self, outer, block)?);
                    for o in 0..outer {
                        let base = mul(self, o, row)?
                            .checked_add(start)
                            .ok_or_else(|| overflow(self))?;
                        let stop = base.checked_add(block).ok_or_else(|| overflow(self))?;
                        out.extend_from_slice(t.data.get(base..stop).ok_or_else(short)?);
                    }
                    Cow::Owned(out)
                }
            }
            Op::PrependZeros { axis, n } => {
                let t = &inputs[0];
                let (outer, len, inner) = axis_split(&t.shape, *axis, elem)?;
                let row = mul(self, len, inner)?;
                let pad = mul(self, *n, inner)?;
                let cap = mul(self, outer, pad)?
                    .checked_add(t.data.len())
                    .ok_or_else(|| overflow(self))?;
                if checked_numel(&out_shape).and_then(|k| k.checked_mul(elem)) != Some(cap) {
                    return Err(format!("{self}: data does not match its shape"));
                }
                let mut out = Vec::with_capacity(cap);
                for o in 0..outer {
                    out.resize(out.len() + pad, 0);
                    let base = mul(self, o, row)?;
                    out.extend_from_slice(
                        t.data
                            .get(base..base.saturating_add(row))
                            .ok_or_else(|| format!("{self}: data shorter than shape"))?,
                    );
                }
                Cow::Owned(out)
            }
            Op::DropZeros { axis, n } => {
                let t = &inputs[0];
                let (outer, len, inner) = axis_split(&t.shape, *axis, elem)?;
                let row = mul(self, len, inner)?;
                let dropped_len = mul(self, *n, inner)?;
                let mut out =
                    Vec::with_capacity(t.data.len().saturating_sub(mul(self, outer, dropped_len)?));
                for o in 0..outer {
                    let base = mul(self, o, row)?;
                    let block = t
                        .data
                        .get(base..base.saturating_add(row))
                        .ok_or_else(|| format!("{self}: data shorter than shape"))?;
                    let (dropped, kept) = block
                        .split_at_checked(dropped_len)
                        .ok_or_else(|| format!("{self}: axis has only {len} slices"))?;
                    if dropped.iter().any(|&b| b != 0) {
                        return Err(format!(
                            "{self}: the leading slices are not zero, so this layout cannot hold them exactly"
                        ));
                    }
                    out.extend_from_slice(kept);
                }
                Cow::Owned(out)
            }
            Op::Concat { axis } => {
                let (outer, _, _) = axis_split(&inputs[0].shape, *axis, elem)?;
                let total = inputs
                    .iter()
                    .try_fold(0usize, |acc, t| acc.checked_add(t.data.len()))
                    .ok_or_else(|| overflow(self))?;
                let mut out = Vec::with_capacity(total);
                for o in 0..outer {
                    for t in &inputs {
                        let (_, len, inner) = axis_split(&t.shape, *axis, elem)?;
                        let block = mul(self, len, inner)?;
                        let base = mul(self, o, block)?;
                        out.extend_from_slice(
                            t.data
                                .get(base..base.saturating_add(block))
                                .ok_or_else(|| format!("{self}: data shorter than shape"))?,
                        );
                    }
                }
                Cow::Owned(out)
            }
        };
        Tensor::new(dtype, out_shape, data).map_err(|e| format!("{self}: {e}"))
    }
}

fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1].saturating_mul(shape[k + 1]);
    }
    strides
}

/// (product of dims before `axis`, dim at `axis`, bytes per step along `axis`), or why not
/// (an axis past the rank, a product that overflows).
fn axis_split(shape: &[usize], axis: usize, elem: usize) -> Result<(usize, usize, usize), String> {
    let bad = || format!("axis {axis} of shape {shape:?}: size overflow or no such axis");
    let len = *shape.get(axis).ok_or_else(bad)?;
    let outer = checked_numel(shape.get(..axis).ok_or_else(bad)?).ok_or_else(bad)?;
    let inner = shape
        .get(axis + 1..)
        .and_then(checked_numel)
        .and_then(|k| k.checked_mul(elem))
        .ok_or_else(bad)?;
    Ok((outer, len, inner))
}

fn overflow(op: &Op) -> String {
    format!("{op}: size overflow")
}

fn mul(op: &Op, a: usize, b: usize) -> Result<usize, String> {
    a.checked_mul(b).ok_or_else(|| overflow(op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn u8t(shape: &[usize], data: Vec<u8>) -> Tensor<'static> {
        Tensor::new(DType::U8, shape.to_vec(), Cow::Owned(data)).unwrap()
    }

    #[test]
    fn parse_accepts_the_closed_set_only() {
        assert_eq!(
            OpSpec::parse("transpose(1, 0)").unwrap(),
            OpSpec::Transpose(vec![1, 0])
        );
        assert_eq!(
            OpSpec::parse("split(0,3)").unwrap(),
            OpSpec::Split { axis: 0, parts: 3 }
        );
        assert!(OpSpec::parse("transpose(0, 0)").is_err());
        assert!(OpSpec::parse("scale(2)").is_err());
        assert!(OpSpec::parse("split(0, 1)").is_err());
    }

    #[test]
    fn split_of_rows_borrows_and_split_of_columns_copies() {
        let data: Vec<u8> = (0..12).collect();
        let t = Tensor::new(DType::U8, vec![6, 2], Cow::Borrowed(&data[..])).unwrap();
        let mid = Op::Split { axis: 0, parts: 3 }.apply(vec![t], 1).unwrap();
        assert!(matches!(mid.data, Cow::Borrowed(_)));
        assert_eq!(&mid.data[..], &[4, 5, 6, 7]);
        let cols = Op::Split { axis: 1, parts: 2 }
            .apply(vec![u8t(&[3, 2], (0..6).collect())], 1)
            .unwrap();
        assert_eq!(&cols.data[..], &[1, 3, 5]);
    }

    #[test]
    fn concat_inverts_split() {
        let t = u8t(&[2, 6], (0..12).collect());
        let parts: Vec<_> = (0..3)
            .map(|k| {
                Op::Split { axis: 1, parts: 3 }
                    .apply(vec![t.clone()], k)
                    .unwrap()
            })
            .collect();
        let back = Op::Concat { axis: 1 }.apply(parts, 0).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn transpose_and_its_inverse_round_trip() {
        let t = u8t(&[2, 3, 4], (0..24).collect());
        let op = Op::Transpose(vec![2, 0, 1]);
        let moved = op.apply(vec![t.clone()], 0).unwrap();
        assert_eq!(moved.shape, vec![4, 2, 3]);
        assert_eq!(moved.data[1], 4); // out[0,0,1] = in[0,1,0] = 1*4
        let inv = op.inverse(std::slice::from_ref(&t.shape));
        assert_eq!(inv.apply(vec![moved], 0).unwrap(), t);
    }

    #[test]
    fn reshape_refuses_a_different_element_count() {
        let t = u8t(&[2, 3], vec![0; 6]);
        assert!(Op::Reshape(vec![7]).apply(vec![t], 0).is_err());
    }

    #[test]
    fn prepend_zeros_round_trips_and_drop_refuses_nonzero() {
        let t = u8t(&[1, 2, 2], vec![1, 2, 3, 4]);
        let op = Op::PrependZeros { axis: 1, n: 1 };
        let padded = op.apply(vec![t.clone()], 0).unwrap();
        assert_eq!(padded.shape, vec![1, 3, 2]);
        assert_eq!(&padded.data[..], &[0, 0, 1, 2, 3, 4]);
        let inv = op.inverse(std::slice::from_ref(&t.shape));
        assert_eq!(inv.apply(vec![padded], 0).unwrap(), t);
        let e = inv.apply(vec![t], 0).unwrap_err();
        assert!(e.contains("not zero"), "{e}");
    }

    #[test]
    fn squeeze_checks_the_axis_is_one() {
        assert!(Op::Squeeze(0).out_shapes(&[vec![2, 1]]).is_err());
        assert_eq!(
            Op::Squeeze(1).out_shapes(&[vec![2, 1]]).unwrap(),
            vec![vec![2]]
        );
    }
}
