"""Detection datasets: COCO json, Pascal VOC xml, YOLO txt and the built-in composite set, one split each.

``load_detection_dataset("voc:~/VOCdevkit/VOC2007", "train")`` returns a :class:`DetectionDataset` whose
items are ``(image, target)``: a uint8 RGB ``tv_tensors.Image`` (3, H, W) and ``{"boxes": BoundingBoxes (N, 4)
XYXY pixels, "labels": int64 (N,) in 1..K, "image_id": int}``. Label 0 is the background; ``classes[k - 1]``
names label k. An image with no objects (N = 0) is a valid negative. :meth:`DetectionDataset.coco_gt` gives the
same annotations to pycocotools for the COCO mAP (:mod:`mobilenets.detection.coco_eval`).

Annotations are read and checked when the split is loaded; what is wrong with them is either skipped and counted
in ``skipped`` (:meth:`DetectionDataset.report` says it in one line) or an error, never silently dropped:

- box partly outside the image: clipped to it (what the image shows of the object is still the object);
- box wholly outside the image (nothing left after clipping): skipped, counted as "box outside the image";
- box with zero or negative width or height: skipped, counted as "zero-area box";
- image file missing (one cheap ``os.path.exists`` per file): the image is skipped, counted as "missing image";
- VOC id listed in ImageSets without its Annotations xml: skipped, counted as "missing annotation";
- image file present but not decodable: a :class:`MobileNetsError` naming the file when the item is loaded (YOLO
  labels are normalized, so YOLO reads every image's header at load time and a corrupt one fails there);
- COCO annotation whose category_id is not among ``categories``: an error. An unknown id means the file is
  inconsistent, and dropping those objects would teach the model that they are background;
- YOLO class index ≥ the number of names: an error, for the same reason;
- malformed JSON, XML or YOLO line (wrong field count, not a number): an error naming the file (and the line).

Objects that must not be learned from but must not count against a detector either stay in the evaluation ground
truth as ``iscrowd=1`` regions and are left out of the training targets: COCO's crowd boxes, and VOC's
``difficult=1`` objects (pycocotools ignores a detection that lies inside a crowd region, which is how it
stands in for VOC's "difficult" flag).

Training data go through :class:`TransformedDetection` (torchvision v2 transforms, seeded per (seed, epoch,
index)) and :func:`detection_collate`; :func:`train_transform` is torchvision's SSD augmentation recipe.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mobilenets.data.classification import IMAGE_EXTENSIONS, SPLITS
from mobilenets.errors import MobileNetsError

SPEC_FORMS = (
    "coco:ANNOTATIONS.json:IMAGES_DIR, coco:DIR (holding train.json and test.json or val.json), voc:ROOT, "
    "yolo:ROOT, composite or composite:DIR"
)
SPEC_PREFIXES = ("coco", "voc", "yolo", "composite")
# The photometric mean of torchvision's SSD recipe (references/detection/presets.py): RandomZoomOut's canvas.
SSD_FILL = (123, 117, 104)
# Plural wording of the skip reasons for report().
_PLURALS = {
    "box outside the image": "boxes outside the image",
    "zero-area box": "zero-area boxes",
    "missing image": "missing images",
    "missing annotation": "missing annotation files",
}


# ----------------------------------------------------------------------------------------------------
# The dataset


@dataclass
class ImageRecord:
    """One image's kept annotations: boxes (N, 4) float32 XYXY pixels, labels (N,) int64 in 1..K, crowd (N,)
    bool (evaluation-only regions), areas (N,) float32 (COCO's ``area`` when given, else the box's)."""

    path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray
    areas: np.ndarray


class DetectionDataset(torch.utils.data.Dataset):
    """One split of a detection dataset; ``ds[i]`` is ``(uint8 tv_tensors.Image (3, H, W), target)``.

    Attributes:
        classes: foreground class names in label order (label 1 is ``classes[0]``; 0 is the background).
        category_ids: the source dataset's category id of each class (COCO's ids; 1..K for VOC, YOLO), used to
            write COCO results.
        image_ids: each image's id (COCO's ids; 1..N in file order for VOC, YOLO).
        skipped: reason → number of annotations or images skipped while loading (see the module docstring).
    """

    def __init__(
        self,
        name: str,
        split: str,
        root: str | os.PathLike,
        classes: Sequence[str],
        category_ids: Sequence[int],
        records: Sequence[ImageRecord],
        skipped: Counter | None = None,
    ):
        if len(classes) != len(category_ids):
            raise MobileNetsError(f"{name}: {len(classes)} classes but {len(category_ids)} category ids")
        if not classes:
            raise MobileNetsError(f"{name}: no object classes; a detection dataset needs at least one")
        self.name, self.split, self.root = name, split, Path(root)
        self.classes, self.category_ids = list(classes), [int(c) for c in category_ids]
        self.records = list(records)
        self.skipped = Counter(skipped or {})

    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    @property
    def num_classes(self) -> int:
        """Foreground classes + the background: the detector's ``num_classes``."""
        return len(self.classes) + 1

    @property
    def in_chans(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict]:
        r = self.records[index]
        pixels = decode_rgb(r.path)
        h, w = pixels.shape[:2]
        if (r.width, r.height) != (w, h):
            raise MobileNetsError(
                f"{r.path}: the annotations say {r.width}x{r.height} but the image is {w}x{h}; fix the annotation "
                "file's size for this image (or re-export the image without rotating it)"
            )
        keep = ~r.crowd
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(r.boxes[keep]), format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(r.labels[keep]),
            "image_id": r.image_id,
        }
        return tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous()), target

    def subset(self, indices: Sequence[int]) -> DetectionDataset:
        """The images at ``indices`` (in that order) as a dataset of the same classes."""
        return DetectionDataset(
            self.name,
            self.split,
            self.root,
            self.classes,
            self.category_ids,
            [self.records[int(i)] for i in indices],
            self.skipped,
        )

    def report(self) -> str:
        """What was skipped while loading, in one line ("" when nothing was)."""
        order = [*_PLURALS, *sorted(set(self.skipped) - set(_PLURALS))]
        parts = [
            f"{n} {_PLURALS.get(reason, reason) if n > 1 else reason}"
            for reason in order
            if (n := self.skipped.get(reason, 0)) > 0
        ]
        return f"skipped {', '.join(parts)}" if parts else ""

    def coco_gt(self):
        """The kept annotations as an in-memory ``pycocotools.coco.COCO`` (crowd and VOC-difficult boxes
        included with ``iscrowd=1``), with ``category_ids`` and ``image_ids``, for COCOeval."""
        from pycocotools.coco import COCO

        images, annotations = [], []
        for r in self.records:
            images.append({"id": r.image_id, "width": r.width, "height": r.height, "file_name": r.path})
            for box, label, crowd, area in zip(r.boxes.tolist(), r.labels.tolist(), r.crowd, r.areas.tolist()):
                x1, y1, x2, y2 = box
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": r.image_id,
                        "category_id": self.category_ids[label - 1],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": area,
                        "iscrowd": int(crowd),
                    }
                )
        categories = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.classes)]
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        with contextlib.redirect_stdout(io.StringIO()):  # "creating index..."
            gt.createIndex()
        return gt

    def __repr__(self) -> str:
        n = sum(int((~r.crowd).sum()) for r in self.records)
        return (
            f"DetectionDataset({self.name!r}, split={self.split!r}, {len(self)} images, {n} boxes, "
            f"{len(self.classes)} classes)"
        )


