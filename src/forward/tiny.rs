//! A tiny valid ViT held in memory (`ViTForImageClassification`: hidden size 4, 2 heads, one
//! layer, intermediate size 8, 2×2 patches of 3 channels, 4×4 images, 3 labels), and a tiny BEiT
//! of the same sizes (`BeitForImageClassification`: relative position bias per layer, layer scale,
//! q/v biases, mean pooling), for the side-file fuzz target and the property tests that drive
//! hostile config values into them.

use std::borrow::Cow;

use serde_json::{json, Value};

use crate::source::MemorySource;
use crate::tensor::{DType, Tensor};

/// The tiny model's on-disk tensors and their shapes.
const TENSORS: &[(&str, &[usize])] = &[
    ("vit.embeddings.cls_token", &[1, 1, 4]),
    ("vit.embeddings.position_embeddings", &[1, 5, 4]),
    (
        "vit.embeddings.patch_embeddings.projection.weight",
        &[4, 3, 2, 2],
    ),
    ("vit.embeddings.patch_embeddings.projection.bias", &[4]),
    ("vit.encoder.layer.0.layernorm_before.weight", &[4]),
    ("vit.encoder.layer.0.layernorm_before.bias", &[4]),
    (
        "vit.encoder.layer.0.attention.attention.query.weight",
        &[4, 4],
    ),
    ("vit.encoder.layer.0.attention.attention.query.bias", &[4]),
    (
        "vit.encoder.layer.0.attention.attention.key.weight",
        &[4, 4],
    ),
    ("vit.encoder.layer.0.attention.attention.key.bias", &[4]),
    (
        "vit.encoder.layer.0.attention.attention.value.weight",
        &[4, 4],
    ),
    ("vit.encoder.layer.0.attention.attention.value.bias", &[4]),
    ("vit.encoder.layer.0.attention.output.dense.weight", &[4, 4]),
    ("vit.encoder.layer.0.attention.output.dense.bias", &[4]),
    ("vit.encoder.layer.0.layernorm_after.weight", &[4]),
    ("vit.encoder.layer.0.layernorm_after.bias", &[4]),
    ("vit.encoder.layer.0.intermediate.dense.weight", &[8, 4]),
    ("vit.encoder.layer.0.intermediate.dense.bias", &[8]),
    ("vit.encoder.layer.0.output.dense.weight", &[4, 8]),
    ("vit.encoder.layer.0.output.dense.bias", &[4]),
    ("vit.layernorm.weight", &[4]),
    ("vit.layernorm.bias", &[4]),
    ("classifier.weight", &[3, 4]),
    ("classifier.bias", &[3]),
];

/// The tiny BEiT's on-disk tensors and their shapes (a 2×2 grid: 12 relative position rows).
const BEIT_TENSORS: &[(&str, &[usize])] = &[
    ("beit.embeddings.cls_token", &[1, 1, 4]),
    (
        "beit.embeddings.patch_embeddings.projection.weight",
        &[4, 3, 2, 2],
    ),
    ("beit.embeddings.patch_embeddings.projection.bias", &[4]),
    ("beit.encoder.layer.0.layernorm_before.weight", &[4]),
    ("beit.encoder.layer.0.layernorm_before.bias", &[4]),
    (
        "beit.encoder.layer.0.attention.attention.query.weight",
        &[4, 4],
    ),
    ("beit.encoder.layer.0.attention.attention.query.bias", &[4]),
    (
        "beit.encoder.layer.0.attention.attention.key.weight",
        &[4, 4],
    ),
    (
        "beit.encoder.layer.0.attention.attention.value.weight",
        &[4, 4],
    ),
    ("beit.encoder.layer.0.attention.attention.value.bias", &[4]),
    (
        "beit.encoder.layer.0.attention.attention.relative_position_bias.relative_position_bias_table",
        &[12, 2],
    ),
    (
        "beit.encoder.layer.0.attention.output.dense.weight",
        &[4, 4],
    ),
    ("beit.encoder.layer.0.attention.output.dense.bias", &[4]),
    ("beit.encoder.layer.0.lambda_1", &[4]),
    ("beit.encoder.layer.0.lambda_2", &[4]),
    ("beit.encoder.layer.0.layernorm_after.weight", &[4]),
    ("beit.encoder.layer.0.layernorm_after.bias", &[4]),
    ("beit.encoder.layer.0.intermediate.dense.weight", &[8, 4]),
    ("beit.encoder.layer.0.intermediate.dense.bias", &[8]),
    ("beit.encoder.layer.0.output.dense.weight", &[4, 8]),
    ("beit.encoder.layer.0.output.dense.bias", &[4]),
    ("beit.pooler.layernorm.weight", &[4]),
    ("beit.pooler.layernorm.bias", &[4]),
    ("classifier.weight", &[3, 4]),
    ("classifier.bias", &[3]),
];

/// The tiny model's tensors (deterministic values in [-0.5, 0.5)).
pub(crate) fn tiny_source() -> MemorySource {
    source_of(TENSORS)
}

/// The tiny BEiT's tensors (deterministic values in [-0.5, 0.5)).
pub(crate) fn tiny_beit_source() -> MemorySource {
    source_of(BEIT_TENSORS)
}

/// The tiny BEiT's `config.json`.
pub(crate) fn tiny_beit_config() -> Value {
    json!({
        "architectures": ["BeitForImageClassification"],
        "model_type": "beit",
        "hidden_size": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 8,
        "patch_size": 2,
        "image_size": 4,
        "num_channels": 3,
        "use_relative_position_bias": true,
        "use_mean_pooling": true,
        "layer_scale_init_value": 0.1,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "id2label": {"0": "a", "1": "b", "2": "c"}
    })
}

fn source_of(tensors: &[(&str, &[usize])]) -> MemorySource {
    let mut src = MemorySource::new();
    let mut seed = 0usize;
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|i| {
                seed = seed.wrapping_add(i).wrapping_mul(31).wrapping_add(7) % 1009;
                let v = f32::from(u16::try_from(seed % 64).unwrap_or(0)) / 64.0 - 0.5;
                v.to_le_bytes()
            })
            .collect();
        if let Ok(t) = Tensor::new(DType::F32, shape.to_vec(), Cow::Owned(bytes)) {
            // The names are distinct and the lengths match: inserting cannot fail.
            let _ = src.insert(name, t);
        }
    }
    src
}

/// The tiny model's `config.json`.
pub(crate) fn tiny_config() -> Value {
    json!({
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 8,
        "patch_size": 2,
        "image_size": 4,
        "num_channels": 3,
        "qkv_bias": true,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "id2label": {"0": "a", "1": "b", "2": "c"}
    })
}
