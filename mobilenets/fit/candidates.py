"""`fit`'s candidates: every registered classifier family × α × ρ, its exact cost for the user's data (input
channels, classes), the papers' top-1 as a prior, and its latency on the target runtime, measured here (cached in
the out-dir) or read from a latency table the user measured on their own device.

Latency is measured the way ``bench`` measures it (:func:`mobilenets.deploy.bench.make_runner`: the file ``export``
writes, BN folded; ``time_calls``: median of timed batch-1 calls after warm-up). Measuring every candidate would
cost minutes, so each family is searched by bisection in Mult-Adds order: within one family latency rises with
Mult-Adds (V1 paper Figures 4-5), so once a member is measured over the budget every larger one is taken as over
it, and once one fits every smaller one is taken as fitting. Those taken (not measured) are marked so in the report;
the ones the search trains are always measured.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mobilenets.deploy.bench.grid import (
    GridRow,
    family_axes,
    family_names,
    is_classifier_family,
    known_top1,
    model_costs,
)
from mobilenets.deploy.bench.latency import FORMAT_OF, RUNTIMES, check_runtime, make_runner, time_calls, torch_threads
from mobilenets.deploy.bench.select import estimate_top1
from mobilenets.deploy.cpu import cpu_info
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_json
from mobilenets.models import create_model, model_defaults

# The export formats' names and the bench runtimes' names are both accepted: onnx = onnxruntime, tflite = litert.
RUNTIME_OF_FORMAT = {fmt: runtime for runtime, fmt in FORMAT_OF.items()}
# How a candidate's weights count in its file, in bytes per parameter (a file-size budget's first filter; the
# written file is measured again before it is kept).
BYTES_PER_PARAM = {"int8": 1.0, "fp16": 2.0, "bf16": 4.0, "fp32": 4.0}


def resolve_runtime(runtime: str, precision: str) -> tuple[str, str]:
    """(export format, bench runtime) of ``--runtime``, which takes either name (onnx or onnxruntime, tflite or
    litert); an unknown one, or a precision it does not run, is an error."""
    if runtime in RUNTIME_OF_FORMAT:
        fmt, bench_runtime = runtime, RUNTIME_OF_FORMAT[runtime]
    elif runtime in FORMAT_OF:
        fmt, bench_runtime = FORMAT_OF[runtime], runtime
    else:
        names = sorted({*RUNTIME_OF_FORMAT, *(r for r in RUNTIMES if r != "eager")})
        raise MobileNetsError(f"unknown runtime {runtime!r}; choose one of {', '.join(names)}")
    check_runtime(bench_runtime, precision)
    return fmt, bench_runtime


@dataclass
class Candidate:
    """One α×ρ variant of a family, as built for the user's data, and what is known of it."""

    model: str  # what create_model builds: the family (mobilenet_v1) or a single network (squeezenet1_1)
    width_mult: float | None  # None: the network has no width multiplier
    resolution: int
    mult_adds: int = 0
    num_params: int = 0
    top1_prior: float | None = None  # ImageNet top-1 (%): the papers' figure, or interpolated (prior_source)
    prior_source: str = ""
    latency_ms: float | None = None
    latency_source: str = ""  # "measured", "table", or "assumed: …" (bisection; see the module docstring)
    verdict: str = ""  # "fits", or why the candidate is out
    init_note: str | None = None  # the weights a trial starts from, in words

    @property
    def name(self) -> str:
        if self.width_mult is None:
            default = model_defaults(self.model).get("resolution")
            return self.model if self.resolution == default else f"{self.model}_{self.resolution}"
        return f"{self.model}_{self.width_mult}_{self.resolution}"

    @property
    def fits(self) -> bool:
        return self.verdict == "fits"

    def model_kwargs(self, num_classes: int, in_chans: int) -> dict:
        """create_model's keyword arguments, as ``train`` builds the network (the small-image stem at ≤ 64 px)."""
        kw = dict(num_classes=num_classes, in_chans=in_chans, resolution=self.resolution)
        if self.width_mult is not None:
            kw.update(width_mult=self.width_mult, stem_stride=1 if self.resolution <= 64 else 2)
        return kw

    def build(self, num_classes: int, in_chans: int) -> torch.nn.Module:
        return create_model(self.model, **self.model_kwargs(num_classes, in_chans)).eval()

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


