//! The hostile inputs: every refusal the threat model promises, each with the error kind (and
//! key fields) it must produce. Built by hand, byte by byte, so no Python is needed.

use std::io::{Cursor, Write};

use vit_convert::source::Format;
use vit_convert::{Error, ErrorKind, Limits};

use crate::build::*;
use crate::msgpack::{f32_chunk, f32s, gapped_chunks, one, Mp};

/// What an error must look like.
pub type Check = Box<dyn Fn(&Error) -> bool + Send + Sync>;

/// One hostile file.
pub struct Case {
    /// File name (also names the case).
    pub name: &'static str,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The expected error, as the pattern text (for failure messages) and the check.
    pub expect: &'static str,
    pub check: Check,
}

macro_rules! case {
    ($name:expr, $bytes:expr, $pat:pat $(if $cond:expr)?) => {
        Case {
            name: $name,
            bytes: $bytes,
            expect: stringify!($pat $(if $cond)?),
            check: Box::new(move |e: &Error| matches!(e.kind(), $pat $(if $cond)?)),
        }
    };
}

fn zip1(pkl: Vec<u8>) -> Vec<u8> {
    torch_zip(&pkl, &[("0", &six())], None)
}

/// A refused global reached through each opcode form, inside a torch zip.
fn global_forms() -> Vec<Case> {
    let p = P::new(2);
    let at = p.at();
    let global = p.global("posix", "system").stop();

    let p = P::new(4)
        .op(&[SHORT_BINUNICODE, 2])
        .op(b"os")
        .op(&[SHORT_BINUNICODE, 6])
        .op(b"system");
    let at_sg = p.at();
    let stack_global = p.op(&[STACK_GLOBAL]).stop();

    let p = P::new(0).op(&[MARK]).str("ls");
    let at_inst = p.at();
    let inst = p.op(b"iposix\nsystem\n").stop();

    let p = P::new(1).op(&[MARK]);
    let at_obj = p.at();
    let obj = p.global("subprocess", "Popen").str("ls").op(&[OBJ]).stop();

    let p = P::new(2);
    let at_newobj = p.at();
    let newobj = p
        .global("builtins", "eval")
        .op(&[EMPTY_TUPLE, NEWOBJ])
        .stop();

    let p = P::new(2);
    let at_reduce = p.at();
    let reduce = p
        .global("builtins", "exec")
        .op(&[MARK])
        .str("import os")
        .op(&[TUPLE, REDUCE])
        .stop();

    let p = P::new(2);
    let at_build = p.at();
    let build = p
        .global("os", "system")
        .op(&[EMPTY_TUPLE, REDUCE, EMPTY_DICT, BUILD])
        .stop();

    vec![
        case!("global_posix_system.pth", zip1(global),
            ErrorKind::DisallowedGlobal { global, offset } if global == "posix.system" && *offset == at),
        case!("stack_global_os_system.pth", zip1(stack_global),
            ErrorKind::DisallowedGlobal { global, offset } if global == "os.system" && *offset == at_sg),
        case!("inst_posix_system.pth", zip1(inst),
            ErrorKind::DisallowedGlobal { global, offset } if global == "posix.system" && *offset == at_inst),
        case!("obj_subprocess_popen.pth", zip1(obj),
            ErrorKind::DisallowedGlobal { global, offset } if global == "subprocess.Popen" && *offset == at_obj),
        case!("newobj_builtins_eval.pth", zip1(newobj),
            ErrorKind::DisallowedGlobal { global, offset } if global == "builtins.eval" && *offset == at_newobj),
        case!("reduce_builtins_exec.pth", zip1(reduce),
            ErrorKind::DisallowedGlobal { global, offset } if global == "builtins.exec" && *offset == at_reduce),
        case!("build_on_os_system.pth", zip1(build),
            ErrorKind::DisallowedGlobal { global, offset } if global == "os.system" && *offset == at_build),
    ]
}

