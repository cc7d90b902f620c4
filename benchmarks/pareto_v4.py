"""Is MobileNetV4 Conv-S/M on the Pareto front of this CPU (issue 29)? The V4 paper calls its models "mostly
Pareto-optimal" on mobile CPUs; this reads a four-generation grid measured here and answers per runtime × precision.

    mobilenets bench --grid --family mobilenet_v1 mobilenet_v2 mobilenet_v3 mobilenet_v4 --published-only \\
        --runtime eager onnxruntime openvino --precision fp32 int8 --threads 2 --out-dir reports/pareto-v1-v4
    .venv/bin/python benchmarks/pareto_v4.py --grid reports/pareto-v1-v4/grid.json \\
        --out reports/pareto-v1-v4/answer.md

The front is `grid.txt`'s (``mobilenets.deploy.bench.pareto_front``: latency against the papers' top-1, every row of
the grid with a published top-1). A model off the front is shown with every model that dominates it: at most as slow
and at least as accurate, better in one of the two.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mobilenets.deploy.bench import GridRow, latency_keys, load_grid, load_grid_cpu, pareto_front
from mobilenets.io import atomic_write_text

# The two sizes the question is about, at their paper resolutions, and how the answer names them.
TARGETS = {"mobilenet_v4_conv_small_1.0_224": "V4 Conv-S", "mobilenet_v4_conv_medium_1.0_256": "V4 Conv-M"}
# The question is about four generations: an answer from a grid without one of them says so.
GENERATIONS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "mobilenet_v4")
# A dominator less than this much faster is within what one run on a shared virtual machine wobbles
# (reports/grid/README.md: neighbouring cells swap by more than that): the answer says so.
NARROW = 0.10


@dataclass
class Cell:
    """One target model on one runtime/precision: on the front, dominated (by whom), or not measured (why)."""

    key: str
    model: str
    top1: float | None
    latency_ms: float | None
    on_front: bool = False
    dominated_by: list[GridRow] = field(default_factory=list)  # fastest first
    missing: str = ""  # why there is no latency (failed or skipped cell, or no such row)

    @property
    def measured(self) -> bool:
        return self.latency_ms is not None and self.top1 is not None


def dominators(rows: list[GridRow], target: GridRow, key: str) -> list[GridRow]:
    """The rows at most as slow as ``target`` on ``key`` and at least as accurate (papers' top-1), better in one."""
    lat, top1 = target.latency_ms[key], target.top1
    out = [
        r
        for r in rows
        if r.model != target.model
        and key in r.latency_ms
        and r.top1 is not None
        and r.latency_ms[key] <= lat
        and r.top1 >= top1
        and (r.latency_ms[key] < lat or r.top1 > top1)
    ]
    return sorted(out, key=lambda r: (r.latency_ms[key], -r.top1))


def judge(rows: list[GridRow], key: str, model: str) -> Cell:
    row = next((r for r in rows if r.model == model), None)
    if row is None:
        return Cell(key, model, None, None, missing="not in the grid")
    if key not in row.latency_ms or row.top1 is None:
        why = row.failed.get(key) or row.skipped.get(key) or ("no top-1" if row.top1 is None else "not measured")
        return Cell(key, model, row.top1, None, missing=why)
    front = pareto_front(rows, key, "top1")
    return Cell(
        key,
        model,
        row.top1,
        row.latency_ms[key],
        on_front=any(r.model == model for r in front),
        dominated_by=dominators(rows, row, key),
    )


def judge_all(rows: list[GridRow]) -> dict[str, list[Cell]]:
    """Every runtime/precision of the grid → one Cell per target."""
    keys = [k for k in latency_keys(rows) if any(k in r.latency_ms for r in rows)]
    return {k: [judge(rows, k, m) for m in TARGETS] for k in keys}


def _speedup(cell: Cell, r: GridRow) -> float:
    return 1 - r.latency_ms[cell.key] / cell.latency_ms


def describe(cell: Cell) -> str:
    """One table cell: where the target stands and, when dominated, the model that beats it by the most speed."""
    if not cell.measured:
        return f"not measured: {cell.missing}"
    own = f"{cell.latency_ms:.2f} ms"
    if cell.on_front:
        return f"**on the front** ({own})"
    if not cell.dominated_by:  # a tie with an identical point: pareto_front keeps one of the two
        return f"off the front by a tie ({own})"
    best = cell.dominated_by[0]
    narrow = " — narrow" if all(_speedup(cell, r) < NARROW for r in cell.dominated_by) else ""
    more = f", and {len(cell.dominated_by) - 1} more" if len(cell.dominated_by) > 1 else ""
    return (
        f"dominated ({own}) by {best.model}: {best.latency_ms[cell.key]:.2f} ms, {best.top1:.1f}%"
        f" ({100 * _speedup(cell, best):.0f}% faster{narrow}){more}"
    )


def verdict(cells: dict[str, list[Cell]]) -> list[str]:
    """The claim judged for each target, then for the two together."""
    lines, shares = [], []
    for model, name in TARGETS.items():
        mine = [c for cs in cells.values() for c in cs if c.model == model and c.measured]
        on = [c.key for c in mine if c.on_front]
        shares.append((len(on), len(mine)))
        if not mine:
            lines.append(f"- {name} ({model}): not measured on any runtime/precision.")
            continue
        off = [c for c in mine if not c.on_front]
        text = f"- {name}: on the front in {len(on)} of {len(mine)} runtime/precision cells"
        text += f" ({', '.join(on)})" if on and off else ""
        if off:
            beaters = {}
            for c in off:
                for r in c.dominated_by:
                    beaters.setdefault(r.model, []).append(c.key)
            most = max(beaters.items(), key=lambda kv: len(kv[1])) if beaters else None
            narrow = [c.key for c in off if c.dominated_by and all(_speedup(c, r) < NARROW for r in c.dominated_by)]
            if most:
                off_keys = ", ".join(c.key for c in off)
                text += f"; off it in {off_keys}, beaten most often by {most[0]} (in {len(most[1])} of them)"
            if narrow:
                text += f"; every dominator less than {100 * NARROW:.0f}% faster (narrow) in {', '.join(narrow)}"
        lines.append(text + ".")
    on, total = sum(s[0] for s in shares), sum(s[1] for s in shares)
    if total == 0:
        claim = "cannot be judged from this grid: neither model was measured."
    elif on == total:
        claim = "holds on this CPU: both models are on every front measured."
    elif all(n * 2 > m for n, m in shares if m):
        claim = f"mostly holds on this CPU: {on} of {total} cells on the front, each model on most fronts."
    elif on:
        claim = f"holds only in part on this CPU: {on} of {total} cells on the front."
    else:
        claim = f"does not hold on this CPU: neither model is on any of the {len(cells)} fronts."
    return [f'**Verdict.** The V4 paper\'s "mostly Pareto-optimal on mobile CPUs" {claim}', "", *lines]


def answer(rows: list[GridRow], grid: str, cpu_line: str | None, command: str) -> str:
    """answer.md: the table per runtime × precision, the verdict, each front with its figures, and caveats."""
    cells = judge_all(rows)
    published = [r for r in rows if r.top1 is not None and r.task == "classification"]
    families = sorted({r.family for r in published})
    out = [
        "# Is MobileNetV4 Conv-S/M on the Pareto front on this CPU? (issue 29)",
        "",
        f"CPU: {cpu_line or 'not recorded in the grid file'}",
        f"Grid: `{grid}`, {len(published)} models with a published top-1 ({', '.join(families)}).",
        f"Written by: `{command}`",
        "",
        "Latency is the grid's median per call (batch 1); accuracy is each paper's ImageNet top-1, not measured here. "
        "A model is on the front when no other is both at most as slow and at least as accurate (better in one).",
        "",
        f"| runtime/precision | {' | '.join(f'{n} ({_top1(rows, m)})' for m, n in TARGETS.items())} |",
        "|---|" + "---|" * len(TARGETS),
    ]
    out += [f"| {k} | {' | '.join(describe(c) for c in cs)} |" for k, cs in cells.items()]
    out += ["", *verdict(cells)]
    missing = [g for g in GENERATIONS if not any(r.family.startswith(g) and r.latency_ms for r in published)]
    if missing:
        out += ["", f"**This grid has no timed {', '.join(missing)} rows**: the fronts above leave those out."]
    out += ["", "## The fronts", ""]
    for key in cells:
        front = pareto_front(rows, key, "top1")
        out.append(f"- {key}: " + " → ".join(f"{r.model} {r.latency_ms[key]:.2f} ms {r.top1:.1f}%" for r in front))
    dominated = [c for cs in cells.values() for c in cs if c.measured and not c.on_front and len(c.dominated_by) > 1]
    if dominated:
        out += ["", "## Every dominator", ""]
        for c in dominated:
            beaters = ", ".join(f"{r.model} ({r.latency_ms[c.key]:.2f} ms, {r.top1:.1f}%)" for r in c.dominated_by)
            out.append(f"- {TARGETS[c.model]} on {c.key} ({c.latency_ms:.2f} ms, {c.top1:.1f}%): {beaters}")
    out += [
        "",
        "## Caveats",
        "",
        "- The papers' top-1 come from different training recipes (V4's is longer and heavier than V1's); this "
        "compares the published networks as published.",
        "- The paper's mobile CPUs are phones' Arm cores; this grid is one x86 CPU, batch 1, with the runtimes "
        "listed. Latencies are one run's medians: a dominator less than "
        f"{100 * NARROW:.0f}% faster is marked narrow.",
    ]
    return "\n".join(out) + "\n"


def _top1(rows: list[GridRow], model: str) -> str:
    row = next((r for r in rows if r.model == model), None)
    return f"{row.top1:.1f}%" if row is not None and row.top1 is not None else "no top-1"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--grid", required=True, help="grid.json from `mobilenets bench --grid --out-dir`")
    p.add_argument("--out", required=True, help="where to write the answer (Markdown)")
    args = p.parse_args(argv)
    rows = load_grid(args.grid)
    command = shlex.join(["python", "benchmarks/pareto_v4.py", *(argv if argv is not None else sys.argv[1:])])
    text = answer(rows, args.grid, load_grid_cpu(args.grid), command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
