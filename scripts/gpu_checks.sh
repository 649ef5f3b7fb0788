#!/usr/bin/env bash
# Every check that needs a real GPU, in one command sized for a 10-minute slot on a CUDA machine
# with PyTorch and no network (BENCHMARKS.md, 2026-11-26 night, H200): the SD 1.5 parity of f32
# and q8 packs against PyTorch (UNet step, whole and tiled VAE decode), one process per part
# compiling side by side and each timed alone; a cubecl kernel profile of the f32 UNet; the
# default model's cold and warm generation; and, when SMOKE_LATENTS is given, a CUDA run of
# training/train_unet.py that is then resumed. Needs a built adcanvas binary for the machine.
#
# Usage: scripts/gpu_checks.sh OUTDIR
#   ADCANVAS_BIN   the adcanvas binary (required: build it elsewhere, e.g. xz'd and carried)
#   WHEELS         folder of wheels to install first with pip --no-index (diffusers 0.42.1 and
#                  importlib_metadata when the machine's Python lacks them)
#   SMOKE_LATENTS  a latents.pt in train_unet.py's cache format (a few ads are enough)
#   TRAIN=1        instead of the bench and the smoke run, scripts/gpu_train.sh's 512² fine-tune,
#                  started at once (its data step is CPU work beside the compilation) and sized to
#                  end before the parity timings; needs .stamps. Writes OUTDIR/ref_state.pt and
#                  OUTDIR/train.tgz (log, losses, held-out loss, ControlNet)
#   PARITY_PARTS   which SD 1.5 parts (default "unet vae-decode vae-decode-tiled")
#   PARITY_PROFILE 1 (default): also profile the f32 UNet's kernels; empty: not
#   DTYPES         pack dtypes to check (default "f32 q8")
#   BENCH_SIZES    the default model's bench sizes (default "256 512"; empty: no bench)
#   KERNEL_BENCH   1 (default): also `adcanvas bench` (our kernels beside stock burn); 0: not
#   PARITY_HOLD_S  most seconds the timed runs wait for the compilation and the training (330)
#   BUDGET_S       seconds the whole script may take (default 545)
#   PYTHON         a Python with torch (default python3)
# wgpu needs the Vulkan loader (libvulkan1) and the driver's ICD (VK_DRIVER_FILES if not found).
# Writes OUTDIR/log.txt and OUTDIR/results.tgz (every report and log).
set -uo pipefail
OUTDIR="${1:?usage: scripts/gpu_checks.sh OUTDIR}"
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/log.txt") 2>&1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T0=$(date +%s)
el() { echo "+$(( $(date +%s) - T0 ))s"; }
: "${ADCANVAS_BIN:?set ADCANVAS_BIN to the adcanvas binary}"
export PYTHONUNBUFFERED=1 CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}" HF_HUB_OFFLINE=1
if [[ -n "${WHEELS:-}" ]]; then
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-checks-site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/gpu-checks-site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "$(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(date -u +%FT%TZ)"
R=$(mktemp -d)
( while sleep 15; do echo "[$(el)] gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader) load $(cut -d' ' -f1 /proc/loadavg)"; done ) &
monitor=$!
# Beside the parity processes' compilation (CPU-bound, the GPU nearly idle), once PyTorch's
# timings are done: the default model's bench, then the training run. The parity processes'
# timed runs wait for both (PARITY_RELEASE_AFTER), so no timing overlaps other GPU work.
train=
if [[ -n "${TRAIN:-}" ]]; then
  train=$(mktemp -d)
  ( echo "training starts $(el)"
    WHEELS= TOTAL_S=$(( ${BUDGET_S:-545} - 60 - ($(date +%s) - T0) )) bash scripts/gpu_train.sh run "$train" > "$R/train.txt" 2>&1
    echo "training ended (exit $?) $(el)"; tail -25 "$R/train.txt"; touch "$R/release" ) &
else
( until [[ -s $R/torch.json ]]; do sleep 1; done; echo "bench starts $(el)"
  bench_sizes="${BENCH_SIZES-256 512}"
  if [[ -n "$bench_sizes" ]]; then
    BENCH_COUNT=4 timeout 150 bash scripts/bench.sh gpu $bench_sizes > "$R/bench.txt" 2>&1; echo "bench done $(el)"; cat "$R/bench.txt"
  fi
  if [[ "${KERNEL_BENCH:-1}" == 1 ]]; then
    # Our kernels beside stock burn at the default model's and SD 1.5's shapes (issue 19).
    timeout 120 "$ADCANVAS_BIN" bench --device gpu --repeats 10 > "$R/kernels.txt" 2>&1; echo "kernel bench done $(el)"; grep -v '^{' "$R/kernels.txt"
    # The default model quantised end to end: q8 weights kept on the GPU and read packed by our
    # kernels (all of ours on), beside the bench above (weights expanded at load).
    ADCANVAS_KERNELS=all BENCH_WEIGHTS=keep BENCH_COUNT=3 timeout 90 bash scripts/bench.sh gpu 256 > "$R/bench_kept.txt" 2>&1
    echo "kept-weights bench done $(el)"; cat "$R/bench_kept.txt"
  fi
  if [[ -n "${SMOKE_LATENTS:-}" ]]; then
    run=$(mktemp -d) && cp "$SMOKE_LATENTS" "$run/latents.pt"
    timeout 90 "${PYTHON:-python3}" training/train_unet.py --run "$run" --minutes 1.0 --batch 32 > "$R/train.txt" 2>&1
    timeout 60 "${PYTHON:-python3}" training/train_unet.py --run "$run" --minutes 0.4 --batch 32 >> "$R/train.txt" 2>&1
    cp "$run/losses.csv" "$R/train_losses.csv"; echo "training done $(el)"; tail -5 "$R/train.txt"
  fi
  touch "$R/release" ) &
fi
PARITY_RELEASE_AFTER=$R/release PARITY_PARALLEL=1 PARITY_PROFILE="${PARITY_PROFILE-1}" DTYPES="${DTYPES:-f32 q8}" PARITY_REPEATS=3 PARITY_HOLD_S="${PARITY_HOLD_S:-330}" \
  timeout $(( ${BUDGET_S:-545} - ($(date +%s) - T0) )) bash scripts/sd15_parity.sh "$(mktemp -d)" "$R"
echo "parity script ended (exit $?) $(el)"
pkill -f "adcanvas parity"; pkill -f "adcanvas generate"; pkill -f 'gpu_train.sh|training/'; kill "$monitor"
sleep 1
if [[ -n "$train" ]]; then
  cp "$train/ref/state.pt" "$OUTDIR/ref_state.pt"
  tar czf "$OUTDIR/train.tgz" --exclude=state.pt -C "$train" .
fi
for f in "$R"/parity-*.log; do echo "--- $f"; cat "$f"; done
tar czf "$OUTDIR/results.tgz" -C "$R" . && ls -la "$OUTDIR"
echo "all done $(el)"
