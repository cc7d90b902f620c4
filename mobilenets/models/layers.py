"""Building blocks shared by the model families: conv+BN+act, depthwise separable conv (V1), inverted residual
with linear bottleneck (V2, V3), squeeze-and-excite and hard-swish (V3), the fused and universal inverted
bottlenecks and mobile multi-query attention (V4), width rounding."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.errors import MobileNetsError


class GELU(nn.GELU):
    """The exact (erf) GELU of MobileNetV4-Hybrid-Large; takes ``inplace`` as the other activations do (and
    ignores it: GELU has no in-place form)."""

    def __init__(self, inplace: bool = False):
        super().__init__()


# "hardswish" is x·relu6(x + 3)/6, MobileNetV3's cheap swish ("HS" in its Tables 1–2).
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "gelu": GELU}
PADDINGS = ("symmetric", "tf_same")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below ``min_value`` (default: divisor).

    The rule of torchvision's and TF-slim's MobileNets: round to nearest, but if that drops more than
    10% below ``value``, go one step up. Every paper width (α ∈ {1, 0.75, 0.5, 0.25} of 32..1024) is
    already a multiple of 8 and is kept exactly.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_channels(channels: int, width_mult: float) -> int:
    """Channels of a layer under the width multiplier α: ``make_divisible(channels * α, 8)``, at least 8."""
    return make_divisible(channels * width_mult, 8)


def check_width_mult(width_mult: float) -> float:
    if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool):
        raise MobileNetsError(f"width_mult must be a number, got {width_mult!r}")
    if not math.isfinite(width_mult) or width_mult <= 0:
        raise MobileNetsError(
            f"width_mult must be a finite number > 0 (the paper uses 1.0, 0.75, 0.5, 0.25), got {width_mult}"
        )
    return float(width_mult)


def get_activation(name: str) -> type[nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise MobileNetsError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


class PadSame(nn.Module):
    """TensorFlow "SAME" padding for a conv of ``kernel_size`` and ``stride``, computed from the input size.

    TF pads ``total = max((ceil(n/s) - 1)·s + k - n, 0)`` with the odd pixel at the end (bottom/right);
    PyTorch's symmetric ``padding=k//2`` puts it at both ends. The two give different numbers whenever a
    stride-2 conv sees an even input, so weights trained in TF need this to reproduce TF's outputs.
    """

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def _pad(self, size: int) -> tuple[int, int]:
        total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2])
        left, right = self._pad(x.shape[-1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))


class ConvBNAct(nn.Sequential):
    """Conv2d → BatchNorm2d → activation (activation optional)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ):
        if padding not in PADDINGS:
            raise MobileNetsError(f"unknown padding {padding!r}; choose one of {', '.join(PADDINGS)}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if padding == "tf_same" and (kernel_size > 1 or stride > 1):
            layers["pad"] = PadSame(kernel_size, stride)
            conv_padding = 0
        else:
            conv_padding = kernel_size // 2
        layers["conv"] = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, conv_padding, groups=groups, bias=False
        )
        layers["bn"] = nn.BatchNorm2d(out_channels, eps=bn_eps)
        if act is not None:
            layers["act"] = get_activation(act)(inplace=True)
        super().__init__(layers)


