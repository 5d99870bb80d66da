//! Writes a timm-layout ViT checkpoint (safetensors, random weights) without Python: the
//! fallback input of `scripts/bench.sh` when the fixture Python environment is absent.
//!
//! ```text
//! cargo bench --bench make_checkpoint -- <ti|s|b|l> <out.safetensors>
//! cargo bench --bench make_checkpoint -- input <out.npy>     # a [1, 3, 224, 224] f32 input
//! ```
//!
//! Weights are drawn from a fixed-seed generator (≈ N(0, 0.02²), LayerNorm weights 1, biases
//! 0), one tensor at a time, so writing ViT-L needs no more memory than its largest tensor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use vit_convert::source::{Format, TensorSource};
use vit_convert::write::{write_safetensors, WriteItem};
use vit_convert::{tensor::Tensor, tensor::TensorInfo, DType};

/// (hidden size, depth) of the timm presets.
fn preset(name: &str) -> Option<(usize, usize)> {
    match name {
        "ti" => Some((192, 12)),
        "s" => Some((384, 12)),
        "b" => Some((768, 12)),
        "l" => Some((1024, 24)),
        _ => None,
    }
}

/// Tensors generated on read.
struct Synthetic {
    infos: Vec<TensorInfo>,
    meta: BTreeMap<String, String>,
}

impl Synthetic {
    fn new(d: usize, depth: usize) -> Synthetic {
        let (p, n, classes) = (16, 14 * 14, 1000);
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("cls_token".into(), vec![1, 1, d]),
            ("pos_embed".into(), vec![1, n + 1, d]),
            ("patch_embed.proj.weight".into(), vec![d, 3, p, p]),
            ("patch_embed.proj.bias".into(), vec![d]),
        ];
        for i in 0..depth {
            let b = format!("blocks.{i}");
            v.extend([
                (format!("{b}.norm1.weight"), vec![d]),
                (format!("{b}.norm1.bias"), vec![d]),
                (format!("{b}.attn.qkv.weight"), vec![3 * d, d]),
                (format!("{b}.attn.qkv.bias"), vec![3 * d]),
                (format!("{b}.attn.proj.weight"), vec![d, d]),
                (format!("{b}.attn.proj.bias"), vec![d]),
                (format!("{b}.norm2.weight"), vec![d]),
                (format!("{b}.norm2.bias"), vec![d]),
                (format!("{b}.mlp.fc1.weight"), vec![4 * d, d]),
                (format!("{b}.mlp.fc1.bias"), vec![4 * d]),
                (format!("{b}.mlp.fc2.weight"), vec![d, 4 * d]),
                (format!("{b}.mlp.fc2.bias"), vec![d]),
            ]);
        }
        v.extend([
            ("norm.weight".into(), vec![d]),
            ("norm.bias".into(), vec![d]),
            ("head.weight".into(), vec![classes, d]),
            ("head.bias".into(), vec![classes]),
        ]);
        Synthetic {
            infos: v
                .into_iter()
                .map(|(name, shape)| TensorInfo {
                    name,
                    dtype: DType::F32,
                    shape,
                })
                .collect(),
            meta: BTreeMap::new(),
        }
    }
}

/// A splitmix64 stream seeded from the tensor's name.
fn values(name: &str, n: usize) -> Vec<u8> {
    let mut state = name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let constant = if name.contains("norm") && name.ends_with(".weight") {
        Some(1.0f32)
    } else if name.ends_with(".bias") {
        Some(0.0)
    } else {
        None
    };
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        let v = constant.unwrap_or_else(|| {
            // Sum of four uniforms: roughly normal, scaled to σ ≈ 0.02.
            let s: f32 = (0..4)
                .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
                .sum();
            (s - 2.0) * 0.035
        });
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

impl TensorSource for Synthetic {
    fn format(&self) -> Format {
        Format::Safetensors
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> vit_convert::Result<Tensor<'_>> {
        let info = self
            .info(name)
            .ok_or_else(|| vit_convert::ErrorKind::TensorNotFound { name: name.into() })?;
        Tensor::new(
            info.dtype,
            info.shape.clone(),
            Cow::Owned(values(name, info.numel())),
        )
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let (Some("input"), Some(out)) = (args.first().map(String::as_str), args.get(1)) {
        write_input(out);
        return;
    }
    let (Some((d, depth)), Some(out)) = (args.first().and_then(|s| preset(s)), args.get(1)) else {
        eprintln!("usage: make_checkpoint <ti|s|b|l> <out.safetensors> | input <out.npy>");
        std::process::exit(2);
    };
    let src = Synthetic::new(d, depth);
    write_model(&src, out);
}

/// A `[1, 3, 224, 224]` input with pixel values in about [-2, 2].
fn write_input(out: &str) {
    let raw = values("input", 3 * 224 * 224);
    let data: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 50.0)
        .collect();
    let arr = vit_convert::verify::F32Array {
        shape: vec![1, 3, 224, 224],
        data,
    };
    if let Err(e) = arr.write_npy(Path::new(out)) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn write_model(src: &Synthetic, out: &str) {
    let items = WriteItem::all(src);
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    match write_safetensors(Path::new(out), src, &items, None, &meta) {
        Ok(bytes) => println!("{out}: {bytes} bytes"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