def decode_rgb(path: str) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, 3) RGB (grayscale, palette and RGBA converted, alpha dropped)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, truncated file, bad header
        raise MobileNetsError(
            f"{path}: cannot decode the image ({e}); replace the file, or delete it so that it is skipped as missing"
        ) from None


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise MobileNetsError(
            f"{path}: cannot read the image ({e}); replace the file, or delete it so that it is skipped as missing"
        ) from None


def make_record(
    path: str,
    image_id: int,
    width: int,
    height: int,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    crowd: Sequence[bool],
    areas: Sequence[float] | None,
    skipped: Counter,
) -> ImageRecord:
    """An :class:`ImageRecord` after clipping the XYXY ``boxes`` to the image and skipping (and counting) the
    zero-area ones and those wholly outside. ``areas`` entries that are NaN (or no ``areas``) become the box's."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    labels_a = np.asarray(labels, dtype=np.int64).reshape(n)
    crowd_a = np.asarray(crowd, dtype=bool).reshape(n)
    areas_a = np.full(n, np.nan) if areas is None else np.asarray(areas, dtype=np.float64).reshape(n)
    flat = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    clipped = np.stack(
        [b[:, 0].clip(0, width), b[:, 1].clip(0, height), b[:, 2].clip(0, width), b[:, 3].clip(0, height)], axis=1
    )
    outside = ~flat & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    for reason, count in (("zero-area box", int(flat.sum())), ("box outside the image", int(outside.sum()))):
        if count:
            skipped[reason] += count
    keep = ~(flat | outside)
    clipped = clipped[keep]
    box_areas = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    areas_a = np.where(np.isnan(areas_a[keep]), box_areas, areas_a[keep])
    return ImageRecord(
        path,
        int(image_id),
        int(width),
        int(height),
        clipped.astype(np.float32),
        labels_a[keep],
        crowd_a[keep],
        areas_a.astype(np.float32),
    )


# ----------------------------------------------------------------------------------------------------
# COCO


def load_coco(
    annotations: str | os.PathLike, images_dir: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train"
) -> DetectionDataset:
    """One COCO-format annotation file (``images``, ``annotations`` with ``bbox`` [x, y, w, h] in pixels,
    ``categories``); each image's ``file_name`` is relative to ``images_dir`` (or to the first of a list of folders
    that holds the first image). Classes are the categories in id order; crowd annotations (``iscrowd=1``) are kept
    for evaluation only."""
    from pycocotools.coco import COCO

    annotations = Path(annotations)
    candidates = [Path(images_dir)] if isinstance(images_dir, (str, os.PathLike)) else [Path(d) for d in images_dir]
    try:
        with open(annotations, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise MobileNetsError(
            f"{annotations}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix or re-export the file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise MobileNetsError(f"{annotations}: cannot read the annotation file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise MobileNetsError(f"{annotations}: not a COCO annotation file (no 'images' list); expected COCO's format")
    cats = data.get("categories") or []
    try:
        cats = sorted(cats, key=lambda c: int(c["id"]))
        category_ids, classes = [int(c["id"]) for c in cats], [str(c["name"]) for c in cats]
    except (KeyError, TypeError, ValueError):
        raise MobileNetsError(f"{annotations}: a category lacks an integer 'id' or a 'name'; fix the file") from None
    if not cats:
        raise MobileNetsError(f"{annotations}: no 'categories'; a COCO file must list its object classes")
    label_of = {c: k + 1 for k, c in enumerate(category_ids)}
    first = data["images"][0] if data["images"] and isinstance(data["images"][0], dict) else {}
    images_dir = next((d for d in candidates if (d / str(first.get("file_name"))).exists()), candidates[0])
    coco = COCO()
    coco.dataset = {"images": data["images"], "annotations": data.get("annotations") or [], "categories": cats}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise MobileNetsError(f"{annotations}: an image or annotation lacks the field {e}; fix the file") from None
    unknown_images = set(coco.imgToAnns) - set(coco.imgs)
    if unknown_images:
        raise MobileNetsError(
            f"{annotations}: annotations refer to image_id {min(unknown_images)}, which is not in 'images'; "
            "fix the file (add the image or remove its annotations)"
        )

    skipped: Counter = Counter()
    records = []
    for img in data["images"]:
        try:
            image_id, file_name = int(img["id"]), str(img["file_name"])
        except (KeyError, TypeError, ValueError):
            raise MobileNetsError(f"{annotations}: an image lacks an integer 'id' or a 'file_name'; fix it") from None
        path = str(images_dir / file_name)
        if not os.path.exists(path):
            skipped["missing image"] += 1
            continue
        width, height = img.get("width"), img.get("height")
        if not width or not height:
            width, height = image_size(path)
        boxes, labels, crowd, areas = [], [], [], []
        for ann in coco.imgToAnns.get(image_id, []):
            cid = ann.get("category_id")
            if cid not in label_of:
                raise MobileNetsError(
                    f"{annotations}: annotation {ann.get('id')} has category_id {cid}, which is not among the file's "
                    f"categories ({_id_list(category_ids)}); fix the annotation or add the category"
                )
            bbox = ann.get("bbox")
            if not _is_numbers(bbox, 4):
                raise MobileNetsError(
                    f"{annotations}: annotation {ann.get('id')} has bbox {bbox!r}; expected [x, y, width, height]"
                )
            x, y, w, h = bbox
            boxes.append((x, y, x + w, y + h))
            labels.append(label_of[cid])
            crowd.append(bool(ann.get("iscrowd", 0)))
            area = ann.get("area")
            areas.append(float(area) if _is_numbers([area], 1) and area > 0 else math.nan)
        records.append(make_record(path, image_id, width, height, boxes, labels, crowd, areas, skipped))
    if data["images"] and not records:
        example = images_dir / str(data["images"][0].get("file_name"))
        raise MobileNetsError(
            f"{annotations}: none of its {len(data['images'])} image files exist (e.g. {example}); the file names are "
            "relative to the images folder: pass the folder that holds them"
        )
    return DetectionDataset(annotations.stem, split, images_dir, classes, category_ids, records, skipped)


def _is_numbers(values, n: int) -> bool:
    return (
        isinstance(values, (list, tuple))
        and len(values) == n
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )


def _id_list(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids[:12])) + (", ..." if len(ids) > 12 else "")


# ----------------------------------------------------------------------------------------------------
# Pascal VOC


def load_voc(root: str | os.PathLike, split: str) -> DetectionDataset:
    """Pascal VOC: ``root/Annotations/<id>.xml``, ``root/JPEGImages/``, ``root/ImageSets/Main/<split>.txt``.

    Split files: "train" reads trainval.txt when test.txt exists (VOC2007's protocol: train on trainval, test on
    test), else train.txt (else trainval.txt); "test" reads test.txt, else val.txt. Without ImageSets every xml
    is in "train" and "test" is an error. Classes are the sorted names seen in the whole Annotations folder, so
    both splits agree. VOC's pixel indices are 1-based and inclusive: (xmin, ymin, xmax, ymax) becomes the box
    (xmin - 1, ymin - 1, xmax, ymax). ``difficult=1`` objects are evaluation-only (``iscrowd=1``) regions.
    """
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise MobileNetsError(f"{root}: no Annotations folder; a VOC root holds Annotations/, JPEGImages/, ImageSets/")
    xml_files = {p.stem: p for p in sorted(ann_dir.glob("*.xml"))}
    parsed = {stem: _parse_voc_xml(p) for stem, p in xml_files.items()}
    classes = sorted({obj[0] for ann in parsed.values() for obj in ann["objects"]})
    if not classes:
        raise MobileNetsError(f"{ann_dir}: no <object> in any xml file; nothing to detect")
    label_of = {c: k + 1 for k, c in enumerate(classes)}
    ids = _voc_split_ids(root, split, list(xml_files))
    images = {}
    if img_dir.is_dir():
        for p in img_dir.iterdir():
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                images.setdefault(p.stem, p)

    skipped: Counter = Counter()
    records = []
    for image_id, stem in enumerate(ids, 1):
        if stem not in parsed:
            skipped["missing annotation"] += 1
            continue
        ann = parsed[stem]
        named = img_dir / ann["filename"] if ann["filename"] else None
        path = named if named is not None and named.exists() else images.get(stem)
        if path is None:
            skipped["missing image"] += 1
            continue
        width, height = ann["size"] or image_size(str(path))
        objects = ann["objects"]
        records.append(
            make_record(
                str(path),
                image_id,
                width,
                height,
                [box for _, box, _ in objects],
                [label_of[name] for name, _, _ in objects],
                [difficult for _, _, difficult in objects],
                None,
                skipped,
            )
        )
    if ids and not records:
        raise MobileNetsError(
            f"{root}: none of the {len(ids)} images of the {split} split were found in JPEGImages/ (e.g. {ids[0]}); "
            "check the VOC root"
        )
    return DetectionDataset(root.name, split, root, classes, list(range(1, len(classes) + 1)), records, skipped)


def _voc_split_ids(root: Path, split: str, all_ids: list[str]) -> list[str]:
    sets = root / "ImageSets" / "Main"
    if not sets.is_dir():
        if split == "test":
            raise MobileNetsError(
                f"{root}: no ImageSets/Main folder to name a test split; write ImageSets/Main/test.txt (one image id "
                "a line) or pass a separate test set"
            )
        return all_ids
    if split == "train":
        names = ["trainval", "train"] if (sets / "test.txt").exists() else ["train", "trainval"]
    else:
        names = ["test", "val"]
    for name in names:
        f = sets / f"{name}.txt"
        if f.exists():
            lines = f.read_text(encoding="utf-8").split("\n")
            return [line.split()[0] for line in lines if line.strip()]
    raise MobileNetsError(f"{sets}: no {' or '.join(n + '.txt' for n in names)} for the {split} split; add one")


def _parse_voc_xml(path: Path) -> dict:
    """{"filename", "size": (w, h) or None, "objects": [(name, (x1, y1, x2, y2), difficult)]}."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        line, col = e.position
        raise MobileNetsError(f"{path}: malformed XML (line {line}, column {col}); fix or re-export the file") from None
    node = tree.getroot()

    def number(parent, tag: str, where: str) -> float:
        text = parent.findtext(tag)
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise MobileNetsError(f"{path}: {where} has <{tag}> {text!r}, not a number; fix the file") from None
        if not math.isfinite(value):
            raise MobileNetsError(f"{path}: {where} has <{tag}> {text!r}, not a finite number; fix the file")
        return value

    size = None
    if node.find("size") is not None and (node.findtext("size/width") or "0").strip() not in ("", "0"):
        size = (int(number(node.find("size"), "width", "<size>")), int(number(node.find("size"), "height", "<size>")))
    objects = []
    for k, obj in enumerate(node.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise MobileNetsError(f"{path}: object {k} lacks a <name> or a <bndbox>; fix the file")
        where = f"object {k} ({name})"
        x1, y1, x2, y2 = (number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name, (x1 - 1, y1 - 1, x2, y2), difficult))
    return {"filename": (node.findtext("filename") or "").strip(), "size": size, "objects": objects}


