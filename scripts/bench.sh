#!/usr/bin/env bash
# Prints whole-pipeline timings of the CLI (JSON report per run) for the default model.
# Usage: scripts/bench.sh [gpu|cpu] [SIZES...]   e.g. scripts/bench.sh gpu 64 128 256 512
# BENCH_REFERENCE=1 adds a style reference (PFV + MEPA image prompt) to every run.
# BENCH_COUNT=N ads per size in one process (default 3): the first is cold, the rest warm.
# BENCH_WEIGHTS=keep|expand what the q8 pack's weights become on the device (default: the pack's
# choice, expand for the default model); with ADCANVAS_KERNELS=all, kept weights go through our
# kernels that read them packed.
# ADCANVAS_BIN=path runs that binary instead of building one (e.g. on a machine without cargo).
# Record what it prints, with the machine and date, in BENCHMARKS.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
DEVICE="${1:-gpu}"; shift || true
SIZES=("${@:-64 128 256}")
if [[ -n "${ADCANVAS_BIN:-}" ]]; then
  BIN="$ADCANVAS_BIN"
else
  cargo build --release --bin adcanvas --quiet
  BIN="$CARGO_TARGET_DIR/release/adcanvas"
fi
OUT="$(mktemp -d)"
EXTRA=()
if [[ "${BENCH_REFERENCE:-0}" == 1 ]]; then
  EXTRA=(--reference tests/fixtures/reference_beach.png --reference-mask tests/fixtures/reference_beach_mask.png)
fi
if [[ -n "${BENCH_WEIGHTS:-}" ]]; then
  EXTRA+=(--quantized-weights "$BENCH_WEIGHTS")
fi
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F)"
for size in ${SIZES[@]}; do
  for steps in 20; do
    # One process generates BENCH_COUNT ads (seeds 1, 2, …): the first pays model loading and,
    # on a GPU, kernel compilation and autotuning; the others are the warm speed.
    "$BIN" generate --product tests/fixtures/product_alpha_128.png --prompt "bench" --out "$OUT/ad.png" \
      --size "$size" --steps "$steps" --seed 1 --count "${BENCH_COUNT:-3}" --device "$DEVICE" "${EXTRA[@]}" 2>/dev/null \
      | python3 -c "
import json, sys
text, dec, pos, run = sys.stdin.read(), json.JSONDecoder(), 0, 0
while text[pos:].strip():
    r, end = dec.raw_decode(text, pos + len(text[pos:]) - len(text[pos:].lstrip()))
    pos, run = end, run + 1
    print(f'$DEVICE reference=${BENCH_REFERENCE:-0} weights=${BENCH_WEIGHTS:-pack} kernels=${ADCANVAS_KERNELS:-proven} size=$size steps=$steps run={run} ' + ('(first) ' if run == 1 else '(warm) ')
          + ' '.join(f'{k}={v:.0f}ms' for k, v in r['timings_ms'].items()))
"
  done
done
