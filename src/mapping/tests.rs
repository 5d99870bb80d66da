//! Engine behaviour on synthetic timm/JAX listings: every refusal names table and line, and
//! forward → reverse is bit-exact.

use std::borrow::Cow;

use super::*;
use crate::source::MemorySource;
use crate::tensor::{DType, Tensor};

/// An in-memory source with deterministic, distinct bytes per tensor (f32, in list order).
fn mem_source(list: &[(&str, &[usize])]) -> MemorySource {
    let mut src = MemorySource::new();
    for (k, (name, shape)) in list.iter().enumerate() {
        let n = shape.iter().product::<usize>() * DType::F32.size();
        let bytes: Vec<u8> = (0..n).map(|j| (j * 31 + k * 7 + j / 4) as u8).collect();
        let t = Tensor::new(DType::F32, shape.to_vec(), Cow::Owned(bytes)).unwrap();
        src.insert(name, t).unwrap();
    }
    src
}

/// A timm ViT listing: D=8, M=16, 2 layers, patch 4 on a 8x8 image (4 patches), K=3.
pub(crate) fn timm_listing(prefix: &str, layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, 8]),
        ("pos_embed".into(), vec![1, 5, 8]),
        ("patch_embed.proj.weight".into(), vec![8, 3, 4, 4]),
        ("patch_embed.proj.bias".into(), vec![8]),
    ];
    for i in 0..layers {
        for (n, s) in [
            ("norm1.weight", vec![8]),
            ("norm1.bias", vec![8]),
            ("attn.qkv.weight", vec![24, 8]),
            ("attn.qkv.bias", vec![24]),
            ("attn.proj.weight", vec![8, 8]),
            ("attn.proj.bias", vec![8]),
            ("norm2.weight", vec![8]),
            ("norm2.bias", vec![8]),
            ("mlp.fc1.weight", vec![16, 8]),
            ("mlp.fc1.bias", vec![16]),
            ("mlp.fc2.weight", vec![8, 16]),
            ("mlp.fc2.bias", vec![8]),
        ] {
            v.push((format!("blocks.{i}.{n}"), s));
        }
    }
    v.push(("norm.weight".into(), vec![8]));
    v.push(("norm.bias".into(), vec![8]));
    v.push(("head.weight".into(), vec![3, 8]));
    v.push(("head.bias".into(), vec![3]));
    v.into_iter()
        .map(|(n, s)| (format!("{prefix}{n}"), s))
        .collect()
}

fn source(list: &[(String, Vec<usize>)]) -> MemorySource {
    let refs: Vec<(&str, &[usize])> = list
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    mem_source(&refs)
}

fn mapping_reason(e: &crate::Error) -> (String, usize, String) {
    match e.kind() {
        ErrorKind::Mapping { file, line, reason } => (file.clone(), *line, reason.clone()),
        other => panic!("expected a mapping error, got {other:?}"),
    }
}

#[test]
fn builtin_tables_parse() {
    for t in MappingTable::builtins().unwrap() {
        assert!(!t.rules.is_empty(), "{}", t.id);
    }
}

#[test]
fn timm_qkv_split_is_a_contiguous_row_split() {
    let src = source(&timm_listing("", 2));
    let t = MappingTable::builtin("timm").unwrap();
    let plan = plan_forward(&t, src.tensors(), None).unwrap();
    assert_eq!(plan.report.layers, 2);
    assert_eq!(plan.bindings["D"], 8);
    let planned = PlannedSource::new(&src, plan);
    let qkv = src.read("blocks.1.attn.qkv.weight").unwrap();
    let third = qkv.data.len() / 3;
    for (k, n) in ["query", "key", "value"].iter().enumerate() {
        let got = planned
            .read(&format!("encoder.layer.1.attention.attention.{n}.weight"))
            .unwrap();
        assert_eq!(got.shape, vec![8, 8]);
        assert_eq!(&got.data[..], &qkv.data[k * third..(k + 1) * third]);
    }
}

#[test]
fn wrappers_and_prefixes_are_stripped() {
    let src = source(&timm_listing("state_dict/module._orig_mod.", 1));
    let t = MappingTable::builtin("timm").unwrap();
    let plan = plan_forward(&t, src.tensors(), None).unwrap();
    assert_eq!(plan.report.selected.as_deref(), Some("state_dict"));
    assert!(plan
        .targets
        .iter()
        .any(|p| p.info.name == "embeddings.cls_token"));
}

#[test]
fn unconsumed_tensor_names_the_tensor_and_table() {
    let mut l = timm_listing("", 1);
    l.push(("blocks.0.attn.extra".into(), vec![8]));
    let e = plan_forward(
        &MappingTable::builtin("timm").unwrap(),
        source(&l).tensors(),
        None,
    )
    .unwrap_err();
    let (file, _, reason) = mapping_reason(&e);
    assert_eq!(file, "mappings/timm.toml");
    assert!(
        reason.contains("no rule consumes source tensor blocks.0.attn.extra"),
        "{reason}"
    );
}

