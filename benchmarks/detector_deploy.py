"""Trained detectors on every runtime: each file's int8 (and fp32, fp16) mAP drop and latency (issue 28).

For each detection run's ``model.pt`` given, every format × precision asked for is written by ``export`` (the
library's ``export_detector``) and verified on detections against PyTorch's on the first N composite test images
(with COCO mAP: the float model's and the file's on the same images) and the scikit-image photos. A file that
fails verification is reported with export's one-line reason, not timed. Then the PyTorch detector (eager) and
every verified file are timed side by side: one photo → final detections in its own pixels (resize, the file, NMS
in the runner where the file has none), batch 1, ``--threads`` threads, interleaved rounds (each round visits
every runner in a shuffled order and times a block of calls; the figure is the median of the block medians), so a
busy machine slows all of them alike; ratio = the file's median / eager's.

The peer, timed in the same rounds: torchvision's own SSDLite (``torchvision.models.detection.SSD`` on its
``mobilenet_v3_large``/``_small`` feature extractor and ``SSDLiteHead``, built as ``ssdlite320_mobilenet_v3_large``
builds it, at the detector's input size) holding the trained detector's weights, so both sides find the same boxes
(checked on 20 test images and the photos) and the NMS does the same work; "× torchvision" = the file's median / its
eager median.

    .venv/bin/python benchmarks/detector_deploy.py runs/composite-ssdlite-v3s/model.pt \\
        runs/composite-ssdlite-v3l-224/model.pt --out reports/detection-deploy
    .venv/bin/python benchmarks/detector_deploy.py RUN/model.pt --formats onnx --precisions int8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from deploy_latency import interleaved  # benchmarks/ is on sys.path when this script runs

from mobilenets.data.detection import load_detection_dataset
from mobilenets.deploy import detection as files
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.export import RUNTIME_OF, SUFFIXES
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_text
from mobilenets.weights.checkpoint import load_model

# What a phone team times: the web page runs in a browser (timed by `bench --runtime web`), not here.
TIMED_FORMATS = tuple(f for f in files.DETECTION_FORMATS if f != "web")


@dataclass
class Row:
    model: str
    format: str
    precision: str
    passed: bool = False
    kept: str = ""  # fp32/fp16: detections equal; int8: confident detections kept, with the 95% interval
    map_float: float | None = None
    map_file: float | None = None
    map_drop: float | None = None
    file_mb: float | None = None
    nms: str = ""
    median_ms: float | None = None
    p90_ms: float | None = None
    ratio: float | None = None
    ratio_tv: float | None = None
    export_s: float | None = None
    refused: str = ""
    kept_float: str = ""


def torchvision_twin(model):
    """torchvision's SSDLite with ``model``'s backbone kind, size, thresholds and weights (its state dict renamed to
    torchvision's keys), or ``(None, reason)`` when torchvision has no such model."""
    from functools import partial

    from torch import nn
    from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor

    from mobilenets.detection.ssdlite import torchvision_key_map

    backbone_name = model.config.get("backbone", "")
    builders = {"mobilenet_v3_large": mobilenet_v3_large, "mobilenet_v3_small": mobilenet_v3_small}
    if backbone_name not in builders or model.config.get("width_mult", 1.0) != 1.0:
        return None, f"torchvision has no SSDLite on {backbone_name} at α {model.config.get('width_mult')}"
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    reduced = bool(model.config.get("reduced_tail", True))
    backbone = _mobilenet_extractor(builders[backbone_name](norm_layer=norm, reduced_tail=reduced), 6, norm)
    size = (model.resolution[1], model.resolution[0])  # torchvision's (W, H)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    channels = det_utils.retrieve_out_channels(backbone, size)
    twin = SSD(
        backbone, anchors, size, model.num_classes,
        head=SSDLiteHead(channels, anchors.num_anchors_per_location(), model.num_classes, norm),
        score_thresh=model.score_thresh, nms_thresh=model.nms_thresh, detections_per_img=model.detections_per_img,
        topk_candidates=model.topk_candidates, image_mean=model.transform.image_mean,
        image_std=model.transform.image_std,
    )  # fmt: skip
    ours = model.state_dict()
    twin.load_state_dict({tv: ours[key] for tv, key in torchvision_key_map(model).items()})
    return twin.eval(), ""


def export_row(model, name, classes, fmt, precision, calib, verify_images, dataset, workdir, threads) -> tuple:
    row = Row(name, fmt, precision)
    if precision not in files.DETECTION_PRECISIONS[fmt]:
        row.refused = f"{fmt} offers {', '.join(files.DETECTION_PRECISIONS[fmt])}"
        return row, None
    path = workdir / f"{name}_{fmt}_{precision}{SUFFIXES.get(fmt) or ''}"
    start = time.time()
    try:
        result = files.export_detector(
            model, path, fmt, precision, classes=classes, calib_images=calib if precision == "int8" else None,
            verify_images=verify_images, verify_dataset=dataset, progress=lambda m: print("    " + m),
        )  # fmt: skip
    except MobileNetsError as e:
        row.refused, row.export_s = str(e), time.time() - start
        return row, None
    v = result.verification
    row.export_s = time.time() - start
    row.passed, row.file_mb = v.passed, result.size_bytes / 1e6
    lo, hi = v.interval
    row.kept = f"{v.matched}/{v.reference} ({100 * v.match_rate:.1f}%, interval {100 * lo:.1f}-{100 * hi:.1f}%)"
    row.map_float, row.map_file, row.map_drop = v.map_reference, v.map_file, v.map_drop
    row.nms = result.built_for["nms"]["where"]
    if precision == "int8":
        row.kept_float = result.built_for["int8"].get("float", "")
    detect = files.file_detector(path, fmt, threads=threads, info=result.built_for)
    return row, detect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="detection runs' model.pt")
    p.add_argument("--out", type=Path, default=Path("reports/detection-deploy"))
    p.add_argument("--formats", default=",".join(TIMED_FORMATS))
    p.add_argument("--precisions", default="fp32,int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--block", type=int, default=10, help="timed calls per runner per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--verify-test-images", type=int, default=100, help="composite test images (mAP) to verify on")
    p.add_argument("--calib", type=int, default=files.CALIB_DETECTION_IMAGES, help="int8 calibration images")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="det-deploy-"))
    photos = files.photo_images()
    rows: list[Row] = []
    for ckpt in args.checkpoints:
        model, meta = load_model(ckpt)
        name = f"{meta['model']} {model.resolution[0]} px"
        spec = meta.get("dataset") or "composite"
        test = load_detection_dataset(spec, "test")
        dataset = test.subset(range(min(args.verify_test_images, len(test))))
        calib = files.calibration_images(model.resolution, args.calib, spec)
        print(f"{name} ({ckpt}): {len(dataset)} test images + {len(photos)} photos", file=sys.stderr)
        runners = {"eager fp32": lambda x, model=model: files.detect_with_model(model, [torch.from_numpy(x)])}
        model_rows = [Row(name, "eager", "fp32", passed=True, kept="the reference", nms="torchvision")]
        twin, why = torchvision_twin(model)
        if twin is not None:
            # The twin is checked where the detector finds things: test images, then the photos.
            check = files.dataset_images(dataset, 20) + photos
            with torch.inference_mode():
                same = files.match_detections(
                    files.detect_with_model(model, check), [twin([p])[0] for p in check], "torchvision", "fp32"
                )  # fmt: skip
            print(f"  torchvision twin: {same.matched}/{same.reference} detections equal", file=sys.stderr)
            if same.matched == same.reference and same.reference:
                runners["torchvision eager fp32"] = lambda x, twin=twin: _twin_detect(twin, x)
                model_rows.insert(
                    0, Row(name, "torchvision", "fp32", passed=True, nms="torchvision",
                           kept=f"{same.matched}/{same.reference} detections equal to ours"),
                )  # fmt: skip
            else:
                why = f"torchvision's twin found {same.matched}/{same.reference} of our detections"
        if why:
            print(f"  no torchvision peer: {why}", file=sys.stderr)
        for fmt in args.formats.split(","):
            for precision in args.precisions.split(","):
                print(f"  {fmt} {precision}", file=sys.stderr)
                row, detect = export_row(
                    model, name.replace(" ", "_"), meta.get("classes"), fmt, precision, calib, photos, dataset,
                    workdir, args.threads,
                )  # fmt: skip
                row.model = name
                print(f"    {'passed' if row.passed else 'refused'}: {row.kept or row.refused}", file=sys.stderr)
                if detect is not None:
                    runners[f"{fmt} {precision}"] = lambda x, detect=detect: detect(torch.from_numpy(x))
                model_rows.append(row)
        x = photos[0].numpy()
        print(f"  timing {len(runners)} runners, {args.rounds} rounds × {args.block} calls", file=sys.stderr)
        timings = interleaved(runners, x, args.rounds, args.block, args.warmup)
        base = timings["eager fp32"][0]
        peer = timings.get("torchvision eager fp32", (None,))[0]
        for row in model_rows:
            key = "torchvision eager fp32" if row.format == "torchvision" else f"{row.format} {row.precision}"
            if key in timings:
                row.median_ms, row.p90_ms = timings[key]
                row.ratio = row.median_ms / base
                row.ratio_tv = None if peer is None else row.median_ms / peer
        rows += model_rows
    write_report(args, rows)


