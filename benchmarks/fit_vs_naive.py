"""`mobilenets fit` against the naive choice on Fashion-MNIST (issue 38): the same time budget, the same latency budget.

    .venv/bin/python benchmarks/fit_vs_naive.py --runtime onnx --max-latency-ms 1 --time-budget 600 \\
        --out reports/fit/onnx-int8-1ms --threads 1

fit: every V1, V2, V3-Large and V3-Small α at 28 px (Fashion-MNIST's own size, the small-image stem) within the
budget, ranked by the papers' top-1, searched and trained by ``fit``. The naive choice: the biggest V1 within the
budget by Mult-Adds (``fit --family mobilenet_v1 --rank-by mult-adds --max-trials 1``: no search, the whole time
spent fine-tuning it), quantized and verified by the same code. Both files are then scored by their own runtime on
all 10,000 test images and timed again, interleaved (five rounds of 30 batch-1 calls each, the median of the
rounds' medians), so that both see the same machine load.

Writes OUT/comparison.md and OUT/comparison.json, and each run's fit.md, fit.json and fit.png under OUT/fit and
OUT/naive; the runs themselves (files, checkpoints, search.db) go to runs/fit-vs-naive/ (not committed).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from mobilenets import data as D
from mobilenets.deploy.bench import time_calls, torch_threads
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.export import load_runner
from mobilenets.fit import FitConfig, fit, resolve_runtime
from mobilenets.fit.quantize import file_predictions
from mobilenets.io import atomic_write_json, atomic_write_text
from mobilenets.weights import load_weights

FAMILIES = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]


def test_accuracy(out: Path, fmt: str, precision: str, threads: int | None) -> tuple[float, float]:
    """(file top-1, float model top-1) on all 10,000 Fashion-MNIST test images, the file run by its own runtime."""
    model, card = load_weights(out / "model.safetensors")
    ds = D.load_dataset("fashion-mnist", "test")
    pre = card.preprocessing
    file_right = float_right = 0
    path = next(p for p in out.glob("model.*") if p.suffix not in (".safetensors", ".json", ".bin"))
    for start in range(0, len(ds), 1000):
        x = D.prepare_batch(ds.images[start : start + 1000], pre.mean, pre.std, pre.resolution, 1)
        y = ds.labels[start : start + 1000].numpy()
        file_right += int((file_predictions(path, fmt, precision, x, threads) == y).sum())
        with torch.no_grad():
            float_right += int((model(x).argmax(1).numpy() == y).sum())
    return file_right / len(ds), float_right / len(ds)


def interleaved_latency(outs: dict[str, Path], fmt: str, precision: str, threads: int | None, rounds: int = 5):
    runners = {}
    for name, out in outs.items():
        path = next(p for p in out.glob("model.*") if p.suffix not in (".safetensors", ".json", ".bin"))
        model, card = load_weights(out / "model.safetensors")
        x = np.zeros((1, 1, card.preprocessing.resolution, card.preprocessing.resolution), np.float32)
        run = load_runner(path, fmt, precision, threads, 1)
        runners[name] = lambda run=run, x=x: run(x)
    medians = {name: [] for name in outs}
    for _ in range(rounds):
        for name, fn in runners.items():
            time.sleep(0.3)
            with torch_threads(threads):
                medians[name].append(time_calls(fn, 30, 5).median_ms)
    return {name: round(statistics.median(v), 3) for name, v in medians.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", default="onnx")
    p.add_argument("--precision", default="int8")
    p.add_argument("--max-latency-ms", type=float, default=1.0)
    p.add_argument("--time-budget", type=float, default=600, help="seconds, for each of the two fits")
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--subset", type=int, default=2000, help="training images per trial")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="runs/fit-vs-naive")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work) / Path(args.out).name
    out.mkdir(parents=True, exist_ok=True)
    common = dict(runtime=args.runtime, precision=args.precision, max_latency_ms=args.max_latency_ms,
                  time_budget_s=args.time_budget, resolutions=[args.resolution], threads=args.threads,
                  subset=args.subset)  # fmt: skip
    configs = {
        "fit": FitConfig("fashion-mnist", out_dir=str(work / "fit"), families=FAMILIES, **common),
        "naive": FitConfig(
            "fashion-mnist",
            out_dir=str(work / "naive"),
            families=["mobilenet_v1"],
            rank_by="mult-adds",
            max_trials=1,
            **common,
        ),  # fmt: skip
    }
    results, walls = {}, {}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        results[name] = fit(cfg)
        walls[name] = round(time.perf_counter() - t0, 1)
        (out / name).mkdir(exist_ok=True)
        for f in ("fit.md", "fit.json", "fit.png"):
            shutil.copy(Path(cfg.out_dir) / f, out / name / f)
        print(f"{name}: {results[name].winner} in {walls[name]} s", file=sys.stderr)
    fmt = resolve_runtime(args.runtime, args.precision)[0]
    latency = interleaved_latency({n: Path(c.out_dir) for n, c in configs.items()}, fmt, args.precision, args.threads)
    rows = {}
    for name, cfg in configs.items():
        r = results[name]
        file_acc, float_acc = test_accuracy(Path(cfg.out_dir), fmt, args.precision, args.threads)
        rows[name] = dict(model=r.winner, started_from=r.started_from, file_test_acc=file_acc, float_test_acc=float_acc,
                          latency_ms=latency[name], wall_s=walls[name], file_mb=round(r.file_size_bytes / 1e6, 3),
                          trials=len({t["candidate"] for t in r.trials if t["rungs"]}))  # fmt: skip
    report = dict(
        command=".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_info().line(),
        threads=args.threads,
        budget=dict(
            max_latency_ms=args.max_latency_ms,
            runtime=args.runtime,
            precision=args.precision,
            time_budget_s=args.time_budget,
            resolution=args.resolution,
        ),  # fmt: skip
        rows=rows,
    )
    atomic_write_json(out / "comparison.json", report)
    atomic_write_text(out / "comparison.md", markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    b = report["budget"]
    lines = [
        f"# fit vs the naive choice: Fashion-MNIST, {b['runtime']} {b['precision']} ≤ {b['max_latency_ms']:g} ms",
        "",
        f"{report['date']}, {report['cpu']}, {report['threads']} thread(s), a shared machine (other jobs running: "
        "timings are noisy). Each run had a time budget of "
        f"{b['time_budget_s']:.0f} s at {b['resolution']} px. Accuracy: the shipped file, run by its own runtime, on "
        "all 10,000 test images. Latency: the two files timed again interleaved (median of 5 rounds × 30 batch-1 "
        "calls).",
        "",
        "| run | model | weights | trials | file top-1 | float top-1 | latency ms | file MB | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["rows"].items():
        lines.append(
            f"| {name} | {r['model']} | {r['started_from']} | {r['trials']} | {100 * r['file_test_acc']:.2f}% | "
            f"{100 * r['float_test_acc']:.2f}% | {r['latency_ms']:.3f} | {r['file_mb']:.2f} | {r['wall_s']:.0f} |"
        )
    lines += ["", "```", report["command"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
