"""Any supported weights file → our tensors and a :class:`ModelCard`; load it into a model, or convert it to our
``.safetensors`` + ``.json``. Each source's importer maps names and checks shapes; this module only dispatches."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.weights.cards import (
    ModelCard,
    build_model,
    check_expected,
    read_safetensors,
    read_state_dict,
    save_weights,
    sha256_file,
)
from mobilenets.weights.tf_graph import import_tf_graph
from mobilenets.weights.timm import is_timm_state_dict, timm_to_ours
from mobilenets.weights.torchvision import is_torchvision_state_dict, torchvision_to_ours

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SUFFIXES = "use .safetensors, .pth/.pt/.bin (a timm or torchvision state dict) or .pb (a TF-slim frozen graph)"


def detect_source(sd: Mapping[str, torch.Tensor]) -> str | None:
    """ "timm" or "torchvision" from a state dict's names, None when it is neither's MobileNet."""
    if is_timm_state_dict(sd):
        return "timm"
    if is_torchvision_state_dict(sd):
        return "torchvision"
    return None


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike, timm_model: str | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """A timm or torchvision MobileNet state dict (read from ``path``) in our names, with its card."""
    path = Path(path)
    kind = detect_source(sd)
    if kind is None:
        first = ", ".join(list(sd)[:3]) or "no tensors"
        raise MobileNetsError(
            f"{path} is not a timm or torchvision MobileNet state dict (it starts with {first}); "
            "convert other checkpoints with `mobilenets import-weights` from one of those"
        )
    if timm_model and kind != "timm":
        raise MobileNetsError(f"--timm-model is for timm state dicts; {path} is a {kind} state dict")
    source = {"format": f"{kind}_state_dict", "file": path.name, "sha256": sha256_file(path)}
    if kind == "timm":
        return timm_to_ours(sd, str(path), source, timm_model=timm_model)
    return torchvision_to_ours(sd, str(path), source)


def read_weights(
    path: str | os.PathLike,
    timm_model: str | None = None,
    drop_background: bool = False,
    resolution: int | None = None,
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Our tensors and card from any supported file, nothing built yet.

    ``.safetensors`` (ours with its card, or a timm/torchvision state dict), ``.pth``/``.pt``/``.bin`` (a timm or
    torchvision state dict, read with ``weights_only=True``) and ``.pb`` (TF-slim frozen graph; ``drop_background``
    and ``resolution`` are its options). ``timm_model`` names a timm state dict's model (see ``weights.timm``).
    """
    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"weights file {path} not found")
    suffix = path.suffix.lower()
    if drop_background and suffix != ".pb":
        raise MobileNetsError("--drop-background applies to TF graphs (1001 classes) only")
    if suffix == ".pb":
        return import_tf_graph(path, drop_background=drop_background, resolution=resolution)
    if suffix in TORCH_SUFFIXES:
        tensors, card = convert_state_dict(read_state_dict(path), path, timm_model)
    elif suffix == ".safetensors":
        tensors, card = read_safetensors(path)
        if card is None:
            tensors, card = convert_state_dict(tensors, path, timm_model)
        elif timm_model:
            raise MobileNetsError(f"--timm-model is for timm state dicts; {path} is ours, with a model card")
    else:
        raise MobileNetsError(f"unknown weights format {path.name!r}: {SUFFIXES}")
    if resolution is not None:
        card.model_kwargs["resolution"] = card.preprocessing.resolution = resolution
    return tensors, card


def load_weights(
    path: str | os.PathLike,
    model_name: str | None = None,
    num_classes: int | None = None,
    timm_model: str | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Load any supported weights file into a model in eval mode; return ``(model, card)``.

    ``model_name`` and ``num_classes``, when given, must agree with the file (family, α, class count), else a
    MobileNetsError says what the file holds and what was asked.
    """
    tensors, card = read_weights(path, timm_model=timm_model)
    check_expected(card, str(path), model_name, num_classes)
    return build_model(card, tensors, str(path)), card


def import_weights(
    src: str | os.PathLike,
    out: str | os.PathLike,
    drop_background: bool = False,
    resolution: int | None = None,
    model_name: str | None = None,
    timm_model: str | None = None,
) -> ModelCard:
    """Convert ``src`` (.pb, or a timm/torchvision .pth/.safetensors) into our ``out.safetensors`` + ``out.json``.

    Everything is read and checked before anything is written; both files are written atomically.
    """
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise MobileNetsError(f"source weights {src} not found")
    if out.suffix != ".safetensors" or not out.parent.is_dir():
        raise MobileNetsError(f"output must be a .safetensors file in an existing folder, got {out}")
    tensors, card = read_weights(src, timm_model, drop_background, resolution)
    check_expected(card, str(src), model_name)
    save_weights(build_model(card, tensors, str(src)), card, out)
    return card