/// Allowed globals and containers used the wrong way: BUILD/REDUCE/SETITEM on the wrong kinds.
fn structural() -> Vec<Case> {
    let p = P::new(2).op(&[EMPTY_LIST, EMPTY_DICT]);
    let at_build = p.at();
    let build_list = p.op(&[BUILD]).stop();
    let p = P::new(2).str("x").op(&[EMPTY_DICT]);
    let at_build_str = p.at();
    let build_str = p.op(&[BUILD]).stop();
    let reduce_storage = P::new(2)
        .global("torch", "FloatStorage")
        .op(&[EMPTY_TUPLE, REDUCE])
        .stop();
    // CVE-2026-24747 shape: SETITEM on something that is not a dict.
    let setitem_list = P::new(2)
        .op(&[EMPTY_LIST])
        .int(1)
        .int(2)
        .op(&[SETITEM])
        .stop();
    let append_dict = P::new(2).op(&[EMPTY_DICT]).int(1).op(&[APPEND]).stop();
    vec![
        case!("build_on_list.pth", zip1(build_list),
            ErrorKind::MalformedPickle { reason, offset } if reason.contains("BUILD on list") && *offset == at_build),
        case!("build_on_str.pth", zip1(build_str),
            ErrorKind::MalformedPickle { reason, offset } if reason.contains("BUILD on str") && *offset == at_build_str),
        case!("reduce_on_storage_class.pth", zip1(reduce_storage),
            ErrorKind::MalformedPickle { reason, .. } if reason.contains("not callable")),
        case!("setitem_on_list.pth", zip1(setitem_list),
            ErrorKind::MalformedPickle { reason, .. } if reason.contains("SETITEM on list")),
        case!("append_to_dict.pth", zip1(append_dict),
            ErrorKind::MalformedPickle { reason, .. } if reason.contains("APPEND to dict")),
    ]
}

/// Budgets: nesting, MARK depth, memo entries, nodes, tensors, name bytes, expansion.
fn budgets() -> Vec<Case> {
    let l = Limits::DEFAULT;
    // 100 000 nested lists through the memo (the stack stays short).
    let mut b = P::new(2).op(&[EMPTY_LIST, BINPUT, 0]).0;
    for _ in 0..100_000 {
        b.extend_from_slice(&[EMPTY_LIST, BINPUT, 1, APPEND, POP, BINGET, 1]);
    }
    b.extend_from_slice(&[POP, BINGET, 0, STOP]);
    let nesting = b;

    let mut marks = P::new(2).0;
    marks.extend(std::iter::repeat_n(MARK, l.pickle_mark_depth + 1));
    marks.push(STOP);

    let mut memo = P::new(2).op(&[NONE]);
    for i in 0..=u32::try_from(l.pickle_memo_entries).unwrap() {
        memo = memo.put(i);
    }
    let memo = memo.stop();

    // 9 × 512Ki NONE values appended to one list: past the node budget, never the stack's.
    let mut nodes = P::new(2).op(&[EMPTY_LIST]).0;
    for _ in 0..9 {
        nodes.push(MARK);
        nodes.extend(std::iter::repeat_n(NONE, 1 << 19));
        nodes.push(APPENDS);
    }
    nodes.push(STOP);

    // One rebuild call shared under tensors + 1 integer keys.
    let mut many = P::new(2)
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .put(0)
        .op(&[POP, EMPTY_DICT]);
    for chunk in 0..=(l.tensors / 1000) {
        many = many.op(&[MARK]);
        for i in 0..1000 {
            many = many.int(i64::try_from(chunk * 1000 + i).unwrap()).get(0);
        }
        many = many.op(&[SETITEMS]);
    }
    let many = many.stop();

    // A 1 MiB key memoised and used as the key of 100 nested dicts: 100 MiB of path.
    let long = "k".repeat(1 << 20);
    let mut names = P::new(2)
        .str(&long)
        .put(0)
        .op(&[POP, EMPTY_DICT, BINPUT, 1]);
    for _ in 0..100 {
        // d[key] = {} ; descend
        names = names
            .get(0)
            .op(&[EMPTY_DICT, BINPUT, 2, SETITEM, POP])
            .op(&[BINGET, 2]);
    }
    let names = names
        .get(0)
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .op(&[SETITEM, POP, BINGET, 1])
        .stop();

    // 100 tensors, each a full view of one 1 MiB storage: 100 MiB read from 1 MiB.
    let mut aliased = P::new(2).op(&[EMPTY_DICT, MARK]);
    for i in 0..100 {
        aliased =
            aliased
                .str(&format!("v{i}"))
                .tensor("FloatStorage", "0", 1 << 18, 0, &[1 << 18], &[1]);
    }
    let aliased = torch_zip(
        &aliased.op(&[SETITEMS]).stop(),
        &[("0", &[0u8; 1 << 20])],
        None,
    );

    // expand(): 2^40 elements over one stored element.
    let expand = one_tensor("pos_embed", 0, &[1 << 20, 1 << 20], &[0, 0]);

    vec![
        case!("deep_nesting.pth", zip1(nesting),
            ErrorKind::BudgetExceeded { budget: "container nesting", limit, .. } if *limit == l.nesting_depth as u64),
        case!("mark_depth.pth", zip1(marks),
            ErrorKind::BudgetExceeded { budget: "pickle MARK depth", limit, .. } if *limit == l.pickle_mark_depth as u64),
        case!("memo_entries.pth", zip1(memo),
            ErrorKind::BudgetExceeded { budget: "pickle memo entries", limit, .. } if *limit == l.pickle_memo_entries as u64),
        case!("node_count.pth", zip1(nodes),
            ErrorKind::BudgetExceeded { budget: "pickle nodes", limit, .. } if *limit == l.pickle_nodes as u64),
        case!("tensor_count.pth", zip1(many),
            ErrorKind::BudgetExceeded { budget: "tensor count", limit, .. } if *limit == l.tensors as u64),
        case!("tensor_name_bytes.pth", zip1(names),
            ErrorKind::BudgetExceeded { budget: "tensor name bytes", limit, .. } if *limit == l.tensor_name_bytes as u64),
        case!("expanded_tensor.pth", zip1(expand),
            ErrorKind::BudgetExceeded { budget: "aliased tensor bytes", limit, .. } if *limit == l.aliased_tensor_bytes as u64),
        case!(
            "aliased_views.pth",
            aliased,
            ErrorKind::BudgetExceeded {
                budget: "aliased tensor bytes",
                ..
            }
        ),
    ]
}

