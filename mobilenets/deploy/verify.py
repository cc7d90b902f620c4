"""Is an exported file right? Its logits against PyTorch's on real images, and its int8 ranges against saturation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# fp16 weights (ncnn, MNN): max |Δ| within this fraction of the largest reference logit, and top-1 agreement judged on
# the clear decisions as for bf16/int8. Measured on the pretrained MobileNetV1 1.0/224 (64 photo crops, AMD EPYC AVX2):
# ncnn 1.7%, MNN 2.6% of the largest logit; MNN's fp16 files of small V2s reach 3.1% (tests/test_ncnn_mnn.py).
FP16_RTOL = 0.05
# Verification thresholds: max |Δ| relative to the largest reference logit, and top-1 agreement. int8: every
# runtime's default file keeps ≥ 99.4% of the pretrained MobileNetV1 1.0/224's clear decisions on 512 photo crops
# (reports/int8-qat/pretrained_clear.md) and ≥ 99.85% of trained Fashion-MNIST models' (reports/int8-qat).
RTOL = {"fp32": 1e-3, "fp16": FP16_RTOL, "bf16": float("inf"), "int8": float("inf")}
MIN_AGREEMENT = {"fp32": 0.97, "fp16": 0.97, "bf16": 0.9, "int8": 0.97}
# bf16/int8 agreement is judged on images whose float top-1 probability beats the runner-up by this much.
CLEAR_MARGIN = 0.2
# Real images an export is verified on by default: enough that one changed decision moves the figure by a fraction
# of a point (32 images, 18 of them clear, put the pretrained V1's ONNX int8 file at "94.4%", 95% interval 74-99%).
VERIFY_IMAGES = 512
# The agreement's confidence interval (Wilson score, 95%): a file fails when even the interval's top is below the
# required agreement, so no single image near the threshold decides the verdict.
CONFIDENCE_Z = 1.96


def wilson_interval(successes: int, trials: int, z: float = CONFIDENCE_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / trials`` (95% for z = 1.96): unlike the normal
    approximation it stays inside [0, 1] and is honest for small ``trials`` and proportions near 1."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Verification:
    """How an exported file's outputs compare with the PyTorch model's on real images."""

    runtime: str
    num_images: int
    max_abs_diff: float
    max_abs_ref: float
    top1_agreement: float
    tolerance: float
    min_agreement: float
    clear_images: int = 0
    clear_agreement: float = float("nan")
    judge_clear: bool = False

    @property
    def judged_agreement(self) -> float:
        """The agreement the pass/fail rule uses: on clear predictions for bf16/int8 when there are any."""
        return self.clear_agreement if self.judge_clear and self.clear_images else self.top1_agreement

    @property
    def judged_images(self) -> int:
        """How many images :attr:`judged_agreement` counts."""
        return self.clear_images if self.judge_clear and self.clear_images else self.num_images

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`judged_agreement`."""
        n = self.judged_images
        return wilson_interval(round(self.judged_agreement * n), n) if n else (0.0, 1.0)

    @property
    def passed(self) -> bool:
        """Outputs within tolerance, and the agreement's interval reaches ``min_agreement``: the file fails when
        the data show it below the requirement, not on one image's say. (bf16/int8 of a model that predicts no
        image clearly, e.g. untrained weights, is judged on all its near-ties and fails, saying why.)"""
        close = bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance
        return close and self.interval[1] >= self.min_agreement

    def summary(self) -> str:
        tol = "" if not np.isfinite(self.tolerance) else f" (tolerance {self.tolerance:.3g})"
        head = f"{self.runtime} vs PyTorch on {self.num_images} real images: max |Δ| {self.max_abs_diff:.3g}{tol}, "
        low, high = self.interval
        need = f"95% interval {100 * low:.1f}-{100 * high:.1f}%, need ≥ {100 * self.min_agreement:.0f}% within it"
        if not (self.judge_clear and self.clear_images):
            line = head + f"top-1 agreement {100 * self.top1_agreement:.1f}% ({need})"
            if self.judge_clear and self.num_images > 1:
                # Random weights with BN at its initial statistics give logits of 1e-9 or less (MobileNetV1-V3 at
                # 32 px on Fashion-MNIST): every decision is a near-tie that any rounding may swap.
                line += (
                    f"; the float model predicts none of them clearly (largest |logit| {self.max_abs_ref:.3g}): "
                    "reduced precision can only be verified on trained weights (--checkpoint, --weights)"
                )
            return line
        return head + (
            f"top-1 agreement {100 * self.top1_agreement:.1f}% on all, {100 * self.clear_agreement:.1f}% on the "
            f"{self.clear_images} the float model predicts clearly ({need} on those)"
        )


