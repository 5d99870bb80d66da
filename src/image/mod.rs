//! Image input for `forward` / `verify`: decode PNG/JPEG files and preprocess them exactly as a
//! model's `preprocessor_config.json` says, matching transformers' PIL-backed image processors
//! (`ViTImageProcessorPil`, `DeiTImageProcessorPil`, `BitImageProcessorPil`; transformers 5.23).
//!
//! The pipeline, per image (`transformers/image_processing_backends.py`, `PilBackend`):
//!
//! 1. `load_image`: decode, apply the EXIF orientation, `convert("RGB")` ([`read_image`]).
//! 2. `do_convert_rgb`: composite onto white — only pixels of a `tRNS` colour change.
//! 3. `do_resize`: Pillow resize of the 8-bit image ([`resize`]) to `size`:
//!    `{height, width}`; `{shortest_edge: s}` → short side `s`, long side
//!    `int(s · long / short)`; `{shortest_edge, longest_edge}` → `get_size_with_aspect_ratio`.
//! 4. `do_center_crop`: numpy crop at `((H - h) // 2, (W - w) // 2)`; a crop larger than the image
//!    zero-pads it (in 8 bits, image at offset `ceil((h - H) / 2)`).
//! 5. `do_rescale`: `float32(float64(pixel) · rescale_factor)`.
//! 6. `do_normalize`: `(x - float32(mean)) / float32(std)` in float32.
//!
//! ```no_run
//! let cfg: serde_json::Value =
//!     serde_json::from_str(&std::fs::read_to_string("model/preprocessor_config.json")?)?;
//! let pixels = vit_convert::image::preprocess(&["cat.png", "dog.png"], &cfg)?;
//! assert_eq!(pixels.shape[..2], [2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod decode;
mod resample;

use std::path::Path;

use serde_json::Value;

pub use decode::{decode_image, read_image, Decoded, ImageFormat};
pub use resample::{resize, Filter};

use crate::error::{Error, ErrorKind, Result};
use crate::tensor::F32Array;

/// Largest accepted image side, decoded or resized (pixels).
pub const MAX_IMAGE_SIDE: u32 = 1 << 15;
/// Largest accepted image area (Pillow's decompression-bomb error threshold, 2 × 89 478 485).
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;
/// Largest batch [`preprocess`] accepts.
pub const MAX_BATCH: usize = 4096;
/// Largest number of float32 values [`preprocess`] returns (1 GiB).
pub const MAX_OUTPUT_VALUES: usize = 1 << 28;

/// An 8-bit RGB image, rows top to bottom, pixels `[r, g, b]` interleaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps interleaved RGB bytes; `None` unless `data.len() == width · height · 3`.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Option<RgbImage> {
        let len = width.checked_mul(height)?.checked_mul(3)?;
        (data.len() == len).then_some(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Row `y` (empty when out of range).
    fn row(&self, y: usize) -> &[u8] {
        let len = self.width.saturating_mul(3);
        let start = y.saturating_mul(len);
        self.data
            .get(start..start.saturating_add(len))
            .unwrap_or(&[])
    }
}

/// How `size` asks for the resized image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeTo {
    /// `{"height": h, "width": w}`: exactly this size, aspect not kept.
    Exact {
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
    },
    /// `{"shortest_edge": s}`: short side `s`, aspect kept (long side truncated).
    ShortestEdge(usize),
    /// `{"shortest_edge": s, "longest_edge": l}`: as DETR-style processors.
    ShortestLongest {
        /// Short side.
        shortest: usize,
        /// Cap on the long side.
        longest: usize,
    },
}

/// The fields of `preprocessor_config.json` that decide the pixel values.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessorConfig {
    /// `do_convert_rgb`.
    pub do_convert_rgb: bool,
    /// `do_resize` + `size` (`None` when not resizing).
    pub resize: Option<ResizeTo>,
    /// `resample`.
    pub resample: Filter,
    /// `do_center_crop` + `crop_size` as `(height, width)`.
    pub center_crop: Option<(usize, usize)>,
    /// `do_rescale` + `rescale_factor`.
    pub rescale: Option<f64>,
    /// `do_normalize` + `image_mean`, `image_std`.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

