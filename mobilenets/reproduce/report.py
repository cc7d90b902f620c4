"""Write a :class:`~mobilenets.reproduce.run.Reproduction` out: report.md, PNG plots and results.json.

The tables are laid out like the paper's (model, accuracy, Mult-Adds, parameters) with the paper's figure
beside ours in every column where the paper has one. Our Mult-Adds and parameters are the profiler's
exact counts of the trained model (``mobilenets.profile.profile``), stored with each cached run.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from mobilenets.io import atomic_path, atomic_write_json, atomic_write_text
from mobilenets.reproduce.cache import CellResult
from mobilenets.reproduce.claims import NEAR_PTS, NOT_RUN, loglinear_fit, noise, tolerance
from mobilenets.reproduce.plan import FAMILIES, Table
from mobilenets.reproduce.run import Reproduction

PLOTS = {
    "accuracy_vs_mult_adds": "accuracy_vs_mult_adds.png",
    "accuracy_vs_params": "accuracy_vs_params.png",
    "grid": "grid_accuracy.png",
}
VERDICT_MARK = {
    "agrees": "✅ agrees",
    "partly agrees": "◐ partly agrees",
    "disagrees": "❌ disagrees",
    "inconclusive": "≈ inconclusive",
    "not run": "— not run",
}


def fmt_madds(n: int) -> str:
    """Mult-Adds in millions, as every table prints them."""
    return f"{n / 1e6:.2f}"


def fmt_params(n: int) -> str:
    """Parameters in millions, as every table prints them."""
    return f"{n / 1e6:.3f}"


def fmt_acc(r: CellResult) -> str:
    sd = r.acc_sd
    return f"{r.acc:.2f}" if sd is None else f"{r.acc:.2f} ± {sd:.2f}"


def _dataset_name(rep: Reproduction) -> str:
    return {"fashion-mnist": "Fashion-MNIST", "digits": "digits"}.get(rep.dataset_info["name"], rep.dataset)


# ----------------------------------------------------------------------------------------------------
# results.json


def results_dict(rep: Reproduction) -> dict:
    return {
        "command": rep.command,
        "preset": dataclasses.asdict(rep.preset),
        "dataset": rep.dataset_info,
        "hardware": rep.hardware,
        "training_hardware": _training_hardware(rep),
        "recipe": rep.recipe,
        "started": rep.started,
        "wall_time_s": rep.wall_time_s,
        "trained_runs": rep.trained_runs,
        "cached_runs": rep.cached_runs,
        "tolerance_pts": tolerance(rep.cells, rep.tables),
        "tolerance_from": noise(rep.cells, rep.tables)[1],
        "cells": [r.to_dict() for r in rep.cells.values()],
        "tables": [
            {
                "id": t.id,
                "title": t.title,
                "rows": [
                    {
                        "cell": row.cell.key,
                        "label": row.cell.label,
                        "paper": None
                        if row.paper is None
                        else {
                            "table": row.paper.table,
                            "label": row.paper.label,
                            "top1": row.paper.top1,
                            "mult_adds_m": row.paper.mult_adds,
                            "params_m": row.paper.params,
                        },
                    }
                    for row in t.rows
                ],
            }
            for t in rep.tables
        ],
        "claims": [c.to_dict() for c in rep.claims],
    }


def _training_hardware(rep: Reproduction) -> list[dict]:
    """The distinct machines the cached runs were trained on."""
    seen: list[dict] = []
    for r in rep.cells.values():
        for run in r.runs:
            hw = run.get("hardware")
            if hw and hw not in seen:
                seen.append(hw)
    return seen


# ----------------------------------------------------------------------------------------------------
# Plots


def _style(cell_family: str) -> dict:
    """A cell family's marker and colour, from its declaration (``ReproduceModel.style``)."""
    style = FAMILIES[cell_family].style if cell_family in FAMILIES else None
    return dict(marker="o") if style is None else dict(marker=style[1], color=style[0])


