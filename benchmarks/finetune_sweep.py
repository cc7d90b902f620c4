"""Fine-tuning learning rates, chosen on held-out training images (never the test set), CPU only.

    .venv/bin/python benchmarks/finetune_sweep.py --out reports/finetune-sweep --threads 2    # ~16 min, 2 cores
    .venv/bin/python benchmarks/finetune_sweep.py --quick --out /tmp/finetune-sweep            # smoke test

Every run is transfer_fashion_mnist.py's fine-tuned arm (a): MobileNet 1.0 from Google's ImageNet weights on
1,000 Fashion-MNIST training images, 96 px, 10 epochs, batch 32, the ``finetune`` preset, with two values
varied: the learning rate (per 256 images; the classifier's) and ``backbone_lr_scale`` (the backbone's rate
as a fraction of it). Each run is scored on 2,000 *other* training images (class-balanced, disjoint from the
1,000): a validation split, so the recipe the transfer report then tests was not picked on its test images.

A finished run is cached as ``OUT/cells/<run>.json`` (named by a hash of its config): an interrupted sweep
resumes, and a wider grid (``--lrs``, ``--scales``) trains only the new points. report.md, results.json and
sweep.png are rewritten atomically from the cache at the end.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transfer_fashion_mnist as transfer  # noqa: E402  (the sibling script: the same arm (a))

from mobilenets import data as D  # noqa: E402
from mobilenets.errors import MobileNetsError  # noqa: E402
from mobilenets.io import atomic_path, atomic_write_json, atomic_write_text  # noqa: E402
from mobilenets.reproduce import config_hash, hardware, load_cached  # noqa: E402

CACHE_VERSION = 2  # 2: evaluations with precise BN (issue 34)
LRS = (0.05, 0.1, 0.2, 0.4)  # per 256 images; at batch 32 the rate is an eighth of it
SCALES = (0.1, 1.0)
VAL_SAMPLES = {"full": 2000, "quick": 200}
VAL_SEED = 1


def base_config(quick: bool) -> dict:
    """The transfer report's fine-tuned arm (a), as TrainConfig fields."""
    plan = transfer.PLANS["quick" if quick else "full"]
    arm = next(a for a in transfer.arms(plan) if a.key == "finetune")
    return dict(arm.config)


def validation_split(cfg: dict, n: int) -> D.ArrayDataset:
    """``n`` class-balanced training images that the run's ``max_train_samples`` subset does not contain."""
    full = D.load_dataset(cfg["dataset"], "train", seed=cfg["seed"])
    used = D.balanced_subset(full.labels, cfg["max_train_samples"], cfg["seed"])
    free = torch.ones(len(full), dtype=torch.bool)
    free[used] = False
    rest = free.nonzero().flatten()
    pick = rest[D.balanced_subset(full.labels[rest], n, VAL_SEED)]
    return D.ArrayDataset(full.name, "val", full.images[pick], full.labels[pick], full.classes, full.mean, full.std)


