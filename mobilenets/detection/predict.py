"""Detect objects in image files with a trained detector: boxes, labels and scores, printed or as JSON, and a PNG per
image with the boxes drawn (``torchvision.utils.draw_bounding_boxes``).

The detector takes each image at its own size (it resizes to its fixed input inside, as torchvision's SSD) and
returns boxes in the image's pixels; ``score_thresh`` keeps the detections worth showing (the model's own threshold
is COCO evaluation's 0.001, which keeps everything for the precision-recall curve).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path

DEFAULT_SCORE_THRESH = 0.3


@dataclass
class Detections:
    """One image's detections: ``boxes`` as [x1, y1, x2, y2] in its pixels, best score first."""

    path: str
    width: int = 0
    height: int = 0
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    drawn: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        d = dict(path=self.path, width=self.width, height=self.height)
        if self.error is not None:
            return {**d, "error": self.error}
        objects = [
            dict(box=[round(v, 2) for v in b], label=int(lab), name=n, score=round(float(s), 4))
            for b, lab, n, s in zip(self.boxes, self.labels, self.names, self.scores)
        ]
        return {**d, "detections": objects, "drawn": self.drawn}


@torch.inference_mode()
def detect_images(
    model: nn.Module,
    classes: list[str],
    paths: list[str | os.PathLike],
    *,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    draw_dir: str | os.PathLike | None = None,
) -> list[Detections]:
    """Run ``model`` on each image file (folders expand to their images). ``classes[i]`` names label i + 1.

    With ``draw_dir``, writes ``<draw_dir>/<stem>.png``: the image with its boxes, names and scores drawn. A file
    that cannot be read gets ``error`` set; the others are still processed.
    """
    from mobilenets.predict import expand_paths, load_image

    if not 0 <= score_thresh <= 1:
        raise MobileNetsError(f"score threshold must be in [0, 1], got {score_thresh}")
    files = expand_paths(paths)
    if not files:
        raise MobileNetsError(f"no image files in {', '.join(map(str, paths))}")
    model.eval()
    results = []
    for f in files:
        det = Detections(str(f))
        try:
            image = load_image(f)  # H×W×3 uint8 RGB
        except MobileNetsError as e:
            det.error = str(e)
            results.append(det)
            continue
        det.height, det.width = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
        out = model([x])[0]
        keep = out["scores"] >= score_thresh
        det.boxes = out["boxes"][keep].tolist()
        det.labels = out["labels"][keep].tolist()
        det.scores = out["scores"][keep].tolist()
        det.names = [_name(classes, lab) for lab in det.labels]
        if draw_dir is not None:
            det.drawn = str(draw_detections(image, det, Path(draw_dir) / f"{Path(f).stem}.png"))
        results.append(det)
    return results


def _name(classes: list[str], label: int) -> str:
    return classes[label - 1] if 1 <= label <= len(classes) else f"class {label}"


def draw_detections(image: np.ndarray, det: Detections, path: Path) -> Path:
    """``image`` (H×W×3 uint8) with ``det``'s boxes and "name score" captions, written atomically as a PNG."""
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    canvas = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if det.boxes:
        palette = _palette(max(det.labels) + 1)
        canvas = draw_bounding_boxes(
            canvas,
            torch.tensor(det.boxes),
            labels=[f"{n} {s:.2f}" for n, s in zip(det.names, det.scores)],
            colors=[palette[lab] for lab in det.labels],
            width=max(2, round(min(image.shape[:2]) / 200)),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return path


def _palette(n: int) -> list[tuple[int, int, int]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [tuple(int(255 * c) for c in cmap(i % cmap.N)[:3]) for i in range(n)]


def format_detections(results: list[Detections]) -> str:
    """Human-readable lines per file: one per detection (errors are left to the caller, for stderr)."""
    lines = []
    for r in results:
        if r.error is not None:
            continue
        rel = os.path.relpath(r.path) if os.path.isabs(r.path) else r.path
        head = r.path if rel.startswith("..") else rel
        lines.append(
            f"{head}  ({r.width}×{r.height}, {len(r.boxes)} detection(s)" + (f", drawn: {r.drawn})" if r.drawn else ")")
        )
        for b, n, s in zip(r.boxes, r.names, r.scores):
            lines.append(f"  {n:<16} {s:5.2f}  [{b[0]:7.1f} {b[1]:7.1f} {b[2]:7.1f} {b[3]:7.1f}]")
    return "\n".join(lines)
