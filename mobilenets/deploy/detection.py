"""Detectors out of PyTorch: the graph a file holds (box decoding and, where the runtime has the op, NMS), the
runner that gives detections in the original image's pixels for any supported file, and the check that an exported
file finds what the PyTorch detector finds.

What a detector file takes and gives:

- input ``image``: (1, 3, H, W) float32 RGB in [0, 1] at the detector's fixed ``resolution``. The runner resizes
  each whole image to W×H (bilinear, ``align_corners=False``, no antialias, no letterbox: the aspect ratio is not
  kept), exactly as torchvision's ``GeneralizedRCNNTransform`` does for a fixed-size SSD; the file normalizes with
  the detector's mean/std itself.
- In the file: backbone, head, box decoding against the anchors (computed once for the fixed size: a constant),
  boxes clipped to the input, softmax scores, and the ``topk_candidates`` best anchors per class.
- NMS in the file (ONNX ``NonMaxSuppression``, which OpenVINO reads as its own NMS op): outputs ``boxes`` (K, 4)
  x1y1x2y2 in input pixels, ``labels`` (K,) in 1..num_classes-1 and ``scores`` (K,), best first, K ≤
  ``detections_per_img``. NMS in the runner (runtimes without the op): the file outputs the per-class candidates
  ``boxes`` (C-1, k, 4) and ``scores`` (C-1, k), and the runner applies ``torchvision.ops.batched_nms`` with the
  same thresholds. The file's metadata says which (``"nms"``). ncnn has no top-k layer either: its file outputs
  every anchor's boxes (A, 4) and softmax scores (A, C), and the runner takes each class's top-k first
  (``"topk": "runner"``).
- The runner scales boxes back to the original image by its resize factors (torchvision's ``resize_boxes``).

Every step is torchvision's own math (``BoxCoder.decode_single``, ``clip_boxes_to_image``, per-class top-k then
NMS with ``score > score_thresh`` and ``IoU > nms_thresh`` suppressing, as ``SSD.postprocess_detections``), so
the fp32 file gives the PyTorch detector's detections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from mobilenets.deploy import mnn, ncnn
from mobilenets.deps import quiet, require
from mobilenets.errors import MobileNetsError

INPUT = "image"
FINAL_OUTPUTS = ("boxes", "labels", "scores")
CANDIDATE_OUTPUTS = ("candidate_boxes", "candidate_scores")
OPSET = 17
PREPROCESSING = (
    "RGB float32 in [0, 1]; the whole image resized to the input's W×H (bilinear, align_corners=False, no "
    "antialias, no letterbox: aspect not kept), as torchvision's GeneralizedRCNNTransform; mean/std applied in the file"
)


# ----------------------------------------------------------------------------------------------------
# The graph


def fixed_anchors(model: nn.Module) -> torch.Tensor:
    """The detector's anchors (A, 4) x1y1x2y2 in input pixels for its fixed input size, from its own generator."""
    h, w = model.resolution
    x = torch.zeros(1, 3, h, w)
    model_mode = model.training
    model.eval()
    with torch.no_grad():
        features = list(model.backbone(x).values())
        anchors = model.anchor_generator(ImageList(x, [(h, w)]), features)[0]
    model.train(model_mode)
    return anchors


class DecodedDetector(nn.Module):
    """image (1, 3, H, W) in [0, 1] → (boxes (A, 4) in input pixels, clipped; scores (A, C) softmax, column 0 the
    background): the detector up to its NMS, for one image at its fixed size."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.head, self.box_coder = model.backbone, model.head, model.box_coder
        self.resolution = tuple(model.resolution)
        t = model.transform
        self.register_buffer("mean", torch.tensor(t.image_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(t.image_std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("anchors", fixed_anchors(model))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.mean) / self.std
        out = self.head(list(self.backbone(x).values()))
        boxes = self.box_coder.decode_single(out["bbox_regression"][0], self.anchors)
        boxes = clip_boxes_to_image(boxes, self.resolution)
        return boxes, F.softmax(out["cls_logits"][0], dim=-1)


class CandidateDetector(nn.Module):
    """image → the ``topk`` best anchors of each foreground class: boxes (C-1, k, 4) and scores (C-1, k), which is
    what ``SSD.postprocess_detections`` hands to NMS (its score threshold is applied by the NMS step)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoded = DecodedDetector(model)
        self.topk = min(int(model.topk_candidates), len(self.decoded.anchors))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.decoded(image)
        scores, index = scores[:, 1:].t().topk(self.topk, dim=1)
        return boxes[index], scores


class _NonMaxSuppression(torch.autograd.Function):
    """Per-class NMS with ONNX ``NonMaxSuppression``'s meaning (classes as its batch axis): indices (S, 3) of
    [class - 1, 0, candidate], each class's kept boxes best first. Eager: torchvision's ``nms``; exported: the ONNX
    op itself (its ``score > threshold`` and ``IoU > threshold`` suppressing are torchvision's, checked in the
    tests)."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_thresh: float, score_thresh: float):  # noqa: ARG004
        from torchvision.ops import nms

        out = []
        for c in range(boxes.shape[0]):
            keep = torch.nonzero(scores[c, 0] > score_thresh).flatten()
            kept = keep[nms(boxes[c, keep], scores[c, 0, keep], iou_thresh)][:max_per_class]
            out.append(torch.stack([torch.full_like(kept, c), torch.zeros_like(kept), kept], dim=1))
        return torch.cat(out)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_thresh: float, score_thresh: float):
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_thresh], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_thresh], dtype=torch.float32)),
        )


class FinalDetector(nn.Module):
    """image → final detections: boxes (K, 4) in input pixels, labels (K,), scores (K,), best first, with NMS in
    the graph (exported as ONNX ``NonMaxSuppression``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.candidates = CandidateDetector(model)
        self.nms_thresh, self.score_thresh = float(model.nms_thresh), float(model.score_thresh)
        self.detections_per_img = int(model.detections_per_img)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from torchvision.models.detection._utils import _topk_min

        boxes, scores = self.candidates(image)
        k = self.candidates.topk
        chosen = _NonMaxSuppression.apply(boxes, scores.unsqueeze(1), k, self.nms_thresh, self.score_thresh)
        cls, idx = chosen[:, 0], chosen[:, 2]
        kept_scores = scores[cls, idx]
        # The classes' kept boxes merged best first, as batched_nms returns them, cut at detections_per_img.
        top, order = kept_scores.topk(_topk_min(kept_scores, self.detections_per_img, 0))
        return boxes[cls, idx][order], cls[order] + 1, top


def graph(model: nn.Module, nms_in_file: bool) -> nn.Module:
    """The module a detector file holds: :class:`FinalDetector` (NMS in the file) or :class:`CandidateDetector`."""
    return (FinalDetector if nms_in_file else CandidateDetector)(model).eval()


# ----------------------------------------------------------------------------------------------------
# Running a file on images


def resize_for(model_resolution: Sequence[int], image: torch.Tensor) -> torch.Tensor:
    """``image`` (3, h, w) in [0, 1] resized to the detector's input, as torchvision's transform does it."""
    h, w = model_resolution
    return F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False)


