#!/usr/bin/env bash
# The photographic fine-tune's candidate (issue 26), exported and scored beside the shipped pack:
#
#   scripts/photo_candidate.sh [N] [MODE]      default 64 ads, 2pass (the runtime's 512² path)
#
# 1. exports a candidate pack from what scripts/train_photo.sh trained (ref_photo/state.pt: the
#    UNet, MEPA and reference encoder, EMA weights) with the shipped VAE, or with PHOTO_DECODER=1
#    the decoder fine-tuned on the same photographs (decoder_photo/vae: train_decoder.py
#    --condition, encoder frozen, so the latent space is the shipped one); the ControlNet is the
#    shipped pack's; q8 as shipped (the cut-out network is not part of it: pack_component.py);
# 2. makes the 512² held-out photographic set once (photo-eval512: 128 ads, held-out photographs,
#    textures and products only);
# 3. scores the candidate with training/evaluate_photo.py on the first N of them, as the shipped
#    pack was scored (docs/eval/photo_shipped_2pass_results.json), into docs/eval/photo_candidate_*.
# Nothing in models/ changes: the pack is replaced by hand, only when the figures say it is better
# (training/README.md). Runs under $ADCANVAS_RUNS (default ~/.cache/adcanvas-runs), like train_photo.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
N="${1:-64}"
MODE="${2:-2pass}"
RUNS="${ADCANVAS_RUNS:-$HOME/.cache/adcanvas-runs}"
PY="${ADCANVAS_PY:-$HOME/.cache/adcanvas-py}/bin/python"
export HF_HUB_OFFLINE=1
CAND="$RUNS/cand"
log() { echo "[$(date +%H:%M:%S)] $*"; }
[[ -f "$RUNS/ref_photo/state.pt" ]] || { echo "no run to export: scripts/train_photo.sh trains it" >&2; exit 1; }

cargo build --release --locked --bin adcanvas --quiet
mkdir -p "$CAND"
if [[ ! -f "$CAND/controlnet/config.json" ]]; then
  log "the shipped ControlNet as a diffusers folder"
  "$PY" -c "import sys; sys.path.insert(0, 'training'); import pack; pack.controlnet('models/default').save_pretrained('$CAND/controlnet')"
fi
VAE=(--vae-pack models/default)
NOTE="train_reference.py on make_photo_dataset.py's photographs"
# The photographic decoder was tried and not shipped (docs/EVAL.md); PHOTO_DECODER=1 takes it.
if [[ "${PHOTO_DECODER:-0}" == 1 && -f "$RUNS/decoder_photo/vae/config.json" ]]; then
  VAE=(--vae "$RUNS/decoder_photo/vae")
  NOTE="$NOTE; train_decoder.py --condition on the same photographs"
fi
log "exporting the candidate (${VAE[*]})"
rm -rf "$CAND/pack"
"$PY" training/export.py --unet-run "$RUNS/ref_photo" "${VAE[@]}" --controlnet "$CAND/controlnet" \
  --folder "$CAND/diffusers" --out "$CAND/pack" --dtype q8 --adcanvas "$CARGO_TARGET_DIR/release/adcanvas" \
  --label "adcanvas default (256 px, CPU-trained, photographic fine-tune)" --note "$NOTE"
cp models/default/MODEL_CARD.md "$CAND/pack/"

EVAL="$RUNS/photo-eval512"
if [[ ! -f "$EVAL/.complete" ]]; then
  log "the 512² held-out photographic set"
  rm -rf "$EVAL"
  nice -n 10 "$PY" training/make_photo_dataset.py --out "$EVAL" --train 16 --heldout 128 --size 512
  touch "$EVAL/.complete"
fi
log "scoring the candidate on $N held-out photographic ads ($MODE)"
nice -n 5 "$PY" training/evaluate_photo.py --data "$EVAL" --pack "$CAND/pack" --n "$N" --mode "$MODE" \
  --name "photo_candidate_$MODE"
log "done: docs/eval/photo_candidate_${MODE}_results.json; the shipped pack's, scored the same way: docs/eval/photo_shipped_${MODE}_results.json (2pass) or evaluate_photo.py --pack models/default"
