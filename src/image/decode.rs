//! Decoding PNG and JPEG files to 8-bit RGB the way `transformers.image_utils.load_image` does
//! (`PIL.Image.open` → `ImageOps.exif_transpose` → `convert("RGB")`).
//!
//! Pillow's `convert("RGB")`, per PNG kind:
//!
//! | PNG | Pillow mode | to RGB |
//! |---|---|---|
//! | RGB 8 / RGBA 8 | `RGB` / `RGBA` | alpha dropped (not composited) |
//! | RGB 16 / RGBA 16 / LA 16 | `RGB` / `RGBA` / `LA` (raw `;16B`) | high byte of each sample |
//! | gray 1/2/4/8, LA 8 | `1` / `L` / `LA` | value replicated (low bit depths scaled to 0–255) |
//! | gray 16 | `I;16` | value **clamped** to 255 (not scaled: Pillow's `I;16 → RGB`) |
//! | palette | `P` | palette lookup, alpha from `tRNS` dropped |
//!
//! A `tRNS` chunk survives `convert("RGB")` as `info["transparency"]`: for RGB and gray images the
//! raw `tRNS` sample values, for palette images with a single fully transparent entry that
//! entry's colour. HF's `convert_to_rgb` (run when `do_convert_rgb` is true) then composites onto
//! white, which turns every pixel equal to that colour white. [`Decoded::transparent`] carries it.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, Limits};

use super::{check_pixels, RgbImage, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
use crate::error::{Error, ErrorKind, Result};

/// Largest image file read into memory (bytes).
pub(crate) const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// Most bytes the decoder may allocate for one image: an 8-bit RGB image of [`MAX_IMAGE_PIXELS`]
/// (537 MB). A PNG compresses a blank image about 1000:1, so without this a 1.3 MB 16-bit RGBA
/// PNG within the pixel limit decoded into 1.35 GB (1.8 GB peak with the RGB copy).
pub(crate) const MAX_IMAGE_DECODE_BYTES: u64 = 3 * MAX_IMAGE_PIXELS;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";

/// A decoded image plus the colour Pillow would keep as `info["transparency"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The image as `convert("RGB")` returns it.
    pub rgb: RgbImage,
    /// The `transparency` colour that survives `convert("RGB")`, as raw sample values.
    pub transparent: Option<[u16; 3]>,
}

pub use crate::vocab::ImageFormat;

/// Reads and decodes an image file (PNG or JPEG, sniffed from its leading bytes).
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be read, [`ErrorKind::UnknownFormat`] for anything but
/// PNG or JPEG, [`ErrorKind::MalformedImage`] for a corrupt file, and
/// [`ErrorKind::BudgetExceeded`] for images larger than the limits. The error carries `path`.
pub fn read_image(path: &Path) -> Result<Decoded> {
    let limit = usize::try_from(MAX_IMAGE_FILE_BYTES).unwrap_or(usize::MAX);
    let bytes = crate::fsio::read_regular(path, limit, "image file size")?;
    decode_image(&bytes).map_err(|e| e.with_path(path))
}

/// Decodes PNG or JPEG bytes; see [`read_image`].
///
/// # Errors
/// As [`read_image`], without a path.
pub fn decode_image(bytes: &[u8]) -> Result<Decoded> {
    if bytes.starts_with(PNG_MAGIC) {
        let transparent = png_transparency(bytes)?;
        let decoder = image::codecs::png::PngDecoder::with_limits(Cursor::new(bytes), limits())
            .map_err(|e| image_error(ImageFormat::Png, e))?;
        let rgb = finish(decoder, ImageFormat::Png)?;
        Ok(Decoded { rgb, transparent })
    } else if bytes.starts_with(JPEG_MAGIC) {
        let mut decoder = image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes))
            .map_err(|e| image_error(ImageFormat::Jpeg, e))?;
        decoder
            .set_limits(limits())
            .map_err(|e| image_error(ImageFormat::Jpeg, e))?;
        let rgb = finish(decoder, ImageFormat::Jpeg)?;
        Ok(Decoded {
            rgb,
            transparent: None,
        })
    } else {
        let magic: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(ErrorKind::UnknownFormat {
            magic: format!("{magic} (expected a PNG or JPEG image)"),
        }
        .into())
    }
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_IMAGE_SIDE);
    l.max_image_height = Some(MAX_IMAGE_SIDE);
    l.max_alloc = Some(MAX_IMAGE_DECODE_BYTES);
    l
}