/// Persistent ids: storage classes that are not storages, unknown or unsupported.
fn persistent_ids() -> Vec<Case> {
    let t = |module: &str, class: &str| {
        zip1(
            P::new(2)
                .op(&[EMPTY_DICT])
                .str("w")
                .tensor_of(module, class, "0", 6, 0, &[6], &[1], false)
                .op(&[SETITEM])
                .stop(),
        )
    };
    let module_id = P::new(2)
        .op(&[MARK])
        .str("module")
        .int(1)
        .op(&[TUPLE, BINPERSID])
        .stop();
    vec![
        case!("storage_class_unknown.pth", t("torch", "EvilStorage"),
            ErrorKind::DisallowedGlobal { global, .. } if global == "torch.EvilStorage"),
        case!("storage_class_not_storage.pth", t("collections", "OrderedDict"),
            ErrorKind::MalformedPickle { reason, .. } if reason.contains("not a storage class")),
        case!("storage_class_quantized.pth", t("torch", "QInt8Storage"),
            ErrorKind::UnsupportedDType { dtype } if dtype.contains("QInt8Storage")),
        case!("persistent_id_module.pth", zip1(module_id),
            ErrorKind::MalformedPickle { reason, .. } if reason.contains("module")),
    ]
}

/// Forged shapes, strides and offsets.
fn layouts() -> Vec<Case> {
    let c = |size: &[i64], stride: &[i64], offset: i64| zip1(one_tensor("w", offset, size, stride));
    vec![
        case!("shape_overflow.pth", c(&[1 << 62, 1 << 62], &[1, 1], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("overflow")),
        case!("shape_itemsize_overflow.pth", c(&[1 << 62], &[0], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("overflow")),
        case!("extent_past_storage.pth", c(&[7], &[1], 0),
            ErrorKind::StorageOutOfBounds { storage, needed: 28, available: 24 } if storage == "0"),
        case!(
            "offset_past_storage.pth",
            c(&[3], &[1], 4),
            ErrorKind::StorageOutOfBounds {
                needed: 28,
                available: 24,
                ..
            }
        ),
        case!(
            "stride_past_storage.pth",
            c(&[2], &[i64::MAX], 0),
            ErrorKind::StorageOutOfBounds { .. }
        ),
        case!("stride_overflow.pth", c(&[4], &[i64::MAX], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("overflow")),
        case!("negative_size.pth", c(&[-3], &[1], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("negative size")),
        case!("negative_stride.pth", c(&[3], &[-1], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("negative stride")),
        case!("negative_offset.pth", c(&[3], &[1], -1),
            ErrorKind::InvalidLayout { reason } if reason.contains("negative storage offset")),
        case!("rank_65.pth", c(&[1; 65], &[1; 65], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("65 dimensions")),
        case!("rank_mismatch.pth", c(&[2, 3], &[1], 0),
            ErrorKind::InvalidLayout { reason } if reason.contains("rank")),
    ]
}

/// Zip containers: missing and mis-sized records, duplicates, overlaps, two roots.
fn containers() -> Vec<Case> {
    let pkl = one_tensor("w", 0, &[6], &[1]);
    let data = six();
    let missing = torch_zip(&pkl, &[], None);
    let short = torch_zip(&pkl, &[("0", &data[..8])], None);
    let dup = zip_stored(&[
        ("archive/data.pkl", &pkl, 0),
        ("archive/data/0", &data, 0),
        ("archive/data/0", &data, 0),
    ]);
    let two_roots = zip_stored(&[("archive/data.pkl", &pkl, 0), ("other/data/0", &data, 0)]);
    let overlap = overlapping_zip();
    let compressed = zip_stored(&[("archive/data.pkl", &pkl, 0), ("archive/data/0", &data, 8)]);
    let middle = torch_zip(&pkl, &[("0", &data)], Some(b"middle"));
    vec![
        case!("missing_storage.pth", missing,
            ErrorKind::MissingStorage { key } if key == "0"),
        case!("storage_size_mismatch.pth", short,
            ErrorKind::StorageSizeMismatch { key, declared: 24, found: 8 } if key == "0"),
        case!("duplicate_zip_entry.pth", dup,
            ErrorKind::Duplicate { what: "zip entry", name } if name == "archive/data/0"),
        case!("two_archive_roots.pth", two_roots,
            ErrorKind::MalformedContainer { format: Format::TorchZip, reason } if reason.contains("\"other\"")),
        case!("overlapping_zip_entries.pth", overlap,
            ErrorKind::MalformedContainer { format: Format::Zip, reason } if reason.contains("overlap")),
        case!(
            "deflated_storage.pth",
            compressed,
            ErrorKind::MalformedContainer {
                format: Format::TorchZip,
                ..
            }
        ),
        case!("byteorder_middle.pth", middle,
            ErrorKind::MalformedContainer { format: Format::TorchZip, reason } if reason.contains("byteorder")),
    ]
}

/// A torch zip whose storage "1" is a complete local record hidden inside storage "0"'s data:
/// names and sizes agree everywhere, only the byte ranges overlap.
fn overlapping_zip() -> Vec<u8> {
    let pkl = P::new(2)
        .op(&[EMPTY_DICT, MARK])
        .str("a")
        .tensor("FloatStorage", "0", 23, 0, &[23], &[1])
        .str("b")
        .tensor("FloatStorage", "1", 6, 0, &[6], &[1])
        .op(&[SETITEMS])
        .stop();
    let inner = zip_stored(&[("archive/data/1", &six(), 0)]);
    let inner_local = &inner[..30 + 14 + 24];
    let mut payload = six();
    payload.extend_from_slice(inner_local);
    assert_eq!(payload.len(), 23 * 4);
    let mut z = zip_stored(&[
        ("archive/data.pkl", &pkl, 0),
        ("archive/data/0", &payload, 0),
        ("archive/version", b"3\n", 0),
    ]);
    // Where storage 0's data starts: its local header follows data.pkl's record.
    let data0 = 30 + 16 + pkl.len() + 30 + 14;
    let hidden = u32::try_from(data0 + 24).unwrap();
    // Append a central entry for archive/data/1 at `hidden`, fixing the end record.
    let eocd = z.len() - 22;
    let cd_size = u32::from_le_bytes(z[eocd + 12..eocd + 16].try_into().unwrap());
    let inner_cd_start =
        u32::from_le_bytes(inner[inner.len() - 6..inner.len() - 2].try_into().unwrap()) as usize;
    let mut entry = inner[inner_cd_start..inner.len() - 22].to_vec();
    entry[42..46].copy_from_slice(&hidden.to_le_bytes());
    let mut end = z.split_off(eocd);
    z.extend_from_slice(&entry);
    let count = u16::from_le_bytes(end[8..10].try_into().unwrap()) + 1;
    end[8..10].copy_from_slice(&count.to_le_bytes());
    end[10..12].copy_from_slice(&count.to_le_bytes());
    let size = cd_size + u32::try_from(entry.len()).unwrap();
    end[12..16].copy_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&end);
    z
}

/// Legacy containers.
fn legacy_files() -> Vec<Case> {
    let object = |class: &str| {
        P::new(2)
            .op(&[EMPTY_DICT])
            .str("w")
            .tensor_of("torch", class, "0", 6, 0, &[6], &[1], true)
            .op(&[SETITEM])
            .stop()
    };
    let data = six();
    let p = P::new(2).op(&[EMPTY_DICT]).str("w");
    let evil_at = p.at();
    let evil = p.global("posix", "system").op(&[SETITEM]).stop();
    let evil_file = legacy(&evil, &[], &[]);
    // The refused global's offset within the file: the object pickle follows three others.
    let evil_offset = legacy(&[], &[], &[]).len() as u64 - keys_len() + evil_at;
    let mut tar = vec![0u8; 1024];
    tar[257..262].copy_from_slice(b"ustar");
    vec![
        case!(
            "legacy_count_mismatch.pth",
            legacy(&object("FloatStorage"), &["0"], &[(5, &data[..20])]),
            ErrorKind::StorageSizeMismatch {
                declared: 24,
                found: 20,
                ..
            }
        ),
        case!("legacy_negative_count.pth", legacy(&object("FloatStorage"), &["0"], &[(-1, &data)]),
            ErrorKind::MalformedContainer { format: Format::TorchLegacy, reason } if reason.contains("negative element count")),
        case!(
            "legacy_data_past_end.pth",
            legacy(&object("FloatStorage"), &["0"], &[(6, &data[..12])]),
            ErrorKind::Truncated {
                what: "legacy storage data",
                needed: 24,
                available: 12,
                ..
            }
        ),
        case!("legacy_unlisted_storage.pth", legacy(&object("FloatStorage"), &[], &[]),
            ErrorKind::MissingStorage { key } if key == "0"),
        case!("legacy_posix_system.pth", evil_file,
            ErrorKind::DisallowedGlobal { global, offset } if global == "posix.system" && *offset == evil_offset),
        case!("legacy_tar.tar", tar,
            ErrorKind::MalformedContainer { format: Format::TorchLegacy, reason } if reason.contains("TAR")),
    ]
}

/// Length of the (empty) storage key list pickle [`legacy`] appends.
fn keys_len() -> u64 {
    P::new(2).op(&[EMPTY_LIST, MARK, APPENDS]).stop().len() as u64
}

/// `.npy` headers.
fn npy_files() -> Vec<Case> {
    let mut absurd = b"\x93NUMPY\x02\x00".to_vec();
    absurd.extend_from_slice(&u32::MAX.to_le_bytes());
    absurd.extend_from_slice(b"{'descr': '<f4', ");
    let deep = format!("({})", vec!["1"; 65].join(", "));
    vec![
        case!(
            "npy_absurd_header.npy",
            absurd,
            ErrorKind::BudgetExceeded {
                budget: "npy header length",
                offset: 8,
                ..
            }
        ),
        case!(
            "npy_shape_past_data.npy",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000), }",
                &[0; 16]
            ),
            ErrorKind::Truncated {
                needed: 4_000_000_000,
                ..
            }
        ),
        case!(
            "npy_shape_overflow.npy",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
                &[]
            ),
            ErrorKind::InvalidLayout { .. }
        ),
        case!(
            "npy_negative_shape.npy",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                &[]
            ),
            ErrorKind::InvalidLayout { .. }
        ),
        case!("npy_rank_65.npy",
            npy(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {deep}, }}"), &[0; 4]),
            ErrorKind::InvalidLayout { reason } if reason.contains("64")),
        case!("npy_object.npy",
            npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", &[0; 8]),
            ErrorKind::UnsupportedDType { dtype } if dtype == "|O"),
        case!("npy_big_endian_object.npy",
            npy("{'descr': '>c16', 'fortran_order': False, 'shape': (1,), }", &[0; 16]),
            ErrorKind::UnsupportedDType { dtype } if dtype == ">c16"),
    ]
}

