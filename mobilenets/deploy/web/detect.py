"""A detector's page: ``mobilenets export --checkpoint DET.pt --format web`` writes a folder that draws the detector's
boxes on a dropped photo, offline, and this module runs it in headless Chromium.

The folder, beside the classifier's (:mod:`mobilenets.deploy.web.app`):

    model.onnx        the ONNX detector file (:func:`mobilenets.deploy.detection.write_onnx`, fp32 or int8): box
                      decoding and NonMaxSuppression inside, boxes/labels/scores in input pixels out
    model.json        task "detection", the input size, the preprocessing (the runner's: the whole image resized
                      bilinearly to W×H, no letterbox, [0, 1] floats), class names, thresholds, where NMS runs
    detect.js         ``loadDetector()`` / ``detect(image) → [{box, label, name, score}]`` with boxes in the image's
                      pixels; its resize is a float32 port of PyTorch's, its decoding classify.js's (imported)
    index.html        drop or pick a photo: its labelled boxes on a canvas, and the list of detections
    classify.js, serve.py and onnxruntime-web's WebAssembly, as for a classifier

``export`` verifies it twice, and writes nothing when either fails: the page's onnxruntime-web session on the
runner's tensors against PyTorch (:func:`runner`, through :func:`mobilenets.deploy.detection.verify_detector_file`),
and the whole page (its own decoding, resize and scaling back) on the photos and 20 test images as PNG files
against native ONNX Runtime on the same model.onnx; on the rest of the test images too when those hold fewer than
10 detections to compare (:func:`verify_detector_page`).
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import detection as det
from mobilenets.deploy.web.app import (
    MODEL_FILE,
    PAGE_TIMEOUT_MS,
    RUNTIME,
    copy_app,
    ort_web_dir,
    ort_web_version,
    write_config,
)
from mobilenets.deploy.web.browser import Page, _Browser
from mobilenets.errors import MobileNetsError

# web_app/ name → name in the folder: the detector's page is the folder's index.html; it imports classify.js's decoding.
APP_FILES = {"detect.html": "index.html", **{name: name for name in ("detect.js", "classify.js", "serve.py")}}
# The page shows detections scoring at least this by default (`predict`'s default, and the floor export judges at).
SHOW_SCORE = det.SCORE_FLOOR
# The page's input tensor against the runner's (PyTorch's F.interpolate of the same pixels): the float32 port computes
# aten's weights and sums, but aten's vectorized kernels round in their own order (measured max |Δ| 1.1e-6 on the
# scikit-image photos, ~10 float32 ulps of values in [0, 1]; 39% of the values differ at all), so not bit for bit.
INPUT_TOLERANCE = 1e-5
# The page's check on image files goes on to the rest of the test images when it judges fewer detections than this.
PAGE_MIN_JUDGED = 10


def detector_config(model: nn.Module, precision: str) -> dict:
    """model.json of a detector's page (the classes are set from the file's card by ``set_metadata``)."""
    h, w = model.resolution
    return {
        "task": "detection",
        "name": model.config.get("name") or "detector",
        "model": MODEL_FILE,
        "precision": precision,
        "input": [1, 3, h, w],
        "preprocessing": {
            "resize": "bilinear",
            "align_corners": False,
            "antialias": False,
            "letterbox": False,
            "range": [0, 1],
            "description": det.PREPROCESSING,
        },
        "classes": [f"class {k}" for k in range(1, int(model.num_classes))],
        "thresholds": {
            "show": SHOW_SCORE,
            "score": float(model.score_thresh),
            "iou": float(model.nms_thresh),
            "detections_per_img": int(model.detections_per_img),
        },
        "nms": "in model.onnx (ONNX NonMaxSuppression, run by onnxruntime-web)",
        "onnxruntime_web": ort_web_version(),
    }


def write(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    weight_bits: int = 7,
) -> dict:
    """The detector's page folder at ``path``: model.onnx from the ONNX detector writer (NMS inside), model.json and
    the page. Returns what an int8 file keeps float, as :func:`mobilenets.deploy.detection.write_onnx` does."""
    ort_web_dir()  # a missing runtime fails before any work
    path.mkdir(parents=True, exist_ok=True)
    kept = det.write_onnx(model, path / MODEL_FILE, precision, calib_images, weight_bits)
    copy_app(path, APP_FILES)
    write_config(path, detector_config(model, precision))
    return kept


# ----------------------------------------------------------------------------------------------------
# The page in Chromium


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class DetectorPage(Page):
    """A detector's page open in headless Chromium (see :class:`mobilenets.deploy.web.Page`)."""

    def raw(self, x: np.ndarray) -> list[np.ndarray]:
        """model.onnx's outputs for one input (1, 3, H, W) float32 in [0, 1], run by the page's onnxruntime-web
        session: boxes (K, 4) in input pixels, labels (K,) int64, scores (K,) float32."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = self.page.evaluate(
            """async (b64) => {
                const text = atob(b64);
                const bytes = new Uint8Array(text.length);  // a plain loop: Uint8Array.from(text, fn) is ~3× slower
                for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
                const out = await window.mobilenets.detector.raw(new Float32Array(bytes.buffer));
                return [Array.from(out.boxes), out.labels, out.scores];
            }""",
            _b64(x.tobytes()),
        )
        return _outputs(*out)

    def run_file(self, path: str | os.PathLike) -> dict:
        """An image file through the page's own pipeline (detect.js: decoding, resize, model, boxes scaled back):
        its input tensor (3, H, W) and its detections in the image's pixels (boxes, labels, scores, best first)."""
        out = self.page.evaluate(
            """async (b64) => {
                const text = atob(b64);
                const bytes = new Uint8Array(text.length);  // a plain loop: Uint8Array.from(text, fn) is ~3× slower
                for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
                const r = await window.mobilenets.detector.run(new Blob([bytes]));
                const boxes = r.detections.flatMap((d) => d.box);
                // The input as base64 bytes: Playwright serializes a long array number by number, ~1 s for 77k.
                const raw = new Uint8Array(r.input.buffer);
                let chars = "";
                for (let i = 0; i < raw.length; i += 0x8000) {
                    chars += String.fromCharCode(...raw.subarray(i, i + 0x8000));
                }
                return [btoa(chars), boxes, r.labels, r.scores, r.height, r.width];
            }""",
            _b64(Path(path).read_bytes()),
        )
        boxes, labels, scores = _outputs(*out[1:4])
        _, _, h, w = self.page.evaluate("window.mobilenets.detector.config.input")
        return {
            "input": torch.from_numpy(
                np.frombuffer(base64.b64decode(out[0]), dtype=np.float32).reshape(3, h, w).copy()
            ),
            "detections": dict(zip(det.FINAL_OUTPUTS, map(torch.from_numpy, (boxes, labels, scores)))),
            "size": (int(out[4]), int(out[5])),
        }

    def pick(self, path: str | os.PathLike, min_score: float | None = None) -> dict:
        """Pick a photo in the page as a person would (its file input); returns what the page drew: the canvas's
        scale, and per shown detection its box in image and canvas pixels, label, score and colour (best first)."""
        if min_score is not None:
            self.page.fill("#min", str(min_score))
        self.page.evaluate("window.mobilenets.last = null")
        self.page.set_input_files("#file", str(path))
        self.page.wait_for_function("window.mobilenets.last !== null", timeout=PAGE_TIMEOUT_MS)
        return self.page.evaluate("window.mobilenets.last")

    def canvas_origin(self) -> tuple[int, int]:
        """(x, y) of the canvas's top-left pixel in a full-page screenshot."""
        box = self.page.locator("#canvas").bounding_box()
        return round(box["x"]), round(box["y"])


