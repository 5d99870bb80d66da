//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of the API).
//!
//! Each function feeds arbitrary bytes to one reader and, when the bytes parse, reads every
//! listed tensor. It panics only when a reader breaks its contract (a read that succeeds with a
//! dtype, shape or length other than the listing says) — a panic anywhere else is a bug the fuzzer
//! reports.

use crate::mmap::FileBytes;
use crate::source::pickle::parse_pickle;
use crate::source::torch::extract;
use crate::source::{flax, npy, npz, safetensors, torch_legacy, torch_zip, Limits, TensorSource};
use crate::tensor::TensorInfo;

/// Reads every listed tensor and checks it against its listing.
pub fn read_every_tensor(src: &dyn TensorSource) {
    let listed: Vec<TensorInfo> = src.tensors().to_vec();
    for info in &listed {
        if let Ok(t) = src.read(&info.name) {
            assert_eq!(
                t.dtype, info.dtype,
                "{}: dtype differs from listing",
                info.name
            );
            assert_eq!(
                t.shape, info.shape,
                "{}: shape differs from listing",
                info.name
            );
            assert_eq!(t.data.len(), info.byte_len(), "{}: data length", info.name);
        }
    }
    let _ = src.metadata().len();
    let _ = src.notes().len();
}

fn read_parsed<S: TensorSource>(parsed: crate::Result<S>) {
    if let Ok(s) = parsed {
        read_every_tensor(&s);
    }
}

/// The pickle machine and the torch tensor walker on one pickle stream.
pub fn pickle(data: &[u8]) {
    if let Ok(parsed) = parse_pickle(data, 0, &Limits::DEFAULT) {
        assert!(parsed.end <= data.len());
        let _ = extract(&parsed);
    }
}

/// The torch zip container.
pub fn torch_zip(data: &[u8]) {
    read_parsed(torch_zip::open(
        FileBytes::from_vec(data.to_vec()),
        &Limits::DEFAULT,
    ));
}

/// The torch legacy container.
pub fn torch_legacy(data: &[u8]) {
    read_parsed(torch_legacy::open(
        FileBytes::from_vec(data.to_vec()),
        &Limits::DEFAULT,
    ));
}

/// A single `.npy`.
pub fn npy(data: &[u8]) {
    read_parsed(npy::NpySource::parse(
        FileBytes::from_vec(data.to_vec()),
        &Limits::DEFAULT,
    ));
}

/// A `.npz` archive.
pub fn npz(data: &[u8]) {
    read_parsed(npz::NpzSource::parse(
        FileBytes::from_vec(data.to_vec()),
        &Limits::DEFAULT,
    ));
}

/// A safetensors file.
pub fn safetensors(data: &[u8]) {
    read_parsed(safetensors::SafetensorsSource::parse(
        FileBytes::from_vec(data.to_vec()),
        &Limits::DEFAULT,
    ));
}

/// A Flax `flax_model.msgpack`.
pub fn flax(data: &[u8]) {
    read_parsed(flax::FlaxSource::parse(
        FileBytes::from_vec(data.to_vec()),
        &Limits::DEFAULT,
    ));
}

/// A mapping table (TOML text): loaded and, when it loads, planned over a small listing made
/// from its own rules (the first 32 rules' `from` names for layers 0 and 1, every
/// shape symbol 2, every other rule's name behind the first strip prefix), then read through the
/// plan when that is small, and planned backwards the same way.
pub fn mapping_table(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = crate::mapping::MappingTable::from_toml(text, "fuzz.toml") else {
        return;
    };
    let src = listing_for(&table);
    let Ok(plan) = crate::mapping::plan_forward(&table, src.tensors(), None) else {
        return;
    };
    let bindings = plan.bindings.clone();
    let forward = crate::mapping::PlannedSource::new(&src, plan);
    if small(forward.tensors()) {
        read_every_tensor(&forward);
    }
    let infos = forward.tensors().to_vec();
    // Every rule backwards, then each declared layout alone (its rules, prefix and buffers).
    let layouts = std::iter::once(None).chain(table.layouts.iter().map(Some));
    for layout in layouts {
        let limits = crate::source::Limits::DEFAULT;
        if let Ok(back) =
            crate::mapping::plan_reverse_within(&table, layout, &infos, &bindings, &limits)
        {
            let back = crate::mapping::PlannedSource::new(&forward, back);
            if small(forward.tensors()) && small(back.tensors()) {
                read_every_tensor(&back);
            }
        }
    }
}

