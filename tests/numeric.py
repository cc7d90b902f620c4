"""Comparisons that scale with what they compare (STYLE.md): float32 rounding grows with the outputs' magnitude and
with the order in which kernels sum (AVX2, AVX-512, AMX, WebAssembly and Arm each sum in their own), so a tolerance is
a fraction of the largest value compared, never a bare constant on outputs that can be in the hundreds. And the
thread count the tests compute with (:func:`torch_threads`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def _array(x) -> np.ndarray:
    return x.detach().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def scaled_diff(actual, expected) -> float:
    """max |actual − expected| as a fraction of max |expected|."""
    a, e = _array(actual), _array(expected)
    assert a.shape == e.shape, (a.shape, e.shape)
    return float(np.abs(a - e).max() / np.abs(e).max())


def assert_close_scaled(actual, expected, rtol: float, min_scale: float = 1e-3) -> None:
    """|actual − expected| ≤ rtol · max |expected| everywhere. ``expected`` must reach ``min_scale``: two vectors
    of ~0 pass any tolerance and say nothing."""
    scale = float(np.abs(_array(expected)).max())
    assert scale >= min_scale, f"the reference is ~0 (max |x| {scale:.3g}): the comparison would say nothing"
    diff = scaled_diff(actual, expected)
    assert diff <= rtol, f"max |Δ| is {diff:.3g} of max |expected| ({scale:.3g}), above {rtol:.3g}"


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random BatchNorm statistics and affines (in place): at their initial statistics (mean 0, var 1) randomly
    initialized MobileNets give logits of ~1e-9, and a comparison of two such outputs says nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run a block on ``n`` intra-op threads and restore the count after, also when the code under test sets its own
    (as ``--threads`` does). One by default: on the shared 2-core machine two threads fighting other processes run
    small convs several times slower, and a run repeated bit for bit needs the same reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def assert_v1_int8_cannot_saturate(format: str, path) -> dict:
    """An int8 MobileNetV1 file's ranges, read from the file, cannot saturate on any CPU: 28 int8 layers (stem, 13
    depthwise, 13 pointwise, classifier), symmetric weights within [-127, 127]; where activations are uint8 (ONNX
    Runtime, OpenVINO) the non-depthwise weights are 7-bit, since x86 without VNNI sums u8 × s8 pairs in 16 bits
    (2·255·64 = 32640 ≤ 32767); the others are signed int8 (XNNPACK, LiteRT). The card says it runs on every CPU.
    Returns the file's card."""
    from mobilenets.deploy import export as ex
    from mobilenets.deploy import runtime_module
    from mobilenets.deploy.verify import U8_SAFE_WEIGHT, int8_safety

    module = runtime_module(format)
    ranges = module.int8_ranges(path)
    assert len(ranges) == 28
    activation = "uint8" if format in ex.WEIGHT_BITS_FORMATS else "int8"
    assert {r["activation"] for r in ranges} == {activation}
    for r in ranges:
        assert r.get("zero_point", 0) == 0 and -127 <= r["min"] and r["max"] <= 127, r
        if activation == "uint8" and not r.get("depthwise", False):
            assert -U8_SAFE_WEIGHT <= r["min"] and r["max"] <= U8_SAFE_WEIGHT, r
    assert int8_safety(ranges).everywhere
    info = module.metadata(path)
    assert info["precision"] == "int8" and info["runs_on"].startswith("every CPU")
    return info