def _outputs(boxes, labels, scores) -> list[np.ndarray]:
    return [
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
        np.asarray(scores, dtype=np.float32),
    ]


def runner(path: Path, threads: int | None = None) -> det.Runner:
    """model.onnx run by the page in headless Chromium: the detection runner of the ``web`` format (what
    :func:`mobilenets.deploy.detection.file_detector` calls with each resized image). The page stays open while
    the function is referenced (``.close()`` closes it sooner)."""
    page = DetectorPage(path, threads=threads or 1)

    class Runner:
        def __call__(self, x: np.ndarray) -> list[np.ndarray]:
            return page.raw(x)

        close = page.close

        def __del__(self) -> None:
            # As the classifier's runner: a finalizer may run inside another Playwright call, which must not re-enter.
            _Browser.pending_close.append(page)

    run = Runner()
    run.page = page
    return run


# ----------------------------------------------------------------------------------------------------
# The whole page against native ONNX Runtime


@dataclass
class PageDetectionCheck:
    """Photos as PNG files through the page's own pipeline against native ONNX Runtime on the same model.onnx."""

    num_images: int
    max_input_diff: float  # the page's input tensor against the runner's resize (PyTorch's) of the same pixels
    verification: det.DetectionMatch  # the page's detections against native ONNX Runtime's (the export's rule)

    @property
    def passed(self) -> bool:
        return self.max_input_diff <= INPUT_TOLERANCE and self.verification.passed

    def summary(self) -> str:
        v = self.verification
        return (
            f"the page on {self.num_images} image files (decoded, resized and scaled back by detect.js) vs native "
            f"ONNX Runtime on the same model.onnx: input max |Δ| {self.max_input_diff:.3g} (need ≤ "
            f"{INPUT_TOLERANCE:g}); {v.summary().split(': ', 1)[1]}"
        )


