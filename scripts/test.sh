#!/usr/bin/env bash
# The one command that runs every test on a fresh machine: installs what is missing,
# runs the native tests (CPU device and lavapipe Vulkan), builds the web app and runs
# the browser end-to-end tests in headless Chromium on SwiftShader.
#
# The browser tests run the web app as scripts/serve.sh serves it. When web-bundle/ was built from
# these sources (its SOURCE_HASH matches, scripts/bundle.sh) they run on that bundle and the 25-minute
# cold wasm build is skipped; when the sources changed, the wasm is built here, and the run fails
# right after that build unless the bundle was updated and committed with the change. ADCANVAS_WEB_BUILD=source
# always builds from source and checks the bundle against that build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
start=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - start ))s)"; }

WEB_BUILD="${ADCANVAS_WEB_BUILD:-auto}"
if [[ $WEB_BUILD == auto ]]; then
  if scripts/bundle.sh fresh; then WEB_BUILD=bundle; else WEB_BUILD=source; fi
fi

stamp "setup"
if [[ $WEB_BUILD == bundle ]]; then scripts/setup.sh --no-web-build; else scripts/setup.sh; fi
stamp "format"
cargo fmt --check
stamp "native tests"
CUBECL_AUTOTUNE_LEVEL=minimal cargo test --release --locked --workspace
DIST="$(mktemp -d)/dist"
if [[ $WEB_BUILD == bundle ]]; then
  stamp "web app from the prebuilt bundle (built from these sources)"
  scripts/build-web.sh --bundle "$DIST"
else
  stamp "web build from source"
  scripts/build-web.sh "$DIST"
  # The committed web bundle that scripts/serve.sh serves must be built from these sources.
  scripts/bundle.sh check "$DIST"
fi
stamp "browser tests"
(cd tests/e2e && ADCANVAS_DIST="$DIST" node --test --test-concurrency=1 app.test.mjs)
stamp "all tests passed"
