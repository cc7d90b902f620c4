"""A model's feature maps for a detection or segmentation head (paper §4.6: SSD and Faster R-CNN on MobileNet)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mobilenets.models.base import FeatureInfo, ImageClassifier, run_feature_layers


def default_out_indices(model: ImageClassifier) -> tuple[int, ...]:
    """The three deepest levels: strides 8, 16 and 32 on the MobileNets and DenseNets (4, 8, 16 on SqueezeNet)."""
    n = len(model.feature_info)
    return tuple(range(max(0, n - 3), n))


class Backbone(nn.Module):
    """``model`` without its head, returning the list of feature maps at ``out_indices`` (timm's FeatureListNet).

    The model is pruned in place: the classifier and every layer past the deepest level asked for are dropped,
    so parameters, Mult-Adds and the state dict are the backbone's alone. Its layers keep their names, so the
    full model's state dict loads with ``strict=False``. ``feature_info`` lists the selected levels
    (``channels()``, ``reduction()``), e.g. ``[256, 512, 1024]`` and ``[8, 16, 32]`` for MobileNet 1.0.

    Args:
        model: any registered model (e.g. ``create_model(...)`` or ``weights.pretrained_model()[0]``).
        out_indices: indices into ``model.feature_info`` (negative counts from the deepest); default the three
            deepest levels.
    """

    def __init__(self, model: ImageClassifier, out_indices: Sequence[int] | None = None):
        super().__init__()
        out_indices = default_out_indices(model) if out_indices is None else out_indices
        levels = model.prune_intermediate_layers(list(out_indices))
        self.feature_info = FeatureInfo(model.feature_info[i] for i in levels)
        self.out_indices = tuple(levels)
        self.layer_names = list(model.feature_layer_names)
        self.taps = model.feature_taps(levels)
        # Take over the model's top-level modules that hold feature layers, under their own names.
        for name in dict.fromkeys(n.split(".")[0] for n in self.layer_names):
            self.add_module(name, model.get_submodule(name))
        self.in_chans, self.resolution, self.min_resolution = model.in_chans, model.resolution, model.min_resolution
        self.model_name = type(model).__name__

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ImageClassifier.check_input(self, x)
        layers = [self.get_submodule(name) for name in self.layer_names]
        return run_feature_layers(layers, self.taps, x, stop_early=True)[1]

    def extra_repr(self) -> str:
        return f"model={self.model_name}, out_indices={self.out_indices}, channels={self.feature_info.channels()}"
