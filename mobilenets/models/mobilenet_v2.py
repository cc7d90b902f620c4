"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.base import PooledClassifier, check_config, feature_levels, init_weights
from mobilenets.models.family import Family, PaperRow
from mobilenets.models.layers import (
    ConvBNAct,
    InvertedResidual,
    check_width_mult,
    get_activation,
    make_divisible,
    scale_channels,
)

# V2 paper Table 2, input 224×224×3.
STEM = (32, 2)  # (out_channels, stride) of the first, full 3×3 convolution
# (t expansion factor, c output channels, n repeats, s stride of the first repeat) per bottleneck sequence.
BLOCKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
LAST_CHANNELS = 1280  # the 1×1 conv before the pool; not thinned for α < 1 (V2 §6.1, TF-slim, torchvision)

# The narrowest layer of the table (16): α below 1/16 would scale it under one channel before rounding.
MIN_WIDTH_MULT = 1 / 16


def check_family_width_mult(width_mult: float, narrowest: int, family: str) -> float:
    """α must be a positive number that keeps the narrowest layer at one channel or more before rounding."""
    check_width_mult(width_mult)
    if width_mult * narrowest < 1:
        raise MobileNetsError(
            f"width_mult={width_mult:g} scales {family}'s {narrowest}-channel layers to "
            f"{width_mult * narrowest:.2g} channels, which rounds to nothing: use width_mult >= {1 / narrowest:g} "
            "(the papers use 0.35 to 1.4)"
        )
    return float(width_mult)


@dataclass
class MobileNetV2Config:
    """Every option of the family; the resolved config is what a run saves.

    Args:
        width_mult: α, scales every layer's channels (rounded to a multiple of 8) except the last conv's 1280,
            which only grows (α > 1), as in the paper.
        resolution: default input side (the paper uses 96..224). Any size ≥ ``min_resolution`` runs.
        act: "relu6" as in the paper, TF-slim and torchvision; "relu" also works.
        padding: "symmetric" (PyTorch) or "tf_same" (TensorFlow "SAME", for TF checkpoints).
        bn_eps: BatchNorm epsilon; torchvision uses 1e-5, TF-slim 1e-3.
        dropout: before the classifier; 0.2 as torchvision and Keras.
        stem_stride: 2 as in the paper; 1 for 28–32 px images.
    """

    width_mult: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    in_chans: int = 3
    act: str = "relu6"
    padding: str = "symmetric"
    bn_eps: float = 1e-5
    dropout: float = 0.2
    stem_stride: int = 2

    @property
    def min_resolution(self) -> int:
        return self.stem_stride * 2 ** sum(s == 2 for *_, s in BLOCKS)

    @property
    def last_channels(self) -> int:
        return make_divisible(LAST_CHANNELS * max(1.0, self.width_mult), 8)

    def validate(self) -> MobileNetV2Config:
        check_family_width_mult(self.width_mult, min(c for _, c, _, _ in BLOCKS), "MobileNetV2")
        get_activation(self.act)
        check_config(self, "MobileNetV2")
        return self


