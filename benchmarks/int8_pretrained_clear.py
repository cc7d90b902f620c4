"""The pretrained MobileNetV1 1.0/224's clear decisions kept by its int8 files, per runtime and PTQ option (issue 20).

    .venv/bin/python benchmarks/int8_pretrained_clear.py --formats onnx openvino \\
        --options onnx=minmax onnx=percentile openvino=nncf openvino=minmax [--images 128] [--calib 300]

Each file is exported with ``mobilenets.deploy.export.export`` (calibrated on real training photos) and compared
with the float model on real photo crops (verify.py's rule: the crops whose float top-1 beats the runner-up by
20 points of probability). QAT is not measured here: it needs ImageNet training data, which is not on this machine.
The model's ReLU6 leaves cross-layer equalization nothing to rescale (fold.equalizable_pairs is empty).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import real_images


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--formats", nargs="+", default=["onnx", "openvino"])
    p.add_argument("--options", nargs="*", default=[], help="FORMAT=CALIBRATION rows besides each default")
    p.add_argument("--images", type=int, default=128, help="photo crops to compare on (default 128)")
    p.add_argument("--calib", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="file for the JSON results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
    calib = real_images(args.calib, 3, 224, "train", stats=stats)
    verify = real_images(args.images, 3, 224, "test", stats=stats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            choices = [None] + [o.split("=", 1)[1] for o in args.options if o.startswith(fmt + "=")]
            for calibration in choices:
                path = Path(tmp) / f"m{ex.SUFFIXES[fmt]}"
                result = ex.export(
                    model,
                    path,
                    fmt,
                    "int8",
                    calib_images=calib,
                    verify_images=verify,
                    min_agreement=0.0,
                    calibration=calibration,
                )
                v = result.verification
                rows.append(
                    {
                        "runtime": ex.RUNTIME_OF[fmt],
                        "calibration": result.built_for["int8"]["calibration"],
                        "clear_images": v.clear_images,
                        "clear_agreement": v.clear_agreement,
                        "top1_agreement": v.top1_agreement,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    print(f"CPU: {cpu_info().line()}; load average {os.getloadavg()[0]:.1f}")
    print("| runtime | calibration | clear decisions kept | top-1 agreement (all) |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['calibration']} | {100 * r['clear_agreement']:.1f}% of {r['clear_images']} | "
            f"{100 * r['top1_agreement']:.1f}% |"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"command": " ".join(sys.argv), "cpu": cpu_info().line(), "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
