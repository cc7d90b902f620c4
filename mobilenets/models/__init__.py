"""Model registry: every paper variant by name, e.g. ``create_model("mobilenet_v1_0.75_160")``."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Sequence

from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.backbone import Backbone
from mobilenets.models.base import FeatureInfo, ImageClassifier
from mobilenets.models.densenet import DenseNet
from mobilenets.models.family import Family, base_name
from mobilenets.models.layers import (
    ConvBNAct,
    DepthwiseSeparable,
    FusedInvertedBottleneck,
    InvertedResidual,
    MobileMQA,
    SqueezeExcite,
    UniversalInvertedBottleneck,
    make_divisible,
    scale_channels,
)
from mobilenets.models.mobilenet_v1 import MobileNetV1, MobileNetV1Config
from mobilenets.models.mobilenet_v2 import MobileNetV2, MobileNetV2Config
from mobilenets.models.mobilenet_v3 import MobileNetV3, MobileNetV3Config
from mobilenets.models.mobilenet_v4 import MobileNetV4, MobileNetV4Config
from mobilenets.models.squeezenet import SqueezeNet
from mobilenets.models.xception import Xception, XceptionConfig

__all__ = [
    "Backbone",
    "ConvBNAct",
    "DenseNet",
    "DepthwiseSeparable",
    "FAMILIES",
    "FAMILY_GRIDS",
    "Family",
    "FeatureInfo",
    "FusedInvertedBottleneck",
    "ImageClassifier",
    "InvertedResidual",
    "MobileMQA",
    "MobileNetV1",
    "MobileNetV1Config",
    "MobileNetV2",
    "MobileNetV2Config",
    "MobileNetV3",
    "MobileNetV3Config",
    "MobileNetV4",
    "MobileNetV4Config",
    "SqueezeNet",
    "SqueezeExcite",
    "UniversalInvertedBottleneck",
    "Xception",
    "XceptionConfig",
    "base_name",
    "create_model",
    "family_of",
    "list_models",
    "make_divisible",
    "model_defaults",
    "scale_channels",
]


def _declared_families() -> dict[str, Family]:
    """Every family a module of this package declares (``FAMILIES`` at the end of its model file), by module
    name: a new family is its model file, with nothing to list elsewhere."""
    families: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        for family in getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILIES", ()):
            if family.name in families:
                raise RuntimeError(f"model family {family.name!r} is declared twice (in {info.name}.py)")
            families[family.name] = family
    return families


FAMILIES: dict[str, Family] = _declared_families()
# The α×ρ grid registered for each family that has one (names ``{family}_{α}_{resolution}``).
FAMILY_GRIDS: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = {
    f.name: (f.widths, f.resolutions) for f in FAMILIES.values() if f.has_grid
}

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict]] = {}
_FAMILY_OF: dict[str, str] = {}


def register_model(name: str, builder: Callable[..., nn.Module], family: str | None = None, **defaults) -> None:
    _REGISTRY[name] = (builder, defaults)
    if family is not None:
        _FAMILY_OF[name] = family


for _family in FAMILIES.values():
    for _name, (_builder, _defaults) in _family.registered().items():
        register_model(_name, _builder, _family.name, **_defaults)


def family_of(name: str) -> Family:
    """The declaration of the family a registered name belongs to: ``mobilenet_v3_small_0.75_160`` →
    mobilenet_v3_small's, ``squeezenet1_0_simple_bypass`` → squeezenet's."""
    _lookup(name)
    return FAMILIES[_FAMILY_OF[name]]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"mobilenet_v1_0.5*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_defaults(name: str) -> dict:
    """The keyword arguments a name stands for, e.g. ``{"width_mult": 0.75, "resolution": 160}``."""
    return dict(_lookup(name)[1])


def _lookup(name: str) -> tuple[Callable[..., nn.Module], dict]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        families = ", ".join(f.pattern for f in FAMILIES.values() if f.pattern)
        raise MobileNetsError(f"unknown model {name!r}; {hint}valid names: {families} (`mobilenets list` shows all)")
    return _REGISTRY[name]


def create_model(
    name: str, features_only: bool = False, out_indices: Sequence[int] | None = None, **kwargs
) -> ImageClassifier | Backbone:
    """Build a registered model. Keyword arguments override the name's defaults.

    Every family takes ``num_classes``, ``in_chans``, ``resolution`` and ``dropout``; the MobileNets also
    take ``width_mult``, ``padding``, ``bn_eps`` and ``stem_stride``, V1/V2 ``act`` and V3 ``layout``
    (see MobileNetV1Config, MobileNetV2Config, MobileNetV3Config, MobileNetV4Config).

    Args:
        features_only: return a :class:`Backbone` whose forward gives the list of feature maps (as timm's),
            by default the stride-8/16/32 maps; ``.feature_info`` gives their channels and reductions.
        out_indices: with ``features_only``, the levels to return, indices into the model's ``feature_info``
            (MobileNets: 0..4 = strides 2, 4, 8, 16, 32).
    """
    if out_indices is not None and not features_only:
        raise MobileNetsError("out_indices selects feature maps: pass features_only=True with it")
    builder, defaults = _lookup(name)
    kwargs = {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    try:
        model = builder(**kwargs)
    except TypeError as e:
        # "unexpected keyword argument 'x'", or "got multiple values for keyword argument 'size'" where the
        # name fixes the option (mobilenet_v3_large is size="large").
        if "keyword argument" not in str(e):
            raise
        bad = str(e).split("argument")[-1].strip()
        raise MobileNetsError(f"{name} does not take the option {bad}") from None
    return Backbone(model, out_indices) if features_only else model
