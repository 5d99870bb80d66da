//! The declarative mapping engine: tables (`mappings/*.toml`) that rename, split, join and
//! transpose tensors between a source layout and the canonical HF layout. It knows nothing about
//! file formats: it plans from a tensor listing and reads data through a [`TensorSource`].

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};
use crate::source::{Format, TensorSource};
use crate::tensor::{Tensor, TensorInfo};

mod bind;
mod budget;
mod detection;
pub(crate) mod dims;
mod forward;
pub(crate) mod index;
mod names;
pub(crate) mod ops;
pub(crate) mod pattern;
mod plan;
mod report;
mod reverse;
pub(crate) mod schema;
mod view;

pub use crate::vocab::MappingError;
pub(crate) use detection::detect;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use forward::plan_forward;
pub(crate) use forward::plan_forward_within;
pub use names::{Branch, Family};
pub(crate) use plan::{Plan, PlannedTensor};
pub use report::MappingReport;
#[cfg(test)]
pub(crate) use reverse::plan_reverse;
pub(crate) use reverse::plan_reverse_within;
pub(crate) use schema::BufferKind;
pub use schema::MappingTable;
pub(crate) use view::select_view;

/// Reads a mapping table's text (TOML), refusing it unread when it is larger than
/// [`Limits::table_file_bytes`](crate::Limits::table_file_bytes).
///
/// # Errors
/// As [`model::read_config_file`](crate::model::read_config_file), the budget being
/// `table file bytes`.
pub fn read_table_file(
    path: impl AsRef<std::path::Path>,
    limits: &crate::Limits,
) -> Result<String> {
    crate::fsio::read_text(path.as_ref(), limits.table_file_bytes, "table file bytes")
}

/// The tables shipped with the crate: (id, file, text).
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "timm",
        "mappings/timm.toml",
        include_str!("../../mappings/timm.toml"),
    ),
    (
        "dino",
        "mappings/dino.toml",
        include_str!("../../mappings/dino.toml"),
    ),
    (
        "deit",
        "mappings/deit.toml",
        include_str!("../../mappings/deit.toml"),
    ),
    (
        "jax",
        "mappings/jax.toml",
        include_str!("../../mappings/jax.toml"),
    ),
    (
        "big_vision",
        "mappings/big_vision.toml",
        include_str!("../../mappings/big_vision.toml"),
    ),
    (
        "beit",
        "mappings/beit.toml",
        include_str!("../../mappings/beit.toml"),
    ),
    (
        "dinov2",
        "mappings/dinov2.toml",
        include_str!("../../mappings/dinov2.toml"),
    ),
    (
        "clip",
        "mappings/clip.toml",
        include_str!("../../mappings/clip.toml"),
    ),
    (
        "siglip",
        "mappings/siglip.toml",
        include_str!("../../mappings/siglip.toml"),
    ),
    (
        "hf",
        "mappings/hf.toml",
        include_str!("../../mappings/hf.toml"),
    ),
    (
        "flax",
        "mappings/flax.toml",
        include_str!("../../mappings/flax.toml"),
    ),
];

impl MappingTable {
    /// A built-in table by id (`timm`, `dino`, `deit`, `jax`, `big_vision`, `beit`, `dinov2`, `clip`, `siglip`, `hf`, `flax`).
    ///
    /// ```
    /// let t = vit_convert::MappingTable::builtin("timm")?;
    /// assert_eq!(t.id(), "timm");
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidOption`] for an unknown id.
    pub fn builtin(id: &str) -> Result<MappingTable> {
        let (_, file, text) =
            BUILTIN
                .iter()
                .find(|(i, _, _)| *i == id)
                .ok_or_else(|| ErrorKind::InvalidOption {
                    reason: format!(
                        "no built-in mapping table `{id}` (built-in: {})",
                        builtin_ids().join(", ")
                    ),
                })?;
        MappingTable::from_toml(text, file)
    }

    /// Reads a table from a TOML file (refused unread when larger than
    /// [`Limits::table_file_bytes`](crate::Limits::table_file_bytes)); errors name the file
    /// as given. The same type as [`MappingTable::builtin`] and [`MappingTable::from_toml`].
    ///
    /// ```
    /// let t = vit_convert::MappingTable::from_file("mappings/timm.toml")?;
    /// assert_eq!(t.id(), "timm");
    /// assert_eq!(t.hash(), vit_convert::MappingTable::builtin("timm")?.hash());
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    ///
    /// # Errors
    /// I/O errors and [`ErrorKind::BudgetExceeded`] naming the file; the errors of
    /// [`MappingTable::from_toml`].
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<MappingTable> {
        MappingTable::from_file_with(path, &crate::Limits::DEFAULT)
    }

    /// [`MappingTable::from_file`] within `limits` ([`Limits::table_file_bytes`]).
    ///
    /// # Errors
    /// As [`MappingTable::from_file`].
    ///
    /// [`Limits::table_file_bytes`]: crate::Limits::table_file_bytes
    pub fn from_file_with(
        path: impl AsRef<std::path::Path>,
        limits: &crate::Limits,
    ) -> Result<MappingTable> {
        let path = path.as_ref();
        let text = read_table_file(path, limits)?;
        MappingTable::from_toml(&text, &path.display().to_string())
    }

