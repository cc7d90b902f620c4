"""`select`: the grid variants that fit a latency, parameter or Mult-Adds budget, best first, across families;
classifiers by ImageNet top-1, detectors by COCO mAP, each ranked among their own kind."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mobilenets.deploy.bench.grid import GridRow, family_of, known_top1, model_costs
from mobilenets.deploy.bench.latency import RUNTIMES
from mobilenets.errors import MobileNetsError


@dataclass
class Selection:
    row: GridRow
    latency_ms: float | None
    top1: float | None = None  # the papers' figure, or interpolated within the family (then top1_estimated)
    top1_estimated: bool = False

    @property
    def is_detector(self) -> bool:
        return self.row.task == "detection"

    @property
    def accuracy(self) -> float | None:
        """What the selection ranks by: a detector's COCO mAP (the papers' only), a classifier's top-1."""
        return self.row.coco_map if self.is_detector else self.top1


def estimate_top1(rows: list[GridRow]) -> dict[str, float]:
    """Top-1 for the rows without a published figure, interpolated within their family in log Mult-Adds
    between the family's published points (accuracy is close to log-linear in Mult-Adds: V1 paper Figure 4).
    Rows outside their family's published range get no estimate."""
    known = known_top1()
    out = {}
    for family in {r.family for r in rows if r.task == "classification"}:
        pts = sorted(
            (model_costs(n)[0], top1) for n, (top1, _src) in known.items() if family_of(n) == family
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
    """The grid variants within every given budget, best first, across families: the classifiers, then the
    detectors (mAP and top-1 are not one scale).

    A classifier's "best" is the highest ImageNet top-1: the papers' figure where printed, else interpolated within
    the family (``estimate_top1``); a detector's is the highest COCO mAP the papers print (never interpolated).
    Variants with neither come last, most Mult-Adds first (within a family accuracy rises with Mult-Adds, Figure 4).
    ``max_params`` and ``max_madds`` are absolute counts.
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
    return sorted(out, key=lambda s: (s.is_detector, s.accuracy is None, -(s.accuracy or 0.0), -s.row.mult_adds))
