"""Serve this folder cross-origin isolated, so that the page can use several WebAssembly threads.

    python serve.py [PORT]        then open http://localhost:PORT/?threads=2

Any static server works for one thread (`python -m http.server`); threads need SharedArrayBuffer, which
browsers allow only on pages sent with these two headers (other servers: set them the same way).
"""

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def end_headers(self) -> None:
        for key, value in HEADERS.items():
            self.send_header(key, value)
        super().end_headers()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    handler = functools.partial(Handler, directory=str(Path(__file__).parent))
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving {Path(__file__).parent} on http://localhost:{port}/ (cross-origin isolated)", flush=True)
        server.serve_forever()
