"""COCO mAP of a detector on a :class:`~mobilenets.data.detection.DetectionDataset`, computed by pycocotools.

The numbers are pycocotools' own (``COCOeval``, iouType "bbox"), the ones papers report: mAP is AP averaged over
IoU thresholds .50:.05:.95 with 101-point interpolated precision, at most 100 detections per image; crowd
(and VOC-difficult) ground truth is an ignore region. We only convert: labels 1..K to the dataset's category ids
and XYXY boxes to COCO's [x, y, width, height].
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mobilenets.data.detection import DetectionDataset, detection_collate
from mobilenets.errors import MobileNetsError

# pycocotools' summarize() order of its 12 numbers.
STAT_NAMES = (
    "AP@[.5:.95]",
    "AP@.5",
    "AP@.75",
    "AP small",
    "AP medium",
    "AP large",
    "AR@1",
    "AR@10",
    "AR@100",
    "AR small",
    "AR medium",
    "AR large",
)


@dataclass
class DetectionEval:
    """pycocotools' bbox metrics. A metric with no ground truth to measure it (an area range without objects)
    is NaN, where pycocotools writes -1; ``per_class_ap`` leaves out the classes without ground truth."""

    map: float
    map50: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    per_class_ap: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0
    stats: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes None."""
        return _nan_to_none(asdict(self))

    def format(self) -> str:
        """A short table: mAP, mAP@.5, mAP@.75, by object size, then AP per class."""

        def pct(v: float) -> str:
            return "   -" if math.isnan(v) else f"{100 * v:4.1f}"

        lines = [
            f"COCO mAP on {self.num_images} images ({self.num_detections} detections)",
            f"  mAP@[.5:.95] {pct(self.map)}   mAP@.5 {pct(self.map50)}   mAP@.75 {pct(self.map75)}",
            f"  small {pct(self.map_small)}   medium {pct(self.map_medium)}   large {pct(self.map_large)}",
        ]
        if self.per_class_ap:
            width = max(len(name) for name in self.per_class_ap)
            lines.append("  AP@[.5:.95] per class:")
            lines += [f"    {name:<{width}}  {pct(ap)}" for name, ap in self.per_class_ap.items()]
        return "\n".join(lines)


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def coco_map(ds: DetectionDataset, detections: list[dict]) -> DetectionEval:
    """COCO mAP of ``detections`` on ``ds``.

    Args:
        detections: one dict per image of ``ds``, in order: ``{"boxes": (M, 4) XYXY in the pixels of the
            original image, "labels": (M,) in 1..K, "scores": (M,)}`` (tensors or arrays; M may be 0).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(detections) != len(ds):
        raise MobileNetsError(
            f"{len(detections)} detection lists for the {len(ds)} images of {ds.name}; pass one per image, in order"
        )
    gt = ds.coco_gt()
    results = []
    for image_id, det in zip(ds.image_ids, detections):
        results += _coco_results(image_id, det, ds)
    for k, r in enumerate(results, 1):
        r["id"] = k  # pycocotools tells detections apart by their ids
    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": results}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and the summary table
        dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) for s in evaluator.stats]
    named = [math.nan if s < 0 else s for s in stats]
    return DetectionEval(
        *named[:6],
        per_class_ap=_per_class_ap(evaluator, ds),
        num_images=len(ds),
        num_detections=len(results),
        stats=stats,
    )


def _coco_results(image_id: int, det: dict, ds: DetectionDataset) -> list[dict]:
    try:
        boxes = torch.as_tensor(det["boxes"], dtype=torch.float64).reshape(-1, 4).tolist()
        labels = torch.as_tensor(det["labels"]).reshape(-1).tolist()
        scores = torch.as_tensor(det["scores"], dtype=torch.float64).reshape(-1).tolist()
    except (KeyError, TypeError, RuntimeError) as e:
        raise MobileNetsError(
            f"detections of image {image_id}: {e}; each must be {{'boxes': (M, 4), 'labels': (M,), 'scores': (M,)}}"
        ) from None
    if not len(boxes) == len(labels) == len(scores):
        raise MobileNetsError(
            f"detections of image {image_id}: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores; "
            "they must be as many"
        )
    out = []
    for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores):
        if not 1 <= label <= len(ds.classes):
            raise MobileNetsError(
                f"detections of image {image_id}: label {label} is outside 1..{len(ds.classes)} (the dataset's "
                "classes; 0 is the background): was the detector built for this dataset's num_classes?"
            )
        w, h = x2 - x1, y2 - y1
        out.append(
            {
                "id": 0,  # numbered by coco_map
                "image_id": image_id,
                "category_id": ds.category_ids[label - 1],
                "bbox": [x1, y1, w, h],
                "area": w * h,
                "score": score,
                "iscrowd": 0,
            }
        )
    return out


def _per_class_ap(evaluator, ds: DetectionDataset) -> dict[str, float]:
    """AP@[.5:.95] per class (all areas, 100 detections), leaving out the classes without ground truth."""
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall thresholds, classes, areas, max dets]
    column = {cid: k for k, cid in enumerate(evaluator.params.catIds)}
    out = {}
    for name, cid in zip(ds.classes, ds.category_ids):
        p = precision[:, :, column[cid], 0, -1]
        p = p[p > -1]
        if p.size:
            out[name] = float(np.mean(p))
    return out


def evaluate_detector(
    model: torch.nn.Module,
    ds: DetectionDataset,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
    num_workers: int = 0,
) -> DetectionEval:
    """COCO mAP of a torchvision-style detector on ``ds``: each ORIGINAL image (uint8 scaled to [0, 1]) goes to
    ``model(list_of_images)``, which returns boxes in that image's pixels, as the ground truth's. The model must
    already be on ``device``; it is put in eval mode and left there."""
    from tqdm.auto import tqdm

    model.eval()
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, collate_fn=detection_collate
    )
    detections = []
    with torch.inference_mode():
        for images, _ in tqdm(loader, desc=f"eval {ds.name}", unit="batch", disable=not progress, leave=False):
            inputs = [img.as_subclass(torch.Tensor).to(device).float().div_(255) for img in images]
            for out in model(inputs):
                detections.append({k: out[k].detach().cpu() for k in ("boxes", "labels", "scores")})
    return coco_map(ds, detections)
