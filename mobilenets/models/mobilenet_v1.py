"""MobileNetV1 (Howard et al., 2017) and the paper's two ablations: Conv MobileNet and Shallow MobileNet."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.base import PooledClassifier, check_config, feature_levels, init_weights
from mobilenets.models.family import Family, PaperRow, ReproduceModel
from mobilenets.models.layers import (
    ConvBNAct,
    DepthwiseSeparable,
    check_width_mult,
    get_activation,
    scale_channels,
)

# Paper Table 1, input 224×224×3.
STEM = (32, 2)  # (out_channels, stride) of the first, full 3×3 convolution
# (out_channels, stride) per depthwise separable block; the stride is the depthwise conv's.
# Table 1 prints the last block's stride as 2 at a 7×7 input: a typo (its output is 7×7), stride 1 here.
BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,  # the five 14×14×512 blocks that Shallow MobileNet removes (Table 5)
    (1024, 2),
    (1024, 1),
]
SHALLOW_REMOVED = range(6, 11)  # indices of those five blocks in BLOCKS

VARIANTS = ("separable", "conv", "shallow")


@dataclass
class MobileNetV1Config:
    """Every option of the family; the resolved config is what a run saves.

    Args:
        width_mult: α, scales every layer's channels (rounded to a multiple of 8, at least 8).
        resolution: default input side (224·ρ). Any size ≥ ``min_resolution`` runs: the head pools globally.
        variant: "separable" (MobileNet), "conv" (every separable block a full 3×3 conv, Table 4) or
            "shallow" (the five 14×14×512 blocks removed, Table 5).
        act: "relu" as in the paper, or "relu6" as TF-slim/Keras checkpoints use.
        padding: "symmetric" (PyTorch) or "tf_same" (TensorFlow "SAME": exact outputs for TF weights).
        bn_eps: BatchNorm epsilon; TF checkpoints use 1e-3.
        stem_stride: 2 as in the paper; 1 for small images (28–32 px), which halves the output stride
            to 16 so a 28-px image still ends on a 2×2 map instead of 1×1.
    """

    width_mult: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    in_chans: int = 3
    variant: str = "separable"
    act: str = "relu"
    padding: str = "symmetric"
    bn_eps: float = 1e-5
    dropout: float = 0.0
    stem_stride: int = 2

    def blocks(self) -> list[tuple[int, int]]:
        if self.variant == "shallow":
            return [b for i, b in enumerate(BLOCKS) if i not in SHALLOW_REMOVED]
        return list(BLOCKS)

    @property
    def min_resolution(self) -> int:
        # Output stride: stem stride × the stride-2 blocks. Below it the last stages see 1×1 maps of padding.
        return self.stem_stride * 2 ** sum(s == 2 for _, s in BLOCKS)

    def validate(self) -> MobileNetV1Config:
        check_width_mult(self.width_mult)
        if self.variant not in VARIANTS:
            raise MobileNetsError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        get_activation(self.act)
        check_config(self, "MobileNetV1")
        return self


class MobileNetV1(PooledClassifier):
    """MobileNetV1: a full 3×3 conv stem, 13 depthwise separable blocks, global average pool, dropout, FC."""

    def __init__(self, cfg: MobileNetV1Config | None = None, **kwargs):
        super().__init__()
        cfg = (cfg or MobileNetV1Config(**kwargs)).validate()
        self.use_config(cfg)
        layer = dict(act=cfg.act, padding=cfg.padding, bn_eps=cfg.bn_eps)

        channels = scale_channels(STEM[0], cfg.width_mult)
        self.stem = ConvBNAct(cfg.in_chans, channels, 3, cfg.stem_stride, **layer)
        reduction = cfg.stem_stride
        layers = [("stem", channels, reduction)]  # (name, out_channels, stride so far) for feature_info
        blocks = []
        for i, (out_channels, stride) in enumerate(cfg.blocks()):
            out_channels = scale_channels(out_channels, cfg.width_mult)
            if cfg.variant == "conv":
                blocks.append(ConvBNAct(channels, out_channels, 3, stride, **layer))
            else:
                blocks.append(DepthwiseSeparable(channels, out_channels, stride, **layer))
            channels, reduction = out_channels, reduction * stride
            layers.append((f"blocks.{i}", channels, reduction))
        self.blocks = nn.Sequential(*blocks)
        # Backbone taps: the last block at each stride (blocks.0/2/4/10/12 at strides 2..32, as timm's stages).
        self.feature_layer_names = [name for name, _, _ in layers]
        self.feature_info = feature_levels(layers)
        self.init_head(channels)
        init_weights(self)  # He (fan-out) convs, unit BN, N(0, 0.01) classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.blocks(self.stem(x))


def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet: depthwise separable blocks (paper Table 1)."""
    return MobileNetV1(**kwargs)


def mobilenet_v1_conv(**kwargs) -> MobileNetV1:
    """Conv MobileNet: each separable block replaced by a full 3×3 conv (paper Table 4)."""
    return MobileNetV1(variant="conv", **kwargs)


def mobilenet_v1_shallow(**kwargs) -> MobileNetV1:
    """Shallow MobileNet: the five 14×14×512 separable blocks removed (paper Table 5)."""
    return MobileNetV1(variant="shallow", **kwargs)


