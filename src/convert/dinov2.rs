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

use crate::mapping::ops::Op;
use crate::mapping::{Plan, PlannedTensor};
use crate::model::names::{self, LayerPart};
use crate::model::{square_root, ModelType};
use crate::tensor::TensorInfo;

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
            let name = &t.info.name;
            if let Some(i) = names::layer_index(name) {
                for (from, to) in [
                    (LayerPart::Intermediate, LayerPart::GatedIn),
                    (LayerPart::Output, LayerPart::GatedOut),
                ] {
                    let base = names::layer_of(family, i, from);
                    if let Some(rest) = name.strip_prefix(&base) {
                        t.info.name = format!("{}{rest}", names::layer_of(family, i, to));
                        break;
                    }
                }
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
