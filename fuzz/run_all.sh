#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 30), one process at a time, under
# the budgets SECURITY.md promises (2 GiB RSS, 10 s per input). Prints each target's final
# libFuzzer stats; exits non-zero if any target found a crash, leak, timeout or OOM (its input
# is kept in fuzz/artifacts/<target>/).
#
#   fuzz/run_all.sh [SECONDS] [TARGET...]
#
# VIT_CONVERT_FUZZ_TARGET_DIR names the build's target dir (default fuzz/target).
# VIT_CONVERT_FUZZ_RUNS=N stops each target after N executions instead (SECONDS still caps the
# time). VIT_CONVERT_FUZZ_SANITIZER names the build the figures came from in the printed line
# (cargo fuzz build -s none for the long runs, address for CI's smoke; default address).
#
# Build first: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build). Seeds: fuzz/seed_corpus.sh.
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pickle torch_zip torch_legacy npy npz safetensors flax mapping_table inspect verify_compare side_files)
bin=${VIT_CONVERT_FUZZ_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release
mkdir -p logs
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="logs/$t.log"
  "$bin/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    ${VIT_CONVERT_FUZZ_RUNS:+-runs="$VIT_CONVERT_FUZZ_RUNS"} \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  rate=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  size=$(find "corpus/$t" -type f | wc -l)
  printf '%-14s rc=%d execs=%s exec/s=%s corpus=%s sanitizer=%s\n' "$t" "$rc" "${execs:-?}" \
    "${rate:-?}" "$size" "${VIT_CONVERT_FUZZ_SANITIZER:-address}"
  if [ $rc -ne 0 ]; then
    failed=1
    grep -m5 -E 'ERROR|panicked|Test unit written' "$log"
  fi
done
exit $failed
