"""The pretrained MobileNetV1 1.0/224's MNN int8 file with EMA calibration, verified on 256 photo crops (issue 37).

    cd reports/android-runtimes && ../../.venv/bin/python v1_mnn_int8_ema.py > v1_accuracy_256_mnn_int8_ema.json

The same export as benchmarks/android_runtimes.py's rows (200 calibration crops, 256 verification crops, 2 threads),
with ``calibration="ema"``.
"""

import json
import os
import tempfile
from pathlib import Path

import torch

from mobilenets.deploy import export as ex
from mobilenets.deploy.images import real_images

os.environ["MOBILENETS_THREADS"] = "2"
torch.set_num_threads(2)
model, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
calib = real_images(200, 3, 224, "train", stats=stats)
verify = real_images(256, 3, 224, "test", stats=stats)
with tempfile.TemporaryDirectory() as d:
    result = ex.export(
        model, Path(d) / "m.mnn", "mnn", "int8", calib_images=calib, verify_images=verify, calibration="ema",
        min_agreement=0.0,
    )  # fmt: skip
    v = result.verification
    card = ex.runtime_module("mnn").metadata(result.path)
    row = {"runtime": "MNN", "precision": "int8", "calibration": "ema", "bytes": result.size_bytes}
    row |= {"max_abs_diff": v.max_abs_diff, "top1_agreement": v.top1_agreement, "clear_images": v.clear_images}
    row |= {"clear_agreement": v.clear_agreement, "interval": v.interval, "passed": v.passed}
    row |= {"defaults": card["verification"]["with_runtime_defaults"]}
    print(json.dumps(row | {"command": "python reports/android-runtimes/v1_mnn_int8_ema.py"}))
