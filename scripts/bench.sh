#!/usr/bin/env bash
# Performance figures of issue 5, each printed next to its baseline measured in the same run.
#
#   scripts/bench.sh [--rounds N] [--sizes "ti s b l"] [--threads "1 2"] [--batches "1 8"]
#                    [--models "vit deit beit dinov2 clip siglip"] [--workdir DIR] [--no-torch]
#
# Builds the release binary, creates ViT checkpoints (timm random weights saved with torch.save
# when the fixture Python environment is present — $VIT_BENCH_PYTHON, default
# $VIT_CONVERT_VENV/bin/python (default .venv-ref/, made by scripts/make_venv.sh) — else timm-layout safetensors written by the pure-Rust generator
# `cargo bench --bench make_checkpoint`), then, for N rounds with the baselines interleaved:
#   convert  `vit-convert --from timm CKPT -o OUT` (whole process) vs the SHA-256 floor (the
#            in-process hash of the same bytes in memory, `cargo bench --bench floors -- sha256`)
#            and `cp CKPT` — wall and peak RSS
#   inspect  `vit-convert inspect CKPT` (ViT-B)
#   images   `vit-convert verify` of 8 PNG photos (640×480) through the preprocessor, ViT-B, whole
#            process, vs transformers' (PIL) image processor + model in one Python process (decode,
#            preprocess and forward; median of 5 calls), 2 threads: images/s
#   forward  `vit-convert forward --threads T` (whole process, loading included) vs PyTorch's
#            in-process forward (timm, eval, no_grad, torch.set_num_threads(T), median of 5 calls),
#            for each T of --threads (default "1 2": per core, and the issue's two threads),
#            each batch B of --batches (default "1 8"), and each architecture of --models (default
#            "vit deit beit dinov2 clip siglip": ViT-B/16, DeiT-B/16 distilled, BEiT-B/16,
#            DINOv2-B/14 at 224 px, CLIP-B/16 and SigLIP-B/16; all but ViT only with the PyTorch
#            environment, which makes their checkpoints); GFLOP/s from the FLOPs torch counts for
#            the model (2 per multiply-add) and the fraction of the FMA peak measured here
#            (`cargo bench --bench floors -- fma-peak T`)
# and prints medians (with min–max, to show the noise) and ratios, then the conversion scaling from
# ViT-Ti to ViT-L. Every output is checked against PyTorch's with `vit-convert verify`.
# Wall times come from bash's EPOCHREALTIME around each process; peak RSS from GNU time (%M).
# Nothing here is a test: the numbers go into BENCHMARKS.md by hand.
set -euo pipefail

ROUNDS=5
SIZES="ti s b l"
THREADS="1 2"
BATCHES="1 8"
MODELS="vit deit beit dinov2 clip siglip"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/vit-convert-bench}"
PY="${VIT_BENCH_PYTHON:-${VIT_CONVERT_VENV:-.venv-ref}/bin/python}"  # relative: from the repository root
USE_TORCH=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --batches) BATCHES="$2"; shift 2 ;;
        --workdir) WORK="$2"; shift 2 ;;
        --no-torch) USE_TORCH=0; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

# ViT-B is always measured (the headline figures); the other sizes feed the scaling table.
case " $SIZES " in *" b "*) ;; *) SIZES="$SIZES b" ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
mkdir -p "$WORK"

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time (peak RSS)…" >&2
    apt-get install -y -q time >/dev/null
fi

cargo build --release --quiet
BIN="$ROOT/target/release/vit-convert"
floors() { cargo bench --quiet --bench floors -- "$@"; }

if [ "$USE_TORCH" = 1 ] && ! "$PY" -c "import torch, timm" 2>/dev/null; then
    echo "no torch/timm at $PY: pure-Rust checkpoints, no PyTorch baseline" >&2
    USE_TORCH=0
fi

timm_name() {
    case "$1" in
        ti) echo vit_tiny_patch16_224 ;;
        s) echo vit_small_patch16_224 ;;
        b) echo vit_base_patch16_224 ;;
        l) echo vit_large_patch16_224 ;;
    esac
}

