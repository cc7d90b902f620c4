"""Latency of any model on PyTorch eager, ONNX Runtime, ExecuTorch-XNNPACK, OpenVINO and LiteRT; the α×ρ grid.

Latency is the median (and 90th percentile) of many timed runs after warm-up, batch 1 or N, with a fixed
number of CPU threads. ``bench_grid`` measures the α×ρ grids of MobileNetV1, V2 and V3 (``DEFAULT_GRID``: the
V1 paper's 16 models of Figures 4–5, and for V2 and each V3 family the shape of V1 Tables 6–7), V4's five sizes
at their paper resolutions, beside the seed papers' networks that have one variant each (``SINGLE_FAMILIES``:
SqueezeNet with and without its bypasses, Xception), ``select`` picks the variants that fit a budget, across
families, and ``pareto_front`` marks the ones no other beats.
The SSD/SSDLite detectors join the grid and ``select`` on request (family "detectors"), timed from image to final
boxes and ranked by the papers' COCO mAP in a table of their own.
Timings are noisy on shared machines: compare numbers measured in one run.

One file per part: latency (timing one model on each runtime), grid (the α×ρ grid, its table and JSON file),
detectors (the detectors' rows: names, costs, the papers' mAP), plots (the grid's PNGs) and select (variants
within a budget).
"""

from mobilenets.deploy.bench.grid import (
    DEFAULT_GRID,
    FAMILY_ALIASES,
    GRID_FAMILIES,
    SINGLE_FAMILIES,
    GridRow,
    bench_grid,
    check_families,
    default_grid,
    family_axes,
    family_names,
    family_of,
    format_grid,
    grid_cost_rows,
    grid_names,
    is_classifier_family,
    is_published,
    known_top1,
    latency_keys,
    load_grid,
    load_grid_cpu,
    model_costs,
    pareto_front,
    registered_grid_names,
    save_grid,
)
from mobilenets.deploy.bench.latency import (
    BATCH_ONE,
    FORMAT_OF,
    RUNTIME_PRECISIONS,
    RUNTIMES,
    BenchResult,
    Latency,
    bench_model,
    check_runtime,
    make_runner,
    time_calls,
    timed_calls,
    torch_threads,
    unavailable_reason,
)
from mobilenets.deploy.bench.plots import FAMILY_STYLE, plot_grid
from mobilenets.deploy.bench.select import Selection, estimate_top1, select

__all__ = [
    "BATCH_ONE",
    "DEFAULT_GRID",
    "FAMILY_ALIASES",
    "FAMILY_STYLE",
    "FORMAT_OF",
    "GRID_FAMILIES",
    "RUNTIMES",
    "RUNTIME_PRECISIONS",
    "SINGLE_FAMILIES",
    "BenchResult",
    "GridRow",
    "Latency",
    "Selection",
    "bench_grid",
    "bench_model",
    "check_families",
    "check_runtime",
    "default_grid",
    "estimate_top1",
    "family_axes",
    "family_names",
    "family_of",
    "format_grid",
    "grid_cost_rows",
    "grid_names",
    "is_classifier_family",
    "is_published",
    "known_top1",
    "latency_keys",
    "load_grid",
    "load_grid_cpu",
    "make_runner",
    "model_costs",
    "pareto_front",
    "plot_grid",
    "registered_grid_names",
    "save_grid",
    "select",
    "time_calls",
    "timed_calls",
    "torch_threads",
    "unavailable_reason",
]
