"""The model API every family shares (after timm): forward_features, forward_head, reset_classifier."""

from __future__ import annotations

import torch
from torch import nn

from mobilenets.errors import MobileNetsError


def check_resolution(resolution: int, min_resolution: int, name: str) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise MobileNetsError(f"resolution must be an integer number of pixels, got {resolution!r}")
    if resolution < min_resolution:
        raise MobileNetsError(
            f"resolution {resolution} is too small for {name}: use an input of at least "
            f"{min_resolution}x{min_resolution} pixels"
        )
    return resolution


class ImageClassifier(nn.Module):
    """Base of every model here. Subclasses set the attributes below and define the two forward halves.

    Attributes:
        num_classes: outputs of the classifier (0 = no classifier, ``forward`` returns pooled features).
        num_features: channels entering the classifier.
        in_chans: input channels the stem expects.
        resolution: default (square) input size, the size the model's name carries.
        min_resolution: smallest input side the network accepts.
    """

    num_classes: int
    num_features: int
    in_chans: int
    resolution: int
    min_resolution: int

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise MobileNetsError(
                f"{type(self).__name__} expects input of shape (batch, {self.in_chans}, H, W), got "
                f"{tuple(x.shape)}; build it with in_chans={x.shape[1] if x.ndim == 4 else '?'} "
                "or convert the images"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
