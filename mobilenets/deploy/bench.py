"""Latency of any model on PyTorch eager, ONNX Runtime, ExecuTorch-XNNPACK, OpenVINO and LiteRT; the α×ρ grid.

Latency is the median (and 90th percentile) of many timed runs after warm-up, batch 1 or N, with a fixed
number of CPU threads. ``bench_grid`` measures the α×ρ grids of MobileNetV1, V2 and V3 (``DEFAULT_GRID``: the
V1 paper's 16 models of Figures 4–5, and for V2 and each V3 family the shape of V1 Tables 6–7) beside the
seed papers' networks that have one variant each (``SINGLE_FAMILIES``: SqueezeNet with and without its bypasses,
Xception), ``select``
picks the variants that fit a budget, across families, and ``pareto_front`` marks the ones no other beats.
Timings are noisy on shared machines: compare numbers measured in one run.
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
from mobilenets.deploy.images import real_images
from mobilenets.deps import atomic_write
from mobilenets.errors import MobileNetsError
from mobilenets.quant.fold import fold_bn, static_padding

# runtime → the export format it runs
FORMAT_OF = {
    "onnxruntime": "onnx",
    "executorch": "executorch",
    "openvino": "openvino",
    "litert": "tflite",
    "web": "web",  # onnxruntime-web in headless Chromium
}
RUNTIMES = ("eager", *(r for r, f in FORMAT_OF.items() if f in ex.FORMATS))
RUNTIME_PRECISIONS = {"eager": ("fp32", "bf16"), **{r: ex.FORMAT_PRECISIONS[FORMAT_OF[r]] for r in RUNTIMES[1:]}}
# Runtimes whose programs have a static batch of 1 (the mobile case).
BATCH_ONE = ("executorch", "litert")
# The seed papers' networks without an α×ρ grid: family → its registered models, each at its own resolution
# (SqueezeNet 224 px, Xception 299 px), counted as α = 1.
SINGLE_FAMILIES = {
    "squeezenet": ("squeezenet1_0", "squeezenet1_0_simple_bypass", "squeezenet1_0_complex_bypass", "squeezenet1_1"),
    "xception": ("xception",),
}
# The three generations' families, as the registry names them (``{family}_{α}_{resolution}``), then the others.
GRID_FAMILIES = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenet_v3_large_minimal",
    "mobilenet_v3_small_minimal",
    *SINGLE_FAMILIES,
)
# Shorthand accepted by --family: every V3 family.
FAMILY_ALIASES = {"mobilenet_v3": tuple(f for f in GRID_FAMILIES if f.startswith("mobilenet_v3_"))}


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
    if hasattr(run, "time_runs"):
        return run
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
    """One α×ρ variant of a family: cost, known ImageNet accuracy, measured latency per runtime/precision."""

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
    family: str = ""  # e.g. "mobilenet_v3_small" (files from before V2/V3: derived from the name)
    failed: dict[str, str] = field(default_factory=dict)  # "runtime/precision" → the export's or runtime's error

    def __post_init__(self) -> None:
        self.family = self.family or family_of(self.model)

    def to_dict(self) -> dict:
        return asdict(self)


def known_top1() -> dict[str, tuple[float, str]]:
    """ImageNet top-1 the papers print for grid models: name → (top-1 %, source).

    V1 paper Tables 6, 7 and 9; V2 paper Table 4; V3 paper Table 3 (the first table a model appears in);
    SqueezeNet paper Table 6 (its bypass variants); Xception paper Table 1.
    """
    from mobilenets import paper

    on_a_grid = set(registered_grid_names(GRID_FAMILIES))
    known = {}
    sources = {"SQ 6": "SqueezeNet paper Table 6", "X 3": "Xception paper Table 1"}  # X 3 is its params' table
    for row in paper.ROWS + paper.V2_V3_ROWS + paper.squeezenet_table6_rows() + paper.OTHER_ROWS:
        if row.build in on_a_grid:
            generation, _, table = row.table.rpartition(" ")  # "7" (V1 paper) or "V3 3"
            source = sources.get(row.table, f"{generation or 'V1'} paper Table {table}")
            known.setdefault(row.build, (float(row.top1), source))
    # The pretrained 1.0/224 weights are Google's; their top-1 is the paper's 70.6 ± TF-slim's retraining
    # (70.9): no ImageNet here to measure it, so the grid shows the paper's figure.
    return known


def family_of(name: str) -> str:
    """``mobilenet_v3_small_0.75_160`` → ``mobilenet_v3_small``; ``squeezenet1_0_simple_bypass`` → ``squeezenet``."""
    for family, names in SINGLE_FAMILIES.items():
        if name in names:
            return family
    return name.rsplit("_", 2)[0]


def family_axes(family: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The widths and resolutions registered for ``family`` (a single-variant family: α 1 at its models' sizes)."""
    from mobilenets.models import FAMILY_GRIDS, model_defaults

    if family in SINGLE_FAMILIES:
        return (1.0,), tuple(dict.fromkeys(model_defaults(n)["resolution"] for n in SINGLE_FAMILIES[family]))
    return FAMILY_GRIDS[family]


