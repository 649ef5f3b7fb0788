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

if [[ -n "${REUSE_REFERENCE:-}" && -f "$WORK/io.safetensors" ]]; then
  echo "== PyTorch reference: reusing $WORK/io.safetensors"
else
  echo "== PyTorch reference ($(date -u +%FT%TZ))"
  HF_HUB_OFFLINE=1 "$PYTHON" "$ADCANVAS_ROOT/scripts/sd15_parity.py" --out "$WORK" --config "${PARITY_CONFIG:-sd15}" --repeats "${TORCH_REPEATS:-5}" "${device_args[@]}" \
    | tee "$REPORTS/torch.json"
fi

for dtype in ${DTYPES:-f32 f16 q8 q4}; do
  pack="$WORK/pack-$dtype"
  echo "== $dtype: convert"
  start=$(date +%s%N)
  "$ADCANVAS_BIN" convert --diffusers "$WORK/diffusers" --out "$pack" --dtype "$dtype" --no-verify
  echo "convert_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
  echo "== $dtype: parity on ${ADCANVAS_DEVICE:-gpu}"
  limit_args=()
  [[ -n "${GPU_BINDING_LIMIT_MB:-}" ]] && limit_args=(--gpu-binding-limit-mb "$GPU_BINDING_LIMIT_MB")
  "$ADCANVAS_BIN" parity --model "$pack" --io "$WORK/io.safetensors" --device "${ADCANVAS_DEVICE:-gpu}" --repeats "${PARITY_REPEATS:-3}" \
    --quantized-weights "${QUANTIZED_WEIGHTS:-auto}" "${limit_args[@]}" | tee "$REPORTS/parity-$dtype.json"
  rm -rf "$pack"
done