/// `.npz` archives.
fn npz_files() -> Vec<Case> {
    let member = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
        &six(),
    );
    let dup = zip_stored(&[("w.npy", &member, 0), ("w.npy", &member, 0)]);
    let other = zip_stored(&[("w.npy", &member, 0), ("evil.py", b"import os", 0)]);
    // 32 MiB of zeros deflates ~1000:1, past the ratio budget.
    let zeros = vec![0u8; 32 << 20];
    let big = npy(
        &format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
            zeros.len() / 4
        ),
        &zeros,
    );
    let bomb = deflated_npz(&[("w.npy", &big)]);
    // A member that declares 2^40 bytes behind a few compressed bytes.
    let mut liar = deflated_npz(&[("w.npy", &member)]);
    forge_uncompressed_size(&mut liar, 1 << 31);
    vec![
        case!("npz_duplicate_entry.npz", dup,
            ErrorKind::Duplicate { what: "zip entry", name } if name == "w.npy"),
        case!("npz_non_npy_entry.npz", other,
            ErrorKind::MalformedContainer { format: Format::Npz, reason } if reason.contains("evil.py")),
        case!(
            "npz_inflate_ratio.npz",
            bomb,
            ErrorKind::BudgetExceeded {
                budget: "npz inflate ratio",
                ..
            }
        ),
        case!(
            "npz_impossible_size.npz",
            liar,
            ErrorKind::MalformedContainer {
                format: Format::Npz,
                ..
            }
        ),
    ]
}