/// Class defaults of the processors this module knows (`image_processing_*_pil.py`), used for
/// keys a config leaves out, as transformers does.
struct Defaults {
    size: Value,
    default_to_square: bool,
    crop: Option<Value>,
    resample: u64,
    mean: [f64; 3],
    std: [f64; 3],
    do_convert_rgb: bool,
}

const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

fn class_defaults(processor_type: &str) -> Option<Defaults> {
    let base = processor_type
        .strip_suffix("Pil")
        .or_else(|| processor_type.strip_suffix("Fast"))
        .unwrap_or(processor_type);
    match base {
        "ViTImageProcessor" => Some(Defaults {
            size: serde_json::json!({"height": 224, "width": 224}),
            default_to_square: true,
            crop: None,
            resample: 2,
            mean: IMAGENET_STANDARD,
            std: IMAGENET_STANDARD,
            do_convert_rgb: false,
        }),
        "DeiTImageProcessor" => Some(Defaults {
            size: serde_json::json!({"height": 256, "width": 256}),
            default_to_square: true,
            crop: Some(serde_json::json!({"height": 224, "width": 224})),
            resample: 3,
            mean: IMAGENET_STANDARD,
            std: IMAGENET_STANDARD,
            do_convert_rgb: false,
        }),
        // transformers 5.23 `BeitImageProcessor`'s class attributes.
        "BeitImageProcessor" => Some(Defaults {
            size: serde_json::json!({"height": 224, "width": 224}),
            default_to_square: true,
            crop: None,
            resample: 3,
            mean: IMAGENET_STANDARD,
            std: IMAGENET_STANDARD,
            do_convert_rgb: false,
        }),
        "BitImageProcessor" => Some(Defaults {
            size: serde_json::json!({"shortest_edge": 224}),
            default_to_square: false,
            crop: Some(serde_json::json!({"height": 224, "width": 224})),
            resample: 3,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
            do_convert_rgb: true,
        }),
        _ => None,
    }
}

fn config_err(reason: impl Into<String>) -> Error {
    ErrorKind::Config {
        reason: format!("preprocessor_config.json: {}", reason.into()),
    }
    .into()
}