class DepthwiseSeparable(nn.Module):
    """Depthwise separable convolution (paper Fig. 3): 3×3 depthwise conv → BN → ReLU → 1×1 pointwise → BN → ReLU.

    The depthwise conv filters each input channel alone (groups = channels); the pointwise conv mixes
    them. Against a full 3×3 conv this costs 1/N + 1/9 of the Mult-Adds (paper Eq. 5).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        self.depthwise = ConvBNAct(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            groups=in_channels,
            act=act,
            padding=padding,
            bn_eps=bn_eps,
        )
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, act=act, padding=padding, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite (Hu et al. 2018) as MobileNetV3 places it, after the depthwise conv: global average
    pool → 1×1 conv to ``squeeze_channels`` → ReLU → 1×1 conv back → hard-sigmoid → rescale the channels.

    The V3 paper fixes the squeeze width to 1/4 of the expansion layer's (rounded to a multiple of 8) and
    uses hard-sigmoid, relu6(x + 3)/6, as the gate.
    """

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2, Sandler et al. 2018, Fig. 3b; MobileNetV3's "bneck").

    A 1×1 conv expands the thin input to ``expanded_channels`` (skipped when they are equal), a k×k depthwise
    conv filters it, an optional squeeze-and-excite reweighs it (V3), and a 1×1 conv projects it back to a thin
    output with *no* activation (the linear bottleneck: a ReLU there destroys information in the low-dimensional
    space, V2 §3.2). With stride 1 and equal widths the input is added back (the residual joins bottlenecks).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu6",
        squeeze_channels: int | None = None,
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        layer = dict(padding=padding, bn_eps=bn_eps)
        self.expand = (
            ConvBNAct(in_channels, expanded_channels, 1, act=act, **layer)
            if expanded_channels != in_channels
            else nn.Identity()
        )
        self.depthwise = ConvBNAct(
            expanded_channels, expanded_channels, kernel_size, stride, groups=expanded_channels, act=act, **layer
        )
        self.se = SqueezeExcite(expanded_channels, squeeze_channels) if squeeze_channels else nn.Identity()
        self.project = ConvBNAct(expanded_channels, out_channels, 1, act=None, **layer)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.use_residual else out


