"""The browser against native: one `export --format web` file on onnxruntime-web (Chromium) and on ONNX Runtime.

Google's ImageNet MobileNetV1 1.0/224 (and any registered name given with --model, random weights with BN
statistics measured on real photos), exported by `mobilenets export --format web` in fp32 and int8, each export
verified as always (tensors and image files through the page, against PyTorch). The same model.onnx then runs
natively (ONNX Runtime's CPU provider, Python) and in the page (onnxruntime-web's WebAssembly SIMD build in
headless Chromium, timed inside the page with performance.now around session.run), at 1 and 2 threads, batch 1.

All runners live in this one process and are timed in interleaved rounds (each round visits every runner in a
shuffled order and times a block of calls), so a busy machine slows them alike; the figure per runner is the
median of its block medians, and the ratio browser / native is taken per precision and thread count.

    .venv/bin/python benchmarks/web_latency.py --model mobilenet_v1_1.0_224 mobilenet_v1_0.25_128 --out reports/web
    .venv/bin/python benchmarks/web_latency.py --rounds 3 --block 5         # a quick look (the first: ~8 min)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilenets.deploy import export as ex
from mobilenets.deploy import onnx, web
from mobilenets.deploy.bench import timed_calls
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import calibrate_bn, real_images
from mobilenets.io import atomic_write_text

PRECISIONS = ("fp32", "int8")
THREADS = (1, 2)


def build(name: str):
    """(model, card or None) for a registered name; the 1.0/224 one has Google's ImageNet weights."""
    from mobilenets.models import create_model
    from mobilenets.weights import pretrained_model

    if name == "mobilenet_v1_1.0_224":
        return pretrained_model(name)
    torch.manual_seed(0)
    model = create_model(name)
    return calibrate_bn(model, real_images(32, model.in_chans, model.resolution, "train", seed=7)), None


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(names: list[str], rounds: int, block: int, out_dir: Path | None) -> dict:
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    load_before = load_avg()
    rows, exports = [], []
    with tempfile.TemporaryDirectory(prefix="mobilenets-web-bench-") as tmp:
        runners: dict[tuple, object] = {}
        pages = []
        for name in names:
            model, card = build(name)
            res = model.resolution
            for precision in PRECISIONS:
                folder = Path(tmp) / f"{name}_{precision}"
                say(f"{name}: export --format web {precision} (verified in Chromium)")
                calib = real_images(200, model.in_chans, res, "train") if precision == "int8" else None
                # Random weights predict nothing clearly: their int8 agreement means nothing (latency only).
                floor = 0.0 if card is None and precision == "int8" else None
                result = ex.export(model, folder, "web", precision, calib_images=calib, card=card, min_agreement=floor)
                v = result.verification
                exports.append(
                    {
                        "model": name,
                        "precision": precision,
                        "max_abs_diff": v.max_abs_diff,
                        "top1_agreement": v.top1_agreement,
                        "clear_images": v.clear_images,
                        "clear_agreement": v.clear_agreement,
                        "num_images": v.num_images,
                        "page_check": result.checks[0],
                    }
                )
                x = torch.randn(1, model.in_chans, res, res).numpy()
                for threads in THREADS:
                    sess = onnx.load(folder / web.MODEL_FILE, precision, threads)
                    runners[(name, precision, threads, "onnxruntime")] = lambda s=sess, x=x: s(x)
                    page = web.Page(folder, threads=threads)
                    assert page.threads == threads, f"the page runs {page.threads} threads, not {threads}"
                    pages.append(page)
                    runners[(name, precision, threads, "web")] = page
                # The same file, the same inputs: the browser's kernels against the native ones.
                xs = real_images(16, model.in_chans, res, "test").numpy()
                native = onnx.load(folder / web.MODEL_FILE, precision)(xs)
                in_page = pages[-1].logits(xs)
                exports[-1]["web_vs_native_max_abs_diff"] = float(np.abs(native - in_page).max())
                exports[-1]["web_vs_native_top1"] = float((native.argmax(1) == in_page.argmax(1)).mean())
        say(f"timing {len(runners)} runners: {rounds} rounds × {block} calls, interleaved")
        blocks: dict[tuple, list[float]] = {k: [] for k in runners}
        for key, fn in runners.items():  # warm-up: JIT tiers, thread pools, caches
            fn.time_runs(1, 0, 5) if key[3] == "web" else timed_calls(fn, 5)
        rng = random.Random(0)
        for r in range(rounds):
            order = list(runners)
            rng.shuffle(order)
            for key in order:
                fn = runners[key]
                times = fn.time_runs(1, block, 0) if key[3] == "web" else timed_calls(fn, block)
                blocks[key].append(statistics.median(times) * 1e3)
                time.sleep(0.2)  # let the last runner's spinning worker threads stop
            say(f"round {r + 1}/{rounds} (load {load_avg()})")
        for page in pages:
            page.close()
    for (name, precision, threads, runtime), ms in blocks.items():
        rows.append(
            {
                "model": name,
                "precision": precision,
                "threads": threads,
                "runtime": runtime,
                "median_ms": statistics.median(ms),
                "block_medians_ms": ms,
            }
        )
    result = {
        "cpu": cpu_info().line(),
        "load_before": load_before,
        "load_after": load_avg(),
        "onnxruntime_web": web.ort_web_version(),
        "chromium": _chromium_version(),
        "rounds": rounds,
        "block": block,
        "rows": rows,
        "exports": exports,
        "command": "python benchmarks/web_latency.py " + " ".join(sys.argv[1:]),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "latency.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(out_dir / "latency.md", format_report(result) + "\n")
    return result


def _chromium_version() -> str:
    try:
        return web.browser._Browser.get().browser.version
    except Exception:  # noqa: BLE001 - only a label
        return "unknown"


def format_report(result: dict) -> str:
    by = {(r["model"], r["precision"], r["threads"], r["runtime"]): r["median_ms"] for r in result["rows"]}
    lines = [
        f"CPU: {result['cpu']}; load average (1, 5, 15 min) {result['load_before']} before, "
        f"{result['load_after']} after",
        f"onnxruntime-web {result['onnxruntime_web']} in headless Chromium {result['chromium']}; batch 1; median of "
        f"{result['rounds']} interleaved blocks of {result['block']} calls",
        "",
        "| model | precision | threads | ONNX Runtime native ms | onnxruntime-web (Chromium) ms | browser / native |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for model, precision, threads, runtime in by:
        if runtime != "web":
            continue
        native, browser = by[(model, precision, threads, "onnxruntime")], by[(model, precision, threads, "web")]
        lines.append(f"| {model} | {precision} | {threads} | {native:.2f} | {browser:.2f} | {browser / native:.1f}× |")
    lines += [
        "",
        "| model | precision | vs PyTorch on real images: max abs Δ, top-1 agreement | browser vs native, same file |",
        "| --- | --- | --- | --- |",
    ]
    for e in result["exports"]:
        clear = (
            f", {100 * e['clear_agreement']:.1f}% on the {e['clear_images']} predicted clearly"
            if e["precision"] != "fp32"
            else ""
        )
        lines.append(
            f"| {e['model']} | {e['precision']} | {e['max_abs_diff']:.2g}, {100 * e['top1_agreement']:.1f}% of "
            f"{e['num_images']}{clear} | max abs Δ {e['web_vs_native_max_abs_diff']:.2g}, top-1 "
            f"{100 * e['web_vs_native_top1']:.0f}% |"
        )
    lines += [
        "",
        "Google's ImageNet weights for 1.0/224; other models have random weights (BN statistics from real photos),",
        "so their int8 agreement with fp32 says nothing (no clear predictions); their latency is what they show.",
        "",
        f"Regenerate: `{result['command']}`",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["mobilenet_v1_1.0_224"], help="registered names")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--out", type=Path, help="write latency.json and latency.md here")
    args = p.parse_args()
    print(format_report(measure(args.model, args.rounds, args.block, args.out)))


if __name__ == "__main__":
    main()
