#!/usr/bin/env python3
"""The transformers half of scripts/interop.py for BEiT outputs, shared by both transformers
versions.

scripts/interop.py imports `check_folder` and runs it under transformers 5; it also runs this file
in the Flax fixture environment (`fixtures/requirements-flax.txt`: transformers 4.57.6 with torch)
with a JSON list of jobs on stdin, and reads a JSON list of results from stdout:

    job:    {"dir": OUTDIR, "add_pooling_layer": bool | null,
             "inputs": [{"input": X.npy, "interpolate": bool, "outputs": {NAME: Y.npy, ...}}, ...]}
    result: {"ok": bool, "keys": "…", "cell": "…", "diff": float | null, "version": "4.57.6"}

Each job loads OUTDIR with the class named in its config.json `architectures`
(`from_pretrained(..., output_loading_info=True, attn_implementation="eager")`; a missing,
unexpected or mismatched key fails it), runs it on every input (`interpolate_pos_encoding` as the
fixture says) and compares logits / last_hidden_state / pooler_output with the expected arrays
(BeitModel's for the last two, `model.beit(...)` inside the task models, as the fixtures record).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np

TOLERANCE = 1e-4


def max_abs(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def outputs(model, x, interpolate: bool) -> dict:
    """logits / last_hidden_state / pooler_output, as fixtures/generate_beit.py records them."""
    import torch
    import transformers

    with torch.no_grad():
        if isinstance(model, transformers.BeitModel):
            o = model(pixel_values=x, interpolate_pos_encoding=interpolate)
            return {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output}
        b = model.beit(pixel_values=x, interpolate_pos_encoding=interpolate)
        out = {
            "logits": model(pixel_values=x, interpolate_pos_encoding=interpolate).logits,
            "last_hidden_state": b.last_hidden_state,
        }
        if b.pooler_output is not None:
            out["pooler_output"] = b.pooler_output
        return out


def check_folder(job: dict) -> dict:
    """Loads job["dir"] with its config's architecture and compares every output."""
    import torch
    import transformers

    arch = json.loads((Path(job["dir"]) / "config.json").read_text())["architectures"][0]
    cls = getattr(transformers, arch)
    kwargs = {"output_loading_info": True, "attn_implementation": "eager"}
    label = arch
    if job.get("add_pooling_layer") is not None and arch == "BeitModel":
        kwargs["add_pooling_layer"] = bool(job["add_pooling_layer"])
        label += f"(add_pooling_layer={kwargs['add_pooling_layer']})"
    model, info = cls.from_pretrained(job["dir"], **kwargs)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    version = transformers.__version__
    if bad:
        return {"ok": False, "keys": f"`{label}`: {bad}", "cell": "—", "diff": None, "version": version}
    worst: dict[str, float] = {}
    for io in job["inputs"]:
        x = torch.from_numpy(np.load(io["input"]))
        got = outputs(model, x, bool(io["interpolate"]))
        for name, path in io["outputs"].items():
            d = max_abs(got[name].numpy(), np.load(path)) if name in got else float("inf")
            worst[name] = max(worst.get(name, 0.0), d)
    ok = all(d <= TOLERANCE for d in worst.values())
    n = len(job["inputs"])
    cell = "; ".join(f"{k} {v:.1e}" for k, v in worst.items()) + f" ({n} input{'s' if n != 1 else ''})"
    return {
        "ok": ok,
        "keys": f"`{label}`, 0 missing / 0 unexpected / 0 mismatched",
        "cell": cell,
        "diff": max(worst.values(), default=0.0),
        "version": version,
    }


def guarded(job: dict) -> dict:
    try:
        return check_folder(job)
    except Exception as e:  # a loader failure is a result to report, not a crash
        msg = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        return {"ok": False, "keys": msg, "cell": "—", "diff": None, "version": None}


def main() -> int:
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    jobs = json.load(sys.stdin)
    # Anything a library prints goes to stderr: stdout carries the JSON results only.
    with contextlib.redirect_stdout(sys.stderr):
        results = [guarded(job) for job in jobs]
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