fn finish(mut decoder: impl ImageDecoder, container: ImageFormat) -> Result<RgbImage> {
    let (w, h) = decoder.dimensions();
    check_pixels(u64::from(w).saturating_mul(u64::from(h)))?;
    // The decoders check their own buffers against `max_alloc`; the image buffer
    // `from_decoder` allocates is checked here.
    if decoder.total_bytes() > MAX_IMAGE_DECODE_BYTES {
        return Err(ErrorKind::BudgetExceeded {
            budget: "image decoder memory",
            limit: MAX_IMAGE_DECODE_BYTES,
            offset: 0,
        }
        .into());
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| image_error(container, e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(container, e))?;
    img.apply_orientation(orientation);
    to_rgb8(img, container)
}

/// Pillow's `convert("RGB")` for every layout the PNG and JPEG decoders produce.
fn to_rgb8(img: DynamicImage, container: ImageFormat) -> Result<RgbImage> {
    let width = usize::try_from(img.width()).unwrap_or(usize::MAX);
    let height = usize::try_from(img.height()).unwrap_or(usize::MAX);
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b.into_raw().chunks_exact(4).flat_map(rgb3).collect(),
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().flat_map(|&v| [v; 3]).collect(),
        DynamicImage::ImageLumaA8(b) => b.into_raw().chunks_exact(2).flat_map(gray).collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| high(v)).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| rgb3(p).map(high))
            .collect(),
        // `I;16` → RGB clamps instead of scaling.
        DynamicImage::ImageLuma16(b) => {
            b.into_raw().iter().flat_map(|&v| [clamp16(v); 3]).collect()
        }
        // 16-bit gray + tRNS decodes as LA16; Pillow still sees `I;16` and clamps.
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| gray(p).map(clamp16))
            .collect(),
        other => {
            return Err(ErrorKind::MalformedImage {
                format: container,
                reason: format!("unsupported pixel layout {:?}", other.color()),
            }
            .into())
        }
    };
    RgbImage::new(width, height, data).ok_or_else(|| {
        ErrorKind::MalformedImage {
            format: container,
            reason: "decoded pixel count does not match the image size".into(),
        }
        .into()
    })
}

fn rgb3<T: Copy + Default>(p: &[T]) -> [T; 3] {
    match p {
        [r, g, b, ..] => [*r, *g, *b],
        _ => [T::default(); 3],
    }
}

fn gray<T: Copy + Default>(p: &[T]) -> [T; 3] {
    [p.first().copied().unwrap_or_default(); 3]
}

fn high(v: u16) -> u8 {
    v.to_be_bytes()[0]
}

fn clamp16(v: u16) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

fn image_error(container: ImageFormat, e: image::ImageError) -> Error {
    match e {
        image::ImageError::IoError(io) => ErrorKind::MalformedImage {
            format: container,
            reason: io.to_string(),
        }
        .into(),
        image::ImageError::Limits(l) => {
            let (budget, limit) = match l.kind() {
                image::error::LimitErrorKind::DimensionError => {
                    ("image dimensions", u64::from(MAX_IMAGE_SIDE))
                }
                _ => ("image decoder memory", MAX_IMAGE_DECODE_BYTES),
            };
            ErrorKind::BudgetExceeded {
                budget,
                limit,
                offset: 0,
            }
            .into()
        }
        other => ErrorKind::MalformedImage {
            format: container,
            reason: other.to_string(),
        }
        .into(),
    }
}

