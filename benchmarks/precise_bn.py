"""Precise BN (issue 34) on Fashion-MNIST: test top-1 with BatchNorm's moving averages and with the statistics
recomputed for the final weights, after 30, 105 and 300 steps of MobileNetV1 α 0.25, V2 α 0.5 and V3-Small, and
what the recomputation costs.

Each run is `mobilenets train` on 2,000 training images (15 steps of 128 per epoch; 2, 7 and 20 epochs) with the
defaults, precise BN on, seed 0, evaluated once at the end on 2,000 test images. Training is the same with precise
BN off (the pass works on a copy under a saved RNG; tests/test_train.py checks it bit for bit), so "without" is the
same weights with the statistics training kept (the run's checkpoint.pt), evaluated as the engine evaluates. Two
more columns recompute the statistics in this script, over the engine's images (the first 32 batches of its own
permutation): with evaluation's transforms, which must give the engine's figure, and with the run's training
transforms (random shifts and flips), the alternative the issue asked to measure.

--demo times the recomputation inside `mobilenets demo`'s run (3 epochs of 60,000 images, 3 evaluations) and
scores the final weights with 8, 32 (the default) and 200 batches.

    python benchmarks/precise_bn.py --out reports/precise-bn            # the table (~10 min on 2 busy cores)
    python benchmarks/precise_bn.py --demo --out reports/precise-bn     # the demo's cost (~4 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from mobilenets import data as D
from mobilenets.training import TrainConfig, demo_config, evaluate, load_model, load_train_test, set_cpu_threads, train
from mobilenets.training.precise_bn import recompute_bn_stats

MODELS = [("mobilenet_v1", 0.25), ("mobilenet_v2", 0.5), ("mobilenet_v3_small", 1.0)]
EPOCHS = [2, 7, 20]  # 30, 105 and 300 steps of 128 images out of 2,000
PRECISE_BN_EPOCH = -1  # the engine's (mobilenets.training.loop): the pass's image order


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pass_batches(cfg: TrainConfig, train_set, num: int, training_transforms: bool):
    """The engine's precise-BN inputs (one process, no accumulation), optionally with the run's augmentation."""
    order = D.epoch_order(len(train_set), cfg.seed, PRECISE_BN_EPOCH)
    augment = D.Augment(crop_scale=(cfg.crop_scale_min, 1.0), translate=cfg.translate, flip=cfg.flip)
    for k in range(min(num, len(train_set) // cfg.batch_size)):
        idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
        rand = None
        if training_transforms:
            rand = D.augment_rand(len(idx), D.step_generator(cfg.seed, PRECISE_BN_EPOCH, k))
        yield D.prepare_batch(
            train_set.images[idx],
            train_set.mean,
            train_set.std,
            cfg.resolution,
            train_set.in_chans,
            augment if training_transforms else None,
            rand,
            channels_last=True,
        )


def score(model, test_set, cfg: TrainConfig) -> float:
    return evaluate(model, test_set, resolution=cfg.resolution, channels_last=True).top1


def recomputed(model, cfg, train_set, num: int, training_transforms: bool = False):
    model = copy.deepcopy(model)
    start = time.perf_counter()
    recompute_bn_stats(model, pass_batches(cfg, train_set, num, training_transforms))
    return model, time.perf_counter() - start


def final_weights(result) -> tuple:
    """The run's final weights with the statistics training kept, its config and data (as the engine loaded them)."""
    cfg = TrainConfig(**result.config)
    model, meta = load_model(Path(result.out_dir) / "checkpoint.pt")
    model = model.to(memory_format=torch.channels_last)
    train_set, test_set = load_train_test(cfg)
    for ds in (train_set, test_set):
        ds.mean, ds.std = tuple(meta["mean"]), tuple(meta["std"])
    return model, cfg, train_set, test_set


def run_cell(name: str, width_mult: float, epochs: int, runs: Path, test_samples: int) -> dict:
    cfg = TrainConfig(
        model=name,
        width_mult=width_mult,
        dataset="fashion-mnist",
        max_train_samples=2000,
        max_test_samples=test_samples,
        epochs=epochs,
        eval_every=epochs,
        out_dir=str(runs / f"{name}-{width_mult}-e{epochs}"),
        progress=False,
        tensorboard=False,
        plots=False,
    )
    result = train(cfg)
    model, cfg, train_set, test_set = final_weights(result)
    by_hand, _ = recomputed(model, cfg, train_set, cfg.precise_bn)
    augmented, _ = recomputed(model, cfg, train_set, cfg.precise_bn, training_transforms=True)
    return dict(
        model=name,
        width_mult=width_mult,
        epochs=epochs,
        steps=result.steps,
        without=score(model, test_set, cfg),
        with_precise_bn=result.test_acc,
        script_eval_transforms=score(by_hand, test_set, cfg),
        script_training_transforms=score(augmented, test_set, cfg),
        train_time_s=result.train_time_s,
        precise_bn_s=result.precise_bn_s,
        wall_time_s=result.wall_time_s,
    )


