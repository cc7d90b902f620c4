"""`fit`'s report: fit.json (everything), fit.md (for people), fit.png (held-out top-1 against latency, the budget
line and the winner marked), and the short summary the CLI prints."""

from __future__ import annotations

from pathlib import Path

from mobilenets.io import atomic_path, atomic_write_json, atomic_write_text


def write_report(result, out: Path, cfg) -> None:
    atomic_write_json(out / "fit.json", result.to_dict())
    atomic_write_text(out / "fit.md", markdown(result, cfg))
    plot(result, out / "fit.png", cfg)


def _pct(x: float | None) -> str:
    return f"{100 * x:.2f}%" if x is not None else "—"


def _ms(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "—"


def budget_line(cfg) -> str:
    parts = []
    if cfg.max_latency_ms is not None:
        parts.append(f"latency ≤ {cfg.max_latency_ms:g} ms")
    if cfg.max_params is not None:
        parts.append(f"params ≤ {cfg.max_params / 1e6:g}M")
    if cfg.max_mult_adds is not None:
        parts.append(f"Mult-Adds ≤ {cfg.max_mult_adds / 1e6:g}M")
    if cfg.max_file_mb is not None:
        parts.append(f"file ≤ {cfg.max_file_mb:g} MB")
    return ", ".join(parts)


def markdown(result, cfg) -> str:
    trials = {}
    for t in result.trials:
        trials[t["candidate"]] = t  # the latest trial of each candidate
    lines = [
        f"# fit: {cfg.dataset} → {cfg.runtime} {cfg.precision}",
        "",
        f"Budget: {budget_line(cfg)}; time budget {cfg.time_budget_s:.0f} s, spent {result.seconds['total']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items() if k != 'total')}).",
        f"CPU: {result.cpu}. Latency is the median of 30 batch-1 calls on this CPU "
        f"({cfg.threads or 'default'} thread(s)) unless a latency table was given; timings on a shared machine are "
        "noisy.",
        "",
    ]
    if result.winner:
        lines += [
            f"**Winner: {result.winner}** → `{Path(result.file).name}` ({result.file_size_bytes / 1e6:.2f} MB), "
            "verified; "
            + (
                f"its float model {_pct(result.float_test_acc)} top-1 on the test split; "
                if result.float_test_acc
                else ""
            )
            + f"on {cfg.heldout} held-out images the file {_pct(result.file_heldout_acc)}, the float model "
            f"{_pct(result.float_heldout_acc)}; {_ms(result.file_latency_ms)} ms measured again on the file.",
            "",
            f"Why: {result.winner_reason}.",
            "",
            f"Started from: {result.started_from}.",
            "",
        ]
    else:
        lines += ["**No file held**: every candidate tried failed verification or the accuracy check.", ""]
    lines += [
        "## Candidates",
        "",
        "Prior: the papers' ImageNet top-1 (interpolated within a family where not printed). Held-out: top-1 on "
        f"{cfg.heldout} test images after the trial's last epoch of {cfg.subset} training images.",
        "",
        "| candidate | Mult-Adds (M) | params (M) | prior top-1 | latency ms | latency from | verdict | trial "
        "| epochs | held-out top-1 | trial s |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for c in sorted(result.candidates, key=lambda c: (c["verdict"] != "fits", c["name"] not in trials, c["name"])):
        t = trials.get(c["name"])
        lines.append(
            f"| {c['name']} | {c['mult_adds'] / 1e6:.1f} | {c['num_params'] / 1e6:.2f} | "
            f"{c['top1_prior'] if c['top1_prior'] is not None else '—'} | {_ms(c['latency_ms'])} | "
            f"{c['latency_source'] or '—'} | {c['verdict']} | {_trial_state(t)} | "
            f"{t['rungs'] if t else '—'} | {_pct(t['heldout_acc'][-1] if t and t['heldout_acc'] else None)} | "
            f"{t['seconds'] if t else '—'} |"
        )
    lines += ["", "## Quantization attempts", ""]
    for a in result.attempts:
        verdict = "held" if a["passed"] else "did not hold"
        drop = (
            f", held-out drop {a['drop_points']:.2f} points (95% interval {a['drop_interval'][0]:.2f} to "
            f"{a['drop_interval'][1]:.2f})"
            if a["drop_points"] is not None
            else ""
        )
        lines.append(f"- {a['candidate']}: {a['step']}: {verdict} ({a['seconds']:.0f} s){drop}. {a['detail']}")
    final = result.final or {}
    lines += ["", "## Final training", ""]
    if final.get("note"):
        lines.append(final["note"])
    elif final:
        lines.append(
            f"{final.get('steps')} steps ({final.get('epochs')} epoch(s) of "
            f"{final.get('max_train_samples') or 'all'} training images) from the trial's weights; "
            f"{final.get('train_time_s', '?')} s of training."
        )
    lines += [
        "",
        "## Regenerate",
        "",
        "```",
        command_line(cfg),
        "```",
        "",
    ]
    return "\n".join(lines)


def _trial_state(t: dict | None) -> str:
    if t is None:
        return "—"
    return t["state"].lower() + (f" ({t['note']})" if t.get("note") else "")


def command_line(cfg) -> str:
    parts = ["mobilenets fit", cfg.dataset, f"--runtime {cfg.runtime}", f"--precision {cfg.precision}"]
    for flag, v in (("--max-latency-ms", cfg.max_latency_ms), ("--max-file-mb", cfg.max_file_mb)):
        if v is not None:
            parts.append(f"{flag} {v:g}")
    for flag, v in (("--max-params", cfg.max_params), ("--max-mult-adds", cfg.max_mult_adds)):
        if v is not None:
            parts.append(f"{flag} {v / 1e6:g}M")
    parts.append(f"--time-budget {cfg.time_budget_s:.0f}s")
    for flag, v in (("--family", cfg.families), ("--widths", cfg.widths), ("--resolutions", cfg.resolutions)):
        if v:
            parts.append(f"{flag} {' '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in v)}")
    options = [("--rank-by", cfg.rank_by, "prior"), ("--max-trials", cfg.max_trials, 6), ("--subset", cfg.subset, 5000),
               ("--rungs", cfg.rungs, 3), ("--heldout", cfg.heldout, 1000), ("--batch-size", cfg.batch_size, 64),
               ("--qat-steps", cfg.qat_steps, 100)]  # fmt: skip
    for flag, v, default in options:
        if v != default:
            parts.append(f"{flag} {v}")
    if cfg.threads:
        parts.append(f"--threads {cfg.threads}")
    parts.append(f"-o {cfg.out_dir}")
    return " ".join(parts)


def plot(result, path: Path, cfg) -> None:
    """Held-out top-1 of every trial against its latency; the latency budget as a line, the winner marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = {t["candidate"]: t for t in result.trials if t["heldout_acc"]}
    lat = {c["name"]: c["latency_ms"] for c in result.candidates}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, t in trials.items():
        if lat.get(name) is None:
            continue
        winner = name == result.winner
        ax.scatter(lat[name], 100 * t["heldout_acc"][-1], s=90 if winner else 40, marker="*" if winner else "o",
                   color="crimson" if winner else "steelblue", zorder=3)  # fmt: skip
        ax.annotate(f"{name} ({t['rungs']} ep)", (lat[name], 100 * t["heldout_acc"][-1]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    if cfg.max_latency_ms is not None:
        ax.axvline(cfg.max_latency_ms, color="gray", linestyle="--", label=f"budget {cfg.max_latency_ms:g} ms")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"latency, {cfg.runtime} {cfg.precision} (ms, batch 1)")
    ax.set_ylabel(f"held-out top-1 after the trial (%, {cfg.heldout} images)")
    ax.set_title(f"fit on {cfg.dataset}: winner {result.winner or 'none'}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def summary(result, cfg) -> str:
    """What the CLI prints at the end."""
    n_trials = len({t["candidate"] for t in result.trials if t["rungs"]})
    n_fit = sum(c["verdict"] == "fits" for c in result.candidates)
    head = (
        f"{result.winner} → {result.file} ({result.file_size_bytes / 1e6:.2f} MB, verified): "
        f"{_ms(result.file_latency_ms)} ms on this CPU ({cfg.runtime} {cfg.precision}; budget {budget_line(cfg)}), "
        f"float top-1 {_pct(result.float_test_acc)} on the test split; on {cfg.heldout} held-out images the file "
        f"{_pct(result.file_heldout_acc)}, the float model {_pct(result.float_heldout_acc)}"
    )
    return "\n".join(
        [
            head,
            f"  {len(result.candidates)} candidates, {n_fit} within the budget, {n_trials} fine-tuned; "
            f"{result.seconds['total']:.0f} s of {cfg.time_budget_s:.0f} s",
            f"  weights      {result.started_from}",
            f"  report       {Path(result.out_dir) / 'fit.md'} (fit.json, fit.png)",
        ]
    )
