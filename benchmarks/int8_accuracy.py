"""int8 accuracy drop on real labelled data: models trained by `mobilenets train` (any family: V1, V2, V3),
exported fp32 and int8 to every runtime, each file evaluated by its own runtime on the whole Fashion-MNIST test set.

    mobilenets train --model mobilenet_v3_small --width-mult 0.75 --resolution 28 --stem-stride 1 \
        --preset adamw --epochs 2 --max-train-samples 20000 --out-dir runs/v3s      # likewise mobilenet_v2 0.35
    .venv/bin/python benchmarks/int8_accuracy.py runs/v3s/model.pt runs/v2/model.pt \
        [--calib 500] [--formats onnx openvino] [--out reports/int8-accuracy/CPU]

Calibration images come from the training split; the test split is never seen before evaluation. Besides the
accuracy drop, each int8 file's top-1 agreement with the float model on the images that model predicts clearly
is reported (verify.py's rule; exports need 95% of those). The int8 files are the default ones, which cannot
saturate on any CPU (the export's range check), so the figures hold on AVX2-only CPUs as on VNNI ones.
"""

from __future__ import annotations

import argparse
import json
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
from mobilenets.deploy.verify import compare_outputs


def evaluate(checkpoint: str, formats: list[str], n_calib: int, threads: int) -> dict:
    """PyTorch's top-1 and, per runtime, the fp32 and int8 files' top-1 and int8 clear agreement."""
    model, stats = ex.build_model(checkpoint=checkpoint)
    res = model.resolution
    test = load_fashion_mnist("test")
    images = normalize(test.images, res, stats)
    labels = test.labels.numpy()
    calib = real_images(n_calib, model.in_chans, res, "train", stats=stats)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in images.split(500)])
    row = {
        "checkpoint": checkpoint,
        "model": type(model).__name__,
        "config": model.config_dict() if hasattr(model, "config_dict") else {},
        "pytorch_top1": float((reference.argmax(1).numpy() == labels).mean()),
        "runtimes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            entry = {}
            for prec in ("fp32", "int8"):
                path = Path(tmp) / f"m_{prec}{ex.SUFFIXES[fmt]}"
                print(f"{checkpoint}: exporting {fmt} {prec} ...", file=sys.stderr)
                start = time.perf_counter()
                ex.export(model, path, fmt, prec, calib_images=calib if prec == "int8" else None, verify=False)
                entry[f"{prec}_export_s"] = round(time.perf_counter() - start, 1)
                # ExecuTorch and LiteRT programs have batch 1: feed them one image at a time.
                batches = images.split(1 if fmt in ("executorch", "tflite") else 500)
                logits = np.concatenate([ex.run_model_file(path, fmt, b, prec, threads) for b in batches])
                entry[f"{prec}_top1"] = float((logits.argmax(1) == labels).mean())
                if prec == "int8":
                    v = compare_outputs(reference, logits, ex.RUNTIME_OF[fmt], "int8")
                    entry["int8_clear_images"], entry["int8_clear_agreement"] = v.clear_images, v.clear_agreement
                    entry["int8_top1_agreement"] = v.top1_agreement
            entry["drop_pts"] = 100 * (entry["fp32_top1"] - entry["int8_top1"])
            row["runtimes"][fmt] = entry
    return row


def format_report(rows: list[dict], command: str) -> str:
    lines = ["# int8 accuracy on Fashion-MNIST", "", f"`{command}`", "", f"CPU: {cpu_info().line()}", ""]
    for row in rows:
        cfg = row["config"]
        shape = ", ".join(f"{k} {cfg[k]}" for k in ("width_mult", "resolution", "stem_stride") if k in cfg)
        lines += [
            f"## {row['checkpoint']} ({row['model']}{': ' + shape if shape else ''})",
            "",
            f"PyTorch fp32 top-1 {100 * row['pytorch_top1']:.2f}% on 10,000 test images.",
            "",
            "| runtime | fp32 top-1 | int8 top-1 | drop (pts) | int8 clear agreement | int8 export s |",
            "|---|---|---|---|---|---|",
        ]
        for fmt, e in row["runtimes"].items():
            lines.append(
                f"| {ex.RUNTIME_OF[fmt]} | {100 * e['fp32_top1']:.2f}% | {100 * e['int8_top1']:.2f}% | "
                f"{e['drop_pts']:+.2f} | {100 * e['int8_clear_agreement']:.2f}% of {e['int8_clear_images']} | "
                f"{e['int8_export_s']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="model.pt of Fashion-MNIST runs of `mobilenets train` / `demo`")
    p.add_argument("--calib", type=int, default=500, help="training images to calibrate int8 on (default 500)")
    p.add_argument("--formats", nargs="+", default=list(ex.FORMATS), help=" ".join(ex.FORMATS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="folder for report.md and results.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    command = "benchmarks/int8_accuracy.py " + " ".join(sys.argv[1:])
    rows = [evaluate(c, args.formats, args.calib, args.threads) for c in args.checkpoints]
    report = format_report(rows, command)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(report)
        results = {"command": command, "cpu": cpu_info().line(), "rows": rows}
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