ckpt() {
    if [ "$USE_TORCH" = 1 ]; then echo "$WORK/vit_$1.pth"; else echo "$WORK/vit_$1.safetensors"; fi
}

# ---- inputs -------------------------------------------------------------------------------
for s in $SIZES; do
    c="$(ckpt "$s")"
    [ -s "$c" ] && continue
    echo "creating $c" >&2
    if [ "$USE_TORCH" = 1 ]; then
        "$PY" scripts/bench_torch.py gen "$(timm_name "$s")" "$c"
    else
        cargo bench --quiet --bench make_checkpoint -- "$s" "$c" >/dev/null
    fi
done
INPUT="$WORK/input.npy"
if [ ! -s "$INPUT" ]; then
    if [ "$USE_TORCH" = 1 ]; then
        "$PY" scripts/bench_torch.py input "$INPUT"
    else
        cargo bench --quiet --bench make_checkpoint -- input "$INPUT" >/dev/null
    fi
fi
# A batch of B images (batch 1 is INPUT); without PyTorch, batch 1 only.
input_of() { if [ "$1" = 1 ]; then echo "$INPUT"; else echo "$WORK/input_b$1.npy"; fi; }
[ "$USE_TORCH" = 1 ] || BATCHES="1"
for bt in $BATCHES; do
    [ -s "$(input_of "$bt")" ] || "$PY" scripts/bench_torch.py input "$(input_of "$bt")" "$bt"
done

# ---- helpers ------------------------------------------------------------------------------
now_us() { echo "${EPOCHREALTIME/./}"; }

# Runs a command; appends "wall_seconds peak_rss_kib cpu_seconds" to file $1.
measure() {
    local log="$1"; shift
    local t0 t1
    t0=$(now_us)
    if ! /usr/bin/time -f "%M %U %S" -o "$WORK/rss" "$@" >/dev/null 2>"$WORK/stderr"; then
        cat "$WORK/stderr" >&2
        exit 1
    fi
    t1=$(now_us)
    # "wall rss_kib cpu_seconds" (cpu = user + system, all threads)
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e6 }') $(tail -n 1 "$WORK/rss" |
        awk '{ printf "%s %.2f", $1, $2 + $3 }')" >>"$log"
}

