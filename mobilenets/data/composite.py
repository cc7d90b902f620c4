"""The composite detection set: Fashion-MNIST objects pasted onto crops of real photos, written offline.

It exists so that detection can be trained and measured end to end with nothing downloaded: real-photo
backgrounds (the project's sample photos, :func:`mobilenets.data.samples.source_photos`), real objects
(Fashion-MNIST's 28×28 garments from Debian's IDX files; scikit-learn's 8×8 digits, upscaled, when Fashion-MNIST
is not installed), and boxes that are exact by construction. Each image is a random crop of a photo resized to
``size``, with 1–4 objects (none in ~4% of the images: negatives) pasted at 24–160 px (at size 320; the range
scales with ``size``) and overlapping little (box IoU ≤ 0.25). An object's own intensity is its alpha mask, so
its box is the tight box of its nonzero pixels after scaling: the pasted pixels fill the box edge to edge.

The set is written as COCO json (``train.json``, ``test.json``, ``images/{train,test}/*.jpg``) with a README, and
is reproducible: the same seed gives byte-identical json and identical pixels (every image's random draws come
from its own generator seeded by (seed, split, index), so the threads that write them change nothing). Train
objects come from the object set's train split and test objects from its test split.

    python -m mobilenets.data.composite ~/data/composite --train 2000 --test 500
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_json, atomic_write_text

VERSION = "composite-v1"  # the cache folder's name: bump it when a change alters the pixels or the boxes
NUM_TRAIN, NUM_TEST, SIZE = 2000, 500, 320
# Object sizes: the longer side of an object's box, log-uniform in [24, 160] px at size 320.
MIN_SIDE, MAX_SIDE = 24 / 320, 160 / 320
MAX_OBJECTS = 4
EMPTY_FRACTION = 0.04  # images without objects: a detector must learn to say "nothing here"
MAX_IOU = 0.25  # between two pasted objects' boxes; placements overlapping more are redrawn
PLACEMENT_TRIES = 10
# Pixels fainter than this (of 255) are cleared after scaling, so that an object's box is the extent of what shows.
MASK_FLOOR = 16
ALPHA_GAIN = 2.0  # alpha = gain × intensity, clipped to 1: opaque garments with soft edges
JPEG_QUALITY = 95
SPLIT_CODES = {"train": 0, "test": 1}


def default_dir() -> Path:
    """Where ``load_detection_dataset("composite")`` keeps the set: $MOBILENETS_CACHE/composite-v1, else
    ~/.cache/mobilenets/composite-v1."""
    base = os.environ.get("MOBILENETS_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "mobilenets") / VERSION


def object_source(split: str, fashion: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """The objects to paste for ``split``: (uint8 images (N, h, w), int64 labels (N,), class names, source name).

    ``fashion``: Fashion-MNIST (True) or scikit-learn's digits (False); None: Fashion-MNIST when it is installed. A
    set's writer decides once for both splits, so that installing Fashion-MNIST while it writes cannot give garments
    to one split and digits to the other."""
    from mobilenets.data.classification import fashion_mnist_dir, load_digits, load_fashion_mnist

    if fashion is None:
        fashion = fashion_mnist_dir() is not None
    ds = load_fashion_mnist(split) if fashion else load_digits(split)
    return ds.images[:, 0].numpy(), ds.labels.numpy(), list(ds.classes), ds.name


def scale_object(image: np.ndarray, side: int) -> np.ndarray | None:
    """``image`` (uint8 (h, w), 0 = background) cropped to its object, resized so that its longer side is
    ``side`` px, faint pixels cleared and cropped again: a mask whose first and last rows and columns all hold
    object pixels. None when nothing is left."""
    from PIL import Image

    mask = _tight(image)
    if mask is None:
        return None
    h, w = mask.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = np.asarray(Image.fromarray(mask).resize(size, Image.BILINEAR))
    return _tight(np.where(scaled < MASK_FLOOR, 0, scaled).astype(np.uint8))


def _tight(mask: np.ndarray) -> np.ndarray | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def paste_objects(
    background: np.ndarray, masks: list[np.ndarray], labels: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, list[list[int]], list[int]]:
    """Paste each mask (from :func:`scale_object`) at a random place of ``background`` (uint8 (H, W, 3)), tinted a
    random color, alpha-blended with its intensity as alpha. Returns (image, boxes [x1, y1, x2, y2] in pixels,
    labels); an object that finds no place overlapping the others by IoU ≤ 0.25 is left out."""
    out = background.astype(np.float32)
    H, W = out.shape[:2]
    boxes: list[list[int]] = []
    kept: list[int] = []
    for mask, label in zip(masks, labels):
        h, w = mask.shape
        if h > H or w > W:
            continue
        for _ in range(PLACEMENT_TRIES):
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            box = [x, y, x + w, y + h]
            if all(_iou(box, other) <= MAX_IOU for other in boxes):
                break
        else:
            continue
        tint = rng.uniform(0.25, 0.9, size=3).astype(np.float32)  # ≤ 0.9: a garment never vanishes into white
        intensity = mask.astype(np.float32)[..., None]
        alpha = np.minimum(1.0, ALPHA_GAIN * intensity / 255)
        region = out[y : y + h, x : x + w]
        region[:] = region * (1 - alpha) + intensity * tint * alpha
        boxes.append(box)
        kept.append(label)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), boxes, kept


def _iou(a: list[int], b: list[int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _background(photos, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (35–100% of the shorter side) of a random photo, resized to ``size``, maybe mirrored."""
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = min(h, w) * rng.uniform(0.35, 1.0)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    im = Image.fromarray(photo).resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im)


