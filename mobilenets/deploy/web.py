"""Web pages that classify offline: writer (a folder), int8 quantizer and runner (headless Chromium).

``mobilenets export --format web -o DIR`` writes a folder that any static server can serve:

    model.onnx        the model, written by the ONNX writer (int8: its QDQ quantizer, 7-bit weights)
    model.json        name, precision, input channels, preprocessing (resize, crop, mean/std) and class names
    classify.js       ``loadClassifier()`` / ``classify(image) → top-k``; its preprocessing is a float32 port of
                      :func:`mobilenets.predict.preprocess` (Pillow's resize included), so the page sees the
                      tensor PyTorch sees
    index.html        drop or pick an image, see the top-5 with bars
    ort.wasm.min.mjs, ort-wasm-simd-threaded.{mjs,wasm}   onnxruntime-web's WebAssembly (SIMD) build, copied from
                      the npm package pinned by the repository's package-lock.json: nothing comes from a CDN
    serve.py          a static server that sends COOP/COEP, which browsers need before they allow threads

The runner serves such a folder on 127.0.0.1 and opens it in headless Chromium (Debian's ``chromium``, driven
by Playwright): :func:`load` gives logits of preprocessed batches (what ``export`` verifies against PyTorch),
:func:`check_page` classifies real image files through the page's own decoding and preprocessing, and
:class:`Page` times ``session.run`` inside the page for ``bench``.
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import onnx
from mobilenets.deploy.verify import Verification, compare_outputs
from mobilenets.deps import atomic_write, require
from mobilenets.errors import MobileNetsError

FORMAT = "web"
SUFFIX = ""  # a folder: any name
FOLDER = True
RUNTIME = "onnxruntime-web (WebAssembly SIMD) in Chromium"
PRECISIONS = ("fp32", "int8")
CALIBRATIONS = tuple(getattr(onnx, "CALIBRATIONS", ()))  # the ONNX quantizer's, which writes model.onnx
MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.json"
APP = Path(__file__).with_name("web_app")
APP_FILES = ("index.html", "classify.js", "serve.py")
# The WebAssembly build of onnxruntime-web: the ES module, its Emscripten glue and the SIMD+threads binary.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
REPO = Path(__file__).resolve().parents[2]
INSTALL_NPM = f"run `npm ci` in {REPO} (npm: apt-get install npm)"
INSTALL_CHROMIUM = "install Chromium (apt-get install chromium) or set MOBILENETS_CHROMIUM=/path/to/chrome"
# How long the page may take to load the runtime and the model, and to answer one call (ms).
PAGE_TIMEOUT_MS = 120_000


# ----------------------------------------------------------------------------------------------------
# Writing the folder


def ort_web_dir() -> Path:
    """onnxruntime-web's dist/ folder: $MOBILENETS_ORT_WEB, else node_modules/ of this repository (npm ci)."""
    env = os.environ.get("MOBILENETS_ORT_WEB")
    candidates = [Path(env)] if env else [REPO / "node_modules/onnxruntime-web/dist"]
    for folder in candidates:
        if all((folder / f).is_file() for f in ORT_FILES):
            return folder
    where = env or str(candidates[0])
    raise MobileNetsError(f"the web export needs onnxruntime-web, not found in {where}: {INSTALL_NPM}")


def ort_web_version() -> str:
    package = ort_web_dir().parent / "package.json"
    try:
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def default_config(model: nn.Module, resolution: int | None = None) -> dict:
    """model.json for a model whose classes and preprocessing nobody told us: class N, the datasets' mean/std."""
    from mobilenets.data import FASHION_MNIST_STATS, IMAGENET_STATS

    in_chans = int(getattr(model, "in_chans", 3))
    mean, std = IMAGENET_STATS if in_chans == 3 else FASHION_MNIST_STATS
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    return {
        "name": "model",
        "model": MODEL_FILE,
        "precision": "fp32",
        "in_chans": in_chans,
        "preprocessing": {
            "resolution": int(resolution or model.resolution),
            "crop": "resize_shorter",
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": list(mean),
            "std": list(std),
        },
        "classes": [f"class {i}" for i in range(num_classes)],
    }


def _write_app(folder: Path, model: nn.Module, resolution: int) -> None:
    runtime = ort_web_dir()  # first: a missing runtime fails before any work
    for name in ORT_FILES:
        shutil.copyfile(runtime / name, folder / name)
    for name in APP_FILES:
        shutil.copyfile(APP / name, folder / name)
    config = default_config(model, resolution)
    config["onnxruntime_web"] = ort_web_version()
    write_config(folder, config)


