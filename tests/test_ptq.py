"""Stronger post-training int8: cross-layer equalization keeps the function and evens the channel ranges; the
calibration choice reaches the runtime's quantizer; bad choices fail with one clear line, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilenets.deploy import export as ex
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.quant.fold import fold_bn
from mobilenets.quant.ptq import equalizable_pairs, equalize_cross_layer


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN statistics and affine terms, so that the folded convs' channel ranges differ (as trained ones)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) * 3 + 0.05
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) * 4 + 0.01
    return model.eval()


def test_equalization_keeps_the_function_and_evens_the_ranges():
    model = _trained_like(create_model("mobilenet_v1", width_mult=0.25, resolution=32))
    folded = fold_bn(model)
    equalized = equalize_cross_layer(folded, iterations=1)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), equalized(x)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    # Each depthwise filter's range spread over its channels shrinks (√ of the pair's) ...
    pairs = equalizable_pairs(folded)
    assert len(pairs) == 2 * 13 - 1  # 13 depthwise → pointwise pairs, 12 pointwise → next depthwise
    spread = lambda w: float(w.abs().flatten(1).amax(1).max() / w.abs().flatten(1).amax(1).min())  # noqa: E731
    depthwise = [(a, b) for a, b in zip(pairs, equalizable_pairs(equalized)) if a[0].groups > 1]
    assert all(spread(new[0].weight) < spread(old[0].weight) for old, new in depthwise)
    # ... and after one pass the last pair equalized (no later one rescales it) has equal ranges on both sides.
    first, second = equalizable_pairs(equalized)[-1]
    r1 = first.weight.abs().flatten(1).amax(1)
    r2 = second.weight.abs().transpose(0, 1).flatten(1).amax(1)
    assert torch.allclose(r1, r2, rtol=1e-4)


def test_equalization_leaves_relu6_pairs_alone():
    v2 = fold_bn(create_model("mobilenet_v2", width_mult=0.35, resolution=32))
    assert equalizable_pairs(v2) == []  # relu6(x / s)·s clips at 6s: rescaling would change the network


@pytest.mark.slow
def test_onnx_calibration_choice_reaches_the_file(fashion_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model, images, labels, calib = fashion_model

    def activation_scales(path):
        proto = onnx.load(str(path))
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        return {
            n.input[0]: float(inits[n.input[1]])
            for n in proto.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1
        }

    paths = {}
    for calibration in ("minmax", "percentile"):
        paths[calibration] = tmp_path / f"{calibration}.onnx"
        result = ex.export(
            model,
            paths[calibration],
            "onnx",
            "int8",
            calib_images=calib[:64],
            verify_images=images[:64],
            calibration=calibration,
            equalize=True,
        )
        assert result.built_for["int8"]["calibration"] == calibration and result.built_for["int8"]["equalized"]
    minmax, percentile = activation_scales(paths["minmax"]), activation_scales(paths["percentile"])
    shared = minmax.keys() & percentile.keys()
    assert len(shared) >= 10
    # The 99.999th percentile clips the outliers min-max keeps: never a wider range, narrower somewhere.
    assert all(percentile[k] <= minmax[k] * (1 + 1e-6) for k in shared)
    assert any(percentile[k] < 0.99 * minmax[k] for k in shared)
    logits = ex.run_model_file(paths["percentile"], "onnx", images[:256], "int8")
    assert float(np.mean(logits.argmax(1) == labels[:256].numpy())) > 0.5


def test_unknown_calibration_is_one_line_error(tmp_path):
    model = create_model("mobilenet_v1", width_mult=0.25, resolution=32)
    with pytest.raises(MobileNetsError, match="executorch int8 calibrates by minmax, mse; got --calibration 'entropy'"):
        ex.export(model, tmp_path / "m.pte", "executorch", "int8", calibration="entropy")
    assert list(tmp_path.iterdir()) == []


def _relu6_pt2e(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.fx.GraphModule, list[float]]:
    """XNNPACK PT2E int8 of ``model`` with its ReLU6s as relu + clamp and their observers shared (calibrated on 4
    random inputs): how many were shared, the converted graph, and the int8 scales of the relu outputs."""
    pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq
    from torchao.quantization.pt2e import quantize_pt2e as pt2e

    from mobilenets.quant.passes import relu6_as_relu_clamp, share_relu6_observers

    config = xq.get_symmetric_quantization_config(is_per_channel=True)
    with torch.no_grad():
        prepared = pt2e.prepare_pt2e(
            torch.export.export(relu6_as_relu_clamp(model), (x,)).module(), xq.XNNPACKQuantizer().set_global(config)
        )
        for _ in range(4):
            prepared(torch.randn(1, 3, 16, 16))
        shared = share_relu6_observers(prepared)
        converted = pt2e.convert_pt2e(prepared)
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    relu = torch.ops.aten.relu.default
    scales = [n.args[1] for n in converted.graph.nodes if n.target == quantize and n.args[0].target == relu]
    return shared, converted, scales


def test_relu6_conv_outputs_take_the_clamps_int8_grid():
    """fold.share_relu6_observers: conv → relu → clamp(6) (→ zero pad) → conv quantizes the relu on the clamp's
    scale, not over the whole pre-activation range."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU6(),
        torch.nn.ZeroPad2d((0, 1, 0, 1)),
        torch.nn.Conv2d(8, 8, 3, stride=2),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 4, 1),
    ).eval()
    with torch.no_grad():
        model[0].weight.mul_(20)  # pre-activations far above 6
    shared, _, relu_scales = _relu6_pt2e(model, torch.randn(1, 3, 16, 16))
    assert shared == 2
    assert len(relu_scales) == 2 and all(s <= 6 / 255 * (1 + 1e-6) for s in relu_scales)  # [0, 6], not [0, max]


class _FeatureMapBranch(torch.nn.Module):
    """A detector's feature map in little: conv → ReLU6 read by the next int8 conv and by a float op (the head)."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.next = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(), torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        feature = self.act(self.conv(x))
        return self.next(feature), torch.exp(feature)  # exp: a consumer the quantizer leaves float


def test_relu6_shares_the_clamps_grid_where_a_float_consumer_also_reads_it():
    """A ReLU6 whose output also goes to a float consumer (SSD's feature maps: the next int8 layer and the float
    head) still puts its relu on the clamp's grid: left on two grids, LiteRT's int8 MINIMUM (one scale in and out)
    fed the next layer on the wrong one and SSD300 V1's int8 file lost 6 mAP points."""
    torch.manual_seed(0)
    model = _FeatureMapBranch().eval()
    with torch.no_grad():
        model.conv.weight.mul_(20)  # pre-activations far above 6
    x = torch.randn(1, 3, 16, 16)
    shared, converted, (relu_scale,) = _relu6_pt2e(model, x)
    assert shared == 1
    assert relu_scale <= 6 / 255 * (1 + 1e-6)
    # The float consumer reads the feature on that fine grid, still clipped at 6.
    with torch.no_grad():
        steps = torch.log(converted(x)[1]) / relu_scale
    assert steps.max() <= 6 / relu_scale + 1e-3 and (steps - steps.round()).abs().max() < 1e-2


@pytest.mark.parametrize(
    "format,calibration,offered",
    # ONNX Runtime's entropy gave exactly minmax's ranges; NNCF's mean-quantile kept 57% of a small model's clear
    # decisions: neither is offered (issue 33).
    [("onnx", "entropy", "minmax, percentile"), ("openvino", "percentile", "nncf, minmax, histogram")],
)
def test_calibrations_that_do_nothing_or_wreck_a_model_are_refused(tmp_path, format, calibration, offered):
    model = create_model("mobilenet_v1", width_mult=0.25, resolution=32)
    path = tmp_path / f"m{ex.SUFFIXES[format]}"
    with pytest.raises(MobileNetsError, match=f"{format} int8 calibrates by {offered}; got --calibration"):
        ex.export(model, path, format, "int8", calibration=calibration)
    assert list(tmp_path.iterdir()) == []
