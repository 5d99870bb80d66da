//! Image preprocessing against transformers' PIL-backed image processors and Pillow's resize
//! (fixtures/image/, written by fixtures/generate_image.py; no Python needed here).

use std::path::{Path, PathBuf};

use vit_convert::image::{preprocess, resize, Filter, RgbImage};
use vit_convert::verify::Array;
use vit_convert::ErrorKind;

/// The agreement the brief asks for with HF's pixel values (in practice the match is exact).
const PIXEL_TOL: f32 = 1e-5;
/// JPEG decoders differ from libjpeg by ±1 per sample in places; one level is 1/255/std.
const JPEG_TOL: f32 = 0.1;

const CONFIGS: [&str; 5] = ["vit", "bit", "deit", "croppad", "aspect"];
const PNGS: [&str; 7] = [
    "rgb_50x40.png",
    "rgba_31x57.png",
    "gray_20x20.png",
    "palette_trns_23x17.png",
    "gray16_12x9.png",
    "rgb16_19x13.png",
    "exif_rot6_36x24.png",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/image")
}

fn config(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join(name).join("preprocessor_config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A minimal `.npy` reader for the fixtures (C order, `<f4` or `|u1`), so these tests do not
/// depend on the crate's own readers.
fn parse_npy(bytes: &[u8]) -> (String, Vec<usize>, Vec<u8>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (hlen, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ => (
            usize::try_from(u32::from_le_bytes(bytes[8..12].try_into().unwrap())).unwrap(),
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let descr = header.split("'descr': '").nth(1).unwrap();
    let descr = descr[..descr.find('\'').unwrap()].to_string();
    let shape = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, shape, bytes[start + hlen..].to_vec())
}

fn expected(cfg: &str, image: &str) -> Array {
    let path = dir()
        .join(cfg)
        .join(format!("{}.npy", image.replace('.', "_")));
    let (descr, shape, data) = parse_npy(&std::fs::read(path).unwrap());
    assert_eq!(descr, "<f4");
    let data = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Array { shape, data }
}

fn max_abs_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn preprocess_matches_hf_pil_backend_on_every_png_and_config() {
    let mut worst = 0.0f32;
    for cfg in CONFIGS {
        let json = config(cfg);
        for img in PNGS {
            let got = preprocess(&[dir().join(img)], &json).unwrap();
            let want = expected(cfg, img);
            let d = max_abs_diff(&got, &want);
            assert!(d <= PIXEL_TOL, "{cfg}/{img}: max |Δ| = {d}");
            worst = worst.max(d);
        }
    }
    assert!(worst <= PIXEL_TOL);
}

#[test]
fn jpeg_decoding_is_within_a_few_levels_of_pil() {
    for cfg in CONFIGS {
        let got = preprocess(&[dir().join("rgb_50x40.jpg")], &config(cfg)).unwrap();
        let d = max_abs_diff(&got, &expected(cfg, "rgb_50x40.jpg"));
        assert!(d <= JPEG_TOL, "{cfg}: JPEG max |Δ| = {d}");
    }
}

#[test]
fn resize_matches_pillow_for_every_filter_and_size() {
    let file = std::fs::File::open(dir().join("resize_rgb_50x40.npz")).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let decoded = vit_convert::image::read_image(&dir().join("rgb_50x40.png")).unwrap();
    let mut seen = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        let entry_name = entry.name().unwrap().to_string();
        let name = entry_name.trim_end_matches(".npy");
        let (f, size) = name.split_once('_').unwrap();
        let filter = Filter::from_pil_code(f.trim_start_matches('f').parse().unwrap()).unwrap();
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        let (descr, shape, want) = parse_npy(&bytes);
        assert_eq!((descr.as_str(), shape), ("|u1", vec![h, w, 3]));
        let got = resize(&decoded.rgb, w, h, filter);
        assert_eq!(got.as_bytes(), &want[..], "{name}");
        seen += 1;
    }
    assert_eq!(seen, 24);
}

#[test]
fn preprocess_stacks_a_batch_in_order() {
    let json = config("deit");
    let imgs = ["gray_20x20.png", "rgb_50x40.png", "rgba_31x57.png"];
    let paths: Vec<PathBuf> = imgs.iter().map(|i| dir().join(i)).collect();
    let got = preprocess(&paths, &json).unwrap();
    assert_eq!(got.shape, vec![3, 3, 32, 32]);
    let per = 3 * 32 * 32;
    for (k, img) in imgs.iter().enumerate() {
        let want = expected("deit", img);
        assert_eq!(&got.data[k * per..(k + 1) * per], &want.data[..], "{img}");
    }
}

#[test]
fn preprocess_rejects_a_batch_whose_images_come_out_at_different_sizes() {
    let paths = [dir().join("rgb_50x40.png"), dir().join("gray_20x20.png")];
    let err = preprocess(&paths, &config("aspect")).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidOption { .. }),
        "{err}"
    );
    assert_eq!(err.path(), Some(paths[1].as_path()));
    assert!(err.to_string().contains("different sizes"), "{err}");
}