impl PreprocessorConfig {
    /// Parses the relevant fields of a `preprocessor_config.json`.
    ///
    /// Keys left out take the class defaults of `image_processor_type` when it is a ViT, DeiT or
    /// Bit processor; for other types every `do_*` flag used must be present. `size` and
    /// `crop_size` may also be legacy integers.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the key that is missing, mistyped or out of range.
    pub fn from_json(cfg: &Value) -> Result<PreprocessorConfig> {
        let obj = cfg
            .as_object()
            .ok_or_else(|| config_err("expected a JSON object"))?;
        let ty = obj
            .get("image_processor_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let defaults = class_defaults(ty);
        let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let flag = |k: &str, default: Option<bool>| -> Result<bool> {
            match present(k) {
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| config_err(format!("`{k}` must be true or false, got {v}"))),
                None => default.ok_or_else(|| {
                    config_err(format!(
                        "`{k}` is missing and {ty:?} is not a processor type whose defaults are \
                         known (ViT, DeiT, Bit)"
                    ))
                }),
            }
        };
        let d = defaults.as_ref();
        let do_convert_rgb = flag("do_convert_rgb", Some(d.is_some_and(|d| d.do_convert_rgb)))?;
        let do_resize = flag("do_resize", d.map(|_| true))?;
        let do_center_crop = flag("do_center_crop", d.map(|d| d.crop.is_some()))?;
        let do_rescale = flag("do_rescale", d.map(|_| true))?;
        let do_normalize = flag("do_normalize", d.map(|_| true))?;

        let resample = match present("resample") {
            Some(v) => v
                .as_u64()
                .and_then(Filter::from_pil_code)
                .ok_or_else(|| config_err(format!("`resample` must be a PIL code 0–5, got {v}")))?,
            None => Filter::from_pil_code(d.map_or(2, |d| d.resample)).unwrap_or(Filter::Bilinear),
        };
        let resize = if do_resize {
            let size = present("size")
                .or(d.map(|d| &d.size))
                .ok_or_else(|| config_err("`do_resize` is true but `size` is missing"))?;
            let square = present("default_to_square")
                .and_then(Value::as_bool)
                .or(d.map(|d| d.default_to_square))
                .unwrap_or(true);
            Some(parse_size(size, square)?)
        } else {
            None
        };
        let center_crop = if do_center_crop {
            let crop = present("crop_size")
                .or(d.and_then(|d| d.crop.as_ref()))
                .ok_or_else(|| config_err("`do_center_crop` is true but `crop_size` is missing"))?;
            match parse_size(crop, true)? {
                ResizeTo::Exact { height, width } => Some((height, width)),
                _ => return Err(config_err("`crop_size` must be {\"height\", \"width\"}")),
            }
        } else {
            None
        };
        let rescale = if do_rescale {
            let f = match present("rescale_factor") {
                Some(v) => v.as_f64().ok_or_else(|| {
                    config_err(format!("`rescale_factor` must be a number, got {v}"))
                })?,
                None => 1.0 / 255.0,
            };
            Some(f)
        } else {
            None
        };
        let normalize = if do_normalize {
            let mean = triple(present("image_mean"), d.map(|d| d.mean), "image_mean")?;
            let std = triple(present("image_std"), d.map(|d| d.std), "image_std")?;
            Some((mean, std))
        } else {
            None
        };
        if let (Some(ResizeTo::Exact { height, width }), Some((ch, cw))) = (resize, center_crop) {
            if ch > height || cw > width {
                return Err(config_err(format!(
                    "`crop_size` {ch}x{cw} is larger than the resized {height}x{width} image"
                )));
            }
        }
        if let (Some(ResizeTo::ShortestEdge(s)), Some((ch, cw))) = (resize, center_crop) {
            if ch.min(cw) > s {
                return Err(config_err(format!(
                    "`crop_size` {ch}x{cw} is larger than the resized image (shortest edge {s})"
                )));
            }
        }
        let cfg = PreprocessorConfig {
            do_convert_rgb,
            resize,
            resample,
            center_crop,
            rescale,
            normalize,
        };
        cfg.check_values()?;
        Ok(cfg)
    }