def run_point(base: dict, lr_per_256: float, scale: float, val: D.ArrayDataset, out_dir: Path) -> tuple[dict, bool]:
    """Train one grid point and score it on ``val``, or reuse its cached record: (record, trained now)."""
    from mobilenets.training import TrainConfig, load_model, train
    from mobilenets.training.config import PRESETS
    from mobilenets.training.evaluate import evaluate

    config = {
        "cache_version": CACHE_VERSION,
        **base,
        "preset_values": dict(PRESETS[base["preset"]]),
        "lr": lr_per_256 * base["batch_size"] / 256,
        "backbone_lr_scale": scale,
        "max_test_samples": 10,  # train() ends with a test evaluation; the sweep never reads it
        "val_samples": len(val),
        "val_seed": VAL_SEED,
    }
    name = f"lr{lr_per_256:g}-bb{scale:g}-{config_hash(config)}"
    path = out_dir / "cells" / f"{name}.json"
    record = load_cached(path, config, done=("val_top1",))
    if record is not None:
        return record, False
    fields = {k: v for k, v in config.items() if k not in ("cache_version", "preset_values", "val_samples", "val_seed")}
    result = train(
        TrainConfig(
            **fields,
            eval_every=fields["epochs"],
            channels_last=True,
            out_dir=str(out_dir / "runs" / name),
            resume=True,
            progress=False,
            tensorboard=False,
            plots=False,
        )
    )
    if result.interrupted:
        raise KeyboardInterrupt(f"interrupted during {name}; run again to resume")
    model, meta = load_model(result.model_path)
    val.mean, val.std = tuple(meta["mean"]), tuple(meta["std"])  # the weights' input convention
    ev = evaluate(model, val, resolution=meta["resolution"], channels_last=True)
    Path(result.checkpoint_path).unlink(missing_ok=True)
    record = {
        "name": name,
        "config": config,
        "lr_per_256": lr_per_256,
        "lr": config["lr"],
        "backbone_lr_scale": scale,
        "val_top1": ev.top1,
        "val_loss": ev.loss,
        "train_time_s": result.train_time_s,
        "hardware": hardware(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return record, True


# ----------------------------------------------------------------------------------------------------
# Report


def summarize(records: list[dict], base: dict, val_samples: int) -> dict:
    best = max(records, key=lambda r: r["val_top1"])
    from mobilenets.training.config import PRESETS

    preset = PRESETS[base["preset"]]
    current = next(
        (
            r
            for r in records
            if r["lr_per_256"] == preset["lr_per_256"] and r["backbone_lr_scale"] == preset["backbone_lr_scale"]
        ),
        None,
    )
    return dict(
        base=base,
        val_samples=val_samples,
        rows=sorted(records, key=lambda r: (r["backbone_lr_scale"], r["lr_per_256"])),
        best=best["name"],
        preset=dict(lr_per_256=preset["lr_per_256"], backbone_lr_scale=preset["backbone_lr_scale"]),
        preset_row=current["name"] if current else None,
    )


def render_markdown(res: dict) -> str:
    b = res["base"]
    rows = res["rows"]
    lrs = sorted({r["lr_per_256"] for r in rows})
    scales = sorted({r["backbone_lr_scale"] for r in rows})
    cell = {(r["lr_per_256"], r["backbone_lr_scale"]): r for r in rows}
    hw = res["hardware"]
    lines = [
        "# Fine-tuning learning rates on held-out training images",
        "",
        "Regenerate (finished runs are reused from `cells/`; delete it to retrain):",
        "",
        "```",
        res["command"],
        "```",
        "",
        f"MobileNet 1.0 from Google's ImageNet weights, fine-tuned on {b['max_train_samples']:,} Fashion-MNIST "
        f"training images (class-balanced, seed {b['seed']}), {b['resolution']} px, {b['epochs']} epochs, batch "
        f"{b['batch_size']}, the `{b['preset']}` preset with the two values below changed: the arm (a) of "
        "`benchmarks/transfer_fashion_mnist.py`. Scored on "
        f"{res['val_samples']:,} other training images (class-balanced, disjoint from the training subset), "
        "never on the test set.",
        "",
        f"Hardware: {hw['cpu']}, {hw['cpu_count']} cores (torch threads: {hw.get('torch_threads', '?')}), "
        f"torch {hw['torch']}. {len(rows)} runs, "
        f"{sum(r['train_time_s'] for r in rows) / 60:.1f} min of training steps; this invocation trained "
        f"{res['trained_runs']} in {res['wall_time_s'] / 60:.1f} min.",
        "",
        "Validation top-1 % (rows: the backbone's rate as a fraction of the classifier's; columns: the "
        f"classifier's learning rate per 256 images, i.e. ×{b['batch_size']}/256 at batch {b['batch_size']}):",
        "",
        "| backbone_lr_scale | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
        "|---|" + "---|" * len(lrs),
    ]
    for scale in scales:
        parts = []
        for lr in lrs:
            r = cell.get((lr, scale))
            text = "-" if r is None else f"{100 * r['val_top1']:.2f}"
            if r is not None and r["name"] == res["best"]:
                text = f"**{text}**"
            parts.append(text)
        lines.append(f"| {scale:g} | " + " | ".join(parts) + " |")
    best = next(r for r in rows if r["name"] == res["best"])
    p = res["preset"]
    lines += [
        "",
        f"- Best: lr {best['lr_per_256']:g} per 256 with the backbone at {best['backbone_lr_scale']:g}×: "
        f"**{100 * best['val_top1']:.2f}%**.",
        f"- The `{b['preset']}` preset now: lr {p['lr_per_256']:g} per 256, backbone_lr_scale "
        f"{p['backbone_lr_scale']:g}"
        + (
            f" ({100 * next(r for r in rows if r['name'] == res['preset_row'])['val_top1']:.2f}% here)."
            if res["preset_row"]
            else " (not in this grid)."
        ),
        "- One seed per point: differences under about a point are within what a re-run moves.",
        "",
    ]
    return "\n".join(lines)


def write_plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for scale in sorted({r["backbone_lr_scale"] for r in res["rows"]}):
        pts = sorted((r["lr_per_256"], 100 * r["val_top1"]) for r in res["rows"] if r["backbone_lr_scale"] == scale)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"backbone ×{scale:g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("classifier learning rate per 256 images")
    ax.set_ylabel("validation top-1 %")
    ax.set_title("Fine-tuning ImageNet MobileNet 1.0 on 1,000 Fashion-MNIST images", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports/finetune-sweep", help="report folder (cells/ is the cache)")
    p.add_argument("--quick", action="store_true", help="smoke test: transfer's quick plan, 200 validation images")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--lrs", default=",".join(f"{v:g}" for v in LRS), help="learning rates per 256, comma-separated")
    p.add_argument("--scales", default=",".join(f"{v:g}" for v in SCALES), help="backbone_lr_scale values")
    args = p.parse_args(argv)
    try:
        lrs = [float(v) for v in args.lrs.split(",")]
        scales = [float(v) for v in args.scales.split(",")]
    except ValueError:
        msg = f"--lrs/--scales take comma-separated numbers, got {args.lrs!r} / {args.scales!r}"
        raise MobileNetsError(msg) from None
    if any(v <= 0 for v in lrs + scales):
        raise MobileNetsError("--lrs and --scales must be positive")
    transfer.set_threads(args.threads)
    base = base_config(args.quick)
    val = validation_split(base, VAL_SAMPLES["quick" if args.quick else "full"])
    out_dir = Path(args.out)
    start = time.perf_counter()
    records, trained = [], 0
    for scale in scales:
        for lr in lrs:
            record, now = run_point(base, lr, scale, val, out_dir)
            records.append(record)
            trained += now
            print(f"lr {lr:g}/256, backbone ×{scale:g}: validation top-1 {100 * record['val_top1']:.2f}%", flush=True)
    res = summarize(records, base, len(val))
    res.update(
        command=shlex.join(
            [".venv/bin/python", "benchmarks/finetune_sweep.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        hardware=hardware(),
        trained_runs=trained,
        wall_time_s=time.perf_counter() - start,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", res)
    atomic_write_text(out_dir / "report.md", render_markdown(res))
    write_plot(res, out_dir / "sweep.png")
    print(f"wrote {out_dir / 'report.md'}, {out_dir / 'results.json'}, {out_dir / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    transfer.run_script(main)