    /// The tensors this table makes of `src`, as a source: planning reads names and shapes only
    /// (nothing is read, and every refusal comes before any data is touched); each canonical
    /// tensor is computed when it is read. With branches (DINO), the first present is used.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use vit_convert::{source::MemorySource, tensor::Tensor, DType, MappingTable};
    /// let text = r#"
    /// [table]
    /// id = "tiny"
    /// description = "one tensor"
    /// families = ["tiny"]
    /// [model]
    /// layer_norm_eps = 1e-6
    /// hidden_act = "gelu"
    /// preprocessor = "vit"
    /// [[rule]]
    /// from = "w"
    /// shape = ["A", "B"]
    /// ops = ["transpose(1, 0)"]
    /// to = "layernorm.weight"
    /// "#;
    /// let table = MappingTable::from_toml(text, "tiny.toml")?;
    /// let mut src = MemorySource::new();
    /// src.insert("w", Tensor::new(DType::U8, vec![2, 3], Cow::Owned(vec![0, 1, 2, 3, 4, 5]))?)?;
    /// let out = table.apply(&src)?;
    /// let t = out.read("layernorm.weight")?;
    /// assert_eq!((t.shape.as_slice(), &t.data[..]), (&[3, 2][..], &[0, 3, 1, 4, 2, 5][..]));
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Mapping`] naming the table's file and line, with a [`MappingError`] saying what
    /// did not fit (a tensor no rule consumes, a shape that contradicts the table, a layer gap, a
    /// name the table rejects, …), [`ErrorKind::BudgetExceeded`] (`table output bytes`) when the tensors
    /// the table would make exceed what it reads plus
    /// [`Limits::table_output_allowance_bytes`](crate::Limits::table_output_allowance_bytes).
    pub fn apply<'s>(&self, src: &'s dyn TensorSource) -> Result<Box<dyn TensorSource + 's>> {
        self.apply_with(src, &crate::Limits::DEFAULT)
    }

    /// [`MappingTable::apply`] within `limits`
    /// ([`Limits::table_output_allowance_bytes`](crate::Limits::table_output_allowance_bytes)).
    ///
    /// # Errors
    /// As [`MappingTable::apply`].
    pub fn apply_with<'s>(
        &self,
        src: &'s dyn TensorSource,
        limits: &crate::Limits,
    ) -> Result<Box<dyn TensorSource + 's>> {
        let plan = plan_forward_within(self, src.tensors(), None, limits)?;
        Ok(Box::new(PlannedSource::new(src, plan)))
    }

    /// Every built-in table, in a fixed order.
    ///
    /// # Errors
    /// Only if a shipped table failed to parse (a build defect, covered by tests).
    pub fn builtins() -> Result<Vec<MappingTable>> {
        BUILTIN
            .iter()
            .map(|(_, file, text)| MappingTable::from_toml(text, file))
            .collect()
    }
}

/// Ids of the built-in tables.
pub fn builtin_ids() -> Vec<&'static str> {
    BUILTIN.iter().map(|(id, _, _)| *id).collect()
}

fn mapping_err(table: &MappingTable, line: usize, problem: MappingError) -> Error {
    ErrorKind::Mapping {
        table: table.id.clone(),
        file: table.file.clone(),
        line,
        problem,
    }
    .into()
}

/// A source seen through a plan: lists the planned tensors and computes each on `read`.
pub(crate) struct PlannedSource<'s> {
    inner: &'s dyn TensorSource,
    plan: Plan,
    infos: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl<'s> PlannedSource<'s> {
    pub(crate) fn new(inner: &'s dyn TensorSource, plan: Plan) -> Self {
        let infos: Vec<TensorInfo> = plan.targets.iter().map(|t| t.info.clone()).collect();
        let index = infos
            .iter()
            .enumerate()
            .map(|(k, t)| (t.name.clone(), k))
            .collect();
        PlannedSource {
            inner,
            plan,
            infos,
            index,
            metadata: BTreeMap::new(),
        }
    }

    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }
}

impl TensorSource for PlannedSource<'_> {
    fn release_pages(&self) {
        self.inner.release_pages();
    }

    fn locate(&self, data: &[u8]) -> Option<(&std::fs::File, u64)> {
        self.inner.locate(data)
    }

    fn format(&self) -> Format {
        self.inner.format()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Tensor<'_>> {
        let k = *self
            .index
            .get(name)
            .ok_or_else(|| ErrorKind::TensorNotFound {
                name: name.to_string(),
            })?;
        let t = &self.plan.targets[k];
        if t.sources.is_empty() {
            // A tensor the layout lacks and the target holds as zeros (DINOv2's mask token
            // from timm): as planned, all zero bytes.
            let bytes =
                crate::tensor::checked_byte_len(t.info.dtype, &t.info.shape).ok_or_else(|| {
                    ErrorKind::InvalidLayout {
                        reason: format!("shape {:?} overflows", t.info.shape),
                    }
                })?;
            return Tensor::new(
                t.info.dtype,
                t.info.shape.clone(),
                std::borrow::Cow::Owned(vec![0u8; bytes]),
            );
        }
        let mut inputs = Vec::with_capacity(t.sources.len());
        for s in &t.sources {
            inputs.push(self.inner.read(s)?);
        }
        let last = t.ops.len().saturating_sub(1);
        let mut cur = inputs;
        for (j, op) in t.ops.iter().enumerate() {
            let want = if j == last { t.output } else { 0 };
            let out = op.apply(cur, want).map_err(|reason| {
                crate::Error::from(ErrorKind::InvalidLayout { reason }).with_tensor(name)
            })?;
            cur = vec![out];
        }
        let out = cur.pop().ok_or_else(|| ErrorKind::TensorNotFound {
            name: name.to_string(),
        })?;
        if out.shape != t.info.shape || out.dtype != t.info.dtype {
            return Err(crate::Error::from(ErrorKind::InvalidLayout {
                reason: format!(
                    "planned {} {:?}, computed {} {:?}",
                    t.info.dtype, t.info.shape, out.dtype, out.shape
                ),
            })
            .with_tensor(name));
        }
        Ok(out)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

#[cfg(test)]
mod tests;
