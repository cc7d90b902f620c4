"""The page open in headless Chromium (Debian's ``chromium``, driven by Playwright): logits of preprocessed
batches (:func:`load`, what ``export`` verifies against PyTorch), image files through the page's own pipeline, and
``session.run`` timed inside the page for ``bench`` (:class:`Page`)."""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mobilenets.deploy.web.app import INSTALL_CHROMIUM, PAGE_TIMEOUT_MS, read_config
from mobilenets.deploy.web.server import serve
from mobilenets.deps import require
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_bytes


def chromium_path() -> str:
    """The Chromium to drive: $MOBILENETS_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("MOBILENETS_CHROMIUM")
    if env:
        if not Path(env).is_file():
            raise MobileNetsError(f"MOBILENETS_CHROMIUM={env} is not a file: {INSTALL_CHROMIUM}")
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise MobileNetsError(f"running web exports needs a Chromium browser, none found: {INSTALL_CHROMIUM}")


class _Browser:
    """One headless Chromium for the whole process (started on first use, closed at exit)."""

    instance: _Browser | None = None
    pending_close: list[Page] = []  # pages whose runners were dropped: closed at the next Page's start

    def __init__(self) -> None:
        sync_api = require("playwright.sync_api", "running web exports in Chromium")
        executable = chromium_path()
        self.playwright = sync_api.sync_playwright().start()
        # Root has no user-namespace sandbox; containers often have a tiny /dev/shm.
        args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
        try:
            self.browser = self.playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        except Exception as e:  # noqa: BLE001 - any launch failure is "this Chromium does not start"
            self.playwright.stop()
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MobileNetsError(f"cannot start {executable} headless ({first}): {INSTALL_CHROMIUM}") from None
        atexit.register(self.close)

    @classmethod
    def get(cls) -> _Browser:
        if cls.instance is None:
            cls.instance = cls()
        return cls.instance

    def close(self) -> None:
        if _Browser.instance is self:
            _Browser.instance = None
        try:
            self.browser.close()
            self.playwright.stop()
        except Exception:  # noqa: BLE001 - closing at exit: nothing left to report to
            pass


# Pages not closed yet; the ones still open at exit are closed by an atexit hook, while their server threads
# still run (closing them in the interpreter's teardown instead hung the process: ``serve``).
_OPEN_PAGES: weakref.WeakSet[Page] = weakref.WeakSet()


@atexit.register
def _close_open_pages() -> None:
    for page in list(_OPEN_PAGES):
        page.close()


class Page:
    """A web export served from its folder and open in headless Chromium, its model loaded (a classifier's page;
    :class:`mobilenets.deploy.web.detect.DetectorPage` adds a detector's calls).

    Args:
        threads: WebAssembly threads (the page is served cross-origin isolated, so more than one works).
        url: open the folder as some other server serves it (e.g. ``python -m http.server``) instead.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        threads: int = 1,
        url: str | None = None,
        width: int = 900,
        height: int = 480,
    ) -> None:
        self.folder = Path(folder)
        read_config(self.folder)
        while _Browser.pending_close:
            _Browser.pending_close.pop().close()
        self._server = None if url else serve(self.folder)
        self.url = url or self._server.__enter__()
        _OPEN_PAGES.add(self)
        try:
            browser = _Browser.get()
            self.page = browser.browser.new_page(viewport={"width": width, "height": height})
            self.errors: list[str] = []
            self.page.on("pageerror", lambda e: self.errors.append(str(e)))
            self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
            self.page.goto(f"{self.url}index.html?threads={threads}")
            try:
                self.page.wait_for_function("document.body.dataset.ready === '1'", timeout=PAGE_TIMEOUT_MS)
            except Exception as e:  # noqa: BLE001 - report what the page said, not Playwright's stack
                said = "; ".join(self.errors) or str(e).strip().splitlines()[0]
                raise MobileNetsError(f"the page in {self.folder} did not load its model: {said}") from None
            self.threads = int(self.page.evaluate("window.mobilenets.threads"))
        except BaseException:
            self.close()
            raise

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of a float32 NCHW batch, run by the page's onnxruntime-web session."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = self.page.evaluate(
            """async ([b64, batch]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const logits = await window.mobilenets.classifier.logits(new Float32Array(bytes.buffer), batch);
                return Array.from(logits);
            }""",
            [base64.b64encode(x.tobytes()).decode(), int(x.shape[0])],
        )
        return np.asarray(out, dtype=np.float32).reshape(x.shape[0], -1)

    def run_file(self, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
        """(input tensor, logits) of an image file decoded and preprocessed by the page's classify.js."""
        data = base64.b64encode(Path(path).read_bytes()).decode()
        out = self.page.evaluate(
            """async (b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const { input, logits } = await window.mobilenets.classifier.run(new Blob([bytes]));
                return [Array.from(input), Array.from(logits)];
            }""",
            data,
        )
        return np.asarray(out[0], dtype=np.float32), np.asarray(out[1], dtype=np.float32)

    def pick(self, path: str | os.PathLike) -> dict:
        """Pick a file in the page as a person would (its file input); returns what the page shows."""
        self.page.evaluate("window.mobilenets.last = null")
        self.page.set_input_files("#file", str(path))
        self.page.wait_for_function("window.mobilenets.last !== null", timeout=PAGE_TIMEOUT_MS)
        return self.page.evaluate("({file: window.mobilenets.last.file, top: window.mobilenets.last.top})")

    def text(self) -> str:
        return self.page.inner_text("body")

    def screenshot(self, path: str | os.PathLike) -> Path:
        """A PNG of the page, written atomically."""
        path = Path(path)
        atomic_write_bytes(path, self.page.screenshot(full_page=True))
        return path

    def time_runs(self, batch_size: int, runs: int, warmup: int) -> list[float]:
        """Seconds of each of ``runs`` ``session.run`` calls timed inside the page (after ``warmup``)."""
        ms = self.page.evaluate("([b, r, w]) => window.mobilenets.time(b, r, w)", [batch_size, runs, warmup])
        return [m / 1e3 for m in ms]

    def close(self) -> None:
        page = getattr(self, "page", None)
        if page is not None:
            try:
                page.close()
            except Exception:  # noqa: BLE001 - the browser may be gone already
                pass
            self.page = None
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(
    path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits, computed by the page in headless Chromium.

    The page stays open while the function is referenced (call ``.close()`` to close it sooner).
    """
    page = Page(path, threads=threads or 1)

    class Runner:
        def __call__(self, x: np.ndarray) -> np.ndarray:
            # A few images per call: the batch travels base64-encoded through the DevTools protocol.
            return np.concatenate([page.logits(chunk) for chunk in np.array_split(x, max(1, len(x) // 4))])

        close = page.close

        def time_runs(self, runs: int, warmup: int) -> list[float]:
            """Seconds per call of ``batch_size`` images, timed in the page (what ``bench`` reports)."""
            return page.time_runs(batch_size or 1, runs, warmup)

        def __del__(self) -> None:
            # Not page.close() here: a finalizer may run inside another Playwright call, which must not re-enter.
            _Browser.pending_close.append(page)

    runner = Runner()
    runner.page = page
    return runner


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    runner = load(path, precision, threads)
    try:
        return runner(images.numpy())
    finally:
        runner.close()
