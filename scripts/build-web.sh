#!/usr/bin/env bash
# Builds the web app into dist/: the wasm module (release), its JS bindings, the page,
# and the default model pack. Usage: scripts/build-web.sh [--bundle] [DIST]
# --bundle takes the wasm module and bindings from web-bundle/ (scripts/bundle.sh) instead of
# compiling them; it refuses a bundle that was not built from these sources.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
FROM_BUNDLE=0
if [[ "${1:-}" == "--bundle" ]]; then FROM_BUNDLE=1; shift; fi
DIST="${1:-$ADCANVAS_ROOT/dist}"

if [[ $FROM_BUNDLE == 1 ]]; then
  rm -rf "$DIST"
  scripts/bundle.sh unpack "$DIST"
else
  # The hash of the sources as the build starts: scripts/bundle.sh update takes a build as the
  # bundle only for the sources it was built from.
  SOURCES="$(scripts/bundle.sh hash)"
  # SIMD128 for the CPU path (a browser without usable WebGPU): every browser with WebGPU has it.
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
    cargo build --profile web --lib --target wasm32-unknown-unknown
  rm -rf "$DIST"
  mkdir -p "$DIST/pkg"
  echo "$SOURCES" > "$DIST/pkg/SOURCE_HASH"
  wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir "$DIST/pkg" "$CARGO_TARGET_DIR/wasm32-unknown-unknown/web/adcanvas.wasm"
fi
mkdir -p "$DIST/models"
cp index.html "$DIST/"
cp -r www "$DIST/www"
# The service worker (offline and second visits) must sit at the site's root to serve the page.
cp www/sw.js "$DIST/sw.js"
cp -r models/default "$DIST/models/default"
# Gzipped copies that scripts/serve.py sends to browsers accepting gzip (static hosts compress
# on their own). Only what compresses: the wasm module (about 5×), JS and JSON; the quantised
# weights shrink by 4 % and are sent as they are.
find "$DIST" -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.json' \) -size +16k -exec gzip -9 -k -n -f {} \;
# And Brotli copies, which every browser with WebGPU accepts and scripts/serve.py prefers: the wasm
# module 4.6 → 2.8 MB on the wire (quality 11, ~50 s on 2 cores: the bundle brings its module's own),
# and the model's weights too, whose q4/q8 codes are far from uniform (21.8 → 20.0 MB; quality 9,
# seconds, within 1 % of 11). Without the brotli tool (scripts/setup.sh installs it) only gzip is sent.
if command -v brotli >/dev/null; then
  find "$DIST" -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.json' \) -size +16k \
    -exec sh -c '[ -f "$1.br" ] || brotli -q 11 -k -f "$1"' _ {} \;
  find "$DIST" -type f -name '*.safetensors' -exec brotli -q 9 -k -f {} \;
else
  echo "build-web: no brotli tool; sending gzip only (scripts/setup.sh installs it)" >&2
fi
echo "build-web: $DIST ($(du -sh "$DIST/pkg/adcanvas_bg.wasm" | cut -f1) wasm, $(du -sh "$DIST/pkg/adcanvas_bg.wasm.gz" | cut -f1) gzipped$([ -f "$DIST/pkg/adcanvas_bg.wasm.br" ] && echo ", $(du -sh "$DIST/pkg/adcanvas_bg.wasm.br" | cut -f1) Brotli"))"
