"""DenseNet-121/169/201 (Huang et al., 2017): dense blocks with bottlenecks and compressing transitions."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.base import ImageClassifier, check_resolution, feature_levels
from mobilenets.models.family import Family, ReproduceModel

# DenseNet paper Table 1 (the "BC" variants, as torchvision builds them): dense layers per block.
BLOCK_CONFIGS = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
}


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1×1 (bottleneck to bn_size·k channels) → BN-ReLU-Conv3×3 (k = growth rate new maps)."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and every earlier layer's output."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size) for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1×1 (compressing channels by θ) then 2×2 average pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(ImageClassifier):
    def __init__(
        self,
        depth: int = 121,
        growth_rate: int = 32,
        bn_size: int = 4,
        compression: float = 0.5,
        num_init_features: int = 64,
        num_classes: int = 1000,
        in_chans: int = 3,
        resolution: int = 224,
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth not in BLOCK_CONFIGS:
            raise MobileNetsError(f"unknown DenseNet depth {depth}; choose one of {sorted(BLOCK_CONFIGS)}")
        if not 0 < compression <= 1 or growth_rate < 1 or bn_size < 1:
            raise MobileNetsError(
                f"need 0 < compression <= 1, growth_rate >= 1, bn_size >= 1; got {compression}, "
                f"{growth_rate}, {bn_size}"
            )
        self.num_classes, self.in_chans = num_classes, in_chans
        self.min_resolution = 32  # output stride 32: stem conv /2, max pool /2, three transitions /2
        self.resolution = check_resolution(resolution, self.min_resolution, f"densenet{depth}")

        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(in_chans, num_init_features, 7, 2, 3, bias=False),
            norm0=nn.BatchNorm2d(num_init_features),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(3, 2, 1),
        )
        channels = num_init_features
        # (name, out_channels, stride) per layer for feature_info: relu0, each dense block, relu5 as timm taps.
        specs = [(f"features.{n}", channels, s) for n, s in (("conv0", 2), ("norm0", 2), ("relu0", 2), ("pool0", 4))]
        block_config = BLOCK_CONFIGS[depth]
        for i, num_layers in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = DenseBlock(num_layers, channels, growth_rate, bn_size)
            channels += num_layers * growth_rate
            specs.append((f"features.denseblock{i + 1}", channels, specs[-1][2]))
            if i != len(block_config) - 1:
                out_channels = int(channels * compression)
                layers[f"transition{i + 1}"] = Transition(channels, out_channels)
                channels = out_channels
                specs.append((f"features.transition{i + 1}", channels, specs[-1][2] * 2))
        layers["norm5"] = nn.BatchNorm2d(channels)
        layers["relu5"] = nn.ReLU(inplace=True)
        specs += [("features.norm5", channels, specs[-1][2]), ("features.relu5", channels, specs[-1][2])]
        self.features = nn.Sequential(layers)
        self.num_features = channels
        self.feature_layer_names = [name for name, _, _ in specs]
        self.feature_info = feature_levels(specs)

        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.global_pool(x))
        return x if pre_logits else self.classifier(self.dropout(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


def densenet121(**kwargs) -> DenseNet:
    return DenseNet(121, **kwargs)


def densenet169(**kwargs) -> DenseNet:
    return DenseNet(169, **kwargs)


def densenet201(**kwargs) -> DenseNet:
    return DenseNet(201, **kwargs)


FAMILIES = (
    Family(
        "densenet",
        {"densenet121": densenet121, "densenet169": densenet169, "densenet201": densenet201},
        pattern="densenet121/169/201",
        reproduce=(ReproduceModel("densenet", "densenet121", "DenseNet-121", ("tab:gray", "v")),),
    ),
)
