//! Convert a timm checkpoint to the Hugging Face layout, then prove it against timm's own
//! logits. `cargo run --example convert_and_verify`; `cargo test` runs it too.
use std::path::Path;

use vit_convert::{ConfigOverrides, ConvertOptions, F32Array, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/convert/timm_vit");
    let out = tempfile::tempdir()?;
    // 1. Convert: timm .pth → model.safetensors + config.json + preprocessor_config.json.
    let overrides = ConfigOverrides {
        num_heads: Some(2),
        ..Default::default()
    };
    let opts = ConvertOptions {
        from: Some("timm".parse()?),
        overrides,
        ..Default::default()
    };
    let report = vit_convert::convert(fixture.join("source.pth"), out.path(), &opts)?;
    println!(
        "{} tensors written via table {}",
        report.tensors, report.mapping.table
    );
    // 2. Verify: run the converted model, compare with the logits timm computed on this input.
    let model = Model::load(out.path())?;
    let input = F32Array::read_npy(fixture.join("io/input.npy"))?;
    let expected = F32Array::read_npy(fixture.join("io/logits_timm.npy"))?;
    // `None`: the default tolerance for the model's weights (f32 here).
    let r = vit_convert::verify_model(&model, &input, &expected, &Default::default(), None)?;
    println!(
        "max |Δ| {:.2e}: {}",
        r.max_abs_error,
        if r.passed { "PASS" } else { "FAIL" }
    );
    if !r.passed {
        return Err("outputs differ beyond tolerance".into());
    }
    Ok(())
}

#[test]
fn converts_and_verifies_the_bundled_timm_fixture() {
    main().unwrap();
}
