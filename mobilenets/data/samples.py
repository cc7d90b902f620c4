"""Folders of real photos written on the spot, for the README's walk-through, the tests and the benchmarks
(nothing is downloaded)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path

SAMPLE_PHOTO_CLASSES = ("cat", "coffee", "flower")


def sample_photo_folder(
    root: str | os.PathLike, train_per_class: int = 12, test_per_class: int = 6, size: int = 96, seed: int = 0
) -> Path:
    """Write ``root/{train,test}/{cat,coffee,flower}/*.jpg``: random square crops of real photos.

    The photos are scikit-image's ``chelsea`` (a cat) and ``coffee`` (a cup) and scikit-learn's ``flower.jpg``.
    Crops cover 50–90% of the shorter side, half of them mirrored, resized to ``size`` px. Train and test crops
    are drawn with different seeds but from the same three photos: a walk-through, not a benchmark.
    """
    from PIL import Image

    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise MobileNetsError(
            f"sample photos need scikit-image and scikit-learn ({e}); pip install scikit-image"
        ) from None
    samples = load_sample_images()
    flower = next(img for f, img in zip(samples.filenames, samples.images) if "flower" in f)
    photos = dict(zip(SAMPLE_PHOTO_CLASSES, (skimage.data.chelsea(), skimage.data.coffee(), flower)))
    root = Path(root)
    for split, count, split_seed in (("train", train_per_class, seed), ("test", test_per_class, seed + 1)):
        rng = np.random.default_rng(split_seed)
        for name, photo in photos.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            h, w = photo.shape[:2]
            for i in range(count):
                side = int(min(h, w) * rng.uniform(0.5, 0.9))
                top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = Image.fromarray(photo[top : top + side, left : left + side, :3])
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                crop.resize((size, size), Image.BILINEAR).save(folder / f"{name}_{i:03d}.jpg", quality=90)
    return root


def source_photos() -> list[np.ndarray]:
    """The real photos at hand: the bundled ones, scikit-learn's two samples, scikit-image's when installed."""
    from importlib.resources import files

    from PIL import Image

    photos = []
    for name in ("chelsea.jpg", "coffee.jpg"):
        with Image.open(files("mobilenets") / "assets" / name) as im:
            photos.append(np.asarray(im.convert("RGB")))
    from sklearn.datasets import load_sample_images

    photos += list(load_sample_images().images)
    try:
        import skimage.data as sd

        photos += [sd.astronaut(), sd.rocket()]
    except ImportError:  # scikit-image is a dev extra
        pass
    return photos


def write_photo_folder(
    root,
    num_images: int,
    num_classes: int = 3,
    size: tuple[int, int] = (500, 375),
    quality: int = 90,
    seed: int = 0,
) -> list[str]:
    """Write ``root/class_<k>/<i>.jpg``: ``num_images`` re-encoded W × H crops of real photos.

    Each image is a random crop (60–100% of the photo's side, the output's aspect ratio) of one of
    :func:`source_photos`, resized to ``size`` and randomly mirrored; photo i goes to class i % num_classes.
    Returns the paths written, in order.
    """
    from PIL import Image

    root = Path(root)
    photos = source_photos()
    rng = np.random.default_rng(seed)
    w_out, h_out = size
    jobs = []  # every random draw made here, in order, so the threads' scheduling changes nothing
    for i in range(num_images):
        k = i % len(photos)
        h, w = photos[k].shape[:2]
        cw = min(w, h * w_out / h_out) * rng.uniform(0.6, 1.0)
        ch = cw * h_out / w_out
        x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
        path = root / f"class_{k % num_classes}" / f"{i:06d}.jpg"
        jobs.append((k, (x0, y0, x0 + cw, y0 + ch), rng.random() < 0.5, path))
    for folder in sorted({job[3].parent for job in jobs}):
        folder.mkdir(parents=True, exist_ok=True)

    def write(job) -> str:
        k, box, mirror, path = job
        im = Image.fromarray(photos[k]).resize((w_out, h_out), Image.BILINEAR, box=box)
        if mirror:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        with atomic_path(path) as tmp:  # never a half-written JPEG under its real name
            im.save(tmp, "JPEG", quality=quality)
        return str(path)

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # PIL releases the GIL while it works
        return list(pool.map(write, jobs))
