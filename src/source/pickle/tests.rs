//! Tests of the pickle machine on hand-assembled streams.

use std::time::{Duration, Instant};

use super::opcodes::*;
use super::testutil::P;
use super::value::BigInt;
use super::{parse_pickle, Node, Parsed};
use crate::error::ErrorKind;
use crate::source::torch::extract;
use crate::source::Limits;

/// A real protocol-4 `data.pkl` (torch 2.x, `OrderedDict(w=arange(6).reshape(2, 3))`):
/// FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL.
pub(crate) const TORCH_P4: &[u8] = b"\x80\x04\x95\x99\x00\x00\x00\x00\x00\x00\x00\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01w\x94\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94((\x8c\x07storage\x94\x8c\x05torch\x94\x8c\x0cFloatStorage\x94\x93\x94\x8c\x010\x94\x8c\x03cpu\x94K\x06t\x94QK\x00K\x02K\x03\x86\x94K\x03K\x01\x86\x94\x89h\x02)R\x94t\x94R\x94s.";

fn parse(b: &[u8]) -> crate::error::Result<Parsed> {
    parse_pickle(b, 0, &Limits::DEFAULT)
}

fn kind(b: &[u8]) -> ErrorKind {
    match parse(b) {
        Ok(p) => panic!("expected an error, got {:?}", p.arena.get(p.root)),
        Err(e) => into_kind(e),
    }
}

fn into_kind(e: crate::error::Error) -> ErrorKind {
    // ErrorKind is not Clone (it may hold io::Error); rebuild the variants tests look at.
    match e.kind() {
        ErrorKind::DisallowedGlobal { global, offset } => ErrorKind::DisallowedGlobal {
            global: global.clone(),
            offset: *offset,
        },
        ErrorKind::MalformedPickle { reason, offset } => ErrorKind::MalformedPickle {
            reason: reason.clone(),
            offset: *offset,
        },
        ErrorKind::UnsupportedOpcode { opcode, offset } => ErrorKind::UnsupportedOpcode {
            opcode: *opcode,
            offset: *offset,
        },
        ErrorKind::BudgetExceeded {
            budget,
            limit,
            offset,
        } => ErrorKind::BudgetExceeded {
            budget,
            limit: *limit,
            offset: *offset,
        },
        ErrorKind::Truncated {
            what,
            offset,
            needed,
            available,
        } => ErrorKind::Truncated {
            what,
            offset: *offset,
            needed: *needed,
            available: *available,
        },
        other => panic!("unexpected error kind {other:?}"),
    }
}

fn assert_disallowed(b: &[u8], at: usize) {
    match kind(b) {
        ErrorKind::DisallowedGlobal { global, offset } => {
            assert_eq!(global, "posix.system");
            assert_eq!(offset, at as u64);
        }
        other => panic!("expected DisallowedGlobal, got {other:?}"),
    }
}

fn assert_malformed(b: &[u8], needle: &str) {
    match kind(b) {
        ErrorKind::MalformedPickle { reason, .. } => {
            assert!(
                reason.contains(needle),
                "{reason:?} should mention {needle:?}"
            )
        }
        other => panic!("expected MalformedPickle, got {other:?}"),
    }
}

#[test]
fn global_opcode_refuses_posix_system_at_its_offset() {
    let p = P::new(2);
    let at = p.at();
    assert_disallowed(&p.global("posix", "system").stop(), at);
}

#[test]
fn stack_global_refuses_posix_system_at_its_offset() {
    let p = P::new(4)
        .op(&[SHORT_BINUNICODE, 5])
        .op(b"posix")
        .op(&[SHORT_BINUNICODE, 6])
        .op(b"system");
    let at = p.at();
    assert_disallowed(&p.op(&[STACK_GLOBAL]).stop(), at);
}

#[test]
fn inst_refuses_posix_system_at_its_offset() {
    let p = P::new(0).op(&[MARK]).str("ls");
    let at = p.at();
    assert_disallowed(&p.op(b"iposix\nsystem\n").stop(), at);
}

#[test]
fn obj_refuses_class_named_by_global() {
    let p = P::new(1).op(&[MARK]);
    let at = p.at();
    assert_disallowed(&p.global("posix", "system").str("ls").op(&[OBJ]).stop(), at);
}

