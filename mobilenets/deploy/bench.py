"""Latency of any model on PyTorch eager, ONNX Runtime, ExecuTorch-XNNPACK, OpenVINO and LiteRT; the α×ρ grid.

Latency is the median (and 90th percentile) of many timed runs after warm-up, batch 1 or N, with a fixed
number of CPU threads. ``bench_grid`` measures the 16 models of paper Figures 4–5 and ``select`` picks the
variants that fit a budget. Timings are noisy on shared machines: compare numbers measured in one run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.deps import atomic_write
from mobilenets.deploy.fold import fold_bn, static_padding
from mobilenets.deploy.images import real_images
from mobilenets.errors import MobileNetsError

# runtime → the export format it runs
FORMAT_OF = {"onnxruntime": "onnx", "executorch": "executorch", "openvino": "openvino", "litert": "tflite"}
RUNTIMES = ("eager", *(r for r, f in FORMAT_OF.items() if f in ex.FORMATS))
RUNTIME_PRECISIONS = {"eager": ("fp32", "bf16"), **{r: ex.FORMAT_PRECISIONS[FORMAT_OF[r]] for r in RUNTIMES[1:]}}
# Runtimes whose programs have a static batch of 1 (the mobile case).
BATCH_ONE = ("executorch", "litert")
GRID_WIDTHS = (1.0, 0.75, 0.5, 0.25)
GRID_RESOLUTIONS = (224, 192, 160, 128)


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


def check_runtime(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise MobileNetsError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in RUNTIME_PRECISIONS[runtime]:
        raise MobileNetsError(f"{runtime} does not run {precision}; it runs {', '.join(RUNTIME_PRECISIONS[runtime])}")


def unavailable_reason(runtime: str, precision: str) -> str | None:
    """Why this CPU cannot run ``runtime`` at ``precision`` (one line), or None when it can."""
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
    reason = unavailable_reason(runtime, precision)
    if reason:
        raise MobileNetsError(f"cannot run {runtime} {precision} here: {reason}")
    model = model.eval()
    res = resolution or model.resolution
    x = torch.randn(batch_size, model.in_chans, res, res)
    if runtime == "eager":
        net = static_padding(fold_bn(model), res).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run_eager():
            with (
                torch_threads(threads),
                torch.inference_mode(),
                torch.autocast("cpu", torch.bfloat16, precision == "bf16"),
            ):
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
    return lambda: run(xn)


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
                if precision == "int8" and calib is None:
                    calib = real_images(32, model.in_chans, res, split="train")
                for batch_size in batch_sizes:
                    if skip_unsupported and runtime in BATCH_ONE and batch_size != 1:
                        continue
                    reason = unavailable_reason(runtime, precision)
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


# ----------------------------------------------------------------------------------------------------
# The paper's grid (Figures 4–5) and selection by budget


@dataclass
class GridRow:
    """One α×ρ variant: cost, known ImageNet accuracy, measured latency per runtime/precision."""

    model: str
    width_mult: float
    resolution: int
    mult_adds: int
    num_params: int
    top1: float | None = None  # ImageNet top-1 (%) where known
    top1_source: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)  # "runtime/precision" → median ms
    p90_ms: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # "runtime/precision" → why this CPU could not run it

    def to_dict(self) -> dict:
        return asdict(self)


def known_top1() -> dict[str, tuple[float, str]]:
    """ImageNet top-1 the paper prints for grid models (Tables 6, 7, 9): name → (top-1 %, source)."""
    from mobilenets import paper

    known = {}
    for row in paper.ROWS:
        if row.build.startswith("mobilenet_v1_") and "conv" not in row.build and "shallow" not in row.build:
            known.setdefault(row.build, (float(row.top1), f"paper Table {row.table}"))
    # The pretrained 1.0/224 weights are Google's; their top-1 is the paper's 70.6 ± TF-slim's retraining
    # (70.9): no ImageNet here to measure it, so the grid shows the paper's figure.
    return known


def grid_names(widths: Iterable[float] = GRID_WIDTHS, resolutions: Iterable[int] = GRID_RESOLUTIONS) -> list[str]:
    return [f"mobilenet_v1_{w}_{r}" for w in widths for r in resolutions]


def bench_grid(
    widths: Iterable[float] = GRID_WIDTHS,
    resolutions: Iterable[int] = GRID_RESOLUTIONS,
    runtimes: Iterable[str] = ("eager", "onnxruntime"),
    precisions: Iterable[str] = ("fp32",),
    batch_size: int = 1,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[GridRow]:
    """Mult-Adds, params, known top-1 and latency (median/p90 ms) of every α×ρ MobileNet."""
    from mobilenets.models import create_model

    widths, resolutions, runtimes, precisions = list(widths), list(resolutions), list(runtimes), list(precisions)
    for w in widths:
        if w not in GRID_WIDTHS:
            raise MobileNetsError(f"width {w} is not on the paper's grid; choose from {GRID_WIDTHS}")
    for r in resolutions:
        if r not in GRID_RESOLUTIONS:
            raise MobileNetsError(f"resolution {r} is not on the paper's grid; choose from {GRID_RESOLUTIONS}")
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            check_runtime(runtime, "fp32")
    known = known_top1()
    rows = []
    for name in grid_names(widths, resolutions):
        model = create_model(name).eval()
        mult_adds, params = _costs(name)
        top1, source = known.get(name, (None, ""))
        row = GridRow(name, model.cfg.width_mult, model.resolution, mult_adds, params, top1, source)
        results = bench_model(
            model,
            name,
            runtimes,
            precisions,
            (batch_size,),
            threads,
            runs,
            warmup,
            skip_unsupported=True,
            progress=progress,
        )
        for r in results:
            if r.latency is None:
                row.skipped[f"{r.runtime}/{r.precision}"] = r.skipped
                continue
            row.latency_ms[f"{r.runtime}/{r.precision}"] = round(r.latency.median_ms, 4)
            row.p90_ms[f"{r.runtime}/{r.precision}"] = round(r.latency.p90_ms, 4)
        rows.append(row)
    return rows


@functools.cache
def _costs(name: str) -> tuple[int, int]:
    """(Mult-Adds, parameters) of a registered model at its resolution, profiled once per process."""
    from mobilenets.models import create_model
    from mobilenets.profile import profile

    with torch_threads(1):  # a small forward pass; more threads only contend on a busy machine
        prof = profile(create_model(name))
    return prof.mult_adds, prof.params


def grid_cost_rows(
    widths: Iterable[float] = GRID_WIDTHS, resolutions: Iterable[int] = GRID_RESOLUTIONS
) -> list[GridRow]:
    """The grid without latency (cost and known accuracy only): cheap, for `select` by params/Mult-Adds."""
    return bench_grid(widths, resolutions, runtimes=(), precisions=())


def format_grid(rows: list[GridRow], cpu_line: str | None = None) -> str:
    """The grid as a text table, headed by the CPU it was measured on (this one unless ``cpu_line`` is given)."""
    order = {r: i for i, r in enumerate(RUNTIMES)}
    keys = sorted({k for r in rows for k in r.latency_ms}, key=lambda k: (order.get(k.split("/")[0], 99), k))
    header = ["model", "α", "res", "Mult-Adds (M)", "params (M)", "top-1 %"] + [f"{k} ms" for k in keys]
    lines = [header]
    for r in rows:
        top1 = f"{r.top1:.1f}" if r.top1 is not None else "—"
        lat = [f"{r.latency_ms[k]:.2f}" if k in r.latency_ms else "—" for k in keys]
        lines.append(
            [
                r.model,
                f"{r.width_mult:g}",
                str(r.resolution),
                f"{r.mult_adds / 1e6:.1f}",
                f"{r.num_params / 1e6:.2f}",
                top1,
                *lat,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    out.insert(1, "-" * len(out[0]))
    if any(r.latency_ms for r in rows):
        out.insert(0, f"CPU: {cpu_line or cpu_info().line()}")
    skipped = {k: v for r in rows for k, v in r.skipped.items()}
    out += [f"skipped {k}: {v}" for k, v in sorted(skipped.items())]
    return "\n".join(out)


def save_grid(rows: list[GridRow], path: str | os.PathLike) -> Path:
    """Write the grid as JSON, atomically, with the CPU it was measured on."""
    path = Path(path)
    cpu = cpu_info()
    data = {"cpu": {**cpu.to_dict(), "line": cpu.line()}, "rows": [r.to_dict() for r in rows]}
    atomic_write(path, json.dumps(data, indent=2).encode())
    return path


def load_grid_cpu(path: str | os.PathLike) -> str | None:
    """The CPU line a grid file was measured on (None for files from before it was recorded)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("cpu", {}).get("line") if isinstance(data, dict) else None


