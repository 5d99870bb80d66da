#!/usr/bin/env python3
"""By-hand check of whole timm model families (not run by `cargo test`): builds each named timm
model with random, perturbed weights (nothing is downloaded), saves its state dict, converts it
with `vit-convert --from auto`, loads the output in transformers (zero missing/unexpected keys),
compares transformers' output with timm's, and runs `vit-convert verify` against transformers'
output. Prints one line per model and exits 1 if any model fails.

    $VIT_CONVERT_VENV/bin/python scripts/check_timm_family.py 'beit*'          # every BEiT
    $VIT_CONVERT_VENV/bin/python scripts/check_timm_family.py '*dinov2*' 'vit_*clip*'  # others
    $VIT_CONVERT_VENV/bin/python scripts/check_timm_family.py beit_base_patch16_224

VIT_CONVERT_BIN names the binary (default target/release/vit-convert; build it first with
`cargo build --release`). BEiT 3 (`beit3_*`, a multiway text+image model) is not a BEiT and is
skipped unless named exactly.
"""
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("VIT_CONVERT_BIN", str(ROOT / "target/release/vit-convert"))


def perturb(model: torch.nn.Module, seed: int, zero: tuple[str, ...] = ()) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in zero:
                p.zero_()
                continue
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and ("norm" in name and name.endswith("weight")):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise if p.ndim <= 1 or "token" in name or "pos" in name
                        else noise * (p.shape[-1] ** -0.5))


def check(name: str, work: Path) -> tuple[bool, str]:
    model = timm.create_model(name, pretrained=False).eval()
    # timm's CLIP towers carry the projection as a head with a bias, zero in every OpenAI/LAION
    # port (HF's projection has none).
    perturb(model, 0, zero=("head.bias",) if "clip" in name else ())
    # A state dict cannot tell QuickGELU from GELU: timm's `*_quickgelu_*` models say so by name.
    act = ["--hidden-act", "quick_gelu"] if "quickgelu" in name else []
    src = work / f"{name}.pth"
    torch.save(model.state_dict(), src)
    out = work / name
    run = subprocess.run([BIN, "--quiet", "--json", str(src), "-o", str(out),
                          "--num-heads", str(model.blocks[0].attn.num_heads)] + act,
                         capture_output=True, text=True)
    if run.returncode != 0:
        return False, f"convert failed: {run.stderr.strip()}"
    report = json.loads(run.stdout)
    cfg = json.loads((out / "config.json").read_text())
    cls = getattr(transformers, cfg["architectures"][0])
    hf, info = cls.from_pretrained(out, output_loading_info=True, attn_implementation="eager")
    hf.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        return False, f"transformers loading info: {bad}"
    size = cfg["image_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
        o = hf(pixel_values=x)
    # What timm's forward returns: the head's logits, CLIP's projection (`image_embeds`), or a
    # headless model's pooled token (`pooler_output`).
    for attr, compare in [("logits", "logits"), ("image_embeds", "image_embeds"),
                          ("pooler_output", "pooler")]:
        got = getattr(o, attr, None)
        if got is not None:
            break
    delta = (want - got).abs().max().item()
    if delta > 1e-4 * max(1.0, want.abs().max().item()):
        return False, f"transformers {attr} vs timm max |Δ| {delta:.3e}"
    np.save(work / "x.npy", x.numpy())
    np.save(work / "y.npy", got.numpy())
    run = subprocess.run([BIN, "verify", str(out), "--input", str(work / "x.npy"),
                          "--expected", str(work / "y.npy"), "--compare", compare],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return False, f"verify: {(run.stdout + run.stderr).strip()}"
    return True, (f"{report['architecture']} {report['config']['image_size']}px: transformers vs "
                  f"timm {delta:.1e}; {run.stdout.strip()}")


def main() -> int:
    patterns = sys.argv[1:] or ["beit*"]
    names = [n for n in timm.list_models() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    names = [n for n in names if not n.startswith("beit3") or n in patterns]
    failed = 0
    for n in names:
        with tempfile.TemporaryDirectory() as d:
            ok, msg = check(n, Path(d))
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {n}: {msg}", flush=True)
    print(f"{len(names) - failed}/{len(names)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