def nms_candidates(
    boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float, nms_thresh: float, detections_per_img: int
) -> dict[str, torch.Tensor]:
    """NMS in the runner: per-class candidates (C-1, k, 4)/(C-1, k) → final detections, as ``SSD`` does them."""
    num = scores.shape[0]
    labels = torch.arange(1, num + 1).view(-1, 1).expand_as(scores).reshape(-1)
    boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
    keep = scores > score_thresh
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


def topk_candidates(boxes: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every anchor's boxes (A, 4) and softmax scores (A, C) → each foreground class's ``k`` best: boxes (C-1, k, 4),
    scores (C-1, k), as :class:`CandidateDetector` takes them in the file where the runtime has top-k."""
    scores, index = scores[:, 1:].t().topk(min(k, len(boxes)), dim=1)
    return boxes[index], scores


def to_original(det: dict[str, torch.Tensor], resolution: Sequence[int], size: Sequence[int]) -> dict:
    """Boxes from input pixels to the original image's (``size`` = (h, w)), torchvision's ``resize_boxes``."""
    ratio_h = torch.tensor(size[0], dtype=torch.float32) / torch.tensor(resolution[0], dtype=torch.float32)
    ratio_w = torch.tensor(size[1], dtype=torch.float32) / torch.tensor(resolution[1], dtype=torch.float32)
    x1, y1, x2, y2 = det["boxes"].float().unbind(1)
    boxes = torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)
    return {"boxes": boxes, "labels": det["labels"].long(), "scores": det["scores"].float()}


Runner = Callable[[np.ndarray], list[np.ndarray]]


def _onnx_runner(path: Path, threads: int | None) -> Runner:
    from mobilenets.deploy import onnx as onnx_rt

    sess = onnx_rt.session(path, threads or 1)
    return lambda x: sess.run(None, {INPUT: x})


def _openvino_runner(path: Path, threads: int | None) -> Runner:
    from mobilenets.deploy import openvino

    # f32 pinned: on a CPU with AMX or AVX512_BF16 OpenVINO would otherwise compute in bf16.
    model = openvino.compiled(path, "fp32", threads or 1)
    names = [out.get_any_name() for out in model.outputs]
    return lambda x: [np.asarray(model(x)[name]) for name in names]


def _executorch_runner(path: Path, threads: int | None) -> Runner:
    from mobilenets.deploy import executorch

    method = executorch.method(path, threads or 1)
    return lambda x: [t.numpy() for t in method.execute([torch.from_numpy(np.ascontiguousarray(x))])]


def _tflite_runner(path: Path, threads: int | None) -> Runner:
    from mobilenets.deploy import litert

    interp = litert._interpreter(path, threads or 1)
    inp = interp.get_input_details()[0]
    # Outputs by rank, not by position: the converter orders them as it likes (boxes (C-1, k, 4), scores (C-1, k)).
    outs = sorted(interp.get_output_details(), key=lambda d: -len(d["shape"]))

    def run(x: np.ndarray) -> list[np.ndarray]:
        interp.set_tensor(inp["index"], litert._to_file(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), inp))
        interp.invoke()
        return [litert._from_file(interp.get_tensor(d["index"]), d) for d in outs]

    return run


def _web_runner(path: Path, threads: int | None) -> Runner:
    from mobilenets.deploy.web import detect as web_detect

    return web_detect.runner(path, threads)  # the folder's model.onnx, run by its page in headless Chromium


RUNNERS = {
    "onnx": _onnx_runner,
    "openvino": _openvino_runner,
    "executorch": _executorch_runner,
    "tflite": _tflite_runner,
    "web": _web_runner,
    "ncnn": ncnn.detector_runner,
    "mnn": mnn.detector_runner,
}
# Runtimes whose defaults reduce precision where the CPU allows: their runners take the options (the card's by
# default), and an export is run under the defaults too (:func:`export_detector`).
RUNTIME_OPTIONS = ("ncnn", "mnn")


def file_info(path: str | Path, format: str) -> dict:
    """What a detector file says about itself (its metadata); an error when it is not a detector file."""
    from mobilenets.deploy import runtime_module

    try:
        info = runtime_module(format).metadata(Path(path))
    except Exception as e:  # noqa: BLE001 - any reading failure (protobuf's DecodeError too) is "not readable"
        raise MobileNetsError(f"cannot read {path} as a {format} file: {str(e).splitlines()[0][:200]}") from None
    if not info or info.get("task") != "detection":
        raise MobileNetsError(f"{path} is not a mobilenets detector file (no detection metadata); export it again")
    return info


def detect_with_file(
    path: str | Path,
    format: str,
    images: Sequence[torch.Tensor],
    *,
    threads: int | None = 1,
    info: dict | None = None,
    options: dict | None | str = "card",
) -> list[dict[str, torch.Tensor]]:
    """Detections of a detector file on ``images`` ((3, h, w) in [0, 1], any sizes), in each image's pixels.

    The runner resizes each image to the file's input, runs the file with its own runtime, applies NMS when the
    file leaves it to the runner (its metadata's ``"nms"``), and scales the boxes back to the original image.
    ``options`` (ncnn, MNN): the runtime options, as :func:`file_detector` takes them.
    """
    detect = file_detector(path, format, threads=threads, info=info, options=options)
    return [detect(image) for image in images]


def file_detector(
    path: str | Path,
    format: str,
    *,
    threads: int | None = 1,
    info: dict | None = None,
    options: dict | None | str = "card",
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A function from one image (3, h, w) in [0, 1] to its detections in its own pixels, with the file opened once:
    what :func:`detect_with_file` applies to each image, and what ``bench`` times.

    ``options``, for the runtimes whose options change the answers (ncnn, MNN): "card" (the options the file was
    verified with, from its card), None (the runtime's defaults: what a user who skips the card gets) or a dict.
    """
    if format not in RUNNERS:
        raise MobileNetsError(f"detector files run on {', '.join(RUNNERS)}; got format {format!r}")
    if options != "card" and format not in RUNTIME_OPTIONS:
        raise MobileNetsError(f"runtime options are for {', '.join(RUNTIME_OPTIONS)} files, not {format}")
    info = info or file_info(path, format)
    resolution, nms = info["input"][2:], info["nms"]
    run = RUNNERS[format](Path(path), threads, *([options] if format in RUNTIME_OPTIONS else []))

    def detect(image: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = [torch.from_numpy(np.asarray(o)) for o in run(resize_for(resolution, image).numpy())]
        if nms.get("topk") == "runner":  # every anchor's box and scores: each class's top-k taken here
            outputs = topk_candidates(*outputs, nms["topk_candidates"])
        if nms["where"] == "file":
            det = dict(zip(FINAL_OUTPUTS, outputs))
        else:
            det = nms_candidates(*outputs, nms["score_thresh"], nms["iou_thresh"], nms["detections_per_img"])
        return to_original(det, resolution, image.shape[-2:])

    return detect


@torch.inference_mode()
def detect_with_model(model: nn.Module, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The PyTorch detector's own detections (torchvision's path: resize, normalize, postprocess), one by one."""
    model.eval()
    return [{k: v.detach() for k, v in model([image.float()])[0].items()} for image in images]


# ----------------------------------------------------------------------------------------------------
# Verification on detections

# fp32: a file's detections equal the model's when matched boxes overlap by IoU ≥ 0.99 with the same label and
# scores within 1e-3. They are compared above a score floor: the model keeps everything down to score_thresh
# (0.001, for the precision-recall curve), and there a box whose score or overlap sits on the threshold can fall
# either way under float rounding; 0.3 is `predict`'s default, the detections a user sees.
FP32_IOU, FP32_SCORE_TOL, SCORE_FLOOR = 0.99, 1e-3, 0.3
# fp32 files must reproduce this share of the model's detections above the floor (a box on an NMS boundary, IoU
# within rounding of nms_thresh against a better one, may be kept by one and not the other).
FP32_MIN_MATCH = 0.99
# fp16 (ncnn, MNN: fp16 weights, fp16 arithmetic where the CPU has it): the same detections as fp32's rule, with
# tolerances for 11 significant bits. A coordinate near the far edge of a 320 px input is held to 0.25 px, so a box
# of 32 px a side with every edge off by half that step keeps IoU ≥ 0.98. Scores: rounding the logits' sums moves a
# softmax score by at most a quarter of the logit's error; measured on the test detector (tests/
# test_detection_android.py), whose class logits spread wider than a trained one's: max |Δscore| 0.005 (ncnn) and
# 0.026 (MNN), so 0.05 leaves twice the worst. The share is the classifiers' fp16 agreement (97%): at reduced
# precision a box on an NMS or top-k boundary falls either way more often than in fp32.
FP16_IOU, FP16_SCORE_TOL, FP16_MIN_MATCH = 0.98, 0.05, 0.97
# (IoU, score tolerance, share) of the "same detections" rule for each float precision.
SAME_DETECTIONS = {
    "fp32": (FP32_IOU, FP32_SCORE_TOL, FP32_MIN_MATCH),
    "fp16": (FP16_IOU, FP16_SCORE_TOL, FP16_MIN_MATCH),
}
# int8: the float model's confident detections (score ≥ 0.5) must be kept (same label, IoU ≥ 0.9, the file's
# score ≥ the floor) for ≥ 95% of them, and COCO mAP on labelled images may drop by at most 1 point.
INT8_IOU, INT8_CONFIDENT, INT8_MIN_KEPT, INT8_MAX_MAP_DROP = 0.9, 0.5, 0.95, 0.01


@dataclass
class DetectionMatch:
    """How a file's detections compare with the PyTorch detector's on the same images."""

    runtime: str
    precision: str
    num_images: int
    reference: int = 0  # the model's detections judged (fp32: score ≥ floor; int8: ≥ confident)
    matched: int = 0  # of those, found in the file within the precision's tolerances
    extra: int = 0  # fp32: the file's detections ≥ floor that match none of the model's
    min_iou: float = 1.0  # over the pairs (same label, IoU ≥ 0.5) of reference and file detections
    max_score_diff: float = 0.0
    map_reference: float | None = None
    map_file: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def match_rate(self) -> float:
        return self.matched / self.reference if self.reference else float("nan")

    @property
    def map_drop(self) -> float | None:
        if self.map_reference is None or self.map_file is None:
            return None
        return self.map_reference - self.map_file

    @property
    def passed(self) -> bool:
        if self.reference == 0:
            return False  # nothing to compare: the check says nothing about the file
        if self.precision in SAME_DETECTIONS:
            share = SAME_DETECTIONS[self.precision][2]
            return self.match_rate >= share and self.extra <= (1 - share) * self.reference
        drop = self.map_drop
        return self.interval[1] >= INT8_MIN_KEPT and (drop is None or drop <= INT8_MAX_MAP_DROP)

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the kept share. int8 passes when its top reaches :data:`INT8_MIN_KEPT`, the
        classifiers' rule: a file fails when the data show it below the requirement, not on one detection's say
        (34 of 36 kept reads 94.4%, interval 82-98%)."""
        from mobilenets.deploy.verify import wilson_interval

        return wilson_interval(self.matched, self.reference)

    def summary(self) -> str:
        head = f"{self.runtime} {self.precision} vs PyTorch on {self.num_images} real images: "
        if self.reference == 0:
            floor = SCORE_FLOOR if self.precision in SAME_DETECTIONS else INT8_CONFIDENT
            return head + (
                f"the PyTorch detector finds nothing scoring ≥ {floor} on them, so there is nothing to compare: "
                "export a detector trained until it detects (--checkpoint of a run whose test mAP is well above 0; "
                "an untrained or undertrained one scores below the floor)"
            )
        if self.precision in SAME_DETECTIONS:
            iou, tol, share = SAME_DETECTIONS[self.precision]
            line = (
                f"{self.matched}/{self.reference} detections ≥ {SCORE_FLOOR} equal ({100 * self.match_rate:.1f}%, "
                f"need ≥ {100 * share:.0f}%: same label, IoU ≥ {iou}, score ± {tol:g}), "
                f"{self.extra} extra; pairs' min IoU {self.min_iou:.4f}, max |Δscore| {self.max_score_diff:.2g}"
            )
        else:
            lo, hi = self.interval
            line = (
                f"{self.matched}/{self.reference} confident detections (≥ {INT8_CONFIDENT}) kept "
                f"({100 * self.match_rate:.1f}%, 95% interval {100 * lo:.1f}-{100 * hi:.1f}%, need its top ≥ "
                f"{100 * INT8_MIN_KEPT:.0f}%: same label, IoU ≥ {INT8_IOU}, score ≥ {SCORE_FLOOR}); pairs' min IoU "
                f"{self.min_iou:.3f}, max |Δscore| {self.max_score_diff:.2g}"
            )
            if self.map_drop is not None:
                line += (
                    f"; COCO mAP {100 * self.map_file:.1f} vs {100 * self.map_reference:.1f} "
                    f"(drop {100 * self.map_drop:.2f} points, need ≤ {100 * INT8_MAX_MAP_DROP:.0f})"
                )
        return head + line + "".join(f"; {n}" for n in self.notes)


def _greedy_pairs(ref: dict, out: dict, min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """(reference index, file index, IoU) pairs: each reference detection, best score first, takes the unpaired
    file detection of its label that overlaps it most, if that IoU ≥ ``min_iou``."""
    if len(ref["boxes"]) == 0 or len(out["boxes"]) == 0:
        return []
    iou = box_iou(ref["boxes"].double(), out["boxes"].double())
    iou[ref["labels"][:, None] != out["labels"][None, :]] = -1
    taken = torch.zeros(len(out["boxes"]), dtype=torch.bool)
    pairs = []
    for i in ref["scores"].argsort(descending=True).tolist():
        row = iou[i].masked_fill(taken, -1)
        j = int(row.argmax())
        if row[j] >= min_iou:
            taken[j] = True
            pairs.append((i, j, float(row[j])))
    return pairs


def match_detections(reference: list[dict], outputs: list[dict], runtime: str, precision: str) -> DetectionMatch:
    """Compare per image, greedily by score (see the thresholds above); mAP is added by the caller."""
    result = DetectionMatch(runtime, precision, len(reference))
    same = SAME_DETECTIONS.get(precision)  # fp32, fp16: the same detections; int8: the confident ones kept
    for ref, out in zip(reference, outputs):
        floor = SCORE_FLOOR if same else INT8_CONFIDENT
        # The file's side reaches a tolerance below the floor, so a detection on the floor is not lost to rounding.
        lower = SCORE_FLOOR - same[1] if same else 0.0
        ref = {k: v[ref["scores"] >= floor] for k, v in ref.items()}
        cand = {k: v[out["scores"] >= lower] for k, v in out.items()}
        pairs = _greedy_pairs(ref, cand)
        result.reference += len(ref["scores"])
        for i, j, iou in pairs:
            diff = abs(float(ref["scores"][i]) - float(cand["scores"][j]))
            result.min_iou, result.max_score_diff = min(result.min_iou, iou), max(result.max_score_diff, diff)
            if same:
                result.matched += iou >= same[0] and diff <= same[1]
            else:
                result.matched += iou >= INT8_IOU and float(cand["scores"][j]) >= SCORE_FLOOR
        if same:
            paired = {j for _, j, _ in pairs}
            result.extra += sum(
                1 for j, s in enumerate(cand["scores"].tolist()) if s >= SCORE_FLOOR + same[1] and j not in paired
            )
    return result


def nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


# ----------------------------------------------------------------------------------------------------
# Writing files

# Which runtimes run NMS in the file (they have the op) and which leave it to the runner.
NMS_IN_FILE = {
    "onnx": True,
    "openvino": True,
    "executorch": False,
    "tflite": False,
    "web": True,
    "ncnn": False,  # no TopK or NMS layer: the file decodes, the runner takes each class's top-k and runs NMS
    "mnn": True,  # ONNX NonMaxSuppression, run as MNN's NonMaxSuppressionV2 with torchvision's rules
}
DETECTION_FORMATS = tuple(NMS_IN_FILE)
DETECTION_PRECISIONS = {f: ("fp32", "int8") for f in NMS_IN_FILE}
DETECTION_PRECISIONS.update(ncnn=("fp32", "fp16", "int8"), mnn=("fp32", "fp16"))
# Precisions a format's file holds for classifiers but not for detectors, and why.
DETECTION_REFUSED = {
    ("mnn", "int8"): "mnnquant puts int8 ranges and int8 lookup tables on the box decoding too (boxes escape their "
    "clip), and with those taken out, int8 in the other formats' scopes kept 49 of the test detector's 72 confident "
    "detections (68%, interval 57-78%; need 95%)",
}
# int8 quantizes the backbone, the extra layers and the head's depthwise convs. The head's two 1×1 prediction convs
# (box offsets and class logits), the box decoding, softmax, top-k and NMS stay float: a uint8 box offset moves a
# box by a step of the whole offset range, and uint8 logits merge the close scores that NMS and top-k order.
# Scopes as the TorchScript exporter names the nodes: "/head/regression_head/module_list.2/module_list.2.0/...".
INT8_SCOPES = re.compile(r"/backbone/|/head/(classification|regression)_head/module_list\.\d+/module_list\.\d+\.0/")


INT8_KEPT_FLOAT = {
    "quantized": "backbone, extra layers and the head's depthwise convs",
    "float": "the head's prediction convs (box offsets, class logits: 1x1 in SSDLite, 3x3 in SSD), box decoding, "
    "softmax, top-k, NMS",
}


def _trace_onnx(module: nn.Module, path: Path, resolution: Sequence[int]) -> None:
    require("onnx", "ONNX export")
    names = FINAL_OUTPUTS if isinstance(module, FinalDetector) else CANDIDATE_OUTPUTS
    with quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            (torch.rand(1, 3, *resolution),),
            str(path),
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=list(names),
            dynamo=False,  # torch.export fails on torchvision's detectors (pytorch/vision #9306)
        )


def _int8_nodes(proto) -> tuple[list[str], list[str]]:
    """(nodes to quantize, convs kept float) of a traced detector graph, by the module scopes in their names."""
    quantized, float_convs = [], []
    for node in proto.graph.node:
        if INT8_SCOPES.search(node.name):
            quantized.append(node.name)
        elif node.op_type == "Conv":
            float_convs.append(node.name)
    return quantized, float_convs


def write_onnx(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    weight_bits: int = 7,
) -> dict:
    """Write the detector as an ONNX file with NMS in the graph; int8 is ONNX Runtime's static QDQ quantization
    (per-channel ``weight_bits`` weights, u8 activations calibrated by MinMax on ``calib_images`` (N, 3, H, W) in
    [0, 1]) of the scopes in :data:`INT8_SCOPES`. Returns what the int8 file keeps float (empty for fp32)."""
    module = graph(model, nms_in_file=True)
    if precision == "fp32":
        _trace_onnx(module, path, model.resolution)
        return {}
    if calib_images is None:
        raise MobileNetsError("int8 export needs calibration images (calib_images=, CLI --calib N)")
    onnx = require("onnx", "int8 ONNX export")
    quantization = require("onnxruntime.quantization", "int8 ONNX export")
    shape_inference = require("onnxruntime.quantization.shape_inference", "int8 ONNX export")
    fp32, pre = path.with_name("fp32_" + path.name), path.with_name("pre_" + path.name)
    _trace_onnx(module, fp32, model.resolution)
    with quiet():
        shape_inference.quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantized, float_convs = _int8_nodes(onnx.load(str(pre)))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib_images.split(1))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch.numpy()}

    with quiet():
        quantization.quantize_static(
            str(pre),
            str(path),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            reduce_range=weight_bits == 7,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_quantize=quantized,
        )
    fp32.unlink()
    pre.unlink()
    return {**INT8_KEPT_FLOAT, "float_convs": float_convs}


def write_openvino(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    weight_bits: int = 7,
) -> dict:
    """OpenVINO IR converted from the ONNX file: its ``NonMaxSuppression`` becomes OpenVINO's own NMS op. int8 is
    the ONNX int8 file's QDQ graph (same calibration, same float scopes), which OpenVINO runs as int8.

    Why not NNCF: NNCF's PTQ with the same ignored scope (everything outside :data:`INT8_SCOPES`), full bias
    correction and the 7-bit overflow fix kept 34 of the seeded test detector's 50 confident detections; the QDQ
    graph read by OpenVINO kept 50 of 50 (ONNX Runtime: 49).
    """
    ov = require("openvino", "OpenVINO export")
    onnx_path = path.with_name("onnx_" + path.with_suffix(".onnx").name)
    kept_float = write_onnx(model, onnx_path, precision, calib_images, weight_bits)
    with quiet():
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    onnx_path.unlink()
    return kept_float


def int8_module_names(module: nn.Module) -> list[str]:
    """The submodules of a detector graph that PT2E int8 quantizes: :data:`INT8_SCOPES` as module names (the
    backbone with its extra layers, and the head's depthwise convs; SSD's plain 3×3 heads stay float)."""
    scopes = re.compile(r"(^|\.)backbone$|head\.(classification|regression)_head\.module_list\.\d+\.0$")
    return [name for name, _ in module.named_modules() if scopes.search(name)]


def _pt2e_int8(
    module: nn.Module, quantizer, config, calib_images: torch.Tensor, example: torch.Tensor, fold_quantize: bool = True
):
    """``module`` PT2E-quantized in the :func:`int8_module_names` scopes only: the prediction convs, box decoding,
    softmax and top-k stay float (see :data:`INT8_SCOPES`). ``quantizer`` annotates with ``config`` everywhere, then
    the annotations outside the scopes are dropped (its per-module configs cannot express this: an exported graph's
    weight nodes carry no module scope, and litert-torch's name filter mangles names with underscores).
    Returns (converted graph, convs kept float)."""
    from mobilenets.quant.fold import fold_bn
    from mobilenets.quant.passes import relu6_as_relu_clamp
    from mobilenets.quant.ptq import pt2e_quantize

    if calib_images is None:
        raise MobileNetsError("int8 export needs calibration images (calib_images=, CLI --calib N)")
    # BN folded first, as for the classifiers: the quantizers' conv patterns do not match conv → aten.batch_norm.
    module = relu6_as_relu_clamp(fold_bn(module))
    names = int8_module_names(module)

    def in_scope(node: torch.fx.Node) -> bool:
        paths = [path.removeprefix("L['self'].") for path, _ in node.meta.get("nn_module_stack", {}).values()]
        return any(path == n or path.startswith(n + ".") for path in paths for n in names)

    annotate = quantizer.annotate

    def annotate_in_scope(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
        graph = annotate(graph)
        for node in graph.graph.nodes:
            if "quantization_annotation" in node.meta and not in_scope(node):
                del node.meta["quantization_annotation"]
        return graph

    quantizer.set_global(config)
    quantizer.annotate = annotate_in_scope
    float_convs = [  # named from the detector (the graph wraps it in "decoded." and LiteRT's in "inner.")
        re.sub(r"^(inner\.)?(decoded\.)?", "", name)
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d) and not any(name.startswith(n + ".") for n in names)
    ]
    with quiet(), torch.no_grad():
        exported = torch.export.export(module, (example,)).module()
        batches = calib_images.split(1)
        converted = pt2e_quantize(exported, quantizer, batches, "int8 detector export", fold_quantize=fold_quantize)
    return converted, float_convs


def write_executorch(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    _weight_bits: int = 7,
) -> dict:
    """ExecuTorch program (XNNPACK delegate) of the per-class candidates: ExecuTorch has no NMS kernel, so NMS runs
    in the runner (:func:`nms_candidates`, torchvision's ``batched_nms`` with the file's thresholds). int8: PT2E
    with XNNPACK's quantizer (per-channel symmetric int8 weights, int8 activations, MinMax calibration) in the
    :func:`int8_module_names` scopes; XNNPACK's int8 kernels accumulate in 32 bits, so the weights keep 8 bits."""
    from mobilenets.deploy import executorch
    from mobilenets.quant.ptq import with_calibration

    module = graph(model, nms_in_file=False)
    example = torch.rand(1, 3, *model.resolution)
    kept = {}
    if precision == "int8":
        xnn = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "int8 ExecuTorch export")
        config = with_calibration(xnn.get_symmetric_quantization_config(is_per_channel=True), "minmax", "ExecuTorch")
        module, float_convs = _pt2e_int8(module, xnn.XNNPACKQuantizer(), config, calib_images, example)
        kept = {**INT8_KEPT_FLOAT, "float_convs": float_convs}
    with quiet(), torch.no_grad():
        exported = torch.export.export(module, (example,))
    path.write_bytes(executorch._lower(exported))
    return kept


