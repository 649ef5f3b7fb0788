#!/usr/bin/env bash
# The default model at 512² (issue #5): the shipped 256² model fine-tuned on 512² ads, in one
# command sized for a 10-minute slot on a CUDA machine with PyTorch and no network. Without CUDA
# the same command runs on the CPU (the "smaller CPU configuration": fewer ads, longer minutes).
#
# The training data (2.5 GB at 256²) cannot travel to the GPU machine (64 MiB a call), so it is
# made there: the 184 Tux Paint stamps the data uses (9.3 MB, copied by `prepare`), procedural
# scenes, captions encoded with the pack's own q8 MiniLM, latents with the pack's VAE. The
# starting weights are the pack's (dequantised q8), so nothing but the tree and the stamps travels.
#
# Usage:
#   scripts/gpu_train.sh prepare          here: copy the stamps to .stamps/ (git-ignored; carry it)
#   scripts/gpu_train.sh run OUTDIR       there (or here): data, reference fine-tune, ControlNet fine-tune
# Settings (environment):
#   SIZE 512  N_TRAIN 6000  N_HELDOUT 100  WORKERS (cores − 2)  BATCH 32  CN_BATCH 16
#   REF_MIN 4.5  CN_MIN 1.5   minutes of each training phase (CN_MIN 0: no ControlNet phase)
#   TOTAL_S                   seconds the whole run may take: the reference phase then gets what the
#                             data and the other steps leave (RESERVE_S 150 for loading, latents,
#                             the held-out loss and the f16 copy), at least half a minute
#   PACK models/default       the pack the run starts from (and whose text encoder and VAE it uses)
#   REF_STATE                 a train_reference.py state.pt to resume instead of the pack (f32, here)
#   TEXT_ENCODER (PACK)       'minilm' for the f32 wheel, where it is installed
#   STAMPS .stamps            WHEELS: folder of wheels to pip-install first (diffusers 0.42.1 there)
#   WORK (a temporary folder) where the data and latents go (reused when already made there)
#   SHRINK 1                  0 keeps the full f32 state (optimiser included) to resume from
#   PYTHON python3
# Writes OUTDIR/log.txt, OUTDIR/ref/{state.pt (EMA weights, f16), losses.csv},
# OUTDIR/controlnet/{controlnet/, losses.csv}; `training/export.py --unet-run OUTDIR/ref
# --controlnet OUTDIR/controlnet/controlnet --sample-size 64` then makes the pack here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

if [[ "${1:-}" == prepare ]]; then
  rm -rf .stamps && mkdir -p .stamps
  "$PY" - <<'EOF'
import os, shutil, sys
sys.path.insert(0, "training")
import scenes
stamps = scenes.load_stamps()
if not stamps:
    sys.exit("no stamps: apt-get install tuxpaint-stamps-default")
for s in stamps:
    rel = s.source.removeprefix("photo:")
    for src in (os.path.join(scenes.STAMPS_DIR, rel), os.path.splitext(os.path.join(scenes.STAMPS_DIR, rel))[0] + ".txt"):
        if os.path.exists(src):
            dst = os.path.join(".stamps", os.path.relpath(src, scenes.STAMPS_DIR))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(src, dst)
print(f"{len(stamps)} stamps copied to .stamps/")
EOF
  grep -qx '/.stamps/' .git/info/exclude 2>/dev/null || echo /.stamps/ >> .git/info/exclude
  du -sh .stamps
  exit 0
fi

[[ "${1:-}" == run ]] || { echo "usage: scripts/gpu_train.sh prepare | run OUTDIR" >&2; exit 2; }
OUTDIR="${2:?usage: scripts/gpu_train.sh run OUTDIR}"
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/log.txt") 2>&1
T0=$(date +%s)
el() { echo "+$(( $(date +%s) - T0 ))s"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [[ -n "${WHEELS:-}" ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-train-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/gpu-train-site${PYTHONPATH:+:$PYTHONPATH}
fi
SIZE="${SIZE:-512}" PACK="${PACK:-models/default}" STAMPS="${STAMPS:-.stamps}"
WORKERS="${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}"
[[ -d "$STAMPS" ]] || { echo "no stamps at $STAMPS: run 'scripts/gpu_train.sh prepare' and carry .stamps" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no CUDA GPU: training on the CPU"
echo "$(nproc) cores; size $SIZE; $(date -u +%FT%TZ)"

work="${WORK:-$(mktemp -d)}"
data="$work/data" ref="$OUTDIR/ref" cn="$OUTDIR/controlnet"
mkdir -p "$ref" "$cn"
echo "== data $(el)"
[[ -s "$data/heldout.npz" ]] && echo "reusing $data" || "$PY" training/make_dataset.py --out "$data" --size "$SIZE" --stamps "$STAMPS" --text-encoder "${TEXT_ENCODER:-$PACK}" \
  --workers "$WORKERS" --train "${N_TRAIN:-6000}" --heldout "${N_HELDOUT:-100}"

ref_min="${REF_MIN:-4.5}"
if [[ -n "${TOTAL_S:-}" ]]; then
  ref_min=$(awk -v left=$(( TOTAL_S - ($(date +%s) - T0) - ${RESERVE_S:-150} )) -v cn="${CN_MIN:-1.5}" \
    'BEGIN { m = left / 60 - cn; printf "%.2f", m < 0.5 ? 0.5 : m }')
fi
echo "== reference fine-tune, $ref_min min $(el)"
init=(--init-pack "$PACK")
if [[ -n "${REF_STATE:-}" ]]; then cp "$REF_STATE" "$ref/state.pt"; init=(); fi
# Phase 3's settings (models/default/MODEL_CARD.md), at half its learning rates: a fine-tune.
"$PY" training/train_reference.py "${init[@]}" --data "$data" --vae "$PACK" --latents "$work/latents.pt" \
  --run "$ref" --minutes "$ref_min" --batch "${BATCH:-32}" --lr 1e-4 --lr-new 1.5e-4 \
  --t-power 0.5 --snr-weight-max 8 --text-drop 0.25 --text-drop-with-ref 0.5

if [[ "${CN_MIN:-1.5}" != 0 ]]; then
  echo "== ControlNet fine-tune $(el)"
  "$PY" training/train_controlnet.py --init-pack "$PACK" --unet "$ref/unet" --data "$data" --vae "$PACK" \
    --latents "$work/latents.pt" --run "$cn" --minutes "${CN_MIN:-1.5}" --batch "${CN_BATCH:-16}"
  "$PY" -c "import sys, torch; p = sys.argv[1]; torch.save({'step': torch.load(p, weights_only=False)['step']}, p)" "$cn/state.pt"
fi

echo "== held-out loss and what comes back $(el)"
"$PY" training/heldout_loss.py --data "$data" --latents "$work/latents.pt" --pack "$PACK" --run "$ref" | tee "$OUTDIR/heldout.txt"
# Only the EMA weights travel back (f16): the optimiser state stays, it cannot travel anyway.
[[ "${SHRINK:-1}" == 0 ]] || "$PY" - "$ref" <<'EOF'
import sys, torch
run = sys.argv[1]
s = torch.load(f"{run}/state.pt", map_location="cpu", weights_only=False)
half = lambda d: {k: v.half() if v.is_floating_point() else v for k, v in d.items()}  # noqa: E731
torch.save({"ema": half(s["ema"]), "ema_enc": half(s["ema_enc"]), "step": s["step"]}, f"{run}/state.pt")
EOF
rm -rf "$ref/unet" "$ref/image_encoder"
du -sh "$OUTDIR"/* ; echo "done $(el)"