def load_grid(path: str | os.PathLike) -> list[GridRow]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        rows = data["rows"] if isinstance(data, dict) else data  # files from before the CPU was recorded: a list
        return [GridRow(**d) for d in rows]
    except FileNotFoundError:
        raise MobileNetsError(
            f"{path}: no such results file; make one with `mobilenets bench --grid --out {path}`"
        ) from None
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise MobileNetsError(f"{path}: not a grid results file written by `mobilenets bench --grid` ({e})") from None


def plot_grid(rows: list[GridRow], out_dir: str | os.PathLike) -> list[Path]:
    """PNGs like paper Figures 4–5 (top-1 vs Mult-Adds, log x; top-1 vs params) and latency vs Mult-Adds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise MobileNetsError(f"cannot write plots to {out_dir}: the folder does not exist; create it first")
    paths = []
    known = [r for r in rows if r.top1 is not None]

    def finish(fig, name: str) -> None:
        path = out_dir / name
        tmp = out_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)

    for x_attr, xlabel, fname, logx in (
        ("mult_adds", "Mult-Adds (millions, log scale)", "accuracy_vs_mult_adds.png", True),
        ("num_params", "Parameters (millions)", "accuracy_vs_params.png", False),
    ):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for r in known:
            ax.scatter(getattr(r, x_attr) / 1e6, r.top1, color="C0")
            ax.annotate(
                f"{r.width_mult:g}-{r.resolution}",
                (getattr(r, x_attr) / 1e6, r.top1),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        if logx:
            ax.set_xscale("log")
            _plain_log_labels(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ImageNet top-1 (%)")
        title = "Figure 4" if logx else "Figure 5"
        ax.set_title(
            f"{title}-style: accuracy vs {'Mult-Adds' if logx else 'parameters'} "
            f"({len(known)} models with known top-1)",
            fontsize=9,
        )
        ax.grid(True, alpha=0.3)
        finish(fig, fname)

    keys = sorted({k for r in rows for k in r.latency_ms})
    if keys:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for i, key in enumerate(keys):
            pts = sorted((r.mult_adds / 1e6, r.latency_ms[key]) for r in rows if key in r.latency_ms)
            ax.plot(*zip(*pts), "o-", color=f"C{i}", label=key, markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_labels(ax.xaxis)
        _plain_log_labels(ax.yaxis)
        ax.set_xlabel("Mult-Adds (millions, log scale)")
        ax.set_ylabel("latency, median ms (log scale)")
        ax.set_title("Latency vs Mult-Adds (batch 1)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3, which="both")
        finish(fig, "latency_vs_mult_adds.png")
    return paths


def _plain_log_labels(axis) -> None:
    """Plain numbers on a log axis (0.3, 1, 20, 100), not 3×10⁻¹; minor ticks labelled at 2× and 5× only."""
    import matplotlib.ticker as mt

    def minor(v: float, _pos) -> str:
        return f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""

    axis.set_major_formatter(mt.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(mt.FuncFormatter(minor))


@dataclass
class Selection:
    row: GridRow
    latency_ms: float | None


def select(
    rows: list[GridRow],
    max_latency_ms: float | None = None,
    max_params: float | None = None,
    max_madds: float | None = None,
    runtime: str | None = None,
) -> list[Selection]:
    """The grid variants within every given budget, best first.

    "Best" is most Mult-Adds, then highest known top-1: across the paper's grid accuracy rises
    log-linearly with Mult-Adds (Figure 4), and the paper's printed top-1 figures agree with that order.
    ``max_params`` and ``max_madds`` are absolute counts. ``runtime`` is "runtime" or "runtime/precision";
    a row's latency is its fastest measured entry for it (any runtime when not given).
    """
    if max_latency_ms is None and max_params is None and max_madds is None:
        raise MobileNetsError("give a budget: --max-latency-ms, --max-params or --max-madds")
    for label, v in (("max-latency-ms", max_latency_ms), ("max-params", max_params), ("max-madds", max_madds)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise MobileNetsError(f"--{label} must be a positive number, got {v}")
    if runtime is not None and runtime.split("/")[0] not in RUNTIMES:
        raise MobileNetsError(f"unknown runtime {runtime.split('/')[0]!r}; choose one of {', '.join(RUNTIMES)}")

    def latency_of(row: GridRow) -> float | None:
        times = [v for k, v in row.latency_ms.items() if runtime is None or runtime in (k, k.split("/")[0])]
        return min(times) if times else None

    if max_latency_ms is not None and all(latency_of(r) is None for r in rows):
        raise MobileNetsError(
            f"no latency measured for {runtime or 'any runtime'} in these results: "
            "run `mobilenets bench --grid --runtime RUNTIME --out grid.json` and pass --results grid.json"
        )
    out = []
    for row in rows:
        latency = latency_of(row)
        if max_latency_ms is not None and (latency is None or latency > max_latency_ms):
            continue
        if max_params is not None and row.num_params > max_params:
            continue
        if max_madds is not None and row.mult_adds > max_madds:
            continue
        out.append(Selection(row, latency))
    return sorted(out, key=lambda s: (-s.row.mult_adds, -(s.row.top1 or 0.0)))
