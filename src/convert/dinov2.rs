//! What timm changes in DINOv2's layout, undone after the table has mapped the names (the shapes,
//! not the names, tell these apart, so a name-to-name table cannot):
//!
//! - `vit_*_reg4_dinov2` keeps its position embeddings without the class row (timm folded that
//!   row into `cls_token`): a zero row is put back, which is what the dinov2 hub checkpoints
//!   hold for it, so the model computes the same.
//! - `vit_giant_patch14_dinov2` packs SwiGLU under the standard MLP's names (`mlp.fc1` twice as
//!   wide as `mlp.fc2` is long): those become HF's `mlp.weights_in` / `mlp.weights_out`.
//! - timm drops the mask token (used only for masked training): a zero one is written, as
//!   transformers initialises it (`Dinov2WithRegistersModel` always has one; `Dinov2Model` has
//!   one with its default `use_mask_token`).
//!
//! Each change is reported in the conversion's notes.

use crate::error::{ErrorKind, Result};
use crate::mapping::dims::Bindings;
use crate::mapping::ops::Op;
use crate::mapping::{Plan, PlannedTensor};
use crate::model::names::{self, LayerPart};
use crate::model::{square_root, ModelType};
use crate::source::TensorSource;
use crate::tensor::TensorInfo;

/// The standard MLP's parts and the SwiGLU parts timm packs under their names.
const SWIGLU_PARTS: [(LayerPart, LayerPart); 2] = [
    (LayerPart::Intermediate, LayerPart::GatedIn),
    (LayerPart::Output, LayerPart::GatedOut),
];

/// `name` with the first part of a `(from, to)` pair it lies under replaced by the `to` part of
/// the same layer; `None` when it lies under none.
fn swiglu_renamed(
    family: ModelType,
    name: &str,
    parts: [(LayerPart, LayerPart); 2],
) -> Option<String> {
    let i = names::layer_index(name)?;
    parts.into_iter().find_map(|(from, to)| {
        let rest = name.strip_prefix(&names::layer_of(family, i, from))?;
        Some(format!("{}{rest}", names::layer_of(family, i, to)))
    })
}

/// Applies the three fixes to a plan of the `dinov2` family; returns the notes.
pub(crate) fn undo_timm_layout(plan: &mut Plan, family: ModelType) -> Vec<String> {
    let mut notes = Vec::new();
    let find = |plan: &Plan, n: &str| plan.targets.iter().position(|t| t.info.name == n);
    // SwiGLU packed under the standard MLP's names.
    let fc1 = names::weight(&names::layer_of(family, 0, LayerPart::Intermediate));
    let fc2 = names::weight(&names::layer_of(family, 0, LayerPart::Output));
    let packed = match (find(plan, &fc1), find(plan, &fc2)) {
        (Some(a), Some(b)) => {
            let rows = plan.targets[a].info.shape.first().copied();
            let cols = plan.targets[b].info.shape.get(1).copied();
            matches!((rows, cols), (Some(r), Some(c)) if c > 0 && r == 2 * c)
        }
        _ => false,
    };
    if packed {
        for t in &mut plan.targets {
            if let Some(n) = swiglu_renamed(family, &t.info.name, SWIGLU_PARTS) {
                t.info.name = n;
            }
        }
        notes.push(
            "mlp.fc1 is twice as wide as mlp.fc2 is long: SwiGLU packed as timm does (gate rows first), written as mlp.weights_in / mlp.weights_out".to_string(),
        );
    }
    // Position embeddings without the class row, beside register tokens.
    let registers = find(plan, names::REGISTER_TOKENS).is_some();
    if let Some(k) = find(plan, names::POSITION_EMBEDDINGS) {
        let t = &mut plan.targets[k];
        let rows = t.info.shape.get(1).copied().unwrap_or(0);
        if registers && rows > 0 && square_root(rows).is_some() {
            t.ops.push(Op::PrependZeros { axis: 1, n: 1 });
            if let Some(r) = t.info.shape.get_mut(1) {
                *r += 1;
            }
            notes.push(format!(
                "position embeddings hold {rows} patch rows and no class row (timm's no_embed_class): a zero class row is prepended, as the dinov2 checkpoints hold it"
            ));
        }
    }
    // The mask token timm drops.
    if find(plan, names::MASK_TOKEN).is_none() {
        if let Some(cls) = find(plan, names::CLS_TOKEN) {
            let c = &plan.targets[cls].info;
            let d = c.shape.last().copied().unwrap_or(0);
            plan.targets.push(PlannedTensor {
                info: TensorInfo {
                    name: names::MASK_TOKEN.to_string(),
                    dtype: c.dtype,
                    shape: vec![1, d],
                },
                sources: Vec::new(),
                ops: Vec::new(),
                output: 0,
            });
            notes.push(
                "embeddings.mask_token: zeros (the checkpoint has none; transformers initialises it to zeros and uses it only with bool_masked_pos)".to_string(),
            );
        }
    }
    notes
}

