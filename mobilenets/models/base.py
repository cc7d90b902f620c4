"""The model API every family shares (after timm): forward_features, forward_head, reset_classifier, and
the backbone half: ``feature_info``, ``forward_intermediates``, ``prune_intermediate_layers``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

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


def check_config(cfg, family: str) -> None:
    """The checks every model config shares: stem stride, dropout, class and channel counts, resolution."""
    if cfg.stem_stride not in (1, 2):
        raise MobileNetsError(f"stem_stride must be 1 or 2, got {cfg.stem_stride}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise MobileNetsError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.num_classes < 0 or cfg.in_chans < 1:
        raise MobileNetsError(f"num_classes must be >= 0 and in_chans >= 1, got {cfg.num_classes}, {cfg.in_chans}")
    check_resolution(cfg.resolution, cfg.min_resolution, family)


def init_weights(model: nn.Module) -> None:
    """The MobileNets' initialization (torchvision's V2/V3 one, and V1's): He (fan-out) convs, unit BN, N(0, 0.01)
    linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class FeatureInfo(list):
    """The feature levels a model can hand out, in timm's convention: a list of dicts
    ``{"num_chs": channels, "reduction": stride w.r.t. the input, "module": layer name}``, shallowest first,
    with timm's accessors ``channels()``, ``reduction()`` and ``module_name()``."""

    def channels(self, idx: int | None = None) -> int | list[int]:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> int | list[int]:
        return self._get("reduction", idx)

    def module_name(self, idx: int | None = None) -> str | list[str]:
        return self._get("module", idx)

    def get_dicts(self) -> list[dict]:
        return [dict(d) for d in self]

    def _get(self, key: str, idx: int | None):
        return [d[key] for d in self] if idx is None else self[idx][key]


def feature_levels(layers: Sequence[tuple[str, int, int]]) -> FeatureInfo:
    """One level per reduction: the last of ``layers`` ((name, out_channels, reduction), in forward order)
    whose output is at that reduction — the deepest map at each stride, as timm taps its stage ends."""
    levels: dict[int, dict] = {}
    for name, channels, reduction in layers:
        levels[reduction] = {"num_chs": channels, "reduction": reduction, "module": name}
    return FeatureInfo(levels.values())


def take_indices(num_levels: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's rule: None = every level, an int n = the last n levels, a sequence = those levels (may be < 0)."""
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= num_levels:
            raise MobileNetsError(f"indices={indices} asks for the last {indices} of {num_levels} feature levels")
        return list(range(num_levels - indices, num_levels))
    taken = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_levels <= i < num_levels:
            raise MobileNetsError(
                f"feature level {i!r} does not exist: this model has {num_levels} levels, "
                f"0..{num_levels - 1} (see model.feature_info)"
            )
        taken.append(i % num_levels)
    if not taken or len(set(taken)) != len(taken) or taken != sorted(taken):
        raise MobileNetsError(f"feature levels must be distinct and ordered shallow to deep, got {list(indices)}")
    return taken


def run_feature_layers(
    layers: Sequence[nn.Module], taps: Sequence[int], x: torch.Tensor, stop_early: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``layers`` in order, keeping the outputs of the layers numbered in ``taps``."""
    intermediates = []
    last = max(taps) if taps else -1
    for i, layer in enumerate(layers):
        x = layer(x)
        if i in taps:
            intermediates.append(x)
        if stop_early and i >= last:
            break
    return x, intermediates


class ImageClassifier(nn.Module):
    """Base of every model here. Subclasses set the attributes below and define the two forward halves.

    Attributes:
        num_classes: outputs of the classifier (0 = no classifier, ``forward`` returns pooled features).
        num_features: channels entering the classifier.
        in_chans: input channels the stem expects.
        resolution: default (square) input size, the size the model's name carries.
        min_resolution: smallest input side the network accepts.
        feature_info: the feature maps it can hand out as a backbone (:class:`FeatureInfo`), one per stride.
        feature_layer_names: ``forward_features`` as a flat list of submodule names run in order;
            ``feature_info``'s "module" entries are among them.
        classifier_name: the attribute holding the classifier; parameters whose name starts with it are the
            head (fine-tuning gives them their own learning rate), all others are the backbone.
    """

    num_classes: int
    num_features: int
    in_chans: int
    resolution: int
    min_resolution: int
    feature_info: FeatureInfo
    feature_layer_names: list[str]
    classifier_name: str = "classifier"

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

    def feature_layers(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.feature_layer_names]

    def feature_taps(self, indices: int | Sequence[int] | None = None) -> list[int]:
        """Positions in ``feature_layer_names`` of the levels ``indices`` selects (see :func:`take_indices`)."""
        names = [self.feature_info[i]["module"] for i in take_indices(len(self.feature_info), indices)]
        return [self.feature_layer_names.index(n) for n in names]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        stop_early: bool = False,
        intermediates_only: bool = False,
        output_fmt: str = "NCHW",
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of the levels ``indices`` selects (indices into ``feature_info``), as timm's.

        Args:
            indices: None = every level, an int n = the last n levels, a list = those levels.
            stop_early: stop after the deepest level asked for (implied by ``intermediates_only``).
            intermediates_only: return only the list of maps; otherwise ``(forward_features(x), maps)``.
            output_fmt: "NCHW" or "NHWC" for the returned maps.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise MobileNetsError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        self.check_input(x)
        taps = self.feature_taps(indices)
        x, maps = run_feature_layers(self.feature_layers(), taps, x, stop_early or intermediates_only)
        if output_fmt == "NHWC":
            maps = [m.permute(0, 2, 3, 1) for m in maps]
        return maps if intermediates_only else (x, maps)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] | None = None, prune_head: bool = True
    ) -> list[int]:
        """Drop the layers past the deepest level ``indices`` selects, and the classifier; returns the levels.

        Their parameters are gone afterwards (a backbone counts and stores only what it runs).
        """
        levels = take_indices(len(self.feature_info), indices)
        last = max(self.feature_taps(levels))
        for name in self.feature_layer_names[last + 1 :]:
            parent, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent), child, nn.Identity())
        self.feature_layer_names = self.feature_layer_names[: last + 1]
        self.feature_info = FeatureInfo(d for d in self.feature_info if d["module"] in self.feature_layer_names)
        if prune_head:
            self.reset_classifier(0)
        return levels


class PooledClassifier(ImageClassifier):
    """A model whose head is global average pooling, dropout and a linear classifier (MobileNetV1/V2/V3, Xception).

    Subclasses keep their config dataclass in ``self.cfg`` and call :meth:`init_head` after the body. A model
    with a hidden head layer (MobileNetV3) overrides :meth:`pre_logits` and sets ``head_hidden_size``.
    """

    cfg: object

    def use_config(self, cfg) -> None:
        """Keep the validated config and the attributes every model exposes from it."""
        self.cfg = cfg
        self.num_classes, self.in_chans = cfg.num_classes, cfg.in_chans
        self.resolution, self.min_resolution = cfg.resolution, cfg.min_resolution

    def init_head(self, num_features: int, hidden: int | None = None) -> None:
        self.num_features = num_features
        self.head_hidden_size = hidden or num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(self.cfg.dropout)
        self.reset_classifier(self.cfg.num_classes)

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.global_pool(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.classifier(self.dropout(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = self.cfg.num_classes = num_classes
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()

    def config_dict(self) -> dict:
        return asdict(self.cfg)
