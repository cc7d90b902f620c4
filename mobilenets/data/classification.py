"""Classification datasets: Fashion-MNIST (IDX), scikit-learn's digits, CIFAR, any ImageFolder.

Two kinds of dataset, both yielding uint8 (N, C, H, W) images and int64 labels:
- :class:`ArrayDataset`: the whole split in memory (Fashion-MNIST, digits, CIFAR); batches are slices.
- :class:`ImageFolderDataset`: files on disk, decoded by DataLoader workers; unreadable files are
  skipped, counted and reported (:class:`BadFiles`), never fatal unless nothing at all is readable.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilenets.errors import MobileNetsError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Per-channel mean/std of the training images in [0, 1] (used to normalize batches).
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLITS = ("train", "test")
BUILTIN = ("fashion-mnist", "digits")


# ----------------------------------------------------------------------------------------------------
# Dataset types


@dataclass
class ArrayDataset:
    """A whole split held in memory as uint8 images (N, C, H, W) and int64 labels (N,)."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise MobileNetsError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise MobileNetsError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        check_classes_present(self.labels, self.classes, f"{self.name} ({self.split})")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def to(self, device: torch.device | str) -> ArrayDataset:
        """The same data on ``device`` (a GPU-resident copy keeps a fast GPU from waiting on the loader)."""
        return ArrayDataset(
            self.name, self.split, self.images.to(device), self.labels.to(device), self.classes, self.mean, self.std
        )

    def subset(self, max_samples: int | None, seed: int = 0) -> ArrayDataset:
        """At most ``max_samples`` images, a class-balanced random choice fixed by ``seed``."""
        if max_samples is None or max_samples >= len(self):
            return self
        idx = balanced_subset(self.labels, max_samples, seed)
        return ArrayDataset(
            self.name, self.split, self.images[idx], self.labels[idx], self.classes, self.mean, self.std
        )


