"""MobileNetV3 Large and Small (Howard et al., 2019, "Searching for MobileNetV3"), and the minimalistic
variants TF-slim and Keras define (no squeeze-and-excite, no hard-swish, 3×3 kernels only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.base import PooledClassifier, check_config, feature_levels, init_weights
from mobilenets.models.layers import ConvBNAct, InvertedResidual, make_divisible, scale_channels
from mobilenets.models.mobilenet_v2 import check_family_width_mult

# One row per "bneck" (inverted residual) of V3 paper Tables 1–2, top to bottom:
# (kernel, exp size, #out, SE, NL, s) — NL "RE" is ReLU, "HS" hard-swish; s is the depthwise conv's stride.
LARGE = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]
SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]
# size: (bnecks, stem out (3×3/2 conv, HS), last 1×1 conv out (HS), head width (1×1 conv on the pooled map, HS, no BN))
# Table 2 marks SE on Small's last 1×1 conv (576); no implementation has it (TF-slim, Keras, torchvision, timm).
SIZES = {
    "large": (LARGE, 16, 960, 1280),
    "small": (SMALL, 16, 576, 1024),
}
LAYOUTS = ("tf", "torchvision")
SE_REDUCTION = 4  # squeeze to 1/4 of the expansion width (V3 §5.3)


@dataclass
class MobileNetV3Config:
    """Every option of the family; the resolved config is what a run saves.

    Args:
        size: "large" (Table 1) or "small" (Table 2).
        width_mult: α, scales the channels of every layer (rounded to a multiple of 8).
        minimal: the minimalistic variant of TF-slim/Keras: no squeeze-and-excite, ReLU everywhere, 3×3 kernels.
        layout: how α reaches the expansion widths and the head, where implementations differ for α ≠ 1.
            "tf" (the paper's figures, TF-slim and Keras): the expansion is the table's ratio (exp size / input
            width) times the block's *rounded* input width, and the head stays 1280 (1024) wide for α ≤ 1.
            "torchvision": the table's exp size itself is scaled by α and rounded, and so is the head; the layout
            of torchvision's and timm's ``width_mult``/``mobilenetv3_*_075`` checkpoints. Both agree at α = 1.
        padding: "symmetric" (PyTorch) or "tf_same" (TensorFlow "SAME", for TF checkpoints).
        bn_eps: BatchNorm epsilon; 1e-3 as TF-slim and torchvision's V3.
        dropout: before the classifier; 0.2 (keep-probability 0.8) as the paper.
        stem_stride: 2 as in the paper; 1 for 28–32 px images.
    """

    size: str = "large"
    width_mult: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    in_chans: int = 3
    minimal: bool = False
    layout: str = "tf"
    padding: str = "symmetric"
    bn_eps: float = 1e-3
    dropout: float = 0.2
    stem_stride: int = 2

    @property
    def min_resolution(self) -> int:
        return self.stem_stride * 2 ** sum(row[-1] == 2 for row in SIZES[self.size][0])

    def validate(self) -> MobileNetV3Config:
        if self.size not in SIZES:
            raise MobileNetsError(f"unknown MobileNetV3 size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.layout not in LAYOUTS:
            raise MobileNetsError(f"unknown MobileNetV3 layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        check_family_width_mult(self.width_mult, 16, "MobileNetV3")
        check_config(self, "MobileNetV3")
        return self

    def act(self, nl: str) -> str:
        return "relu" if self.minimal or nl == "RE" else "hardswish"

    def bnecks(self) -> list[tuple[int, int, int, int, int | None, str, int]]:
        """(in, expanded, out, kernel, squeeze channels or None, activation, stride) of every bneck, after α."""
        rows, stem, _, _ = SIZES[self.size]
        in_nominal, channels = stem, scale_channels(stem, self.width_mult)
        out = []
        for kernel, exp, c, se, nl, s in rows:
            out_channels = scale_channels(c, self.width_mult)
            if self.layout == "tf":
                # TF-slim's expand_input_by_factor: the ratio of the table applied to the rounded input width.
                expanded = make_divisible(channels * exp / in_nominal, 8)
            else:
                expanded = scale_channels(exp, self.width_mult)
            squeeze = make_divisible(expanded / SE_REDUCTION, 8) if se and not self.minimal else None
            kernel = 3 if self.minimal else kernel
            out.append((channels, expanded, out_channels, kernel, squeeze, self.act(nl), s))
            in_nominal, channels = c, out_channels
        return out

    def head_channels(self) -> tuple[int, int]:
        """(last 1×1 conv's width, head width) after α."""
        _, _, last, head = SIZES[self.size]
        last_in = scale_channels(SIZES[self.size][0][-1][2], self.width_mult)
        last = last_in * (last // SIZES[self.size][0][-1][2])  # 6× the last bneck's rounded width, as Keras/torchvision
        if self.layout == "tf" and self.width_mult <= 1.0:
            return last, head
        return last, make_divisible(head * self.width_mult, 8)


class MobileNetV3(PooledClassifier):
    """MobileNetV3: a 3×3 hard-swish stem, the table's bnecks, a 1×1 conv, pool, a 1×1 head conv without BN,
    dropout, FC. ``forward_features`` ends at the last 1×1 conv (``num_features`` channels); the pooled head is
    ``head_hidden_size`` wide (as timm)."""

    def __init__(self, cfg: MobileNetV3Config | None = None, **kwargs):
        super().__init__()
        cfg = (cfg or MobileNetV3Config(**kwargs)).validate()
        self.use_config(cfg)
        layer = dict(padding=cfg.padding, bn_eps=cfg.bn_eps)

        bnecks = cfg.bnecks()
        channels = bnecks[0][0]
        self.stem = ConvBNAct(cfg.in_chans, channels, 3, cfg.stem_stride, act=cfg.act("HS"), **layer)
        reduction = cfg.stem_stride
        layers = [("stem", channels, reduction)]
        blocks = []
        for i, (in_c, expanded, out_c, kernel, squeeze, act, stride) in enumerate(bnecks):
            blocks.append(InvertedResidual(in_c, expanded, out_c, stride, kernel, act, squeeze, **layer))
            channels, reduction = out_c, reduction * stride
            layers.append((f"blocks.{i}", channels, reduction))
        self.blocks = nn.Sequential(*blocks)
        last, head = cfg.head_channels()
        self.last_conv = ConvBNAct(channels, last, 1, act=cfg.act("HS"), **layer)
        layers.append(("last_conv", last, reduction))
        self.feature_layer_names = [name for name, _, _ in layers]
        self.feature_info = feature_levels(layers)

        # The paper's "conv2d 1×1, NBN" on the pooled 1×1 map: a linear layer with bias, then the nonlinearity.
        self.head = nn.Linear(last, head)
        self.head_act = nn.ReLU(inplace=True) if cfg.minimal else nn.Hardswish(inplace=True)
        self.init_head(last, hidden=head)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.last_conv(self.blocks(self.stem(x)))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_act(self.head(super().pre_logits(x)))


def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    """MobileNetV3-Large (V3 paper Table 1)."""
    return MobileNetV3(size="large", **kwargs)


def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    """MobileNetV3-Small (V3 paper Table 2)."""
    return MobileNetV3(size="small", **kwargs)


def mobilenet_v3_large_minimal(**kwargs) -> MobileNetV3:
    """MobileNetV3-Large minimalistic: no SE, ReLU only, 3×3 kernels (TF-slim ``V3_LARGE_MINIMALISTIC``)."""
    return MobileNetV3(size="large", minimal=True, **kwargs)


def mobilenet_v3_small_minimal(**kwargs) -> MobileNetV3:
    """MobileNetV3-Small minimalistic: no SE, ReLU only, 3×3 kernels (TF-slim ``V3_SMALL_MINIMALISTIC``)."""
    return MobileNetV3(size="small", minimal=True, **kwargs)
