"""Checkpoints: atomic writes, reading them back, RNG state for a bit-for-bit resume, rebuilding a trained model."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import numpy as np
import torch

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path
from mobilenets.weights.checkpoint import load_checkpoint


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


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


def _ckpt_step(path: Path) -> int | str:
    try:
        return load_checkpoint(path)["state"]["step"]
    except MobileNetsError:
        return "?"


def save_run_checkpoint(run) -> None:
    """A run's ``checkpoint.pt`` (written by the main process only): what ``--resume`` continues bit for bit from.
    ``run`` is a classification or detection loop's run state (model, optimizer, scheduler, scaler, EMA, counters)."""
    if not run.dist_info.is_main:
        return
    atomic_save(
        dict(
            meta=run.meta,
            config=run.config,
            model=run.model.state_dict(),
            optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(),
            scaler=run.scaler.state_dict(),
            ema=run.ema.module.state_dict() if run.ema is not None else None,
            state=copy.deepcopy(run.state),
            rng=_rng_state(),
        ),
        run.ckpt_path,
    )


def check_resumable(saved: dict, config: dict, ckpt_path: Path, resume_free) -> None:
    """Refuse to resume a checkpoint started with other settings (``resume_free`` may differ), naming them."""
    changed = sorted(k for k, v in saved.items() if k not in resume_free and config.get(k) != v)
    if changed:
        diffs = ", ".join(f"{k}: {saved[k]!r} → {config.get(k)!r}" for k in changed[:4])
        raise MobileNetsError(
            f"cannot resume {ckpt_path}: the run was started with different settings ({diffs}); "
            "use the same flags or a new --out-dir"
        )
