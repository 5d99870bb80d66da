//! Image preprocessing against transformers' PIL-backed image processors and Pillow's resize
//! (fixtures/image/, written by fixtures/generate_image.py; no Python needed here).

use std::path::{Path, PathBuf};

use vit_convert::image::{preprocess, resize, Filter, RgbImage};
use vit_convert::verify::F32Array;
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

fn expected(cfg: &str, image: &str) -> F32Array {
    let path = dir()
        .join(cfg)
        .join(format!("{}.npy", image.replace('.', "_")));
    F32Array::read_npy(&path).unwrap()
}

fn max_abs_diff(a: &F32Array, b: &F32Array) -> f32 {
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
    let expected = vit_convert::open(dir().join("resize_rgb_50x40.npz")).unwrap();
    let decoded = vit_convert::image::read_image(&dir().join("rgb_50x40.png")).unwrap();
    let mut seen = 0;
    for info in expected.tensors() {
        let name = info.name.as_str();
        let (f, size) = name.split_once('_').unwrap();
        let filter = Filter::from_pil_code(f.trim_start_matches('f').parse().unwrap()).unwrap();
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        assert_eq!(
            (info.dtype, info.shape.clone()),
            (vit_convert::DType::U8, vec![h, w, 3])
        );
        let want = expected.read(name).unwrap();
        let got = resize(&decoded.rgb, w, h, filter);
        assert_eq!(got.as_bytes(), &want.data[..], "{name}");
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
        matches!(err.kind(), ErrorKind::MalformedImage { .. }),
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
