"""Model registry: every paper variant by name, e.g. ``create_model("mobilenet_v1_0.75_160")``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence

from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models.backbone import Backbone
from mobilenets.models.base import FeatureInfo, ImageClassifier
from mobilenets.models.densenet import DenseNet, densenet121, densenet169, densenet201
from mobilenets.models.layers import (
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    SqueezeExcite,
    make_divisible,
    scale_channels,
)
from mobilenets.models.mobilenet_v1 import (
    MobileNetV1,
    MobileNetV1Config,
    mobilenet_v1,
    mobilenet_v1_conv,
    mobilenet_v1_shallow,
)
from mobilenets.models.mobilenet_v2 import MobileNetV2, MobileNetV2Config, mobilenet_v2
from mobilenets.models.mobilenet_v3 import (
    MobileNetV3,
    MobileNetV3Config,
    mobilenet_v3_large,
    mobilenet_v3_large_minimal,
    mobilenet_v3_small,
    mobilenet_v3_small_minimal,
)
from mobilenets.models.squeezenet import (
    SqueezeNet,
    squeezenet1_0,
    squeezenet1_0_complex_bypass,
    squeezenet1_0_simple_bypass,
    squeezenet1_1,
    squeezenet1_1_complex_bypass,
    squeezenet1_1_simple_bypass,
)
from mobilenets.models.xception import Xception, XceptionConfig, xception

__all__ = [
    "Backbone",
    "ConvBNAct",
    "DenseNet",
    "DepthwiseSeparable",
    "FAMILY_GRIDS",
    "FeatureInfo",
    "ImageClassifier",
    "InvertedResidual",
    "MobileNetV1",
    "MobileNetV1Config",
    "MobileNetV2",
    "MobileNetV2Config",
    "MobileNetV3",
    "MobileNetV3Config",
    "SqueezeNet",
    "SqueezeExcite",
    "Xception",
    "XceptionConfig",
    "create_model",
    "list_models",
    "make_divisible",
    "model_defaults",
    "scale_channels",
]

# The paper's grid (Tables 6–7, Figures 4–5).
PAPER_WIDTHS = (1.0, 0.75, 0.5, 0.25)
PAPER_RESOLUTIONS = (224, 192, 160, 128)
# The V2 paper's grid (its Fig. 5 and the TF-slim checkpoints): widths 0.35..1.4 × resolutions 96..224.
V2_WIDTHS = (1.4, 1.3, 1.0, 0.75, 0.5, 0.35)
V2_RESOLUTIONS = (224, 192, 160, 128, 96)
# The V3 paper's Table 3 widths (TF-slim's and Keras's checkpoints), at the V1 paper's resolutions.
V3_WIDTHS = (1.0, 0.75)
V3_RESOLUTIONS = (224, 192, 160, 128)

# The α×ρ grid registered for each family (names ``{family}_{α}_{resolution}``).
FAMILY_GRIDS: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = {
    **{f: (PAPER_WIDTHS, PAPER_RESOLUTIONS) for f in ("mobilenet_v1", "mobilenet_v1_conv", "mobilenet_v1_shallow")},
    "mobilenet_v2": (V2_WIDTHS, V2_RESOLUTIONS),
    **{
        f"mobilenet_v3_{size}": (V3_WIDTHS, V3_RESOLUTIONS)
        for size in ("large", "small", "large_minimal", "small_minimal")
    },
}

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict]] = {}


def register_model(name: str, builder: Callable[..., nn.Module], **defaults) -> None:
    _REGISTRY[name] = (builder, defaults)


for _family, _builder in (
    ("mobilenet_v1", mobilenet_v1),
    ("mobilenet_v1_conv", mobilenet_v1_conv),
    ("mobilenet_v1_shallow", mobilenet_v1_shallow),
    ("mobilenet_v2", mobilenet_v2),
    ("mobilenet_v3_large", mobilenet_v3_large),
    ("mobilenet_v3_small", mobilenet_v3_small),
    ("mobilenet_v3_large_minimal", mobilenet_v3_large_minimal),
    ("mobilenet_v3_small_minimal", mobilenet_v3_small_minimal),
):
    register_model(_family, _builder, width_mult=1.0, resolution=224)
    _widths, _resolutions = FAMILY_GRIDS[_family]
    for _alpha in _widths:
        for _res in _resolutions:
            register_model(f"{_family}_{_alpha}_{_res}", _builder, width_mult=_alpha, resolution=_res)
for _name, _builder in (
    ("squeezenet1_0", squeezenet1_0),
    ("squeezenet1_1", squeezenet1_1),
    ("squeezenet1_0_simple_bypass", squeezenet1_0_simple_bypass),
    ("squeezenet1_0_complex_bypass", squeezenet1_0_complex_bypass),
    ("squeezenet1_1_simple_bypass", squeezenet1_1_simple_bypass),
    ("squeezenet1_1_complex_bypass", squeezenet1_1_complex_bypass),
    ("densenet121", densenet121),
    ("densenet169", densenet169),
    ("densenet201", densenet201),
):
    register_model(_name, _builder, resolution=224)
register_model("xception", xception, resolution=299)


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
        families = (
            "mobilenet_v1[_conv|_shallow][_{α}_{res}], mobilenet_v2[_{α}_{res}], "
            "mobilenet_v3_large|small[_minimal][_{α}_{res}], squeezenet1_0|1_1[_simple_bypass|_complex_bypass], "
            "densenet121/169/201, xception"
        )
        raise MobileNetsError(f"unknown model {name!r}; {hint}valid names: {families} (`mobilenets list` shows all)")
    return _REGISTRY[name]


def create_model(
    name: str, features_only: bool = False, out_indices: Sequence[int] | None = None, **kwargs
) -> ImageClassifier | Backbone:
    """Build a registered model. Keyword arguments override the name's defaults.

    Every family takes ``num_classes``, ``in_chans``, ``resolution`` and ``dropout``; the MobileNets also
    take ``width_mult``, ``padding``, ``bn_eps`` and ``stem_stride``, V1/V2 ``act`` and V3 ``layout``
    (see MobileNetV1Config, MobileNetV2Config, MobileNetV3Config).

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