def write_plots(rep: Reproduction) -> dict[str, Path]:
    """Accuracy vs Mult-Adds (log x, paper Figure 4), vs parameters (Figure 5), and the α×ρ grid heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = rep.out_dir
    paths = {}
    title = f"{_dataset_name(rep)}, preset {rep.preset.name}"
    mobilenets = [r for r in rep.cells.values() if r.cell.family == "mobilenet"]
    others = [r for r in rep.cells.values() if r.cell.family != "mobilenet"]
    widths = sorted({r.cell.width_mult for r in mobilenets}, reverse=True)

    for key, xlabel, xof in (
        ("accuracy_vs_mult_adds", "Mult-Adds (millions, log scale)", lambda r: r.mult_adds / 1e6),
        ("accuracy_vs_params", "parameters (millions, log scale)", lambda r: r.params / 1e6),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        cmap = plt.get_cmap("viridis")
        for i, alpha in enumerate(widths):
            series = sorted((r for r in mobilenets if r.cell.width_mult == alpha), key=xof)
            color = cmap(i / max(1, len(widths) - 1) * 0.85)
            ax.errorbar(
                [xof(r) for r in series],
                [r.acc for r in series],
                yerr=[r.acc_sd or 0 for r in series],
                marker="o",
                color=color,
                capsize=3,
                label=f"MobileNet α={alpha:g}" + (" (ρ sweep)" if len(series) > 1 else ""),
            )
            if key == "accuracy_vs_mult_adds" and len(series) > 1:
                for r in series:
                    ax.annotate(
                        f"{r.cell.resolution}",
                        (xof(r), r.acc),
                        fontsize=7,
                        xytext=(3, -9),
                        textcoords="offset points",
                        color=color,
                    )
        # A model that did not train (near chance) would squash every other point: it goes on the bottom
        # edge, marked off scale, and the axis covers the models that did train.
        chance = 100 / rep.dataset_info.get("num_classes", 10)
        trained = [r.acc for r in rep.cells.values() if r.acc > 1.5 * chance] or [r.acc for r in rep.cells.values()]
        bottom = min(trained) - 3
        for r in others:
            style = _style(r.cell.family)
            if r.cell.recipe:
                style["markerfacecolor"] = "white"
            off = r.acc < bottom
            ax.errorbar(
                [xof(r)],
                [bottom + 0.6 if off else r.acc],
                yerr=[0 if off else r.acc_sd or 0],
                linestyle="none",
                capsize=3,
                markersize=8,
                label=r.cell.label + (f": {r.acc:.1f}%, off scale" if off else ""),
                **style,
            )
            if off:
                ax.annotate(
                    f"{r.cell.label}: {r.acc:.1f}% ↓",
                    (xof(r), bottom + 0.6),
                    fontsize=7,
                    xytext=(6, 2),
                    textcoords="offset points",
                )
        ax.set_ylim(bottom=bottom)
        if key == "accuracy_vs_mult_adds" and len(mobilenets) >= 3:
            slope, r2 = loglinear_fit([r.mult_adds for r in mobilenets], [r.acc for r in mobilenets])
            xs = [r.mult_adds for r in mobilenets]
            mx = sum(math.log10(x) for x in xs) / len(xs)
            my = sum(r.acc for r in mobilenets) / len(mobilenets)
            lo, hi = min(xs), max(xs)
            ax.plot(
                [lo / 1e6, hi / 1e6],
                [my + slope * (math.log10(lo) - mx), my + slope * (math.log10(hi) - mx)],
                linestyle="--",
                color="black",
                alpha=0.5,
                label=f"log-linear fit, MobileNets ({slope:.1f} pts/10×, R²={r2:.2f})",
            )
        ax.set_xscale("log")
        # Plain numbers on the log axis (3, 10, 30), not 3×10⁰.
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_label))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{_dataset_name(rep)} test top-1 (%)")
        ax.set_title(f"Accuracy vs {'Mult-Adds' if 'mult' in key else 'parameters'} — {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        paths[key] = _save(fig, out / PLOTS[key])
        plt.close(fig)

    grid = next((t for t in rep.tables if t.id == "grid"), None)
    if grid:
        sizes = sorted({row.cell.resolution for row in grid.rows}, reverse=True)
        acc = [[rep.cells[f"mobilenet-a{a}-r{s}"].acc for s in sizes] for a in widths]
        madds = [[rep.cells[f"mobilenet-a{a}-r{s}"].mult_adds / 1e6 for s in sizes] for a in widths]
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        im = ax.imshow(acc, cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax, label="test top-1 (%)")
        ax.set_xticks(range(len(sizes)), [f"{s} px" for s in sizes])
        ax.set_yticks(range(len(widths)), [f"α={a:g}" for a in widths])
        lo, hi = min(map(min, acc)), max(map(max, acc))
        for i in range(len(widths)):
            for j in range(len(sizes)):
                dark = (acc[i][j] - lo) < 0.5 * (hi - lo)
                ax.text(
                    j,
                    i,
                    f"{acc[i][j]:.1f}%\n{madds[i][j]:.1f}M",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
        ax.set_xlabel("input resolution (ρ)")
        ax.set_title(f"MobileNet α×ρ grid: top-1 and Mult-Adds — {title}", fontsize=9)
        paths["grid"] = _save(fig, out / PLOTS["grid"])
        plt.close(fig)
    return paths


def _minor_label(value: float, _pos) -> str:
    """Label the 2× and 5× minor ticks of a log axis (2, 5, 20, 50 …), leave the rest blank."""
    if value <= 0:
        return ""
    lead = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------------------------------
# report.md


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table_markdown(rep: Reproduction, table: Table) -> str:
    """One paper table, our numbers beside the paper's: model, top-1, Mult-Adds, parameters, train time."""
    ds = _dataset_name(rep)
    header = [
        "Model (paper → ours)",
        "ImageNet top-1 % (paper)",
        f"{ds} top-1 % (ours)",
        "Mult-Adds M (paper)",
        "Mult-Adds M (ours)",
        "params M (paper)",
        "params M (ours)",
        "train s (ours)",
    ]
    rows = []
    for row in table.rows:
        r = rep.cells[row.cell.key]
        p = row.paper
        name = f"{p.label} → {r.cell.label}" if p else f"— → {r.cell.label}"
        rows.append(
            [
                name,
                p.top1 if p else "—",
                fmt_acc(r),
                p.mult_adds if p and p.mult_adds else "—",
                fmt_madds(r.mult_adds),
                p.params if p and p.params else "—",
                fmt_params(r.params),
                f"{r.train_time_s:.0f}",
            ]
        )
    return _md_table(header, rows)


