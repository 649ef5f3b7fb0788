#!/usr/bin/env bash
# The one command that serves adcanvas on a fresh machine, on http://127.0.0.1:PORT/, with the
# default model. When web-bundle/ was built from these sources (scripts/bundle.sh) it serves that:
# seconds, and nothing to install but Python. Otherwise (changed sources) it installs what is
# missing and builds the web app from source first, as the tests do.
# Usage: scripts/serve.sh [PORT]   (default 8080);  ADCANVAS_BUILD=source always builds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"
PORT="${1:-8080}"
if [[ "${ADCANVAS_BUILD:-}" != source ]] && scripts/bundle.sh fresh; then
  echo "adcanvas: serving the prebuilt web bundle (web-bundle/, built from these sources)"
  scripts/build-web.sh --bundle "$ADCANVAS_ROOT/dist"
else
  echo "adcanvas: the sources differ from web-bundle/'s: building from source (about 15 minutes the first time)"
  scripts/setup.sh
  scripts/build-web.sh "$ADCANVAS_ROOT/dist"
fi
echo "adcanvas: open http://127.0.0.1:$PORT/ in a browser (Ctrl-C stops)"
exec python3 scripts/serve.py --dir "$ADCANVAS_ROOT/dist" --host 127.0.0.1 --port "$PORT"