class LayerScale(nn.Module):
    """Multiply each channel by a learned scale that starts small (CaiT, Touvron et al. 2021): MobileNetV4's
    hybrid models scale every UIB and attention branch by it, initialised to 1e-5, before the residual add."""

    def __init__(self, channels: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class FusedInvertedBottleneck(nn.Module):
    """Fused inverted bottleneck (FusedIB; EfficientNet-EdgeTPU's "edge residual", EfficientNetV2's FusedMBConv):
    a full k×k conv expands and filters at once, a 1×1 conv projects linearly. MobileNetV4's first block after
    the stem: on the large early maps a dense conv runs faster on accelerators than a 1×1 + depthwise pair.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        layer = dict(padding=padding, bn_eps=bn_eps)
        self.expand = ConvBNAct(in_channels, expanded_channels, kernel_size, stride, act=act, **layer)
        self.project = ConvBNAct(expanded_channels, out_channels, 1, act=None, **layer)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.expand(x))
        return out + x if self.use_residual else out


class UniversalInvertedBottleneck(nn.Module):
    """Universal inverted bottleneck (UIB, MobileNetV4 §3.2, Fig. 4): an inverted bottleneck with two optional
    depthwise convs, one before the expansion ("start") and one between expansion and projection ("middle").

    The two switches give the paper's four instances:

    ============  ===========  ============
    variant       start dw     middle dw
    ============  ===========  ============
    ExtraDW       k×k          k×k          (new in V4: cheap extra depth and receptive field)
    IB            —            k×k          (MobileNetV2's inverted residual)
    ConvNeXt      k×k          —            (spatial mixing before the expansion)
    FFN           —            —            (two 1×1 convs, a transformer's MLP)
    ============  ===========  ============

    The stride goes to the middle depthwise conv when there is one, else to the start one. The start depthwise
    conv and the projection are linear (BN, no activation), as TF Model Garden's and timm's blocks. An optional
    layer scale multiplies the branch before the residual add (stride 1 and equal widths).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        start_kernel: int = 0,
        middle_kernel: int = 3,
        stride: int = 1,
        act: str = "relu",
        layer_scale: float | None = None,
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        if stride > 1 and not (start_kernel or middle_kernel):
            raise MobileNetsError("a UIB with stride > 1 needs a start or middle depthwise conv to carry the stride")
        layer = dict(padding=padding, bn_eps=bn_eps)
        self.start_depthwise = (
            ConvBNAct(
                in_channels,
                in_channels,
                start_kernel,
                1 if middle_kernel else stride,
                groups=in_channels,
                act=None,
                **layer,
            )
            if start_kernel
            else nn.Identity()
        )
        self.expand = ConvBNAct(in_channels, expanded_channels, 1, act=act, **layer)
        self.middle_depthwise = (
            ConvBNAct(
                expanded_channels,
                expanded_channels,
                middle_kernel,
                stride,
                groups=expanded_channels,
                act=act,
                **layer,
            )
            if middle_kernel
            else nn.Identity()
        )
        self.project = ConvBNAct(expanded_channels, out_channels, 1, act=None, **layer)
        self.layer_scale = LayerScale(out_channels, layer_scale) if layer_scale is not None else nn.Identity()
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.middle_depthwise(self.expand(self.start_depthwise(x))))
        out = self.layer_scale(out)
        return out + x if self.use_residual else out


class MobileMQA(nn.Module):
    """Mobile multi-query attention (MobileNetV4 §3.3) as a residual block: BN → attention → layer scale → + x.

    Multi-query attention (Shazeer 2019): ``num_heads`` query heads share one key head and one value head, so
    the keys and values cost one head's projection and memory traffic. MobileNetV4 adds spatial reduction: with
    ``kv_stride`` > 1 the keys and values are computed from the map downsampled by a strided k×k depthwise conv
    (+ BN; one each for keys and values), so each of the H·W queries attends to only (H/s)·(W/s) positions.
    Projections are 1×1 convs without bias. Attention is written as two matmuls and a softmax (not
    ``F.scaled_dot_product_attention``) so that every runtime and int8 pass sees its parts.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        num_heads: int,
        key_dim: int,
        kv_stride: int = 1,
        kernel_size: int = 3,
        layer_scale: float | None = 1e-5,
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        self.num_heads, self.key_dim, self.kv_stride = num_heads, key_dim, kv_stride
        self.scale = key_dim**-0.5
        self.norm = nn.BatchNorm2d(channels, eps=bn_eps)
        self.query = nn.Conv2d(channels, num_heads * key_dim, 1, bias=False)
        self.key = self._key_value(channels, key_dim, kv_stride, kernel_size, padding, bn_eps)
        self.value = self._key_value(channels, key_dim, kv_stride, kernel_size, padding, bn_eps)
        self.output = nn.Conv2d(num_heads * key_dim, out_channels, 1, bias=False)
        self.layer_scale = LayerScale(out_channels, layer_scale) if layer_scale is not None else nn.Identity()
        self.use_residual = channels == out_channels

    @staticmethod
    def _key_value(
        channels: int, key_dim: int, kv_stride: int, kernel_size: int, padding: str, bn_eps: float
    ) -> nn.Sequential:
        """The one shared key (or value) head: [strided depthwise conv + BN] → 1×1 projection to ``key_dim``."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if kv_stride > 1:
            layers["downsample"] = ConvBNAct(
                channels, channels, kernel_size, kv_stride, groups=channels, act=None, padding=padding, bn_eps=bn_eps
            )
        layers["proj"] = nn.Conv2d(channels, key_dim, 1, bias=False)
        return nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        normed = self.norm(x)
        # queries (b, heads, h·w, d); the single key and value head (b, 1, m, d), m = (h/s)·(w/s), broadcast over
        # the heads by the matmuls.
        q = self.query(normed).reshape(b, self.num_heads, self.key_dim, h * w).transpose(-1, -2)
        k = self.key(normed).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(normed).flatten(2).transpose(1, 2).unsqueeze(1)
        attn = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1)
        out = (attn @ v).transpose(-1, -2).reshape(b, self.num_heads * self.key_dim, h, w)
        out = self.layer_scale(self.output(out))
        return out + x if self.use_residual else out
