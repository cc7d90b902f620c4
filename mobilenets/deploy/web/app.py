"""The page's folder: model.onnx, model.json, classify.js, index.html, serve.py and onnxruntime-web's WebAssembly.

``mobilenets export --format web -o DIR`` writes it (:func:`write`, :func:`quantize`); ``model.json`` holds what the
page needs to know (name, precision, input channels, preprocessing, class names).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from mobilenets.data import FASHION_MNIST_STATS, IMAGENET_STATS
from mobilenets.deploy import onnx
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_json

FORMAT = "web"
SUFFIX = ""  # a folder: any name
FOLDER = True
RUNTIME = "onnxruntime-web (WebAssembly SIMD) in Chromium"
PRECISIONS = ("fp32", "int8")
CALIBRATIONS = tuple(getattr(onnx, "CALIBRATIONS", ()))  # the ONNX quantizer's, which writes model.onnx
MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.json"
# The page's assets, beside this package: mobilenets/deploy/web_app/.
APP = Path(__file__).resolve().parents[1] / "web_app"
APP_FILES = ("index.html", "classify.js", "serve.py")
# The WebAssembly build of onnxruntime-web: the ES module, its Emscripten glue and the SIMD+threads binary.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
REPO = Path(__file__).resolve().parents[3]
INSTALL_NPM = f"run `npm ci` in {REPO} (npm: apt-get install npm)"
INSTALL_CHROMIUM = "install Chromium (apt-get install chromium) or set MOBILENETS_CHROMIUM=/path/to/chrome"
# How long the page may take to load the runtime and the model, and to answer one call (ms).
PAGE_TIMEOUT_MS = 120_000


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


def copy_app(folder: Path, files: dict[str, str]) -> None:
    """onnxruntime-web's WebAssembly and the page's assets (``files``: name in web_app/ → name in the folder)
    into ``folder``: what every page needs beside its model.onnx and model.json."""
    runtime = ort_web_dir()  # first: a missing runtime fails before any work
    for name in ORT_FILES:
        shutil.copyfile(runtime / name, folder / name)
    for source, name in files.items():
        shutil.copyfile(APP / source, folder / name)


def _write_app(folder: Path, model: nn.Module, resolution: int) -> None:
    copy_app(folder, {name: name for name in APP_FILES})
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
    atomic_write_json(Path(path) / CONFIG_FILE, config)


def set_metadata(path: Path, info: dict) -> None:
    """What the page was built for: in model.onnx's metadata and in model.json."""
    onnx.set_metadata(path / MODEL_FILE, info)
    config = read_config(path)
    config["precision"] = info.get("precision", config["precision"])
    if info.get("task") == "detection" and info.get("classes"):  # a detector's names, label k is classes[k - 1]
        config["classes"] = list(info["classes"])
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
