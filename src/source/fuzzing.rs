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

/// A mapping table (TOML text).
pub fn mapping_table(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::mapping::MappingTable::from_toml(text, "fuzz.toml");
    }
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