def write_tflite(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    _weight_bits: int = 7,
) -> dict:
    """LiteRT file of the per-class candidates, NHWC input (LiteRT's layout), converted by litert-torch: LiteRT's
    built-in ops have no NMS (TF's ``TFLite_Detection_PostProcess`` is a custom op the stock interpreter does not
    register), so NMS runs in the runner. int8: PT2E with litert-torch's quantizer (int8 per-channel weights, int8
    activations, MinMax) in the :func:`int8_module_names` scopes, the rest float."""
    litert_torch = require("litert_torch", "LiteRT export")
    from mobilenets.deploy import litert
    from mobilenets.quant.ptq import with_calibration

    h, w = model.resolution
    example = torch.rand(1, h, w, 3)
    kept, quant_config = {}, None
    if precision == "int8":
        pt2e_quantizer = require("litert_torch.quantize.pt2e_quantizer", "int8 LiteRT export")
        pt2e_utils = require("torchao.quantization.pt2e", "int8 LiteRT export")
        quant = require("litert_torch.quantize.quant_config", "int8 LiteRT export")
        config = with_calibration(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False), "minmax", "LiteRT"
        )
        quantizer = pt2e_quantizer.PT2EQuantizer()
        nhwc = _ChannelsLastInput(graph(model, nms_in_file=False))
        # Weights stay float → quantize → dequantize (fold_quantize=False): litert-torch lowers that pattern.
        calib = None if calib_images is None else calib_images.permute(0, 2, 3, 1)
        module, float_convs = _pt2e_int8(nhwc, quantizer, config, calib, example, fold_quantize=False)
        module = pt2e_utils.move_exported_model_to_eval(module)
        module.training = False
        kept = {**INT8_KEPT_FLOAT, "float_convs": float_convs}
        # The QuantConfig only tells litert-torch that the graph is statically quantized (as for QAT graphs): the
        # graph's own Q/DQ nodes give the parameters, and its float parts stay float.
        static = pt2e_quantizer.PT2EQuantizer().set_global(config)
        quant_config = quant.QuantConfig(pt2e_quantizer=static)
    else:
        module = _ChannelsLastInput(graph(model, nms_in_file=False)).eval()
    with quiet(), litert._quiet_native_info(), torch.no_grad():
        litert_torch.convert(module, (example,), quant_config=quant_config).export(str(path))
    return kept


