//! `--dtype`: a [`TensorSource`] that casts floating-point tensors as they are read, refusing
//! (unless allowed) a cast that turns finite values into ±Inf or NaN, and counting what it did.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::error::Result;
use crate::source::{Format, TensorSource};
use crate::tensor::{cast_float_checked, CastDamage, DType, Tensor, TensorInfo};

/// `inner` with every float tensor cast to `to` (integers and bools unchanged).
pub(crate) struct Casting<'a> {
    inner: &'a dyn TensorSource,
    to: DType,
    allow_overflow: bool,
    infos: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    /// Total damage, and the number of tensors with any.
    tally: Mutex<(CastDamage, usize)>,
}

impl<'a> Casting<'a> {
    pub(crate) fn new(inner: &'a dyn TensorSource, to: DType, allow_overflow: bool) -> Self {
        let infos = inner
            .tensors()
            .iter()
            .map(|t| TensorInfo {
                dtype: if t.dtype.is_float() && to.is_float() {
                    to
                } else {
                    t.dtype
                },
                ..t.clone()
            })
            .collect::<Vec<_>>();
        let index = infos
            .iter()
            .enumerate()
            .map(|(k, t)| (t.name.clone(), k))
            .collect();
        Casting {
            inner,
            to,
            allow_overflow,
            infos,
            index,
            tally: Mutex::new((CastDamage::default(), 0)),
        }
    }

    /// What the casts so far did to finite values, and in how many tensors.
    pub(crate) fn damage(&self) -> (CastDamage, usize) {
        match self.tally.lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The report note for saturated values, if any.
    pub(crate) fn note(&self) -> Option<String> {
        let (d, tensors) = self.damage();
        (d.overflowed > 0).then(|| {
            format!(
                "option `allow_overflow`: {} finite values in {tensors} tensors became ±Inf casting to {} (largest magnitude {:e}), as torch's .half() does",
                d.overflowed, self.to, d.max_abs
            )
        })
    }
}

impl TensorSource for Casting<'_> {
    fn format(&self) -> Format {
        self.inner.format()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        let t = self.inner.read(name)?;
        let (t, damage) =
            cast_float_checked(t, self.to, self.allow_overflow).map_err(|e| e.with_tensor(name))?;
        if damage.overflowed > 0 {
            let mut tally = match self.tally.lock() {
                Ok(t) => t,
                Err(poisoned) => poisoned.into_inner(),
            };
            tally.0.add(damage);
            tally.1 += 1;
        }
        Ok(t)
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(*self.index.get(name)?)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner.metadata()
    }

    fn notes(&self) -> &[String] {
        self.inner.notes()
    }

    fn release_pages(&self) {
        self.inner.release_pages();
    }

    fn locate(&self, data: &[u8]) -> Option<(&std::fs::File, u64)> {
        self.inner.locate(data)
    }
}