def grid_markdown(rep: Reproduction, table: Table) -> str:
    widths = sorted({row.cell.width_mult for row in table.rows}, reverse=True)
    sizes = sorted({row.cell.resolution for row in table.rows}, reverse=True)
    header = ["α \\ input"] + [f"{s} px" for s in sizes] + ["params M"]
    rows = []
    for a in widths:
        cells = [rep.cells[f"mobilenet-a{a}-r{s}"] for s in sizes]
        rows.append(
            [f"α = {a:g}"]
            + [f"{fmt_acc(c)}% · {fmt_madds(c.mult_adds)}M" for c in cells]
            + [fmt_params(cells[0].params)]
        )
    return _md_table(header, rows)


def _header(rep: Reproduction) -> list[str]:
    p, info = rep.preset, rep.dataset_info
    ds = _dataset_name(rep)
    hw_list = _training_hardware(rep) or [rep.hardware]

    def hw_text(hw: dict) -> str:
        gpu = hw.get("gpu") or "no GPU"
        mem = f", {hw['memory_gib']} GiB RAM" if "memory_gib" in hw else ""
        return (
            f"{hw['cpu']}, {hw['cpu_count']} cores (torch threads: {hw['torch_threads']}){mem}, {gpu}; "
            f"torch {hw['torch']}, Python {hw['python']}"
        )

    sizes = "/".join(str(s) for s in p.resolutions)
    side = info.get("image_size")
    upsample = (
        f"{side}×{side} images resized on the fly (bilinear; antialiased for test) to {sizes} px"
        if side
        else f"images decoded at {sizes} px"
    )
    if side and side < min(p.resolutions):
        upsample = f"{side}×{side} images **upsampled** on the fly (bilinear) to {sizes} px"
    stem = (
        "the paper's stride-2 stem"
        if p.stem_stride == 2
        else "the small-image stem (stride 1): at half the input side it gives the feature-map sizes of the "
        "stride-2 stem at the full side"
    )
    rc = rep.recipe
    recipe = (
        f"engine preset `{p.recipe}`: {rc.get('optimizer', '?')} (momentum {rc.get('momentum')}), "
        f"lr {rc.get('lr'):.3g} at batch {p.batch_size}, {rc.get('schedule')} schedule, "
        f"{rc.get('warmup_epochs')} warmup epochs, weight decay {rc.get('weight_decay')} "
        f"({rc.get('depthwise_weight_decay')} on depthwise filters), label smoothing {rc.get('label_smoothing')}, "
        f"random crops ≥ {rc.get('crop_scale_min')} of the area, shifts ±{rc.get('translate')}, "
        f"flips {'on' if rc.get('flip') else 'off'}; {p.epochs} epoch(s); the same for every cell"
        + (" but the SqueezeNet row marked AdamW" if any(r.cell.recipe for r in rep.cells.values()) else "")
        if rc
        else f"engine preset `{p.recipe}`, {p.epochs} epoch(s), batch {p.batch_size}"
    )
    runs = [run for r in rep.cells.values() for run in r.runs]
    train_s = sum(run["result"]["train_time_s"] for run in runs)
    wall_s = sum(run["result"].get("wall_time_s", 0.0) for run in runs)
    finished = sorted(run.get("finished", "") for run in runs)
    span = f"{finished[0][:16].replace('T', ' ')} … {finished[-1][11:16]} UTC" if finished and finished[0] else ""
    lines = [
        f"# MobileNets' claims reproduced on {ds} — preset `{p.name}`",
        "",
        "Regenerate (finished runs are reused from `cells/`; delete it to retrain from scratch):",
        "",
        "```",
        rep.command,
        "```",
        "",
        _md_table(
            ["", ""],
            [
                ["Hardware", "<br>".join(hw_text(hw) for hw in hw_list)],
                [
                    "Data",
                    f"{ds}: {info['train_used']:,} of {info['train_size']:,} training images"
                    f"{' (class-balanced subset)' if info['train_used'] < info['train_size'] else ''}, "
                    f"{info['test_used']:,} of {info['test_size']:,} test images; {upsample}",
                ],
                [
                    "Models",
                    f"MobileNets with {stem}; every model built for {info['in_chans']} input channel(s) and "
                    f"{info['num_classes']} classes. α ∈ {{{', '.join(f'{a:g}' for a in p.widths)}}}; input "
                    f"{sizes} px for the paper's {'/'.join(str(s) for s in (224, 192, 160, 128)[: len(p.resolutions)])}"
                    + (" (the same ρ ratios)" if len(p.resolutions) > 1 else ""),
                ],
                ["Recipe", recipe],
                [
                    "Seeds",
                    f"{p.seeds} per cell (seeds 0…{p.seeds - 1}); accuracies are means ± sample s.d."
                    if p.seeds > 1
                    else "one per cell (seed 0)",
                ],
                [
                    "Compute",
                    f"{len(runs)} runs: {train_s / 60:.1f} min of training steps, {wall_s / 60:.1f} min wall "
                    f"including data loading and evaluation{f'; runs finished {span}' if span else ''}. "
                    f"This invocation trained {rep.trained_runs} and reused {rep.cached_runs} from `cells/` in "
                    f"{rep.wall_time_s:.0f} s",
                ],
                ["Preset", p.description],
            ],
        ),
        "",
    ]
    return lines