def image_files(images: Sequence[torch.Tensor], folder: str | os.PathLike) -> tuple[list[Path], list[torch.Tensor]]:
    """``images`` (3, h, w) in [0, 1] as PNG files in ``folder`` (lossless: 8 bits a channel), and the images the
    files hold, as floats in [0, 1] (the inputs rounded to 1/255)."""
    from PIL import Image

    files, held = [], []
    for i, image in enumerate(images):
        pixels = image.mul(255).round().clamp(0, 255).to(torch.uint8)
        files.append(Path(folder) / f"image{i}.png")
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(files[-1])
        held.append(pixels.float().div(255))
    return files, held


class _PageDetections:
    """The page's detections on image files (PNG, its own decoding, resize and scaling back) and native ONNX Runtime's
    on the same pixels and model.onnx (the Python runner: PyTorch's resize, ONNX Runtime, boxes scaled back),
    gathered one image at a time, so that more images can be added and the whole judged once."""

    def __init__(self, folder: Path, page: DetectorPage):
        info = det.file_info(folder, "web")
        self.page, self.resolution = page, info["input"][2:]
        self.native = det.file_detector(folder / MODEL_FILE, "onnx", info=info)
        self.diff, self.reference, self.outputs = 0.0, [], []

    def add(self, images: Iterable[torch.Tensor]) -> None:
        with tempfile.TemporaryDirectory(prefix="mobilenets-web-detect-") as tmp:
            for image in images:
                [file], [held] = image_files([image], tmp)
                result = self.page.run_file(file)
                diff = float((result["input"] - det.resize_for(self.resolution, held)[0]).abs().max())
                self.diff = max(self.diff, diff)
                self.outputs.append(result["detections"])
                self.reference.append(self.native(held))

    def check(self, precision: str) -> PageDetectionCheck:
        verification = det.match_detections(self.reference, self.outputs, f"{RUNTIME}, from image files", precision)
        return PageDetectionCheck(len(self.outputs), self.diff, verification)


def check_detector_page(
    folder: str | os.PathLike,
    images: Iterable[torch.Tensor],
    precision: str = "fp32",
    page: DetectorPage | None = None,
) -> PageDetectionCheck:
    """Detect on ``images`` with the page (as PNG files, its own decoding, resize and scaling back) and with native
    ONNX Runtime on the same model.onnx (the Python runner: PyTorch's resize, ONNX Runtime, boxes scaled back).
    One image at a time: ``images`` may be a generator over a whole test set."""
    own = page is None
    page = page or DetectorPage(folder)
    try:
        found = _PageDetections(Path(folder), page)
        found.add(images)
    finally:
        if own:
            page.close()
    return found.check(precision)


def verify_detector_page(
    folder: Path,
    images: Sequence[torch.Tensor],
    precision: str,
    more_images: Iterable[torch.Tensor] | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """:func:`check_detector_page` as ``export`` runs it: a one-line summary, or MobileNetsError when it fails.

    When fewer than :data:`PAGE_MIN_JUDGED` of the detector's detections can be compared on ``images`` (a weak
    detector scores its few confident detections elsewhere: the README's V3-Large had 1 detection ≥ 0.5 on the photos
    and 20 test images, a check that one miss fails and nothing else can), the page is judged on ``more_images``
    too (the rest of the test images, where the file's own check found its detections; ~2.5 min more for an SSDLite
    V3-Large on 480 images), and refused only if it fails there or nothing is found anywhere."""
    page = DetectorPage(folder)
    try:
        found = _PageDetections(Path(folder), page)
        found.add(images)
        check = found.check(precision)
        if check.verification.reference < PAGE_MIN_JUDGED and more_images is not None:
            if progress:
                progress(
                    f"{check.verification.reference} detection(s) to compare on those {check.num_images} image files "
                    f"(want {PAGE_MIN_JUDGED}): the rest of the test images too"
                )
            found.add(more_images)  # the images above are not run again
            check = found.check(precision)
    finally:
        page.close()
    if not check.passed:
        raise MobileNetsError(f"web {precision} export failed verification, nothing written: {check.summary()}")
    return check.summary()
