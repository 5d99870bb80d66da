#!/usr/bin/env python3
"""Interop proof: what vit-convert writes loads where people use it, and computes what the source
framework computed.

For every case and every source file of fixtures/convert/cases.json this script

1. converts it with the built `vit-convert` binary (`--to safetensors`), loads the folder with
   transformers `from_pretrained(..., output_loading_info=True)` (ViTModel with
   `add_pooling_layer=False` for headless models without a pooler), asserts zero missing,
   unexpected and mismatched keys, runs it and compares its output with the source framework's
   (timm's logits / `forward_features`; for a JAX pre-logits pooler, transformers' own output of
   the reference checkpoint, since timm has no pre-logits layer);
2. converts it `--to timm` and loads the file with timm
   `create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))` (timm's own
   loader, strict), and compares outputs;
3. converts it `--to npz` and loads it with timm's JAX loader
   `timm.models.vision_transformer._load_weights`, and compares outputs.

It prints a markdown table (the one README.md shows) and exits 1 if anything failed. Layouts a
target cannot represent (a DeiT distillation token in the JAX npz layout, a pre-logits pooler in
timm's) are reported as refused by vit-convert, with its message: that refusal is the correct
behaviour, not a failure.

Needs the fixture environment (torch, timm, transformers, numpy):

    /root/vitc-venv/bin/python scripts/interop.py [--bin target/release/vit-convert]

Without --bin it runs `cargo build --release` and uses target/release/vit-convert. CI does not
need this script; the Rust tests cover the same outputs against the same fixtures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "convert"
# Outputs must match the source framework's within this (max absolute difference); the
# transformers and timm fixtures themselves agree within 1e-5.
TOLERANCE = 1e-4


def run_convert(binary: Path, case: dict, source: dict, to: str, out: Path) -> tuple[bool, str]:
    src = FIXTURES / case["dir"] / source["file"]
    args = [str(binary), "--from", case["family"], "--to", to, str(src), "-o", str(out)]
    if case["family"] != "hf":
        args += ["--num-heads", str(case["config"]["num_attention_heads"])]
    if source.get("branch") in ("teacher", "student"):
        args += ["--branch", source["branch"]]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        return False, p.stderr.strip().removeprefix("error: ")
    return True, ""


def load_np(case: dict, rel: str) -> np.ndarray:
    return np.load(FIXTURES / case["dir"] / rel)


def source_reference(case: dict) -> tuple[str, np.ndarray]:
    """The source framework's output on io/input.npy: (what, array)."""
    io = case["io"]["input.npy"]
    timm_out = io.get("timm_outputs", {})
    if "logits" in timm_out:
        return "timm logits", load_np(case, timm_out["logits"])
    return "timm forward_features", load_np(case, timm_out["features"])


