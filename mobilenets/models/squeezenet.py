"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016), the efficient design MobileNet is compared with in Table 9, with
the SqueezeNet paper's simple and complex bypass variants (its §6, Figure 2, Table 6)."""

from __future__ import annotations

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.base import ImageClassifier, check_resolution, feature_levels
from mobilenets.models.family import Family, PaperRow, ReproduceModel

# SqueezeNet paper Table 1 / Fig. 2, as torchvision builds it. Each fire module i has e_i expand filters
# (half 1×1, half 3×3 at pct_3x3 = 0.5) and s_i = squeeze_ratio · e_i squeeze filters (SR = 0.125).
FIRE_EXPANDS = [128, 128, 256, 256, 384, 384, 512, 512]
VERSIONS = {
    # version: (stem out_channels, stem kernel, fire indices preceded by a 3×3/2 max pool)
    "1_0": (96, 7, (3, 7)),
    "1_1": (64, 3, (2, 4)),  # 2.4× less compute than 1.0 at about the same accuracy
}
# SqueezeNet paper §6 / Figure 2: the simple bypass adds an identity shortcut around the fire modules whose input
# and output widths match (fire3, fire5, fire7, fire9 — indices 1, 3, 5, 7 of FIRE_EXPANDS); the complex bypass
# also adds a 1×1 conv shortcut around the others (fire2, fire4, fire6, fire8).
BYPASSES = ("none", "simple", "complex")


class Fire(nn.Module):
    """Squeeze (1×1 conv) then expand (1×1 and 3×3 convs side by side, concatenated), optionally with a bypass:
    the input added to the output, through a 1×1 conv (``shortcut``) where the widths differ."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: bool = False):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_act = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_act = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=True)
        self.residual = bypass
        out_channels = expand1x1 + expand3x3
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if bypass and in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_act(self.squeeze(x))
        out = torch.cat([self.expand1x1_act(self.expand1x1(s)), self.expand3x3_act(self.expand3x3(s))], 1)
        if not self.residual:
            return out
        return out + (x if self.shortcut is None else self.shortcut(x))


class SqueezeNet(ImageClassifier):
    """SqueezeNet: a conv stem, eight fire modules with three max pools, a 1×1 conv classifier."""

    def __init__(
        self,
        version: str = "1_0",
        num_classes: int = 1000,
        in_chans: int = 3,
        resolution: int = 224,
        squeeze_ratio: float = 0.125,
        pct_3x3: float = 0.5,
        dropout: float = 0.5,
        bypass: str = "none",
    ):
        super().__init__()
        if version not in VERSIONS:
            raise MobileNetsError(f"unknown SqueezeNet version {version!r}; choose one of {', '.join(VERSIONS)}")
        if bypass not in BYPASSES:
            raise MobileNetsError(f"unknown SqueezeNet bypass {bypass!r}; choose one of {', '.join(BYPASSES)}")
        self.bypass = bypass
        if not 0 < squeeze_ratio <= 1 or not 0 < pct_3x3 < 1:
            raise MobileNetsError(
                f"squeeze_ratio must be in (0, 1] and pct_3x3 in (0, 1), got {squeeze_ratio}, {pct_3x3}"
            )
        stem_channels, stem_kernel, pool_before = VERSIONS[version]
        self.num_classes, self.in_chans = num_classes, in_chans
        # Stem conv (no padding, stride 2) and three 3×3/2 ceil-mode pools: below ~48 px a map hits 0.
        self.min_resolution = 48
        self.resolution = check_resolution(resolution, self.min_resolution, f"squeezenet{version}")

        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, stem_channels, stem_kernel, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        ]
        channels = stem_channels
        # (name, out_channels, nominal stride) per layer for feature_info; the unpadded stem and ceil-mode pools
        # make the real maps a pixel or two smaller than input / stride. The deepest level is stride 16.
        specs = [("features.0", channels, 2), ("features.1", channels, 2), ("features.2", channels, 4)]
        for i, expand in enumerate(FIRE_EXPANDS):
            if i in pool_before:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                specs.append((f"features.{len(layers) - 1}", channels, specs[-1][2] * 2))
            expand3x3 = round(expand * pct_3x3)
            squeeze = max(1, round(expand * squeeze_ratio))
            wrapped = bypass == "complex" or (bypass == "simple" and channels == expand)
            layers.append(Fire(channels, squeeze, expand - expand3x3, expand3x3, bypass=wrapped))
            channels = expand
            specs.append((f"features.{len(layers) - 1}", channels, specs[-1][2]))
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.feature_layer_names = [name for name, _, _ in specs]
        self.feature_info = feature_levels(specs)
        self.dropout = nn.Dropout(dropout)
        self.reset_classifier(num_classes)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.classifier:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.flatten(self.global_pool(x))
        x = self.classifier_act(self.classifier(self.dropout(x)))
        return self.flatten(self.global_pool(x))

    def reset_classifier(self, num_classes: int) -> None:
        # The classifier is a 1×1 conv + ReLU before the pool: SqueezeNet has no FC layer.
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(self.num_features, num_classes, 1) if num_classes else nn.Identity()
        self.classifier_act = nn.ReLU(inplace=True) if num_classes else nn.Identity()


def squeezenet1_0(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_0", **kwargs)


def squeezenet1_1(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_1", **kwargs)


def squeezenet1_0_simple_bypass(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0 with identity shortcuts around fire3/5/7/9 (SqueezeNet paper Table 6: 60.4% top-1)."""
    return SqueezeNet("1_0", bypass="simple", **kwargs)


