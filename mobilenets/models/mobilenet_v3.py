"""MobileNetV3 Large and Small (Howard et al., 2019, "Searching for MobileNetV3"), and the minimalistic
variants TF-slim and Keras define (no squeeze-and-excite, no hard-swish, 3×3 kernels only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.base import PooledClassifier, check_config, feature_levels, init_weights
from mobilenets.models.family import Family, PaperRow
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
        fixed_stem: keep the stem (and the first bneck's input) 16 channels wide whatever α: Keras's
            MobileNetV3 never scales its stem, and timm keeps it for α < 0.75 (``mobilenetv3_small_050``, the only
            checkpoint where it matters: at α 0.75 and 1 a scaled 16 rounds to 16 anyway). False: the stem is
            scaled and rounded like every other layer, as TF-slim and torchvision do.
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
    fixed_stem: bool = False
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
        in_nominal, channels = stem, stem if self.fixed_stem else scale_channels(stem, self.width_mult)
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


# The paper's training recipe (`mobilenets train --preset paper`; mobilenets.training.config reads it from the
# declaration). lr_per_256 is scaled linearly to the batch size unless --lr is given: lr = lr_per_256 × batch / 256
# (Goyal et al.'s rule), so the paper's (lr, batch) pair is kept at its batch.
# V3 paper §6.1: TensorFlow RMSProp, momentum 0.9, lr 0.1 at batch 4096 (4x4 TPU pod, 128 per chip),
# weight decay 1e-5, dropout 0.2 ("dropout of 0.8" is TF's keep probability), Inception preprocessing, and
# an EMA of the weights with decay 0.9999.
# The decay, "0.01 every 3 epochs", read literally (lr × 0.01^(epoch/3), TF's exponential_decay) leaves 1% of
# the rate after 3 epochs and 1e-6 after 9: training would stop in the first few percent of an ImageNet run,
# so it cannot be what was run. We take the reference implementation's schedule instead: ×0.97 every 2.4
# epochs (MnasNet's and EfficientNet's published schedule, the one timm's V3 recipe uses), 0.9874 per epoch,
# applied smoothly. RMSprop's ε, which the paper does not give, is 1e-3 as in the MnasNet/EfficientNet TPU
# training code (timm's --opt-eps 1e-3). With V1's ε 1.0 inside the root the update is nearly SGD's, and SGD
# at V3's rate (0.003 for batch 128) barely moves: 3 epochs of V3-Small α 0.5 on digits reached 30% test
# top-1 with ε 1.0, 38% with 1e-3.
# EMA: ModelEma ramps its decay as min(0.9999, (1 + step)/(10 + step)), so a run of N < 90,000 steps
# averages about its last N/9 steps (the 1,404 steps of a 3-epoch Fashion-MNIST run: the last ~150), and the
# paper's 0.9999 only binds in ImageNet-length runs; we keep it.
PAPER_RECIPE = dict(
    optimizer="rmsprop",
    lr_per_256=0.1 * 256 / 4096,
    momentum=0.9,
    rmsprop_eps=1e-3,
    weight_decay=1e-5,
    depthwise_weight_decay=0.0,  # TF-slim's training scope regularizes no depthwise filter
    schedule="exponential",
    warmup_epochs=0.0,
    lr_decay=0.97 ** (1 / 2.4),
    label_smoothing=0.0,
    ema_decay=0.9999,
    dropout=0.2,
    crop_scale_min=0.08,  # Inception's crops: 8% to 100% of the area
    translate=0.0,
    backbone_lr_scale=1.0,
)

# The V3 paper's Table 3 widths (TF-slim's and Keras's checkpoints), at the V1 paper's resolutions.
V3_WIDTHS = (1.0, 0.75)
V3_RESOLUTIONS = (224, 192, 160, 128)

# The V3 paper's Table 3 by size (the minimalistic rows from TF-slim's and Keras's checkpoint tables). Parameters as
# the papers count them: conv and FC weights, with BatchNorm folded in.
TF_SLIM_SMALL_NOTE = (
    "TF-slim's and Keras's checkpoint tables list Small-minimalistic at 65M, but they also list Small 1.0 at 66M "
    "where the V3 paper says 56M (ours 56.51): their counter adds ~10M to the Small models; by the paper's "
    "counting, the same layers (no SE, 3×3, ReLU) are {ours}M"
)
PAPER_ROWS = {
    "large": (
        PaperRow(
            "V3 3",
            "MobileNetV3-Large 1.0",
            "75.2",
            "219",
            "5.4",
            "mobilenet_v3_large_1.0_224",
            "torchvision's mobilenet_v3_large counts the same {ours}M with our profiler; TF-slim's table lists 217M; "
            "the paper's 219 is 1.1% above every implementation",
        ),
        PaperRow("V3 3", "MobileNetV3-Large 0.75", "73.3", "155", "4.0", "mobilenet_v3_large_0.75_224"),
    ),
    "small": (
        PaperRow("V3 3", "MobileNetV3-Small 1.0", "67.4", "56", "2.5", "mobilenet_v3_small_1.0_224"),
        PaperRow(
            "V3 3",
            "MobileNetV3-Small 0.75",
            "65.4",
            "44",
            "2.0",
            "mobilenet_v3_small_0.75_224",
            "the paper's layout, {ours}M, is the closest implementation (torchvision's width_mult=0.75 is lower still)",
        ),
    ),
    "large_minimal": (
        PaperRow("V3 3", "MobileNetV3-Large min 1.0", "72.3", "209", "3.9", "mobilenet_v3_large_minimal_1.0_224"),
    ),
    "small_minimal": (
        PaperRow(
            "V3 3",
            "MobileNetV3-Small min 1.0",
            "61.9",
            "65",
            "2.0",
            "mobilenet_v3_small_minimal_1.0_224",
            TF_SLIM_SMALL_NOTE,
        ),
    ),
}

# The timm and torchvision models whose every tensor has a place in ours, timm's own PyTorch training before the
# tf_ ports of Google's weights (a file whose name says neither is taken for the first of its width).
# mobilenetv3_small_050 keeps its stem 16 channels wide (MobileNetV3Config.fixed_stem; the importer reads it from
# the stem's tensor). Not here: timm's depth-scaled mobilenetv3_large_150d and mobilenetv3_rw; timm's minimal
# models are all TF ports.
IMPORTERS = {
    "large": {
        "timm": (
            "mobilenetv3_large_075",
            "mobilenetv3_large_100",
            "tf_mobilenetv3_large_075",
            "tf_mobilenetv3_large_100",
        ),
        "torchvision": ("mobilenet_v3_large",),
    },
    "small": {
        "timm": (
            "mobilenetv3_small_050",
            "mobilenetv3_small_075",
            "mobilenetv3_small_100",
            "tf_mobilenetv3_small_075",
            "tf_mobilenetv3_small_100",
        ),
        "torchvision": ("mobilenet_v3_small",),
    },
    "large_minimal": {"timm": ("tf_mobilenetv3_large_minimal_100",)},
    "small_minimal": {"timm": ("tf_mobilenetv3_small_minimal_100",)},
}

FAMILIES = tuple(
    Family(
        f"mobilenet_v3_{size}",
        {f"mobilenet_v3_{size}": builder},
        widths=V3_WIDTHS,
        resolutions=V3_RESOLUTIONS,
        bench_grid=((1.0,), (224,)) if "minimal" in size else (V3_WIDTHS, (224, 160, 128)),
        style=style,
        paper_recipe=PAPER_RECIPE,
        paper_rows=PAPER_ROWS[size],
        importers=IMPORTERS[size],
        pattern="mobilenet_v3_large|small[_minimal][_{α}_{res}]" if size == "large" else "",
    )
    for size, builder, style in (
        ("large", mobilenet_v3_large, ("C2", "^")),
        ("small", mobilenet_v3_small, ("C3", "v")),
        ("large_minimal", mobilenet_v3_large_minimal, ("C4", "D")),
        ("small_minimal", mobilenet_v3_small_minimal, ("C5", "P")),
    )
)
