"""An export's verification: enough images to tell a good file from a bad one, and a verdict no single image flips."""

from __future__ import annotations

import pytest
import torch

from mobilenets.deploy.verify import MIN_AGREEMENT, VERIFY_IMAGES, compare_outputs, wilson_interval


def test_wilson_interval_matches_the_textbook():
    # 17 of 18 (the pretrained V1's ONNX int8 file on 32 images, 18 of them clear): 74-99%.
    low, high = wilson_interval(17, 18)
    assert low == pytest.approx(0.742, abs=1e-3) and high == pytest.approx(0.990, abs=1e-3)
    # 320 of 322: a figure that means something.
    low, high = wilson_interval(320, 322)
    assert low == pytest.approx(0.9777, abs=1e-3) and high == pytest.approx(0.9983, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def _logits(n: int, flips: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n clear float decisions (class i % 10 far ahead), and a copy whose first ``flips`` decisions changed."""
    reference = torch.zeros(n, 10)
    reference[torch.arange(n), torch.arange(n) % 10] = 8.0
    outputs = reference.clone()
    outputs[:flips] = outputs[:flips].roll(1, dims=1)
    return reference, outputs


def test_one_image_does_not_decide_the_verdict():
    # 17 of 18 clear decisions kept is 94.4%, below 97%, but the data cannot tell it from a 99% file: it passes.
    check = compare_outputs(*_logits(18, 1), "runtime", "int8")
    assert check.clear_images == 18 and check.clear_agreement == pytest.approx(17 / 18)
    assert check.clear_agreement < MIN_AGREEMENT["int8"] and check.passed
    assert "95% interval 74.2-99.0%" in check.summary()
    # A file that changes 30 of 512 clear decisions (94.1%, interval 91.7-95.8%) fails: the data show it.
    bad = compare_outputs(*_logits(512, 30), "runtime", "int8")
    assert not bad.passed and "need ≥ 97%" in bad.summary()
    # ... and one that changes 2 of 512 passes.
    assert compare_outputs(*_logits(512, 2), "runtime", "int8").passed


def test_exports_verify_on_enough_images_by_default():
    assert VERIFY_IMAGES >= 500 and MIN_AGREEMENT["int8"] >= 0.97
