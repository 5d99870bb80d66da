//! Times a mapping table of 19 000 rules over a listing of 200 000 tensor names (issue 12: rule
//! matching was rules × names, about two minutes for this size). Everything is in memory; it
//! prints one line.
//!
//! ```text
//! cargo bench --bench table_match
//! ```

use std::borrow::Cow;
use std::time::Instant;

use vit_convert::{source::MemorySource, tensor::Tensor, DType, MappingTable, TensorSource};

/// Indexed rules (× `LAYERS` names each), literal rules, and ignored names.
const INDEXED: usize = 18_000;
const LAYERS: usize = 11;
const LITERAL: usize = 1_000;
const IGNORED: usize = 1_000;

fn table_text() -> String {
    let mut t = String::from(
        "[table]\nid = \"bench\"\ndescription = \"rule-matching benchmark\"\nfamilies = [\"bench\"]\n\n\
         [model]\nlayer_norm_eps = 1e-6\nhidden_act = \"gelu\"\npreprocessor = \"vit\"\n\n\
         [source]\nstrip_prefixes = [\"module.\"]\nignore_prefixes = [\"opt.\"]\n",
    );
    for k in 0..INDEXED {
        t.push_str(&format!(
            "\n[[rule]]\nfrom = \"blk{k}.{{i}}.w\"\nshape = [\"D\"]\nto = \"encoder.layer.{{i}}.x{k}\"\n"
        ));
    }
    for k in 0..LITERAL {
        t.push_str(&format!(
            "\n[[rule]]\nfrom = \"lit{k}\"\nshape = [\"D\"]\nto = \"out{k}\"\n"
        ));
    }
    t
}

fn source() -> MemorySource {
    let mut src = MemorySource::new();
    let mut add = |name: String| {
        let t = Tensor::new(DType::F32, vec![1], Cow::Owned(vec![0; 4])).expect("tensor");
        src.insert(&name, t).expect("insert");
    };
    for i in 0..LAYERS {
        for k in 0..INDEXED {
            add(format!("module.blk{k}.{i}.w"));
        }
    }
    for k in 0..LITERAL {
        add(format!("lit{k}"));
    }
    for k in 0..IGNORED {
        add(format!("opt.{k}"));
    }
    src
}

fn main() {
    let text = table_text();
    let src = source();
    let rules = INDEXED + LITERAL;
    let names = src.tensors().len();

    let t0 = Instant::now();
    let table = MappingTable::from_toml(&text, "bench.toml").expect("table parses");
    let load = t0.elapsed();

    let t1 = Instant::now();
    let planned = table.apply(&src).expect("table plans");
    let plan = t1.elapsed();

    let t2 = Instant::now();
    let mut bytes = 0usize;
    for info in planned.tensors() {
        bytes += planned.read(&info.name).expect("read").data.len();
    }
    let read = t2.elapsed();

    println!(
        "table_match: {rules} rules x {names} names ({} KiB table): load {:.3} s, plan {:.3} s, read {} tensors ({bytes} B) {:.3} s",
        text.len() / 1024,
        load.as_secs_f64(),
        plan.as_secs_f64(),
        planned.tensors().len(),
        read.as_secs_f64()
    );
}