/// How many rules [`mapping_table`] makes source tensors for.
const FUZZ_RULES: usize = 32;

/// At most this many bytes are read through a fuzzed plan (keeps an execution under a millisecond).
const FUZZ_READ_BYTES: usize = 1 << 16;

fn small(infos: &[TensorInfo]) -> bool {
    infos
        .iter()
        .try_fold(0usize, |acc, t| {
            acc.checked_add(crate::tensor::checked_byte_len(t.dtype, &t.shape)?)
        })
        .is_some_and(|b| b <= FUZZ_READ_BYTES)
}

/// Zero-filled f32 tensors named after the table's rules.
fn listing_for(table: &crate::mapping::MappingTable) -> crate::source::MemorySource {
    use std::borrow::Cow;
    let mut bindings = crate::mapping::dims::Bindings::new();
    for rule in table.rules.iter().take(FUZZ_RULES) {
        for d in rule.shapes.iter().flatten() {
            for s in d.symbols() {
                bindings.insert(s.to_string(), 2);
            }
        }
    }
    let mut src = crate::source::MemorySource::new();
    for (k, rule) in table.rules.iter().take(FUZZ_RULES).enumerate() {
        let prefix = match table.strip_prefixes.first() {
            Some(p) if k % 2 == 1 => p.as_str(),
            _ => "",
        };
        let layers: &[Option<usize>] = if rule.is_indexed() {
            &[Some(0), Some(1)]
        } else {
            &[None]
        };
        for &i in layers {
            for (j, p) in rule.from.iter().enumerate() {
                let Some(shape) = rule
                    .shape_of(j)
                    .iter()
                    .map(|d| d.eval(&bindings))
                    .collect::<Option<Vec<usize>>>()
                else {
                    continue;
                };
                let Some(bytes) =
                    crate::tensor::checked_byte_len(crate::tensor::DType::F32, &shape)
                        .filter(|&b| b <= 4096)
                else {
                    continue;
                };
                let name = format!("{prefix}{}", p.render(i));
                if let Ok(t) = crate::tensor::Tensor::new(
                    crate::tensor::DType::F32,
                    shape,
                    Cow::Owned(vec![0; bytes]),
                ) {
                    let _ = src.insert(&name, t);
                }
            }
        }
    }
    src
}

/// What `vit-convert inspect --json` does: sniff, open, list (serialised), then read every tensor.
pub fn inspect(data: &[u8]) {
    if let Ok(src) = crate::source::open_bytes(FileBytes::from_vec(data.to_vec())) {
        let listing = serde_json::to_string(src.tensors());
        assert!(listing.is_ok());
        let _ = serde_json::to_string(src.metadata());
        read_every_tensor(src.as_ref());
    }
}

/// `verify`'s comparison: arbitrary f32 values (or f64 `.npy` bytes), shapes and tolerances
/// through [`crate::verify::compare`], checking its promise: a pass means at least one value was
/// compared, every value on both sides is finite, the bound is finite and every difference lies
/// within it. When the bytes after the first parse as a `.npy`, they go through
/// `F32Array::read_npy`'s parsing too (an f64 value beyond the f32 range is an error, never ±Inf).
pub fn verify_compare(data: &[u8]) {
    use crate::verify::{F32Array, Tolerance};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 != 0 {
        if let Ok(src) = crate::source::open_bytes(FileBytes::from_vec(rest.to_vec())) {
            if let Ok(a) = F32Array::from_npy_source(src.as_ref()) {
                assert_eq!(
                    crate::tensor::checked_numel(&a.shape),
                    Some(a.data.len()),
                    "array length"
                );
                let finite_source = src.tensors().first().is_some_and(|t| {
                    src.read(&t.name).is_ok_and(|t| {
                        t.dtype != crate::tensor::DType::F64
                            || t.data.chunks_exact(8).all(|c| {
                                let v = f64::from_le_bytes([
                                    c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                                ]);
                                !v.is_finite() || v.abs() <= f64::from(f32::MAX) * 1.000_000_1
                            })
                    })
                });
                assert!(finite_source, "an f64 beyond the f32 range was read");
                let got: Vec<f32> = a.data.iter().map(|v| v * 1.000_001).collect();
                check_compare(&got, &a.data, &a.shape, Tolerance::default());
            }
        }
        return;
    }
    // Tolerances from a small table of edge values, then 4-byte values split between the sides.
    const TOLS: [f64; 8] = [0.0, 1e-6, 1e-5, 1e-4, 1.0, 1e30, 1e300, f64::MAX];
    let tol = Tolerance {
        atol: TOLS[usize::from(mode & 7)],
        rtol: TOLS[usize::from((mode >> 3) & 7)],
    };
    let values: Vec<f32> = rest
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let half = values.len() / 2;
    let (got, expected) = values.split_at(half);
    let expected = &expected[..half];
    let shape = if mode & 0x40 != 0 && half > 0 {
        vec![1, half]
    } else {
        vec![half]
    };
    check_compare(got, expected, &shape, tol);
}

