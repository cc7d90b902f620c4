"""A detector's web page on every verification image: the page's own pipeline against native ONNX Runtime.

`mobilenets export --format web` checks the page's pipeline (Chromium decodes each PNG file, detect.js resizes it
and scales the boxes back) on the photos and 20 composite test images, and on the rest of the test images only when
those hold fewer than 10 detections to compare. This script runs that same check
(:func:`mobilenets.deploy.web.detect.check_detector_page`) on all of them, the photos and the whole test split, for
a folder `export` wrote: more detections judged, the same rule (fp32: every detection ≥ 0.3 equal; int8: the
confident ones kept).

    .venv/bin/python benchmarks/detector_page_check.py v3l_web_int8 v3l_web_fp32      # one line per folder
    .venv/bin/python benchmarks/detector_page_check.py det_web --test-images 100 --dataset composite
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mobilenets.data.detection import load_detection_dataset
from mobilenets.deploy import detection as det
from mobilenets.deploy.web import detect as web_detect
from mobilenets.errors import MobileNetsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("folders", nargs="+", help="folders written by `mobilenets export --format web` (a detector)")
    parser.add_argument("--dataset", default="composite", help="detection set whose test split to use")
    parser.add_argument("--test-images", type=int, help="the first N test images (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for native ONNX Runtime's resize")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        test = load_detection_dataset(args.dataset, "test")
        images = [*det.photo_images(), *det.dataset_images(test, args.test_images)]
        failed = 0
        for folder in args.folders:
            precision = det.file_info(folder, "web")["precision"]
            start = time.perf_counter()
            check = web_detect.check_detector_page(folder, images, precision)
            failed += not check.passed
            verdict = "passed" if check.passed else "FAILED"
            print(f"{folder} ({precision}): {verdict}: {check.summary()} [{time.perf_counter() - start:.0f} s]")
    except MobileNetsError as e:
        print(f"detector_page_check: error: {e}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
