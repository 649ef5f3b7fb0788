#!/usr/bin/env python3
"""Static file server for the adcanvas web app (Python stdlib only).

Serves a directory (default: dist) with MIME types that browsers need for
WebAssembly and ES modules, and with `Cache-Control: no-cache` so a rebuilt
wasm module is always picked up. Where build-web.sh left a compressed copy beside a file, a
browser that accepts its encoding gets that: `FILE.br` (Brotli) first, else `FILE.gz` (gzip);
the wasm module is 21.6 MB, 4.6 MB gzipped, 2.8 MB in Brotli. Every file may be read from
any origin (CORS), so other sites can embed the widget (docs/WIDGET.md).

    python3 scripts/serve.py                     # http://127.0.0.1:8080/ serving dist/
    python3 scripts/serve.py --dir dist --port 0 # pick a free port

The studio's own pages (the page and the widget's iframe page, when the directory holds the built
app) are sent with a Content-Security-Policy that lets them fetch nothing but this server's files:
the photo cannot leave the browser even if a script tried (README, "Privacy").

The first line on stdout is always `serving http://HOST:PORT/` (flushed), so
test harnesses can start it with --port 0 and read the chosen URL.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".safetensors": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


# What the studio's pages may do: scripts and connections only to this origin (the model, the
# module), wasm compilation, workers from this origin or the blob: URL studio.js makes, pictures
# from blob:/data: URLs (the photo, the ads), inline <style> (the mask editor's and the widget's).
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "worker-src 'self' blob:",
    "connect-src 'self' blob:",
    "img-src 'self' blob: data:",
    "style-src 'self' 'unsafe-inline'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'none'",
])
APP_PAGES = {"/", "/index.html", "/www/frame.html"}



def accepted_encodings(header: str) -> set[str]:
    """The content codings an `Accept-Encoding` header allows (`q=0` refuses one)."""
    accepted = set()
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = params.strip()
        if q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if name.strip():
            accepted.add(name.strip().lower())
    return accepted

class Handler(SimpleHTTPRequestHandler):
    # Copy so the class-level mapping of the stdlib handler is not mutated.
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    protocol_version = "HTTP/1.1"  # keep-alive: the page fetches many files
    verbose = False

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        # The widget (www/widget.js) runs on other sites' pages and fetches its module, wasm and
        # model pack from here: public files, readable from any origin, also by pages that
        # require CORP (cross-origin isolated ones).
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
        if self.path.split("?")[0] in APP_PAGES and os.path.isfile(os.path.join(self.directory, "pkg", "adcanvas.js")):
            self.send_header("Content-Security-Policy", CSP)
        super().end_headers()

    def send_head(self):
        """The precompressed `FILE.br` or `FILE.gz` for a client that accepts that encoding,
        else the file itself."""
        path = self.translate_path(self.path)
        accepted = accepted_encodings(self.headers.get("Accept-Encoding", ""))
        for encoding, suffix in (("br", ".br"), ("gzip", ".gz")):
            if encoding in accepted and os.path.isfile(path) and os.path.isfile(path + suffix):
                break
        else:
            return super().send_head()
        try:
            f = open(path + suffix, "rb")
        except OSError:
            return super().send_head()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Encoding", encoding)
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        self.end_headers()
        return f

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        if self.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    def log_error(self, format: str, *args) -> None:  # noqa: A002
        # Errors (404s etc.) are worth seeing even in quiet mode.
        sys.stderr.write("serve.py: %s\n" % (format % args))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        # A browser that aborts a download (navigation, cancelled fetch) is not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="dist", help="directory to serve (default: dist)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 = pick a free one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    root = os.path.abspath(args.dir)
    if not os.path.isdir(root):
        print(f"serve.py: directory not found: {root} (build the web app first: scripts/build-web.sh)",
              file=sys.stderr)
        return 2

    Handler.verbose = args.verbose
    handler = functools.partial(Handler, directory=root)
    with Server((args.host, args.port), handler) as httpd:
        host, port = httpd.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"serving http://{shown}:{port}/", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
