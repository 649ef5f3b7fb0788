#!/usr/bin/env bash
# The one command that runs every test on a fresh machine: installs what is missing,
# runs the native tests (CPU device and lavapipe Vulkan), builds the web app and runs
# the browser end-to-end tests in headless Chromium on SwiftShader.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
start=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - start ))s)"; }

stamp "setup"
scripts/setup.sh
stamp "format"
cargo fmt --check
stamp "native tests"
CUBECL_AUTOTUNE_LEVEL=minimal cargo test --release --locked
stamp "web build"
DIST="$(mktemp -d)/dist"
scripts/build-web.sh "$DIST"
# The committed web bundle that scripts/serve.sh serves must be built from these sources.
scripts/bundle.sh check "$DIST"
stamp "browser tests"
(cd tests/e2e && ADCANVAS_DIST="$DIST" node --test --test-concurrency=1 app.test.mjs)
stamp "all tests passed"
