"""Graph surgery before export: BatchNorm folded into convolutions, TF "SAME" pads made static."""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every Conv2d → BatchNorm2d pair folded into one biased Conv2d.

    With BN's running statistics, ``bn(conv(x)) = γ·(W*x + b − μ)/√(σ²+ε) + β`` is again a convolution:
    ``W' = W·γ/√(σ²+ε)`` and ``b' = (b − μ)·γ/√(σ²+ε) + β``. The new weights are computed in float64 and
    rounded once, so the folded model's outputs equal the original's up to float rounding. Pairs are found
    as consecutive children of any ``nn.Sequential`` (ConvBNAct, SqueezeNet, DenseNet's stem); BN layers that
    follow something else (DenseNet's pre-activation BN) are kept.
    """
    model = copy.deepcopy(model).eval()
    for parent, first, second in conv_bn_pairs(model):
        parent._modules[first] = _fold_conv_bn(parent._modules[first], parent._modules[second])
        parent._modules[second] = nn.Identity()
    return model


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """(parent, conv name, bn name) of every Conv2d → BatchNorm2d pair :func:`fold_bn` folds."""
    pairs = []
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and bn.running_mean is not None
            ):
                pairs.append((parent, first, second))
    return pairs


def static_padding(model: nn.Module, resolution: int) -> nn.Module:
    """A copy of ``model`` whose TensorFlow "SAME" pads (:class:`~mobilenets.models.layers.PadSame`) are fixed
    for ``resolution``: symmetric pads move into the conv's own ``padding``, asymmetric ones become a
    constant ``ZeroPad2d``. Outputs are unchanged at that resolution.

    PadSame computes its pads from the input's shape, which exporters trace as shape arithmetic
    (Shape/Gather/Sub/Div nodes) in front of a dynamic Pad: slower, and opaque to int8 quantizers and to the
    runtimes' Pad-into-Conv fusion. Models without PadSame come back as they are (copied).
    """
    from mobilenets.models.layers import PadSame

    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, inp, _n=name: sizes.__setitem__(_n, tuple(inp[0].shape[-2:])))
        for name, m in model.named_modules()
        if isinstance(m, PadSame)
    ]
    if not hooks:
        return model
    with torch.no_grad():
        model(torch.zeros(1, model.in_chans, resolution, resolution))
    for h in hooks:
        h.remove()
    for name, (h, w) in sizes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        pad: PadSame = getattr(parent, child)
        (top, bottom), (left, right) = pad._pad(h), pad._pad(w)
        conv = getattr(parent, "conv", None)
        if top == bottom and left == right and isinstance(conv, nn.Conv2d) and conv.padding == (0, 0):
            conv.padding = (top, left)
            setattr(parent, child, nn.Identity())
        else:
            setattr(parent, child, nn.ZeroPad2d((left, right, top, bottom)))
    return model


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    dtype = conv.weight.dtype
    scale = bn.weight.double() if bn.affine else torch.ones_like(bn.running_var, dtype=torch.float64)
    shift = bn.bias.double() if bn.affine else torch.zeros_like(bn.running_var, dtype=torch.float64)
    scale = scale / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=dtype)
    with torch.no_grad():
        fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
        fused.bias.copy_(((bias - bn.running_mean.double()) * scale + shift).to(dtype))
    return fused


class _ReLUThenClamp6(nn.Module):
    """ReLU6 written as relu → clamp(max=6), the same function.

    The PT2E quantizers of XNNPACK and litert-torch fuse conv → relu (the conv's int8 output covers [0, max])
    but not conv → hardtanh (ReLU6): there the conv output is quantized over its whole pre-activation range
    and the clip inherits that coarse grid. On the pretrained MobileNet this raised top-1 agreement with the
    float model on 64 photo crops from 53% to 75% (ExecuTorch) and from 3% to ~95% of the clear ones (LiteRT).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).clamp(max=6.0)


def relu6_as_relu_clamp(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ReLU6 written as relu → clamp(6), for int8 quantizers."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, _ReLUThenClamp6())
    return model


def share_relu6_observers(prepared: torch.fx.GraphModule) -> int:
    """Give each ReLU6's relu the int8 grid of its clamp(max=6), in a PT2E graph prepared and calibrated from a
    :func:`relu6_as_relu_clamp` model, before ``convert_pt2e``. Returns how many relus it re-pointed.

    The quantizers observe conv → relu's output over its whole calibrated range (20 to 48 in the pretrained
    MobileNetV1), so where the clip stays a separate op the runtime stores the conv's int8 output on a grid 3-8×
    coarser than the clamp's [0, 6] (LiteRT; ExecuTorch-XNNPACK where a stride-2 block's zero pad follows the
    clamp). Values above 6 are clipped next anyway, so the relu's observer is pointed at the clamp's (or, through
    zero pads, the next one's) and both get its scale and zero point: the same int8 scheme on a finer grid. The
    pretrained V1's int8 files then kept 100% of the float model's clear decisions on 256 photo crops (minmax;
    ExecuTorch 98.1% and LiteRT 98.1% without).
    """
    observed = "activation_post_process"
    relus = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)
    shared = 0
    for node in prepared.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.clamp.default:
            continue
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
        observer = node.args[0]
        if high != 6.0 or low not in (None, 0, 0.0) or observer.op != "call_module" or observed not in observer.target:
            continue
        if observer.args[0].op != "call_function" or observer.args[0].target not in relus or len(observer.users) != 1:
            continue
        last = node
        while len(last.users) == 1 and is_zero_pad(next(iter(last.users))):
            last = next(iter(last.users))  # zero pads (TF "SAME" on stride 2) keep values within [0, 6]
        outputs = [u for u in last.users if u.op == "call_module" and observed in u.target]
        if len(outputs) == 1 and len(last.users) == 1:
            observer.target = outputs[0].target
            shared += 1
    prepared.recompile()
    return shared


def is_zero_pad(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target != torch.ops.aten.pad.default:
        return False
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    return mode == "constant" and value in (None, 0, 0.0)


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
    from mobilenets.models.layers import DepthwiseSeparable, InvertedResidual

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