#[test]
fn newobj_and_reduce_refuse_their_callable_when_named() {
    let p = P::new(2);
    let at = p.at();
    let newobj = p
        .global("posix", "system")
        .op(&[EMPTY_TUPLE, NEWOBJ])
        .stop();
    assert_disallowed(&newobj, at);
    let p = P::new(2);
    let at = p.at();
    let reduce = p
        .global("posix", "system")
        .op(&[MARK])
        .str("ls")
        .op(&[TUPLE, REDUCE])
        .stop();
    assert_disallowed(&reduce, at);
}

#[test]
fn build_on_refused_object_stops_at_its_global() {
    let p = P::new(2);
    let at = p.at();
    let b = p
        .global("posix", "system")
        .op(&[EMPTY_TUPLE, REDUCE, EMPTY_DICT, BUILD])
        .stop();
    assert_disallowed(&b, at);
}

#[test]
fn other_code_execution_globals_are_refused() {
    for (m, n) in [
        ("os", "system"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("__builtin__", "exec"),
        ("torch", "load"),
    ] {
        match kind(&P::new(2).global(m, n).stop()) {
            ErrorKind::DisallowedGlobal { global, offset } => {
                assert_eq!(global, format!("{m}.{n}"));
                assert_eq!(offset, 2);
            }
            other => panic!("{m}.{n}: {other:?}"),
        }
    }
}

#[test]
fn build_on_plain_list_is_refused() {
    let b = P::new(2).op(&[EMPTY_LIST, EMPTY_DICT, BUILD]).stop();
    assert_malformed(&b, "BUILD on list");
}

#[test]
fn reduce_on_allowed_non_callable_is_refused() {
    let b = P::new(2)
        .global("torch", "FloatStorage")
        .op(&[EMPTY_TUPLE, REDUCE])
        .stop();
    assert_malformed(&b, "not callable");
    let b = P::new(2).str("x").op(&[EMPTY_TUPLE, REDUCE]).stop();
    assert_malformed(&b, "REDUCE on str");
    let b = P::new(2)
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(&[EMPTY_TUPLE, NEWOBJ])
        .stop();
    assert_malformed(&b, "not an allowed class");
}

#[test]
fn build_on_ordered_dict_sets_attributes_not_items() {
    let b = P::new(2)
        .global("collections", "OrderedDict")
        .op(&[EMPTY_TUPLE, REDUCE])
        .str("k")
        .int(1)
        .op(&[SETITEM, EMPTY_DICT])
        .str("_metadata")
        .op(&[EMPTY_DICT, SETITEM, BUILD])
        .stop();
    let p = parse(&b).unwrap();
    let Node::OrderedDict { items, attrs } = p.arena.get(p.root) else {
        panic!("not an OrderedDict");
    };
    assert_eq!(items.len(), 1);
    let attrs = attrs.expect("attributes kept");
    assert!(matches!(p.arena.get(attrs), Node::Dict(v) if v.len() == 1));
}

#[test]
fn container_opcodes_check_their_target_type() {
    assert_malformed(
        &P::new(2).op(&[EMPTY_DICT]).int(1).op(&[APPEND]).stop(),
        "APPEND to dict",
    );
    assert_malformed(
        &P::new(2)
            .op(&[EMPTY_LIST])
            .int(1)
            .int(2)
            .op(&[SETITEM])
            .stop(),
        "SETITEM on list",
    );
    assert_malformed(
        &P::new(4)
            .op(&[MARK, FROZENSET, MARK])
            .int(1)
            .op(&[ADDITEMS])
            .stop(),
        "ADDITEMS to frozenset",
    );
    assert_malformed(
        &P::new(2)
            .op(&[EMPTY_DICT, MARK])
            .int(1)
            .op(&[SETITEMS])
            .stop(),
        "odd number",
    );
}

#[test]
fn stack_and_mark_discipline_is_enforced() {
    assert_malformed(&P::new(2).op(&[APPEND]).stop(), "underflow");
    assert_malformed(
        &P::new(2).op(&[EMPTY_LIST, MARK, APPEND]).stop(),
        "underflow",
    );
    assert_malformed(&P::new(2).op(&[TUPLE]).stop(), "without MARK");
    assert_malformed(&P::new(2).op(&[MARK, NONE]).stop(), "open MARK");
    assert_malformed(&P::new(2).op(&[NONE, NONE]).stop(), "2 values");
    assert_malformed(&P::new(2).stop(), "0 values");
    assert_malformed(&P::new(2).op(&[BINGET, 7]).stop(), "memo entry 7");
    assert_malformed(&P::new(9).op(&[NONE]).stop(), "protocol 9");
}

#[test]
fn extension_and_buffer_opcodes_are_unsupported() {
    for op in [EXT1, EXT2, EXT4, NEXT_BUFFER, READONLY_BUFFER, 0xff] {
        let b = P::new(5).op(&[op, 1, 0, 0, 0]).stop();
        match kind(&b) {
            ErrorKind::UnsupportedOpcode { opcode, offset } => {
                assert_eq!((opcode, offset), (op, 2));
            }
            other => panic!("{op:#x}: {other:?}"),
        }
    }
}

#[test]
fn long1_reads_nine_byte_and_negative_values() {
    let root = |b: &[u8]| {
        let p = parse(b).unwrap();
        p.arena.get(p.root).clone()
    };
    let nine = P::new(2).op(&[LONG1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1]).stop();
    assert_eq!(
        root(&nine),
        Node::BigInt(BigInt {
            negative: false,
            magnitude: vec![0, 0, 0, 0, 0, 0, 0, 0, 1]
        })
    );
    assert_eq!(root(&P::new(2).op(&[LONG1, 1, 0xff]).stop()), Node::Int(-1));
    assert_eq!(root(&P::new(2).op(&[LONG1, 0]).stop()), Node::Int(0));
    assert_eq!(
        root(&P::new(2).op(&[LONG1, 2, 0x00, 0xff]).stop()),
        Node::Int(-256)
    );
    let big_negative = P::new(2)
        .op(&[LONG4, 10, 0, 0, 0])
        .op(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80])
        .stop();
    assert!(matches!(
        root(&big_negative),
        Node::BigInt(BigInt { negative: true, .. })
    ));
    assert_malformed(
        &P::new(2).op(&[LONG4, 0xff, 0xff, 0xff, 0xff]).stop(),
        "negative",
    );
}