class _ChannelsLastInput(nn.Module):
    """NHWC image in, the wrapped NCHW graph's outputs out: LiteRT's input layout."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor):
        return self.inner(image.permute(0, 3, 1, 2))


def write_web(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    weight_bits: int = 7,
) -> dict:
    """A folder with :func:`write_onnx`'s file (NMS inside, fp32 or int8) and a page that draws its detections on a
    dropped photo, offline: :mod:`mobilenets.deploy.web.detect`."""
    from mobilenets.deploy.web import detect as web_detect

    return web_detect.write(model, path, precision, calib_images, weight_bits)


WRITERS = {
    "onnx": write_onnx,
    "openvino": write_openvino,
    "executorch": write_executorch,
    "tflite": write_tflite,
    "web": write_web,
    "ncnn": ncnn.write_detector,
    "mnn": mnn.write_detector,
}


def detector_info(model: nn.Module, format: str, precision: str, classes: Sequence[str] | None, weight_bits: int):
    """What a detector file is and how to run it, stored in the file (ONNX metadata_props, OpenVINO rt_info)."""
    from mobilenets import __version__
    from mobilenets.deploy.cpu import cpu_info
    from mobilenets.deploy.export import RUNTIME_OF

    h, w = model.resolution
    nms_in_file = NMS_IN_FILE[format]
    info = {
        "producer": f"mobilenets {__version__}",
        "task": "detection",
        "model": model.config.get("name"),
        "format": format,
        "runtime": RUNTIME_OF[format],
        "precision": precision,
        "input": [1, 3, h, w],
        "preprocessing": PREPROCESSING,
        "mean": list(model.transform.image_mean),
        "std": list(model.transform.image_std),
        "outputs": (
            "boxes (K, 4) x1y1x2y2 in input pixels, labels (K,) in 1..C-1, scores (K,), best first"
            if nms_in_file
            else "candidate_boxes (C-1, k, 4) in input pixels, candidate_scores (C-1, k): each class's top-k anchors"
        ),
        "postprocessing": "boxes × (original size / input size) per axis, by the runner",
        "nms": {
            "where": "file" if nms_in_file else "runner",
            "op": "ONNX NonMaxSuppression"
            if format in ("onnx", "web")
            else ("OpenVINO NMS (from ONNX NonMaxSuppression)" if nms_in_file else "torchvision.ops.batched_nms"),
            "score_thresh": float(model.score_thresh),
            "iou_thresh": float(model.nms_thresh),
            "topk_candidates": int(model.topk_candidates),
            "detections_per_img": int(model.detections_per_img),
        },
        "num_classes": int(model.num_classes),
        "classes": list(classes) if classes is not None else None,
        "built_on": cpu_info().line(),
        "runs_on": "every CPU",
    }
    if precision == "int8" and format in ("executorch", "tflite"):
        info["int8"] = {
            "weights": "int8 per-channel symmetric",
            "activations": "int8",
            "calibration": f"minmax (PT2E, {'XNNPACK' if format == 'executorch' else 'litert-torch'}'s quantizer)",
        }
        info["runs_on"] = "every CPU: XNNPACK accumulates int8 products in 32 bits"
    elif precision == "int8":
        info["int8"] = {
            "weights": f"int{weight_bits} per-channel symmetric",
            "activations": "uint8",
            "calibration": "minmax (ONNX Runtime)"
            if format in ("onnx", "web")
            else "minmax (ONNX Runtime's QDQ graph, read by OpenVINO)",
        }
        info["runs_on"] = (
            "every CPU: 7-bit weights cannot saturate u8×s8 16-bit accumulation on x86 without VNNI"
            if weight_bits == 7
            else "x86 CPUs with VNNI or AMX, and Arm; saturates (wrong answers) on AVX2-only x86"
        )
    if format == "tflite":
        info["input_layout"] = "NHWC (the runner transposes the NCHW image)"
    if format == "ncnn":
        info["outputs"] = "boxes (A, 4) in input pixels, decoded and clipped, scores (A, C) softmax, for every anchor"
        info["nms"].update(op="per-class torch.topk, then torchvision.ops.batched_nms", topk="runner")
    if format == "mnn":
        info["nms"]["op"] = "MNN NonMaxSuppressionV2 (from ONNX NonMaxSuppression)"
    if precision == "fp16":
        info["fp16"] = (
            "conv weights fp16 (pnnx fp16=1); biases, anchors and mean/std fp32; fp16 storage and arithmetic where "
            "the CPU has them, else fp32"
            if format == "ncnn"
            else "conv weights fp16 (mnnconvert --fp16); MNN's low precision computes in fp16 where the CPU has it"
        )
    if precision == "int8" and format == "ncnn":
        info["int8"] = {
            "weights": "int8 per-channel symmetric",
            "activations": "int8",
            "calibration": "minmax (each int8 layer's max |input|, measured by ncnn on the fp32 file)",
        }
        info["runs_on"] = ncnn.INT8_RUNS_ON
    return info


# Real images a detector export is verified on by default: composite test images (labelled: mAP) and the photos.
VERIFY_DETECTION_IMAGES = 100
CALIB_DETECTION_IMAGES = 200
PAGE_TEST_IMAGES = 20  # test images the web page also detects on from image files, beside the photos


def dataset_images(ds, n: int | None = None) -> list[torch.Tensor]:
    """The first ``n`` images of a detection dataset as (3, h, w) float in [0, 1], at their own sizes."""
    return list(iter_dataset_images(ds, 0, n))


def iter_dataset_images(ds, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
    """Images ``start``..``stop`` of a detection dataset, one at a time, as :func:`dataset_images` gives them."""
    for i in range(start, len(ds) if stop is None else min(stop, len(ds))):
        yield ds[i][0].as_subclass(torch.Tensor).float().div(255)


def photo_images() -> list[torch.Tensor]:
    """scikit-image's sample photos (no download), (3, h, w) float in [0, 1]."""
    from mobilenets.deploy.images import _photos

    return [torch.from_numpy(np.array(p)).permute(2, 0, 1).float().div(255) for p in _photos()]  # a writable copy