def squeezenet1_0_complex_bypass(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0 with identity shortcuts and 1×1 conv shortcuts around the other fires (Table 6: 58.8%)."""
    return SqueezeNet("1_0", bypass="complex", **kwargs)


def squeezenet1_1_simple_bypass(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_1", bypass="simple", **kwargs)


def squeezenet1_1_complex_bypass(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_1", bypass="complex", **kwargs)


FAMILIES = (
    Family(
        "squeezenet",
        {
            "squeezenet1_0": squeezenet1_0,
            "squeezenet1_1": squeezenet1_1,
            "squeezenet1_0_simple_bypass": squeezenet1_0_simple_bypass,
            "squeezenet1_0_complex_bypass": squeezenet1_0_complex_bypass,
            "squeezenet1_1_simple_bypass": squeezenet1_1_simple_bypass,
            "squeezenet1_1_complex_bypass": squeezenet1_1_complex_bypass,
        },
        # The SqueezeNet paper's Table 6 rows (and 1.1, its cheaper follow-up) at 224 px, counted as α = 1.
        bench_models=("squeezenet1_0", "squeezenet1_0_simple_bypass", "squeezenet1_0_complex_bypass", "squeezenet1_1"),
        style=("C8", "*"),
        paper_rows=(
            # The MobileNets paper's Table 9: SqueezeNet 1.0 beside 0.50 MobileNet-160.
            PaperRow(
                "9",
                "SqueezeNet",
                "57.5",
                "1700",
                "1.25",
                "squeezenet1_0",
                "SqueezeNet 1.0 counted layer by layer is 819M multiply-adds; the paper's 1700 is ~2× that "
                "(1638M if multiplies and adds were counted separately)",
            ),
            # The SqueezeNet paper's Table 6: ImageNet top-1 and model size (MB of 32-bit weights), no Mult-Adds.
            PaperRow("SQ 6", "SqueezeNet 1.0", "57.5", "", "", "squeezenet1_0", size_mb="4.8"),
            PaperRow("SQ 6", "SqueezeNet simple bypass", "60.4", "", "", "squeezenet1_0_simple_bypass", size_mb="4.8"),
            PaperRow(
                "SQ 6",
                "SqueezeNet complex bypass",
                "58.8",
                "",
                "",
                "squeezenet1_0_complex_bypass",
                params_note="our four 1×1 conv shortcuts (fire2/4/6/8, with biases) add {extra:,} parameters; the "
                "paper's 7.7 MB would need about twice that, which its description (1×1 convs where the widths "
                "differ) does not account for",
                size_mb="7.7",
            ),
        ),
        # `reproduce` keys: "squeezenet" (1.1, in Tables 8-9) predates the Table 6 runs of 1.0.
        reproduce=(
            ReproduceModel("squeezenet", "squeezenet1_1", "SqueezeNet 1.1", ("tab:brown", "^")),
            ReproduceModel("squeezenet1_0", "squeezenet1_0", "SqueezeNet 1.0", ("tab:orange", "<")),
            ReproduceModel(
                "squeezenet_simple", "squeezenet1_0_simple_bypass", "SqueezeNet 1.0 simple bypass", ("tab:orange", ">")
            ),
            ReproduceModel(
                "squeezenet_complex",
                "squeezenet1_0_complex_bypass",
                "SqueezeNet 1.0 complex bypass",
                ("tab:orange", "X"),
            ),
        ),
        pattern="squeezenet1_0|1_1[_simple_bypass|_complex_bypass]",
    ),
)
