"""The α×ρ grids of MobileNetV1, V2 and V3 (the V1 paper's Figures 4–5) and V4's five sizes (each at α 1 and its
paper's resolution) beside the seed papers' single networks: cost, the papers' top-1 and measured latency per
runtime, the Pareto front, and the grid's JSON file. Detectors
(``--family detectors``) join it at any α and input size with the papers' COCO mAP (``detectors.py``), in a table of
their own: mAP and top-1 are not one scale.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from mobilenets.deploy.bench.latency import RUNTIME_PRECISIONS, RUNTIMES, bench_model, check_runtime, torch_threads
from mobilenets.deploy.cpu import cpu_info
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_text
from mobilenets.models import FAMILIES, FAMILY_GRIDS, base_name, model_defaults
from mobilenets.models import family_of as registered_family

# From the families' declarations (mobilenets/models, ``Family.bench_grid`` / ``bench_models``):
# the families `bench --grid` measures with an α×ρ grid (V1, V2, V3, and each V4 size at α 1; what it measures
# unless told otherwise: these widths at the first resolution and these resolutions at width 1.0, the shape of V1
# paper Tables 6–7, plus every variant a paper prints a top-1 for), and the seed papers' networks without one,
# family → its models, each at its own resolution (SqueezeNet 224 px, Xception 299 px), counted as α = 1.
DEFAULT_GRID = {f.name: f.bench_grid for f in FAMILIES.values() if f.bench_grid is not None}
SINGLE_FAMILIES = {f.name: f.bench_models for f in FAMILIES.values() if f.bench_models}
GRID_FAMILIES = (*DEFAULT_GRID, *SINGLE_FAMILIES)
# Shorthand accepted by --family: every V3 family, every V4 size. ("detectors", every detector, is detectors.ALIAS.)
FAMILY_ALIASES = {v: tuple(f for f in GRID_FAMILIES if f.startswith(v + "_")) for v in ("mobilenet_v3", "mobilenet_v4")}


def _detectors():
    """The detectors' part of the grid, imported on first use: torchvision's detection models take about a second
    to import, which a classifier grid and every start of the CLI (its parsers read this module) need not pay."""
    from mobilenets.deploy.bench import detectors

    return detectors


def is_classifier_family(family: str) -> bool:
    return family in FAMILY_GRIDS or family in SINGLE_FAMILIES


@dataclass
class GridRow:
    """One α×ρ variant of a family: cost, known accuracy, measured latency per runtime/precision.

    A classifier's accuracy is ImageNet top-1 (``top1``); a detector's (``task`` "detection", ``family`` the
    detector, ``resolution`` its input side) is COCO mAP (``coco_map``), both as the papers print them.
    """

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
    task: str = "classification"  # or "detection"
    coco_map: float | None = None  # a detector's COCO mAP (%) where a paper prints it
    coco_map_source: str = ""

    def __post_init__(self) -> None:
        self.family = self.family or family_of(self.model)

    def to_dict(self) -> dict:
        return asdict(self)


def known_top1() -> dict[str, tuple[float, str]]:
    """ImageNet top-1 the papers print for grid models: name → (top-1 %, source).

    V1 paper Tables 6, 7 and 9; V2 paper Table 4; V3 paper Table 3 (the first table a model appears in); the V4
    paper's ImageNet results; SqueezeNet paper Table 6 (its bypass variants); Xception paper Table 1.
    """
    from mobilenets import paper

    on_a_grid = set(registered_grid_names(GRID_FAMILIES))
    known = {}
    sources = {"SQ 6": "SqueezeNet paper Table 6", "X 3": "Xception paper Table 1"}  # X 3 is its params' table
    for row in paper.ROWS + paper.V2_V3_ROWS + paper.V4_ROWS + paper.squeezenet_table6_rows() + paper.OTHER_ROWS:
        if row.build in on_a_grid:
            source = sources.get(row.table, paper.table_source(row.table))  # "7" (V1 paper) or "V3 3"
            known.setdefault(row.build, (float(row.top1), source))
    # The pretrained 1.0/224 weights are Google's; their top-1 is the paper's 70.6 ± TF-slim's retraining
    # (70.9): no ImageNet here to measure it, so the grid shows the paper's figure.
    return known


def family_of(name: str) -> str:
    """``mobilenet_v3_small_0.75_160`` → ``mobilenet_v3_small``; ``squeezenet1_0_simple_bypass`` → ``squeezenet``
    (a grid file's model no longer registered: its name without the α/resolution suffix)."""
    try:
        return registered_family(name).name
    except MobileNetsError:
        return base_name(name)


def family_axes(family: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The widths and resolutions registered for ``family`` (a single-variant family: α 1 at its models' sizes)."""
    if family in SINGLE_FAMILIES:
        return (1.0,), tuple(dict.fromkeys(model_defaults(n)["resolution"] for n in SINGLE_FAMILIES[family]))
    return FAMILY_GRIDS[family]


def family_names(family: str, pairs: Iterable[tuple[float, int]]) -> list[str]:
    """The registered names of ``family`` at these (α, resolution) pairs."""
    pairs = list(pairs)
    if family in SINGLE_FAMILIES:
        return [n for n in SINGLE_FAMILIES[family] if (1.0, model_defaults(n)["resolution"]) in pairs]
    return [f"{family}_{w}_{r}" for w, r in pairs]


def check_families(families: Iterable[str] | None) -> list[str]:
    """The families asked for, aliases expanded (default: ``GRID_FAMILIES``); an unknown one is an error."""
    out = []
    for f in GRID_FAMILIES if families is None else families:
        expanded = FAMILY_ALIASES.get(f, (f,))
        if not all(is_classifier_family(g) for g in expanded):
            detectors = _detectors()
            expanded = detectors.names() if f == detectors.ALIAS else expanded
            if f not in (detectors.ALIAS, *detectors.names()):
                choices = ", ".join([*GRID_FAMILIES, *FAMILY_ALIASES, detectors.ALIAS])
                raise MobileNetsError(
                    f"unknown family {f!r}; choose from {choices} (or one detector: {', '.join(detectors.names())})"
                )
        for g in expanded:
            if g not in out:
                out.append(g)
    if not out:
        raise MobileNetsError("give at least one family")
    return out


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
    published_only: bool = False,
) -> list[str]:
    """Registered names of the grid: ``default_grid`` of each family, or every registered α×ρ of the given
    ``widths`` × ``resolutions`` (a width or resolution no chosen family has is an error). A detector's rows are
    ``detectors.grid_names``: any α and input size. ``published_only`` keeps the variants a paper prints an
    accuracy for (top-1, or a detector's COCO mAP): the points a Pareto front against the papers' figures uses."""
    families = check_families(families)
    classifiers = [f for f in families if is_classifier_family(f)]
    axes = {f: family_axes(f) for f in classifiers}
    widths = None if widths is None else list(widths)
    resolutions = None if resolutions is None else list(resolutions)
    for asked, index, what in ((widths, 0, "width"), (resolutions, 1, "resolution")):
        for v in asked or ():
            if classifiers == families and not any(v in axes[f][index] for f in families):
                have = sorted({x for f in families for x in axes[f][index]}, reverse=True)
                raise MobileNetsError(
                    f"{what} {v:g} is not on the registered grid of {', '.join(families)}; "
                    f"choose from {', '.join(f'{x:g}' for x in have)}"
                )
    names = []
    for f in families:
        if f not in axes:
            names += _detectors().grid_names(f, widths, resolutions)
            continue
        if widths is None and resolutions is None:
            pairs = default_grid(f)
        else:
            fw, fr = axes[f]
            pairs = [(w, r) for w in fw for r in fr if (widths is None or w in widths)]
            pairs = [(w, r) for w, r in pairs if resolutions is None or r in resolutions]
        names += family_names(f, pairs)
    if published_only:
        known = known_top1()
        names = [n for n in names if is_published(n, known)]
        if not names:
            raise MobileNetsError(
                f"no paper prints an accuracy for any variant of {', '.join(families)} on this grid: "
                "drop --published-only, or choose other widths/resolutions"
            )
    return names


def is_published(name: str, known: dict[str, tuple[float, str]] | None = None) -> bool:
    """Whether a paper prints this grid row's accuracy (ImageNet top-1, or a detector's COCO mAP); ``known`` is
    ``known_top1()`` when the caller has it."""
    if is_classifier_family(family_of(name)):
        return name in (known_top1() if known is None else known)
    return _detectors().coco_map(name)[0] is not None


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
    published_only: bool = False,
) -> list[GridRow]:
    """Mult-Adds, params, known accuracy (top-1, or a detector's COCO mAP) and latency (median/p90 ms) of the grid
    (see ``grid_names``).

    A runtime/precision whose export or run fails for a model is recorded in that row's ``failed`` (one
    line) and the grid goes on; one that cannot run the model (no detector file for it) in ``skipped``. Cells
    measured in ``previous`` rows (a saved grid) are kept, not re-measured.
    """
    names = grid_names(widths, resolutions, families, published_only)
    runtimes, precisions = list(runtimes), list(precisions)
    for runtime in runtimes:
        check_runtime(runtime, "fp32")
    known = known_top1()
    done = {r.model: r for r in previous}
    rows = []
    for name in names:
        family = family_of(name)
        if is_classifier_family(family):
            row, model = _classifier_row(name, family, known)
        else:  # the untrained detector is built only to be timed
            row, model = _detector_row(name, family), (_detectors().build(name) if runtimes else None)
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


def _classifier_row(name: str, family: str, known: dict[str, tuple[float, str]]) -> tuple[GridRow, nn.Module]:
    from mobilenets.models import create_model

    model = create_model(name).eval()
    mult_adds, params = model_costs(name)
    top1, source = known.get(name, (None, ""))
    width_mult = getattr(getattr(model, "cfg", None), "width_mult", 1.0)  # SqueezeNet, Xception: none
    return GridRow(name, width_mult, model.resolution, mult_adds, params, top1, source, family=family), model


def _detector_row(name: str, family: str) -> GridRow:
    detectors = _detectors()
    _, width_mult, size = detectors.parse(name)
    mult_adds, params = detectors.costs(name)
    coco_map, source = detectors.coco_map(name)
    return GridRow(
        name,
        width_mult,
        size,
        mult_adds,
        params,
        family=family,
        task="detection",
        coco_map=coco_map,
        coco_map_source=source,
    )


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
def model_costs(name: str) -> tuple[int, int]:
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
    """The rows no other row beats on ``key`` ("runtime/precision") latency and ``by`` ("top1", "coco_map" or
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


# Each task's table: its first columns' names, the accuracy it ranks by (GridRow field, column, what it is, unit).
TABLES = {
    "classification": ("model", "res", "top1", "top-1 %", "the papers' top-1", "%"),
    "detection": ("detector", "size", "coco_map", "COCO mAP", "the papers' COCO mAP", " mAP"),
}
DETECTION_HEADING = (
    "Detectors (COCO's 91 classes): latency is one image → boxes, labels and scores (resize, network, box decoding, "
    "NMS);\nuntrained weights give NMS its most boxes, so it bounds a trained model's. COCO mAP as printed for the "
    "model at α 1\nand its own size."
)


def format_grid(rows: list[GridRow], cpu_line: str | None = None) -> str:
    """The grid as text tables, headed by the CPU it was measured on (this one unless ``cpu_line`` is given): the
    classifiers with the papers' top-1, then the detectors with the papers' COCO mAP, each followed by the Pareto
    front of latency against its accuracy for each runtime/precision."""
    classifiers = [r for r in rows if r.task != "detection"]
    detectors = [r for r in rows if r.task == "detection"]
    out = [f"CPU: {cpu_line or cpu_info().line()}"] if any(r.latency_ms for r in rows) else []
    if classifiers or not detectors:
        out += _format_table(classifiers, "classification")
    if detectors:
        out += [""] if classifiers else []
        out += [DETECTION_HEADING, *_format_table(detectors, "detection")]
        sources = {r.family: r.coco_map_source for r in detectors if r.coco_map_source}
        if sources:
            out.append("COCO mAP from: " + "; ".join(f"{family} {source}" for family, source in sources.items()))
    return "\n".join(out)


def _format_table(rows: list[GridRow], task: str) -> list[str]:
    """One task's rows as table lines, then its Pareto fronts, skipped and failed cells."""
    model_column, size_column, field_name, column, what, unit = TABLES[task]
    keys = latency_keys(rows)
    header = [model_column, "α", size_column, "Mult-Adds (M)", "params (M)", column] + [f"{k} ms" for k in keys]
    lines = [header]
    for r in rows:
        accuracy = getattr(r, field_name)
        lat = [f"{r.latency_ms[k]:.2f}" if k in r.latency_ms else "failed" if k in r.failed else "—" for k in keys]
        lines.append(
            [
                r.model,
                f"{r.width_mult:g}",
                str(r.resolution),
                f"{r.mult_adds / 1e6:.1f}",
                f"{r.num_params / 1e6:.2f}",
                f"{accuracy:.1f}" if accuracy is not None else "—",
                *lat,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    out.insert(1, "-" * len(out[0]))
    fronts = [(k, pareto_front(rows, k, field_name)) for k in keys]
    if any(len(front) > 1 for _k, front in fronts):
        out += ["", f"Pareto front, latency vs {what} (no other model is both faster and more accurate):"]
        for k, front in fronts:
            out.append(
                f"  {k}: "
                + " → ".join(f"{r.model} {r.latency_ms[k]:.2f} ms {getattr(r, field_name):.1f}{unit}" for r in front)
            )
    skipped = {k: v for r in rows for k, v in r.skipped.items()}
    out += [f"skipped {k}: {v}" for k, v in sorted(skipped.items())]
    out += [f"failed {r.model} {k}: {v}" for r in rows for k, v in sorted(r.failed.items())]
    return out


def save_grid(rows: list[GridRow], path: str | os.PathLike) -> Path:
    """Write the grid as JSON, atomically, with the CPU it was measured on."""
    path = Path(path)
    cpu = cpu_info()
    data = {"cpu": {**cpu.to_dict(), "line": cpu.line()}, "rows": [r.to_dict() for r in rows]}
    atomic_write_text(path, json.dumps(data, indent=2))
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
