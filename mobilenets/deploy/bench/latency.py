"""Latency of any model on PyTorch eager, ONNX Runtime, ExecuTorch-XNNPACK, OpenVINO, LiteRT, the browser, ncnn and
MNN.

Latency is the median (and 90th percentile) of many timed runs after warm-up, batch 1 or N, with a fixed
number of CPU threads. Timings are noisy on shared machines: compare numbers measured in one run.
A detector (:mod:`mobilenets.detection`) is timed from an image tensor to final boxes, labels and scores: on eager,
and on each runtime its export writes a file for (:mod:`mobilenets.deploy.detection`'s formats).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import export as ex
from mobilenets.deploy import runtime_module
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import real_images
from mobilenets.errors import MobileNetsError
from mobilenets.quant.fold import fold_bn, static_padding

# runtime → the export format it runs
FORMAT_OF = {
    "onnxruntime": "onnx",
    "executorch": "executorch",
    "openvino": "openvino",
    "litert": "tflite",
    "web": "web",  # onnxruntime-web in headless Chromium
    "ncnn": "ncnn",
    "mnn": "mnn",
}
RUNTIMES = ("eager", *(r for r, f in FORMAT_OF.items() if f in ex.FORMATS))
RUNTIME_PRECISIONS = {"eager": ("fp32", "bf16"), **{r: ex.FORMAT_PRECISIONS[FORMAT_OF[r]] for r in RUNTIMES[1:]}}
# Runtimes whose programs have a static batch of 1 (the mobile case).
BATCH_ONE = ("executorch", "litert", "ncnn", "mnn")


@dataclass
class Latency:
    """Milliseconds per call, over ``runs`` timed calls after ``warmup`` untimed ones."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    warmup: int

    @classmethod
    def from_times(cls, seconds: Iterable[float], warmup: int) -> Latency:
        ms = np.asarray(list(seconds)) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.min()), len(ms), warmup)


def time_calls(fn: Callable[[], object], runs: int = 50, warmup: int = 10) -> Latency:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed (wall clock, perf_counter)."""
    if runs < 1 or warmup < 0:
        raise MobileNetsError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if hasattr(fn, "time_runs"):  # web: timed inside the page; a call from Python adds a DevTools round trip
        return Latency.from_times(fn.time_runs(runs, warmup), warmup)
    for _ in range(warmup):
        fn()
    return Latency.from_times(timed_calls(fn, runs), warmup)


def timed_calls(fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds taken by each of ``runs`` calls of ``fn`` (wall clock, perf_counter)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


@contextmanager
def torch_threads(threads: int | None):
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def eager_inference(threads: int | None, precision: str):
    """How eager runs are timed: ``threads`` CPU threads, inference mode, bf16 autocast for ``precision`` bf16."""
    with torch_threads(threads), torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, precision == "bf16"):
        yield


def check_runtime(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise MobileNetsError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in RUNTIME_PRECISIONS[runtime]:
        raise MobileNetsError(f"{runtime} does not run {precision}; it runs {', '.join(RUNTIME_PRECISIONS[runtime])}")


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is one of our detectors. None can exist before :mod:`mobilenets.detection` is imported,
    so a classifier's bench does not import it (torchvision's detection models take about a second)."""
    detection = sys.modules.get("mobilenets.detection")
    return detection is not None and isinstance(model, detection.Detector)


def detector_reason(runtime: str, precision: str) -> str | None:
    """Why a detector cannot run on ``runtime`` at ``precision`` (no detector file for it yet), or None."""
    from mobilenets.deploy import detection as files  # torchvision's ops, loaded by then: a detector exists

    if runtime == "eager":
        return None
    fmt = FORMAT_OF[runtime]
    if fmt not in files.DETECTION_FORMATS:
        runtimes = ["eager", *(r for r, f in FORMAT_OF.items() if f in files.DETECTION_FORMATS)]
        return f"no {runtime} file of a detector yet (issue 28): detectors run on {', '.join(runtimes)}"
    if precision not in files.DETECTION_PRECISIONS[fmt]:
        return f"a detector's {fmt} file is {' or '.join(files.DETECTION_PRECISIONS[fmt])}, not {precision}"
    return None


