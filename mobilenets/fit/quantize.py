"""Quantize until it holds: the runtime's default PTQ, then the stronger PTQ options (cross-layer equalization, the
runtime's other calibrations), then QAT, until a file passes both checks:

1. ``export``'s verification (the file's own runtime against the float model on the user's held-out images: top-1
   agreement on the float model's clear decisions within a 95% interval, and the int8 range check), and
2. no held-out accuracy drop above ``max_drop_points`` that is real (paired: the same images through both models;
   a drop above the threshold fails when its 95% interval lies above zero; the interval is reported beside it).

Every attempt is written under a scratch folder in the out-dir; only a file that passed is moved to its name. A
candidate for which nothing holds is the caller's cue to try the next one.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mobilenets.deploy import export as ex
from mobilenets.deploy import runtime_module
from mobilenets.errors import MobileNetsError
from mobilenets.quant.qat import TARGETS as QAT_TARGETS


@dataclass
class Attempt:
    """One way of writing the file, and how it fared."""

    step: str
    passed: bool
    detail: str
    heldout_acc: float | None = None  # the file's top-1 on the held-out images (fraction)
    drop_points: float | None = None  # float model's top-1 minus the file's, in points
    drop_interval: tuple[float, float] | None = None  # 95% interval of the paired drop, in points
    float_heldout_acc: float | None = None  # the float model's top-1 on the same images
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeldOut:
    """Normalized images at the model's resolution: calibration (training split) and held-out (test split)."""

    calib: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor


