//! Pillow-exact resizing of 8-bit RGB images (`Image.resize` in Pillow 13, `libImaging/Resample.c`
//! and, for NEAREST, `ImagingScaleAffine` in `libImaging/Geometry.c`).
//!
//! Pillow resizes in two separable passes, horizontal first, each producing 8-bit pixels:
//!
//! * For every output index the filter is centred on the input coordinate
//!   `center = (xx + 0.5) * scale` with `scale = in_size / out_size`. When downscaling the filter is
//!   stretched by `scale` (antialiasing): `support = filter_support * max(scale, 1)`.
//! * The taps run from `xmin = (int)(center - support + 0.5)` to `(int)(center + support + 0.5)`,
//!   clamped to the image; weights `filter((x + xmin - center + 0.5) / max(scale, 1))` are
//!   normalised to sum 1 in `f64`, then rounded half away from zero to 22-bit fixed point
//!   (`PRECISION_BITS = 32 - 8 - 2`).
//! * Each output sample is `clip8((1 << 21) + Σ pixel·k)`, i.e. the sum shifted right by 22 bits
//!   and clamped to `0..=255`.
//!
//! A pass is skipped when its dimension does not change. NEAREST does not go through these passes:
//! Pillow maps output pixel `x` to input `floor((x + 0.5) · scale)`, accumulating the position by
//! repeated addition exactly as `ImagingScaleAffine` does.

use super::RgbImage;

/// Fixed-point precision of the filter coefficients (`PRECISION_BITS` in Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A Pillow resampling filter, numbered as `PIL.Image.Resampling` (the `resample` field of
/// `preprocessor_config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filter {
    /// 0: nearest neighbour (pixel centres).
    Nearest,
    /// 1: Lanczos, windowed sinc with support 3.
    Lanczos,
    /// 2: bilinear (triangle), support 1.
    Bilinear,
    /// 3: bicubic (Keys, a = -0.5), support 2.
    Bicubic,
    /// 4: box, support 0.5.
    Box,
    /// 5: Hamming-windowed sinc, support 1.
    Hamming,
}

