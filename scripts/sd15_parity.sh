#!/usr/bin/env bash
# Full-size check of the converter and the models against diffusers, with timings and memory:
# scripts/sd15_parity.py builds an SD 1.5 inpainting UNet + VAE with random weights and runs
# them in PyTorch; `adcanvas convert` packs them at each dtype; `adcanvas parity` runs the
# packs and compares. Prints one JSON report per step; record the figures in BENCHMARKS.md.
#
# Usage: scripts/sd15_parity.sh WORKDIR [REPORTDIR]
#   ADCANVAS_BIN    the adcanvas binary (default: build it with cargo)
#   PYTHON          a Python with torch and diffusers (default: python3)
#   TORCH_DEVICE    cuda | cpu (default: cuda when PyTorch sees one)
#   PARITY_CONFIG   sd15 | tiny (tiny: the same structure, small, for trying this on a CPU)
#   ADCANVAS_DEVICE gpu | cpu, for adcanvas (default gpu)
#   DTYPES          pack dtypes to check (default "f32 f16 q8 q4"; f32 is the parity check)
#   QUANTIZED_WEIGHTS  auto | expand | keep: q8/q4 weights on the device (default auto: kept
#                   for SD 1.5, whose f32 weights exceed 1 GiB)
#   GPU_BINDING_LIMIT_MB  open the GPU as if it bound at most this many MiB per buffer (128:
#                   WebGPU's default); the whole VAE decode is skipped when it would not fit
#   PARITY_REPEATS  timed runs after the first (default 3)
#   TORCH_REPEATS   PyTorch's timed runs (default 5)
#   TORCH_F64=1     also report PyTorch's own f32 error against float64
#   REUSE_REFERENCE set: keep WORKDIR's PyTorch run from an earlier call
#   PARITY_PARALLEL=1  one adcanvas process per dtype and part (PARITY_PARTS, default "unet
#                   vae-decode vae-decode-tiled"), started together so that their first runs, mostly
#                   kernel compilation on one CPU core each, overlap; then each is timed alone. The
#                   PyTorch run goes on beside the conversion. For a GPU machine with many cores.
#                   Each process's report and log: REPORTDIR/parity-DTYPE-PART.{json,log}
#   PARITY_HOLD_S   in parallel mode, the most seconds to wait for every process's first run before
#                   timing them anyway (default 900)
#   PARITY_RELEASE_AFTER=FILE  in parallel mode, also wait (within PARITY_HOLD_S) for FILE before the
#                   timed runs: other GPU work on the machine can finish first
#   PARITY_PROFILE=1  in parallel mode, one more f32 UNet process that logs cubecl's GPU time per
#                   kernel and each kernel it compiles to REPORTDIR/profile-unet.log
# Needs about 4× the UNet's f32 size in free disk (3.4 GB for SD 1.5) for WORKDIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
WORK="${1:?usage: scripts/sd15_parity.sh WORKDIR [REPORTDIR]}"
REPORTS="${2:-$WORK}"
mkdir -p "$WORK" "$REPORTS"
if [[ -z "${ADCANVAS_BIN:-}" ]]; then
  (cd "$ADCANVAS_ROOT" && cargo build --release --bin adcanvas --quiet)
  ADCANVAS_BIN="$CARGO_TARGET_DIR/release/adcanvas"
fi
PYTHON="${PYTHON:-python3}"
device_args=()
[[ -n "${TORCH_DEVICE:-}" ]] && device_args=(--device "$TORCH_DEVICE")
[[ -n "${TORCH_F64:-}" ]] && device_args+=(--f64)

limit_args=()
[[ -n "${GPU_BINDING_LIMIT_MB:-}" ]] && limit_args=(--gpu-binding-limit-mb "$GPU_BINDING_LIMIT_MB")
parity() {  # parity PACK [args…]: adcanvas parity on PACK with the settings above
  local pack="$1"; shift
  "$ADCANVAS_BIN" parity --model "$pack" --io "$WORK/io.safetensors" --device "${ADCANVAS_DEVICE:-gpu}" --repeats "${PARITY_REPEATS:-3}" \
    --quantized-weights "${QUANTIZED_WEIGHTS:-auto}" "${limit_args[@]}" "$@"
}
convert() {  # convert DTYPE: the pack WORKDIR/pack-DTYPE
  echo "== $1: convert"
  local start; start=$(date +%s%N)
  "$ADCANVAS_BIN" convert --diffusers "$WORK/diffusers" --out "$WORK/pack-$1" --dtype "$1" --no-verify
  echo "convert_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
}

torch_pid=
if [[ -n "${REUSE_REFERENCE:-}" && -f "$WORK/io.safetensors" ]]; then
  echo "== PyTorch reference: reusing $WORK/io.safetensors"