def candidate_space(
    families: Iterable[str] | None = None,
    widths: Iterable[float] | None = None,
    resolutions: Iterable[int] | None = None,
) -> list[Candidate]:
    """Every registered classifier family × α × ρ (``bench --grid``'s families; ``families`` to narrow them).

    ``widths`` keeps those widths of each family's registered ones; ``resolutions`` replaces the registered
    resolutions (any side works: the networks pool globally), e.g. 28 for Fashion-MNIST-sized inputs.
    """
    from mobilenets.deploy.bench.grid import FAMILY_ALIASES, GRID_FAMILIES

    asked = list(families) if families else list(GRID_FAMILIES)
    chosen = []
    for f in asked:
        for g in FAMILY_ALIASES.get(f, (f,)):
            if not is_classifier_family(g):
                choices = ", ".join([*GRID_FAMILIES, *FAMILY_ALIASES])
                raise MobileNetsError(f"unknown classifier family {g!r}; choose from {choices}")
            chosen.append(g)
    widths = None if widths is None else [float(w) for w in widths]
    resolutions = None if resolutions is None else [int(r) for r in resolutions]
    for r in resolutions or ():
        if r < 16:
            raise MobileNetsError(f"resolution {r} is too small; give 16 px or more")
    out = []
    for family in dict.fromkeys(chosen):
        family_widths, family_resolutions = family_axes(family)
        single = family_widths == (1.0,) and family not in _width_families()
        if single:
            models = family_names(family, [(1.0, r) for r in family_resolutions])
            if widths is not None and 1.0 not in widths:
                continue
            for model in models:
                for r in resolutions or [model_defaults(model)["resolution"]]:
                    out.append(Candidate(model, None, r))
            continue
        for w in family_widths:
            if widths is not None and w not in widths:
                continue
            for r in resolutions or family_resolutions:
                out.append(Candidate(family, w, r))
    if not out:
        raise MobileNetsError(
            f"no candidates: none of the widths {', '.join(f'{w:g}' for w in widths or [])} is registered for "
            f"{', '.join(dict.fromkeys(chosen))}"
        )
    return out


def _width_families() -> set[str]:
    from mobilenets.models import FAMILY_GRIDS

    return set(FAMILY_GRIDS)


def add_costs(candidates: list[Candidate], num_classes: int, in_chans: int) -> None:
    """Exact Mult-Adds and parameters of each candidate as built for the data (profiled on one thread)."""
    from mobilenets.profile import profile

    with torch_threads(1):
        for c in candidates:
            prof = profile(c.build(num_classes, in_chans))
            c.mult_adds, c.num_params = prof.mult_adds, prof.params


def add_priors(candidates: list[Candidate]) -> None:
    """The papers' ImageNet top-1 of each candidate where printed, else interpolated within its family in log
    Mult-Adds (``select.estimate_top1``). A candidate at a resolution off the papers' grid (28 px for Fashion-MNIST)
    takes the prior of the same network at the family's largest registered resolution: its capacity, which is what
    ranks networks on small images. Candidates outside their family's published range get none."""
    off_grid = [c for c in candidates if c.width_mult is not None and c.resolution not in family_axes(c.model)[1]]
    _set_priors([c for c in candidates if c not in off_grid])  # an off-grid Mult-Adds count says nothing of capacity
    for c in off_grid:
        widths, resolutions = family_axes(c.model)
        if c.width_mult in widths:
            stand_in = Candidate(c.model, c.width_mult, resolutions[0])
            stand_in.mult_adds, stand_in.num_params = model_costs(stand_in.name)
            _set_priors([stand_in])
            if stand_in.top1_prior is not None:
                c.top1_prior = stand_in.top1_prior
                c.prior_source = f"{stand_in.name}'s ({stand_in.prior_source})"


def _set_priors(candidates: list[Candidate]) -> None:
    known = known_top1()
    rows = []
    for c in candidates:
        registered = f"{c.model}_{c.width_mult}_{c.resolution}" if c.width_mult is not None else c.model
        hit = known.get(registered) if (c.width_mult is not None or c.name == c.model) else None
        if hit:
            c.top1_prior, c.prior_source = hit[0], hit[1]
        family = c.model if c.width_mult is not None else _family_of(c.model)
        rows.append(GridRow(c.name, c.width_mult or 1.0, c.resolution, c.mult_adds, c.num_params, c.top1_prior,
                            family=family))  # fmt: skip
    estimated = estimate_top1(rows)
    for c in candidates:
        if c.top1_prior is None and c.name in estimated:
            c.top1_prior, c.prior_source = estimated[c.name], "interpolated in log Mult-Adds within the family"


def _family_of(model: str) -> str:
    from mobilenets.deploy.bench.grid import family_of

    return family_of(model)


def prior_key(c: Candidate) -> tuple:
    """Best first: the highest prior top-1; candidates without one last, most Mult-Adds first."""
    return (c.top1_prior is None, -(c.top1_prior or 0.0), -c.mult_adds)


def mult_adds_key(c: Candidate) -> tuple:
    """The naive ranking: the most Mult-Adds first (within a family accuracy rises with them, V1 paper Figure 4)."""
    return (-c.mult_adds,)