def calibration_images(resolution: Sequence[int], n: int = CALIB_DETECTION_IMAGES, spec: str = "composite"):
    """``n`` real training images of the detection set ``spec``, resized to the input: (n, 3, H, W) in [0, 1]."""
    from mobilenets.data.detection import load_detection_dataset

    ds = load_detection_dataset(spec, "train")
    return torch.cat([resize_for(resolution, image) for image in dataset_images(ds, n)])


def verify_detector_file(
    model: nn.Module,
    path: Path,
    format: str,
    precision: str,
    images: Sequence[torch.Tensor],
    dataset=None,
    classes: Sequence[str] | None = None,
    info: dict | None = None,
    *,
    options: dict | None | str = "card",
    runtime: str | None = None,
) -> DetectionMatch:
    """Run ``path`` on ``images`` (and on ``dataset``'s, labelled) and compare with ``model``'s detections.

    COCO mAP of both on ``dataset`` is measured when the detector's classes are the dataset's (else a note says
    why not), and judged for int8. ``options`` (ncnn, MNN): the runtime options, as :func:`file_detector` takes
    them; ``runtime``: how the summary names the runtime (default: its name).
    """
    from mobilenets.deploy.export import RUNTIME_OF

    labelled = dataset_images(dataset) if dataset is not None else []
    every = [*labelled, *images]
    reference = detect_with_model(model, every)
    outputs = detect_with_file(path, format, every, info=info, options=options)
    result = match_detections(reference, outputs, runtime or RUNTIME_OF[format], precision)
    if dataset is not None:
        if classes is not None and list(classes) == list(dataset.classes):
            from mobilenets.detection.coco_eval import coco_map

            n = len(labelled)
            result.map_reference = coco_map(dataset, reference[:n]).map
            result.map_file = coco_map(dataset, outputs[:n]).map
        else:
            result.notes.append(f"no mAP: the detector's classes are not {dataset.name}'s")
    return result


