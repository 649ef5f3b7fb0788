#!/usr/bin/env bash
# Builds the web app into dist/: the wasm module (release), its JS bindings, the page,
# and the default model pack. Usage: scripts/build-web.sh [DIST]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
DIST="${1:-$ADCANVAS_ROOT/dist}"

cargo build --profile web --lib --target wasm32-unknown-unknown
rm -rf "$DIST"
mkdir -p "$DIST/pkg" "$DIST/models"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$DIST/pkg" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/adcanvas.wasm"
cp index.html "$DIST/"
cp -r www "$DIST/www"
cp -r models/default "$DIST/models/default"
echo "build-web: $DIST ($(du -sh "$DIST/pkg/adcanvas_bg.wasm" | cut -f1) wasm)"
