"""Xception (Chollet, 2017, "Xception: Deep Learning with Depthwise Separable Convolutions"), the "extreme
Inception" MobileNets descends from: entry flow, middle flow repeated eight times, exit flow (its Figure 5)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from mobilenets.models.base import PooledClassifier, check_config, feature_levels
from mobilenets.models.family import Family, PaperRow, ReproduceModel

# Figure 5, input 299×299×3. Stem: two full 3×3 convs without padding, (out_channels, stride), each BN + ReLU.
STEM = [(32, 2), (64, 1)]
# Blocks: (out_channels of each separable conv, stride of the closing 3×3 max pool, ReLU before the first conv).
# A block with a stride or a width change has a 1×1 conv (+ BN) shortcut of that stride, the others the identity.
ENTRY = [((128, 128), 2, False), ((256, 256), 2, True), ((728, 728), 2, True)]
MIDDLE = [((728, 728, 728), 1, True)] * 8
EXIT = [((728, 1024), 2, True)]
BLOCKS = ENTRY + MIDDLE + EXIT
TAIL = (1536, 2048)  # two separable convs, each BN + ReLU, then global average pooling and the classifier
PAPER_PARAMS = 22_855_952  # Xception paper Table 3 (its Keras model, with BatchNorm's parameters)


class SeparableConv(nn.Sequential):
    """Xception's separable convolution: a 3×3 depthwise conv straight into a 1×1 pointwise conv, with no
    BatchNorm or ReLU between them (the paper found an intermediate nonlinearity hurts, §4.7), then BN.
    A Sequential, so that export folds the BN into the pointwise conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            OrderedDict(
                depthwise=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
                pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                bn=nn.BatchNorm2d(out_channels),
            )
        )


class XceptionBlock(nn.Module):
    """[ReLU → SeparableConv]×n, a 3×3/stride max pool if strided, plus the shortcut (identity or 1×1 conv + BN)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], stride: int, relu_first: bool):
        super().__init__()
        out_channels = widths[-1]
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            if i > 0 or relu_first:
                # Not in place before the first conv: the shortcut still needs the block's input.
                layers.append(nn.ReLU(inplace=i > 0))
            layers.append(SeparableConv(channels, width))
            channels = width
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.shortcut(x)


@dataclass
class XceptionConfig:
    """Args:
    resolution: default input side (299 as the paper). Any size ≥ ``min_resolution`` runs.
    dropout: before the classifier (the paper uses none for ImageNet; 0.5 before the FC for JFT).
    stem_stride: 2 as the paper; 1 for 28–32 px images.
    """

    resolution: int = 299
    num_classes: int = 1000
    in_chans: int = 3
    dropout: float = 0.0
    stem_stride: int = 2

    @property
    def min_resolution(self) -> int:
        # Two unpadded 3×3 convs, then four stride-2 pools: the exit flow needs a map of at least 1×1.
        return 32 if self.stem_stride == 2 else 20

    def validate(self) -> XceptionConfig:
        check_config(self, "Xception")
        return self


class Xception(PooledClassifier):
    """Xception: a two-conv stem, 12 residual blocks of separable convs (3 entry, 8 middle, 1 exit), two separable
    convs to 2048 channels, global average pool, dropout, FC."""

    def __init__(self, cfg: XceptionConfig | None = None, **kwargs):
        super().__init__()
        cfg = (cfg or XceptionConfig(**kwargs)).validate()
        self.use_config(cfg)

        stem: list[nn.Module] = []
        channels, reduction = cfg.in_chans, 1
        for i, (width, stride) in enumerate(STEM):
            stride = cfg.stem_stride if i == 0 else stride
            stem += [nn.Conv2d(channels, width, 3, stride, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels, reduction = width, reduction * stride
        self.stem = nn.Sequential(*stem)
        layers = [("stem", channels, reduction)]
        blocks = []
        for i, (widths, stride, relu_first) in enumerate(BLOCKS):
            blocks.append(XceptionBlock(channels, widths, stride, relu_first))
            channels, reduction = widths[-1], reduction * stride
            layers.append((f"blocks.{i}", channels, reduction))
        self.blocks = nn.Sequential(*blocks)
        tail: list[nn.Module] = []
        for width in TAIL:
            tail += [SeparableConv(channels, width), nn.ReLU(inplace=True)]
            channels = width
        self.tail = nn.Sequential(*tail)
        layers.append(("tail", channels, reduction))
        self.feature_layer_names = [name for name, _, _ in layers]
        self.feature_info = feature_levels(layers)
        self.init_head(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.tail(self.blocks(self.stem(x)))


def xception(**kwargs) -> Xception:
    """Xception (its paper's Figure 5)."""
    return Xception(**kwargs)


FAMILIES = (
    Family(
        "xception",
        {"xception": xception},
        resolution=299,
        bench_models=("xception",),
        style=("C9", "X"),
        # Xception paper Table 3 (PAPER_PARAMS, in millions) and Table 1 (ImageNet top-1); it gives no Mult-Adds.
        paper_rows=(PaperRow("X 3", "Xception (299)", "79.0", "", "22.855952", "xception"),),
        reproduce=(ReproduceModel("xception", "xception", "Xception", ("tab:olive", "P")),),
        pattern="xception",
    ),
)