/// What [`redo_timm_layout`] changed before the reverse plan, finished on the plan by
/// [`TimmRedo::finish`].
pub(crate) struct TimmRedo {
    /// Canonical names renamed for planning (SwiGLU under the standard MLP's names) → the real
    /// canonical name the written tensor reads.
    renamed: Vec<(String, String)>,
    /// The position embeddings lose their (zero) class row.
    drop_class_row: bool,
    pub(crate) notes: Vec<String>,
}

/// Prepares canonical DINOv2 tensors for timm's `vit_*_dinov2` layout, the reverse of
/// [`undo_timm_layout`]: `infos` and `bindings` become what the `dinov2` table's timm rules
/// read. timm has no mask token (dropped, said in the notes); SwiGLU goes under `mlp.fc1` /
/// `mlp.fc2`; with register tokens, the position embeddings' class row (zero in timm's own
/// checkpoints; timm adds no position to the class token) is dropped, and refused unless zero.
///
/// # Errors
/// [`ErrorKind::InvalidOption`] for what timm's layout cannot hold: a classifier on [class
/// token, mean patch token], or a non-zero class row of the position embeddings beside
/// register tokens.
pub(crate) fn redo_timm_layout(
    canon: &dyn TensorSource,
    infos: &mut Vec<TensorInfo>,
    bindings: &mut Bindings,
    family: ModelType,
) -> Result<TimmRedo> {
    let refuse = |reason: String| -> crate::Error {
        ErrorKind::InvalidOption {
            reason: format!("option `to` timm: {reason}"),
        }
        .into()
    };
    let has = |infos: &[TensorInfo], n: &str| infos.iter().any(|t| t.name == n);
    if has(infos, &names::weight(names::CLASSIFIER)) {
        return Err(refuse(
            "Dinov2ForImageClassification's classifier reads [class token, mean patch token]; \
             timm's vit_*_dinov2 head reads the class token alone (write safetensors, or convert \
             the backbone with --drop head)"
                .to_string(),
        ));
    }
    let mut notes = Vec::new();
    if has(infos, names::MASK_TOKEN) {
        let zero = canon.read(names::MASK_TOKEN)?.data.iter().all(|&b| b == 0);
        infos.retain(|t| t.name != names::MASK_TOKEN);
        notes.push(format!(
            "embeddings.mask_token is not written ({}): timm's layout has none; it is used only for masked-image training",
            if zero { "zeros" } else { "its values are lost" }
        ));
    }
    let mut renamed = Vec::new();
    let gated_in = names::weight(&names::layer_of(family, 0, LayerPart::GatedIn));
    if let Some(w) = infos.iter().find(|t| t.name == gated_in) {
        if let Some(&rows) = w.shape.first() {
            // timm's packed fc1 holds both halves: `M` is its row count.
            bindings.insert("M".into(), rows);
        }
        let back = SWIGLU_PARTS.map(|(standard, gated)| (gated, standard));
        for t in infos.iter_mut() {
            if let Some(planned) = swiglu_renamed(family, &t.name, back) {
                renamed.push((planned.clone(), std::mem::replace(&mut t.name, planned)));
            }
        }
        notes.push(
            "SwiGLU written under mlp.fc1 / mlp.fc2, packed as timm's vit_giant_patch14_dinov2 holds it (gate rows first)"
                .to_string(),
        );
    }
    let mut drop_class_row = false;
    if has(infos, names::REGISTER_TOKENS) {
        if let Some(pos) = infos
            .iter_mut()
            .find(|t| t.name == names::POSITION_EMBEDDINGS)
        {
            let t = canon.read(names::POSITION_EMBEDDINGS)?;
            let row = t.shape.last().copied().unwrap_or(0) * t.dtype.size();
            if t.data.iter().take(row).any(|&b| b != 0) {
                return Err(refuse(
                    "the position embeddings' class row is not zero, and timm's reg4 layout adds no \
                     position to the class token (write safetensors)"
                        .to_string(),
                ));
            }
            if let Some(r) = pos.shape.get_mut(1) {
                *r = r.saturating_sub(1);
                bindings.insert("T".into(), *r);
            }
            drop_class_row = true;
            notes.push(
                "position embeddings: the (zero) class row is dropped, as timm's reg4 models hold them (no_embed_class)"
                    .to_string(),
            );
        }
    }
    Ok(TimmRedo {
        renamed,
        drop_class_row,
        notes,
    })
}

impl TimmRedo {
    /// Points the reverse plan back at the real canonical tensors.
    pub(crate) fn finish(self, plan: &mut Plan) -> Vec<String> {
        for t in &mut plan.targets {
            for s in &mut t.sources {
                if let Some((_, real)) = self.renamed.iter().find(|(p, _)| p == s) {
                    s.clone_from(real);
                }
                if self.drop_class_row && s == names::POSITION_EMBEDDINGS {
                    t.ops.insert(0, Op::DropZeros { axis: 1, n: 1 });
                }
            }
        }
        self.notes
    }
}