def _split_images(
    folder: Path, split: str, count: int, size: int, seed: int, photos, objects, progress: bool
) -> tuple[list[dict], list[dict]]:
    """Write ``count`` images of ``split`` into ``folder/images/split``: their COCO image and annotation entries."""
    from PIL import Image
    from tqdm.auto import tqdm

    images, labels = objects
    (folder / "images" / split).mkdir(parents=True)
    lo, hi = math.log(MIN_SIDE * size), math.log(MAX_SIDE * size)

    def make(i: int) -> tuple[dict, list[dict]]:
        rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
        background = _background(photos, rng, size)
        n = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
        masks, classes = [], []
        for _ in range(n):
            k = int(rng.integers(len(images)))
            mask = scale_object(images[k], max(2, round(math.exp(rng.uniform(lo, hi)))))
            if mask is not None:
                masks.append(mask)
                classes.append(int(labels[k]) + 1)
        pixels, boxes, kept = paste_objects(background, masks, classes, rng)
        file_name = f"{split}/{i + 1:06d}.jpg"
        Image.fromarray(pixels).save(folder / "images" / file_name, "JPEG", quality=JPEG_QUALITY)
        image = {"id": i + 1, "file_name": file_name, "width": size, "height": size}
        anns = [
            {
                "image_id": i + 1,
                "category_id": c,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
            for (x1, y1, x2, y2), c in zip(boxes, kept)
        ]
        return image, anns

    entries, annotations = [], []
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # numpy and PIL release the GIL
        results = pool.map(make, range(count))
        for image, anns in tqdm(results, total=count, desc=f"composite {split}", disable=not progress, leave=False):
            entries.append(image)
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, **ann})
    return entries, annotations


