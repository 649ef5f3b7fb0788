#!/usr/bin/env bash
# The one command that serves adcanvas on a fresh machine: installs what is missing,
# builds the web app with the default model, and serves it on http://127.0.0.1:PORT/.
# Usage: scripts/serve.sh [PORT]   (default 8080)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
PORT="${1:-8080}"
scripts/setup.sh
scripts/build-web.sh "$ADCANVAS_ROOT/dist"
echo "adcanvas: open http://127.0.0.1:$PORT/ in a browser with WebGPU (Ctrl-C stops)"
exec python3 scripts/serve.py --dir "$ADCANVAS_ROOT/dist" --host 127.0.0.1 --port "$PORT"