impl Filter {
    /// The filter for a Pillow resampling code (0–5).
    pub fn from_pil_code(code: u64) -> Option<Filter> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    /// The Pillow resampling code (0–5).
    pub fn pil_code(self) -> u8 {
        match self {
            Filter::Nearest => 0,
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    /// The filter's support radius at scale 1 (Nearest has none: it is not a convolution).
    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The filter kernel, transcribed from Resample.c (including its `float` constants).
    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // `0.54f + 0.46f * cos(x)`: the constants are C floats.
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Per-output-index taps of one pass: first input index and fixed-point weights.
struct Taps {
    /// `(xmin, weights)` per output index; `weights.len()` is Pillow's `xmax - xmin`.
    rows: Vec<(usize, Vec<i64>)>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-image box (`in0 = 0`, `in1 = in_size`).
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    // Sizes are bounded by `MAX_IMAGE_SIDE`, far inside f64's exact integers.
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let one = f64::from(1u32 << PRECISION_BITS);
    let rows = (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `(int)(v + 0.5)` truncates toward zero; negative results are clamped to 0 anyway.
            let xmin = trunc_to_usize(center - support + 0.5);
            let xmax = trunc_to_usize(center + support + 0.5).min(in_size);
            let n = xmax.saturating_sub(xmin);
            let mut w: Vec<f64> = (0..n)
                .map(|x| filter.weight(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = w.iter().sum();
            if ww != 0.0 {
                for v in &mut w {
                    *v /= ww;
                }
            }
            let k = w
                .iter()
                .map(|&v| {
                    // `(int)(±0.5 + v * (1 << PRECISION_BITS))`; |v| is a normalised weight, so
                    // the product is far inside i64.
                    let scaled = if v < 0.0 {
                        -0.5 + v * one
                    } else {
                        0.5 + v * one
                    };
                    scaled.trunc() as i64
                })
                .collect();
            (xmin, k)
        })
        .collect();
    Taps { rows }
}

/// `(int)v` for a non-negative coordinate, 0 for negatives (Pillow clamps `xmin < 0` to 0).
fn trunc_to_usize(v: f64) -> usize {
    if v <= 0.0 {
        0
    } else {
        // Coordinates are bounded by image sides (≤ MAX_IMAGE_SIDE); `as` saturates in any case.
        v.trunc() as usize
    }
}

/// `clip8`: shift out the fixed-point fraction and clamp to a byte.
fn clip8(acc: i64) -> u8 {
    let v = acc >> PRECISION_BITS;
    // Clamped to 0..=255 first, so the conversion cannot fail.
    u8::try_from(v.clamp(0, 255)).unwrap_or(u8::MAX)
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Resizes `img` to `width × height` exactly as Pillow's `Image.resize((width, height), filter)`
/// does for an `RGB` image (no `box`, no `reducing_gap`).
///
/// Both target sides must be at least 1; a zero side yields an empty image.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    if img.width == width && img.height == height {
        return img.clone();
    }
    if width == 0 || height == 0 || img.width == 0 || img.height == 0 {
        return RgbImage {
            width,
            height,
            data: vec![0; width.saturating_mul(height).saturating_mul(3)],
        };
    }
    if filter == Filter::Nearest {
        return resize_nearest(img, width, height);
    }
    let need_horizontal = width != img.width;
    let need_vertical = height != img.height;
    if need_horizontal && need_vertical && vertical_first(img.width, img.height, width, height) {
        let vert = precompute(img.height, height, filter);
        let tmp = vertical(img, &vert, height);
        let horiz = precompute(img.width, width, filter);
        return horizontal(&tmp, 0, height, &horiz, width);
    }
    let mut vert = precompute(img.height, height, filter);
    let mut cur = None;
    if need_horizontal {
        // Only the input rows the vertical pass reads are resampled horizontally.
        let first = vert.rows.first().map_or(0, |r| r.0);
        let last = vert
            .rows
            .last()
            .map_or(img.height, |r| r.0 + r.1.len())
            .min(img.height);
        let horiz = precompute(img.width, width, filter);
        cur = Some(horizontal(img, first, last, &horiz, width));
        for r in &mut vert.rows {
            r.0 -= first;
        }
    }
    if need_vertical {
        cur = Some(vertical(cur.as_ref().unwrap_or(img), &vert, height));
    }
    cur.unwrap_or_else(|| img.clone())
}

/// Whether Pillow 13 runs the vertical pass first.
///
/// Not in Pillow's documentation; established by comparing `resize` with the two single-pass
/// orders on ~2 500 random sizes and filters (fixtures/image/README.md): the vertical pass goes
/// first exactly when the image shrinks vertically and the rows removed exceed twice the columns
/// removed (`in_h - out_h > 2 · (in_w - out_w)`, columns added counting negative).
pub(crate) fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let signed = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let rows_removed = signed(in_h) - signed(out_h);
    let cols_removed = signed(in_w) - signed(out_w);
    out_h < in_h && rows_removed > cols_removed.saturating_mul(2)
}

fn horizontal(img: &RgbImage, first: usize, last: usize, taps: &Taps, width: usize) -> RgbImage {
    let rows = last.saturating_sub(first);
    let mut data = Vec::with_capacity(width * rows * 3);
    for y in first..last {
        let row = img.row(y);
        for (xmin, k) in &taps.rows {
            let mut acc = [HALF; 3];
            for (i, &w) in k.iter().enumerate() {
                if let Some(px) = row.get((xmin + i) * 3..(xmin + i) * 3 + 3) {
                    for (a, &p) in acc.iter_mut().zip(px) {
                        *a += i64::from(p) * w;
                    }
                }
            }
            data.extend(acc.iter().map(|&a| clip8(a)));
        }
    }
    RgbImage {
        width,
        height: rows,
        data,
    }
}

fn vertical(img: &RgbImage, taps: &Taps, height: usize) -> RgbImage {
    let row_len = img.width * 3;
    let mut data = Vec::with_capacity(row_len * height);
    let mut acc = vec![0i64; row_len];
    for (ymin, k) in &taps.rows {
        acc.iter_mut().for_each(|a| *a = HALF);
        for (i, &w) in k.iter().enumerate() {
            let row = img.row(ymin + i);
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i64::from(p) * w;
            }
        }
        data.extend(acc.iter().map(|&a| clip8(a)));
    }
    RgbImage {
        width: img.width,
        height,
        data,
    }
}

/// `ImagingScaleAffine`: source index `COORD(xo)` with `xo` starting at `scale / 2` and
/// advanced by repeated addition of `scale` (not multiplication — the rounding differs).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let a = in_size as f64 / out_size as f64;
    let mut xo = a * 0.5;
    let mut out = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        // `xo` is non-negative and below in_size + a; `as` truncates like C's `(int)`.
        out.push((xo.trunc() as usize).min(in_size - 1));
        xo += a;
    }
    out
}

fn resize_nearest(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let xs = nearest_indices(img.width, width);
    let ys = nearest_indices(img.height, height);
    let mut data = Vec::with_capacity(width * height * 3);
    for &y in &ys {
        let row = img.row(y);
        for &x in &xs {
            data.extend_from_slice(row.get(x * 3..x * 3 + 3).unwrap_or(&[0, 0, 0]));
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 77]);
            }
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn resize_to_same_size_is_identity() {
        let img = gradient(7, 5);
        for code in 0..6 {
            let f = Filter::from_pil_code(code).unwrap();
            assert_eq!(resize(&img, 7, 5, f), img);
        }
    }

    #[test]
    fn resize_of_constant_image_stays_constant() {
        let img = RgbImage {
            width: 9,
            height: 4,
            data: [200, 10, 0].repeat(36),
        };
        for code in 0..6 {
            let f = Filter::from_pil_code(code).unwrap();
            for (w, h) in [(3, 2), (20, 11), (9, 13)] {
                let out = resize(&img, w, h, f);
                assert_eq!(out.data, [200, 10, 0].repeat(w * h), "filter {f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn nearest_picks_pixel_centres() {
        assert_eq!(nearest_indices(4, 2), vec![1, 3]);
        assert_eq!(nearest_indices(2, 4), vec![0, 0, 1, 1]);
        assert_eq!(nearest_indices(3, 3), vec![0, 1, 2]);
    }

    #[test]
    fn pil_codes_round_trip() {
        for code in 0..6 {
            assert_eq!(
                u64::from(Filter::from_pil_code(code).unwrap().pil_code()),
                code
            );
        }
        assert_eq!(Filter::from_pil_code(6), None);
    }
}
