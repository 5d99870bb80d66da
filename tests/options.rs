//! Options instead of process-wide state (issue 13 §2): `Limits`, the mmap choice and the fsync
//! choice are plain values, so two conversions (or two opens) with different limits in one
//! process do not interfere.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;

use vit_convert::source::{open_bytes_with, open_with};
use vit_convert::{ConvertOptions, ErrorKind, FileBytes, Limits, OpenOptions};

fn pth() -> PathBuf {
    common::fixture("convert", "timm_vit/source.pth")
}

/// Limits under which the timm fixture's pickle does not fit.
fn low() -> Limits {
    let mut l = Limits::DEFAULT;
    l.pickle_nodes = 10;
    l
}

fn is_pickle_nodes_budget(e: &vit_convert::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BudgetExceeded {
            budget: "pickle nodes",
            limit: 10,
            ..
        }
    )
}

/// Runs `a` and `b` on two threads released together, returning both results.
fn together<A, B>(
    a: impl FnOnce() -> A + Send + 'static,
    b: impl FnOnce() -> B + Send + 'static,
) -> (A, B)
where
    A: Send + 'static,
    B: Send + 'static,
{
    let gate = Arc::new(Barrier::new(2));
    let ga = Arc::clone(&gate);
    let ta = thread::spawn(move || {
        ga.wait();
        a()
    });
    let gb = Arc::clone(&gate);
    let tb = thread::spawn(move || {
        gb.wait();
        b()
    });
    (ta.join().unwrap(), tb.join().unwrap())
}

#[test]
fn two_opens_with_different_limits_run_concurrently_without_interfering() {
    let bytes = std::fs::read(pth()).unwrap();
    for round in 0..8 {
        let (lo, hi) = (bytes.clone(), bytes.clone());
        let open_low = move || {
            open_bytes_with(FileBytes::from_vec(lo), &OpenOptions::with_limits(low()))
                .map(|s| s.tensors().len())
        };
        let open_default = move || {
            open_bytes_with(FileBytes::from_vec(hi), &OpenOptions::default())
                .map(|s| s.tensors().len())
        };
        // Both orders: the low budget started first, then the default first.
        let (low_result, default_result) = if round % 2 == 0 {
            together(open_low, open_default)
        } else {
            let (d, l) = together(open_default, open_low);
            (l, d)
        };
        let e = low_result.expect_err("opened within 10 pickle nodes");
        assert!(is_pickle_nodes_budget(&e), "{e}");
        assert!(default_result.unwrap() > 0);
    }
    // The same through a path, mapped and read.
    for mmap in [true, false] {
        let mut opts = OpenOptions::with_limits(low());
        opts.mmap = mmap;
        let e = open_with(pth(), &opts).err().unwrap();
        assert!(is_pickle_nodes_budget(&e), "{e}");
        opts.limits = Limits::DEFAULT;
        assert!(open_with(pth(), &opts).is_ok());
    }
}

fn timm_opts(limits: Limits) -> ConvertOptions {
    ConvertOptions {
        open: OpenOptions::with_limits(limits),
        ..common::two_heads()
    }
}

#[test]
fn two_conversions_with_different_limits_run_concurrently_without_interfering() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let (out_low, out_default) = (dir.path().join("low"), dir.path().join("default"));
        let (ol, od) = (out_low.clone(), out_default.clone());
        let convert_low = move || vit_convert::convert(pth(), &ol, &timm_opts(low()));
        let convert_default = move || vit_convert::convert(pth(), &od, &timm_opts(Limits::DEFAULT));
        let (low_result, default_result) = if round % 2 == 0 {
            together(convert_low, convert_default)
        } else {
            let (d, l) = together(convert_default, convert_low);
            (l, d)
        };
        let e = low_result.expect_err("converted within 10 pickle nodes");
        assert!(is_pickle_nodes_budget(&e), "{e}");
        assert!(!out_low.join("model.safetensors").exists());
        let report = default_result.unwrap();
        assert!(report.tensors > 0);
        assert!(out_default.join("model.safetensors").is_file());
    }
}

#[test]
fn a_conversion_limits_its_side_files_and_table_output_too() {
    // The output allowance of a mapping table is a limit of the conversion, not of the process.
    let mut tight = Limits::DEFAULT;
    tight.table_output_allowance_bytes = 0;
    let dir = tempfile::tempdir().unwrap();
    // timm's table prepends no zeros: a zero allowance still converts it.
    vit_convert::convert(pth(), dir.path().join("a"), &timm_opts(tight)).unwrap();
    // A model folder's config.json is read within the limits given to `Model::load_with`.
    let model_dir = common::fixture("convert", "timm_vit/hf");
    let mut small = Limits::DEFAULT;
    small.config_file_bytes = 8;
    let e = vit_convert::Model::load_with(&model_dir, &OpenOptions::with_limits(small))
        .err()
        .unwrap();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::BudgetExceeded {
                budget: "config file bytes",
                ..
            }
        ),
        "{e}"
    );
    assert!(vit_convert::Model::load_with(&model_dir, &OpenOptions::default()).is_ok());
}

#[test]
fn fsync_is_an_option_of_the_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        fsync: true,
        ..timm_opts(Limits::DEFAULT)
    };
    let synced = vit_convert::convert(pth(), dir.path().join("synced"), &opts).unwrap();
    let plain =
        vit_convert::convert(pth(), dir.path().join("plain"), &timm_opts(Limits::DEFAULT)).unwrap();
    let read = |p: &PathBuf| std::fs::read(p.join("model.safetensors")).unwrap();
    assert_eq!(
        read(&dir.path().join("synced")),
        read(&dir.path().join("plain"))
    );
    assert_eq!(synced.tensors, plain.tensors);
}

#[test]
fn forward_budgets_come_from_the_forward_options() {
    use vit_convert::forward::ForwardOptions;
    let model = vit_convert::Model::load(common::fixture("convert", "timm_vit/hf")).unwrap();
    let x = vit_convert::F32Array::read_npy(common::fixture("convert", "timm_vit/io/input.npy"))
        .unwrap();
    let mut opts = ForwardOptions::default();
    opts.limits.forward_tokens = 2;
    let e = model.forward(x.as_nchw().unwrap(), &opts).err().unwrap();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::BudgetExceeded {
                budget: "forward tokens",
                limit: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(model
        .forward(x.as_nchw().unwrap(), &ForwardOptions::default())
        .is_ok());
}

#[test]
fn the_cli_reads_its_environment_into_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let run = |vars: &[(&str, &str)], out: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vit-convert"));
        cmd.args(["convert", "--num-heads", "2", "-o"])
            .arg(dir.path().join(out))
            .arg(pth());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // VIT_CONVERT_FSYNC and VIT_CONVERT_NO_MMAP choose; the output is the same bytes.
    let synced = run(
        &[("VIT_CONVERT_FSYNC", "1"), ("VIT_CONVERT_NO_MMAP", "1")],
        "synced",
    );
    assert!(synced.status.success(), "{synced:?}");
    let plain = run(&[], "plain");
    assert!(plain.status.success(), "{plain:?}");
    let read = |out: &str| std::fs::read(dir.path().join(out).join("model.safetensors")).unwrap();
    assert_eq!(read("synced"), read("plain"));
    // A lowered budget applies to this process only.
    let low = run(&[("VIT_CONVERT_LIMIT_PICKLE_NODES", "10")], "low");
    assert_eq!(low.status.code(), Some(1), "{low:?}");
    assert!(String::from_utf8_lossy(&low.stderr).contains("VIT_CONVERT_LIMIT_PICKLE_NODES"));
}