RANKINGS = {"prior": prior_key, "mult-adds": mult_adds_key}


# --- latency ------------------------------------------------------------------------------------------------------


class LatencyCache:
    """Measured latencies in a JSON file (the out-dir's ``latency.json``), keyed by candidate, data shape, runtime,
    precision and threads, for this CPU only: a fit that resumes, or runs again with another budget, measures
    nothing twice."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.cpu = cpu_info().line()
        self.entries: dict[str, float] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                data = {}
            if data.get("cpu") == self.cpu:
                self.entries = dict(data.get("latency_ms", {}))

    @staticmethod
    def key(c: Candidate, num_classes: int, in_chans: int, runtime: str, precision: str, threads: int | None) -> str:
        return f"{c.name}|{in_chans}x{num_classes}|{runtime}/{precision}|threads={threads or 'default'}"

    def save(self) -> None:
        atomic_write_json(self.path, {"cpu": self.cpu, "latency_ms": self.entries})


def measure_latency(
    c: Candidate,
    num_classes: int,
    in_chans: int,
    runtime: str,
    precision: str,
    threads: int | None,
    calib_images: torch.Tensor | None = None,
    runs: int = 30,
    warmup: int = 5,
) -> float:
    """Median batch-1 latency (ms) of the candidate's file on ``runtime`` at ``precision`` on this CPU: bench's
    runner and timing (random weights: latency does not depend on them)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mobilenets-fit-") as workdir, torch.inference_mode(False):
        fn = make_runner(c.build(num_classes, in_chans), runtime, precision, 1, threads, workdir, calib_images)
        time.sleep(0.2)  # let the previous runner's spinning worker threads stop (see bench_model)
        with torch_threads(threads):
            latency = time_calls(fn, runs, warmup)
        del fn
    return round(latency.median_ms, 4)