/// Runs [`crate::verify::compare`] and asserts that a pass was proven.
fn check_compare(got: &[f32], expected: &[f32], shape: &[usize], tol: crate::verify::Tolerance) {
    if let Ok(r) = crate::verify::compare(got, expected, shape, tol) {
        crate::verify::assert_pass_is_proven(got, expected, tol, &r);
    }
}

/// Side files into a fixed tiny model: `data` is split at NUL bytes into a `config.json` text,
/// a `preprocessor_config.json` text and a few bytes of numbers. The config goes through the
/// path [`Model::load`](crate::forward::Model::load) takes (parse, `ViTConfig::from_json`, build
/// against the tensors, a forward pass on a small input) and through the one `convert` takes for
/// `--config` (inference against the same tensors, then the config and preprocessor documents
/// it writes); the preprocessor config preprocesses a small in-memory image. Budgets are
/// lowered so that whatever passes them runs quickly. Nothing may panic, abort or run out of
/// memory.
pub fn side_files(data: &[u8]) {
    use crate::forward::{tiny, ForwardOptions, Model, PosInterp};
    use crate::image::{preprocess_image, Decoded, PreprocessorConfig, RgbImage};
    use crate::model::{self, ConfigOverrides};

    let mut limits = Limits::DEFAULT;
    limits.preprocess_bytes = 1 << 20;
    limits.forward_bytes = 16 << 20;
    limits.forward_tokens = 1 << 8;

    let mut parts = data.splitn(3, |&b| b == 0);
    let config = parts.next().and_then(|b| std::str::from_utf8(b).ok());
    let pre = parts.next().and_then(|b| std::str::from_utf8(b).ok());
    let nums = parts.next().unwrap_or_default();
    let n = |i: usize| usize::from(nums.get(i).copied().unwrap_or(1));
    // The tiny ViT or the tiny BEiT (relative position bias, layer scale, mean pooling).
    let beit = n(5) & 1 == 1;
    let (src, prefix, base, arch) = if beit {
        (
            tiny::tiny_beit_source(),
            "beit.",
            tiny::tiny_beit_config(),
            model::Architecture::BeitForImageClassification,
        )
    } else {
        (
            tiny::tiny_source(),
            "vit.",
            tiny::tiny_config(),
            model::Architecture::ViTForImageClassification,
        )
    };

    let run = |cfg: crate::Result<crate::model::ViTConfig>| {
        if let Ok(m) = cfg.and_then(|cfg| Model::from_source(&src, cfg)) {
            {
                let c = m.config().num_channels;
                let (b, h, w) = (n(0) % 3, n(1) % 12 + 1, n(2) % 12 + 1);
                let pixels = ndarray::Array4::from_shape_fn((b, c, h, w), |(i, j, k, l)| {
                    let v = nums.get((i + j + k + l) % nums.len().max(1)).copied();
                    f32::from(v.unwrap_or(0)) / 255.0 - 0.5
                });
                let opts = ForwardOptions {
                    interpolate_pos_encoding: n(3) & 1 == 1,
                    pos_interp: if n(3) & 2 == 2 {
                        PosInterp::Dino
                    } else {
                        PosInterp::Hf
                    },
                    limits,
                    compare: None,
                    heads_only: n(3) & 4 == 4,
                };
                let _ = m.forward(pixels.view(), &opts);
            }
        }
    };
    if let Some(text) = config {
        // As a whole config.json, and as fields over the tiny model's own.
        run(crate::forward::parse_config(text));
        if let Ok(serde_json::Value::Object(user)) = serde_json::from_str(text) {
            let mut merged = base.clone();
            if let Some(base) = merged.as_object_mut() {
                base.extend(user.clone());
            }
            run(crate::model::ViTConfig::from_json(&merged));
            let infos: Vec<TensorInfo> = src
                .tensors()
                .iter()
                .map(|t| TensorInfo {
                    name: t.name.strip_prefix(prefix).unwrap_or(&t.name).to_string(),
                    ..t.clone()
                })
                .collect();
            let heads = (n(4) % 4 != 0).then(|| n(4) % 4);
            let overrides = ConfigOverrides {
                config: Some(user),
                ..ConfigOverrides::default()
            };
            let facts = model::TableFacts {
                eps: 1e-6,
                hidden_act: model::Activation::Gelu,
                heads,
            };
            if let Ok((cfg, _)) = model::infer_config(arch, &infos, &facts, &overrides) {
                let _ = cfg.to_json();
                let _ = cfg.symbol_bindings();
                let _ = model::expected_names(&cfg);
                for preset in model::Preprocessor::ALL {
                    let _ = model::preprocessor::preprocessor_config(preset, cfg.image_size);
                }
            }
        }
    }

    if let Some(text) = pre {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            if let Ok(cfg) = PreprocessorConfig::from_json(&v) {
                let (w, h) = (n(5) % 16 + 1, n(6) % 16 + 1);
                let pixels: Vec<u8> = (0..w * h * 3)
                    .map(|i| nums.get(i % nums.len().max(1)).copied().unwrap_or(0))
                    .collect();
                if let Some(rgb) = RgbImage::new(w, h, pixels) {
                    let transparent = (n(7) & 1 == 1).then_some([0, 0, 0]);
                    let _ = preprocess_image(Decoded { rgb, transparent }, &cfg, &limits);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mapping_table_plans_and_reads_the_builtin_tables_quickly() {
        let start = std::time::Instant::now();
        for t in crate::mapping::MappingTable::builtins().unwrap() {
            super::mapping_table(t.text().as_bytes());
            let src = super::listing_for(&t);
            let listing = crate::source::TensorSource::tensors(&src);
            assert!(!listing.is_empty(), "{}", t.id());
            // The listing plans (strip prefixes and two layers included), so the fuzzer reaches
            // planning and reading, not only loading.
            if t.id() == "timm" {
                let plan = crate::mapping::plan_forward(&t, listing, None).unwrap();
                assert_eq!(plan.report.layers, 2);
            }
        }
        let evil = crate::mapping::MappingTable::builtin("timm")
            .unwrap()
            .text()
            .replace(
                "strip_prefixes = [\"module.\", \"_orig_mod.\"]",
                "strip_prefixes = [\"\"]",
            );
        super::mapping_table(evil.as_bytes());
        assert!(start.elapsed().as_secs() < 10);
    }

    /// A smoke run of `verify_compare` over pseudo-random bytes and a few `.npy` arrays (the
    /// fuzz target runs it for real).
    #[test]
    fn verify_compare_holds_on_random_and_npy_inputs() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::verify_compare(&bytes);
        }
        for values in [
            vec![1.0f64, -2.0, 3.5],
            vec![1e39, 0.0],
            vec![f64::INFINITY, f64::NAN],
            vec![],
        ] {
            let mut head = format!(
                "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
                values.len()
            )
            .into_bytes();
            while (10 + head.len() + 1) % 64 != 0 {
                head.push(b' ');
            }
            head.push(b'\n');
            let mut npy = vec![0x80];
            npy.extend_from_slice(b"\x93NUMPY\x01\x00");
            npy.extend_from_slice(&(head.len() as u16).to_le_bytes());
            npy.extend(head);
            npy.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            super::verify_compare(&npy);
        }
    }
}