/// Walks the PNG chunks before `IDAT` and returns the colour Pillow keeps in
/// `info["transparency"]` after `convert("RGB")` (see the module docs).
///
/// Chunk lengths are checked against the bytes present; the decoder validates CRCs and the rest.
fn png_transparency(bytes: &[u8]) -> Result<Option<[u16; 3]>> {
    let mut pos = PNG_MAGIC.len();
    let mut color_type = None;
    let mut bit_depth = 0u8;
    let mut palette: &[u8] = &[];
    loop {
        let Some(head) = bytes.get(pos..pos.saturating_add(8)) else {
            return Ok(None); // truncated: the decoder reports it
        };
        let len = usize::try_from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
            .unwrap_or(usize::MAX);
        let kind = &head[4..8];
        let start = pos + 8;
        let Some(end) = start.checked_add(len) else {
            return Ok(None);
        };
        let Some(body) = bytes.get(start..end) else {
            return Ok(None);
        };
        match kind {
            b"IHDR" => {
                if let [.., depth, ct, _, _, _] = body {
                    bit_depth = *depth;
                    color_type = Some(*ct);
                }
            }
            b"PLTE" => palette = body,
            b"tRNS" => return Ok(trns_color(color_type, bit_depth, palette, body)),
            b"IDAT" | b"IEND" => return Ok(None),
            _ => {}
        }
        pos = match end.checked_add(4) {
            Some(p) => p,
            None => return Ok(None),
        };
    }
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// PngImagePlugin's `chunk_tRNS` followed by `convert("RGB")`'s transparency translation.
fn trns_color(color_type: Option<u8>, bit_depth: u8, palette: &[u8], t: &[u8]) -> Option<[u16; 3]> {
    match color_type? {
        // Gray: `1` (bit depth 1) and `I;16` (16) do not translate to RGB; `L` does.
        0 if bit_depth != 1 && bit_depth != 16 => {
            let v = be16(t, 0)?;
            Some([v; 3])
        }
        2 => Some([be16(t, 0)?, be16(t, 2)?, be16(t, 4)?]),
        3 => {
            // Only "one fully transparent entry, every other opaque" becomes a single colour
            // (`_simple_palette = b"^\xff*\x00\xff*$"`); other tables are dropped by convert.
            let zeros = t.iter().filter(|&&a| a == 0).count();
            let simple = zeros == 1 && t.iter().all(|&a| a == 0 || a == 0xff);
            if !simple {
                return None;
            }
            let i = t.iter().position(|&a| a == 0)?;
            let c = palette.get(i * 3..i * 3 + 3)?;
            Some([c[0], c[1], c[2]].map(u16::from))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_unknown_magic() {
        let err = decode_image(b"GIF89a....").unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::UnknownFormat { .. }),
            "{err}"
        );
    }

    #[test]
    fn decode_rejects_truncated_png() {
        let err = decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0").unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::MalformedImage { .. }),
            "{err}"
        );
    }

    #[test]
    fn palette_trns_with_one_transparent_entry_names_its_colour() {
        let pal = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            trns_color(Some(3), 8, &pal, &[0xff, 0, 0xff]),
            Some([4, 5, 6])
        );
        assert_eq!(trns_color(Some(3), 8, &pal, &[0x80, 0, 0xff]), None);
        assert_eq!(trns_color(Some(3), 8, &pal, &[0, 0, 0xff]), None);
    }

    #[test]
    fn gray_trns_translates_except_for_one_and_sixteen_bit() {
        assert_eq!(trns_color(Some(0), 8, &[], &[0, 7]), Some([7, 7, 7]));
        assert_eq!(trns_color(Some(0), 1, &[], &[0, 1]), None);
        assert_eq!(trns_color(Some(0), 16, &[], &[1, 7]), None);
    }
}
