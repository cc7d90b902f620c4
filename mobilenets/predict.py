"""Classify image files with pretrained weights: decode, preprocess exactly as the weights expect, top-k.

Decoding accepts whatever Pillow reads (JPEG, PNG, GIF, BMP, TIFF, WebP) in any mode: grayscale is
replicated to RGB, CMYK converted, transparency composited over white, 16-bit scaled to 8-bit, EXIF
rotation applied. A file that cannot be decoded gives an error for that file only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilenets.errors import MobileNetsError
from mobilenets.weights import ModelCard, Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ASSETS = Path(__file__).parent / "assets"


def bundled_images() -> list[Path]:
    """The demo photos shipped with the package (scikit-image's CC0 ``chelsea`` cat and ``coffee`` cup)."""
    return sorted(p for p in ASSETS.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class Prediction:
    """Top-k classes of one file, or the one-line reason it could not be classified."""

    path: str
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (class index, name, probability)
    error: str | None = None

    def to_dict(self) -> dict:
        d: dict = {"path": self.path}
        if self.error is not None:
            d["error"] = self.error
        else:
            d["top"] = [{"index": i, "name": n, "prob": p} for i, n, p in self.top]
        return d


def expand_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and each directory's image files (sorted, not recursive), in argument order.

    A path that does not exist is kept, so that it is reported as an error in its place.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3); MobileNetsError if it is not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise MobileNetsError("no such file")
    if path.is_dir():
        raise MobileNetsError("is a directory")
    if path.stat().st_size == 0:
        raise MobileNetsError("empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated data fails here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise MobileNetsError("not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MobileNetsError(f"cannot decode image ({reason})") from None


def _to_rgb(img) -> np.ndarray:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        peak = a.max() if a.size else 0.0
        top = 65535.0 if img.mode.startswith("I;16") or peak > 255 else 1.0 if img.mode == "F" and peak <= 1 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":  # composite transparent pixels over white, not over whatever RGB they hide
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def tf_resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)``: source = dest · (in/out), no half-pixel offset.

    This is what TF-slim's evaluation preprocessing used, so Google's MobileNetV1 numbers were measured on it.
    """
    in_h, in_w = image.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(height, in_h)
    x0, x1, fx = axis(width, in_w)
    img = image.astype(np.float32)
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * fx[None, :, None]
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * fx[None, :, None]
    return top + (bottom - top) * fy[:, None, None]


def tf_central_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """``tf.image.central_crop``: keep the central ``fraction`` of each side (start rounded down)."""
    h, w = image.shape[:2]
    top, left = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
    return image[top : h - top, left : w - left]


def preprocess(image: np.ndarray, pre: Preprocessing) -> torch.Tensor:
    """An RGB uint8 (H, W, 3) array → the (3, res, res) float tensor the weights expect."""
    from PIL import Image

    res = pre.resolution
    if pre.crop == "central_fraction":
        x = image.astype(np.float32) / 255.0
        x = tf_central_crop(x, pre.crop_pct)
        if pre.interpolation == "tf_bilinear":
            x = tf_resize_bilinear(x, res, res)
        else:
            pil = Image.fromarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))
            x = np.asarray(pil.resize((res, res), _pil_filter(pre.interpolation)), np.float32) / 255.0
    elif pre.crop == "resize_shorter":
        h, w = image.shape[:2]
        short = int(res / pre.crop_pct)
        size = (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
        filt = _pil_filter("bilinear" if pre.interpolation == "tf_bilinear" else pre.interpolation)
        pil = Image.fromarray(image).resize(size, filt)
        left, top = (size[0] - res) // 2, (size[1] - res) // 2
        x = np.asarray(pil.crop((left, top, left + res, top + res)), np.float32) / 255.0
    else:
        raise MobileNetsError(f"unknown crop mode {pre.crop!r} in the model card")
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))


def checkpoint_model(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelCard]:
    """A ``model.pt``/``checkpoint.pt`` of ``mobilenets train`` as ``(model in eval mode, card)``.

    The card names the dataset's classes and repeats the run's input pipeline: the shorter side resized to the
    resolution (bilinear), the central square, the run's mean/std (the source weights' when it started from
    them). ``card.source`` says where the weights came from.
    """
    from mobilenets.models import base_name
    from mobilenets.weights.checkpoint import load_model

    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"checkpoint {path} not found; give the model.pt that `mobilenets train` wrote")
    model, meta = load_model(path)
    classes = list(meta["classes"])
    init = meta.get("init") or {}
    source = {"format": "mobilenets_run", "file": path.name, "dataset": meta.get("dataset")}
    if init.get("source"):
        source["started_from"] = init["source"]
    card = ModelCard(
        arch=base_name(meta["model"]),
        model_kwargs={**meta["model_kwargs"], "num_classes": len(classes)},
        preprocessing=Preprocessing(
            resolution=meta["resolution"],
            crop="resize_shorter",
            crop_pct=1.0,
            interpolation="bilinear",
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
        ),
        class_names=classes,
        source=source,
    )
    return model, card


def _pil_filter(name: str):
    from PIL import Image

    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    if name not in filters:
        raise MobileNetsError(f"unknown interpolation {name!r} in the model card; use {', '.join(filters)}")
    return filters[name]


@torch.no_grad()
def predict_images(
    model: torch.nn.Module,
    card: ModelCard,
    paths: list[str | os.PathLike],
    topk: int = 5,
    batch_size: int = 16,
) -> list[Prediction]:
    """Classify image files (directories expand to their images): one :class:`Prediction` per file, in order.

    Files that cannot be read get ``error`` set; the others are still classified.
    """
    if topk < 1:
        raise MobileNetsError(f"topk must be >= 1, got {topk}")
    files = expand_paths(paths)
    if not files:
        raise MobileNetsError(f"no image files in {', '.join(map(str, paths))} (looked for {' '.join(IMAGE_SUFFIXES)})")
    results = [Prediction(str(f)) for f in files]
    inputs: list[tuple[int, torch.Tensor]] = []
    for i, f in enumerate(files):
        try:
            inputs.append((i, preprocess(load_image(f), card.preprocessing)))
        except MobileNetsError as e:
            results[i].error = str(e)
    model.eval()
    if getattr(model, "in_chans", 3) == 1:  # a grayscale model: ITU-R 601 luma, as PIL's convert("L")
        luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        inputs = [(i, (x * luma).sum(0, keepdim=True)) for i, x in inputs]
    k = min(topk, card.num_classes)
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        probs = torch.softmax(model(torch.stack([x for _, x in chunk])).float(), dim=1)
        values, indices = probs.topk(k, dim=1)
        for (i, _), vals, idxs in zip(chunk, values.tolist(), indices.tolist()):
            results[i].top = [(j, card.class_names[j], p) for j, p in zip(idxs, vals)]
    return results


def format_predictions(results: list[Prediction]) -> str:
    """Human-readable top-k lines per file (errors are left to the caller, for stderr)."""
    lines = []
    for r in results:
        if r.error is not None:
            continue
        rel = os.path.relpath(r.path) if os.path.isabs(r.path) else r.path
        lines.append(r.path if rel.startswith("..") else rel)
        lines += [f"  {rank}. {name:<28} {p * 100:6.2f}%  (class {j})" for rank, (j, name, p) in enumerate(r.top, 1)]
    return "\n".join(lines)
