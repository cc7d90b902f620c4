"""Object detectors on MobileNet backbones: SSD300 (MobileNets paper Table 13) and SSDLite (V2/V3 papers), on
torchvision's SSD. ``create_detector("ssdlite320_mobilenet_v3_large", num_classes=21, size=256)``."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable

from mobilenets.detection.base import Detector
from mobilenets.detection.ssd import ssd300_mobilenet_v1
from mobilenets.detection.ssdlite import (
    load_torchvision_state_dict,
    ssdlite320_mobilenet_v1,
    ssdlite320_mobilenet_v2,
    ssdlite320_mobilenet_v3_large,
    ssdlite320_mobilenet_v3_small,
    torchvision_key_map,
)
from mobilenets.errors import MobileNetsError

__all__ = [
    "DETECTORS",
    "Detector",
    "create_detector",
    "detector_defaults",
    "is_detector",
    "list_detectors",
    "load_torchvision_state_dict",
    "torchvision_key_map",
]

DETECTORS: dict[str, Callable[..., Detector]] = {
    f.__name__: f
    for f in (
        ssd300_mobilenet_v1,
        ssdlite320_mobilenet_v1,
        ssdlite320_mobilenet_v2,
        ssdlite320_mobilenet_v3_large,
        ssdlite320_mobilenet_v3_small,
    )
}


def list_detectors(pattern: str = "*") -> list[str]:
    """Registered detector names matching a shell-style ``pattern`` (e.g. ``"ssdlite*"``)."""
    return sorted(n for n in DETECTORS if fnmatch.fnmatch(n, pattern))


def is_detector(name: str) -> bool:
    """Whether ``name`` is a registered detector (``ssd300_mobilenet_v1``, ``ssdlite320_mobilenet_v3_large``, ...)."""
    return name in DETECTORS


def detector_defaults(name: str) -> dict:
    """What a detector's name stands for: its input side (the number after ssd/ssdlite) and α 1."""
    if name not in DETECTORS:
        create_detector(name)  # the unknown-name error, with its did-you-mean
    return {"size": int(re.match(r"ssd(?:lite)?(\d+)_", name).group(1)), "width_mult": 1.0}


def create_detector(name: str, **kwargs) -> Detector:
    """Build a registered detector; keyword arguments go to its builder (``num_classes``, ``width_mult``,
    ``size``, ``anchor_generator``, SSD's thresholds, and per model ``reduced_tail`` or ``head_kernel``)."""
    if name not in DETECTORS:
        close = difflib.get_close_matches(name, list(DETECTORS), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise MobileNetsError(f"unknown detector {name!r}; {hint}valid names: {', '.join(list_detectors())}")
    try:
        return DETECTORS[name](**kwargs)
    except TypeError as e:
        if "keyword argument" not in str(e):
            raise
        raise MobileNetsError(f"{name} does not take the option {str(e).split('argument')[-1].strip()}") from None