def family_names(family: str, pairs: Iterable[tuple[float, int]]) -> list[str]:
    """The registered names of ``family`` at these (α, resolution) pairs."""
    pairs = list(pairs)
    if family in SINGLE_FAMILIES:
        from mobilenets.models import model_defaults

        return [n for n in SINGLE_FAMILIES[family] if (1.0, model_defaults(n)["resolution"]) in pairs]
    return [f"{family}_{w}_{r}" for w, r in pairs]


def check_families(families: Iterable[str] | None) -> list[str]:
    """The families asked for, aliases expanded (default: ``GRID_FAMILIES``); an unknown one is an error."""
    from mobilenets.models import FAMILY_GRIDS

    out = []
    for f in GRID_FAMILIES if families is None else families:
        for g in FAMILY_ALIASES.get(f, (f,)):
            if g not in FAMILY_GRIDS and g not in SINGLE_FAMILIES:
                choices = ", ".join([*GRID_FAMILIES, *FAMILY_ALIASES])
                raise MobileNetsError(f"unknown family {f!r}; choose from {choices}")
            if g not in out:
                out.append(g)
    if not out:
        raise MobileNetsError("give at least one family")
    return out


# What `bench --grid` measures unless told otherwise, per family: these widths at the first resolution and these
# resolutions at width 1.0 (the shape of V1 paper Tables 6–7), plus every variant a paper prints a top-1 for.
# Small enough to bench in well under an hour on 2 cores: an int8 file takes ~3–45 s to build.
DEFAULT_GRID = {
    "mobilenet_v1": ((1.0, 0.75, 0.5, 0.25), (224, 192, 160, 128)),
    "mobilenet_v2": ((1.4, 1.0, 0.75, 0.5, 0.35), (224, 160, 128)),
    "mobilenet_v3_large": ((1.0, 0.75), (224, 160, 128)),
    "mobilenet_v3_small": ((1.0, 0.75), (224, 160, 128)),
    "mobilenet_v3_large_minimal": ((1.0,), (224,)),
    "mobilenet_v3_small_minimal": ((1.0,), (224,)),
}


def default_grid(family: str) -> list[tuple[float, int]]:
    """The (α, resolution) pairs ``bench_grid`` measures for ``family`` unless told otherwise (``DEFAULT_GRID``;
    a registered family not in it: its whole grid)."""
    if family not in DEFAULT_GRID:
        widths, resolutions = family_axes(family)
        return [(w, r) for w in widths for r in resolutions]
    widths, resolutions = DEFAULT_GRID[family]
    pairs = [(w, resolutions[0]) for w in widths] + [(1.0, r) for r in resolutions[1:]]
    for name in known_top1():
        if family_of(name) == family:
            _, width, resolution = name.rsplit("_", 2)
            pairs.append((float(width), int(resolution)))
    return list(dict.fromkeys(pairs))


def registered_grid_names(families: Iterable[str]) -> list[str]:
    out = []
    for f in families:
        widths, resolutions = family_axes(f)
        out += family_names(f, [(w, r) for w in widths for r in resolutions])
    return out


