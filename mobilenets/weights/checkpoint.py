"""A training run's ``model.pt`` / ``checkpoint.pt``: read safely (weights only), and the trained model rebuilt from
it. Below training (which writes them) and deploy/predict (which read them)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mobilenets.detection import create_detector
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint (weights_only); a damaged file is a clear error, never a silent partial load."""
    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means "damaged"
        raise MobileNetsError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); it is damaged — "
            "delete it to start over"
        ) from None


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``model.pt`` (or a ``checkpoint.pt``) written by ``mobilenets.training.train``.

    Returns the model in eval mode and its metadata (model name, kwargs, classes, mean, std, resolution).
    """
    return model_from_checkpoint(load_checkpoint(path), path)


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """:func:`load_model` for a checkpoint already read (``path`` names it in errors)."""
    meta = ckpt.get("meta")
    if meta is None:
        raise MobileNetsError(f"{path} is not a mobilenets training output (no 'meta'); pass a model.pt")
    if meta.get("task") == "detection":
        model = create_detector(meta["model"], **meta["model_kwargs"])
    else:
        model = create_model(meta["model"], **meta["model_kwargs"])
    state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    if ckpt.get("qat") is not None:  # a --qat run: the fake-quantize state its int8 export converts
        model.qat_state = ckpt["qat"]
    if meta.get("task") == "detection" and meta.get("qat"):  # a detector's --qat run: its int8 card says so
        model.qat_meta = meta["qat"]
    return model.eval(), meta