def _twin_detect(twin, x):
    with torch.inference_mode():
        return twin([torch.from_numpy(x)])


def _pts(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def write_report(args, rows: list[Row]) -> None:
    cpu = cpu_info().line()
    lines = [
        f"# Trained detectors on every runtime: mAP drop and latency, on {cpu}",
        "",
        f"Each file written and verified by `export` on the first {args.verify_test_images} composite test images "
        "and the scikit-image photos; mAP is COCO mAP@[.5:.95] on those test images, the float model's and the "
        f"file's. Latency: one photo → final detections, batch 1, {args.threads} threads, interleaved rounds "
        f"({args.rounds} × {args.block} calls); × eager = median / our PyTorch detector's; × torchvision = median / "
        "torchvision's own SSDLite (its `SSD`, `mobilenet_v3_*` extractor and `SSDLiteHead`) at the same size holding "
        "the same weights (the same detections on 20 test images and the photos), eager.",
        "",
        "| detector | runtime | precision | verified | mAP float | mAP file | drop (points) | median ms | × eager "
        "| × torchvision | MB | NMS |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        runtime = {"eager": "PyTorch eager (ours)", "torchvision": "torchvision eager"}.get(r.format) or RUNTIME_OF.get(
            r.format, r.format
        )
        verified = r.kept if r.passed else f"refused: {r.refused}".replace("|", "/")
        drop = "—" if r.map_drop is None else f"{100 * r.map_drop:+.1f}"
        lines.append(
            f"| {r.model} | {runtime} | {r.precision} | {verified} | {_pts(r.map_float)} | {_pts(r.map_file)} | "
            f"{drop} | {'—' if r.median_ms is None else f'{r.median_ms:.1f}'} | "
            f"{'—' if r.ratio is None else f'{r.ratio:.2f}×'} | {'—' if r.ratio_tv is None else f'{r.ratio_tv:.2f}×'} "
            f"| {'—' if r.file_mb is None else f'{r.file_mb:.2f}'} "
            f"| {r.nms} |"
        )
    floats = sorted({r.kept_float for r in rows if r.kept_float})
    if floats:
        lines += ["", "int8 keeps float: " + "; ".join(floats) + "."]
    lines += [
        "",
        "Regenerate: `.venv/bin/python benchmarks/detector_deploy.py " + " ".join(sys.argv[1:]) + "`",
        "",
    ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "trained.md", "\n".join(lines))
    payload = {"cpu": cpu, "threads": args.threads, "args": vars(args) | {"out": str(args.out)}}
    payload["rows"] = [asdict(r) for r in rows]
    atomic_write_text(args.out / "trained.json", json.dumps(payload, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
