"""ncnn and MNN files of the pretrained MobileNetV1 1.0/224 against PyTorch, and their latency beside ONNX Runtime's
(issue 37).

    .venv/bin/python benchmarks/android_runtimes.py [--images 128] [--calib 200] [--threads 2] [--out FILE]
        [--latency-models mobilenet_v1_1.0_224 mobilenet_v2_1.0_224 mobilenet_v3_large_1.0_224]

Each file is written and verified by ``mobilenets.deploy.export.export`` (the rule of every runtime: fp32 within
1e-3 of the largest logit on all images, fp16 within verify.FP16_RTOL, int8 by clear-decision agreement), run by the
runtime's own Python module under the options its card states and under the runtime's defaults. Then each format ×
precision is timed (batch 1, ``--threads``) with ``mobilenets.deploy.bench.bench_model`` in one run, ONNX Runtime
alongside, on random-weight models of each latency model (latency does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from mobilenets.deploy import bench, runtime_module
from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import real_images
from mobilenets.models import create_model

FORMATS = ("ncnn", "mnn")


def accuracy_rows(images: int, calib: int, formats: list[str], precisions: list[str]) -> list[dict]:
    model, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
    calib_images = real_images(calib, 3, 224, "train", stats=stats)
    verify = real_images(images, 3, 224, "test", stats=stats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            for precision in precisions:
                folder = Path(tmp) / f"{fmt}_{precision}"
                folder.mkdir()
                print(f"{fmt} {precision} ...", file=sys.stderr)
                result = ex.export(
                    model,
                    folder / f"m{ex.SUFFIXES[fmt]}",
                    fmt,
                    precision,
                    calib_images=calib_images if precision == "int8" else None,
                    verify_images=verify,
                    min_agreement=0.0,
                )
                v, card = result.verification, runtime_module(fmt).metadata(result.path)
                rows.append(
                    {
                        "runtime": ex.RUNTIME_OF[fmt],
                        "precision": precision,
                        "bytes": result.size_bytes,
                        "max_abs_diff": v.max_abs_diff,
                        "max_abs_logit": v.max_abs_ref,
                        "top1_agreement": v.top1_agreement,
                        "clear_images": v.clear_images,
                        "clear_agreement": v.clear_agreement,
                        "interval": v.interval,
                        "passed": v.passed,
                        "runtime_options": card["runtime_options"],
                        "defaults": card["verification"]["with_runtime_defaults"],
                        "float_ops": card.get("float_layers") or card.get("float_ops"),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def latency_rows(names: list[str], precisions: list[str], threads: int, runs: int) -> list[dict]:
    rows = []
    for name in names:
        model = create_model(name).eval()
        for runtime in ("onnxruntime", *FORMATS):
            wanted = [p for p in precisions if p in bench.RUNTIME_PRECISIONS[runtime]]
            for result in bench.bench_model(model, name, (runtime,), wanted, (1,), threads=threads, runs=runs):
                rows.append({"model": name, "runtime": runtime, "precision": result.precision,
                             "median_ms": result.latency.median_ms, "p90_ms": result.latency.p90_ms})  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=128, help="photo crops to verify on (default 128; 0: latency only)")
    p.add_argument("--calib", type=int, default=200, help="training photo crops to calibrate int8 on (default 200)")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"])
    p.add_argument("--latency-models", nargs="*", default=["mobilenet_v1_1.0_224"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", type=Path, help="file for the JSON results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = {
        "cpu": cpu_info().line(),
        "command": " ".join(sys.argv),
        "accuracy": accuracy_rows(args.images, args.calib, args.formats, args.precisions) if args.images else [],
        "latency": latency_rows(args.latency_models, args.precisions, args.threads, args.runs),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