#[test]
fn protocol4_frame_memoize_stack_global_pickle_reads() {
    let p = parse(TORCH_P4).unwrap();
    assert_eq!(p.protocol, Some(4));
    assert_eq!(p.end, TORCH_P4.len());
    let Node::OrderedDict { items, .. } = p.arena.get(p.root) else {
        panic!("root is {:?}", p.arena.get(p.root));
    };
    let [(k, v)] = items.as_slice() else {
        panic!("one item expected");
    };
    assert_eq!(p.arena.get(*k), &Node::Str("w".into()));
    assert!(matches!(
        p.arena.get(*v),
        Node::Call {
            name: "torch._utils._rebuild_tensor_v2",
            ..
        }
    ));
    let x = extract(&p).unwrap();
    assert_eq!(x.tensors.len(), 1);
    assert_eq!(x.tensors[0].info.shape, vec![2, 3]);
}

#[test]
fn protocol0_text_opcodes_read() {
    let b = b"(dp0\nS'a'\np1\nI1\nsVb\\u00e9\np2\nL12345678901234567890L\nsS'c'\n(lp3\nF1.5\naI01\nag1\nasS't'\n(I-3\nNtp4\nsS'o'\n(icollections\nOrderedDict\np5\nS'd'\ng4\nss.";
    let p = parse(b).unwrap();
    let Node::Dict(items) = p.arena.get(p.root) else {
        panic!("root is not a dict");
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| p.arena.get(*k) == &Node::Str(key.into()))
            .map(|(_, v)| p.arena.get(*v))
    };
    assert_eq!(get("a"), Some(&Node::Int(1)));
    assert!(matches!(get("b\u{e9}"), Some(Node::BigInt(_))));
    let Some(Node::List(c)) = get("c") else {
        panic!("c is not a list");
    };
    assert_eq!(p.arena.get(c[0]), &Node::Float(1.5));
    assert_eq!(p.arena.get(c[1]), &Node::Bool(true));
    assert_eq!(p.arena.get(c[2]), &Node::Str("a".into()));
    assert!(matches!(get("t"), Some(Node::Tuple(v)) if v.len() == 2));
    let Some(Node::OrderedDict { items: od, .. }) = get("o") else {
        panic!("o is not an OrderedDict built by INST");
    };
    assert_eq!(od.len(), 1);
    assert_eq!(items.len(), 5);
}