def write(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """The page's folder at ``path``, with an fp32 model.onnx from the ONNX writer."""
    ort_web_dir()
    path.mkdir(parents=True, exist_ok=True)
    onnx.write(model, path / MODEL_FILE, resolution)
    _write_app(path, model, resolution or model.resolution)


def quantize(
    model: nn.Module, path: Path, calib_images: torch.Tensor, resolution: int, weight_bits: int = 7, **options
) -> None:
    """The page's folder with an int8 (QDQ, 7-bit weights by default) model.onnx from the ONNX quantizer.

    ``options`` go to :func:`mobilenets.deploy.onnx.quantize` as they are (its calibration choices are ours).
    """
    ort_web_dir()
    path.mkdir(parents=True, exist_ok=True)
    onnx.quantize(model, path / MODEL_FILE, calib_images, resolution, weight_bits=weight_bits, **options)
    _write_app(path, model, resolution)


def read_config(path: Path) -> dict:
    try:
        return json.loads((Path(path) / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise MobileNetsError(f"{path} is not a web export (no readable {CONFIG_FILE}: {e})") from None


def write_config(path: Path, config: dict) -> None:
    atomic_write(Path(path) / CONFIG_FILE, (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode())


def set_metadata(path: Path, info: dict) -> None:
    """What the page was built for: in model.onnx's metadata and in model.json."""
    onnx.set_metadata(path / MODEL_FILE, info)
    config = read_config(path)
    config["precision"] = info.get("precision", config["precision"])
    config["built_for"] = info
    write_config(path, config)


def metadata(path: Path) -> dict | None:
    return onnx.metadata(Path(path) / MODEL_FILE)


def int8_ranges(path: Path) -> list[dict]:
    return onnx.int8_ranges(Path(path) / MODEL_FILE)


def set_card(path: Path, card, name: str | None = None) -> None:
    """The classes and preprocessing of a :class:`mobilenets.weights.ModelCard` into model.json."""
    config = read_config(path)
    if len(card.class_names) != len(config["classes"]) and config["classes"]:
        raise MobileNetsError(
            f"the card names {len(card.class_names)} classes but the model has {len(config['classes'])} outputs"
        )
    pre = asdict(card.preprocessing)
    config["preprocessing"] = {**pre, "mean": list(pre["mean"]), "std": list(pre["std"])}
    config["classes"] = list(card.class_names)
    config["name"] = name or getattr(card, "name", None) or config["name"]
    write_config(path, config)


def card_for(model: nn.Module, stats=None, *, checkpoint=None, weights=None, pretrained=False, name=None):
    """The card (classes, preprocessing) of the weights a model was built from, or None when there is none.

    A ``mobilenets train`` checkpoint names its dataset's classes and input pipeline; ``--weights`` and
    ``--pretrained`` files carry a card. Random or plain state_dict weights have none: the page then says
    "class N" and uses the datasets' mean/std (or ``stats``).
    """
    from mobilenets.weights import ModelCard, Preprocessing

    if checkpoint is not None:
        from mobilenets.predict import checkpoint_model

        try:
            return checkpoint_model(checkpoint)[1]
        except MobileNetsError:
            pass  # a plain state_dict: no classes recorded
    elif weights or pretrained:
        from mobilenets.weights import load_weights, pretrained_model

        return (pretrained_model(name) if pretrained else load_weights(weights, model_name=name))[1]
    if stats is None:
        return None
    config = default_config(model)
    pre = {**config["preprocessing"], "mean": tuple(stats[0]), "std": tuple(stats[1])}
    return ModelCard(
        arch=name or "model",
        model_kwargs={"num_classes": len(config["classes"])},
        preprocessing=Preprocessing(**pre),
        class_names=config["classes"],
    )


def companions(path: Path) -> list[Path]:
    return []


# ----------------------------------------------------------------------------------------------------
# Serving and opening the page


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
    """A web export served from its folder and open in headless Chromium, its classifier loaded.

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
            self.threads = int(self.page.evaluate("window.mobilenets.classifier.threads"))
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
        atomic_write(path, self.page.screenshot(full_page=True))
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


# ----------------------------------------------------------------------------------------------------
# Checking the whole page: image files through its own decoding and preprocessing


@dataclass
class PageCheck:
    """Image files classified by the page (its decoding, preprocessing and model) against PyTorch's pipeline."""

    num_images: int
    max_input_diff: float  # the page's input tensor against mobilenets.predict.preprocess's
    pipeline_top1: float  # top-1 agreement of the page on the files and on Python's tensors (same session)
    verification: Verification  # the page's logits against the PyTorch model's on Python-preprocessed tensors
    files: list[str]

    @property
    def passed(self) -> bool:
        """The page's pipeline is Python's: the same inputs, hence the same decisions of its session.

        Against PyTorch only fp32 is judged here: int8's accuracy is judged on the 32 images of the main
        verification, and on 8 files one near-tie would decide it.
        """
        same_pipeline = self.max_input_diff <= INPUT_TOLERANCE and self.pipeline_top1 == 1.0
        return same_pipeline and (self.verification.passed or self.verification.judge_clear)

    def summary(self) -> str:
        v = self.verification
        return (
            f"the page on {self.num_images} image files (decoded and preprocessed by classify.js) vs "
            f"mobilenets predict's pipeline: input max |Δ| {self.max_input_diff:.3g}, logits max |Δ| "
            f"{v.max_abs_diff:.3g}, top-1 agreement {100 * v.top1_agreement:.1f}%"
        )


# Another browser's JPEG decoder may differ by a grey level or two (≈ 0.02 after std 0.229); Chromium's gives
# Pillow's pixels, and the float32 ports give the same tensor (max |Δ| 0 in tests/test_web.py).
INPUT_TOLERANCE = 0.05


def verification_files(in_chans: int, folder: str | os.PathLike, count: int = 8) -> list[Path]:
    """Real image files a model of ``in_chans`` channels can take, written into ``folder``.

    3 channels: the bundled photos (JPEG) and scikit-image's/scikit-learn's sample photos (PNG);
    1 channel: Fashion-MNIST test images (PNG, 28×28 gray).
    """
    from PIL import Image

    from mobilenets.deploy.images import _photos, fashion_mnist
    from mobilenets.predict import bundled_images

    folder = Path(folder)
    if in_chans == 3:
        files = list(bundled_images())
        for i, photo in enumerate(_photos()[2:]):
            path = folder / f"photo{i}.png"
            Image.fromarray(photo).save(path)
            files.append(path)
        return files[:count]
    if in_chans == 1:
        images, _ = fashion_mnist("test")
        files = []
        for i in range(count):
            path = folder / f"fashion_mnist_test_{i}.png"
            Image.fromarray(images[i, 0].numpy(), "L").save(path)
            files.append(path)
        return files
    raise MobileNetsError(f"no built-in image files for in_chans={in_chans} (photos have 3 channels, Fashion-MNIST 1)")


def python_inputs(files: list[Path], config: dict) -> torch.Tensor:
    """What `mobilenets predict` feeds the model for ``files`` with this page's preprocessing."""
    from mobilenets.predict import load_image, preprocess
    from mobilenets.weights import Preprocessing

    pre = dict(config["preprocessing"])
    pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
    pre = Preprocessing(**pre)
    x = torch.stack([preprocess(load_image(f), pre) for f in files])
    if config["in_chans"] == 1:  # as predict_images does for gray models
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x


def check_page(
    folder: str | os.PathLike,
    model: nn.Module,
    precision: str = "fp32",
    min_agreement: float | None = None,
    page: Page | None = None,
) -> PageCheck:
    """Classify real image files with the page and with PyTorch (predict's decoding and preprocessing)."""
    folder = Path(folder)
    config = read_config(folder)
    with tempfile.TemporaryDirectory(prefix="mobilenets-web-images-") as tmp:
        files = verification_files(config["in_chans"], tmp)
        reference_inputs = python_inputs(files, config)
        own = page is None
        page = page or Page(folder)
        try:
            results = [page.run_file(f) for f in files]
            on_tensors = page.logits(reference_inputs.numpy())
        finally:
            if own:
                page.close()
    inputs = torch.from_numpy(np.stack([r[0] for r in results])).reshape(reference_inputs.shape)
    logits = np.stack([r[1] for r in results])
    with torch.no_grad():
        reference = model.eval()(reference_inputs)
    verification = compare_outputs(reference, logits, RUNTIME + ", from image files", precision, min_agreement)
    return PageCheck(
        num_images=len(files),
        max_input_diff=float((inputs - reference_inputs).abs().max()),
        pipeline_top1=float((logits.argmax(1) == on_tensors.argmax(1)).mean()),
        verification=verification,
        files=[f.name for f in files],
    )


def verify_page(folder: Path, model: nn.Module, precision: str, min_agreement: float | None) -> str:
    """:func:`check_page` as ``export`` runs it: a one-line summary, or MobileNetsError when the page is wrong."""
    check = check_page(folder, model, precision, min_agreement)
    if not check.passed:
        raise MobileNetsError(f"web {precision} export failed verification, nothing written: {check.summary()}")
    return check.summary()