def read_latency_table(path: str | Path, runtime: str, precision: str) -> dict[str, float]:
    """Model name → median ms from a user's table: ``mobilenets bench NAME --json`` output (a list of results; several
    runs' lists may be concatenated into one list) or a ``bench --grid`` grid.json; only rows of ``runtime`` at
    ``precision`` and batch 1."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MobileNetsError(f"latency table {path} not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise MobileNetsError(f"{path}: not a JSON latency table ({e})") from None
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise MobileNetsError(f"{path}: expected `bench --json` output (a list) or a bench --grid grid.json")
    out = {}
    key = f"{runtime}/{precision}"
    for r in rows:
        if not isinstance(r, dict) or "model" not in r:
            raise MobileNetsError(f"{path}: every row needs a 'model' (write it with `mobilenets bench --json`)")
        if "latency_ms" in r and isinstance(r["latency_ms"], dict):  # a grid row
            if key in r["latency_ms"]:
                out[r["model"]] = float(r["latency_ms"][key])
        elif r.get("runtime") == runtime and r.get("precision") == precision and r.get("batch_size", 1) == 1:
            if r.get("latency"):
                out[r["model"]] = float(r["latency"]["median_ms"])
    if not out:
        raise MobileNetsError(f"{path} has no batch-1 {key} latency; measure it with `mobilenets bench NAME "
                              f"--runtime {runtime} --precision {precision} --json`")  # fmt: skip
    return out


# --- budgets ------------------------------------------------------------------------------------------------------


@dataclass
class Budget:
    """The limits a candidate must keep: median latency (ms) on the target, parameters, Mult-Adds, file size (MB)."""

    max_latency_ms: float | None = None
    max_params: float | None = None
    max_mult_adds: float | None = None
    max_file_mb: float | None = None

    def check(self) -> None:
        given = {k: v for k, v in asdict(self).items() if v is not None}
        if not given:
            raise MobileNetsError("give a budget: --max-latency-ms, --max-params, --max-mult-adds or --max-file-mb")
        for k, v in given.items():
            if not (v > 0 and math.isfinite(v)):
                raise MobileNetsError(f"--{k.replace('_', '-')} must be a positive number, got {v}")

    def static_reason(self, c: Candidate, precision: str) -> str | None:
        """Why ``c`` is out by its cost alone (params, Mult-Adds, estimated file size), or None."""
        if self.max_params is not None and c.num_params > self.max_params:
            return f"{c.num_params / 1e6:.2f}M params > {self.max_params / 1e6:g}M"
        if self.max_mult_adds is not None and c.mult_adds > self.max_mult_adds:
            return f"{c.mult_adds / 1e6:.1f}M Mult-Adds > {self.max_mult_adds / 1e6:g}M"
        if self.max_file_mb is not None and file_mb_estimate(c, precision) > self.max_file_mb:
            return f"~{file_mb_estimate(c, precision):.2f} MB file > {self.max_file_mb:g} MB"
        return None


def file_mb_estimate(c: Candidate, precision: str) -> float:
    return c.num_params * BYTES_PER_PARAM[precision] / 1e6


def shortlist(
    candidates: list[Candidate],
    budget: Budget,
    precision: str,
    latency_of: Callable[[Candidate], float | None] | None,
    wanted: int,
    bisect: bool = True,
    rank_by: str = "prior",
) -> list[Candidate]:
    """Settle every candidate's verdict and return the ones that fit, best prior first, the first ``wanted`` of them
    with a measured latency (see the module docstring for the bisection). ``latency_of`` measures or looks up one
    candidate (None: not in the user's table); without a latency budget it is only asked for the kept ones.
    ``bisect`` False looks every candidate up (a table costs nothing to read). ``rank_by`` "mult-adds" ranks by
    Mult-Adds instead of the prior (the naive choice a comparison sets beside the prior's).

    Raises MobileNetsError (one line, naming the fastest candidate's latency) when no candidate fits.
    """
    for c in candidates:
        reason = budget.static_reason(c, precision)
        c.verdict = f"over budget: {reason}" if reason else ""
    live = [c for c in candidates if not c.verdict]
    if not live:
        smallest = min(candidates, key=lambda c: (c.num_params, c.mult_adds))
        raise MobileNetsError(
            f"no candidate fits the budget: the smallest, {smallest.name}, has {smallest.num_params / 1e6:.2f}M "
            f"params and {smallest.mult_adds / 1e6:.1f}M Mult-Adds (~{file_mb_estimate(smallest, precision):.2f} MB)"
        )

    def look(c: Candidate) -> float | None:
        if c.latency_ms is None and c.latency_source == "":
            c.latency_ms = latency_of(c) if latency_of else None
            c.latency_source = "measured" if c.latency_ms is not None else "not in the latency table"
        return c.latency_ms

    limit = budget.max_latency_ms
    if limit is not None:
        by_family: dict[str, list[Candidate]] = {}
        for c in live:
            by_family.setdefault(c.model if c.width_mult is not None else _family_of(c.model), []).append(c)
        for members in by_family.values() if bisect else [[c] for c in live]:
            _bisect(sorted(members, key=lambda c: c.mult_adds), limit, look)
    else:
        for c in live:
            c.verdict = "fits"
    kept = []
    for c in sorted((c for c in live if c.verdict == "fits"), key=RANKINGS[rank_by]):
        if len(kept) == wanted:
            break
        if c.latency_source.startswith("assumed"):
            c.latency_source = ""
        latency = look(c)
        if limit is not None and (latency is None or latency > limit):
            c.verdict = "over budget: " + (f"{latency:.2f} ms > {limit:g} ms" if latency else c.latency_source)
            continue
        kept.append(c)
    if not kept:
        raise MobileNetsError(_nothing_fits(candidates, limit))
    return kept


def _bisect(members: list[Candidate], limit: float, look: Callable[[Candidate], float | None]) -> None:
    """Verdicts for one family sorted by Mult-Adds: binary search for the largest member under ``limit``."""
    lo, hi = 0, len(members) - 1  # the boundary lies in [lo - 1, hi]
    while lo <= hi:
        mid = (lo + hi) // 2
        latency = look(members[mid])
        if latency is not None and latency <= limit:
            lo = mid + 1
        else:
            hi = mid - 1
    # members[:lo] fit, members[lo:] do not (by the family's monotonicity beyond the measured ones)
    for i, c in enumerate(members):
        measured = c.latency_source in ("measured", "table")
        if c.latency_source == "not in the latency table":
            c.verdict = "out: not in the latency table"
        elif i < lo:
            c.verdict = "fits"
            if not measured:
                c.latency_source = f"assumed: {members[lo - 1].name} (more Mult-Adds) measured under the budget"
        else:
            c.verdict = (
                f"over budget: {c.latency_ms:.2f} ms > {limit:g} ms"
                if measured and c.latency_ms is not None
                else f"over budget (assumed: {members[min(lo, len(members) - 1)].name}, fewer Mult-Adds, measured over)"
            )
            if not measured:
                c.latency_source = "assumed over budget"


def _nothing_fits(candidates: list[Candidate], limit: float | None) -> str:
    timed = [c for c in candidates if c.latency_ms is not None]
    if limit is not None and timed:
        fastest = min(timed, key=lambda c: c.latency_ms)
        return (
            f"no candidate fits --max-latency-ms {limit:g}: the fastest, {fastest.name}, takes "
            f"{fastest.latency_ms:.2f} ms here; raise the budget or add smaller candidates (--widths, --resolutions)"
        )
    return "no candidate fits the budget (none has a latency for this runtime; see --latency-table)"
