#!/usr/bin/env bash
# Installs what adcanvas needs that a fresh Debian machine with Rust lacks; skips what is present.
#   Debian: chromium + chromedriver (browser tests), Mesa lavapipe (native WebGPU on the CPU), brotli
#   rustup: the wasm32 target and rustfmt;  cargo: wasm-bindgen-cli (same version as the crate);  npm: test deps
# `scripts/setup.sh --no-web-build` leaves out the wasm32 target and wasm-bindgen-cli (about 10 minutes
# cold), for runs that take the wasm module from the prebuilt web bundle.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
ldconfig -p | grep -q libvulkan.so.1 || need_apt+=(libvulkan1)
# The web build's Brotli copies (scripts/build-web.sh) and the bundle's check.
command -v brotli >/dev/null || need_apt+=(brotli)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo fmt --version >/dev/null 2>&1; then
  echo "setup: rustup component add rustfmt"
  rustup component add rustfmt
fi
WEB_BUILD=1
[[ "${1:-}" == --no-web-build ]] && WEB_BUILD=0
if [[ $WEB_BUILD == 1 ]] && ! rustup target list --installed | grep -q wasm32-unknown-unknown; then
  echo "setup: rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if [[ $WEB_BUILD == 1 ]] && [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  echo "setup: cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 10 minutes on 2 cores)"
  CARGO_TARGET_DIR="$ADCANVAS_TOOLS/build" cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$ADCANVAS_TOOLS" --quiet
fi

if [ ! -d tests/e2e/node_modules ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules ]; then
  echo "setup: npm ci (playwright-core, pngjs)"
  (cd tests/e2e && npm ci --silent --no-audit --no-fund)
fi
echo "setup: done"