# ----------------------------------------------------------------------------------------------------
# YOLO (Ultralytics layout)


def load_yolo(root: str | os.PathLike, split: str) -> DetectionDataset:
    """Ultralytics' layout: ``root/images/<split>/*.jpg``, ``root/labels/<split>/<stem>.txt`` with one
    ``class cx cy w h`` line per object (normalized to [0, 1]); "test" reads the test split, else val. Class names
    come from ``root/data.yaml`` (``names:`` as a list or an {index: name} mapping) or ``root/classes.txt`` (one a
    line). An image without a label file is a negative."""
    root = Path(root)
    sub = "train" if split == "train" else ("test" if (root / "images" / "test").is_dir() else "val")
    img_dir, label_dir = root / "images" / sub, root / "labels" / sub
    if not img_dir.is_dir():
        raise MobileNetsError(
            f"{root}: no images/{sub} folder for the {split} split; a YOLO root holds images/<split>/ and "
            "labels/<split>/ (train, and test or val)"
        )
    classes = _yolo_names(root)
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise MobileNetsError(f"{img_dir}: no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    skipped: Counter = Counter()
    records = []
    for image_id, path in enumerate(files, 1):
        width, height = image_size(str(path))
        boxes, labels = [], []
        label_file = label_dir / f"{path.stem}.txt"
        if label_file.exists():
            for line_no, line in enumerate(label_file.read_text(encoding="utf-8").split("\n"), 1):
                if not line.strip():
                    continue
                k, cx, cy, w, h = _yolo_line(label_file, line_no, line, len(classes))
                boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
                labels.append(k + 1)
        records.append(
            make_record(str(path), image_id, width, height, boxes, labels, [False] * len(boxes), None, skipped)
        )
    return DetectionDataset(root.name, split, root, classes, list(range(1, len(classes) + 1)), records, skipped)


def _yolo_line(path: Path, line_no: int, line: str, num_names: int) -> tuple[int, float, float, float, float]:
    fields = line.split()
    where = f"{path}, line {line_no}"
    if len(fields) != 5:
        raise MobileNetsError(
            f"{where}: {len(fields)} fields in {line.strip()!r}; a YOLO box line is 'class cx cy w h' (5 fields)"
        )
    try:
        k = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        raise MobileNetsError(
            f"{where}: {line.strip()!r} is not 'class cx cy w h' (an integer and 4 numbers)"
        ) from None
    if not all(math.isfinite(v) for v in (cx, cy, w, h)):
        raise MobileNetsError(f"{where}: {line.strip()!r} holds a non-finite number; fix the line")
    if not 0 <= k < num_names:
        raise MobileNetsError(
            f"{where}: class index {k} but the dataset names {num_names} classes (0..{num_names - 1}); fix the label "
            "or add the class name to data.yaml"
        )
    return k, cx, cy, w, h


def _yolo_names(root: Path) -> list[str]:
    if (root / "data.yaml").exists():
        path = root / "data.yaml"
        text = path.read_text(encoding="utf-8")
        try:
            import yaml
        except ImportError:
            names = _yaml_names(text)
        else:
            try:
                names = (yaml.safe_load(text) or {}).get("names")
            except (yaml.YAMLError, AttributeError) as e:
                raise MobileNetsError(f"{path}: not a YAML mapping ({str(e).splitlines()[0]}); fix the file") from None
        if isinstance(names, dict):
            try:
                names = {int(k): v for k, v in names.items()}
            except (TypeError, ValueError):
                raise MobileNetsError(f"{path}: 'names' keys must be class indices 0, 1, ...") from None
            if sorted(names) != list(range(len(names))):
                raise MobileNetsError(f"{path}: 'names' indices must be 0..{len(names) - 1} without gaps")
            names = [names[k] for k in range(len(names))]
        if not isinstance(names, list) or not names:
            raise MobileNetsError(f"{path}: no 'names:' list of class names; add one (names: [cat, dog])")
        return [str(n) for n in names]
    if (root / "classes.txt").exists():
        names = [line.strip() for line in (root / "classes.txt").read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
        if names:
            return names
    raise MobileNetsError(f"{root}: no class names; write data.yaml (names: [cat, dog]) or classes.txt (one a line)")


def _yaml_names(text: str) -> list[str] | dict[int, str] | None:
    """``names:`` from a data.yaml without PyYAML, in its two common forms: a flow list (``names: [a, 'b']``) or
    a block of ``- name`` or ``index: name`` lines."""

    def unquote(s: str) -> str:
        s = s.strip()
        return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s

    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not m:
            continue
        rest = m.group(1)
        if rest.startswith("["):
            body = rest[1 : rest.rindex("]")] if "]" in rest else rest[1:]
            return [unquote(s) for s in re.findall(r"""'[^']*'|"[^"]*"|[^,]+""", body) if s.strip()]
        items: list[str] = []
        mapping: dict[int, str] = {}
        for block in lines[i + 1 :]:
            if not block.strip() or block.lstrip().startswith("#"):
                continue
            if not block[0].isspace() and not block.startswith("-"):
                break
            entry = block.split(" #")[0].strip()
            if entry.startswith("-"):
                items.append(unquote(entry[1:]))
            elif ":" in entry:
                k, v = entry.split(":", 1)
                if k.strip().isdigit():
                    mapping[int(k)] = unquote(v)
        return mapping or items or None
    return None


# ----------------------------------------------------------------------------------------------------
# By spec


def is_detection_spec(spec: str) -> bool:
    """Whether ``spec`` names a detection dataset (coco:, voc:, yolo:, composite[:DIR])."""
    spec = str(spec)
    return spec.lower() == "composite" or spec.split(":", 1)[0].lower() in SPEC_PREFIXES and ":" in spec


def load_detection_dataset(spec: str, split: str, *, max_samples: int | None = None, seed: int = 0) -> DetectionDataset:
    """Load a split of a detection dataset named by ``spec``.

    Args:
        spec: ``coco:ANNOTATIONS.json:IMAGES_DIR`` (that file, whichever split is asked), ``coco:DIR`` (DIR holds
            train.json and test.json or val.json; file names relative to DIR/images, else DIR), ``voc:ROOT``,
            ``yolo:ROOT``, ``composite`` (the built-in composite set in :func:`composite.default_dir`, written on
            first use) or ``composite:DIR`` (the same, in DIR).
        split: "train" or "test".
        max_samples: keep a random subset of this many images, fixed by ``seed``; None keeps all.
    """
    if split not in SPLITS:
        raise MobileNetsError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if max_samples is not None and max_samples < 1:
        raise MobileNetsError(f"max_samples must be >= 1, got {max_samples}")
    spec = str(spec)
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind not in SPEC_PREFIXES or (kind != "composite" and not rest):
        raise MobileNetsError(f"unknown detection dataset {spec!r}; the accepted forms: {SPEC_FORMS}")
    if kind == "composite":
        from mobilenets.data import composite

        folder = composite.ensure_composite(Path(rest).expanduser() if rest else composite.default_dir())
        ds = load_coco(folder / f"{split}.json", folder / "images", split)
        ds.name = "composite"
    elif kind == "coco":
        ds = _load_coco_spec(spec, rest, split)
    else:
        root = _existing(spec, rest)
        ds = load_voc(root, split) if kind == "voc" else load_yolo(root, split)
        ds.name = spec
    if max_samples is not None and max_samples < len(ds):
        g = torch.Generator().manual_seed(seed)
        ds = ds.subset(torch.randperm(len(ds), generator=g)[:max_samples].sort().values.tolist())
    return ds


def _existing(spec: str, path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MobileNetsError(f"{spec}: {p} does not exist; the accepted forms: {SPEC_FORMS}")
    return p


def _load_coco_spec(spec: str, rest: str, split: str) -> DetectionDataset:
    cut = rest.lower().find(".json:")
    if cut >= 0:
        ann, images = _existing(spec, rest[: cut + 5]), _existing(spec, rest[cut + 6 :])
    elif rest.lower().endswith(".json"):
        raise MobileNetsError(f"{spec}: name the images folder too: coco:{rest}:IMAGES_DIR")
    else:
        folder = _existing(spec, rest)
        names = ["train"] if split == "train" else ["test", "val"]
        found = [folder / f"{n}.json" for n in names if (folder / f"{n}.json").exists()]
        if not found:
            raise MobileNetsError(
                f"{spec}: no {' or '.join(n + '.json' for n in names)} in {folder} for the {split} split; "
                f"or name the file: coco:ANNOTATIONS.json:IMAGES_DIR"
            )
        # File names are relative to DIR/images, or to DIR itself (e.g. "images/0001.jpg").
        ann, images = found[0], [folder / "images", folder] if (folder / "images").is_dir() else folder
    ds = load_coco(ann, images, split)
    ds.name = spec
    return ds


# ----------------------------------------------------------------------------------------------------
# Training data: seeded torchvision v2 transforms


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of one sample's augmentation, fixed by (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(1, np.uint64)[0])


class TransformedDetection(torch.utils.data.Dataset):
    """A :class:`DetectionDataset` through a v2 ``transform``: items are (float32 image in [0, 1] (3, h, w),
    {"boxes": float32 (N, 4) XYXY, "labels": int64 (N,), "image_id": int}) with plain tensors.

    Each item's random draws come from the global torch RNG seeded by (seed, epoch, index) inside
    ``torch.random.fork_rng`` (the caller's RNG is untouched): the same pixels whatever the DataLoader workers,
    so a resumed run replays them exactly. Call :meth:`set_epoch` before each epoch's DataLoader is made
    (persistent workers keep the copy of the dataset, and the epoch, that they started with).
    """

    def __init__(self, dataset: DetectionDataset, transform: Callable, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image, target = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            image, target = self.transform(image, target)
        image = image.as_subclass(torch.Tensor)
        if not image.is_floating_point():
            image = image.float() / 255
        return image, {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"].as_subclass(torch.Tensor).long(),
            "image_id": target["image_id"],
        }


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise MobileNetsError(f"size must be an int or (height, width), got {size!r}")
    return hw


def train_transform(size: int | Sequence[int], policy: str = "ssd") -> v2.Compose:
    """torchvision's detection training recipe (references/detection/presets.py), resized to the detector's input.

    ``policy="ssd"``: photometric distortion, zoom out (a canvas up to 4× the side, filled with the mean color:
    small objects for the small-object maps), an IoU-constrained random crop and a flip (the SSD paper's
    augmentation). ``"ssdlite"``: the crop and flip only (torchvision's SSDLite recipe). The images are then
    resized to ``size`` (an int or (height, width)): SSD resizes its input anyway, and resizing here keeps batches
    small. Boxes left degenerate by the crop are removed with their labels.
    """
    if policy not in ("ssd", "ssdlite"):
        raise MobileNetsError(f"unknown augmentation policy {policy!r}; choose ssd or ssdlite")
    steps: list = []
    if policy == "ssd":
        steps += [v2.RandomPhotometricDistort(p=0.5), v2.RandomZoomOut(fill={tv_tensors.Image: SSD_FILL, "others": 0})]
    steps += [
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(),
        v2.Resize(_hw(size), antialias=True),
        v2.SanitizeBoundingBoxes(),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)


def eval_transform(size: int | Sequence[int]) -> v2.Compose:
    """Resize to ``size`` (an int or (height, width)) and scale to float32 [0, 1]: no randomness."""
    return v2.Compose([v2.Resize(_hw(size), antialias=True), v2.ToDtype(torch.float32, scale=True)])


def detection_collate(batch: list) -> tuple[list, list]:
    """DataLoader collate for detection: images of different sizes stay a list, as torchvision's detectors take."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
