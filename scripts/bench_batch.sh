#!/usr/bin/env bash
# What one model load and one warm-up per process save: ROWS ads made by one `adcanvas batch`
# against the same ROWS made by ROWS `adcanvas generate` runs, on one device, in one run.
# Usage: scripts/bench_batch.sh [cpu|gpu] [ROWS] [SIZE] [STEPS]   (default cpu 100 128 4)
# ADCANVAS_BIN=path runs that binary. GENERATE_ROWS=K makes only the first K rows as `generate` runs
# and scales their time to ROWS (on lavapipe each run compiles its kernels for about 2 minutes, so
# 100 runs would take 3.5 hours); the output says so. Record what it prints, with the machine and date, in BENCHMARKS.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
DEVICE="${1:-cpu}"; ROWS="${2:-100}"; SIZE="${3:-128}"; STEPS="${4:-4}"
if [[ -n "${ADCANVAS_BIN:-}" ]]; then
  BIN="$ADCANVAS_BIN"
else
  cargo build --release --bin adcanvas --quiet
  BIN="$CARGO_TARGET_DIR/release/adcanvas"
fi
WORK="$(mktemp -d)"
cp tests/fixtures/product_alpha_128.png tests/fixtures/product_white.jpg "$WORK/"
PRODUCTS=(product_alpha_128.png product_white.jpg)
SCENES=("a marble counter" "a wooden table" "a sunny beach" "a concrete podium" "a green garden")
echo "product,prompt,size,steps,seed" > "$WORK/manifest.csv"
for i in $(seq 1 "$ROWS"); do
  echo "${PRODUCTS[$((i % 2))]},on ${SCENES[$((i % 5))]},$SIZE,$STEPS,$i" >> "$WORK/manifest.csv"
done
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F); device: $DEVICE"

start=$EPOCHREALTIME
"$BIN" batch "$WORK/manifest.csv" --out "$WORK/batch" --device "$DEVICE" > "$WORK/batch.jsonl" 2> "$WORK/batch.err"
batch_s=$(python3 -c "print($EPOCHREALTIME - $start)")

GENERATE_ROWS="${GENERATE_ROWS:-$ROWS}"
start=$EPOCHREALTIME
tail -n +2 "$WORK/manifest.csv" | head -n "$GENERATE_ROWS" | while IFS=, read -r product prompt size steps seed; do
  "$BIN" generate --product "$WORK/$product" --prompt "$prompt" --size "$size" --steps "$steps" --seed "$seed" \
    --device "$DEVICE" --out "$WORK/generate-$seed.png" > /dev/null 2>&1
done
generate_s=$(python3 -c "print($EPOCHREALTIME - $start)")

python3 - "$ROWS" "$SIZE" "$STEPS" "$batch_s" "$generate_s" "$GENERATE_ROWS" <<'PY'
import sys
rows, size, steps, b, g, k = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
if k < rows:
    print(f"generate: {k} runs took {g:.1f} s ({g / k:.1f} s each); {rows} runs projected from them")
    g = g / k * rows
print(f"{rows} ads at {size}², {steps} steps: batch {b:.1f} s ({rows / b * 60:.2f} ads/min); "
      f"{rows} generate runs {g:.1f} s ({rows / g * 60:.2f} ads/min){' projected' if k < rows else ''}; "
      f"batch is {g / b:.2f}× as fast")
PY
# The ads are the same (the batch's names come from its rows; compare pixels by seed).
python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
same = compared = 0
for line in open(f"{work}/batch.jsonl"):
    r = json.loads(line)
    theirs = f"{work}/generate-{r.get('seed')}.png"
    if r.get("status") == "made" and os.path.exists(theirs):
        compared += 1
        same += open(r["output"], "rb").read() == open(theirs, "rb").read()
made = sum(1 for l in open(f"{work}/batch.jsonl") if json.loads(l).get("status") == "made")
print(f"batch made {made} ads; byte-identical to generate's ad: {same} of the {compared} generate made")
PY
rm -rf "$WORK"