#[test]
fn persistent_ids_resolve_only_storage_tuples() {
    let b = P::new(2)
        .op(&[MARK])
        .str("module")
        .int(1)
        .op(&[TUPLE, BINPERSID])
        .stop();
    assert_malformed(&b, "\"module\"");
    let b = P::new(2).int(3).op(&[BINPERSID]).stop();
    assert_malformed(&b, "persistent id is a int");
    let b = P::new(0).op(b"P0\n").stop();
    assert_malformed(&b, "text persistent id");
    let b = P::new(2)
        .op(&[MARK])
        .str("storage")
        .global("collections", "OrderedDict")
        .str("0")
        .str("cpu")
        .int(1)
        .op(&[TUPLE, BINPERSID])
        .stop();
    assert_malformed(&b, "not a storage class");
    let b = P::new(2).storage("FloatStorage", "0", -1, false).stop();
    assert_malformed(&b, "numel");
}

#[test]
fn memo_bomb_stays_linear() {
    // t0 = (T, T); t_{i+1} = (t_i, t_i): 2^60 leaves if copied, 60 nodes when shared.
    let mut p = P::new(2)
        .tensor("FloatStorage", "0", 1, 0, &[1], &[1])
        .op(&[BINPUT, 0, POP]);
    for _ in 0..60 {
        p = p.op(&[BINGET, 0, BINGET, 0, TUPLE2, BINPUT, 0, POP]);
    }
    let b = p.op(&[BINGET, 0]).stop();
    let start = Instant::now();
    let parsed = parse(&b).unwrap();
    assert!(parsed.arena.len() < 200, "{} nodes", parsed.arena.len());
    let x = extract(&parsed).unwrap();
    // Each shared tuple is walked once: only the two slots of the innermost tuple that is
    // reached first hold the tensor.
    assert_eq!(x.tensors.len(), 2);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn million_deep_nesting_is_bounded_and_drops_without_recursion() {
    // Nest 1e6 lists through the memo, keeping the stack short.
    const DEPTH: usize = 1_000_000;
    let mut b = P::new(2).op(&[EMPTY_LIST, BINPUT, 0]).0;
    b.reserve(DEPTH * 12);
    for _ in 0..DEPTH {
        // [..., L] -> L.append(M); [..., M]
        b.extend_from_slice(&[EMPTY_LIST, BINPUT, 1, APPEND, POP, BINGET, 1]);
    }
    b.extend_from_slice(&[POP, BINGET, 0, STOP]);
    let parsed = parse(&b).unwrap();
    let e = extract(&parsed).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::BudgetExceeded {
            budget: "container nesting",
            ..
        }
    ));
    drop(parsed);

    // The same depth on the stack (EMPTY_LIST × n, APPEND × n).
    let mut b = P::new(2).0;
    b.extend(std::iter::repeat_n(EMPTY_LIST, DEPTH));
    b.extend(std::iter::repeat_n(APPEND, DEPTH - 1));
    b.push(STOP);
    match parse(&b) {
        Ok(p) => {
            assert!(extract(&p).is_err());
            drop(p);
        }
        Err(e) => assert!(matches!(e.kind(), ErrorKind::BudgetExceeded { .. })),
    }

    // MARK depth has its own budget.
    let mut b = P::new(2).0;
    b.extend(std::iter::repeat_n(MARK, DEPTH));
    match kind(&b) {
        ErrorKind::BudgetExceeded { limit, .. } => {
            assert_eq!(limit, Limits::DEFAULT.pickle_mark_depth as u64)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_truncation_of_valid_pickles_is_an_error() {
    let p2 = P::new(2)
        .op(&[EMPTY_DICT, MARK])
        .str("w")
        .tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1])
        .str("n")
        .int(1 << 40)
        .op(&[SETITEMS])
        .stop();
    for full in [TORCH_P4, p2.as_slice()] {
        assert!(parse(full).is_ok());
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).is_err(), "cut at {cut} parsed");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    for (i, _) in TORCH_P4.iter().enumerate() {
        for v in [0x00, 0x28, 0x2e, 0x7f, 0x80, 0x8c, 0x93, 0x94, 0x95, 0xff] {
            let mut b = TORCH_P4.to_vec();
            b[i] = v;
            if let Ok(p) = parse(&b) {
                let _ = extract(&p);
            }
        }
    }
}

#[test]
fn disallowed_global_inside_frame_is_refused_before_stop() {
    // nullifAI shape: a refused global followed by a broken opcode; the refusal comes first.
    let b = P::new(4).global("builtins", "eval").op(&[0xff]).0;
    assert!(matches!(kind(&b), ErrorKind::DisallowedGlobal { .. }));
}