def export_detector(
    model: nn.Module,
    path: str | Path,
    format: str = "onnx",
    precision: str = "fp32",
    *,
    classes: Sequence[str] | None = None,
    calib_images: torch.Tensor | None = None,
    verify: bool = True,
    verify_images: Sequence[torch.Tensor] | None = None,
    verify_dataset=None,
    weight_bits: int = 7,
    progress: Callable[[str], None] | None = None,
):
    """Write a detector for ``format`` at ``precision``, verify its detections against PyTorch's, move it into place.

    Args:
        classes: the detector's class names (label k is ``classes[k - 1]``), stored in the file; with
            ``verify_dataset`` of the same classes the check includes COCO mAP.
        calib_images: int8 calibration images (N, 3, H, W) in [0, 1] at the input size (default: 200 composite
            training images).
        verify_images: (3, h, w) images in [0, 1], any sizes (default: the scikit-image photos).
        verify_dataset: a labelled DetectionDataset to verify on too (default: the first 100 composite test images).

    Raises MobileNetsError, leaving nothing at ``path``, when the file cannot be written or fails verification.
    """
    from mobilenets.deploy import runtime_module
    from mobilenets.deploy.export import ExportResult, _check_output, _check_path, _size
    from mobilenets.deploy.verify import int8_safety
    from mobilenets.io import atomic_staging

    if format not in DETECTION_FORMATS:
        raise MobileNetsError(
            f"detectors export to {', '.join(DETECTION_FORMATS)} so far; {format!r} is not done yet (issue 28)"
        )
    if (format, precision) in DETECTION_REFUSED:
        reason = DETECTION_REFUSED[format, precision]
        raise MobileNetsError(f"a detector's {format} file is not offered in {precision}: {reason}")
    if precision not in DETECTION_PRECISIONS[format]:
        raise MobileNetsError(
            f"a detector's {format} file offers {', '.join(DETECTION_PRECISIONS[format])}, not {precision}"
        )
    say = progress or (lambda _msg: None)
    path = _check_path(path, format)
    _check_output(path, format)
    model = model.eval()
    if precision == "int8" and calib_images is None:
        say(f"calibrating on {CALIB_DETECTION_IMAGES} composite training images")
        calib_images = calibration_images(model.resolution)
    if verify and verify_dataset is None and verify_images is None:
        from mobilenets.data.detection import load_detection_dataset

        verify_dataset = load_detection_dataset("composite", "test").subset(range(VERIFY_DETECTION_IMAGES))
    if verify and verify_images is None:
        verify_images = photo_images()
    module = runtime_module(format)
    info = detector_info(model, format, precision, classes, weight_bits)
    verification, checks = None, []
    with atomic_staging(path, getattr(module, "companions", None)) as staged:
        say(f"writing a {format} {precision} detector ({module.RUNTIME}, NMS in the {info['nms']['where']})")
        try:
            kept_float = WRITERS[format](model, staged, precision, calib_images, weight_bits)
            if precision == "int8":
                info["int8"].update(kept_float)
                qat = getattr(model, "qat_meta", None)  # a `train --qat` detector (mobilenets.quant.qat_detection)
                if qat:
                    info["int8"]["qat"] = f"weights trained through {qat['target']}'s fake int8; {qat['export']}"
            module.set_metadata(staged, info)
        except MobileNetsError:
            raise
        except Exception as e:  # noqa: BLE001 - an exporter failure is the user's "export failed"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MobileNetsError(f"{format} {precision} detector export failed: {msg}") from e
        if precision == "int8":
            safety = int8_safety(module.int8_ranges(staged))
            if weight_bits == 7 and not safety.everywhere:
                raise MobileNetsError(f"{format} int8 export failed its range check, nothing written: {safety.detail}")
        if verify:
            count = len(verify_images) + (len(verify_dataset) if verify_dataset is not None else 0)
            say(f"verifying detections with {module.RUNTIME} on {count} real images")
            verification = verify_detector_file(
                model, staged, format, precision, verify_images, verify_dataset, classes, info
            )
            if not verification.passed:
                raise MobileNetsError(
                    f"{format} {precision} export failed verification, nothing written: {verification.summary()}"
                )
            if format in RUNTIME_OPTIONS:  # ncnn, MNN: what a user who skips the card gets
                say(f"verifying again under {module.RUNTIME}'s default options")
                checks.append(
                    _check_defaults(model, staged, format, verification, verify_images, verify_dataset, classes, info)
                )
            if hasattr(module, "verify_detector_page"):  # web: real images as files through the page's own pipeline
                # The photos, and test images of the detector's own data: a detector trained on them may find
                # nothing confident in the photos, and the page must be checked where it draws boxes.
                # A weak detector may find few detections to compare on those: then the page is judged on the rest of
                # the test images too, where the check above found its detections.
                page_images, more = list(verify_images), None
                if verify_dataset is not None:
                    page_images += dataset_images(verify_dataset, PAGE_TEST_IMAGES)
                    more = iter_dataset_images(verify_dataset, PAGE_TEST_IMAGES)
                say(f"detecting on {len(page_images)} image files in the page ({module.RUNTIME})")
                checks.append(module.verify_detector_page(staged, page_images, precision, more, progress=say))
    return ExportResult(path, format, precision, _size(path, format), verification, built_for=info, checks=checks)


