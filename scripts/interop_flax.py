#!/usr/bin/env python3
"""The Flax half of scripts/interop.py: loads `--to flax` outputs with transformers' Flax ViT.

transformers 5 has no Flax models, so this runs in the Flax fixture environment
(`fixtures/requirements-flax.txt`: transformers 4.57.6, flax 0.7.0, jax 0.4.13). scripts/interop.py
calls it once with a JSON list of jobs on stdin and reads a JSON list of results from stdout:

    job:    {"dir": OUTDIR, "architecture": "ViTForImageClassification" | "ViTModel",
             "add_pooling_layer": bool, "input": X.npy, "output": "logits" | "last_hidden_state",
             "expected": Y.npy}
    result: {"ok": bool, "cell": "FlaxViT…, 0 missing / 0 unexpected, 1.2e-06"}

Each job loads OUTDIR with `from_pretrained` (which reports parameters it had to initialise, or
found unused, as warnings: those make the job fail), runs it on the input and compares the output
with the expected array.
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np

TOLERANCE = 1e-4


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(job: dict) -> dict:
    import transformers

    name = "Flax" + job["architecture"]
    cls = getattr(transformers, name)
    kwargs = {}
    label = name
    if job["architecture"] == "ViTModel":
        kwargs["add_pooling_layer"] = bool(job["add_pooling_layer"])
        if not job["add_pooling_layer"]:
            label += "(add_pooling_layer=False)"
    log = Collect()
    logger = logging.getLogger("transformers.modeling_flax_utils")
    logger.addHandler(log)
    try:
        model = cls.from_pretrained(job["dir"], **kwargs)
    finally:
        logger.removeHandler(log)
    # transformers warns "Some weights of … were not used" / "… newly initialized" on any mismatch.
    bad = [m.splitlines()[0][:160] for m in log.messages if "not used" in m or "newly initialized" in m or "not initialized" in m]
    if bad:
        return {"ok": False, "cell": f"`{label}`: {bad[0]}"}
    x = np.load(job["input"])
    out = model(pixel_values=x)
    got = np.asarray(getattr(out, job["output"]), dtype=np.float64)
    want = np.load(job["expected"]).astype(np.float64)
    d = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    return {"ok": d <= TOLERANCE, "cell": f"`{label}` loads, {d:.1e}"}


def main() -> int:
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    jobs = json.load(sys.stdin)
    results = []
    for job in jobs:
        try:
            results.append(run(job))
        except Exception as e:  # a loader failure is a result to report, not a crash
            results.append({"ok": False, "cell": f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120]}"})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
