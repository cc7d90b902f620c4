"""Checkpoints: atomic writes, reading them back, RNG state for a bit-for-bit resume, rebuilding a trained model."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [torch.from_numpy(np.random.get_state()[1].astype(np.int64))] + list(np.random.get_state()[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    keys, *rest = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``model.pt`` (or a ``checkpoint.pt``) written by :func:`train`.

    Returns the model in eval mode and its metadata (model name, kwargs, classes, mean, std, resolution).
    """
    return model_from_checkpoint(load_checkpoint(path), path)


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """:func:`load_model` for a checkpoint already read (``path`` names it in errors)."""
    meta = ckpt.get("meta")
    if meta is None:
        raise MobileNetsError(f"{path} is not a mobilenets training output (no 'meta'); pass a model.pt")
    model = create_model(meta["model"], **meta["model_kwargs"])
    state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    if ckpt.get("qat") is not None:  # a --qat run: the fake-quantize state its int8 export converts
        model.qat_state = ckpt["qat"]
    return model.eval(), meta


def _ckpt_step(path: Path) -> int | str:
    try:
        return load_checkpoint(path)["state"]["step"]
    except MobileNetsError:
        return "?"