#[test]
fn preprocess_reports_a_corrupt_png_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dir().join("rgb_50x40.png")).unwrap();
    let bad = tmp.path().join("truncated.png");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let err = preprocess(&[&bad], &config("vit")).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::MalformedContainer { .. }),
        "{err}"
    );
    assert_eq!(err.path(), Some(bad.as_path()));
}

#[test]
fn preprocess_reports_a_missing_file_as_io_error() {
    let missing = dir().join("no_such_image.png");
    let err = preprocess(&[&missing], &config("vit")).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Io { .. }), "{err}");
    assert_eq!(err.path(), Some(missing.as_path()));
}

#[test]
fn preprocess_rejects_a_file_that_is_not_png_or_jpeg() {
    let not_image = dir().join("vit/preprocessor_config.json");
    let err = preprocess(&[&not_image], &config("vit")).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::UnknownFormat { .. }),
        "{err}"
    );
}

#[test]
fn preprocess_rejects_an_empty_batch() {
    let none: [&Path; 0] = [];
    let err = preprocess(&none, &config("vit")).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidOption { .. }),
        "{err}"
    );
}

#[test]
fn preprocess_rejects_a_config_without_size_information() {
    let err = preprocess(
        &[dir().join("rgb_50x40.png")],
        &serde_json::json!({"do_resize": true, "size": {"longest_edge": 3}}),
    )
    .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Config { .. }), "{err}");
}

#[test]
fn decoding_mutated_pngs_and_jpegs_never_panics() {
    // Deterministic xorshift; flips bytes and truncates at many places.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for file in ["rgb_50x40.png", "palette_trns_23x17.png", "rgb_50x40.jpg"] {
        let orig = std::fs::read(dir().join(file)).unwrap();
        for _ in 0..300 {
            let mut b = orig.clone();
            for _ in 0..1 + next() % 4 {
                let i = usize::try_from(next()).unwrap() % b.len();
                b[i] = u8::try_from(next() % 256).unwrap();
            }
            b.truncate(usize::try_from(next()).unwrap() % (b.len() + 1));
            let _ = vit_convert::image::decode_image(&b);
        }
    }
}

#[test]
fn resize_of_a_one_pixel_image_fills_every_output_pixel() {
    let one = RgbImage::new(1, 1, vec![10, 20, 30]).unwrap();
    for code in 0..6 {
        let out = resize(&one, 5, 3, Filter::from_pil_code(code).unwrap());
        assert_eq!(out.as_bytes(), [10, 20, 30].repeat(15).as_slice());
    }
}

#[test]
fn preprocess_refuses_a_resize_target_beyond_the_pixel_budget() {
    let cfg = serde_json::json!({
        "image_processor_type": "ViTImageProcessor",
        "size": {"height": 32768, "width": 32768}
    });
    let err = preprocess(&[dir().join("gray_20x20.png")], &cfg).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::BudgetExceeded { .. }),
        "{err}"
    );
}