# The paper's training recipe (`mobilenets train --preset paper`; mobilenets.training.config reads it from the
# declaration). lr_per_256 is scaled linearly to the batch size unless --lr is given: lr = lr_per_256 × batch / 256
# (Goyal et al.'s rule), so the paper's (lr, batch) pair is kept at its batch.
# V1 paper §3.2, after Inception V3.
PAPER_RECIPE = dict(
    optimizer="rmsprop",  # TF-style: decay 0.9, momentum 0.9, epsilon 1.0 (see RMSpropTF)
    lr_per_256=0.045 * 8,  # Inception V3's 0.045 was for batch 32
    momentum=0.9,
    rmsprop_eps=1.0,  # Inception V3's
    weight_decay=4e-5,
    depthwise_weight_decay=0.0,  # "very little or no weight decay on the depthwise filters"
    schedule="exponential",
    warmup_epochs=0.0,
    lr_decay=0.94**0.5,  # Inception V3: ×0.94 every two epochs, applied smoothly per step here
    label_smoothing=0.0,  # "no label smoothing"
    ema_decay=0.0,
    crop_scale_min=0.35,  # "limit the size of small crops" (Inception uses 0.08)
    translate=0.0,
    backbone_lr_scale=1.0,
)

# The V1 paper's grid (Tables 6-7, Figures 4-5): α ∈ {1, .75, .5, .25} × ρ ∈ {224, 192, 160, 128}.
PAPER_WIDTHS = (1.0, 0.75, 0.5, 0.25)
PAPER_RESOLUTIONS = (224, 192, 160, 128)

# The paper's Tables 4–9 rows of MobileNets and its two ablations (../shared/PAPER.md), in the paper's order;
# Tables 8–9 add baselines that are no family of ours (mobilenets.paper.BASELINE_ROWS).
PAPER_ROWS = (
    PaperRow(
        "4",
        "Conv MobileNet",
        "71.7",
        "4866",
        "29.3",
        "mobilenet_v1_conv_1.0_224",
        "the paper's 4866 is our count without the FC layer (1.02M); with it 4867",
        mult_adds_without_fc=True,
    ),
    PaperRow("4", "MobileNet", "70.6", "569", "4.2", "mobilenet_v1_1.0_224"),
    PaperRow("5", "0.75 MobileNet", "68.4", "325", "2.6", "mobilenet_v1_0.75_224"),
    PaperRow("5", "Shallow MobileNet", "65.3", "307", "2.9", "mobilenet_v1_shallow_1.0_224"),
    PaperRow("6", "1.0 MobileNet-224", "70.6", "569", "4.2", "mobilenet_v1_1.0_224"),
    PaperRow("6", "0.75 MobileNet-224", "68.4", "325", "2.6", "mobilenet_v1_0.75_224"),
    PaperRow(
        "6", "0.5 MobileNet-224", "63.7", "149", "1.3", "mobilenet_v1_0.5_224", "paper truncates: 149.50 printed as 149"
    ),
    PaperRow("6", "0.25 MobileNet-224", "50.6", "41", "0.5", "mobilenet_v1_0.25_224"),
    PaperRow("7", "1.0 MobileNet-224", "70.6", "569", "4.2", "mobilenet_v1_1.0_224"),
    PaperRow("7", "1.0 MobileNet-192", "69.1", "418", "4.2", "mobilenet_v1_1.0_192"),
    PaperRow(
        "7", "1.0 MobileNet-160", "67.2", "290", "4.2", "mobilenet_v1_1.0_160", "paper truncates: 290.68 printed as 290"
    ),
    PaperRow("7", "1.0 MobileNet-128", "64.4", "186", "4.2", "mobilenet_v1_1.0_128"),
    PaperRow("8", "1.0 MobileNet-224", "70.6", "569", "4.2", "mobilenet_v1_1.0_224"),
    PaperRow(
        "9", "0.50 MobileNet-160", "60.2", "76", "1.32", "mobilenet_v1_0.5_160", "paper truncates: 76.52 printed as 76"
    ),
)

FAMILIES = (
    Family(
        "mobilenet_v1",
        {"mobilenet_v1": mobilenet_v1},
        widths=PAPER_WIDTHS,
        resolutions=PAPER_RESOLUTIONS,
        bench_grid=(PAPER_WIDTHS, PAPER_RESOLUTIONS),
        paper_recipe=PAPER_RECIPE,
        paper_rows=PAPER_ROWS,  # the ablations' rows too, in the paper's order
        reproduce=(ReproduceModel("mobilenet", "mobilenet_v1", "MobileNet"),),
        style=("C0", "o"),
        pattern="mobilenet_v1[_conv|_shallow][_{α}_{res}]",
    ),
    Family(
        "mobilenet_v1_conv",
        {"mobilenet_v1_conv": mobilenet_v1_conv},
        widths=PAPER_WIDTHS,
        resolutions=PAPER_RESOLUTIONS,
        paper_recipe=PAPER_RECIPE,
        reproduce=(ReproduceModel("conv", "mobilenet_v1_conv", "Conv MobileNet", ("tab:red", "s")),),
    ),
    Family(
        "mobilenet_v1_shallow",
        {"mobilenet_v1_shallow": mobilenet_v1_shallow},
        widths=PAPER_WIDTHS,
        resolutions=PAPER_RESOLUTIONS,
        paper_recipe=PAPER_RECIPE,
        reproduce=(ReproduceModel("shallow", "mobilenet_v1_shallow", "Shallow MobileNet", ("tab:purple", "D")),),
    ),
)
