#!/usr/bin/env bash
# The one command that runs every test on a fresh machine: installs what is missing, builds the
# CLI and the web app, then runs the browser end-to-end tests (headless Chromium on SwiftShader)
# and the native tests (CPU device and lavapipe Vulkan) side by side; the browser tests' report is
# printed after the native tests', and the run fails if either fails.
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
# The browser tests compare the page's ads with the CLI's, so the CLI is built first; then they
# run in the background while the native tests compile and run: alone, the browser tests leave
# 30-45 % of this 2-core machine idle (SwiftShader waits on its own threads), and the native
# tests on lavapipe use about one core (BENCHMARKS.md 2026-12-08).
stamp "the CLI"
cargo build --release --locked --bin adcanvas
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
stamp "browser tests started in the background; their report follows the native tests'"
BROWSER_LOG="$(dirname "$DIST")/browser-tests.log"
(cd tests/e2e && ADCANVAS_DIST="$DIST" exec node --test --test-concurrency=1 app.test.mjs) >"$BROWSER_LOG" 2>&1 &
browser=$!
trap 'kill $browser 2>/dev/null || true' EXIT
stamp "native tests"
native_status=0
CUBECL_AUTOTUNE_LEVEL=minimal cargo test --release --locked --workspace || native_status=$?
stamp "native tests ended (status $native_status); waiting for the browser tests"
browser_status=0
wait $browser || browser_status=$?
trap - EXIT
cat "$BROWSER_LOG"
stamp "browser tests ended (status $browser_status)"
if (( native_status != 0 || browser_status != 0 )); then
  echo "FAILED: native tests status $native_status, browser tests status $browser_status" >&2
  exit 1
fi
stamp "all tests passed"
