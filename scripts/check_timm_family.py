#!/usr/bin/env python3
"""By-hand check of whole timm model families (not run by `cargo test`): builds each named timm
model with random, perturbed weights (nothing is downloaded), saves its state dict, converts it
with `vit-convert --from auto`, loads the output in transformers (zero missing/unexpected keys),
compares transformers' output with timm's, runs `vit-convert verify` against transformers'
output, and writes the output back with `--to timm`: the same state dict, bit for bit, which timm
loads strictly. Prints one line per model and exits 1 if any model fails.

    $VIT_CONVERT_VENV/bin/python scripts/check_timm_family.py 'beit*'          # every BEiT
    $VIT_CONVERT_VENV/bin/python scripts/check_timm_family.py '*dinov2*' 'vit_*clip*'  # others
    $VIT_CONVERT_VENV/bin/python scripts/check_timm_family.py beit_base_patch16_224

`--census` runs every model of timm's ViT family (the `vision_transformer`, `deit` and `beit`
modules) and sorts each into converted (all checks pass), refused (vit-convert exits with an
error and writes nothing) or wrong (converted, but a check fails: the number that must stay 0).
`--depth N` builds each model with N blocks instead of its own depth (the architecture's features
are per block, so a census at `--depth 2` sees the same features in a fraction of the time).

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
import safetensors
import safetensors.torch
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


def check(name: str, work: Path, depth: int | None = None) -> tuple[str, str]:
    """Returns ("ok" | "refused" | "wrong", message)."""
    kwargs = {"depth": depth} if depth else {}
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    # timm's CLIP towers carry the projection as a head with a bias, zero in every OpenAI/LAION
    # port (HF's projection has none).
    perturb(model, 0, zero=("head.bias",) if "clip" in name else ())
    # A state dict cannot tell QuickGELU from GELU: timm's `*_quickgelu_*` models say so by name.
    act = ["--hidden-act", "quick_gelu"] if "quickgelu" in name else []
    # timm builds most SigLIP towers with exact GELU (big_vision trained them with the tanh form,
    # the table's default): the model is what is checked, so say which one it computes.
    mlp_act = getattr(getattr(model, "blocks", [None])[0], "mlp", None)
    mlp_act = getattr(mlp_act, "act", None)
    if "siglip" in name and type(mlp_act) is torch.nn.GELU and mlp_act.approximate == "none":
        act = ["--hidden-act", "gelu"]
    src = work / f"{name}.pth"
    torch.save(model.state_dict(), src)
    out = work / name
    heads = next(m.num_heads for m in model.blocks[0].modules() if hasattr(m, "num_heads"))
    run = subprocess.run([BIN, "--quiet", "--json", str(src), "-o", str(out),
                          "--num-heads", str(heads)] + act,
                         capture_output=True, text=True)
    if run.returncode != 0:
        # Nothing was written: a refusal, whatever its reason (the census lists the reasons).
        return "refused", f"convert failed: {run.stderr.strip()}"
    report = json.loads(run.stdout)
    cfg = json.loads((out / "config.json").read_text())
    cls = getattr(transformers, cfg["architectures"][0])
    kwargs = {}
    names = safetensors.safe_open(out / "model.safetensors", "pt").keys()
    if cfg["architectures"][0] == "ViTModel" and not any(n.startswith("pooler.") for n in names):
        # A headless ViT without a pooler: ViTModel builds one unless told not to.
        kwargs["add_pooling_layer"] = False
    hf, info = cls.from_pretrained(out, output_loading_info=True, attn_implementation="eager",
                                   **kwargs)
    hf.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        return "wrong", f"transformers loading info: {bad}"
    size = cfg["image_size"]
    # timm may build a model for a size its patches do not tile (SigLIP so400m/14 at 384: 27
    # patches use 378 px); the weights say only the grid, so vit-convert writes 378. The strided
    # patch convolution ignores the rest: timm sees the image, the others its top-left crop.
    timm_size = model.patch_embed.img_size[0] if hasattr(model, "patch_embed") else size
    big = torch.randn(2, 3, timm_size, timm_size, generator=torch.Generator().manual_seed(1))
    x = big[:, :, :size, :size].contiguous()
    with torch.no_grad():
        want = model(big)
        o = hf(pixel_values=x)
    # What timm's forward returns: the head's logits, CLIP's projection (`image_embeds`), a
    # headless model's pooled token (`pooler_output`) or, without a pooler, its class token.
    for attr, compare in [("logits", "logits"), ("image_embeds", "image_embeds"),
                          ("pooler_output", "pooler"), ("last_hidden_state", "last_hidden_state")]:
        got = getattr(o, attr, None)
        if got is not None:
            break
    mine = got[:, 0] if attr == "last_hidden_state" else got
    delta = (want - mine).abs().max().item()
    if delta > 1e-4 * max(1.0, want.abs().max().item()):
        return "wrong", f"transformers {attr} vs timm max |Δ| {delta:.3e}"
    np.save(work / "x.npy", x.numpy())
    np.save(work / "y.npy", got.numpy())
    run = subprocess.run([BIN, "verify", str(out), "--input", str(work / "x.npy"),
                          "--expected", str(work / "y.npy"), "--compare", compare],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return "wrong", f"verify: {(run.stdout + run.stderr).strip()}"
    back = reverse(model, out, work)
    if back.startswith("FAIL"):
        return "wrong", back
    return "ok", (f"{report['architecture']} {report['config']['image_size']}px: transformers vs "
                  f"timm {delta:.1e}; {run.stdout.strip()}; {back}")


def reverse(model: torch.nn.Module, out: Path, work: Path) -> str:
    """Writes the converted model back with `--to timm`; timm's state dict must come back."""
    back = work / "back"
    run = subprocess.run([BIN, "--quiet", "--from", "hf", "--to", "timm",
                          str(out / "model.safetensors"), "-o", str(back)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return f"FAIL --to timm: {run.stderr.strip()}"
    got = safetensors.torch.load_file(back / "model.safetensors")
    want = model.state_dict()
    if set(got) != set(want):
        return f"FAIL --to timm names: {sorted(set(got) ^ set(want))[:6]}"
    differ = [k for k in want if not torch.equal(got[k], want[k].contiguous())]
    if differ:
        return f"FAIL --to timm values: {differ[:6]}"
    model.load_state_dict(got, strict=True)
    return "--to timm: bit-exact"


def main() -> int:
    args = sys.argv[1:]
    depth = None
    if "--depth" in args:
        k = args.index("--depth")
        depth = int(args[k + 1])
        del args[k:k + 2]
    if "--census" in args:
        args.remove("--census")
        names = sorted(set(timm.list_models(module=["vision_transformer", "deit", "beit"])))
        names = [n for n in names if not n.startswith("beit3")]
        strict = False
    else:
        patterns = args or ["beit*"]
        names = [n for n in timm.list_models() if any(fnmatch.fnmatch(n, p) for p in patterns)]
        names = [n for n in names if not n.startswith("beit3") or n in patterns]
        strict = True
    counts = {"ok": 0, "refused": 0, "wrong": 0, "skipped": 0}
    for n in names:
        with tempfile.TemporaryDirectory() as d:
            try:
                verdict, msg = check(n, Path(d), depth)
            except Exception as e:  # a model timm cannot build this way is not a verdict on us
                verdict, msg = "skipped", f"not built: {type(e).__name__}: {str(e).splitlines()[0]}"
        counts[verdict] += 1
        print(f"{verdict:8} {n}: {msg}", flush=True)
    print(f"{counts['ok']} converted, {counts['refused']} refused, {counts['wrong']} wrong, "
          f"{counts['skipped']} not built by timm, of {len(names)}")
    bad = counts["wrong"] + (counts["refused"] if strict else 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
