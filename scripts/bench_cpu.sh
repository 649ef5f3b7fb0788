#!/usr/bin/env bash
# Our CPU path against PyTorch CPU eager, side by side in one run on this machine (issue 30): the
# default pack's UNet call (batch 2, 256², 128 text tokens, ControlNet off), its depth ControlNet's
# call on the same batch and its VAE decode at 256², the same weights, inputs and thread count;
# ours is also checked against PyTorch's outputs.
# Usage: scripts/bench_cpu.sh [THREADS] [REPEATS]   (default: every core, 20)
#   PYTHON  a Python with torch and diffusers (default ~/.cache/adcanvas-py/bin/python, training/README.md)
#   ADCANVAS_BIN  the adcanvas binary (default: build it)
# Record what it prints, with the machine and date, in BENCHMARKS.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
THREADS="${1:-$(nproc)}"; REPEATS="${2:-20}"
PYTHON="${PYTHON:-$HOME/.cache/adcanvas-py/bin/python}"
if [[ -z "${ADCANVAS_BIN:-}" ]]; then
  cargo build --release --locked --bin adcanvas --quiet
  ADCANVAS_BIN="$CARGO_TARGET_DIR/release/adcanvas"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F); threads: $THREADS"
# OPENBLAS_* slow a current PyTorch here (/work/.library/env README); unset for this run only.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PYTHON" scripts/cpu_vs_torch.py --pack models/default --out "$WORK" \
  --threads "$THREADS" --repeats "$REPEATS" > "$WORK/torch.out"
RAYON_NUM_THREADS="$THREADS" "$ADCANVAS_BIN" parity --model models/default --io "$WORK/io.safetensors" --device cpu \
  --repeats "$REPEATS" --part unet --part unet-halves --part controlnet --part controlnet-halves --part vae-decode 2> "$WORK/ours.err" > "$WORK/ours.json" \
  || { cat "$WORK/ours.err" >&2; exit 1; }
python3 - "$WORK/torch.json" "$WORK/ours.json" <<'PY'
import json, statistics, sys
torch, ours = (json.load(open(p)) for p in sys.argv[1:])
print(f"PyTorch {torch['torch']}, diffusers {torch['diffusers']}, {torch['threads']} threads; shapes {torch['shapes']}")
print(f"{'':<16} {'PyTorch ms':>11} {'ours ms':>9} {'ours ÷ PyTorch':>15} {'max abs diff':>13}")
# "halves at once": the same batch of 2 as one call per sample on its own core, as the pipeline
# runs guidance's halves on the CPU (pipeline/denoise.rs), against PyTorch's batch-2 call.
for name, key, mine in (("UNet call", "unet", "unet"), ("  halves at once", "unet", "unet_halves"),
                        ("ControlNet call", "controlnet", "controlnet"),
                        ("  halves at once", "controlnet", "controlnet_halves"),
                        ("VAE decode", "vae_decode", "vae_decode")):
    t = statistics.median(torch[f"{key}_ms"])
    run = ours[mine]
    o = statistics.median(run["warm_ms"])
    print(f"{name:<16} {t:>11.1f} {o:>9.1f} {o / t:>14.2f}× {run['max_abs_diff']:>13.1e}")
print(json.dumps({"torch": torch, "ours": {k: ours[k] for k in ("unet", "unet_halves", "controlnet", "controlnet_halves", "vae_decode", "quantized_weights")}}))
PY
