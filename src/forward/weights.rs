//! Parameter storage for the forward pass: f32 values borrowed straight from the memory-mapped
//! model file when it stores them as aligned little-endian f32 (the usual safetensors case), so
//! loading copies nothing and peak memory stays near the model's size; converted once into owned
//! buffers otherwise (f16/bf16/f64 weights, misaligned data, sources the model does not own).

use std::borrow::Cow;

use crate::error::{Error, ErrorKind, Result};
use crate::source::TensorSource;
use crate::tensor::{cast_float_checked, DType, Tensor};

/// Where one parameter's values live.
enum Param {
    /// Borrowed from the owned source at each forward: the tensor's name there.
    Mapped(String),
    /// Converted to f32 at load.
    Owned(Vec<f32>),
}

/// A handle to a parameter in [`Weights`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct P(usize);

/// Every parameter of a model, and the source that mapped ones borrow from.
pub(crate) struct Weights {
    src: Option<Box<dyn TensorSource>>,
    borrow: bool,
    params: Vec<Param>,
    lens: Vec<usize>,
}

/// The parameters as slices, for one forward pass.
pub(crate) struct Resolved<'a>(Vec<&'a [f32]>);

impl<'a> Resolved<'a> {
    /// The values of `p` (empty for a handle from another model, which the shapes then reject).
    pub(crate) fn get(&self, p: P) -> &'a [f32] {
        self.0.get(p.0).copied().unwrap_or(&[])
    }
}

/// The bytes of `t` as f32 values borrowed in place, when they already are little-endian f32
/// with f32 alignment.
fn borrowable<'t>(t: &Tensor<'t>) -> Option<&'t [f32]> {
    match (&t.data, t.dtype) {
        (Cow::Borrowed(b), DType::F32) if cfg!(target_endian = "little") => {
            bytemuck::try_cast_slice(b).ok()
        }
        _ => None,
    }
}

/// The values of a float tensor as owned f32.
fn to_f32(name: &str, t: Tensor<'_>) -> Result<Vec<f32>> {
    if !t.dtype.is_float() {
        return Err(Error::from(ErrorKind::UnsupportedDType {
            dtype: t.dtype.name().to_string(),
        })
        .with_tensor(name));
    }
    // An f64 weight beyond the f32 range would silently become ±Inf: refused, naming the tensor.
    let (t, _) = cast_float_checked(t, DType::F32, false).map_err(|e| e.with_tensor(name))?;
    Ok(t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
        .collect())
}

impl Weights {
    /// Empty weights. With `borrow`, f32 tensors are recorded by name to be borrowed from the
    /// source handed to [`Weights::keep_source`] after loading; without, everything is copied.
    pub(crate) fn new(borrow: bool) -> Weights {
        Weights {
            src: None,
            borrow,
            params: Vec::new(),
            lens: Vec::new(),
        }
    }

    /// Keeps the source that borrowed parameters are read from (dropped at once when nothing
    /// was borrowed, unmapping the file).
    pub(crate) fn keep_source(&mut self, src: Box<dyn TensorSource>) {
        if self.params.iter().any(|p| matches!(p, Param::Mapped(_))) {
            self.src = Some(src);
        }
    }

    /// Adds tensor `name` read from `src`: recorded for borrowing when allowed and its bytes
    /// already are aligned little-endian f32, else converted to f32 (and the source's mapped
    /// pages released, so that converting does not keep the file resident too).
    pub(crate) fn add(&mut self, src: &dyn TensorSource, name: &str, t: Tensor<'_>) -> Result<P> {
        let len = t.numel();
        let mapped = self.borrow && borrowable(&t).is_some_and(|v| v.len() == len);
        let param = if mapped {
            Param::Mapped(name.to_string())
        } else {
            let v = to_f32(name, t)?;
            src.release_pages();
            Param::Owned(v)
        };
        self.params.push(param);
        self.lens.push(len);
        Ok(P(self.params.len() - 1))
    }

    /// Bytes held in owned buffers (the rest is borrowed from the mapped file).
    pub(crate) fn owned_bytes(&self) -> usize {
        self.params
            .iter()
            .map(|p| match p {
                Param::Owned(v) => v.len() * 4,
                Param::Mapped(_) => 0,
            })
            .sum()
    }

    /// Every parameter as a slice (mapped ones re-borrowed from the source, without copying).
    ///
    /// # Errors
    /// A source error, or a mapped tensor no longer borrowable as f32 (not expected: the source is
    /// immutable once parsed).
    pub(crate) fn resolve(&self) -> Result<Resolved<'_>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (p, &len) in self.params.iter().zip(&self.lens) {
            let s: &[f32] = match p {
                Param::Owned(v) => v,
                Param::Mapped(name) => {
                    let src = self
                        .src
                        .as_deref()
                        .ok_or_else(|| ErrorKind::TensorNotFound { name: name.clone() })?;
                    let t = src.read(name).map_err(|e| e.with_tensor(name.clone()))?;
                    borrowable(&t).filter(|v| v.len() == len).ok_or_else(|| {
                        Error::from(ErrorKind::InvalidLayout {
                            reason: "mapped f32 data is no longer borrowable".into(),
                        })
                        .with_tensor(name.clone())
                    })?
                }
            };
            out.push(s);
        }
        Ok(Resolved(out))
    }
}