@dataclass
class BadFiles:
    """Files that could not be read: counted per epoch and reported with the first few paths."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, paths: Sequence[str], keep: int = 5) -> None:
        self.count += len(paths)
        for p in paths:
            if len(self.examples) < keep:
                self.examples.append(p)

    def message(self) -> str:
        more = ", ..." if self.count > len(self.examples) else ""
        return f"skipped {self.count} unreadable image file(s): {', '.join(self.examples)}{more}"


class ImageFolderDataset(torch.utils.data.Dataset):
    """A torchvision-style ImageFolder tree (``root/<class>/<image>``) decoded lazily.

    Each item is a uint8 tensor (C, S, S): the image's shorter side resized to ``image_size`` and
    center-cropped to a square. A file that cannot be decoded (corrupt, truncated, 0 bytes) yields
    ``None`` and is skipped by :func:`collate_skip_bad`.
    """

    def __init__(self, root: str | os.PathLike, split: str, image_size: int, in_chans: int = 3):
        from torchvision.datasets.folder import find_classes

        self.name = str(root)
        self.split = split
        self.image_size = image_size
        self.in_chans = in_chans
        root = Path(root)
        try:
            classes, class_to_idx = find_classes(str(root))
        except FileNotFoundError as e:
            raise MobileNetsError(
                f"{root}: no class folders found ({e}); expected root/<class>/<image files>"
            ) from None
        self.classes = classes
        samples = []
        empty = []
        for name in classes:
            files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                empty.append(name)
            samples += [(str(p), class_to_idx[name]) for p in files]
        if empty:
            raise MobileNetsError(
                f"{root}: class folder(s) with no image files: {', '.join(empty[:5])}; add images "
                f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...) or remove the folder"
            )
        self.samples = samples
        self.labels = torch.tensor([y for _, y in samples], dtype=torch.long)
        self.mean, self.std = IMAGENET_STATS if in_chans == 3 else ((0.5,) * in_chans, (0.5,) * in_chans)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str] | tuple[None, int, str]:
        path, label = self.samples[index]
        try:
            return self.load(path), label, path
        except Exception:  # noqa: BLE001 - any decoding failure means "unreadable file"
            return None, label, path

    def load(self, path: str) -> torch.Tensor:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if self.in_chans == 1 else "RGB")
            w, h = im.size
            scale = self.image_size / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
            im = im.crop((left, top, left + self.image_size, top + self.image_size))
            arr = np.asarray(im, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def subset(self, max_samples: int | None, seed: int = 0) -> ImageFolderDataset:
        if max_samples is None or max_samples >= len(self):
            return self
        idx = balanced_subset(self.labels, max_samples, seed).tolist()
        out = object.__new__(ImageFolderDataset)
        out.__dict__.update(self.__dict__)
        out.samples = [self.samples[i] for i in idx]
        out.labels = self.labels[idx]
        return out

    def check_readable(self, probe: int = 64) -> None:
        """Fail early when none of the first ``probe`` files (in a fixed spread) decode at all."""
        step = max(1, len(self) // probe)
        for i in range(0, len(self), step):
            if self[i][0] is not None:
                return
        raise MobileNetsError(
            f"{self.name}: none of the {len(range(0, len(self), step))} image files probed could be decoded "
            f"(e.g. {self.samples[0][0]}); the dataset has no readable images"
        )


def collate_skip_bad(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """DataLoader collate: stack the readable images, return the paths of the unreadable ones."""
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad
    xs, ys = zip(*good)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long), bad


Dataset = ArrayDataset | ImageFolderDataset


# ----------------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    name_or_path: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> Dataset:
    """Load a split of a dataset by name or path.

    Args:
        name_or_path: "fashion-mnist" (IDX files from ``data_dir`` or /usr/share/datasets/fashion-mnist),
            "digits" (scikit-learn's 1,797 8×8 digits; a fixed stratified 75/25 train/test split), a CIFAR
            python-pickle folder (``cifar-10-batches-py`` / ``cifar-100-python``), or an ImageFolder root
            (``root/<class>/*.jpg``; ``root/train`` and ``root/test`` or ``root/val`` are used when present).
        split: "train" or "test".
        max_samples: keep at most this many images (class-balanced, fixed by ``seed``); None keeps all.
        image_size: ImageFolder only: the side images are decoded to (default 224).
        in_chans: ImageFolder only: 3 (RGB, default) or 1 (grayscale).
    """
    if split not in SPLITS:
        raise MobileNetsError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if max_samples is not None and max_samples < 1:
        raise MobileNetsError(f"max_samples must be >= 1, got {max_samples}")
    key = str(name_or_path).lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist"):
        ds: Dataset = load_fashion_mnist(split, data_dir)
    elif key == "digits":
        ds = load_digits(split)
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise MobileNetsError(
                f"dataset {name_or_path!r} is neither a known name ({', '.join(BUILTIN)}) nor an existing path"
            )
        if is_cifar_dir(path):
            ds = load_cifar(path, split)
        else:
            ds = load_image_folder(path, split, image_size or 224, in_chans or 3)
    return ds.subset(max_samples, seed)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format, optionally gzipped) into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise MobileNetsError(f"{path}: cannot read IDX file ({e}); re-install or re-download it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise MobileNetsError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise MobileNetsError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[data[2]])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(shape) * dtype.itemsize:
        raise MobileNetsError(
            f"{path}: IDX header says {shape} but the file holds {len(body)} bytes (truncated?); re-install it"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding Fashion-MNIST's IDX files, or None when they are not installed."""
    for d in [data_dir] if data_dir else [os.environ.get("MOBILENETS_FASHION_MNIST"), FASHION_MNIST_DIR]:
        if d and any((Path(d) / f"train-labels-idx1-ubyte{ext}").exists() for ext in (".gz", "")):
            return Path(d)
    return None


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> ArrayDataset:
    root = fashion_mnist_dir(data_dir)
    if root is None:
        where = data_dir or FASHION_MNIST_DIR
        raise MobileNetsError(
            f"Fashion-MNIST not found in {where}: install it with `sudo apt-get install dataset-fashion-mnist` "
            "(or `make data`), pass --data DIR holding the four IDX files, or use --dataset digits"
        )
    prefix = "train" if split == "train" else "t10k"

    def find(stem: str) -> Path:
        for name in (f"{prefix}-{stem}.gz", f"{prefix}-{stem}"):
            if (root / name).exists():
                return root / name
        raise MobileNetsError(f"{root}: missing {prefix}-{stem}.gz (Fashion-MNIST needs all four IDX files)")

    images = read_idx(find("images-idx3-ubyte"))
    labels = read_idx(find("labels-idx1-ubyte"))
    return ArrayDataset(
        "fashion-mnist",
        split,
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        list(FASHION_MNIST_CLASSES),
        *FASHION_MNIST_STATS,
    )


def load_digits(split: str) -> ArrayDataset:
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:  # pragma: no cover - scikit-learn is a runtime dependency
        raise MobileNetsError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)  # 0..16 → 0..255
    labels = bunch.target.astype(np.int64)
    # A fixed, stratified 75/25 split: every 4th image of each class goes to test.
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        test[np.flatnonzero(labels == c)[3::4]] = True
    keep = test if split == "test" else ~test
    x = torch.from_numpy(images[keep]).unsqueeze(1)
    mean = float(images[~test].mean() / 255)
    std = float(images[~test].std() / 255)
    classes = [str(c) for c in range(10)]
    return ArrayDataset("digits", split, x, torch.from_numpy(labels[keep]), classes, (mean,), (std,))


def is_cifar_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "data_batch_1").exists() or (path / "train").is_file())


def load_cifar(path: Path, split: str) -> ArrayDataset:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) python pickles."""

    def unpickle(p: Path) -> dict:
        try:
            with open(p, "rb") as f:
                return pickle.load(f, encoding="latin1")  # noqa: S301 - the CIFAR format is pickle
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise MobileNetsError(f"{p}: cannot read CIFAR batch ({e})") from None

    if (path / "data_batch_1").exists():
        files = [path / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [path / "test_batch"]
        files = [f for f in files if f.exists()]
        meta = unpickle(path / "batches.meta") if (path / "batches.meta").exists() else {}
        classes = meta.get("label_names") or [str(i) for i in range(10)]
        label_key = "labels"
    else:
        files = [path / ("train" if split == "train" else "test")]
        meta = unpickle(path / "meta") if (path / "meta").exists() else {}
        classes = meta.get("fine_label_names") or [str(i) for i in range(100)]
        label_key = "fine_labels"
    if not files or not files[0].exists():
        raise MobileNetsError(f"{path}: no CIFAR {split} batch found")
    xs, ys = [], []
    for f in files:
        d = unpickle(f)
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    return ArrayDataset(
        path.name,
        split,
        torch.from_numpy(np.concatenate(xs)),
        torch.from_numpy(np.concatenate(ys)),
        list(classes),
        *CIFAR10_STATS,
    )


def load_image_folder(path: Path, split: str, image_size: int, in_chans: int) -> ImageFolderDataset:
    sub = {"train": ["train"], "test": ["test", "val", "valid", "validation"]}[split]
    for name in sub:
        if (path / name).is_dir():
            root = path / name
            break
    else:
        # No split folders: the same tree serves both splits (the user asked for it by passing one root).
        root = path
    ds = ImageFolderDataset(root, split, image_size, in_chans)
    if len(ds) == 0:
        raise MobileNetsError(f"{root}: no image files found; expected root/<class>/<image files>")
    return ds


def check_classes_present(labels: torch.Tensor, classes: Sequence[str], what: str) -> None:
    if len(labels) == 0:
        raise MobileNetsError(f"{what}: the dataset is empty")
    counts = torch.bincount(labels.cpu(), minlength=len(classes))
    if len(counts) > len(classes):
        raise MobileNetsError(f"{what}: label {len(counts) - 1} is out of range for {len(classes)} classes")


def balanced_subset(labels: torch.Tensor, max_samples: int, seed: int) -> torch.Tensor:
    """Indices of ``max_samples`` items, as evenly spread over the classes as the data allows, in order."""
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    perm = torch.randperm(len(labels), generator=g)
    # Round-robin over classes in a random order: rank of each item within its class decides.
    sorted_labels = labels[perm]
    order = torch.argsort(sorted_labels, stable=True)
    rank = torch.empty_like(order)
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(len(order)) - starts[sorted_labels[order]]
    chosen = perm[torch.argsort(rank, stable=True)[:max_samples]]
    return torch.sort(chosen).values