    /// Checks that the value steps produce finite float32 pixels: a finite `rescale_factor`,
    /// finite means, standard deviations that are finite and non-zero in float32, and no
    /// normalised pixel beyond float32's range.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the field.
    pub fn check_values(&self) -> Result<()> {
        let scale = match self.rescale {
            Some(f) if !f.is_finite() || !((255.0 * f) as f32).is_finite() => {
                return Err(config_err(format!(
                    "`rescale_factor` {f:?} does not give finite float32 pixels"
                )))
            }
            Some(f) => f.abs(),
            None => 1.0,
        };
        if let Some((mean, std)) = self.normalize {
            for (&m, &sd) in mean.iter().zip(&std) {
                let (m32, s32) = (m as f32, sd as f32);
                if !m32.is_finite() {
                    return Err(config_err(format!(
                        "`image_mean` {m:?} is not a finite float32"
                    )));
                }
                if !s32.is_finite() || s32 == 0.0 {
                    return Err(config_err(format!(
                        "`image_std` {sd:?} is 0 or not a finite float32"
                    )));
                }
                let largest = (255.0 * scale + f64::from(m32).abs()) / f64::from(s32).abs();
                if !(largest as f32).is_finite() {
                    return Err(config_err(format!(
                        "`image_std` {sd:?} makes normalised pixels overflow float32"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The bytes preprocessing an image of `height × width` allocates — the resize's
    /// intermediate pass and result, the crop, and the float32 output — and the output
    /// `(height, width)`, computed with checked arithmetic before anything is allocated.
    ///
    /// # Errors
    /// As [`output_size`]; [`ErrorKind::BudgetExceeded`] (`preprocess bytes`) when the bytes
    /// exceed [`Limits::preprocess_bytes`](crate::Limits::preprocess_bytes).
    pub fn check_budget(
        &self,
        height: usize,
        width: usize,
        limits: &crate::Limits,
    ) -> Result<(usize, usize)> {
        let rgb = |h: usize, w: usize| h.checked_mul(w).and_then(|n| n.checked_mul(3));
        let mut bytes = Some(0usize);
        let (mut h, mut w) = (height, width);
        if let Some(to) = self.resize {
            let (oh, ow) = output_size(to, h, w)?;
            // The first pass's output: the vertical pass keeps the width, the horizontal pass
            // the height.
            let first = if resample::vertical_first(w, h, ow, oh) {
                rgb(oh, w)
            } else {
                rgb(h, ow)
            };
            bytes = first.and_then(|f| f.checked_add(rgb(oh, ow)?));
            (h, w) = (oh, ow);
        }
        if let Some((ch, cw)) = self.center_crop {
            check_area(ch, cw)?;
            bytes = bytes.and_then(|b| b.checked_add(rgb(ch, cw)?));
            (h, w) = (ch, cw);
        }
        // The float32 output.
        bytes = bytes.and_then(|b| b.checked_add(rgb(h, w)?.checked_mul(4)?));
        crate::limits::check_within("preprocess bytes", bytes, limits.preprocess_bytes)?;
        Ok((h, w))
    }
}

fn side(v: &Value, key: &str) -> Result<usize> {
    v.as_u64()
        .filter(|&n| n >= 1 && n <= u64::from(MAX_IMAGE_SIDE))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            config_err(format!(
                "`{key}` must be an integer in 1..={MAX_IMAGE_SIDE}, got {v}"
            ))
        })
}

/// `get_size_dict`: a dict with one of the accepted key sets, or a legacy int / `[h, w]`.
fn parse_size(v: &Value, default_to_square: bool) -> Result<ResizeTo> {
    if v.is_u64() {
        let n = side(v, "size")?;
        return Ok(if default_to_square {
            ResizeTo::Exact {
                height: n,
                width: n,
            }
        } else {
            ResizeTo::ShortestEdge(n)
        });
    }
    if let Some([h, w]) = v.as_array().map(Vec::as_slice) {
        return Ok(ResizeTo::Exact {
            height: side(h, "size[0]")?,
            width: side(w, "size[1]")?,
        });
    }
    let Some(obj) = v.as_object() else {
        return Err(config_err(format!("cannot read size {v}")));
    };
    let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
    let mut keys: Vec<&str> = obj
        .iter()
        .filter(|(_, x)| !x.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    keys.sort_unstable();
    match keys.as_slice() {
        ["height", "width"] => Ok(ResizeTo::Exact {
            height: side(get("height").unwrap_or(&Value::Null), "height")?,
            width: side(get("width").unwrap_or(&Value::Null), "width")?,
        }),
        ["shortest_edge"] => Ok(ResizeTo::ShortestEdge(side(
            get("shortest_edge").unwrap_or(&Value::Null),
            "shortest_edge",
        )?)),
        ["longest_edge", "shortest_edge"] => Ok(ResizeTo::ShortestLongest {
            shortest: side(
                get("shortest_edge").unwrap_or(&Value::Null),
                "shortest_edge",
            )?,
            longest: side(get("longest_edge").unwrap_or(&Value::Null), "longest_edge")?,
        }),
        _ => Err(config_err(format!(
            "unsupported size {v} (supported: {{height, width}}, {{shortest_edge}}, \
             {{shortest_edge, longest_edge}})"
        ))),
    }
}

fn triple(v: Option<&Value>, default: Option<[f64; 3]>, key: &str) -> Result<[f64; 3]> {
    let bad = |v: &Value| config_err(format!("`{key}` must be a number or 3 numbers, got {v}"));
    match v {
        None => default.ok_or_else(|| config_err(format!("`{key}` is missing"))),
        Some(v) => {
            if let Some(x) = v.as_f64() {
                return Ok([x; 3]);
            }
            match v.as_array().map(Vec::as_slice) {
                Some([a, b, c]) => Ok([
                    a.as_f64().ok_or_else(|| bad(v))?,
                    b.as_f64().ok_or_else(|| bad(v))?,
                    c.as_f64().ok_or_else(|| bad(v))?,
                ]),
                _ => Err(bad(v)),
            }
        }
    }
}

/// The `(height, width)` `resize` produces for an image of `height × width`.
///
/// # Errors
/// [`ErrorKind::BudgetExceeded`] when the result is larger than [`MAX_IMAGE_SIDE`].
pub fn output_size(to: ResizeTo, height: usize, width: usize) -> Result<(usize, usize)> {
    let (h, w) = match to {
        ResizeTo::Exact { height, width } => (height, width),
        ResizeTo::ShortestEdge(s) => {
            // get_resize_output_image_size(default_to_square=False): int(s * long / short).
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            let new_long = s
                .checked_mul(long)
                .and_then(|p| p.checked_div(short))
                .ok_or_else(|| too_big(usize::MAX))?;
            if width <= height {
                (new_long, s)
            } else {
                (s, new_long)
            }
        }
        ResizeTo::ShortestLongest { shortest, longest } => {
            size_with_aspect_ratio(height, width, shortest, longest)
        }
    };
    check_area(h, w)?;
    if h == 0 || w == 0 {
        return Err(ErrorKind::InvalidOption {
            reason: format!("resizing a {width}x{height} image gives an empty {w}x{h} image"),
        }
        .into());
    }
    Ok((h, w))
}

fn too_big(_side: usize) -> Error {
    ErrorKind::BudgetExceeded {
        budget: "resized image side",
        limit: u64::from(MAX_IMAGE_SIDE),
        offset: 0,
    }
    .into()
}

/// Checks a resize or crop target against [`MAX_IMAGE_SIDE`] and [`MAX_IMAGE_PIXELS`].
fn check_area(h: usize, w: usize) -> Result<()> {
    let limit = usize::try_from(MAX_IMAGE_SIDE).unwrap_or(usize::MAX);
    if h > limit || w > limit {
        return Err(too_big(h.max(w)));
    }
    check_pixels(u64::try_from(h.saturating_mul(w)).unwrap_or(u64::MAX))
}

/// [`ErrorKind::BudgetExceeded`] when an image area is above [`MAX_IMAGE_PIXELS`].
fn check_pixels(area: u64) -> Result<()> {
    if area > MAX_IMAGE_PIXELS {
        return Err(ErrorKind::BudgetExceeded {
            budget: "image pixels",
            limit: MAX_IMAGE_PIXELS,
            offset: 0,
        }
        .into());
    }
    Ok(())
}

/// `image_transforms.get_size_with_aspect_ratio`, float for float (Python `round` is half-even).
fn size_with_aspect_ratio(
    height: usize,
    width: usize,
    size: usize,
    max_size: usize,
) -> (usize, usize) {
    let (hf, wf) = (height as f64, width as f64);
    let (min_o, max_o) = (hf.min(wf), hf.max(wf));
    let mut size = size;
    let mut raw = None;
    if max_o / min_o * size as f64 > max_size as f64 {
        let r = max_size as f64 * min_o / max_o;
        size = to_usize(r.round_ties_even());
        raw = Some(r);
    }
    if (height <= width && height == size) || (width <= height && width == size) {
        (height, width)
    } else if width < height {
        let oh = match raw {
            Some(r) => r * hf / wf,
            None => size as f64 * hf / wf,
        };
        (to_usize(oh), size)
    } else {
        let ow = match raw {
            Some(r) => r * wf / hf,
            None => size as f64 * wf / hf,
        };
        (size, to_usize(ow))
    }
}

/// Python `int(x)` for a non-negative float (saturating; callers bound the result).
fn to_usize(x: f64) -> usize {
    if x.is_nan() || x <= 0.0 {
        0
    } else {
        // `as` from f64 truncates toward zero and saturates.
        x.trunc() as usize
    }
}

/// HF `center_crop` (numpy, PIL backend) on 8-bit pixels, zero-padding when the crop is larger.
fn center_crop(img: &RgbImage, crop_h: usize, crop_w: usize) -> RgbImage {
    // Per axis: (source start, destination start, length copied).
    let axis = |orig: usize, crop: usize| {
        if orig >= crop {
            ((orig - crop) / 2, 0, crop)
        } else {
            (0, (crop - orig).div_ceil(2), orig)
        }
    };
    let (sy, dy, ny) = axis(img.height, crop_h);
    let (sx, dx, nx) = axis(img.width, crop_w);
    let mut data = vec![0u8; crop_h * crop_w * 3];
    for y in 0..ny {
        let src = img.row(sy + y).get(sx * 3..(sx + nx) * 3).unwrap_or(&[]);
        let start = ((dy + y) * crop_w + dx) * 3;
        if let Some(dst) = data.get_mut(start..start + src.len()) {
            dst.copy_from_slice(src);
        }
    }
    RgbImage {
        width: crop_w,
        height: crop_h,
        data,
    }
}

/// The 8-bit image after the geometric steps (convert_rgb, resize, center crop).
fn geometry(
    decoded: Decoded,
    cfg: &PreprocessorConfig,
    limits: &crate::Limits,
) -> Result<RgbImage> {
    cfg.check_budget(decoded.rgb.height, decoded.rgb.width, limits)?;
    let mut img = decoded.rgb;
    if cfg.do_convert_rgb {
        if let Some(t) = decoded.transparent {
            for px in img.data.chunks_exact_mut(3) {
                if px.iter().zip(t).all(|(&p, t)| u16::from(p) == t) {
                    px.copy_from_slice(&[255, 255, 255]);
                }
            }
        }
    }
    if let Some(to) = cfg.resize {
        let (h, w) = output_size(to, img.height, img.width)?;
        img = resize(&img, w, h, cfg.resample);
    }
    if let Some((h, w)) = cfg.center_crop {
        check_area(h, w)?;
        img = center_crop(&img, h, w);
    }
    Ok(img)
}

/// Preprocesses one decoded image to float32 `[3, H, W]` values (C order), returning `(H, W)`.
///
/// # Errors
/// [`ErrorKind::BudgetExceeded`] / [`ErrorKind::InvalidOption`] when the configured size is out
/// of range for this image.
pub fn preprocess_image(
    decoded: Decoded,
    cfg: &PreprocessorConfig,
    limits: &crate::Limits,
) -> Result<(usize, usize, Vec<f32>)> {
    cfg.check_values()?;
    let img = geometry(decoded, cfg, limits)?;
    let (h, w) = (img.height, img.width);
    let plane = h * w;
    let mut out = vec![0f32; plane * 3];
    for (c, chan) in out.chunks_exact_mut(plane.max(1)).enumerate().take(3) {
        let (mean, std) = match cfg.normalize {
            Some((m, s)) => (m.get(c).map(|&v| v as f32), s.get(c).map(|&v| v as f32)),
            None => (None, None),
        };
        for (o, px) in chan.iter_mut().zip(img.data.chunks_exact(3)) {
            let p = px.get(c).copied().unwrap_or(0);
            // rescale: numpy `image.astype(float64) * scale`, then `astype(float32)`.
            let mut x = match cfg.rescale {
                Some(f) => (f64::from(p) * f) as f32,
                None => f32::from(p),
            };
            // normalize: float32 `(x - mean) / std`.
            if let (Some(m), Some(s)) = (mean, std) {
                x = (x - m) / s;
            }
            *o = x;
        }
    }
    Ok((h, w, out))
}

/// Reads each image file and preprocesses it as `preprocessor_config` says, stacking the results
/// into a float32 `[B, 3, H, W]` array.
///
/// # Errors
/// [`ErrorKind::Config`] for an unusable config; decoding errors from [`read_image`]
/// ([`ErrorKind::Io`], [`ErrorKind::UnknownFormat`], [`ErrorKind::MalformedImage`], …);
/// [`ErrorKind::InvalidOption`] for an empty list or when the images come out at different
/// sizes (possible when the config keeps the aspect ratio and does not crop). Errors about one
/// image carry its path.
pub fn preprocess(paths: &[impl AsRef<Path>], preprocessor_config: &Value) -> Result<F32Array> {
    preprocess_with(paths, preprocessor_config, &crate::Limits::DEFAULT)
}

/// [`preprocess`] within `limits` ([`Limits::preprocess_bytes`](crate::Limits::preprocess_bytes)
/// per image).
///
/// # Errors
/// As [`preprocess`].
pub fn preprocess_with(
    paths: &[impl AsRef<Path>],
    preprocessor_config: &Value,
    limits: &crate::Limits,
) -> Result<F32Array> {
    let cfg = PreprocessorConfig::from_json(preprocessor_config)?;
    if paths.is_empty() {
        return Err(ErrorKind::InvalidOption {
            reason: "no images given".into(),
        }
        .into());
    }
    if paths.len() > MAX_BATCH {
        return Err(ErrorKind::BudgetExceeded {
            budget: "image batch",
            limit: u64::try_from(MAX_BATCH).unwrap_or(u64::MAX),
            offset: 0,
        }
        .into());
    }
    let mut data = Vec::new();
    let mut size: Option<(usize, usize, &Path)> = None;
    for p in paths {
        let path = p.as_ref();
        let decoded = read_image(path).map_err(|e| e.with_path(path))?;
        let (h, w, values) =
            preprocess_image(decoded, &cfg, limits).map_err(|e| e.with_path(path))?;
        match size {
            None => size = Some((h, w, path)),
            Some((h0, w0, first)) if (h0, w0) != (h, w) => {
                return Err(Error::from(ErrorKind::InvalidOption {
                    reason: format!(
                        "images come out at different sizes: {} gives {h0}x{w0}, this one \
                         {h}x{w}; the preprocessor config keeps the aspect ratio without a \
                         center crop, so batch images of the same shape or process them one \
                         at a time",
                        first.display()
                    ),
                })
                .with_path(path));
            }
            Some(_) => {}
        }
        if data.len().saturating_add(values.len()) > MAX_OUTPUT_VALUES {
            return Err(Error::from(ErrorKind::BudgetExceeded {
                budget: "preprocessed values",
                limit: u64::try_from(MAX_OUTPUT_VALUES).unwrap_or(u64::MAX),
                offset: 0,
            })
            .with_path(path));
        }
        data.extend_from_slice(&values);
    }
    let (h, w) = size.map_or((0, 0), |(h, w, _)| (h, w));
    Ok(F32Array {
        shape: vec![paths.len(), 3, h, w],
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shortest_edge_truncates_the_long_side() {
        // 50 wide, 40 high, shortest 36: long side int(36 * 50 / 40) = 45.
        assert_eq!(
            output_size(ResizeTo::ShortestEdge(36), 40, 50).unwrap(),
            (36, 45)
        );
        assert_eq!(
            output_size(ResizeTo::ShortestEdge(36), 57, 31).unwrap(),
            (66, 36)
        );
        assert_eq!(
            output_size(ResizeTo::ShortestEdge(36), 20, 20).unwrap(),
            (36, 36)
        );
    }

    #[test]
    fn center_crop_pads_with_the_image_at_ceil_offset() {
        let img = RgbImage::new(1, 1, vec![9, 9, 9]).unwrap();
        let out = center_crop(&img, 2, 4);
        // Row offset ceil(1/2) = 1, column offset ceil(3/2) = 2.
        let mut want = vec![0u8; 2 * 4 * 3];
        want[(4 + 2) * 3..(4 + 2) * 3 + 3].copy_from_slice(&[9, 9, 9]);
        assert_eq!(out.data, want);
    }

    #[test]
    fn center_crop_takes_floor_offset() {
        let data: Vec<u8> = (0..5u8).flat_map(|v| [v; 3]).collect();
        let img = RgbImage::new(5, 1, data).unwrap();
        let out = center_crop(&img, 1, 2);
        assert_eq!(out.data, vec![1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn config_fills_vit_defaults_for_missing_keys() {
        let cfg =
            PreprocessorConfig::from_json(&json!({"image_processor_type": "ViTImageProcessor"}))
                .unwrap();
        assert_eq!(
            cfg.resize,
            Some(ResizeTo::Exact {
                height: 224,
                width: 224
            })
        );
        assert_eq!(cfg.resample, Filter::Bilinear);
        assert_eq!(cfg.center_crop, None);
        assert_eq!(cfg.normalize, Some(([0.5; 3], [0.5; 3])));
    }

    #[test]
    fn configs_written_by_convert_presets_parse() {
        let vit =
            crate::model::preprocessor::preprocessor_config(crate::model::Preprocessor::Vit, 224);
        let cfg = PreprocessorConfig::from_json(&vit).unwrap();
        assert_eq!(cfg.resample, Filter::Bilinear);
        let crop = crate::model::preprocessor::preprocessor_config(
            crate::model::Preprocessor::ImagenetCrop,
            224,
        );
        let cfg = PreprocessorConfig::from_json(&crop).unwrap();
        assert_eq!(cfg.resize, Some(ResizeTo::ShortestEdge(256)));
        assert_eq!(cfg.center_crop, Some((224, 224)));
        assert!(cfg.do_convert_rgb);
    }

    #[test]
    fn config_without_known_type_needs_explicit_flags() {
        let err = PreprocessorConfig::from_json(&json!({"size": 32})).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Config { .. }), "{err}");
    }

    #[test]
    fn config_rejects_bad_resample_code() {
        let err = PreprocessorConfig::from_json(
            &json!({"image_processor_type": "ViTImageProcessor", "resample": 9}),
        )
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Config { .. }), "{err}");
    }

    #[test]
    fn config_rejects_zero_size() {
        let err = PreprocessorConfig::from_json(&json!({
            "image_processor_type": "ViTImageProcessor", "size": {"height": 0, "width": 3}
        }))
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Config { .. }), "{err}");
    }

    #[test]
    fn legacy_int_size_follows_default_to_square() {
        let vit = PreprocessorConfig::from_json(
            &json!({"image_processor_type": "ViTImageProcessor", "size": 32}),
        )
        .unwrap();
        assert_eq!(
            vit.resize,
            Some(ResizeTo::Exact {
                height: 32,
                width: 32
            })
        );
        let bit = PreprocessorConfig::from_json(
            &json!({"image_processor_type": "BitImageProcessor", "size": 32, "crop_size": 32}),
        )
        .unwrap();
        assert_eq!(bit.resize, Some(ResizeTo::ShortestEdge(32)));
    }

    #[test]
    fn convert_rgb_whitens_the_transparent_colour_only() {
        let rgb = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let decoded = Decoded {
            rgb,
            transparent: Some([1, 2, 3]),
        };
        let mut cfg =
            PreprocessorConfig::from_json(&json!({"image_processor_type": "BitImageProcessor"}))
                .unwrap();
        cfg.resize = None;
        cfg.center_crop = None;
        assert_eq!(
            geometry(decoded.clone(), &cfg, &crate::Limits::DEFAULT)
                .unwrap()
                .data,
            vec![255, 255, 255, 4, 5, 6]
        );
        cfg.do_convert_rgb = false;
        assert_eq!(
            geometry(decoded, &cfg, &crate::Limits::DEFAULT)
                .unwrap()
                .data,
            vec![1, 2, 3, 4, 5, 6]
        );
    }
}
