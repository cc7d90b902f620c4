"""Checking the whole page: real image files through its own decoding and preprocessing, against PyTorch's."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy.verify import Verification, compare_outputs
from mobilenets.deploy.web.app import RUNTIME, read_config
from mobilenets.deploy.web.browser import Page
from mobilenets.errors import MobileNetsError


@dataclass
class PageCheck:
    """Image files classified by the page (its decoding, preprocessing and model) against PyTorch's pipeline."""

    num_images: int
    max_input_diff: float  # the page's input tensor against mobilenets.predict.preprocess's
    pipeline_top1: float  # top-1 agreement of the page on the files and on Python's tensors (same session)
    verification: Verification  # the page's logits against the PyTorch model's on Python-preprocessed tensors
    files: list[str]

    @property
    def passed(self) -> bool:
        """The page's pipeline is Python's: the same inputs, hence the same decisions of its session.

        Against PyTorch only fp32 is judged here: int8's accuracy is judged on the 32 images of the main
        verification, and on 8 files one near-tie would decide it.
        """
        same_pipeline = self.max_input_diff <= INPUT_TOLERANCE and self.pipeline_top1 == 1.0
        return same_pipeline and (self.verification.passed or self.verification.judge_clear)

    def summary(self) -> str:
        v = self.verification
        return (
            f"the page on {self.num_images} image files (decoded and preprocessed by classify.js) vs "
            f"mobilenets predict's pipeline: input max |Δ| {self.max_input_diff:.3g}, logits max |Δ| "
            f"{v.max_abs_diff:.3g}, top-1 agreement {100 * v.top1_agreement:.1f}%"
        )


# Another browser's JPEG decoder may differ by a grey level or two (≈ 0.02 after std 0.229); Chromium's gives
# Pillow's pixels, and the float32 ports give the same tensor (max |Δ| 0 in tests/test_web.py).
INPUT_TOLERANCE = 0.05


def verification_files(in_chans: int, folder: str | os.PathLike, count: int = 8) -> list[Path]:
    """Real image files a model of ``in_chans`` channels can take, written into ``folder``.

    3 channels: the bundled photos (JPEG) and scikit-image's/scikit-learn's sample photos (PNG);
    1 channel: Fashion-MNIST test images (PNG, 28×28 gray).
    """
    from PIL import Image

    from mobilenets.deploy.images import _photos, fashion_mnist
    from mobilenets.predict import bundled_images

    folder = Path(folder)
    if in_chans == 3:
        files = list(bundled_images())
        for i, photo in enumerate(_photos()[2:]):
            path = folder / f"photo{i}.png"
            Image.fromarray(photo).save(path)
            files.append(path)
        return files[:count]
    if in_chans == 1:
        images, _ = fashion_mnist("test")
        files = []
        for i in range(count):
            path = folder / f"fashion_mnist_test_{i}.png"
            Image.fromarray(images[i, 0].numpy(), "L").save(path)
            files.append(path)
        return files
    raise MobileNetsError(f"no built-in image files for in_chans={in_chans} (photos have 3 channels, Fashion-MNIST 1)")


def python_inputs(files: list[Path], config: dict) -> torch.Tensor:
    """What `mobilenets predict` feeds the model for ``files`` with this page's preprocessing."""
    from mobilenets.predict import load_image, preprocess
    from mobilenets.weights import Preprocessing

    pre = dict(config["preprocessing"])
    pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
    pre = Preprocessing(**pre)
    x = torch.stack([preprocess(load_image(f), pre) for f in files])
    if config["in_chans"] == 1:  # as predict_images does for gray models
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x


def check_page(
    folder: str | os.PathLike,
    model: nn.Module,
    precision: str = "fp32",
    min_agreement: float | None = None,
    page: Page | None = None,
) -> PageCheck:
    """Classify real image files with the page and with PyTorch (predict's decoding and preprocessing)."""
    folder = Path(folder)
    config = read_config(folder)
    with tempfile.TemporaryDirectory(prefix="mobilenets-web-images-") as tmp:
        files = verification_files(config["in_chans"], tmp)
        reference_inputs = python_inputs(files, config)
        own = page is None
        page = page or Page(folder)
        try:
            results = [page.run_file(f) for f in files]
            on_tensors = page.logits(reference_inputs.numpy())
        finally:
            if own:
                page.close()
    inputs = torch.from_numpy(np.stack([r[0] for r in results])).reshape(reference_inputs.shape)
    logits = np.stack([r[1] for r in results])
    with torch.no_grad():
        reference = model.eval()(reference_inputs)
    verification = compare_outputs(reference, logits, RUNTIME + ", from image files", precision, min_agreement)
    return PageCheck(
        num_images=len(files),
        max_input_diff=float((inputs - reference_inputs).abs().max()),
        pipeline_top1=float((logits.argmax(1) == on_tensors.argmax(1)).mean()),
        verification=verification,
        files=[f.name for f in files],
    )


def verify_page(folder: Path, model: nn.Module, precision: str, min_agreement: float | None) -> str:
    """:func:`check_page` as ``export`` runs it: a one-line summary, or MobileNetsError when the page is wrong."""
    check = check_page(folder, model, precision, min_agreement)
    if not check.passed:
        raise MobileNetsError(f"web {precision} export failed verification, nothing written: {check.summary()}")
    return check.summary()
