//! `preprocessor_config.json` presets named by the mapping tables (their `preprocessor`
//! setting, documented in `mappings/README.md`).

use serde_json::{json, Value};

pub use crate::vocab::Preprocessor;

crate::error::impl_names!(Preprocessor, "preprocessor", Preprocessor::ALL.into_iter());

/// ImageNet mean (DeiT, DINO).
pub(crate) const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet std (DeiT, DINO).
pub(crate) const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// The crop ratio DeiT and DINO evaluate with (224 / 256).
pub(crate) const CROP_RATIO: f64 = 0.875;

/// Builds the preprocessor config for a preset at an image size (see [`Preprocessor`]).
pub(crate) fn preprocessor_config(preset: Preprocessor, image_size: usize) -> Value {
    let rescale = 1.0 / 255.0;
    match preset {
        Preprocessor::Vit => json!({
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "image_processor_type": "ViTImageProcessor",
            "resample": 2,
            "rescale_factor": rescale,
            "size": {"height": image_size, "width": image_size}
        }),
        Preprocessor::Beit => json!({
            "crop_size": {"height": 224, "width": 224},
            "do_center_crop": false,
            "do_normalize": true,
            "do_reduce_labels": false,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "BeitImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "resample": 2,
            "rescale_factor": rescale,
            "size": {"height": image_size, "width": image_size}
        }),
        Preprocessor::Clip => json!({
            "crop_size": {"height": image_size, "width": image_size},
            "do_center_crop": true,
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "rescale_factor": rescale,
            "size": {"shortest_edge": image_size}
        }),
        Preprocessor::Siglip => json!({
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "SiglipImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "resample": 3,
            "rescale_factor": rescale,
            "size": {"height": image_size, "width": image_size}
        }),
        Preprocessor::Dinov2 => json!({
            "crop_size": {"height": 224, "width": 224},
            "do_center_crop": true,
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
            "image_processor_type": "BitImageProcessor",
            "resample": 3,
            "rescale_factor": rescale,
            "size": {"shortest_edge": 256}
        }),
        Preprocessor::ImagenetCrop => {
            let resize = (image_size as f64 / CROP_RATIO) as usize;
            json!({
                "crop_size": {"height": image_size, "width": image_size},
                "do_center_crop": true,
                "do_convert_rgb": true,
                "do_normalize": true,
                "do_rescale": true,
                "do_resize": true,
                "image_mean": IMAGENET_MEAN,
                "image_std": IMAGENET_STD,
                "image_processor_type": "BitImageProcessor",
                "resample": 3,
                "rescale_factor": rescale,
                "size": {"shortest_edge": resize}
            })
        }
    }
}
