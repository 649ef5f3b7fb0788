#!/usr/bin/env bash
# Downloads and unpacks (no install, no root needed beyond apt's own) the Debian packages whose
# pictures training/make_photo_dataset.py uses: ROOT/PACKAGE/usr/share/... for each.
#   training/fetch_photo_data.sh [ROOT]      (default /tmp/photo-data, or $ADCANVAS_PHOTO_DATA)
# Licences and the files used: training/CREDITS.md; the labelled list: training/photo_sources.csv.
set -euo pipefail
ROOT="${1:-${ADCANVAS_PHOTO_DATA:-/tmp/photo-data}}"
PKGS="plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 gimp-data tuxpaint-stamps-default"
DEBS="$ROOT/.debs"
mkdir -p "$DEBS"
cd "$DEBS"
missing=""
for p in $PKGS; do [ -d "$ROOT/$p/usr" ] || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get download $missing || { apt-get update -qq && apt-get download $missing; }
  for p in $missing; do
    dpkg -x "$(ls -t "$p"_*.deb | head -1)" "$ROOT/$p"
  done
fi
echo "unpacked under $ROOT:$(for p in $PKGS; do printf ' %s' "$p"; done)"