def compare_outputs(
    reference: torch.Tensor,
    outputs: np.ndarray | torch.Tensor,
    runtime: str,
    precision: str = "fp32",
    min_agreement: float | None = None,
) -> Verification:
    """max |Δ| and top-1 agreement of a runtime's logits against the PyTorch reference.

    Reduced precisions (bf16, int8) are judged on the images the float model predicts clearly — its top-1
    probability at least ``CLEAR_MARGIN`` above the runner-up. On an image whose two best classes are nearly
    tied any rounding may swap them, which says nothing about the file; a wrong decision where the float
    model is sure does. Agreement on all images is reported too.
    """
    ref = reference.detach().float()
    out = torch.as_tensor(np.asarray(outputs)).float().reshape(ref.shape)
    max_ref = float(ref.abs().max())
    agree = out.argmax(1) == ref.argmax(1)
    if ref.shape[1] > 1:
        top2 = ref.softmax(1).topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) >= CLEAR_MARGIN
    else:
        clear = torch.zeros_like(agree)
    return Verification(
        clear_images=int(clear.sum()),
        clear_agreement=float(agree[clear].float().mean()) if clear.any() else float("nan"),
        judge_clear=precision != "fp32",
        runtime=runtime,
        num_images=int(ref.shape[0]),
        max_abs_diff=float((out - ref).abs().max()),
        max_abs_ref=max_ref,
        top1_agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
        tolerance=RTOL[precision] * max_ref,
        min_agreement=MIN_AGREEMENT[precision] if min_agreement is None else min_agreement,
    )


# ----------------------------------------------------------------------------------------------------
# int8 saturation

# x86 without VNNI multiplies u8 activations by s8 weights and adds pairs of products in 16 bits
# (vpmaddubsw): |2·255·w| must stay ≤ 32767, so |w| ≤ 64. Signed int8 activations are widened to 16 bits
# before they are multiplied (XNNPACK, TFLite), so any symmetric int8 weight is safe with them.
U8_SAFE_WEIGHT = 64
S8_SAFE_WEIGHT = 127


@dataclass
class Int8Safety:
    """Whether an int8 file's integer ranges can saturate on some CPU, read from the file."""

    everywhere: bool
    detail: str
    weights: int = 0

    @property
    def ok(self) -> bool:
        return self.everywhere


def int8_safety(ranges: list[dict]) -> Int8Safety:
    """Judge ``ranges`` (a runtime module's ``int8_ranges(path)``): safe on every CPU, or why not.

    Each entry has the weight's integer "min"/"max", "activation" ("uint8"/"int8") and "depthwise" (depthwise
    convs widen to 32 bits on every CPU, so only dense convs and matmuls with u8 activations need 7 bits).
    """
    if not ranges:
        return Int8Safety(False, "no int8 weights found in the file: it is not an int8 file")
    activation = ranges[0]["activation"]
    lo, hi = min(r["min"] for r in ranges), max(r["max"] for r in ranges)
    dense = [r for r in ranges if not r.get("depthwise", False)]
    if activation == "uint8" and dense:
        worst = max(dense, key=lambda r: max(-r["min"], r["max"]))
        w = max(-worst["min"], worst["max"])
        if w > U8_SAFE_WEIGHT:
            return Int8Safety(
                False,
                f"uint8 activations meet dense weights up to |{w}| (e.g. {worst['name']}): u8×s8 pairs exceed 16 bits "
                f"on x86 CPUs without VNNI; those weights must lie within [-{U8_SAFE_WEIGHT}, {U8_SAFE_WEIGHT}]",
                len(ranges),
            )
    if max(-lo, hi) > S8_SAFE_WEIGHT:
        return Int8Safety(False, f"weights in [{lo}, {hi}] exceed symmetric int8 [-127, 127]", len(ranges))
    dense_range = (
        f"dense weights within [{min(r['min'] for r in dense)}, {max(r['max'] for r in dense)}]"
        if dense
        else "no dense"
    )
    return Int8Safety(
        True,
        f"{len(ranges)} int8 weight tensors ({dense_range}) with {activation} activations: no CPU saturates",
        len(ranges),
    )