def unavailable_reason(runtime: str, precision: str, model: nn.Module | None = None) -> str | None:
    """Why this CPU cannot run ``runtime`` at ``precision``, or ``runtime`` cannot run ``model`` (one line), or
    None when it can."""
    reason = detector_reason(runtime, precision) if model is not None and is_detector(model) else None
    if reason:
        return reason
    cpu = cpu_info()
    if precision == "bf16" and not cpu.has("bf16"):
        return f"no bf16 math on this CPU (needs AVX512_BF16 or AMX): {cpu.model}"
    return None


def make_runner(
    model: nn.Module,
    runtime: str,
    precision: str = "fp32",
    batch_size: int = 1,
    threads: int | None = None,
    workdir: str | os.PathLike | None = None,
    calib_images: torch.Tensor | None = None,
    resolution: int | None = None,
) -> Callable[[], object]:
    """A no-argument function that runs one batch of ``model`` on ``runtime`` (files go to ``workdir``).

    Export-based runtimes run the file ``mobilenets export`` writes (BN folded, int8 safe on every CPU),
    unverified: a benchmark measures speed; ``export`` is where files are checked.
    """
    check_runtime(runtime, precision)
    reason = unavailable_reason(runtime, precision, model)
    if reason:
        raise MobileNetsError(f"cannot run {runtime} {precision} here: {reason}")
    model = model.eval()
    if is_detector(model):
        if runtime == "eager":
            return _detector_runner(model, precision, batch_size, threads)
        return _detector_file_runner(model, runtime, precision, batch_size, threads, workdir, calib_images)
    res = resolution or model.resolution
    x = torch.randn(batch_size, model.in_chans, res, res)
    if runtime == "eager":
        net = static_padding(fold_bn(model), res).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run_eager():
            with eager_inference(threads, precision):
                return net(xc)

        return run_eager

    fmt = FORMAT_OF[runtime]
    if runtime in BATCH_ONE and batch_size != 1:
        raise MobileNetsError(f"the {runtime} programs here have batch 1 (the mobile case): use --batch-size 1")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mobilenets-bench-"))
    path = workdir / f"{runtime}_{precision}_{res}{ex.SUFFIXES[fmt]}"
    if precision == "int8" and calib_images is None:
        calib_images = real_images(32, model.in_chans, res, split="train")
    ex.write_model_file(static_padding(fold_bn(model), res), path, fmt, precision, calib_images, res)
    run = ex.load_runner(path, fmt, precision, threads, batch_size)
    xn = x.numpy()
    if hasattr(run, "time_runs"):
        return run
    return lambda: run(xn)


def _detector_runner(model: nn.Module, precision: str, batch_size: int, threads: int | None) -> Callable[[], object]:
    """Eager: ``batch_size`` images at the detector's input size through all of it: torchvision's transform
    (normalize, resize), the network (BatchNorm folded, channels-last, as the classifiers' eager runs), box decoding
    and NMS. An untrained detector scores every class near 1/num_classes (0.011 for COCO), above the score
    thresholds (SSDLite 0.001, SSD300 0.01), so NMS gets its most boxes, ``topk_candidates`` per class: a trained
    detector's gets at most as many."""
    net = fold_bn(model).to(memory_format=torch.channels_last)
    height, width = model.resolution
    images = list(torch.rand(batch_size, 3, height, width))

    def run_detector():
        with eager_inference(threads, precision):
            return net(images)

    return run_detector