def max_abs(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_transformers(case: dict, out: Path) -> tuple[bool, str, str]:
    """(ok, class/keys cell, difference cell)."""
    import transformers

    arch = case["architecture"]
    cls = getattr(transformers, arch)
    kwargs = {"output_loading_info": True, "attn_implementation": "eager"}
    if arch == "ViTModel":
        kwargs["add_pooling_layer"] = bool(case.get("add_pooling_layer", False))
    model, info = cls.from_pretrained(str(out), **kwargs)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    label = arch + ("(add_pooling_layer=False)" if kwargs.get("add_pooling_layer") is False else "")
    if bad:
        return False, f"{label}: {bad}", "—"
    x = torch.from_numpy(load_np(case, case["io"]["input.npy"]["input"]))
    with torch.no_grad():
        y = model(pixel_values=x)
    what, want = source_reference(case)
    got = y.logits if "logits" in what else y.last_hidden_state
    d = max_abs(got.numpy(), want)
    cells = [f"{d:.1e} vs {what}"]
    ok = d <= TOLERANCE
    pooler_ref = case["io"]["input.npy"]["outputs"].get("pooler_output")
    if pooler_ref is not None:
        dp = max_abs(y.pooler_output.numpy(), load_np(case, pooler_ref))
        cells.append(f"pooler {dp:.1e} vs transformers")
        ok = ok and dp <= TOLERANCE
    return ok, f"`{label}`, 0 missing / 0 unexpected", "; ".join(cells)


def timm_model(case: dict, **extra):
    """The timm model `--to timm` / `--to npz` output loads into. Those layouts are always the
    standard ViT (position embeddings with a class row), so a source built without one
    (big_vision: `no_embed_class=True`) is checked in the standard model, whose class row
    vit-convert fills with the exact zeros that make the two compute the same."""
    import timm

    spec = case["timm_model"]
    kwargs = {k: v for k, v in spec["kwargs"].items() if k != "no_embed_class"}
    return timm.create_model(spec["name"], **kwargs, **extra).eval()


def timm_output_diff(case: dict, model) -> float:
    x = torch.from_numpy(load_np(case, case["io"]["input.npy"]["input"]))
    what, want = source_reference(case)
    with torch.no_grad():
        got = model(x) if "logits" in what else model.forward_features(x)
    return max_abs(got.numpy(), want)


def check_timm(case: dict, file: Path) -> tuple[bool, str]:
    # num_classes in the overlay too: timm drops a pretrained head whose class count differs
    # from the pretrained config's (1000 by default) and leaves it randomly initialised.
    overlay = dict(file=str(file), num_classes=case["timm_model"]["kwargs"]["num_classes"])
    model = timm_model(case, pretrained=True, pretrained_cfg_overlay=overlay)
    d = timm_output_diff(case, model)
    return d <= TOLERANCE, f"loads, {d:.1e}"


def check_npz(case: dict, file: Path) -> tuple[bool, str]:
    from timm.models.vision_transformer import _load_weights

    if case["timm_model"]["kwargs"].get("qkv_bias") is False:
        # JAX ViTs always have q/k/v biases and timm's JAX loader copies them unconditionally;
        # the npz itself is checked by the Rust tests (it converts back to the same digest).
        return True, "n/a: timm's JAX loader requires q/k/v biases"

    model = timm_model(case, pretrained=False)
    _load_weights(model, str(file))
    d = timm_output_diff(case, model)
    return d <= TOLERANCE, f"loads, {d:.1e}"


def guarded(fn, *args) -> tuple[bool, str]:
    try:
        return fn(*args)
    except Exception as e:  # a loader failure is a result to report, not a crash
        return False, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, help="vit-convert binary (default: build release)")
    args = ap.parse_args()
    binary = args.bin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = ROOT / "target" / "release" / "vit-convert"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    import transformers

    transformers.utils.logging.disable_progress_bar()

    cases = json.loads((FIXTURES / "cases.json").read_text())
    rows = []
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in cases:
            for k, source in enumerate(case["sources"]):
                base = tmp / f"{case['case']}-{k}"
                cells = [f"`{case['case']}`", f"`{source['file']}`"]

                ok, err = run_convert(binary, case, source, "safetensors", base / "hf")
                if ok:
                    ok, keys, diff = guarded_hf(case, base / "hf")
                else:
                    keys, diff = f"convert FAILED: {err}", "—"
                failures += not ok
                cells += [keys, diff]

                for to, file, check in (
                    ("timm", "model.safetensors", check_timm),
                    ("npz", "model.npz", check_npz),
                ):
                    if case.get("timm_model") is None:
                        cells.append("—")
                        continue
                    conv_ok, err = run_convert(binary, case, source, to, base / to)
                    if not conv_ok:
                        refused = "has no place for" in err or "cannot represent" in err
                        cells.append(f"refused: {err.split(': ')[-1]}" if refused else f"convert FAILED: {err}")
                        failures += not refused
                        continue
                    ok, cell = guarded(check, case, base / to / file)
                    failures += not ok
                    cells.append(cell)
                rows.append(cells)

    print("| case | source | transformers `from_pretrained` | max \\|Δ\\| vs source framework | `--to timm` in timm | `--to npz` in timm `_load_weights` |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    import timm
    import transformers

    print()
    print(
        f"{len(rows)} conversions; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"timm {timm.__version__}; tolerance {TOLERANCE:g} absolute; "
        + ("all passed." if failures == 0 else f"{failures} FAILED.")
    )
    return 0 if failures == 0 else 1


def guarded_hf(case: dict, out: Path) -> tuple[bool, str, str]:
    try:
        return check_transformers(case, out)
    except Exception as e:
        return False, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120]}", "—"


if __name__ == "__main__":
    sys.exit(main())
