"""MobileNetV4 leaves PyTorch (issue 29): trained V4 models exported fp32 and int8 to ONNX Runtime and OpenVINO, each
file verified by `export`'s own gate, evaluated by its runtime on the Fashion-MNIST test set, and the kernels each
runtime runs attention with (int8 or float) read from the runtime itself (mobilenets.deploy.kernels).

    mobilenets train --model mobilenet_v4_conv_small --width-mult 0.25 --resolution 28 --stem-stride 1 \
        --preset adamw --epochs 1 --max-train-samples 20000 --out-dir runs/v4_conv_small --threads 1
    mobilenets train --model mobilenet_v4_hybrid_medium ... --out-dir runs/v4_hybrid_medium   # the same flags
    .venv/bin/python benchmarks/v4_export.py runs/v4_conv_small/model.pt runs/v4_hybrid_medium/model.pt \
        [--formats onnx openvino] [--threads 1] [--out reports/v4-export/CPU]

int8 files are calibrated on 500 training images (never tested on) and pass `export`'s verification: 97% top-1
agreement with the float model on the images it predicts clearly, among 512 real test images; the report adds the
whole test set's top-1 per file and the agreement on its clear decisions (the issue asks ≥ 95%).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilenets.data import load_fashion_mnist
from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import normalize, real_images
from mobilenets.deploy.kernels import attention_kernels
from mobilenets.deploy.verify import compare_outputs


def evaluate(checkpoint: str, formats: list[str], threads: int, n_calib: int = 500) -> dict:
    model, stats = ex.build_model(checkpoint=checkpoint)
    res = model.resolution
    test = load_fashion_mnist("test")
    images = normalize(test.images, res, stats)
    labels = test.labels.numpy()
    verify_images = real_images(512, model.in_chans, res, "test", stats=stats)
    calib = real_images(n_calib, model.in_chans, res, "train", stats=stats)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in images.split(500)])
    row = {
        "checkpoint": checkpoint,
        "model": model.cfg.size,
        "config": model.config_dict(),
        "pytorch_top1": float((reference.argmax(1).numpy() == labels).mean()),
        "files": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            for precision in ("fp32", "int8"):
                path = Path(tmp) / f"m_{precision}{ex.SUFFIXES[fmt]}"
                print(f"{checkpoint}: {fmt} {precision} ...", file=sys.stderr)
                start = time.perf_counter()
                options = dict(calib_images=calib) if precision == "int8" else {}
                result = ex.export(model, path, fmt, precision, verify_images=verify_images, **options)
                export_s = round(time.perf_counter() - start, 1)
                run = ex.load_runner(path, fmt, precision, threads)
                logits = np.concatenate([run(b.numpy()) for b in images.split(500)])
                v = compare_outputs(reference, logits, ex.RUNTIME_OF[fmt], precision)
                row["files"].append(
                    {
                        "format": fmt,
                        "precision": precision,
                        "export_s": export_s,
                        "verification": result.verification.summary(),
                        "top1": float((logits.argmax(1) == labels).mean()),
                        "clear_images": v.clear_images,
                        "clear_agreement": v.clear_agreement,
                        "max_abs_diff": v.max_abs_diff,
                        "attention_kernels": dict(attention_kernels(path, fmt)),
                    }
                )
    return row


def format_report(rows: list[dict], command: str, load: str) -> str:
    lines = [
        "# MobileNetV4 exports: fp32 and int8 on ONNX Runtime and OpenVINO, Fashion-MNIST test set",
        "",
        f"CPU: {cpu_info().line()}{load}",
        f"Command: `{command}`",
        "",
        "| model | runtime | precision | top-1 % | drop (pts) | clear decisions kept | attention kernels |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for f in row["files"]:
            kernels = ", ".join(f"{n} {k}" for k, n in sorted(f["attention_kernels"].items())) or "none"
            kept = f"{100 * f['clear_agreement']:.2f}% of {f['clear_images']}"
            drop = 100 * (row["pytorch_top1"] - f["top1"])
            lines.append(
                f"| {row['model']} α {row['config']['width_mult']} ({100 * row['pytorch_top1']:.2f}% in PyTorch) "
                f"| {f['format']} | {f['precision']} | {100 * f['top1']:.2f} | {drop:+.2f} | {kept} | {kernels} |"
            )
    lines += ["", "Each file passed `export`'s verification:", ""]
    for row in rows:
        lines += [f"- {row['model']} {f['format']} {f['precision']}: {f['verification']}" for f in row["files"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="model.pt of Fashion-MNIST runs of `mobilenets train` (V4)")
    p.add_argument("--formats", nargs="+", default=["onnx", "openvino"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="folder for report.md and results.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    command = "benchmarks/v4_export.py " + " ".join(sys.argv[1:])
    rows = [evaluate(c, args.formats, args.threads) for c in args.checkpoints]
    report = format_report(rows, command, f" (load average {os.getloadavg()[0]:.1f} at the end of the run)")
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(report)
        results = {"command": command, "cpu": cpu_info().line(), "rows": rows}
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
