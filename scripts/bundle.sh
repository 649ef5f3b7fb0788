#!/usr/bin/env bash
# The prebuilt web bundle in web-bundle/: the wasm module (gzipped, for unpacking with nothing but
# gzip, and Brotli-compressed, what browsers download) and its JS bindings (adcanvas.js
# and the snippets/ it imports: the crate's inline JS) for the
# default build, kept in the repository so that serving the studio needs no Rust toolchain and no
# 40-minute build. SOURCE_HASH names the sources it was built from; scripts/serve.sh serves the
# bundle only when the sources still hash to it, and builds otherwise: a stale bundle is never served.
#
#   scripts/bundle.sh hash          print the sources' hash (src/, crates/, the Cargo.tomls, Cargo.lock, build-web.sh)
#   scripts/bundle.sh fresh         exit 0 when web-bundle/ was built from these sources
#   scripts/bundle.sh update DIST   take DIST/pkg (from scripts/build-web.sh) as the new bundle
#   scripts/bundle.sh check DIST    fail when the bundle is stale; say whether DIST's fresh build of
#                                   the same sources is byte-identical (the build is reproducible)
#   scripts/bundle.sh unpack DIST   lay the bundle out as DIST/pkg, as build-web.sh would
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$ROOT/web-bundle"

source_hash() {
  # Content, not timestamps: the same sources give the same hash on any machine.
  (cd "$ROOT" && { find src crates -name '*.rs' -type f; find crates -name Cargo.toml -type f; echo Cargo.toml; echo Cargo.lock; echo scripts/build-web.sh; } \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
}

fresh() {
  [[ -f "$BUNDLE/SOURCE_HASH" && -f "$BUNDLE/adcanvas_bg.wasm.gz" && -f "$BUNDLE/adcanvas_bg.wasm.br" && -f "$BUNDLE/adcanvas.js" ]] \
    && [[ "$(cat "$BUNDLE/SOURCE_HASH")" == "$(source_hash)" ]] \
    && imports_present
}

# Every module adcanvas.js imports (./snippets/…) is in the bundle.
imports_present() {
  local f
  for f in $(grep -o 'from "\./[^"]*"' "$BUNDLE/adcanvas.js" | sed 's/^from "\.\///; s/"$//'); do
    [[ -f "$BUNDLE/$f" ]] || { echo "bundle: adcanvas.js imports $f, which web-bundle/ lacks" >&2; return 1; }
  done
}

case "${1:-}" in
  hash) source_hash ;;
  fresh) fresh ;;
  update)
    DIST="${2:?usage: scripts/bundle.sh update DIST}"
    if [[ "$(cat "$DIST/pkg/SOURCE_HASH" 2>/dev/null)" != "$(source_hash)" ]]; then
      echo "bundle: $DIST was not built from the sources as they are now (run scripts/build-web.sh DIST again)" >&2
      exit 1
    fi
    mkdir -p "$BUNDLE"
    cp "$DIST/pkg/adcanvas.js" "$BUNDLE/adcanvas.js"
    rm -rf "$BUNDLE/snippets"
    if [[ -d "$DIST/pkg/snippets" ]]; then cp -r "$DIST/pkg/snippets" "$BUNDLE/snippets"; fi
    gzip -9 -n -c "$DIST/pkg/adcanvas_bg.wasm" > "$BUNDLE/adcanvas_bg.wasm.gz"
    # build-web.sh compressed it already (Brotli at quality 11 takes ~50 s on 2 cores).
    if [[ -f "$DIST/pkg/adcanvas_bg.wasm.br" ]]; then
      cp "$DIST/pkg/adcanvas_bg.wasm.br" "$BUNDLE/adcanvas_bg.wasm.br"
    else
      brotli -q 11 -c "$DIST/pkg/adcanvas_bg.wasm" > "$BUNDLE/adcanvas_bg.wasm.br"
    fi
    source_hash > "$BUNDLE/SOURCE_HASH"
    echo "bundle: $(du -h "$BUNDLE/adcanvas_bg.wasm.gz" | cut -f1) gzipped, $(du -h "$BUNDLE/adcanvas_bg.wasm.br" | cut -f1) Brotli wasm for sources $(cat "$BUNDLE/SOURCE_HASH" | cut -c1-12)"
    ;;
  check)
    DIST="${2:?usage: scripts/bundle.sh check DIST}"
    if ! fresh; then
      echo "bundle: web-bundle/ was not built from these sources (run scripts/build-web.sh DIST && scripts/bundle.sh update DIST, and commit it)" >&2
      exit 1
    fi
    # Every module the bindings import must be in the bundle, or the page cannot load it.
    if ! diff -r -q "$DIST/pkg/snippets" "$BUNDLE/snippets" >/dev/null 2>&1 \
      && [[ -d "$DIST/pkg/snippets" || -d "$BUNDLE/snippets" ]]; then
      echo "bundle: web-bundle/snippets/ differs from the build's (run scripts/bundle.sh update DIST, and commit it)" >&2
      exit 1
    fi
    if ! cmp -s <(brotli -d -c "$BUNDLE/adcanvas_bg.wasm.br") <(gzip -d -c "$BUNDLE/adcanvas_bg.wasm.gz"); then
      echo "bundle: web-bundle/'s Brotli and gzip copies are not the same module" >&2
      exit 1
    fi
    if cmp -s <(gzip -9 -n -c "$DIST/pkg/adcanvas_bg.wasm") "$BUNDLE/adcanvas_bg.wasm.gz" \
      && cmp -s "$DIST/pkg/adcanvas.js" "$BUNDLE/adcanvas.js"; then
      echo "bundle: fresh, and this machine's build of the same sources is byte-identical"
    else
      echo "bundle: fresh (same sources), but this machine's build differs in bytes (another toolchain?)"
    fi
    ;;
  unpack)
    DIST="${2:?usage: scripts/bundle.sh unpack DIST}"
    fresh || { echo "bundle: stale, not unpacked" >&2; exit 1; }
    mkdir -p "$DIST/pkg"
    cp "$BUNDLE/adcanvas.js" "$DIST/pkg/adcanvas.js"
    # What the service worker (www/sw.js) keys its cached copy of the module by.
    cp "$BUNDLE/SOURCE_HASH" "$DIST/pkg/SOURCE_HASH"
    if [[ -d "$BUNDLE/snippets" ]]; then cp -r "$BUNDLE/snippets" "$DIST/pkg/snippets"; fi
    cp "$BUNDLE/adcanvas_bg.wasm.gz" "$DIST/pkg/adcanvas_bg.wasm.gz"
    cp "$BUNDLE/adcanvas_bg.wasm.br" "$DIST/pkg/adcanvas_bg.wasm.br"
    gzip -d -c "$BUNDLE/adcanvas_bg.wasm.gz" > "$DIST/pkg/adcanvas_bg.wasm"
    ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
