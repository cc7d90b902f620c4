"""Checkpoints: atomic writes, reading them back, RNG state for a bit-for-bit resume, rebuilding a trained model."""

from __future__ import annotations

import copy
import os
import random
import sys
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
            numerics=numerics(run.device),
        ),
        run.ckpt_path,
    )


def numerics(device: torch.device) -> dict:
    """What orders a run's floating-point sums, beside its config: the device, CPU threads and torch's version. A
    resume under other values continues the run, but not bit for bit."""
    return dict(
        device=device.type,
        threads=torch.get_num_threads() if device.type == "cpu" else None,
        torch=str(torch.__version__),
    )


def note_resume_numerics(saved: dict | None, device: torch.device, ckpt_path: Path, is_main: bool = True) -> str | None:
    """Say on stderr (once, from the main process) when a resume runs under other :func:`numerics` than the run it
    continues (``--threads 2`` after ``--threads 1``, another torch): allowed, but the numbers will differ from an
    uninterrupted run's. Returns the note, or None (no change, or a checkpoint older than the record)."""
    if not isinstance(saved, dict):
        return None
    now = numerics(device)
    changed = [f"{k} {saved[k]} → {now[k]}" for k in now if k in saved and saved[k] != now[k]]
    if not changed:
        return None
    note = (
        f"note: resuming {ckpt_path} with {', '.join(changed)}: the run continues, but not bit for bit (its sums "
        "now run in another order); resume with the run's own settings to repeat it exactly"
    )
    if is_main:
        print(note, file=sys.stderr)
    return note


def check_resumable(saved: dict, config: dict, ckpt_path: Path, resume_free) -> None:
    """Refuse to resume a checkpoint started with other settings (``resume_free`` may differ), naming them."""
    changed = sorted(k for k, v in saved.items() if k not in resume_free and config.get(k) != v)
    if changed:
        diffs = ", ".join(f"{k}: {saved[k]!r} → {config.get(k)!r}" for k in changed[:4])
        raise MobileNetsError(
            f"cannot resume {ckpt_path}: the run was started with different settings ({diffs}); "
            "use the same flags or a new --out-dir"
        )
