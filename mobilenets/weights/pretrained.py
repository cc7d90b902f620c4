"""Google's ImageNet MobileNetV1 1.0/224, offline: the PyPI package ``nudity==0.2.3`` (MIT) ships TF-slim's
complete, untouched classifier graph as ``retrained_graph.pb`` (under a 2-class retrained head we ignore).
:func:`pretrained_model` converts it once and caches the result under the user's cache dir."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models import base_name, model_defaults
from mobilenets.weights.cards import ModelCard, read_safetensors, sha256_file
from mobilenets.weights.load import import_weights, load_weights

PRETRAINED_PACKAGE = "nudity==0.2.3"
PRETRAINED_GRAPH = ("nudity", "files/retrained_graph.pb")
PRETRAINED_CACHE_NAME = "mobilenet_v1_1.0_224_imagenet_tf.safetensors"
GET_PRETRAINED = (
    f"install Google's MobileNetV1 ImageNet graph with `pip install --no-deps {PRETRAINED_PACKAGE}` "
    "(`make test`/`make demo` do it), or pass --weights FILE (.pb, .pth or .safetensors)"
)


def find_pretrained_graph() -> Path | None:
    """Path of the MobileNetV1 ImageNet graph shipped by ``nudity==0.2.3``, or None if not installed.

    Located without importing the package (its ``__init__`` would import TensorFlow).
    """
    package, rel = PRETRAINED_GRAPH
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / rel
        if candidate.is_file():
            return candidate
    return None


def cache_dir() -> Path:
    """Where converted weights are cached: $MOBILENETS_CACHE, else $XDG_CACHE_HOME/mobilenets, else
    ~/.cache/mobilenets."""
    if os.environ.get("MOBILENETS_CACHE"):
        return Path(os.environ["MOBILENETS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mobilenets"


def pretrained_weights_path() -> Path:
    """The cached safetensors of Google's MobileNetV1 1.0/224, converting the installed graph on first use."""
    graph = find_pretrained_graph()
    cached = cache_dir() / PRETRAINED_CACHE_NAME
    if graph is None:
        if cached.is_file():
            return cached
        raise MobileNetsError(f"pretrained MobileNetV1 weights are not available: {GET_PRETRAINED}")
    if cached.is_file():
        try:
            card = read_safetensors(cached)[1]
            if card is not None and card.source.get("sha256") == sha256_file(graph):
                return cached
        except MobileNetsError:
            pass  # a stale or damaged cache is rebuilt below
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MobileNetsError(f"cannot create the weights cache {cached.parent} ({e}); set MOBILENETS_CACHE") from None
    import_weights(graph, cached)
    return cached


def pretrained_model(model_name: str | None = None) -> tuple[nn.Module, ModelCard]:
    """Google's ImageNet MobileNetV1 α=1.0 (TF-slim numbers: 1001 classes, background at 0), in eval mode.

    ``model_name`` may pick another input resolution ρ, e.g. ``mobilenet_v1_1.0_160`` (the weights were
    trained at 224). Raises MobileNetsError saying how to install the weights when they are not available.
    """
    if model_name is not None:
        wanted = model_defaults(model_name)
        if base_name(model_name) != "mobilenet_v1" or wanted.get("width_mult") != 1.0:
            raise MobileNetsError(
                f"pretrained weights exist for MobileNetV1 α=1.0 only (mobilenet_v1_1.0_224, or _192/_160/_128), "
                f"not {model_name}; pass --weights FILE for other models"
            )
    return load_weights(pretrained_weights_path(), model_name=model_name)
