#!/usr/bin/env bash
# Builds the seed corpus of every fuzz target from the committed fixtures (run from anywhere).
# Writes fuzz/corpus/<target>/ (git-ignored), adding the committed seeds of fuzz/seeds/<target>/.
# Needs only bash, coreutils and unzip (for the data.pkl of torch zips and the .npy members of
# npz files; skipped without unzip).
set -euo pipefail
cd "$(dirname "$0")"
root=..
corpus=corpus
mkdir -p "$corpus"
for t in pickle torch_zip torch_legacy npy npz safetensors flax mapping_table inspect verify_compare side_files; do
  mkdir -p "$corpus/$t"
done

# A file's seed name is its sha256, so reruns do not duplicate seeds.
add() { # target file
  local sum
  sum=$(sha256sum "$2" | cut -c1-16)
  cp "$2" "$corpus/$1/$sum"
}

have_unzip=0
command -v unzip >/dev/null 2>&1 && have_unzip=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

while IFS= read -r -d '' f; do
  # Files over 256 KiB slow every execution down; they add no structure the others lack.
  [ "$(stat -c %s "$f")" -le 262144 ] || continue
  add inspect "$f"
  magic=$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')
  case "$magic" in
    504b0304*|504b0506*)
      if [ $have_unzip = 1 ] && unzip -Z1 "$f" 2>/dev/null | grep -q '/data\.pkl$'; then
        add torch_zip "$f"
        # Process substitution, not a pipe: with pipefail, a reader that stops early would turn
        # the writer's SIGPIPE into the script's exit status.
        name=$(grep -m1 '/data\.pkl$' < <(unzip -Z1 "$f"))
        unzip -p "$f" "$name" > "$tmp/data.pkl" && add pickle "$tmp/data.pkl"
      else
        add npz "$f"
        add torch_zip "$f"
        if [ $have_unzip = 1 ]; then
          rm -rf "$tmp/npz" && mkdir -p "$tmp/npz"
          unzip -qq -o "$f" -d "$tmp/npz" 2>/dev/null || true
          mapfile -d '' -t members < <(find "$tmp/npz" -name '*.npy' -size -64k -print0)
          for m in "${members[@]:0:8}"; do add npy "$m"; done
        fi
      fi
      ;;
    934e554d*) add npy "$f" ;;
    8002*|8003*|8004*|8005*) add torch_legacy "$f"; add pickle "$f" ;;
    *)
      case "$f" in
        *.safetensors) add safetensors "$f" ;;
        # Flax: larger files slow the target tenfold; fuzz/seeds/flax/ holds the structure.
        *.msgpack) [ "$(stat -c %s "$f")" -gt 16384 ] || add flax "$f" ;;
      esac
      ;;
  esac
done < <(find "$root/fixtures" -type f \( -name '*.pth' -o -name '*.pt' -o -name '*.bin' \
  -o -name '*.ckpt' -o -name '*.tar' -o -name '*.npz' -o -name '*.npy' -o -name '*.safetensors' \
  -o -name '*.msgpack' \) -print0)

for f in "$root"/mappings/*.toml; do add mapping_table "$f"; done

# verify_compare: a mode byte, then f32 values split between the sides (mode < 0x80), or a
# `.npy` read as an expected array (mode with the high bit set).
n=0
while IFS= read -r -d '' f; do
  [ "$(stat -c %s "$f")" -le 65536 ] || continue
  { printf '\x80'; cat "$f"; } > "$tmp/vc" && add verify_compare "$tmp/vc"
  { printf '\x49'; head -c 4096 "$f" | tail -c 512; } > "$tmp/vc" && add verify_compare "$tmp/vc"
  n=$((n + 1)); [ $n -lt 24 ] || break
done < <(find "$root/fixtures" -path '*io*' -name '*.npy' -print0 | sort -z)

# side_files: a config.json, NUL, a preprocessor_config.json, NUL, a few bytes of numbers (the
# fixtures' model folders; the tiny model the target builds decides what fits).
while IFS= read -r -d '' f; do
  d=$(dirname "$f")
  pre="$d/preprocessor_config.json"
  { cat "$f"; printf '\0'; [ -f "$pre" ] && cat "$pre"; printf '\0\x01\x08\x08\x00\x02\x04\x04\x01'; } \
    > "$tmp/sf" && add side_files "$tmp/sf"
done < <(find "$root/fixtures" -name config.json -size -64k -print0 | sort -z)

# Hand-built seeds for structure the fixtures lack in a small file (fuzz/seeds/<target>/:
# e.g. a chunked Flax array; the Flax fixtures holding one are over the size cap above).
for d in seeds/*/; do
  t=$(basename "$d")
  for f in "$d"*; do add "$t" "$f"; add inspect "$f"; done
done

for t in pickle torch_zip torch_legacy npy npz safetensors flax mapping_table inspect verify_compare side_files; do
  printf '%-14s %4d seeds\n' "$t" "$(find "$corpus/$t" -type f | wc -l)"
done
