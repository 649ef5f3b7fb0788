#!/usr/bin/env bash
# The CPU path in the browser beside the native one, in one run on this machine (issue 30): COUNT
# ads of the default model at SIZE² with STEPS steps, first in Chromium with WebGPU off (the wasm
# build, SIMD128, one thread; tests/e2e/bench-cpu.mjs), then by the native CLI on the CPU at one
# thread and at every core. The first ad of each is cold, the rest warm.
# Usage: scripts/bench_browser_cpu.sh [SIZE] [STEPS] [COUNT]   (default 256 20 3)
#   DIST          a built web app (default: build one with scripts/build-web.sh into a temporary folder)
#   ADCANVAS_BIN  the adcanvas binary (default: build it)
# Record what it prints, with the machine and date, in BENCHMARKS.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
SIZE="${1:-256}"; STEPS="${2:-20}"; COUNT="${3:-3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [[ -z "${DIST:-}" ]]; then
  DIST="$WORK/dist"
  scripts/build-web.sh "$DIST" >&2
fi
if [[ -z "${ADCANVAS_BIN:-}" ]]; then
  cargo build --release --locked --bin adcanvas --quiet
  ADCANVAS_BIN="$CARGO_TARGET_DIR/release/adcanvas"
fi
echo "== Chromium, WebGPU off (wasm, one thread)"
(cd tests/e2e && ADCANVAS_DIST="$DIST" node bench-cpu.mjs "$SIZE" "$STEPS" "$COUNT")
for threads in 1 "$(nproc)"; do
  echo "== native CLI, --device cpu, $threads thread(s)"
  RAYON_NUM_THREADS="$threads" "$ADCANVAS_BIN" generate --device cpu --model models/default \
    --product tests/fixtures/product_white.jpg --prompt 'on a marble counter, soft morning light' \
    --size "$SIZE" --steps "$STEPS" --seed 1 --count "$COUNT" --out "$WORK/native.png" 2>/dev/null \
    | python3 -c '
import json, sys
text, at, i, decoder = sys.stdin.read(), 0, 0, json.JSONDecoder()
while (start := text.find("{", at)) >= 0:
    report, at = decoder.raw_decode(text, start)
    t = report["timings_ms"]
    stages = ", ".join(f"{k} {v / 1000:.2f}" for k, v in t.items() if k != "total")
    i += 1
    mark, total = (" (cold)" if i == 1 else ""), t["total"] / 1000
    print(f"ad {i}{mark}: {total:.2f} s ({stages})")'
done
