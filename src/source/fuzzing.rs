//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of the API).
//!
//! Each function feeds arbitrary bytes to one reader and, when the bytes parse, reads every
//! listed tensor. It panics only when a reader breaks its contract (a read that succeeds with a
//! dtype, shape or length other than the listing says) — a panic anywhere else is a bug the fuzzer
//! reports.

use crate::mmap::FileBytes;
use crate::source::pickle::parse_pickle;
use crate::source::torch::extract;
use crate::source::{flax, npy, npz, safetensors, torch_legacy, torch_zip, TensorSource};
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
    if let Ok(parsed) = parse_pickle(data, 0) {
        assert!(parsed.end <= data.len());
        let _ = extract(&parsed);
    }
}

/// The torch zip container.
pub fn torch_zip(data: &[u8]) {
    read_parsed(torch_zip::TorchZipSource::parse(FileBytes::from_vec(
        data.to_vec(),
    )));
}

/// The torch legacy container.
pub fn torch_legacy(data: &[u8]) {
    read_parsed(torch_legacy::TorchLegacySource::parse(FileBytes::from_vec(
        data.to_vec(),
    )));
}

/// A single `.npy`.
pub fn npy(data: &[u8]) {
    read_parsed(npy::NpySource::parse(FileBytes::from_vec(data.to_vec())));
}

/// A `.npz` archive.
pub fn npz(data: &[u8]) {
    read_parsed(npz::NpzSource::parse(FileBytes::from_vec(data.to_vec())));
}

/// A safetensors file.
pub fn safetensors(data: &[u8]) {
    read_parsed(safetensors::SafetensorsSource::parse(FileBytes::from_vec(
        data.to_vec(),
    )));
}

/// A Flax `flax_model.msgpack`.
pub fn flax(data: &[u8]) {
    read_parsed(flax::FlaxSource::parse(FileBytes::from_vec(data.to_vec())));
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
    if let Ok(back) = crate::mapping::plan_reverse(&table, &infos, &bindings) {
        let back = crate::mapping::PlannedSource::new(&forward, back);
        if small(forward.tensors()) && small(back.tensors()) {
            read_every_tensor(&back);
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
        for d in &rule.shape {
            for s in d.symbols() {
                bindings.insert(s.to_string(), 2);
            }
        }
    }
    let mut src = crate::source::MemorySource::new();
    for (k, rule) in table.rules.iter().take(FUZZ_RULES).enumerate() {
        let Some(shape) = rule
            .shape
            .iter()
            .map(|d| d.eval(&bindings))
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        let Some(bytes) = crate::tensor::checked_byte_len(crate::tensor::DType::F32, &shape)
            .filter(|&b| b <= 4096)
        else {
            continue;
        };
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
            for p in &rule.from {
                let name = format!("{prefix}{}", p.render(i));
                if let Ok(t) = crate::tensor::Tensor::new(
                    crate::tensor::DType::F32,
                    shape.clone(),
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
}