# Median, min and max of column $2 of file $1: "median min max".
stats() {
    sort -g -k"$2","$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END {
        printf "%s %s %s", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
bytes_of() { stat -c %s "$1"; }

# Warm the page cache so that neither side pays for the first read from disk.
for s in $SIZES; do cat "$(ckpt "$s")" >/dev/null; done

rm -f "$WORK"/*.log
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rounds: $ROUNDS (baselines interleaved in each round)"

# ---- floors -------------------------------------------------------------------------------
for t in $THREADS; do echo "$(floors fma-peak "$t")" >"$WORK/peak_$t.txt"; done

# ---- conversion, the SHA-256 floor and cp, interleaved -------------------------------------
for r in $(seq "$ROUNDS"); do
    for s in $SIZES; do
        c="$(ckpt "$s")"
        floors sha256 "$c" >>"$WORK/sha_$s.log"
        measure "$WORK/cp_$s.log" cp "$c" "$WORK/copy.bin"
        rm -f "$WORK/copy.bin"
        rm -rf "$WORK/out_$s"
        measure "$WORK/convert_$s.log" "$BIN" --from timm "$c" -o "$WORK/out_$s"
    done
    for _ in 1 2 3; do
        measure "$WORK/inspect.log" "$BIN" inspect "$(ckpt b)"
    done
done

# ---- forward vs PyTorch, interleaved ------------------------------------------------------
# Each architecture: "timm model name, checkpoint, --from family, the output timm's forward returns".
arch() {
    case "$1" in
        vit) echo "vit_base_patch16_224 $(ckpt b) timm logits" ;;
        deit) echo "deit_base_distilled_patch16_224 $WORK/deit_b.pth deit logits" ;;
        beit) echo "beit_base_patch16_224 $WORK/beit_b.pth beit logits" ;;
        dinov2) echo "vit_base_patch14_dinov2 $WORK/dinov2_b.pth dinov2 pooler" ;;
        clip) echo "vit_base_patch16_clip_224 $WORK/clip_b.pth clip image_embeds" ;;
        siglip) echo "vit_base_patch16_siglip_224 $WORK/siglip_b.pth siglip pooler" ;;
    esac
}
[ "$USE_TORCH" = 1 ] || MODELS="vit"
for m in $MODELS; do
    read -r name c fam _ <<<"$(arch "$m")"
    if [ ! -s "$c" ]; then
        echo "creating $c" >&2
        "$PY" scripts/bench_torch.py gen "$name" "$c"
    fi
    cat "$c" >/dev/null
    [ -d "$WORK/fwd_$m" ] || "$BIN" --from "$fam" "$c" -o "$WORK/fwd_$m" >/dev/null
    for bt in $BATCHES; do
        f="$WORK/flops_${m}_$bt.txt"
        [ "$USE_TORCH" = 1 ] && [ ! -s "$f" ] && "$PY" scripts/bench_torch.py flops "$name" "$bt" >"$f"
    done
done
for r in $(seq "$ROUNDS"); do
    for m in $MODELS; do
        read -r name c _ out <<<"$(arch "$m")"
        for bt in $BATCHES; do
            x="$(input_of "$bt")"
            for t in $THREADS; do
                if [ "$USE_TORCH" = 1 ]; then
                    "$PY" scripts/bench_torch.py forward "$name" "$c" "$x" \
                        "$WORK/torch_out_${m}_$bt.npy" "$t" 5 >>"$WORK/torch_${m}_${bt}_$t.log"
                fi
                measure "$WORK/forward_${m}_${bt}_$t.log" "$BIN" forward "$WORK/fwd_$m" --input "$x" \
                    --output "$WORK/out.npy" --compare "$out" --threads "$t"
            done
        done
    done
done

# ---- verify of 8 images through the preprocessor (ViT-B), interleaved -------------------------
if [ "$USE_TORCH" = 1 ]; then
    mkdir -p "$WORK/photos"
    [ -s "$WORK/photos/img7.png" ] || "$PY" scripts/bench_torch.py photos "$WORK/photos" 8
    read -r _ c fam _ <<<"$(arch vit)"
    [ -d "$WORK/fwd_vit" ] || "$BIN" --from "$fam" "$c" -o "$WORK/fwd_vit" >/dev/null
    for r in $(seq "$ROUNDS"); do
        "$PY" scripts/bench_torch.py images "$WORK/fwd_vit" 2 5 "$WORK/images_logits.npy" \
            "$WORK"/photos/img?.png >>"$WORK/torch_images.log" 2>/dev/null
        measure "$WORK/verify_images.log" "$BIN" verify "$WORK/fwd_vit" --image "$WORK"/photos/img?.png \
            --expected "$WORK/images_logits.npy" --threads 2
    done
fi

# ---- report -------------------------------------------------------------------------------
echo
echo "== ViT-B/16 ($(bytes_of "$(ckpt b)") bytes): median (min–max) of $ROUNDS rounds =="
read -r cm cl ch <<<"$(stats "$WORK/convert_b.log" 1)"
read -r pm pl ph <<<"$(stats "$WORK/cp_b.log" 1)"
read -r hm hl hh <<<"$(stats "$WORK/sha_b.log" 1)"
read -r rm_ _ rh <<<"$(stats "$WORK/convert_b.log" 2)"
echo "convert --from timm --to safetensors: ${cm} s (${cl}–${ch})   SHA-256 floor (in-process, in memory): ${hm} s (${hl}–${hh})   ratio $(ratio "$cm" "$hm")× (target ≤ 1.1×)   cp: ${pm} s (${pl}–${ph})"
echo "convert peak RSS: $(mib "$rm_") MiB (max $(mib "$rh"))   target ≤ 8 MiB"
read -r im il ih <<<"$(stats "$WORK/inspect.log" 1)"
echo "inspect: $(awk -v v="$im" 'BEGIN { printf "%.1f", v * 1000 }') ms ($(awk -v a="$il" -v b="$ih" 'BEGIN { printf "%.1f–%.1f", a * 1000, b * 1000 }'))   target ≤ 50 ms"
echo
echo "== forward: whole process (ours, loading included) vs PyTorch's in-process call, median (min–max) of $ROUNDS =="
echo "FMA peak measured here: $(for t in $THREADS; do printf "%s thread(s) %s GFLOP/s  " "$t" "$(cat "$WORK/peak_$t.txt")"; done)"
echo "| model | batch | threads | ours | PyTorch | ratio | GFLOP | ours GFLOP/s (% peak) | PyTorch GFLOP/s (% peak) | peak RSS / checkpoint |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for m in $MODELS; do
    read -r name c _ out <<<"$(arch "$m")"
    for bt in $BATCHES; do
        gf="$(cat "$WORK/flops_${m}_$bt.txt" 2>/dev/null || echo 0)"
        for t in $THREADS; do
            pk="$(cat "$WORK/peak_$t.txt")"
            read -r fm fl fh <<<"$(stats "$WORK/forward_${m}_${bt}_$t.log" 1)"
            read -r fr _ _ <<<"$(stats "$WORK/forward_${m}_${bt}_$t.log" 2)"
            rss="$(ratio "$((fr * 1024))" "$(bytes_of "$c")")×"
            rate() { awk -v g="$gf" -v s="$1" -v p="$pk" 'BEGIN { if (g > 0) printf "%.0f (%.0f %%)", g / s, 100 * g / s / p; else printf "—" }'; }
            if [ "$USE_TORCH" = 1 ]; then
                read -r tm tl th <<<"$(stats "$WORK/torch_${m}_${bt}_$t.log" 1)"
                echo "| $name | $bt | $t | ${fm} s (${fl}–${fh}) | ${tm} s (${tl}–${th}) | $(ratio "$fm" "$tm")× | $gf | $(rate "$fm") | $(rate "$tm") | $rss |"
            else
                echo "| $name | $bt | $t | ${fm} s (${fl}–${fh}) | — | — | — | — | — | $rss |"
            fi
        done
    done
done
if [ "$USE_TORCH" = 1 ]; then
    for m in $MODELS; do
        read -r name c _ out <<<"$(arch "$m")"
        for bt in $BATCHES; do
            printf "%s batch %s: " "$name" "$bt"
            "$BIN" verify "$WORK/fwd_$m" --input "$(input_of "$bt")" \
                --expected "$WORK/torch_out_${m}_$bt.npy" --compare "$out" | head -n 1 || true
        done
    done
fi
if [ "$USE_TORCH" = 1 ]; then
    echo
    echo "== verify of 8 PNG photos (640×480) through the preprocessor, ViT-B, 2 threads, median (min–max) of $ROUNDS =="
    read -r vm vl vh <<<"$(stats "$WORK/verify_images.log" 1)"
    read -r pm pl ph <<<"$(stats "$WORK/torch_images.log" 1)"
    echo "vit-convert verify (whole process): ${vm} s (${vl}–${vh}), $(awk -v t="$vm" 'BEGIN { printf "%.1f", 8 / t }') images/s"
    echo "transformers processor + model (in-process call): ${pm} s (${pl}–${ph}), $(awk -v t="$pm" 'BEGIN { printf "%.1f", 8 / t }') images/s   ratio $(ratio "$vm" "$pm")×"
fi
echo
echo "== conversion scaling (median of $ROUNDS) =="
echo "| size | bytes | convert | SHA-256 floor | ratio (target ≤ 1.1×) | cp | MB/s | peak RSS MiB (target ≤ 8) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for s in $SIZES; do
    read -r cm cl ch <<<"$(stats "$WORK/convert_$s.log" 1)"
    read -r hm hl hh <<<"$(stats "$WORK/sha_$s.log" 1)"
    read -r pm _ _ <<<"$(stats "$WORK/cp_$s.log" 1)"
    read -r rm_ _ _ <<<"$(stats "$WORK/convert_$s.log" 2)"
    n="$(bytes_of "$(ckpt "$s")")"
    echo "| $s | $n | $cm s ($cl–$ch) | $hm s ($hl–$hh) | $(ratio "$cm" "$hm")× | $pm s | $(awk -v n="$n" -v t="$cm" 'BEGIN { printf "%.0f", n / t / 1e6 }') | $(mib "$rm_") |"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