def render_markdown(rep: Reproduction, plots: dict[str, Path]) -> str:
    tol, how = noise(rep.cells, rep.tables)
    lines = _header(rep)
    lines += [
        "## The paper's claims, answered",
        "",
        f"Accuracy differences under {tol:.1f} points are treated as ties (noise): {how}. "
        f'"About 1 point" / "nearly as accurate" is read as within {NEAR_PTS:g} points.',
        "",
        _md_table(
            ["#", "claim", "paper (ImageNet)", f"ours ({_dataset_name(rep)})", "verdict"],
            [
                [str(c.id), c.title, c.paper or "—", c.ours or "—", VERDICT_MARK.get(c.verdict, c.verdict)]
                for c in rep.claims
            ],
        ),
        "",
    ]
    for c in rep.claims:
        if c.verdict != NOT_RUN:
            lines.append(f"- **Claim {c.id} — {c.verdict}.** {c.detail[:1].upper()}{c.detail[1:]}")
    lines.append("")

    if "accuracy_vs_mult_adds" in plots:
        lines += ["![accuracy vs Mult-Adds](accuracy_vs_mult_adds.png)", ""]

    lines += ["## Tables, laid out like the paper's", ""]
    for table in rep.tables:
        lines += [f"### {table.title}", ""]
        if table.id == "grid":
            lines += [
                "Each cell: test top-1 · Mult-Adds. Parameters do not depend on the input size (Figure 5).",
                "",
                grid_markdown(rep, table),
                "",
            ]
            if "grid" in plots:
                lines += ["![α×ρ grid](grid_accuracy.png)", ""]
        else:
            lines += [table_markdown(rep, table), ""]
        if table.id == "8-9":
            lines += [
                "The paper compares with SqueezeNet 1.0 (its 1700M is about twice a layer-by-layer count); "
                "we train SqueezeNet 1.1, the version with 2.4× less compute at the same accuracy. SqueezeNet has "
                "no BatchNorm and may not train at all with the shared recipe, so it is also trained with AdamW "
                "(the row marked so; the claim uses the better of the two). DenseNet-121 "
                "is not in the paper: it stands in for Table 8's larger networks (GoogleNet, VGG 16), which we "
                "do not train. All three families see the same input size; MobileNets here use "
                + ("the small-image stem." if rep.preset.stem_stride == 1 else "the paper's stride-2 stem."),
                "",
            ]
    if "accuracy_vs_params" in plots:
        lines += ["### Accuracy vs parameters (Figure 5)", "", "![accuracy vs parameters](accuracy_vs_params.png)", ""]

    lines += [
        "## How to read these numbers",
        "",
        "- **Costs are exact, accuracies are not ImageNet's.** Mult-Adds and parameters are the profiler's "
        "counts of the very models trained here (convolutions and FC layers; BatchNorm folds away), for "
        f"{rep.dataset_info['in_chans']}-channel inputs and a {rep.dataset_info['num_classes']}-class classifier. "
        "They are not the paper's 1000-class, 224-px figures, but the *ratios* between models are the quantities "
        "the claims are about. Parameters count every parameter, BatchNorm included (results.json also has "
        "`paper_params`, conv/FC weights only, as the paper counts).",
        "- **Short training.** "
        + (
            "This preset trains for minutes on a subset, far from convergence: a ranking partly reflects how "
            "fast each network learns, not only what it can reach. Run the `full` preset on a GPU for converged "
            "numbers."
            if rep.preset.name != "full"
            else "Each cell trains for the same number of epochs with one recipe; no cell is tuned on its own."
        ),
        "- **Fashion-MNIST is easy and small-image.** Ten classes of 28-px grey clothes saturate near 94–96%; "
        "differences between models are compressed compared to ImageNet's."
        if rep.dataset_info["name"] == "fashion-mnist"
        else "- The dataset is not ImageNet: compare differences and ratios, not absolute accuracies.",
        "- `results.json` holds every number above plus the per-seed accuracies; `cells/` holds one JSON per "
        "finished run (config, result, per-epoch history, cost, hardware), named by a hash of its config.",
        "",
    ]
    return "\n".join(lines)


def write_report(rep: Reproduction) -> dict[str, Path]:
    """Write report.md, the PNGs and results.json into ``rep.out_dir``; returns their paths."""
    out = rep.out_dir
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(rep)
    atomic_write_json(out / "results.json", results_dict(rep))
    atomic_write_text(out / "report.md", render_markdown(rep, plots))
    return {"report": out / "report.md", "json": out / "results.json", **plots}