def write_composite(
    out_dir: str | os.PathLike,
    *,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    size: int = SIZE,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the composite set into ``out_dir`` (which must not exist, or be empty): ``images/{train,test}/*.jpg``,
    ``train.json`` and ``test.json`` (COCO format, categories 1..10), and a README saying how it was made.

    The folder appears complete or not at all: everything is written into a temporary folder beside it, which is
    then renamed. If another process finished the same folder first, its copy is kept.
    """
    from mobilenets.data.classification import fashion_mnist_dir
    from mobilenets.data.samples import source_photos

    out = Path(out_dir).expanduser()
    if num_train < 1 or num_test < 1:
        raise MobileNetsError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if size < 32:
        raise MobileNetsError(f"size must be >= 32 px (objects are at least 24 px at 320), got {size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MobileNetsError(f"{out} already exists and is not an empty folder; delete it or choose another")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise MobileNetsError(f"cannot write {out} ({e}); choose a writable folder") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
        photos = source_photos()
        counts, source, classes = {}, "", []
        fashion = fashion_mnist_dir() is not None  # once: both splits take their objects from the same set
        for split, count in (("train", num_train), ("test", num_test)):
            images, labels, classes, source = object_source(split, fashion)
            entries, annotations = _split_images(tmp, split, count, size, seed, photos, (images, labels), progress)
            counts[split] = (len(entries), len(annotations), len(entries) - len({a["image_id"] for a in annotations}))
            coco = {
                "info": {
                    "description": f"mobilenets composite detection set ({source} on photos)",
                    "version": VERSION,
                    "seed": seed,
                    "size": size,
                    "objects": source,
                    "photos": len(photos),
                },
                "images": entries,
                "annotations": annotations,
                "categories": [{"id": k + 1, "name": name, "supercategory": source} for k, name in enumerate(classes)],
            }
            atomic_write_json(tmp / f"{split}.json", coco)
        atomic_write_text(tmp / "README.md", _readme(out, source, classes, len(photos), counts, size, seed))
        try:
            os.rename(tmp, out)  # atomic; replaces an empty folder
        except OSError:
            if not is_complete(out):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process wrote it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _objects(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("info", {}).get("objects")
    except (OSError, ValueError, AttributeError):
        return None  # load_coco says what is wrong with the file


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("train.json", "test.json", "README.md"))


def ensure_composite(folder: str | os.PathLike) -> Path:
    """``folder`` holding the composite set, written there with the default counts on first use."""
    folder = Path(folder).expanduser()
    if is_complete(folder):
        objects = {split: _objects(folder / f"{split}.json") for split in ("train", "test")}
        if objects["train"] != objects["test"]:  # written by a version that chose the objects per split
            raise MobileNetsError(
                f"{folder} mixes objects ({objects['train']} in train, {objects['test']} in test); delete it and it "
                "is written again on next use"
            )
        return folder
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise MobileNetsError(
            f"{folder} exists but holds no composite set (no train.json, test.json, README.md); delete it, or pass "
            "composite:DIR with another folder"
        )
    print(f"writing the composite detection set into {folder} (once)", file=sys.stderr)
    return write_composite(folder)


def _readme(out: Path, source: str, classes, num_photos: int, counts: dict, size: int, seed: int) -> str:
    objects = (
        "Fashion-MNIST's 28×28 garments (Debian's dataset-fashion-mnist IDX files)."
        if source == "fashion-mnist"
        else "scikit-learn's 8×8 digits, upscaled: Fashion-MNIST was not installed when this\n  was written "
        "(`apt-get install dataset-fashion-mnist`, then delete this folder to regenerate it with garments)."
    )
    rows = "\n".join(f"| {split} | {n} | {boxes} | {empty} |" for split, (n, boxes, empty) in counts.items())
    return f"""# Composite detection set ({VERSION})

A synthetic detection set made offline by `mobilenets.data.composite`: **not real photos of objects**, but real
objects pasted onto crops of real photos, with exact boxes.

- Objects: {objects}
- Classes (COCO category ids 1..{len(classes)}): {", ".join(classes)}.
- Train images take their objects from the object set's train split, test images from its test split.
- Backgrounds: random crops of {num_photos} real photos (the sample photos bundled with mobilenets, scikit-learn's
  and scikit-image's), resized to {size}×{size} and randomly mirrored.
- Per image: 1–{MAX_OBJECTS} objects ({100 * EMPTY_FRACTION:.0f}% of images have none), each scaled so its box's
  longer side is {MIN_SIDE * size:.0f}–{MAX_SIDE * size:.0f} px (log-uniform), tinted a random color and
  alpha-blended with its own intensity as the mask; pasted objects overlap by box IoU ≤ {MAX_IOU}.
- Boxes: the tight box of each object's pixels after scaling (COCO [x, y, width, height], in pixels).
- JPEG quality {JPEG_QUALITY}. Seed {seed}: the same seed gives byte-identical json and identical pixels.

| split | images | boxes | images without objects |
|---|---|---|---|
{rows}

Regenerate it with:

    python -m mobilenets.data.composite {out} --train {counts["train"][0]} --test {counts["test"][0]} \\
        --size {size} --seed {seed}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mobilenets.data.composite",
        description="Write the composite detection set (Fashion-MNIST objects on real photos, COCO json).",
        epilog="example:\n  python -m mobilenets.data.composite ~/data/composite --train 2000 --test 500 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", help="folder to create (must not exist, or be empty)")
    parser.add_argument("--train", type=int, default=NUM_TRAIN, help=f"train images (default {NUM_TRAIN})")
    parser.add_argument("--test", type=int, default=NUM_TEST, help=f"test images (default {NUM_TEST})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"image side in px (default {SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        out = write_composite(args.out_dir, num_train=args.train, num_test=args.test, size=args.size, seed=args.seed)
    except MobileNetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
