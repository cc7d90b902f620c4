"""Graph surgery before export: BatchNorm folded into convolutions, TF "SAME" pads made static."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobilenets.models.layers import PadSame


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