def grid_names(
    widths: Iterable[float] | None = None,
    resolutions: Iterable[int] | None = None,
    families: Iterable[str] | None = None,
) -> list[str]:
    """Registered names of the grid: ``default_grid`` of each family, or every registered α×ρ of the given
    ``widths`` × ``resolutions`` (a width or resolution no chosen family has is an error)."""
    families = check_families(families)
    axes = {f: family_axes(f) for f in families}
    widths = None if widths is None else list(widths)
    resolutions = None if resolutions is None else list(resolutions)
    for asked, index, what in ((widths, 0, "width"), (resolutions, 1, "resolution")):
        for v in asked or ():
            if not any(v in axes[f][index] for f in families):
                have = sorted({x for f in families for x in axes[f][index]}, reverse=True)
                raise MobileNetsError(
                    f"{what} {v:g} is not on the registered grid of {', '.join(families)}; "
                    f"choose from {', '.join(f'{x:g}' for x in have)}"
                )
    names = []
    for f in families:
        if widths is None and resolutions is None:
            pairs = default_grid(f)
        else:
            fw, fr = axes[f]
            pairs = [(w, r) for w in fw for r in fr if (widths is None or w in widths)]
            pairs = [(w, r) for w, r in pairs if resolutions is None or r in resolutions]
        names += family_names(f, pairs)
    return names


def bench_grid(
    widths: Iterable[float] | None = None,
    resolutions: Iterable[int] | None = None,
    runtimes: Iterable[str] = ("eager", "onnxruntime"),
    precisions: Iterable[str] = ("fp32",),
    batch_size: int = 1,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
    families: Iterable[str] | None = None,
    previous: Iterable[GridRow] = (),
) -> list[GridRow]:
    """Mult-Adds, params, known top-1 and latency (median/p90 ms) of the grid (see ``grid_names``).

    A runtime/precision whose export or run fails for a model is recorded in that row's ``failed`` (one
    line) and the grid goes on. Cells measured in ``previous`` rows (a saved grid) are kept, not re-measured.
    """
    from mobilenets.models import create_model

    names = grid_names(widths, resolutions, families)
    runtimes, precisions = list(runtimes), list(precisions)
    for runtime in runtimes:
        check_runtime(runtime, "fp32")
    known = known_top1()
    done = {r.model: r for r in previous}
    rows = []
    for name in names:
        model = create_model(name).eval()
        mult_adds, params = _costs(name)
        top1, source = known.get(name, (None, ""))
        width_mult = getattr(getattr(model, "cfg", None), "width_mult", 1.0)  # SqueezeNet, Xception: none
        row = GridRow(name, width_mult, model.resolution, mult_adds, params, top1, source, family=family_of(name))
        for runtime in runtimes:
            for precision in precisions:
                key = f"{runtime}/{precision}"
                if precision not in RUNTIME_PRECISIONS[runtime]:
                    continue
                old = done.get(name)
                if old is not None and (key in old.latency_ms or key in old.skipped):
                    for mine, theirs in ((row.latency_ms, old.latency_ms), (row.p90_ms, old.p90_ms)):
                        if key in theirs:
                            mine[key] = theirs[key]
                    if key in old.skipped:
                        row.skipped[key] = old.skipped[key]
                    continue
                _bench_cell(row, model, runtime, precision, batch_size, threads, runs, warmup, progress)
        rows.append(row)
    return rows


