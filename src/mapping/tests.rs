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

fn mapping_reason(e: &crate::Error) -> (String, usize, MappingError) {
    match e.kind() {
        ErrorKind::Mapping {
            file,
            line,
            problem,
            ..
        } => (file.clone(), *line, problem.clone()),
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
    let (file, _, problem) = mapping_reason(&e);
    assert_eq!(file, "mappings/timm.toml");
    assert_eq!(
        problem,
        MappingError::Unconsumed {
            names: vec!["blocks.0.attn.extra".into()]
        }
    );
}

/// `ignore_names` drop exactly their names: SigLIP's logit scale `t` and bias `b` go, while a
/// `t…`/`b…` tensor no rule reads is refused (prefixes `t` and `b` used to drop them silently).
#[test]
fn ignore_names_drop_only_their_exact_names() {
    let text = MappingTable::builtin("timm")
        .unwrap()
        .text()
        .replace("[source]\n", "[source]\nignore_names = [\"t\", \"b\"]\n");
    let t = MappingTable::from_toml(&text, "t.toml").unwrap();
    let mut l = timm_listing("", 1);
    l.push(("t".into(), vec![1]));
    l.push(("b".into(), vec![1]));
    let plan = plan_forward(&t, source(&l).tensors(), None).unwrap();
    assert_eq!(plan.report.ignored, ["t", "b"]);
    l.push(("blocks.0.attn.extra".into(), vec![8]));
    let e = plan_forward(&t, source(&l).tensors(), None).unwrap_err();
    let (_, _, problem) = mapping_reason(&e);
    assert_eq!(
        problem,
        MappingError::Unconsumed {
            names: vec!["blocks.0.attn.extra".into()]
        }
    );
}

#[test]
fn unconsumed_sources_are_all_listed() {
    let mut l = timm_listing("", 1);
    let extra: Vec<String> = (0..30).map(|k| format!("blocks.0.extra{k:02}")).collect();
    l.extend(extra.iter().map(|n| (n.clone(), vec![8])));
    let e = plan_forward(
        &MappingTable::builtin("timm").unwrap(),
        source(&l).tensors(),
        None,
    )
    .unwrap_err();
    match mapping_reason(&e).2 {
        MappingError::Unconsumed { names } => assert_eq!(names, extra),
        other => panic!("{other:?}"),
    }
    // The message still abbreviates.
    assert!(e.to_string().contains("(and 29 more: "), "{e}");
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
    let (_, _, problem) = mapping_reason(&e);
    assert_eq!(
        problem,
        MappingError::LayerGap {
            missing: 1,
            found_up_to: 2
        }
    );
}

/// The canonical listing of `timm_listing("", layers)` without the tensors `drop` selects,
/// with the forward plan's bindings.
fn canonical_without(
    layers: usize,
    drop: impl Fn(&str) -> bool,
) -> (
    Vec<crate::tensor::TensorInfo>,
    crate::mapping::dims::Bindings,
) {
    let src = source(&timm_listing("", layers));
    let timm = MappingTable::builtin("timm").unwrap();
    let plan = plan_forward(&timm, src.tensors(), None).unwrap();
    let infos = plan
        .targets
        .iter()
        .map(|t| t.info.clone())
        .filter(|i| !drop(&i.name))
        .collect();
    (infos, plan.bindings)
}

#[test]
fn reverse_refuses_a_layer_gap() {
    let (infos, b) = canonical_without(3, |n| n.contains("encoder.layer.1."));
    let e = plan_reverse(&MappingTable::builtin("timm").unwrap(), &infos, &b).unwrap_err();
    let (_, line, problem) = mapping_reason(&e);
    assert_eq!(line, 0);
    assert_eq!(
        problem,
        MappingError::LayerGap {
            missing: 1,
            found_up_to: 2
        }
    );
}

#[test]
fn reverse_refuses_a_layer_missing_one_tensor() {
    let (infos, b) = canonical_without(2, |n| n.ends_with("layer.1.output.dense.bias"));
    let e = plan_reverse(&MappingTable::builtin("timm").unwrap(), &infos, &b).unwrap_err();
    let (_, line, problem) = mapping_reason(&e);
    assert!(line > 0);
    assert!(
        matches!(&problem, MappingError::LayerTensorMissing { tensor } if tensor.ends_with("layer.1.output.dense.bias")),
        "{problem}"
    );
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
    let (_, line, problem) = mapping_reason(&e);
    assert!(line > 0);
    assert_eq!(
        problem,
        MappingError::LayerTensorMissing {
            tensor: "blocks.1.mlp.fc2.bias".into()
        }
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
    let (_, line, problem) = mapping_reason(&e);
    assert!(line > 0);
    assert_eq!(
        problem,
        MappingError::ShapeContradiction {
            tensor: "blocks.0.mlp.fc2.weight".into(),
            expected: "[D, M]".into(),
            actual: vec![8, 15]
        }
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
    match mapping_reason(&e) {
        (file, line, MappingError::Rejected { feature, tensor }) => {
            assert!(feature.contains("layer scale"));
            assert_eq!(tensor, "blocks.0.ls1.gamma");
            assert_eq!(file, "mappings/timm.toml");
            assert!(line > 0);
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
    let (file, _, problem) = mapping_reason(&e);
    assert_eq!(file, "dup.toml");
    assert!(
        matches!(&problem, MappingError::ProducedTwice { target, .. } if target == "layernorm.weight"),
        "{problem}"
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

/// A table with the given `[source]` body and `[[rule]]` blocks.
fn table_text(source: &str, rules: &str) -> String {
    format!(
        "[table]\nid = \"t\"\ndescription = \"test\"\nfamilies = [\"t\"]\n\n[model]\nlayer_norm_eps = 1e-6\nhidden_act = \"gelu\"\npreprocessor = \"vit\"\n\n[source]\n{source}\n{rules}"
    )
}

fn table_reason(e: &crate::Error) -> (String, usize, String) {
    match e.kind() {
        ErrorKind::Table { file, line, reason } => (file.clone(), *line, reason.clone()),
        other => panic!("expected a table error, got {other:?}"),
    }
}

#[test]
fn an_empty_source_prefix_is_refused_when_the_table_loads_naming_its_line() {
    for (key, why) in [
        ("strip_prefixes", "stripping would never end"),
        ("ignore_prefixes", "would ignore every tensor"),
        ("wrappers", "names no sub-container"),
    ] {
        let text = table_text(&format!("{key} = [\"module.\",\n  \"\"]"), "");
        let e = MappingTable::from_toml(&text, "evil.toml").unwrap_err();
        let (file, line, reason) = table_reason(&e);
        assert_eq!(file, "evil.toml");
        assert_eq!(line, 13, "{key}: {reason}");
        assert!(reason.contains(key) && reason.contains(why), "{reason}");
    }
}

#[test]
fn unknown_activation_preprocessor_or_branch_is_refused_at_load_naming_its_line() {
    let base = table_text("", "");
    for (good, bad, line) in [
        ("hidden_act = \"gelu\"", "hidden_act = \"gleu\"", 8),
        ("preprocessor = \"vit\"", "preprocessor = \"vit_crop\"", 9),
    ] {
        let e = MappingTable::from_toml(&base.replace(good, bad), "evil.toml").unwrap_err();
        let (file, at, reason) = table_reason(&e);
        assert_eq!((file.as_str(), at), ("evil.toml", line), "{reason}");
    }
    for list in ["\"teacher\",\n  \"techer\"", "\"teacher\",\n  \"\""] {
        let text = table_text(&format!("branches = [{list}]"), "");
        let e = MappingTable::from_toml(&text, "evil.toml").unwrap_err();
        assert_eq!(table_reason(&e).1, 13, "{e}");
    }
    let t = MappingTable::from_toml(
        &table_text("branches = [\"teacher\", \"student\"]", "")
            .replace("hidden_act = \"gelu\"", "hidden_act = \"gelu_new\""),
        "ok.toml",
    )
    .unwrap();
    assert_eq!(t.facts.hidden_act, crate::model::Activation::GeluNew);
    assert_eq!(t.branches, [Branch::Teacher, Branch::Student]);
}

#[test]
fn rules_with_too_many_ops_or_dimensions_are_refused_at_load() {
    let ops = vec!["\"transpose(1, 0)\""; 17].join(", ");
    let text = table_text(
        "",
        &format!("[[rule]]\nfrom = \"w\"\nshape = [\"A\", \"B\"]\nops = [{ops}]\nto = \"x\"\n"),
    );
    let (_, line, reason) = table_reason(&MappingTable::from_toml(&text, "t.toml").unwrap_err());
    assert_eq!(line, 13);
    assert!(reason.contains("17 ops (at most 16"), "{reason}");

    let dims = vec!["1"; 65].join(", ");
    let text = table_text(
        "",
        &format!("[[rule]]\nfrom = \"w\"\nshape = [{dims}]\nto = \"x\"\n"),
    );
    let (_, _, reason) = table_reason(&MappingTable::from_toml(&text, "t.toml").unwrap_err());
    assert!(reason.contains("65 dimensions (at most 64)"), "{reason}");

    let text = table_text(
        "",
        &format!(
            "[[rule]]\nfrom = \"w\"\nshape = [\"A\"]\nops = [\"reshape({dims})\"]\nto = \"x\"\n"
        ),
    );
    let (_, _, reason) = table_reason(&MappingTable::from_toml(&text, "t.toml").unwrap_err());
    assert!(reason.contains("65 arguments (at most 64)"), "{reason}");

    let product = vec!["D"; 17].join("*");
    let text = table_text(
        "",
        &format!("[[rule]]\nfrom = \"w\"\nshape = [\"{product}\"]\nto = \"x\"\n"),
    );
    let (_, _, reason) = table_reason(&MappingTable::from_toml(&text, "t.toml").unwrap_err());
    assert!(reason.contains("more than 16 factors"), "{reason}");

    let parts: Vec<String> = (0..65).map(|k| format!("\"x{k}\"")).collect();
    let text = table_text(
        "",
        &format!(
            "[[rule]]\nfrom = \"w\"\nshape = [\"A\"]\nops = [\"split(0, 65)\"]\nto = [{}]\n",
            parts.join(", ")
        ),
    );
    let (_, _, reason) = table_reason(&MappingTable::from_toml(&text, "t.toml").unwrap_err());
    assert!(
        reason.contains("1 `from` and 65 `to` names (at most 64 each)"),
        "{reason}"
    );
}

#[test]
fn strip_prefixes_strip_repeatedly_in_list_order() {
    let text = table_text(
        "strip_prefixes = [\"a.\", \"m.\"]",
        "[[rule]]\nfrom = \"b.w\"\nshape = [\"A\"]\nto = \"x\"\n[[rule]]\nfrom = \"a.\"\nshape = [\"A\"]\nto = \"y\"\n",
    );
    let t = MappingTable::from_toml(&text, "t.toml").unwrap();
    // `m.a.m.a.b.w` loses `m.` and `a.` twice, leaving `b.w`; `m.a.` keeps `a.` (a strip never
    // leaves an empty name).
    let src = mem_source(&[("m.a.m.a.b.w", &[2]), ("m.a.", &[2])]);
    let plan = plan_forward(&t, src.tensors(), None).unwrap();
    let names: Vec<&str> = plan.targets.iter().map(|p| p.info.name.as_str()).collect();
    assert_eq!(names, ["x", "y"]);
}

/// `n` indexed rules `r{k}.{i}.w` and a listing with `layers` layers of each, plus `extra`
/// names no rule has.
fn many_rules(n: usize, layers: usize) -> (MappingTable, Vec<TensorInfo>) {
    let mut rules = String::new();
    for k in 0..n {
        rules.push_str(&format!(
            "[[rule]]\nfrom = \"r{k}.{{i}}.w\"\nshape = [\"D\"]\nto = \"out.{{i}}.r{k}\"\n"
        ));
    }
    let table = MappingTable::from_toml(&table_text("", &rules), "many.toml").unwrap();
    let mut infos = Vec::new();
    for i in 0..layers {
        for k in 0..n {
            infos.push(TensorInfo {
                name: format!("r{k}.{i}.w"),
                dtype: DType::F32,
                shape: vec![4],
            });
        }
    }
    (table, infos)
}

#[test]
fn rule_matching_work_grows_with_names_not_rules_times_names() {
    let (table, infos) = many_rules(4000, 5);
    super::index::PROBES.with(|p| p.set(0));
    let plan = plan_forward(&table, &infos, None).unwrap();
    let probes = super::index::PROBES.with(|p| p.get());
    assert_eq!(plan.targets.len(), 20_000);
    assert_eq!(plan.report.layers, 5);
    // One probe per name plus one per digit count tried after a template prefix: a handful per
    // name, where rules × names would be 80 000 000.
    assert!(
        probes <= 4 * infos.len(),
        "{probes} probes for {} names",
        infos.len()
    );
}

#[test]
fn a_name_matched_by_two_rules_is_consumed_twice_whatever_the_rule_count() {
    let rules = "[[rule]]\nfrom = \"b.{i}.w\"\nshape = [\"D\"]\nto = \"x.{i}\"\n".repeat(3);
    let t = MappingTable::from_toml(&table_text("", &rules), "dup.toml").unwrap();
    let src = mem_source(&[("b.0.w", &[2])]);
    let (_, line, problem) = mapping_reason(&plan_forward(&t, src.tensors(), None).unwrap_err());
    assert_eq!(line, 17);
    assert_eq!(
        problem.to_string(),
        "b.0.w is consumed by two rules (also line 13)"
    );
    assert_eq!(
        problem,
        MappingError::ConsumedTwice {
            source: "b.0.w".into(),
            also_line: Some(13)
        }
    );
}

#[test]
fn a_huge_layer_index_is_a_gap_not_a_loop() {
    let (table, mut infos) = many_rules(1, 1);
    infos.push(TensorInfo {
        name: format!("r0.{}.w", usize::MAX),
        dtype: DType::F32,
        shape: vec![4],
    });
    let e = plan_forward(&table, &infos, None).unwrap_err();
    let (_, _, problem) = mapping_reason(&e);
    assert_eq!(
        problem,
        MappingError::LayerGap {
            missing: 1,
            found_up_to: usize::MAX
        }
    );
}

#[test]
fn symbols_bound_one_per_pass_still_bind() {
    // Rule k has shape [S{k} * S{k+1}]; only the last rule's S{n} is bound directly, so each
    // pass binds one more symbol, from the end.
    let n = 300;
    let mut rules = String::new();
    let mut list = Vec::new();
    for k in 0..n {
        rules.push_str(&format!(
            "[[rule]]\nfrom = \"w{k}\"\nshape = [\"S{k}*S{}\"]\nto = \"x{k}\"\n",
            k + 1
        ));
        list.push((format!("w{k}"), vec![2usize]));
    }
    rules.push_str(&format!(
        "[[rule]]\nfrom = \"w{n}\"\nshape = [\"S{n}\"]\nto = \"x{n}\"\n"
    ));
    list.push((format!("w{n}"), vec![1]));
    let t = MappingTable::from_toml(&table_text("", &rules), "chain.toml").unwrap();
    let plan = plan_forward(&t, source(&list).tensors(), None).unwrap();
    assert_eq!(plan.bindings[&format!("S{n}")], 1);
    assert_eq!(plan.bindings["S1"], 2);
    assert_eq!(plan.bindings["S0"], 1);
}

fn one_rule_table(shape: &str, ops: &str) -> MappingTable {
    let rules = format!(
        "[[rule]]\nfrom = \"pos\"\nshape = [{shape}]\nops = [{ops}]\nto = \"embeddings.position_embeddings\"\n"
    );
    MappingTable::from_toml(&table_text("", &rules), "evil.toml").unwrap()
}

fn budget_of(e: &crate::Error) -> (&'static str, u64, u64, String) {
    match e.kind() {
        ErrorKind::BudgetExceeded {
            budget,
            limit,
            offset,
        } => (budget, *limit, *offset, e.to_string()),
        other => panic!("expected a budget error, got {other:?}"),
    }
}

#[test]
fn prepend_zeros_of_a_trillion_rows_is_refused_at_plan_time() {
    let t = one_rule_table("1, \"T\", \"D\"", "\"prepend_zeros(1, 1099511627776)\"");
    let src = mem_source(&[("pos", &[1, 2, 4])]);
    let e = match t.apply(&src) {
        Err(e) => e,
        Ok(_) => panic!("planned"),
    };
    let (budget, limit, offset, text) = budget_of(&e);
    assert_eq!(budget, "table output bytes");
    assert_eq!(limit, 32 + (16 << 20));
    assert_eq!(offset, (1u64 << 40) * 16 + 32);
    assert!(
        text.starts_with("tensor embeddings.position_embeddings (rule evil.toml:13): table output bytes budget exceeded"),
        "{text}"
    );
}

#[test]
fn a_step_that_grows_and_shrinks_again_is_budgeted_too() {
    let t = one_rule_table(
        "1, \"T\", \"D\"",
        "\"prepend_zeros(1, 1073741824)\", \"drop_zeros(1, 1073741824)\"",
    );
    let e = plan_forward(&t, mem_source(&[("pos", &[1, 2, 4])]).tensors(), None).unwrap_err();
    assert_eq!(budget_of(&e).0, "table output bytes");
}

#[test]
fn an_overflowing_op_shape_is_refused_naming_the_rule() {
    let t = one_rule_table(
        "1, \"T\", \"D\"",
        &format!("\"prepend_zeros(1, {})\"", usize::MAX - 1),
    );
    let e = plan_forward(&t, mem_source(&[("pos", &[1, 2, 4])]).tensors(), None).unwrap_err();
    let (file, line, problem) = mapping_reason(&e);
    assert_eq!((file.as_str(), line), ("evil.toml", 13));
    assert!(
        matches!(&problem, MappingError::Op { reason } if reason.contains("size overflow")),
        "{problem}"
    );

    let t = one_rule_table(
        "1, \"T\", \"D\"",
        &format!("\"reshape(T, {}, D)\"", 1usize << 62),
    );
    let e = plan_forward(&t, mem_source(&[("pos", &[1, 2, 4])]).tensors(), None).unwrap_err();
    let (_, _, problem) = mapping_reason(&e);
    assert!(
        matches!(&problem, MappingError::Op { reason } if reason.contains("changes the element count")),
        "{problem}"
    );
}

#[test]
fn concat_cannot_repeat_a_source_to_amplify() {
    let rules = "[[rule]]\nfrom = [\"w\", \"w\", \"w\"]\nshape = [\"A\"]\nops = [\"concat(0)\"]\nto = \"x\"\n";
    let t = MappingTable::from_toml(&table_text("", rules), "evil.toml").unwrap();
    let e = plan_forward(&t, mem_source(&[("w", &[4])]).tensors(), None).unwrap_err();
    let (_, _, problem) = mapping_reason(&e);
    assert_eq!(
        problem,
        MappingError::ConsumedTwice {
            source: "w".into(),
            also_line: Some(13)
        }
    );
}

#[test]
fn a_class_row_prepend_fits_the_allowance() {
    let t = one_rule_table("1, \"T\", \"D\"", "\"prepend_zeros(1, 1)\"");
    let src = mem_source(&[("pos", &[1, 2, 4])]);
    let out = t.apply(&src).unwrap();
    let pos = out.read("embeddings.position_embeddings").unwrap();
    assert_eq!(pos.shape, [1, 3, 4]);
    assert!(pos.data[..16].iter().all(|&b| b == 0));
    assert_eq!(&pos.data[16..], &src.read("pos").unwrap().data[..]);
}

#[test]
fn a_rule_or_reject_behind_a_strip_prefix_is_refused_at_load() {
    for (entry, shown) in [
        (
            "[[rule]]\nfrom = \"module.blocks.{i}.w\"\nshape = [\"D\"]\nto = \"x.{i}\"\n",
            "module.blocks.{i}.w",
        ),
        (
            "[[rule]]\nfrom = \"module.w\"\nshape = [\"D\"]\nto = \"x\"\n",
            "module.w",
        ),
        (
            "[[reject]]\nname = \"module.ls{i}\"\nfeature = \"layer scale\"\n",
            "module.ls{i}",
        ),
        (
            "[[reject]]\nprefix = \"module.ls\"\nfeature = \"layer scale\"\n",
            "module.ls",
        ),
    ] {
        let text = table_text("strip_prefixes = [\"x.\", \"module.\"]", entry);
        let (file, line, reason) =
            table_reason(&MappingTable::from_toml(&text, "dead.toml").unwrap_err());
        assert_eq!((file.as_str(), line), ("dead.toml", 13), "{reason}");
        assert_eq!(
            reason,
            format!("`{shown}` can never match: `module.` is stripped from every name first")
        );
    }
    // A name that is exactly a strip prefix survives stripping, so it can be matched.
    let text = table_text(
        "strip_prefixes = [\"module.\"]",
        "[[rule]]\nfrom = \"module.\"\nshape = [\"D\"]\nto = \"x\"\n",
    );
    MappingTable::from_toml(&text, "ok.toml").unwrap();
}

#[test]
fn strip_prefixes_that_start_with_one_another_are_refused_at_load_naming_the_line() {
    for (list, shown) in [
        ("\"a.\", \"a.b.\"", "`a.b.` starts with `a.`"),
        ("\"a.b.\", \"a.\"", "`a.b.` starts with `a.`"),
        ("\"m.\", \"m.\"", "`m.` starts with `m.`"),
    ] {
        let text = table_text(&format!("strip_prefixes = [\"x.\",\n  {list}]"), "");
        let e = MappingTable::from_toml(&text, "evil.toml").unwrap_err();
        let (file, line, reason) = table_reason(&e);
        assert_eq!((file.as_str(), line), ("evil.toml", 13), "{reason}");
        assert!(
            reason.contains("strip_prefixes") && reason.contains(shown),
            "{reason}"
        );
    }
}

#[test]
fn stripping_a_long_name_is_linear_whatever_the_prefixes() {
    // A long strip prefix that almost matches used to be walked once per byte stripped.
    let long = format!("{}b", "a".repeat(20_000));
    let text = table_text(
        &format!("strip_prefixes = [\"{long}\", \"c\"]"),
        "[[rule]]\nfrom = \"x\"\nshape = [\"A\"]\nto = \"y\"\n",
    );
    let t = MappingTable::from_toml(&text, "t.toml").unwrap();
    let name = format!("{}{}x", "c".repeat(100_000), "a".repeat(100_000));
    let src = mem_source(&[(name.as_str(), &[1])]);
    let start = std::time::Instant::now();
    let e = plan_forward(&t, src.tensors(), None).unwrap_err();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let (_, _, problem) = mapping_reason(&e);
    assert!(
        matches!(problem, MappingError::Unconsumed { .. }),
        "{problem:?}"
    );
}

#[test]
fn ops_on_an_empty_tensor_with_a_huge_outer_axis_finish_at_once() {
    let big = 1usize << 60;
    for ops in [
        "\"split(1, 2)\"",
        "\"prepend_zeros(1, 1)\"",
        "\"drop_zeros(1, 1)\"",
        "\"transpose(1, 0, 2)\"",
    ] {
        let to = if ops.contains("split") {
            "[\"y0\", \"y1\"]"
        } else {
            "\"y0\""
        };
        let rules = format!(
            "[[rule]]\nfrom = \"w\"\nshape = [\"A\", \"B\", \"C\"]\nops = [{ops}]\nto = {to}\n"
        );
        let t = MappingTable::from_toml(&table_text("", &rules), "t.toml").unwrap();
        let src = mem_source(&[("w", &[big, 4, 0])]);
        let plan = plan_forward(&t, src.tensors(), None).unwrap();
        let planned = PlannedSource::new(&src, plan);
        let start = std::time::Instant::now();
        let y = planned.read("y0").unwrap();
        assert!(y.data.is_empty(), "{ops}");
        assert_eq!(
            y.shape.first(),
            Some(if ops.contains("transpose") { &4 } else { &big })
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(1), "{ops}");
    }
}

#[test]
fn ops_recomputed_for_every_split_output_are_bounded_at_load() {
    let names = |n: usize| {
        let v: Vec<String> = (0..n).map(|k| format!("\"o{k}\"")).collect();
        v.join(", ")
    };
    let rule = |ops: &str, n: usize| {
        format!(
            "[[rule]]\nfrom = \"w\"\nshape = [\"A\", \"B\"]\nops = [{ops}]\nto = [{}]\n",
            names(n)
        )
    };
    let transposes = |k: usize| vec!["\"transpose(1, 0)\""; k].join(", ");
    // 15 transposes recomputed for each of 64 outputs: refused, naming the rule's line.
    let text = table_text(
        "",
        &rule(&format!("{}, \"split(0, 64)\"", transposes(15)), 64),
    );
    let e = MappingTable::from_toml(&text, "evil.toml").unwrap_err();
    let (file, line, reason) = table_reason(&e);
    assert_eq!((file.as_str(), line), ("evil.toml", 13), "{reason}");
    assert!(
        reason.contains("15 ops besides split/concat for each of 64 outputs"),
        "{reason}"
    );
    // The same the other way round: a 64-way concat then 15 ops is a split after them in reverse.
    let from = names(64).replace('o', "w");
    let text = table_text(
        "",
        &format!("[[rule]]\nfrom = [{from}]\nshape = [\"A\", \"B\"]\nops = [\"concat(0)\", {}]\nto = \"y\"\n", transposes(15)),
    );
    let (_, _, reason) = table_reason(&MappingTable::from_toml(&text, "evil.toml").unwrap_err());
    assert!(reason.contains("for each of 64 outputs"), "{reason}");
    // A split alone, a qkv-style transpose then split, or 16 ops on one output still load.
    for ok in [
        rule("\"split(0, 64)\"", 64),
        rule(&format!("{}, \"split(0, 16)\"", transposes(1)), 16),
        rule(&format!("{}, \"split(0, 3)\"", transposes(1)), 3),
        format!(
            "[[rule]]\nfrom = \"w\"\nshape = [\"A\", \"B\"]\nops = [{}]\nto = \"y\"\n",
            transposes(16)
        ),
    ] {
        MappingTable::from_toml(&table_text("", &ok), "ok.toml").unwrap();
    }
}

/// Two rules joining inputs of unequal sizes (`shapes`): rows (q `[D, D]` + kv `[2·D, D]`, as
/// timm's MAP head) and columns (`[R, A]` + `[R, B]`, several rows apart in memory).
const UNEQUAL_CONCAT: &str = "[[rule]]\nfrom = [\"q\", \"kv\"]\nshapes = [[\"D\", \"D\"], [\"2*D\", \"D\"]]\nops = [\"concat(0)\"]\nto = \"x\"\n\n[[rule]]\nfrom = [\"a\", \"b\"]\nshapes = [[\"R\", \"A\"], [\"R\", \"B\"]]\nops = [\"concat(1)\"]\nto = \"y\"\n";

#[test]
fn a_concat_of_unequal_shapes_joins_forward_and_splits_back_exactly() {
    let t = MappingTable::from_toml(&table_text("", UNEQUAL_CONCAT), "t.toml").unwrap();
    let src = mem_source(&[
        ("q", &[2, 2]),
        ("kv", &[4, 2]),
        ("a", &[3, 1]),
        ("b", &[3, 2]),
    ]);
    let plan = plan_forward(&t, src.tensors(), None).unwrap();
    assert_eq!((plan.bindings["D"], plan.bindings["B"]), (2, 2));
    let canon = PlannedSource::new(&src, plan);
    let x = canon.read("x").unwrap();
    assert_eq!(x.shape, vec![6, 2]);
    let (q, kv) = (src.read("q").unwrap(), src.read("kv").unwrap());
    assert_eq!(x.data[..], [&q.data[..], &kv.data[..]].concat()[..]);
    let y = canon.read("y").unwrap();
    assert_eq!(y.shape, vec![3, 3]);
    let (a, b) = (src.read("a").unwrap(), src.read("b").unwrap());
    let rows: Vec<u8> = (0..3)
        .flat_map(|r| [&a.data[r * 4..r * 4 + 4], &b.data[r * 8..r * 8 + 8]].concat())
        .collect();
    assert_eq!(y.data[..], rows[..]);

    // Backwards: split at the sizes joined, bit-exact.
    let mut bind = crate::mapping::dims::Bindings::new();
    for (k, v) in [("D", 2), ("R", 3), ("A", 1), ("B", 2)] {
        bind.insert(k.to_string(), v);
    }
    let back = plan_reverse(&t, canon.tensors(), &bind).unwrap();
    let kv_plan = back.targets.iter().find(|p| p.info.name == "kv").unwrap();
    assert_eq!(kv_plan.ops[0].to_string(), "split_at(0, [2, 4])");
    let back = PlannedSource::new(&canon, back);
    assert_eq!(back.tensors().len(), 4);
    for info in src.tensors() {
        assert_eq!(
            back.read(&info.name).unwrap(),
            src.read(&info.name).unwrap(),
            "{}",
            info.name
        );
    }
}

#[test]
fn an_input_contradicting_its_own_shape_names_it_and_that_shape() {
    let t = MappingTable::from_toml(&table_text("", UNEQUAL_CONCAT), "t.toml").unwrap();
    let src = mem_source(&[
        ("q", &[2, 2]),
        ("kv", &[5, 2]),
        ("a", &[3, 1]),
        ("b", &[3, 2]),
    ]);
    let (_, line, problem) = mapping_reason(&plan_forward(&t, src.tensors(), None).unwrap_err());
    assert_eq!(line, 13);
    assert_eq!(
        problem,
        MappingError::ShapeContradiction {
            tensor: "kv".into(),
            expected: "[2*D, D]".into(),
            actual: vec![5, 2],
        }
    );
}

#[test]
fn malformed_shapes_lists_are_refused_at_load_naming_the_line() {
    let rule = |from: &str, shape: &str, ops: &str| {
        format!("[[rule]]\nfrom = {from}\n{shape}\nops = [{ops}]\nto = \"x\"\n")
    };
    let two = "[\"q\", \"kv\"]";
    let good = "shapes = [[\"D\", \"D\"], [\"2*D\", \"D\"]]";
    for (text, want) in [
        (
            rule(
                two,
                &format!("shape = [\"D\", \"D\"]\n{good}"),
                "\"concat(0)\"",
            ),
            "not both",
        ),
        (rule(two, "", "\"concat(0)\""), "needs `shape`"),
        (
            rule("\"q\"", "shapes = [[\"D\"]]", ""),
            "`shapes` is for a rule with several `from` names",
        ),
        (
            rule(two, "shapes = [[\"D\"], [\"D\"], [\"D\"]]", "\"concat(0)\""),
            "3 `shapes` for 2 `from` names",
        ),
        (
            rule(two, "shapes = [[\"D\", \"D\"], [\"2*D\"]]", "\"concat(0)\""),
            "different ranks [2, 1]",
        ),
        (
            rule(
                two,
                "shapes = [[\"D\", \"D\"], [\"D\", \"E\"]]",
                "\"concat(0)\"",
            ),
            "differ in dimension 1 (`D` and `E`)",
        ),
        (
            rule(two, good, "\"concat(2)\""),
            "concat(2) on a rank-2 shape",
        ),
        (rule(two, good, ""), "must start with concat(axis)"),
        (
            rule(
                two,
                "shapes = [[\"D\", \"D\"], [\"D\", [\"D\"]]]",
                "\"concat(0)\"",
            ),
            "",
        ),
    ] {
        let e = MappingTable::from_toml(&table_text("", &text), "evil.toml").unwrap_err();
        let (file, line, reason) = table_reason(&e);
        assert_eq!(file, "evil.toml");
        assert!(line >= 13, "{text}: {reason}");
        assert!(reason.contains(want), "{text}: {reason}");
    }
    // Budgeted like any concat: every output's other ops count (3 inputs × 6 transposes).
    let ops = ["\"concat(0)\""]
        .into_iter()
        .chain(["\"transpose(1, 0)\""; 6])
        .collect::<Vec<_>>()
        .join(", ");
    let text = rule(
        "[\"a\", \"b\", \"c\"]",
        "shapes = [[\"D\", \"D\"], [\"2*D\", \"D\"], [\"D\", \"D\"]]",
        &ops,
    );
    let e = MappingTable::from_toml(&table_text("", &text), "evil.toml").unwrap_err();
    let (_, line, reason) = table_reason(&e);
    assert_eq!(line, 13);
    assert!(reason.contains("ops × outputs at most 16"), "{reason}");
}

/// Backwards, a layout writes its rules and the untagged ones under its `write_prefix`, plus the
/// `zeros` buffers it writes beside a name; a buffer that a rule writes too is refused.
#[test]
fn reverse_writes_one_layout_with_its_prefix_and_zeros_buffers() {
    let text = |buffer: &str| {
        format!(
            r#"
[table]
id = "two"
description = "two layouts"
families = ["two"]
[[table.layouts]]
name = "a"
[[table.layouts]]
name = "b"
to = "timm"
write_prefix = "p/"

[model]
layer_norm_eps = 1e-6
hidden_act = "gelu"
preprocessor = "vit"

[[buffer]]
name = "{buffer}"
kind = "zeros"
layout = "b"
beside = "bx"
shape = ["2*D"]

[[rule]]
from = "ax"
shape = ["D"]
to = "y"
layout = "a"

[[rule]]
from = "bx"
shape = ["D"]
to = "y"
layout = "b"

[[rule]]
from = "w"
shape = ["D", "D"]
to = "v"
"#
        )
    };
    let infos = vec![
        TensorInfo {
            name: "y".into(),
            dtype: DType::F32,
            shape: vec![3],
        },
        TensorInfo {
            name: "v".into(),
            dtype: DType::F32,
            shape: vec![3, 3],
        },
    ];
    let b: crate::mapping::dims::Bindings = [("D".to_string(), 3)].into_iter().collect();
    let t = MappingTable::from_toml(&text("bz"), "two.toml").unwrap();
    let layout = t
        .layout_written_by(crate::vocab::OutputFormat::Timm)
        .unwrap();
    let plan = plan_reverse_within(&t, Some(layout), &infos, &b, &crate::Limits::DEFAULT).unwrap();
    let written: Vec<(&str, &[usize], usize)> = plan
        .targets
        .iter()
        .map(|p| {
            (
                p.info.name.as_str(),
                p.info.shape.as_slice(),
                p.sources.len(),
            )
        })
        .collect();
    assert_eq!(
        written,
        [
            ("p/bx", &[3][..], 1),
            ("p/w", &[3, 3][..], 1),
            ("p/bz", &[6][..], 0)
        ]
    );
    // Layout a: its own rule, no buffer, no prefix.
    let a = crate::mapping::schema::Layout {
        name: "a".into(),
        to: None,
        write_prefix: String::new(),
    };
    let plan = plan_reverse_within(&t, Some(&a), &infos, &b, &crate::Limits::DEFAULT).unwrap();
    let names: Vec<&str> = plan.targets.iter().map(|p| p.info.name.as_str()).collect();
    assert_eq!(names, ["ax", "w"]);
    // A buffer named like a rule's source is produced twice.
    let t = MappingTable::from_toml(&text("w"), "two.toml").unwrap();
    let layout = t
        .layout_written_by(crate::vocab::OutputFormat::Timm)
        .unwrap();
    let e = plan_reverse_within(&t, Some(layout), &infos, &b, &crate::Limits::DEFAULT).unwrap_err();
    let (_, line, problem) = mapping_reason(&e);
    assert_eq!(line, 18);
    assert_eq!(
        problem,
        MappingError::ProducedTwice {
            target: "w".into(),
            also_line: 37
        }
    );
}