elif [[ -n "${PARITY_PARALLEL:-}" ]]; then
  echo "== PyTorch reference, in the background ($(date -u +%FT%TZ))"
  rm -f "$WORK/io.safetensors"
  HF_HUB_OFFLINE=1 "$PYTHON" "$ADCANVAS_ROOT/scripts/sd15_parity.py" --out "$WORK" --config "${PARITY_CONFIG:-sd15}" --repeats "${TORCH_REPEATS:-5}" "${device_args[@]}" \
    >"$REPORTS/torch.json" 2>"$REPORTS/torch.log" &
  torch_pid=$!
  until [[ -f "$WORK/io.safetensors" ]]; do
    kill -0 "$torch_pid" 2>/dev/null || { cat "$REPORTS/torch.log" >&2; echo "the PyTorch reference failed" >&2; exit 1; }
    sleep 1
  done
  echo "reference saved ($(date -u +%FT%TZ))"
else
  echo "== PyTorch reference ($(date -u +%FT%TZ))"
  HF_HUB_OFFLINE=1 "$PYTHON" "$ADCANVAS_ROOT/scripts/sd15_parity.py" --out "$WORK" --config "${PARITY_CONFIG:-sd15}" --repeats "${TORCH_REPEATS:-5}" "${device_args[@]}" \
    | tee "$REPORTS/torch.json"
fi

if [[ -z "${PARITY_PARALLEL:-}" ]]; then
  for dtype in ${DTYPES:-f32 f16 q8 q4}; do
    convert "$dtype"
    echo "== $dtype: parity on ${ADCANVAS_DEVICE:-gpu}"
    parity "$WORK/pack-$dtype" | tee "$REPORTS/parity-$dtype.json"
    rm -rf "$WORK/pack-$dtype"
  done
  exit 0
fi

# Parallel: start every process, wait until each has compiled (holds) or ended, then time each alone.
names=() pids=()
launch() {  # launch NAME DIR CMD…: run CMD in DIR in the background, holding before its timed runs
  local name="$1" dir="$2"; shift 2
  rm -f "$WORK/hold-$name" "$WORK/hold-$name.ready"
  (cd "$dir" && "$@" --hold-until "$WORK/hold-$name") >"$REPORTS/parity-$name.json" 2>"$REPORTS/parity-$name.log" &
  names+=("$name") pids+=($!)
  echo "started $name (pid $!)"
}
for dtype in ${DTYPES:-f32 f16 q8 q4}; do
  convert "$dtype"
  for part in ${PARITY_PARTS:-unet vae-decode vae-decode-tiled}; do
    launch "$dtype-$part" "$ADCANVAS_ROOT" parity "$WORK/pack-$dtype" --part "$part"
  done
done
if [[ -n "${PARITY_PROFILE:-}" && -d "$WORK/pack-f32" ]]; then
  # cubecl reads cubecl.toml from the working directory: this process alone logs.
  mkdir -p "$WORK/profile"
  cat >"$WORK/profile/cubecl.toml" <<TOML
[profiling.logger]
level = "basic"
file = "$REPORTS/profile-unet.log"
[compilation.logger]
level = "basic"
file = "$REPORTS/profile-unet.log"
[autotune.logger]
level = "minimal"
file = "$REPORTS/profile-unet.log"
TOML
  launch "profile-unet" "$WORK/profile" parity "$WORK/pack-f32" --part unet
fi
[[ -n "$torch_pid" ]] && { wait "$torch_pid" || echo "the PyTorch timings failed: $REPORTS/torch.log" >&2; cat "$REPORTS/torch.json"; }

deadline=$(( $(date +%s) + ${PARITY_HOLD_S:-900} ))
for i in "${!names[@]}"; do
  while [[ ! -f "$WORK/hold-${names[$i]}.ready" ]] && kill -0 "${pids[$i]}" 2>/dev/null && (( $(date +%s) < deadline )); do sleep 1; done
done
if [[ -n "${PARITY_RELEASE_AFTER:-}" ]]; then
  while [[ ! -e "$PARITY_RELEASE_AFTER" ]] && (( $(date +%s) < deadline )); do sleep 1; done
fi
(( $(date +%s) >= deadline )) && echo "== not every process compiled within PARITY_HOLD_S: timing the others anyway"
for i in "${!names[@]}"; do
  echo "== ${names[$i]}: timed runs ($(date -u +%FT%TZ))"
  touch "$WORK/hold-${names[$i]}"
  wait "${pids[$i]}" || echo "${names[$i]} failed (exit $?)"
  cat "$REPORTS/parity-${names[$i]}.log" "$REPORTS/parity-${names[$i]}.json"
done
rm -rf "$WORK"/pack-* "$WORK"/hold-*
