"""A static server for a page's folder on 127.0.0.1, cross-origin isolated (COOP/COEP) so WebAssembly threads work."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class _Handler(SimpleHTTPRequestHandler):
    # Cross-origin isolation (SharedArrayBuffer, so WebAssembly threads), and the types module scripts need.
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        pass


@contextmanager
def serve(folder: str | os.PathLike, isolated: bool = True) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) in a thread; yields its URL. ``isolated``: send COOP/COEP."""
    handler_class = _Handler if isolated else _PlainHandler
    handler = functools.partial(handler_class, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        # Closed by the interpreter's teardown (a page still open at exit), the serving thread is frozen and
        # shutdown() would wait for it forever: only the socket is closed then.
        if not sys.is_finalizing():
            server.shutdown()
        server.server_close()


class _PlainHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass
