"""Post-training quantization: the weight-side corrections (empirical bias correction, cross-layer equalization),
the choice of activation calibration, and the PT2E prepare → calibrate → convert recipe ExecuTorch and LiteRT share.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from mobilenets.deps import require
from mobilenets.errors import MobileNetsError
from mobilenets.models.layers import DepthwiseSeparable, InvertedResidual
from mobilenets.quant.passes import share_relu6_observers

# PT2E activation calibrations (the first is the default): running min/max, or the observers' own choice ("mse":
# XNNPACK's and litert-torch's configs observe with a histogram and pick the range of least squared error).
PT2E_CALIBRATIONS = ("minmax", "mse")


def with_calibration(config, calibration: str, runtime: str):
    """A PT2E QuantizationConfig whose activation observers follow ``calibration`` (see PT2E_CALIBRATIONS)."""
    if calibration not in PT2E_CALIBRATIONS:
        raise MobileNetsError(f"{runtime} calibrates by {', '.join(PT2E_CALIBRATIONS)}, not {calibration!r}")
    if calibration == "mse":
        return config
    observer = require("torchao.quantization.pt2e.observer", "int8 export").MinMaxObserver
    ctr = observer.with_args(eps=2**-12)
    specs = {}
    for field in ("input_activation", "output_activation"):
        spec = getattr(config, field)
        if spec is not None:
            specs[field] = dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)
    return dataclasses.replace(config, **specs)


def pt2e_quantize(
    graph: torch.fx.GraphModule,
    quantizer,
    calib_batches: Iterable[torch.Tensor],
    purpose: str,
    fold_quantize: bool = True,
) -> torch.fx.GraphModule:
    """PT2E post-training quantization of an exported ``graph`` (from a :func:`passes.relu6_as_relu_clamp`
    model): prepare with ``quantizer``, calibrate on ``calib_batches`` (in the graph's own input layout), put
    each ReLU6's conv output on its clamp's grid (:func:`passes.share_relu6_observers`), convert."""
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", purpose)
    with torch.no_grad():
        prepared = pt2e.prepare_pt2e(graph, quantizer)
        for batch in calib_batches:
            prepared(batch)
        share_relu6_observers(prepared)
        return pt2e.convert_pt2e(prepared, fold_quantize=fold_quantize)


def correct_bias_for_int8_weights(model: nn.Module, calib_images: torch.Tensor, qmax: int = 127) -> nn.Module:
    """A copy of ``model`` whose conv/linear biases absorb the mean error of rounding their weights to int8.

    Per-channel symmetric int8 weights ``Ŵ`` (scale = max|W|/``qmax`` per output channel, the scheme of the
    XNNPACK and LiteRT quantizers) shift each output channel's mean by ``(Ŵ − W)·E[x]``. Subtracting that shift
    from the bias, with ``E[x]`` the mean input of each layer over ``calib_images``, is empirical bias correction
    (Nagel et al., 2019, "Data-Free Quantization"), the step OpenVINO's NNCF runs. The quantizer then computes
    the same scales (the weights are unchanged) and the outputs' means come back. Needs biased convs: call it
    on a BN-folded model.
    """
    model = copy.deepcopy(model).eval()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    means: dict[nn.Module, torch.Tensor] = {}

    def record(module, inputs, _out):
        x = inputs[0].detach().double()
        mean = x.mean(dim=(0, 2, 3)) if x.ndim == 4 else x.mean(dim=0)
        means[module] = means.get(module, 0) + mean

    hooks = [m.register_forward_hook(record) for m in layers]
    batches = calib_images.split(32)
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for m in layers:
            w = m.weight.double()
            scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / qmax
            shape = (-1,) + (1,) * (w.ndim - 1)
            error = (w / scale.view(shape)).round().clamp(-qmax, qmax) * scale.view(shape) - w
            mean_in = means[m] / len(batches)
            if isinstance(m, nn.Linear):
                shift = error @ mean_in
            elif m.groups == 1:
                shift = error.sum(dim=(2, 3)) @ mean_in
            else:  # depthwise (and grouped): each output channel sees its own group's inputs
                per_group = mean_in.view(m.groups, -1).repeat_interleave(m.out_channels // m.groups, dim=0)
                shift = (error.sum(dim=(2, 3)) * per_group).sum(1)
            m.bias.copy_((m.bias.double() - shift).to(m.bias.dtype))
    return model


def _relu_after(block: nn.Module) -> bool:
    """Whether a folded ConvBNAct ends in a plain ReLU, which commutes with a positive per-channel scale."""
    act = getattr(block, "act", None) if isinstance(block, nn.Sequential) else None
    return type(act) is nn.ReLU


def equalizable_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.Conv2d]]:
    """(first, second) convolutions of ``model`` whose channels cross-layer equalization may rescale: the first
    feeds the second only, through a ReLU. In MobileNetV1 every depthwise → pointwise pair and every pointwise →
    next depthwise; in V2/V3 blocks expand → depthwise and depthwise → project (without squeeze-excite between).
    ReLU6 and hard-swish pairs are left out: relu6(x / s) · s clips at 6s, so the rescaled network would differ.
    """
    pairs = []
    for parent in model.modules():
        if isinstance(parent, DepthwiseSeparable) and _relu_after(parent.depthwise):
            pairs.append((parent.depthwise.conv, parent.pointwise.conv))
        elif isinstance(parent, InvertedResidual):
            if isinstance(parent.expand, nn.Sequential) and _relu_after(parent.expand):
                pairs.append((parent.expand.conv, parent.depthwise.conv))
            if isinstance(parent.se, nn.Identity) and _relu_after(parent.depthwise):
                pairs.append((parent.depthwise.conv, parent.project.conv))
        elif isinstance(parent, nn.Sequential):
            blocks = list(parent.children())
            for a, b in zip(blocks, blocks[1:]):  # V1's body: a block's pointwise output is the next one's input
                if isinstance(a, DepthwiseSeparable) and isinstance(b, DepthwiseSeparable) and _relu_after(a.pointwise):
                    pairs.append((a.pointwise.conv, b.depthwise.conv))
    return pairs


def equalize_cross_layer(model: nn.Module, iterations: int = 2) -> nn.Module:
    """A copy of a BN-folded ``model`` with cross-layer equalization (Nagel et al., 2019, "Data-Free
    Quantization", §4.1) on :func:`equalizable_pairs`: the same function, with each channel's weight range shared
    evenly between the two convolutions it passes through.

    For a pair (W1 → ReLU → W2) and channel i, r1 = max|W1[i]| and r2 = max|W2[:, i]|; W1[i] and b1[i] are divided
    by s = √(r1 / r2) and W2[:, i] multiplied by it, so both ranges become √(r1·r2). A depthwise filter whose
    range is 50× its neighbours' no longer sets a per-tensor grid (or wastes int8 levels per channel) for them.
    ``iterations`` passes, since in V1 every conv belongs to two pairs.
    """
    model = copy.deepcopy(model).eval()
    pairs = equalizable_pairs(model)
    with torch.no_grad():
        for _ in range(iterations):
            for first, second in pairs:
                w1, w2 = first.weight.double(), second.weight.double()
                r1 = w1.abs().flatten(1).amax(1)
                if second.groups == 1:
                    r2 = w2.abs().transpose(0, 1).flatten(1).amax(1)
                else:  # depthwise: input channel i is output channel i
                    r2 = w2.abs().flatten(1).amax(1)
                scale = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp_min(1e-12)).sqrt(), torch.ones_like(r1))
                first.weight.copy_((w1 / scale.view(-1, 1, 1, 1)).to(first.weight.dtype))
                if first.bias is not None:
                    first.bias.copy_((first.bias.double() / scale).to(first.bias.dtype))
                shape = (1, -1, 1, 1) if second.groups == 1 else (-1, 1, 1, 1)
                second.weight.copy_((w2 * scale.view(shape)).to(second.weight.dtype))
    return model