def _detector_file_runner(
    model: nn.Module, runtime: str, precision: str, batch_size: int, threads, workdir, calib_images
) -> Callable[[], object]:
    """The detector's file for ``runtime`` (box decoding in it, NMS too where the runtime has the op, as
    ``mobilenets export`` writes it, unverified: a benchmark measures speed), timed as
    :func:`mobilenets.deploy.detection.detect_with_file` runs one image, with the session opened once: resize to
    the input, the file, the runner's NMS where the file has none, boxes scaled back. int8 calibrates on the
    scikit-image photos (latency does not depend on the ranges)."""
    from mobilenets.deploy import detection as files

    if batch_size != 1:
        raise MobileNetsError("a detector file takes one image: use --batch-size 1")
    fmt = FORMAT_OF[runtime]
    height, width = model.resolution
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mobilenets-bench-"))
    path = workdir / f"detector_{runtime}_{precision}_{height}x{width}{ex.SUFFIXES[fmt]}"
    if precision == "int8" and calib_images is None:
        calib_images = torch.cat([files.resize_for(model.resolution, photo) for photo in files.photo_images()])
    files.WRITERS[fmt](model.eval(), path, precision, calib_images)
    info = files.detector_info(model, fmt, precision, None, weight_bits=7)  # the card export stores with the file
    runtime_module(fmt).set_metadata(path, info)  # ncnn's and MNN's runners take their options from it
    detect = files.file_detector(path, fmt, threads=threads, info=info)
    image = torch.rand(3, height, width)
    return lambda: detect(image)


@dataclass
class BenchResult:
    model: str
    runtime: str
    precision: str
    batch_size: int
    threads: int | None
    resolution: int
    latency: Latency | None
    skipped: str = ""  # why this CPU could not run it (then latency is None)

    def to_dict(self) -> dict:
        return asdict(self)


def bench_model(
    model: nn.Module,
    name: str = "model",
    runtimes: Iterable[str] = ("eager", "onnxruntime"),
    precisions: Iterable[str] = ("fp32",),
    batch_sizes: Iterable[int] = (1,),
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 10,
    resolution: int | None = None,
    skip_unsupported: bool = False,
    progress: Callable[[str], None] | None = None,
    pause: float = 0.5,
) -> list[BenchResult]:
    """Latency of ``model`` for every runtime × precision × batch size.

    Combinations a runtime lacks are an error, or skipped with ``skip_unsupported``; then a combination this
    CPU cannot run (bf16 without AVX512_BF16/AMX) comes back with ``latency=None`` and the reason in ``skipped``.
    """
    say = progress or (lambda _m: None)
    res = resolution or model.resolution
    results = []
    with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as workdir:
        calib = None
        for runtime in runtimes:
            for precision in precisions:
                check_runtime(runtime, "fp32")
                if skip_unsupported and precision not in RUNTIME_PRECISIONS[runtime]:
                    continue
                check_runtime(runtime, precision)
                if precision == "int8" and calib is None and not is_detector(model):
                    calib = real_images(32, model.in_chans, res, split="train")
                for batch_size in batch_sizes:
                    if skip_unsupported and runtime in BATCH_ONE and batch_size != 1:
                        continue
                    reason = unavailable_reason(runtime, precision, model)
                    if reason:
                        if not skip_unsupported:
                            raise MobileNetsError(f"cannot run {runtime} {precision} here: {reason}")
                        say(f"{name}: skipping {runtime} {precision}: {reason}")
                        results.append(BenchResult(name, runtime, precision, batch_size, threads, res, None, reason))
                        continue
                    say(f"{name}: {runtime} {precision} batch {batch_size}")
                    fn = make_runner(model, runtime, precision, batch_size, threads, workdir, calib, res)
                    # Let the previous runner's thread pool stop spin-waiting: every runtime here keeps worker
                    # threads that busy-wait after a call, and on a small CPU they steal this runner's cores.
                    time.sleep(pause)
                    with torch_threads(threads):
                        latency = time_calls(fn, runs, warmup)
                    results.append(BenchResult(name, runtime, precision, batch_size, threads, res, latency))
                    del fn
    return results