def _bench_cell(
    row: GridRow, model: nn.Module, runtime: str, precision: str, batch_size, threads, runs, warmup, progress
):
    """Measure one runtime/precision of a grid row in place; a failure becomes one line in ``row.failed``."""
    key = f"{runtime}/{precision}"
    try:
        results = bench_model(
            model, row.model, (runtime,), (precision,), (batch_size,), threads, runs, warmup,
            skip_unsupported=True, progress=progress,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 — an exporter's or runtime's error for one model must not end the grid
        lines = str(e).strip().splitlines() or [""]
        row.failed[key] = f"{type(e).__name__}: {lines[0][:200]}"
        if progress:
            progress(f"{row.model}: {key} failed: {row.failed[key]}")
        return
    for r in results:
        if r.latency is None:
            row.skipped[key] = r.skipped
        else:
            row.latency_ms[key] = round(r.latency.median_ms, 4)
            row.p90_ms[key] = round(r.latency.p90_ms, 4)


@functools.cache
def _costs(name: str) -> tuple[int, int]:
    """(Mult-Adds, parameters) of a registered model at its resolution, profiled once per process."""
    from mobilenets.models import create_model
    from mobilenets.profile import profile

    with torch_threads(1):  # a small forward pass; more threads only contend on a busy machine
        prof = profile(create_model(name))
    return prof.mult_adds, prof.params


def grid_cost_rows(
    widths: Iterable[float] | None = None,
    resolutions: Iterable[int] | None = None,
    families: Iterable[str] | None = None,
) -> list[GridRow]:
    """The grid without latency (cost and known accuracy only): cheap, for `select` by params/Mult-Adds."""
    return bench_grid(widths, resolutions, runtimes=(), precisions=(), families=families)


def pareto_front(rows: list[GridRow], key: str, by: str = "top1") -> list[GridRow]:
    """The rows no other row beats on ``key`` ("runtime/precision") latency and ``by`` ("top1" or
    "mult_adds", higher is better) at once; fastest first. Rows without a latency or a ``by`` value are left out.
    """
    pts = [r for r in rows if key in r.latency_ms and getattr(r, by) is not None]
    pts.sort(key=lambda r: (r.latency_ms[key], -getattr(r, by)))
    front, best = [], -math.inf
    for r in pts:
        if getattr(r, by) > best:
            front.append(r)
            best = getattr(r, by)
    return front


def latency_keys(rows: list[GridRow]) -> list[str]:
    """The "runtime/precision" cells measured (or failed) in ``rows``, in ``RUNTIMES`` order."""
    order = {r: i for i, r in enumerate(RUNTIMES)}
    keys = {k for r in rows for k in (*r.latency_ms, *r.failed)}
    return sorted(keys, key=lambda k: (order.get(k.split("/")[0], 99), k))


def format_grid(rows: list[GridRow], cpu_line: str | None = None) -> str:
    """The grid as a text table, headed by the CPU it was measured on (this one unless ``cpu_line`` is given),
    then the Pareto front of latency against the papers' top-1 for each runtime/precision."""
    keys = latency_keys(rows)
    header = ["model", "α", "res", "Mult-Adds (M)", "params (M)", "top-1 %"] + [f"{k} ms" for k in keys]
    lines = [header]
    for r in rows:
        top1 = f"{r.top1:.1f}" if r.top1 is not None else "—"
        lat = [f"{r.latency_ms[k]:.2f}" if k in r.latency_ms else "failed" if k in r.failed else "—" for k in keys]
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
    fronts = [(k, pareto_front(rows, k)) for k in keys]
    if any(len(front) > 1 for _k, front in fronts):
        out += ["", "Pareto front, latency vs the papers' top-1 (no other model is both faster and more accurate):"]
        for k, front in fronts:
            out.append(f"  {k}: " + " → ".join(f"{r.model} {r.latency_ms[k]:.2f} ms {r.top1:.1f}%" for r in front))
    skipped = {k: v for r in rows for k, v in r.skipped.items()}
    out += [f"skipped {k}: {v}" for k, v in sorted(skipped.items())]
    out += [f"failed {r.model} {k}: {v}" for r in rows for k, v in sorted(r.failed.items())]
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


# One colour and marker per family in every plot.
FAMILY_STYLE = {
    "mobilenet_v1": ("C0", "o"),
    "mobilenet_v2": ("C1", "s"),
    "mobilenet_v3_large": ("C2", "^"),
    "mobilenet_v3_small": ("C3", "v"),
    "mobilenet_v3_large_minimal": ("C4", "D"),
    "mobilenet_v3_small_minimal": ("C5", "P"),
    "squeezenet": ("C8", "*"),
    "xception": ("C9", "X"),
}


def plot_grid(rows: list[GridRow], out_dir: str | os.PathLike) -> list[Path]:
    """PNGs: top-1 vs Mult-Adds (log x) and vs params, like V1 paper Figures 4–5; latency vs Mult-Adds and
    latency vs top-1, one panel per runtime/precision with its Pareto front. One colour/marker per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise MobileNetsError(f"cannot write plots to {out_dir}: the folder does not exist; create it first")
    paths = []
    known = [r for r in rows if r.top1 is not None]
    families = list(dict.fromkeys(r.family for r in rows))

    def style(family: str) -> dict:
        colour, marker = FAMILY_STYLE.get(family, ("C7", "x"))
        return {"color": colour, "marker": marker}

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
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for family in families:
            pts = [r for r in known if r.family == family]
            if pts:
                xs = [getattr(r, x_attr) / 1e6 for r in pts]
                ax.scatter(xs, [r.top1 for r in pts], label=family, **style(family))
        for r in known:
            ax.annotate(
                r.model if r.family in SINGLE_FAMILIES else f"{r.width_mult:g}-{r.resolution}",
                (getattr(r, x_attr) / 1e6, r.top1),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        if logx:
            ax.set_xscale("log")
            _plain_log_labels(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ImageNet top-1 (%), as the papers print it")
        what = "Mult-Adds" if logx else "parameters"
        ax.set_title(f"Accuracy vs {what} ({len(known)} models with a published top-1)", fontsize=9)
        if known:
            ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        finish(fig, fname)

    keys = [k for k in latency_keys(rows) if any(k in r.latency_ms for r in rows)]
    for by, fname, ylabel in (
        ("mult_adds", "latency_vs_mult_adds.png", "Mult-Adds (millions, log scale)"),
        ("top1", "latency_vs_top1.png", "ImageNet top-1 (%), the papers' figures"),
    ):
        if not keys:
            break
        cols = min(3, len(keys))
        nrows = -(-len(keys) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.8 * nrows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            value = (lambda r: r.mult_adds / 1e6) if by == "mult_adds" else (lambda r: r.top1)
            for family in families:
                pts = [r for r in rows if r.family == family and key in r.latency_ms and getattr(r, by) is not None]
                if pts:
                    ax.scatter([r.latency_ms[key] for r in pts], [value(r) for r in pts], s=18, label=family,
                               **style(family))  # fmt: skip
            front = pareto_front(rows, key, by)
            if len(front) > 1:
                ax.step([r.latency_ms[key] for r in front], [value(r) for r in front], "k-", where="post",
                        linewidth=0.8, alpha=0.7, label="Pareto front")  # fmt: skip
            ax.set_xscale("log")
            _plain_log_labels(ax.xaxis)
            if by == "mult_adds":
                ax.set_yscale("log")
                _plain_log_labels(ax.yaxis)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("latency, median ms (log scale)", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.grid(True, alpha=0.3, which="both")
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        if axes.flat[0].get_legend_handles_labels()[0]:
            axes.flat[0].legend(fontsize=6)
        fig.suptitle(f"{ylabel.split(' (')[0]} against latency; black: the Pareto front", fontsize=10)
        fig.tight_layout()
        finish(fig, fname)
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
    top1: float | None = None  # the papers' figure, or interpolated within the family (then top1_estimated)
    top1_estimated: bool = False


def estimate_top1(rows: list[GridRow]) -> dict[str, float]:
    """Top-1 for the rows without a published figure, interpolated within their family in log Mult-Adds
    between the family's published points (accuracy is close to log-linear in Mult-Adds: V1 paper Figure 4).
    Rows outside their family's published range get no estimate."""
    known = known_top1()
    out = {}
    for family in {r.family for r in rows}:
        pts = sorted(
            (_costs(n)[0], top1) for n, (top1, _src) in known.items() if family_of(n) == family
        )  # every published point of the family, whether or not it is in ``rows``
        if len(pts) < 2:
            continue
        xs, ys = np.log([p[0] for p in pts]), [p[1] for p in pts]
        for r in rows:
            if r.family == family and r.top1 is None and xs[0] <= math.log(r.mult_adds) <= xs[-1]:
                out[r.model] = round(float(np.interp(math.log(r.mult_adds), xs, ys)), 1)
    return out


def select(
    rows: list[GridRow],
    max_latency_ms: float | None = None,
    max_params: float | None = None,
    max_madds: float | None = None,
    runtime: str | None = None,
) -> list[Selection]:
    """The grid variants within every given budget, best first, across families.

    "Best" is the highest ImageNet top-1: the papers' figure where printed, else interpolated within the
    family (``estimate_top1``); variants with neither come last, most Mult-Adds first (within a family
    accuracy rises with Mult-Adds, Figure 4). ``max_params`` and ``max_madds`` are absolute counts.
    ``runtime`` is "runtime" or "runtime/precision"; a row's latency is its fastest measured entry for it
    (any runtime when not given).
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
    estimated = estimate_top1(rows)
    out = []
    for row in rows:
        latency = latency_of(row)
        if max_latency_ms is not None and (latency is None or latency > max_latency_ms):
            continue
        if max_params is not None and row.num_params > max_params:
            continue
        if max_madds is not None and row.mult_adds > max_madds:
            continue
        top1 = row.top1 if row.top1 is not None else estimated.get(row.model)
        out.append(Selection(row, latency, top1, row.top1 is None and top1 is not None))
    return sorted(out, key=lambda s: (s.top1 is None, -(s.top1 or 0.0), -s.row.mult_adds))
