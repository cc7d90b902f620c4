"""int8 accuracy drop on real labelled data: a model trained by `mobilenets train` (e.g. the demo's), exported
fp32 and int8 to every runtime, each file evaluated by its own runtime on the whole Fashion-MNIST test set.

    mobilenets demo                                              # writes runs/demo/model.pt (~1 min)
    .venv/bin/python benchmarks/int8_accuracy.py runs/demo/model.pt [--calib 500] [--formats onnx openvino]

Calibration images come from the training split; the test split is never seen before evaluation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mobilenets.data import load_fashion_mnist
from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import normalize, real_images


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="model.pt of a Fashion-MNIST run of `mobilenets train` / `mobilenets demo`")
    p.add_argument("--calib", type=int, default=500, help="training images to calibrate int8 on (default 500)")
    p.add_argument("--formats", nargs="+", default=list(ex.FORMATS), help=" ".join(ex.FORMATS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model, stats = ex.build_model(checkpoint=args.checkpoint)
    res = model.resolution
    test = load_fashion_mnist("test")
    images = normalize(test.images, res, stats)
    labels = test.labels.numpy()
    calib = real_images(args.calib, model.in_chans, res, "train", stats=stats)
    with torch.no_grad():
        torch_acc = float((torch.cat([model(b) for b in images.split(500)]).argmax(1).numpy() == labels).mean())
    print(f"CPU: {cpu_info().line()}")
    print(f"{args.checkpoint}: PyTorch fp32 top-1 {100 * torch_acc:.2f}% on {len(labels)} Fashion-MNIST test images")
    print(f"{'runtime':<20} {'fp32 top-1':>10} {'int8 top-1':>10} {'drop (pts)':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            accs = {}
            for prec in ("fp32", "int8"):
                path = Path(tmp) / f"m_{prec}{ex.SUFFIXES[fmt]}"
                print(f"exporting {fmt} {prec} ...", file=sys.stderr)
                ex.export(model, path, fmt, prec, calib_images=calib if prec == "int8" else None, verify=False)
                # ExecuTorch and LiteRT programs have batch 1: feed them one image at a time.
                batches = images.split(1 if fmt in ("executorch", "tflite") else 500)
                logits = np.concatenate([ex.run_model_file(path, fmt, b, prec, args.threads) for b in batches])
                accs[prec] = float((logits.argmax(1) == labels).mean())
            drop = 100 * (accs["fp32"] - accs["int8"])
            print(f"{ex.RUNTIME_OF[fmt]:<20} {100 * accs['fp32']:>9.2f}% {100 * accs['int8']:>9.2f}% {drop:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