def paired_drop(float_right: np.ndarray, file_right: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Accuracy drop in points (float − file) on the same images, with a 95% normal interval of the paired
    difference (only the images the two disagree on carry information)."""
    n = len(float_right)
    diff = float_right.astype(np.float64) - file_right.astype(np.float64)
    mean = diff.mean()
    half = 1.96 * math.sqrt(max(diff.var(ddof=1) if n > 1 else 0.0, 0.0) / n)
    return 100 * mean, (100 * (mean - half), 100 * (mean + half))


def file_predictions(path: Path, fmt: str, precision: str, images: torch.Tensor, threads: int | None) -> np.ndarray:
    """Top-1 classes of ``images`` through the file's own runtime (one image at a time where the program has
    batch 1)."""
    from mobilenets.deploy.bench.latency import BATCH_ONE, FORMAT_OF

    x = images.numpy()
    if any(FORMAT_OF[r] == fmt for r in BATCH_ONE):
        run = ex.load_runner(path, fmt, precision, threads, 1)
        return np.concatenate([np.asarray(run(x[i : i + 1])).argmax(1) for i in range(len(x))])
    return np.asarray(ex.load_runner(path, fmt, precision, threads)(x)).argmax(1)


def ptq_steps(fmt: str) -> list[tuple[str, dict]]:
    """The PTQ attempts in order: the runtime's defaults, then cross-layer equalization, then each other
    calibration the runtime offers (with equalization)."""
    runtime = runtime_module(fmt).RUNTIME
    steps = [(f"PTQ, {runtime}'s defaults", {}), ("PTQ, cross-layer equalization", {"equalize": True})]
    for calibration in ex.CALIBRATIONS.get(fmt, ())[1:]:
        steps.append((f"PTQ, {calibration} calibration, equalized", {"equalize": True, "calibration": calibration}))
    return steps


def quantize_until_it_holds(
    model: torch.nn.Module,
    fmt: str,
    precision: str,
    out_path: Path,
    data: HeldOut,
    *,
    max_drop_points: float = 1.0,
    max_file_mb: float | None = None,
    qat: Callable[[], torch.nn.Module] | None = None,
    threads: int | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> tuple[ex.ExportResult | None, list[Attempt]]:
    """The first file of ``model`` that holds (see the module docstring), moved to ``out_path``, and every attempt.

    ``qat`` trains the QAT model when PTQ did not hold (None: no QAT step; the runtime must be a QAT target).
    Returns (None, attempts) when nothing held; nothing is then left at ``out_path``.
    """
    model = model.eval()
    with torch.no_grad():
        float_right = (model(data.images).argmax(1) == data.labels).numpy()
    if precision != "int8":
        steps: list[tuple[str, dict]] = [(f"{precision} export", {})]
    else:
        steps = ptq_steps(fmt)
        if qat is not None and fmt in QAT_TARGETS:
            steps.append(("QAT", {"qat": True}))
    attempts = []
    for step, options in steps:
        t0 = time.perf_counter()
        say(f"quantize: {step}")
        candidate_model = model
        if options.pop("qat", False):
            try:
                candidate_model = qat()
            except MobileNetsError as e:
                attempts.append(Attempt(step, False, f"QAT failed: {e}", seconds=time.perf_counter() - t0))
                continue
        attempt, result = _try(candidate_model, fmt, precision, out_path, data, float_right, options, threads)
        attempt.step, attempt.seconds = step, time.perf_counter() - t0
        if attempt.passed and _clearly_worse(attempt, max_drop_points):
            attempt.passed = False
            attempt.detail += (
                f"; held-out top-1 drop {attempt.drop_points:.2f} points > {max_drop_points:g}, and its 95% interval "
                "excludes no drop"
            )
        if attempt.passed and max_file_mb is not None and result.size_bytes / 1e6 > max_file_mb:
            attempt.passed = False
            attempt.detail += f"; file {result.size_bytes / 1e6:.2f} MB > {max_file_mb:g} MB"
        attempts.append(attempt)
        if attempt.passed:
            _move_into_place(result.path, out_path, fmt)
            result.path = out_path
            return result, attempts
        _discard(result)
        if max_file_mb is not None and result is not None and result.size_bytes / 1e6 > max_file_mb:
            break  # another quantization gives the same size
    return None, attempts


def _clearly_worse(attempt: Attempt, max_drop_points: float) -> bool:
    """The file loses more than ``max_drop_points`` of held-out top-1, and the loss is real: the 95% interval of the
    paired drop lies above zero (a few hundred held-out images cannot tell a one-point drop from noise)."""
    if attempt.drop_points is None:
        return False
    return attempt.drop_points > max_drop_points and attempt.drop_interval[0] > 0


def _try(model, fmt, precision, out_path: Path, data: HeldOut, float_right, options, threads):
    """Export into a scratch folder beside ``out_path`` (export verifies it), then score it on the held-out images."""
    scratch = Path(tempfile.mkdtemp(prefix=".fit-attempt-", dir=out_path.parent))
    path = scratch / out_path.name
    try:
        result = ex.export(
            model,
            path,
            fmt,
            precision,
            calib_images=data.calib if precision == "int8" else None,
            verify_images=data.images,
            **options,
        )
    except MobileNetsError as e:
        shutil.rmtree(scratch, ignore_errors=True)
        return Attempt("", False, str(e)), None
    verification = result.verification.summary() if result.verification else "; ".join(result.skipped)
    predictions = file_predictions(path, fmt, precision, data.images, threads)
    file_right = predictions == data.labels.numpy()
    drop, interval = paired_drop(float_right, file_right)
    attempt = Attempt("", True, verification, float(file_right.mean()), round(drop, 3),
                      (round(interval[0], 3), round(interval[1], 3)), float(float_right.mean()))  # fmt: skip
    return attempt, result


def _discard(result: ex.ExportResult | None) -> None:
    if result is not None:
        shutil.rmtree(result.path.parent, ignore_errors=True)


def _move_into_place(staged: Path, out_path: Path, fmt: str) -> None:
    """A passed file (and its companions, e.g. OpenVINO's .bin) from its scratch folder to ``out_path``."""
    module = runtime_module(fmt)
    companions = getattr(module, "companions", None)
    if companions:
        for extra, target in zip(companions(staged), companions(out_path)):
            if extra.exists():
                os.replace(extra, target)
    if staged.is_dir() and out_path.exists():
        shutil.rmtree(out_path)
    os.replace(staged, out_path)
    shutil.rmtree(staged.parent, ignore_errors=True)