/// An npz whose members are deflated by the zip crate.
pub fn deflated_npz(members: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Overwrites the uncompressed size in every local and central header.
fn forge_uncompressed_size(zip: &mut [u8], size: u32) {
    for i in 0..zip.len().saturating_sub(30) {
        match u32::from_le_bytes(zip[i..i + 4].try_into().unwrap()) {
            0x0403_4b50 => zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
            0x0201_4b50 => zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
            _ => {}
        }
    }
}

/// safetensors headers.
fn safetensors_files() -> Vec<Case> {
    let mut huge = (200_000_000u64).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let mut past = (4096u64).to_le_bytes().to_vec();
    past.extend_from_slice(b"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    vec![
        case!(
            "st_header_over_budget.safetensors",
            huge,
            ErrorKind::BudgetExceeded {
                budget: "safetensors header length",
                limit: 100_000_000,
                ..
            }
        ),
        case!(
            "st_header_past_file.safetensors",
            past,
            ErrorKind::Truncated {
                what: "safetensors header",
                needed: 4096,
                ..
            }
        ),
        case!(
            "st_overlapping_offsets.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12]
            ),
            ErrorKind::MalformedContainer {
                format: Format::Safetensors,
                ..
            }
        ),
        case!("st_duplicate_key.safetensors",
            safetensors(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 8]),
            ErrorKind::Duplicate { name, .. } if name == "a"),
        case!(
            "st_offsets_past_data.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#,
                &[0; 8]
            ),
            ErrorKind::MalformedContainer { .. } | ErrorKind::Truncated { .. }
        ),
        case!(
            "st_shape_disagrees.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8]
            ),
            ErrorKind::MalformedContainer { .. } | ErrorKind::InvalidLayout { .. }
        ),
        case!("st_rank_100000.safetensors",
            safetensors(&format!(r#"{{"a":{{"dtype":"U8","shape":[{}],"data_offsets":[0,1]}}}}"#, vec!["1"; 100_000].join(",")), &[0]),
            ErrorKind::InvalidLayout { reason } if reason.contains("100000 dimensions")),
        case!("st_offsets_three.safetensors",
            safetensors(r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#, &[0]),
            ErrorKind::MalformedContainer { format: Format::Safetensors, reason } if reason.contains("3 values")),
        case!(
            "st_tensor_count.safetensors",
            {
                let entries: Vec<String> = (0..=Limits::DEFAULT.tensors)
                    .map(|i| format!(r#""t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#))
                    .collect();
                safetensors(&format!("{{{}}}", entries.join(",")), &[])
            },
            ErrorKind::BudgetExceeded {
                budget: "tensor count",
                ..
            }
        ),
        case!("st_complex_dtype.safetensors",
            safetensors(r#"{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, &[0; 8]),
            ErrorKind::UnsupportedDType { dtype } if dtype == "C64"),
    ]
}

/// Flax `flax_model.msgpack` files: budgets, forged lengths and shapes, chunked-array forgeries,
/// keys and structure.
fn flax_files() -> Vec<Case> {
    let l = Limits::DEFAULT;
    let u8_array = || Mp::default().array(&[1], "uint8", &[1]);
    let scalar = || Mp::default().array(&[], "uint8", &[1]);

    // Maps nested one deeper than the budget, and arrays nested 100 000 deep.
    let mut deep = Mp::default();
    for _ in 0..=l.nesting_depth {
        deep = deep.map(1).s("k");
    }
    let deep = deep.raw(&u8_array().0).0;
    let mut deep_lists = Mp::default().map(1).s("k");
    for _ in 0..100_000 {
        deep_lists = deep_lists.arr(1);
    }
    let deep_lists = deep_lists.raw(&[0xc0]).0;

    // One array declaring more items than the value budget (refused from its header) …
    let declared = one(
        "a",
        Mp::default()
            .raw(&[0xdd])
            .raw(&(l.flax_values as u32 + 1).to_be_bytes()),
    );
    // … and 1 100 arrays of 1 000 nils each: over the budget only when counted.
    let mut values = Mp::default().map(1).s("a").arr(1100);
    for _ in 0..1100 {
        values = values.arr(1000).raw(&[0xc0; 1000]);
    }
    let values = values.0;

    // One more 0-d array than the tensor budget, in one list.
    let mut count = Mp::default()
        .map(1)
        .s("a")
        .arr(u32::try_from(l.tensors + 1).unwrap());
    for _ in 0..=l.tensors {
        count = count.raw(&scalar().0);
    }
    let count = count.0;

    // A 1 MiB key over 65 arrays: 65 MiB of names from a 1 MiB file.
    let long = "k".repeat(1 << 20);
    let mut names = Mp::default().map(1).s(&long).arr(65);
    for _ in 0..65 {
        names = names.raw(&scalar().0);
    }
    let names = names.0;

    let chunk = f32_chunk;
    let chunked = |marker: &[u8], shape: &[u64], chunks: Vec<Mp>| {
        one("w", Mp::default().chunked(marker, shape, chunks))
    };
    let gap = gapped_chunks();
    let top_chunked = Mp::default().chunked(&[0xc3], &[4], vec![chunk(4)]).0;
    let ext = |code: i8, payload: Vec<u8>| one("w", Mp::default().ext(code, &payload));
    let mut trailing = one("k", u8_array());
    trailing.push(0x00);

    vec![
        case!("flax_deep_maps.msgpack", deep,
            ErrorKind::BudgetExceeded { budget: "container nesting", limit, .. } if *limit == l.nesting_depth as u64),
        case!(
            "flax_deep_arrays.msgpack",
            deep_lists,
            ErrorKind::BudgetExceeded {
                budget: "container nesting",
                ..
            }
        ),
        case!("flax_values_declared.msgpack", declared,
            ErrorKind::BudgetExceeded { budget: "flax values", limit, .. } if *limit == l.flax_values as u64),
        case!("flax_values_bomb.msgpack", values,
            ErrorKind::BudgetExceeded { budget: "flax values", limit, .. } if *limit == l.flax_values as u64),
        case!("flax_tensor_count.msgpack", count,
            ErrorKind::BudgetExceeded { budget: "tensor count", limit, .. } if *limit == l.tensors as u64),
        case!("flax_tensor_name_bytes.msgpack", names,
            ErrorKind::BudgetExceeded { budget: "tensor name bytes", limit, .. } if *limit == l.tensor_name_bytes as u64),
        case!(
            "flax_str_past_end.msgpack",
            one(
                "a",
                Mp::default().raw(&[0xdb, 0x7f, 0xff, 0xff, 0xff, b'x'])
            ),
            ErrorKind::Truncated {
                what: "msgpack string",
                needed: 0x7fff_ffff,
                ..
            }
        ),
        case!(
            "flax_ext_past_end.msgpack",
            one(
                "a",
                Mp::default().raw(&[0xc9, 0x40, 0x00, 0x00, 0x00, 0x01, 0x93])
            ),
            ErrorKind::Truncated {
                what: "msgpack extension payload",
                needed: 0x4000_0000,
                ..
            }
        ),
        case!("flax_bin_over_msgpack_limit.msgpack",
            one("a", Mp::default().raw(&[0xc6, 0xff, 0xff, 0xff, 0xff])),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("more than msgpack allows")),
        case!(
            "flax_map_count_past_end.msgpack",
            Mp::default()
                .raw(&[0xde, 0x10, 0x00])
                .s("a")
                .raw(&u8_array().0)
                .0,
            ErrorKind::Truncated {
                what: "msgpack container",
                ..
            }
        ),
        case!("flax_huge_shape_tiny_payload.msgpack",
            one("w", Mp::default().array(&[1 << 20, 1 << 20], "float32", &[0; 4])),
            ErrorKind::InvalidLayout { reason } if reason.contains("needs 4398046511104 bytes")),
        case!("flax_shape_overflow.msgpack",
            one("w", Mp::default().array(&[u64::MAX, 4], "float32", &[])),
            ErrorKind::InvalidLayout { reason } if reason.contains("overflows")),
        case!("flax_negative_dim.msgpack",
            ext(1, Mp::default().arr(3).arr(1).raw(&[0xff]).s("uint8").bin(&[]).0),
            ErrorKind::InvalidLayout { reason } if reason.contains("negative")),
        case!("flax_rank_65.msgpack",
            ext(1, Mp::payload(&[1; 65], "uint8", &[0])),
            ErrorKind::InvalidLayout { reason } if reason.contains("rank 65")),
        case!("flax_data_size_mismatch.msgpack",
            ext(1, Mp::payload(&[3], "float32", &[0; 8])),
            ErrorKind::InvalidLayout { reason } if reason.contains("needs 12 bytes")),
        case!(
            "flax_payload_not_a_triple.msgpack",
            ext(1, Mp::default().arr(2).arr(0).s("float32").0),
            ErrorKind::MalformedContainer {
                format: Format::Flax,
                ..
            }
        ),
        case!("flax_chunks_short.msgpack",
            chunked(&[0xc3], &[2, 3], vec![chunk(4), chunk(1)]),
            ErrorKind::InvalidLayout { reason } if reason.contains("the chunks 5")),
        case!(
            "flax_chunked_huge_shape.msgpack",
            chunked(&[0xc3], &[1 << 40], vec![chunk(4)]),
            ErrorKind::InvalidLayout { .. }
        ),
        case!(
            "flax_chunked_shape_overflow.msgpack",
            chunked(&[0xc3], &[u64::MAX, u64::MAX], vec![chunk(4)]),
            ErrorKind::InvalidLayout { .. }
        ),
        case!("flax_chunks_mixed_dtypes.msgpack",
            chunked(&[0xc3], &[2, 3], vec![chunk(4), Mp::default().array(&[2], "int32", &[0; 8])]),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("different dtypes")),
        case!("flax_chunk_2d.msgpack",
            chunked(&[0xc3], &[2, 3], vec![chunk(4), Mp::default().array(&[1, 2], "float32", &f32s(2))]),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("1-D chunks")),
        case!("flax_chunk_not_an_array.msgpack",
            chunked(&[0xc3], &[4], vec![Mp::default().raw(&[0xc0])]),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("not an array")),
        case!("flax_chunked_marker_false.msgpack",
            chunked(&[0xc2], &[4], vec![chunk(4)]),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("is not true")),
        case!(
            "flax_chunks_gap.msgpack",
            gap,
            ErrorKind::MalformedContainer {
                format: Format::Flax,
                ..
            }
        ),
        case!("flax_no_chunks.msgpack", chunked(&[0xc3], &[0], vec![]),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("no chunks")),
        case!("flax_chunked_top_level.msgpack", top_chunked,
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("top level is a chunked array")),
        case!("flax_duplicate_key.msgpack",
            Mp::default().map(2).s("k").raw(&u8_array().0).s("k").raw(&u8_array().0).0,
            ErrorKind::Duplicate { what: "msgpack map key", name } if name == "k"),
        case!("flax_joined_names.msgpack",
            Mp::default().map(2).s("a/b").raw(&u8_array().0).s("a").map(1).s("b").raw(&u8_array().0).0,
            ErrorKind::Duplicate { what: "tensor", name } if name == "a/b"),
        case!(
            "flax_array_top_level.msgpack",
            Mp::default().arr(1).raw(&u8_array().0).0,
            ErrorKind::UnknownFormat { .. }
        ),
        case!("flax_empty_map.msgpack", vec![0x80],
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("empty")),
        case!("flax_integer_key.msgpack",
            Mp::default().map(1).uint(3).raw(&u8_array().0).0,
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("expected a UTF-8 string")),
        case!("flax_trailing_bytes.msgpack", trailing,
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("trailing")),
        case!("flax_reserved_marker.msgpack", one("k", Mp::default().raw(&[0xc1])),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("0xc1")),
        case!("flax_unknown_extension.msgpack", ext(9, Mp::payload(&[1], "uint8", &[1])),
            ErrorKind::MalformedContainer { format: Format::Flax, reason } if reason.contains("extension type 9")),
        case!("flax_complex.msgpack", ext(2, Mp::default().arr(2).raw(&[0x01, 0x02]).0),
            ErrorKind::UnsupportedDType { dtype } if dtype == "complex"),
        case!("flax_object_dtype.msgpack", ext(1, Mp::payload(&[1], "object", &[0; 8])),
            ErrorKind::UnsupportedDType { dtype } if dtype == "object"),
    ]
}

/// Files no reader recognises.
fn unknown() -> Vec<Case> {
    vec![
        case!("empty.pth", Vec::new(), ErrorKind::UnknownFormat { magic } if magic == "(empty file)"),
        case!("elf.bin", b"\x7fELF\x02\x01\x01\x00rest".to_vec(),
            ErrorKind::UnknownFormat { magic } if magic.starts_with("7f 45 4c 46")),
    ]
}

/// Every hostile case.
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(global_forms());
    v.extend(structural());
    v.extend(budgets());
    v.extend(persistent_ids());
    v.extend(layouts());
    v.extend(containers());
    v.extend(legacy_files());
    v.extend(npy_files());
    v.extend(npz_files());
    v.extend(safetensors_files());
    v.extend(flax_files());
    v.extend(unknown());
    v
}
