"""Real images for int8 calibration and for verification: photo crops (3 channels) or Fashion-MNIST (1)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from mobilenets.data import FASHION_MNIST_STATS, IMAGENET_STATS, load_fashion_mnist
from mobilenets.deps import require
from mobilenets.errors import MobileNetsError


def fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images (N, 1, 28, 28) uint8 and labels (N,), read by :mod:`mobilenets.data`."""
    ds = load_fashion_mnist(split, data_dir)
    return ds.images, ds.labels


def normalize(
    images: torch.Tensor, resolution: int, stats: tuple[tuple[float, ...], tuple[float, ...]]
) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 resized to ``resolution`` and normalized with (mean, std)."""
    x = images.float() / 255
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    return (x - mean) / std


def _photos() -> list[np.ndarray]:
    skimage_data = require("skimage.data", "real photos for verification (scikit-image)")
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut(), skimage_data.rocket()]
    try:
        from sklearn.datasets import load_sample_images

        photos += list(load_sample_images().images)
    except ImportError:
        pass
    return [p[..., :3] for p in photos]


def photo_crops(
    n: int, resolution: int, seed: int = 0, stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS
) -> torch.Tensor:
    """``n`` normalized crops (N, 3, R, R) of real photos (scikit-image's and scikit-learn's sample photos).

    Crops cover 35–100% of the shorter side at random positions, half of them mirrored, normalized with
    ``stats`` (mean, std; ImageNet's by default, (0.5, 0.5) for TF-slim weights). Different seeds give
    different crops: calibration and verification use different ones.
    """
    photos = _photos()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = torch.from_numpy(photos[i % len(photos)].copy()).permute(2, 0, 1)
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.35 + 0.65 * torch.rand(1, generator=g).item())) if i >= len(photos) else min(h, w)
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = img[:, top : top + side, left : left + side]
        if torch.rand(1, generator=g).item() < 0.5 and i >= len(photos):
            crop = crop.flip(-1)
        out.append(normalize(crop.unsqueeze(0), resolution, stats))
    return torch.cat(out)


def real_images(
    n: int,
    in_chans: int,
    resolution: int,
    split: str = "test",
    seed: int = 0,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> torch.Tensor:
    """``n`` real images a model of ``in_chans`` channels can take: photos (3) or Fashion-MNIST (1).

    ``split="train"`` is for calibration (Fashion-MNIST's training set; photo crops with another seed),
    ``split="test"`` for verification. ``stats`` (mean, std) is the normalization the model was trained
    with; by default ImageNet's for photos and Fashion-MNIST's own for 1-channel images.
    """
    if n < 1:
        raise MobileNetsError(f"the number of images must be >= 1, got {n}")
    if in_chans == 3:
        return photo_crops(n, resolution, seed=seed + (1000 if split == "train" else 0), stats=stats or IMAGENET_STATS)
    if in_chans == 1:
        images, _ = fashion_mnist(split)
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        return normalize(images[idx], resolution, stats or FASHION_MNIST_STATS)
    raise MobileNetsError(
        f"no built-in real images for in_chans={in_chans} (photos have 3 channels, Fashion-MNIST 1): "
        "pass the images yourself (calib_images= / verify_images=)"
    )


def calibrate_bn(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """``model`` (in eval mode) with its BatchNorm statistics measured on ``images`` instead of left at (0, 1).

    A randomly initialized network with fresh BN statistics has nearly constant logits, which makes int8
    calibration and top-1 agreement meaningless; one pass over real images gives it realistic activations.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the pass
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()