def _check_defaults(
    model: nn.Module,
    path: Path,
    format: str,
    verified: DetectionMatch,
    images: Sequence[torch.Tensor],
    dataset,
    classes: Sequence[str] | None,
    info: dict,
) -> str:
    """Run the staged file under its runtime's default options too (ncnn's and MNN's may reduce precision), by the
    same rule as its verification, and write both figures into its card. Information, not a verdict: the file is
    refused only under the card's options (as a classifier's); a user who skips the card gets the second figure."""
    from mobilenets.deploy import runtime_module
    from mobilenets.deploy.export import _options_line

    module = runtime_module(format)
    defaults = module.default_options()
    runtime = f"{module.RUNTIME} (its default options: {_options_line(defaults)})"
    precision = verified.precision
    plain = verify_detector_file(
        model, path, format, precision, images, dataset, classes, info, options=None, runtime=runtime
    )
    figures = {
        "images": verified.num_images,
        "with_card_options": _figures(verified),
        "with_runtime_defaults": _figures(plain),
        "runtime_defaults": defaults,
    }
    module.set_metadata(path, {**module.metadata(path), "verification": figures})
    verdict = "passes" if plain.passed else "FAILS"
    card_options = _options_line(module.metadata(path)["runtime_options"])
    return (
        f"{plain.summary()}; {verdict} the {precision} rule (information: the file is verified under the card's "
        f"options, {card_options}, which give the figures above)"
    )


def _figures(match: DetectionMatch) -> dict:
    """A :class:`DetectionMatch` as a card states it."""
    out = {
        "reference": match.reference,
        "matched": match.matched,
        "extra": match.extra,
        "min_iou": match.min_iou,
        "max_score_diff": match.max_score_diff,
        "passed": match.passed,
        "summary": match.summary(),
    }
    if match.map_drop is not None:
        out.update(map_reference=match.map_reference, map_file=match.map_file)
    return out
