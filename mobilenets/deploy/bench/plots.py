"""The grid's PNGs: top-1 against Mult-Adds and parameters (V1 paper Figures 4–5), latency against Mult-Adds and
top-1 per runtime with its Pareto front; for detectors, latency against Mult-Adds and COCO mAP."""

from __future__ import annotations

import math
import os
from pathlib import Path

from mobilenets.deploy.bench.grid import SINGLE_FAMILIES, GridRow, latency_keys, pareto_front
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path
from mobilenets.models import FAMILIES

# One colour and marker per family in every plot (``Family.style`` in each declaration).
FAMILY_STYLE = {f.name: f.style for f in FAMILIES.values() if f.style}
# A detector: its backbone family's colour; SSD squares, SSDLite stars.
DETECTOR_MARKERS = {"ssd": "s", "ssdlite": "*"}


def family_style(family: str) -> dict:
    """Colour and marker of a family, or of a detector (``ssdlite320_mobilenet_v3_large``: V3-Large's colour)."""
    head, _, backbone = family.partition("_")
    if family not in FAMILY_STYLE and backbone in FAMILY_STYLE:
        colour = FAMILY_STYLE[backbone][0]
        return {"color": colour, "marker": DETECTOR_MARKERS["ssdlite" if head.startswith("ssdlite") else "ssd"]}
    colour, marker = FAMILY_STYLE.get(family, ("C7", "x"))
    return {"color": colour, "marker": marker}


def plot_grid(rows: list[GridRow], out_dir: str | os.PathLike) -> list[Path]:
    """PNGs: top-1 vs Mult-Adds (log x) and vs params, like V1 paper Figures 4–5; latency vs Mult-Adds and
    latency vs top-1, one panel per runtime/precision with its Pareto front. One colour/marker per family.
    Detector rows get their own two latency plots (``detectors_latency_vs_mult_adds.png`` and
    ``detectors_latency_vs_coco_map.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise MobileNetsError(f"cannot write plots to {out_dir}: the folder does not exist; create it first")
    paths = []
    detectors = [r for r in rows if r.task == "detection"]
    rows = [r for r in rows if r.task != "detection"]
    known = [r for r in rows if r.top1 is not None]
    families = list(dict.fromkeys(r.family for r in rows))

    def finish(fig, name: str) -> None:
        path = out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)

    accuracy_plots = (
        ("mult_adds", "Mult-Adds (millions, log scale)", "accuracy_vs_mult_adds.png", True),
        ("num_params", "Parameters (millions)", "accuracy_vs_params.png", False),
    )
    for x_attr, xlabel, fname, logx in accuracy_plots if rows else ():  # a grid of detectors alone: none
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for family in families:
            pts = [r for r in known if r.family == family]
            if pts:
                xs = [getattr(r, x_attr) / 1e6 for r in pts]
                ax.scatter(xs, [r.top1 for r in pts], label=family, **family_style(family))
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

    def latency_plots(rows: list[GridRow], plots: tuple[tuple[str, str, str], ...]) -> None:
        """One PNG per (accuracy field or "mult_adds", file name, y label): a panel per runtime/precision."""
        keys = [k for k in latency_keys(rows) if any(k in r.latency_ms for r in rows)]
        families = list(dict.fromkeys(r.family for r in rows))
        for by, fname, ylabel in plots:
            if not keys:
                break
            cols = min(3, len(keys))
            nrows = -(-len(keys) // cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.8 * nrows), squeeze=False)
            for ax, key in zip(axes.flat, keys):
                value = (lambda r: r.mult_adds / 1e6) if by == "mult_adds" else (lambda r, by=by: getattr(r, by))
                for family in families:
                    pts = [r for r in rows if r.family == family and key in r.latency_ms and getattr(r, by) is not None]
                    if pts:
                        ax.scatter([r.latency_ms[key] for r in pts], [value(r) for r in pts], s=18, label=family,
                                   **family_style(family))  # fmt: skip
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

    latency_plots(
        rows,
        (
            ("mult_adds", "latency_vs_mult_adds.png", "Mult-Adds (millions, log scale)"),
            ("top1", "latency_vs_top1.png", "ImageNet top-1 (%), the papers' figures"),
        ),
    )
    latency_plots(
        detectors,
        (
            ("mult_adds", "detectors_latency_vs_mult_adds.png", "Detectors' Mult-Adds (millions, log scale)"),
            ("coco_map", "detectors_latency_vs_coco_map.png", "Detectors' COCO mAP (%), the papers' figures"),
        ),
    )
    return paths


def _plain_log_labels(axis) -> None:
    """Plain numbers on a log axis (0.3, 1, 20, 100), not 3×10⁻¹; minor ticks labelled at 2× and 5× only."""
    import matplotlib.ticker as mt

    def minor(v: float, _pos) -> str:
        return f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""

    axis.set_major_formatter(mt.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(mt.FuncFormatter(minor))
