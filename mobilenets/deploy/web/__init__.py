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

One file per part: app (the folder: writer, quantizer, model.json; the page's assets are in
``mobilenets/deploy/web_app/``), server (the static server), browser (Chromium, :class:`Page`, the runner) and
verify (image files through the page against PyTorch's pipeline); detect (a detector's page: writer, runner and
its check against native ONNX Runtime). This package is the web runtime module of
:mod:`mobilenets.deploy`: it has the functions every runtime module has.
"""

from mobilenets.deploy.web.app import (
    APP,
    APP_FILES,
    CALIBRATIONS,
    CONFIG_FILE,
    FOLDER,
    FORMAT,
    INSTALL_CHROMIUM,
    INSTALL_NPM,
    MODEL_FILE,
    ORT_FILES,
    PAGE_TIMEOUT_MS,
    PRECISIONS,
    REPO,
    RUNTIME,
    SUFFIX,
    card_for,
    companions,
    default_config,
    int8_ranges,
    metadata,
    ort_web_dir,
    ort_web_version,
    quantize,
    read_config,
    set_card,
    set_metadata,
    write,
    write_config,
)
from mobilenets.deploy.web.browser import Page, chromium_path, load, run
from mobilenets.deploy.web.detect import DetectorPage, PageDetectionCheck, check_detector_page, verify_detector_page
from mobilenets.deploy.web.server import serve
from mobilenets.deploy.web.verify import (
    INPUT_TOLERANCE,
    PageCheck,
    check_page,
    python_inputs,
    verification_files,
    verify_page,
)

__all__ = [
    "APP",
    "APP_FILES",
    "CALIBRATIONS",
    "CONFIG_FILE",
    "FOLDER",
    "FORMAT",
    "INPUT_TOLERANCE",
    "INSTALL_CHROMIUM",
    "INSTALL_NPM",
    "MODEL_FILE",
    "ORT_FILES",
    "PAGE_TIMEOUT_MS",
    "PRECISIONS",
    "REPO",
    "RUNTIME",
    "SUFFIX",
    "DetectorPage",
    "Page",
    "PageCheck",
    "PageDetectionCheck",
    "card_for",
    "check_detector_page",
    "check_page",
    "chromium_path",
    "companions",
    "default_config",
    "int8_ranges",
    "load",
    "metadata",
    "ort_web_dir",
    "ort_web_version",
    "python_inputs",
    "quantize",
    "read_config",
    "run",
    "serve",
    "set_card",
    "set_metadata",
    "verification_files",
    "verify_detector_page",
    "verify_page",
    "write",
    "write_config",
]
