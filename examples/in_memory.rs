//! Another converter's check, entirely in memory: the bytes of a timm checkpoint → canonical
//! tensors + config → the reference model → its logits compared with the ones timm computed →
//! and a cut-short copy refused with a typed error. No file is written (the fixture files are
//! only read). `cargo run --example in_memory`; `cargo test` runs it too.
use std::path::Path;

use vit_convert::{
    open_bytes, verify_model, Canonical, ConfigOverrides, ConvertOptions, ErrorKind, F32Array,
    FileBytes,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/convert/timm_vit");
    // The one read of the checkpoint: from here on everything is bytes in memory.
    let bytes = std::fs::read(fixture.join("source.pth"))?;

    // 1. Bytes → a tensor source (format sniffed from the bytes: a torch zip here).
    let src = open_bytes(FileBytes::from_vec(bytes.clone()))?;

    // 2. → canonical tensors (HF names, PyTorch orientation) and the inferred config. The
    //    family is detected from the tensor names; the tiny test model has 2 heads, which no
    //    tensor records (real checkpoints default to hidden / 64).
    let opts = ConvertOptions {
        overrides: ConfigOverrides {
            num_heads: Some(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let canon = Canonical::new(src.as_ref(), &opts)?;
    println!(
        "{} canonical tensors via table {}, {} with {} layers",
        canon.tensors().len(),
        canon.mapping().table,
        canon.config().architecture.name(),
        canon.config().num_hidden_layers
    );
    println!("canonical digest {}", canon.hash()?.digest);

    // 3. → the reference model → forward → compared with the logits timm itself computed.
    let model = canon.model()?;
    let input = F32Array::parse_npy(std::fs::read(fixture.join("io/input.npy"))?)?;
    let expected = F32Array::parse_npy(std::fs::read(fixture.join("io/logits_timm.npy"))?)?;
    // `None`: the default tolerance for the weights' precision (f32 here).
    let r = verify_model(&model, &input, &expected, &Default::default(), None)?;
    println!(
        "max |Δ| {:.2e} ({}): {}",
        r.max_abs_error,
        r.tolerance_basis,
        if r.passed { "PASS" } else { "FAIL" }
    );
    if !r.passed {
        return Err("outputs differ beyond tolerance".into());
    }

    // 4. A truncated copy is refused with a typed error, matched on its kind, not its text.
    let cut = bytes[..bytes.len() - 100].to_vec();
    match open_bytes(FileBytes::from_vec(cut)) {
        Ok(_) => Err("a truncated checkpoint opened".into()),
        Err(e) => match e.kind() {
            ErrorKind::Truncated { .. } => {
                println!("truncated copy refused: {e}");
                Ok(())
            }
            _ => Err(format!("unexpected error for a truncated checkpoint: {e}").into()),
        },
    }
}

#[test]
fn runs_the_in_memory_flow_on_the_bundled_timm_fixture() {
    main().unwrap();
}
