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

4. converts it `--to flax` and loads the folder with transformers' `FlaxViT*.from_pretrained`
   (through scripts/interop_flax.py in the Flax fixture environment, since transformers 5 has no
   Flax; skipped, and said so, when that environment is absent), and compares outputs.

Then, for the HF Flax fixtures of fixtures/flax/cases.json, it converts `--from flax` and loads the
result in transformers (PyTorch), comparing with the outputs Flax itself computed, and converts
those back `--to flax` for the Flax loader.

For every case and source of fixtures/convert/beit_cases.json (not its hostile `refusals`) it
converts `--from auto` and loads the folder with the class its config.json `architectures` names
(zero missing, unexpected and mismatched keys), under transformers 5 here and under transformers
4.57.6 in the Flax environment (through scripts/interop_beit.py, which holds the check both share),
comparing logits / last_hidden_state / pooler_output on every io input with the fixture's; converts
`--to timm` and loads it with timm's own loader, comparing with timm's outputs (for the unilm
pre-training layout, which timm has no class for, the tensors are compared with the source's
instead); and checks that `--to npz` and `--to flax` are refused.

It prints markdown tables (the ones README.md shows) and exits 1 if anything failed. Layouts a
target cannot represent (a DeiT distillation token in the JAX npz layout, a pre-logits pooler in
timm's) are reported as refused by vit-convert, with its message: that refusal is the correct
behaviour, not a failure.

Needs the fixture environment (torch, timm, transformers, numpy):

    .venv-ref/bin/python scripts/interop.py [--bin target/release/vit-convert] \
        [--flax-python .venv-ref-flax/bin/python]

(`.venv-ref/` is `$VIT_CONVERT_VENV` and `.venv-ref-flax/` its `-flax` twin, both made by
`scripts/make_venv.sh`; relative paths are taken from the repository root.)

Without --bin it runs `cargo build --release` and uses target/release/vit-convert. CI does not
need this script; the Rust tests cover the same outputs against the same fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
# The Flax environment of scripts/make_venv.sh: ${VIT_CONVERT_VENV}-flax, relative to ROOT.
FLAX_PYTHON = ROOT / (os.environ.get("VIT_CONVERT_VENV", ".venv-ref").rstrip("/") + "-flax") / "bin" / "python"
FIXTURES = ROOT / "fixtures" / "convert"
FLAX_FIXTURES = ROOT / "fixtures" / "flax"
# Outputs must match the source framework's within this (max absolute difference); the
# transformers and timm fixtures themselves agree within 1e-5.
TOLERANCE = 1e-4


def run_convert(binary: Path, case: dict, source: dict, to: str, out: Path) -> tuple[bool, str]:
    src = FIXTURES / case["dir"] / source["file"]
    extra = []
    if case["family"] != "hf":
        extra += ["--num-heads", str(case["config"]["num_attention_heads"])]
    if source.get("branch") in ("teacher", "student"):
        extra += ["--branch", source["branch"]]
    return convert_file(binary, case["family"], src, to, out, extra)


def convert_file(binary: Path, family: str, src: Path, to: str, out: Path, extra: list[str]) -> tuple[bool, str]:
    args = [str(binary), "--from", family, "--to", to, str(src), "-o", str(out), *extra]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        return False, p.stderr.strip().removeprefix("error: ")
    return True, ""


def refusal_cell(err: str) -> str:
    """The cell for a layout the target cannot represent: vit-convert's reason."""
    if "--to flax: " in err:
        return "refused: " + err.split("--to flax: ", 1)[1]
    return "refused: " + err.split(": ")[-1]


def is_refusal(err: str) -> bool:
    return (
        "has no place for" in err
        or "cannot represent" in err
        or "transformers has no Flax" in err
        or "the npz layouts hold" in err  # BEiT `--to npz`
    )


def load_np(case: dict, rel: str) -> np.ndarray:
    return np.load(FIXTURES / case["dir"] / rel)


def source_reference_file(case: dict) -> tuple[str, Path]:
    """The source framework's output on io/input.npy: (what, .npy path)."""
    io = case["io"]["input.npy"]
    timm_out = io.get("timm_outputs", {})
    if "logits" in timm_out:
        return "timm logits", FIXTURES / case["dir"] / timm_out["logits"]
    return "timm forward_features", FIXTURES / case["dir"] / timm_out["features"]


def source_reference(case: dict) -> tuple[str, np.ndarray]:
    """The source framework's output on io/input.npy: (what, array)."""
    what, path = source_reference_file(case)
    return what, np.load(path)


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


def run_flax_jobs(flax_python: Path | None, jobs: list[dict]) -> list[dict]:
    """Runs scripts/interop_flax.py on `jobs` in the Flax environment (all skipped without it)."""
    if not jobs:
        return []
    if flax_python is None or not flax_python.exists():
        return [{"ok": True, "cell": "skipped: no Flax environment (--flax-python)", "skipped": True}] * len(jobs)
    p = subprocess.run(
        [str(flax_python), str(ROOT / "scripts" / "interop_flax.py")],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        line = (p.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return [{"ok": False, "cell": f"FAILED: {line}"}] * len(jobs)
    return json.loads(p.stdout)


def flax_job(out: Path, architecture: str, pooler: bool, x: Path, output: str, expected: Path) -> dict:
    return {
        "dir": str(out),
        "architecture": architecture,
        "add_pooling_layer": pooler,
        "input": str(x),
        "output": output,
        "expected": str(expected),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, help="vit-convert binary (default: build release)")
    ap.add_argument(
        "--flax-python",
        type=Path,
        default=FLAX_PYTHON,
        help=f"python of the Flax fixture environment (default: {FLAX_PYTHON})",
    )
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
    # (row, column) of each cell the Flax environment fills, in job order.
    flax_cells: list[tuple[list[str], int]] = []
    flax_jobs: list[dict] = []
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
                        refused = is_refusal(err)
                        cells.append(refusal_cell(err) if refused else f"convert FAILED: {err}")
                        failures += not refused
                        continue
                    ok, cell = guarded(check, case, base / to / file)
                    failures += not ok
                    cells.append(cell)

                conv_ok, err = run_convert(binary, case, source, "flax", base / "flax")
                if conv_ok:
                    what, expected = source_reference_file(case)
                    pooler = bool(case.get("add_pooling_layer", case["architecture"] != "ViTModel"))
                    flax_jobs.append(
                        flax_job(
                            base / "flax",
                            case["architecture"],
                            pooler,
                            FIXTURES / case["dir"] / case["io"]["input.npy"]["input"],
                            "logits" if "logits" in what else "last_hidden_state",
                            expected,
                        )
                    )
                    flax_cells.append((cells, len(cells)))
                    cells.append("")
                else:
                    refused = is_refusal(err)
                    cells.append(refusal_cell(err) if refused else f"convert FAILED: {err}")
                    failures += not refused
                rows.append(cells)

        # The HF Flax fixtures: --from flax into transformers (PyTorch), and back --to flax.
        flax_rows = []
        flax_cases = json.loads((FLAX_FIXTURES / "cases.json").read_text())
        for case in flax_cases:
            d = FLAX_FIXTURES / case["dir"]
            sources = [d / "flax_model.msgpack"]
            if (FLAX_FIXTURES / f"{case['dir']}_safetensors" / "model.safetensors").exists():
                sources.append(FLAX_FIXTURES / f"{case['dir']}_safetensors" / "model.safetensors")
            for src in sources:
                base = tmp / f"flax-{src.parent.name}"
                cells = [f"`{case['dir']}`", f"`{src.relative_to(FLAX_FIXTURES)}`"]
                ok, err = convert_file(binary, "flax", src, "safetensors", base / "hf", [])
                if ok:
                    ok, keys, diff = guarded3(check_flax_in_transformers, case, base / "hf")
                    cells += [keys, diff]
                else:
                    cells += [f"convert FAILED: {err}", "—"]
                failures += not ok
                ok, err = convert_file(binary, "hf", base / "hf" / "model.safetensors", "flax", base / "flax", [])
                if ok:
                    primary = case["primary_output"]
                    flax_jobs.append(
                        flax_job(
                            base / "flax",
                            case["architecture"],
                            "pooler_output.npy" in case["outputs"],
                            d / "input.npy",
                            primary.removesuffix(".npy"),
                            d / primary,
                        )
                    )
                    flax_cells.append((cells, len(cells)))
                    cells.append("")
                else:
                    cells.append(f"convert FAILED: {err}")
                    failures += 1
                flax_rows.append(cells)

        beit_rows, beit_failures = run_beit(binary, args.flax_python, tmp)
        failures += beit_failures

        results = run_flax_jobs(args.flax_python, flax_jobs)
        skipped = any(r.get("skipped") for r in results)
        for (cells, col), r in zip(flax_cells, results):
            cells[col] = r["cell"]
            failures += not r["ok"]

    print_table(
        [
            "case",
            "source",
            "transformers `from_pretrained`",
            "max \\|Δ\\| vs source framework",
            "`--to timm` in timm",
            "`--to npz` in timm `_load_weights`",
            "`--to flax` in transformers Flax",
        ],
        rows,
    )
    print()
    print_table(
        [
            "HF Flax case",
            "source",
            "`--from flax` in transformers `from_pretrained`",
            "max \\|Δ\\| vs Flax",
            "back `--to flax` in transformers Flax, max \\|Δ\\| vs Flax",
        ],
        flax_rows,
    )
    print()
    print_table(
        [
            "BEiT case",
            "source",
            "transformers `from_pretrained`",
            "max \\|Δ\\| vs fixture outputs (all inputs)",
            "transformers 4.57.6 `from_pretrained`, max \\|Δ\\|",
            "`--to timm` in timm",
            "`--to npz`",
            "`--to flax`",
        ],
        beit_rows,
    )
    import timm

    print()
    flax_versions = "Flax loads skipped (no Flax environment)" if skipped else "Flax side: " + flax_versions_of(args.flax_python)
    print(
        f"{len(rows) + len(flax_rows) + len(beit_rows)} conversions; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"timm {timm.__version__}; {flax_versions}; tolerance {TOLERANCE:g} absolute; "
        + ("all passed." if failures == 0 else f"{failures} FAILED.")
    )
    return 0 if failures == 0 else 1


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A markdown table; `|` inside a cell is escaped."""
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for r in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")


def flax_versions_of(python: Path) -> str:
    p = subprocess.run(
        [str(python), "-c", "import transformers, flax, jax; print(f'transformers {transformers.__version__}, flax {flax.__version__}, jax {jax.__version__}')"],
        capture_output=True,
        text=True,
    )
    return p.stdout.strip() or "unknown versions"


def check_flax_in_transformers(case: dict, out: Path) -> tuple[bool, str, str]:
    """A `--from flax` output in transformers (PyTorch), against the outputs Flax computed."""
    import transformers

    arch = case["architecture"]
    cls = getattr(transformers, arch)
    kwargs = {"output_loading_info": True, "attn_implementation": "eager"}
    pooler = "pooler_output.npy" in case["outputs"]
    if arch == "ViTModel":
        kwargs["add_pooling_layer"] = pooler
    model, info = cls.from_pretrained(str(out), **kwargs)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        return False, f"{arch}: {bad}", "—"
    d = FLAX_FIXTURES / case["dir"]
    x = torch.from_numpy(np.load(d / "input.npy"))
    with torch.no_grad():
        y = model(pixel_values=x)
    cells = []
    ok = True
    for name in case["outputs"]:
        got = getattr(y, name.removesuffix(".npy"))
        diff = max_abs(got.numpy(), np.load(d / name))
        cells.append(f"{name.removesuffix('.npy')} {diff:.1e}")
        ok = ok and diff <= TOLERANCE
    return ok, f"`{arch}`, 0 missing / 0 unexpected", "; ".join(cells)


def beit_job(case: dict, out: Path) -> dict:
    """The job scripts/interop_beit.py runs: every io input of the case, its expected outputs."""
    d = FIXTURES / case["dir"]
    inputs = [
        {
            "input": str(d / io["input"]),
            "interpolate": bool(io.get("interpolate", False)),
            "outputs": {k: str(d / v) for k, v in io["outputs"].items()},
        }
        for io in case["io"].values()
        if "outputs" in io
    ]
    return {"dir": str(out), "add_pooling_layer": case.get("add_pooling_layer"), "inputs": inputs}


def convert_auto(binary: Path, case: dict, source: dict, to: str, out: Path) -> tuple[bool, str]:
    return convert_file(binary, "auto", FIXTURES / case["dir"] / source["file"], to, out, [])


def check_beit_timm(case: dict, file: Path) -> tuple[bool, str]:
    """A BEiT `--to timm` file in timm's own loader, against timm's outputs of the fixture."""
    import timm

    spec = case["timm_model"]
    overlay = dict(file=str(file), num_classes=spec["kwargs"]["num_classes"])
    model = timm.create_model(spec["name"], pretrained=True, pretrained_cfg_overlay=overlay, **spec["kwargs"]).eval()
    d = FIXTURES / case["dir"]
    worst: dict[str, float] = {}
    for io in case["io"].values():
        want = io.get("timm_outputs")
        if not want:
            continue
        x = torch.from_numpy(np.load(d / io["input"]))
        with torch.no_grad():
            feats = model.forward_features(x)
            got = {
                "logits": model(x),
                "last_hidden_state": feats,
                "pooler_output": model.forward_head(feats, pre_logits=True),
            }
        for name, rel in want.items():
            worst[name] = max(worst.get(name, 0.0), max_abs(got[name].numpy(), np.load(d / rel)))
    ok = all(v <= TOLERANCE for v in worst.values())
    return ok, "loads, " + "; ".join(f"{k} {v:.1e}" for k, v in worst.items())


def check_beit_timm_tensors(case: dict, source: dict, file: Path) -> tuple[bool, str]:
    """A `--to timm` file timm has no class for (unilm pre-training: mask_token, lm_head): every
    tensor must equal the source's tensor of the same name; source tensors it drops are listed."""
    from safetensors.torch import load_file

    sd = torch.load(FIXTURES / case["dir"] / source["file"], map_location="cpu", weights_only=True)
    if source.get("wrapper") not in (None, "plain"):
        sd = sd[source["wrapper"]]
    out = load_file(str(file))
    differ = [k for k, v in out.items() if k not in sd or not torch.equal(v, sd[k])]
    dropped = sorted(k for k in sd if k not in out)
    if differ:
        return False, f"FAILED: {len(differ)} tensors differ from the source's, e.g. {differ[0]}"
    kinds = sorted({k.rsplit(".", 1)[-1] for k in dropped})
    tail = f"; dropped {len(dropped)} source tensors ({', '.join(kinds)})" if dropped else ""
    return True, f"no timm class: {len(out)} tensors equal the source's{tail}"


def run_beit(binary: Path, flax_python: Path | None, tmp: Path) -> tuple[list[list[str]], int]:
    """Every case and source of fixtures/convert/beit_cases.json (not its `refusals`): `--from auto`
    into transformers 5 and 4.57.6 (the Flax environment), `--to timm` into timm, `--to npz` and
    `--to flax` refused. Returns (rows, failures)."""
    from interop_beit import guarded as check_beit_folder

    failures = 0
    rows: list[list[str]] = []
    # (row, column) of each cell the 4.57.6 run fills, in job order.
    cells4: list[tuple[list[str], int]] = []
    jobs4: list[dict] = []
    for case in json.loads((FIXTURES / "beit_cases.json").read_text()):
        for k, source in enumerate(case["sources"]):
            base = tmp / f"beit-{case['case']}-{k}"
            cells = [f"`{case['case']}`", f"`{source['file']}`"]
            conv_ok, err = convert_auto(binary, case, source, "safetensors", base / "hf")
            if conv_ok:
                job = beit_job(case, base / "hf")
                r = check_beit_folder(job)
                failures += not r["ok"]
                cells += [r["keys"], r["cell"]]
                jobs4.append(job)
                cells4.append((cells, len(cells)))
                cells.append("")
            else:
                failures += 1
                cells += [f"convert FAILED: {err}", "—", "—"]

            if case.get("timm_model") is None:
                cells.append("—")
            else:
                conv_ok, err = convert_auto(binary, case, source, "timm", base / "timm")
                if not conv_ok:
                    refused = is_refusal(err)
                    cells.append(refusal_cell(err) if refused else f"convert FAILED: {err}")
                    failures += not refused
                else:
                    file = base / "timm" / "model.safetensors"
                    if case["architecture"] == "BeitForMaskedImageModeling":
                        ok, cell = guarded(check_beit_timm_tensors, case, source, file)
                    else:
                        ok, cell = guarded(check_beit_timm, case, file)
                    failures += not ok
                    cells.append(cell)

            for to in ("npz", "flax"):
                conv_ok, err = convert_auto(binary, case, source, to, base / to)
                if conv_ok:
                    failures += 1
                    cells.append(f"FAILED: `--to {to}` was not refused")
                elif is_refusal(err):
                    cells.append(refusal_cell(err))
                else:
                    failures += 1
                    cells.append(f"convert FAILED: {err}")
            rows.append(cells)

    for (cells, col), r in zip(cells4, run_beit4(flax_python, jobs4)):
        if r.get("skipped"):
            cells[col] = r["cell"]
            continue
        failures += not r["ok"]
        cells[col] = r["keys"] if r["diff"] is None else f"0 missing / 0 unexpected / 0 mismatched, {r['diff']:.1e}"
    return rows, failures


def run_beit4(flax_python: Path | None, jobs: list[dict]) -> list[dict]:
    """scripts/interop_beit.py on `jobs` in the Flax environment (transformers 4.57.6)."""
    if not jobs:
        return []
    if flax_python is None or not flax_python.exists():
        return [{"ok": True, "cell": "skipped: no Flax environment (--flax-python)", "skipped": True}] * len(jobs)
    p = subprocess.run(
        [str(flax_python), str(ROOT / "scripts" / "interop_beit.py")],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        line = (p.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return [{"ok": False, "keys": f"FAILED: {line}", "diff": None}] * len(jobs)
    return json.loads(p.stdout)


def guarded_hf(case: dict, out: Path) -> tuple[bool, str, str]:
    return guarded3(check_transformers, case, out)


def guarded3(fn, *args) -> tuple[bool, str, str]:
    try:
        return fn(*args)
    except Exception as e:  # a loader failure is a result to report, not a crash
        return False, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:120]}", "—"


if __name__ == "__main__":
    sys.exit(main())