def run_demo(runs: Path) -> dict:
    cfg = demo_config(out_dir=str(runs / "demo"))
    cfg.progress, cfg.tensorboard = False, False
    result = train(cfg)
    model, cfg, train_set, test_set = final_weights(result)
    row = dict(
        dataset=cfg.dataset,
        test_images=len(test_set),
        steps=result.steps,
        evaluations=len(result.history),
        train_time_s=result.train_time_s,
        wall_time_s=result.wall_time_s,
        precise_bn_s=result.precise_bn_s,
        without=score(model, test_set, cfg),
        with_precise_bn=result.test_acc,
        by_batches={},
    )
    for num in (8, 32, 200):
        fresh, seconds = recomputed(model, cfg, train_set, num)
        row["by_batches"][num] = dict(top1=score(fresh, test_set, cfg), seconds=seconds)
    return row


def cells_table(rows: list[dict]) -> str:
    lines = [
        "| model | steps | without | with precise BN | (script: eval transforms) | (script: training transforms) "
        "| precise BN s / wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} α {r['width_mult']} | {r['steps']} | {100 * r['without']:.2f}% "
            f"| **{100 * r['with_precise_bn']:.2f}%** | {100 * r['script_eval_transforms']:.2f}% "
            f"| {100 * r['script_training_transforms']:.2f}% | {r['precise_bn_s']:.1f} / {r['wall_time_s']:.0f} |"
        )
    return "\n".join(lines)


def demo_table(d: dict) -> str:
    share = d["precise_bn_s"] / d["wall_time_s"]
    lines = [
        f"`mobilenets demo`'s run ({d['dataset']}, {d['steps']} steps, {d['evaluations']} evaluations): "
        f"{d['precise_bn_s']:.1f} s of {d['wall_time_s']:.0f} s ({100 * share:.1f}%) recomputing statistics; "
        f"top-1 on its {d['test_images']:,} test images {100 * d['without']:.2f}% without, "
        f"{100 * d['with_precise_bn']:.2f}% with. The final weights' statistics recomputed over more or fewer "
        "batches:",
        "",
        "| batches of 128 | test top-1 | seconds per pass |",
        "| ---: | ---: | ---: |",
    ]
    for num, v in d["by_batches"].items():
        lines.append(f"| {num} | {100 * v['top1']:.2f}% | {v['seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports/precise-bn", help="results.json and report.md go here")
    p.add_argument("--runs", default="runs/precise-bn", help="the training runs' folders (default: runs/precise-bn)")
    p.add_argument("--demo", action="store_true", help="measure the demo's run instead of the table")
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = set_cpu_threads(args.threads)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = dict(cpu=cpu_name(), threads=threads, torch=torch.__version__)
    if args.demo:
        results["demo"] = run_demo(Path(args.runs))
        print(demo_table(results["demo"]))
    else:
        results["cells"] = []
        for name, width_mult in MODELS:
            for epochs in EPOCHS:
                results["cells"].append(run_cell(name, width_mult, epochs, Path(args.runs), args.test_samples))
                print(cells_table(results["cells"][-1:]).splitlines()[-1], flush=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    machine = results["machine"]
    report = [
        f"# Precise BN on Fashion-MNIST ({machine['cpu']}, {machine['threads']} thread(s), torch {machine['torch']})",
        "",
        "Made by `python benchmarks/precise_bn.py --out reports/precise-bn` (the table) and "
        "`python benchmarks/precise_bn.py --demo --out reports/precise-bn` (the demo). Runs of 2,000 training "
        f'images, batch 128, the sgd preset, seed 0; test top-1 on {args.test_samples:,} test images. "without": '
        "the statistics training kept; \"with\": the engine's (32 batches, evaluation's transforms); the script's "
        "columns recompute over the same images, with evaluation's or the run's training transforms.",
        "",
    ]
    if "cells" in results:
        report += [cells_table(results["cells"]), ""]
    if "demo" in results:
        report += [demo_table(results["demo"]), ""]
    (out / "report.md").write_text("\n".join(report))


if __name__ == "__main__":
    main()