#[test]
fn layer_gap_is_refused() {
    let l: Vec<_> = timm_listing("", 3)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("blocks.1."))
        .collect();
    let e = plan_forward(
        &MappingTable::builtin("timm").unwrap(),
        source(&l).tensors(),
        None,
    )
    .unwrap_err();
    let (_, _, reason) = mapping_reason(&e);
    assert!(reason.contains("layer 1 is missing"), "{reason}");
}

#[test]
fn missing_per_layer_tensor_names_the_rule_line() {
    let l: Vec<_> = timm_listing("", 2)
        .into_iter()
        .filter(|(n, _)| n != "blocks.1.mlp.fc2.bias")
        .collect();
    let e = plan_forward(
        &MappingTable::builtin("timm").unwrap(),
        source(&l).tensors(),
        None,
    )
    .unwrap_err();
    let (_, line, reason) = mapping_reason(&e);
    assert!(line > 0);
    assert!(
        reason.contains("blocks.1.mlp.fc2.bias is missing"),
        "{reason}"
    );
}

#[test]
fn contradicting_shape_is_refused() {
    let mut l = timm_listing("", 1);
    for (n, s) in &mut l {
        if n == "blocks.0.mlp.fc2.weight" {
            *s = vec![8, 15];
        }
    }
    let e = plan_forward(
        &MappingTable::builtin("timm").unwrap(),
        source(&l).tensors(),
        None,
    )
    .unwrap_err();
    let (_, line, reason) = mapping_reason(&e);
    assert!(line > 0);
    assert!(
        reason.contains("contradicts the table's [D, M]"),
        "{reason}"
    );
}

#[test]
fn layer_scale_is_refused_with_the_feature_name() {
    let mut l = timm_listing("", 1);
    l.push(("blocks.0.ls1.gamma".into(), vec![8]));
    let e = plan_forward(
        &MappingTable::builtin("timm").unwrap(),
        source(&l).tensors(),
        None,
    )
    .unwrap_err();
    match e.kind() {
        ErrorKind::UnsupportedFeature {
            feature,
            tensor,
            rule,
        } => {
            assert!(feature.contains("layer scale"));
            assert_eq!(tensor, "blocks.0.ls1.gamma");
            assert!(rule.starts_with("mappings/timm.toml:"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn target_produced_twice_is_refused() {
    let text = MappingTable::builtin("timm")
        .unwrap()
        .text()
        .replace("to = \"layernorm.bias\"", "to = \"layernorm.weight\"");
    let t = MappingTable::from_toml(&text, "dup.toml").unwrap();
    let e = plan_forward(&t, source(&timm_listing("", 1)).tensors(), None).unwrap_err();
    let (file, _, reason) = mapping_reason(&e);
    assert_eq!(file, "dup.toml");
    assert!(
        reason.contains("target layernorm.weight is produced twice"),
        "{reason}"
    );
}

#[test]
fn forward_then_reverse_is_bit_exact_for_timm_and_jax() {
    let src = source(&timm_listing("", 2));
    let timm = MappingTable::builtin("timm").unwrap();
    let plan = plan_forward(&timm, src.tensors(), None).unwrap();
    let canon = PlannedSource::new(&src, plan);
    let mut b = crate::mapping::dims::Bindings::new();
    for (k, v) in [
        ("D", 8),
        ("M", 16),
        ("H", 2),
        ("hd", 4),
        ("P", 4),
        ("C", 3),
        ("T", 5),
        ("K", 3),
        ("R", 8),
        ("F", 8),
    ] {
        b.insert(k.to_string(), v);
    }
    // canonical → timm reproduces every source tensor exactly.
    let back = plan_reverse(&timm, canon.tensors(), &b).unwrap();
    let back = PlannedSource::new(&canon, back);
    assert_eq!(back.tensors().len(), src.tensors().len());
    for info in src.tensors() {
        assert_eq!(
            back.read(&info.name).unwrap(),
            src.read(&info.name).unwrap(),
            "{}",
            info.name
        );
    }
    // canonical → jax → canonical is exact too.
    let jax = MappingTable::builtin("jax").unwrap();
    let to_jax = PlannedSource::new(&canon, plan_reverse(&jax, canon.tensors(), &b).unwrap());
    let q = to_jax
        .info("Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel")
        .unwrap();
    assert_eq!(q.shape, vec![8, 2, 4]);
    let again = plan_forward(&jax, to_jax.tensors(), None).unwrap();
    assert_eq!(again.bindings["H"], 2);
    let again = PlannedSource::new(&to_jax, again);
    for info in canon.tensors() {
        assert_eq!(
            again.read(&info.name).unwrap(),
            canon.read(&info.name).unwrap(),
            "{}",
            info.name
        );
    }
}