class MobileNetV2(PooledClassifier):
    """MobileNetV2: a 3×3 conv stem, 17 inverted residual bottlenecks, a 1×1 conv to 1280, pool, dropout, FC."""

    def __init__(self, cfg: MobileNetV2Config | None = None, **kwargs):
        super().__init__()
        cfg = (cfg or MobileNetV2Config(**kwargs)).validate()
        self.use_config(cfg)
        layer = dict(padding=cfg.padding, bn_eps=cfg.bn_eps)

        channels = scale_channels(STEM[0], cfg.width_mult)
        self.stem = ConvBNAct(cfg.in_chans, channels, 3, cfg.stem_stride, act=cfg.act, **layer)
        reduction = cfg.stem_stride
        layers = [("stem", channels, reduction)]  # (name, out_channels, stride so far) for feature_info
        blocks = []
        for t, c, n, s in BLOCKS:
            out_channels = scale_channels(c, cfg.width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                # The expansion is t times the block's (rounded) input width (Table 1 of the V2 paper).
                expanded = int(round(channels * t))
                blocks.append(InvertedResidual(channels, expanded, out_channels, stride, act=cfg.act, **layer))
                channels, reduction = out_channels, reduction * stride
                layers.append((f"blocks.{len(blocks) - 1}", channels, reduction))
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = ConvBNAct(channels, cfg.last_channels, 1, act=cfg.act, **layer)
        layers.append(("head_conv", cfg.last_channels, reduction))
        self.feature_layer_names = [name for name, _, _ in layers]
        # Feature levels in timm's convention: the 1×1 conv to 1280 counts as the head (timm's conv_head), so
        # stride 32's map is the last bottleneck's 320 channels; forward_features still ends after it.
        self.feature_info = feature_levels(layers[:-1])

        self.init_head(cfg.last_channels)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head_conv(self.blocks(self.stem(x)))


def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNetV2: inverted residuals with linear bottlenecks (V2 paper Table 2)."""
    return MobileNetV2(**kwargs)


# The paper's training recipe (`mobilenets train --preset paper`; mobilenets.training.config reads it from the
# declaration). lr_per_256 is scaled linearly to the batch size unless --lr is given: lr = lr_per_256 × batch / 256
# (Goyal et al.'s rule), so the paper's (lr, batch) pair is kept at its batch.
# V2 paper §6.1: "standard RMSPropOptimizer with both decay and momentum set to 0.9", weight decay 4e-5,
# "following MobileNetV1 setup" lr 0.045 decayed ×0.98 per epoch, batch 96 (16 asynchronous GPU workers:
# each update sees one worker's 96 images). Where the paper is silent it follows V1 (ε 1.0, crops ≥ 35%)
# and TF-slim's training scope (no weight decay on depthwise filters); the model's dropout stays 0.2.
PAPER_RECIPE = dict(
    optimizer="rmsprop",
    lr_per_256=0.045 * 256 / 96,
    momentum=0.9,
    rmsprop_eps=1.0,
    weight_decay=4e-5,
    depthwise_weight_decay=0.0,
    schedule="exponential",
    warmup_epochs=0.0,
    lr_decay=0.98,
    label_smoothing=0.0,
    ema_decay=0.0,
    crop_scale_min=0.35,
    translate=0.0,
    backbone_lr_scale=1.0,
)

# The V2 paper's Table 4. Parameters as the papers count them: conv and FC weights, with BatchNorm folded
# in (as for V1; TF-slim's table lists V2 1.0 at 3.47M, our 3.4698M).
PAPER_ROWS = (
    PaperRow("V2 4", "MobileNetV2 1.0", "72.0", "300", "3.4", "mobilenet_v2_1.0_224", "paper truncates: 300.77 as 300"),
    PaperRow(
        "V2 4",
        "MobileNetV2 1.4",
        "74.7",
        "585",
        "6.9",
        "mobilenet_v2_1.4_224",
        "TF-slim's 1.4 checkpoint (its table: 582M) and torchvision's width_mult=1.4 count as ours",
        params_note="TF-slim's table lists its 1.4 checkpoint at 6.06M, torchvision's width_mult=1.4 has 6.11M "
        "(with BN): both as ours; the paper's 6.9M fits no released implementation",
    ),
)

FAMILIES = (
    Family(
        "mobilenet_v2",
        {"mobilenet_v2": mobilenet_v2},
        # The V2 paper's grid (its Fig. 5 and the TF-slim checkpoints): widths 0.35..1.4 × resolutions 96..224.
        widths=(1.4, 1.3, 1.0, 0.75, 0.5, 0.35),
        resolutions=(224, 192, 160, 128, 96),
        bench_grid=((1.4, 1.0, 0.75, 0.5, 0.35), (224, 160, 128)),
        style=("C1", "s"),
        paper_recipe=PAPER_RECIPE,
        paper_rows=PAPER_ROWS,
        # timm's depth-scaled mobilenetv2_110d/_120d have no place in ours.
        importers={
            "timm": ("mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100", "mobilenetv2_140"),
            "torchvision": ("mobilenet_v2",),
        },
        pattern="mobilenet_v2[_{α}_{res}]",
    ),
)
