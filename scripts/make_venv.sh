#!/usr/bin/env bash
# Creates the pinned Python environments that the fixture generators (fixtures/*.py) and the
# by-hand scripts (scripts/interop.py, scripts/bench.sh) run in. Nothing in `cargo test` needs them.
#
#   scripts/make_venv.sh          # the reference environment: $VIT_CONVERT_VENV (default .venv-ref/)
#                                 # torch, timm, transformers 5, … as fixtures/requirements.txt pins
#   scripts/make_venv.sh flax     # the Flax environment: ${VIT_CONVERT_VENV}-flax (default
#                                 # .venv-ref-flax/), transformers 4.x + flax/jax as
#                                 # fixtures/requirements-flax.txt pins (transformers 5 has no Flax)
#
# A relative VIT_CONVERT_VENV is taken from the repository root; both default folders are
# git-ignored. The generators refuse to run unless every package equals its pin (fixtures/pins.py),
# so this script installs exactly those pins, on Python 3.11 ($PYTHON, default python3.11), with
# CPU torch wheels (torch is compared without its local tag, so 2.15.0+cpu passes) from
# $VIT_CONVERT_TORCH_INDEX (default https://download.pytorch.org/whl/cpu); set it empty where that
# index is unreachable: PyPI's torch wheels (with CUDA libraries, a larger download) pass too.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${VIT_CONVERT_VENV:-.venv-ref}"
VENV="${VENV%/}"
PYTHON="${PYTHON:-python3.11}"
TORCH_INDEX="${VIT_CONVERT_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
CPU_TORCH=()
[ -n "$TORCH_INDEX" ] && CPU_TORCH=(--extra-index-url "$TORCH_INDEX")

case "${1:-ref}" in
    ref) DIR="$VENV"; REQS=fixtures/requirements.txt ;;
    flax) DIR="$VENV-flax"; REQS=fixtures/requirements-flax.txt ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: scripts/make_venv.sh [ref|flax]" >&2; exit 2 ;;
esac

"$PYTHON" -m venv "$DIR"
"$DIR/bin/python" -m pip install --quiet --upgrade pip
"$DIR/bin/python" -m pip install -r "$REQS" ${CPU_TORCH[@]+"${CPU_TORCH[@]}"}
echo "ready: $DIR/bin/python" >&2
