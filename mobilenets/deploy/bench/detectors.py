"""The detectors' part of the grid: SSD300 and SSDLite at each α and input size, their exact costs and the COCO mAP
the papers print.

A detector's grid row is named ``DETECTOR_α_SIZE``: ``ssdlite320_mobilenet_v3_large_0.5_256`` is
``create_detector("ssdlite320_mobilenet_v3_large", width_mult=0.5, size=256)``, with COCO's 91 classes as the papers.
Its latency is one image's whole path, from the image tensor to boxes, labels and scores, on eager or a detector
file (``latency.make_runner``).
Its accuracy is the papers' COCO mAP where one is printed for that model, at α 1 and its own input size
(:func:`mobilenets.detection.costs.paper_map`); nothing is interpolated: detection mAP is not known to follow
Mult-Adds the way ImageNet top-1 does within a family.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch

from mobilenets.detection import Detector, create_detector, detector_defaults, list_detectors
from mobilenets.detection.costs import detector_costs, paper_map
from mobilenets.errors import MobileNetsError

# The name `--family` takes for every detector.
ALIAS = "detectors"
# Each detector's default grid: these widths at its own input size, and these sizes at α 1 (the shape of the V1
# paper's Tables 6–7, which the classifiers' grid follows). Any α and size can be asked for.
WIDTHS = (1.0, 0.75, 0.5)
SIZES = (256, 192)


def names() -> list[str]:
    """The registered detectors, each a family of the grid."""
    return list_detectors()


def axes(detector: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The widths and input sizes of ``detector``'s default grid (its own size first)."""
    own = detector_defaults(detector)["size"]
    return WIDTHS, (own, *(s for s in SIZES if s != own))


def grid_names(detector: str, widths: Iterable[float] | None = None, sizes: Iterable[int] | None = None) -> list[str]:
    """``detector``'s grid rows: its widths at its own size and its sizes at α 1 unless told; else every
    ``widths`` × ``sizes`` pair (the one not given: the default axis). A width or size the detector cannot be built
    at is an error, before any measuring."""
    own_widths, own_sizes = axes(detector)
    if widths is None and sizes is None:
        pairs = [(w, own_sizes[0]) for w in own_widths] + [(1.0, s) for s in own_sizes[1:]]
    else:
        pairs = [
            (w, s) for w in (own_widths if widths is None else widths) for s in (own_sizes if sizes is None else sizes)
        ]
    out = [f"{detector}_{float(w)}_{s}" for w, s in dict.fromkeys(pairs)]
    for name in out:
        try:
            costs(name)  # builds it (shapes only): a bad α or size fails here, before any measuring
        except MobileNetsError as e:
            raise MobileNetsError(f"{name}: {e}") from None
    return out


def parse(name: str) -> tuple[str, float, int]:
    """``ssdlite320_mobilenet_v3_large_0.5_256`` → (``ssdlite320_mobilenet_v3_large``, 0.5, 256)."""
    detector, width_mult, size = name.rsplit("_", 2)
    return detector, float(width_mult), int(size)


def build(name: str) -> Detector:
    """The detector of a grid row, in eval mode, untrained (latency does not depend on the weights' values, except
    through how many boxes reach NMS: see ``latency.make_runner``)."""
    detector, width_mult, size = parse(name)
    return create_detector(detector, width_mult=width_mult, size=size).eval()


@functools.cache
def costs(name: str) -> tuple[int, int]:
    """(Mult-Adds, parameters) of a grid row's detector (:func:`~mobilenets.detection.costs.detector_costs`: the
    backbone, extra layers and head; box decoding and NMS hold no Mult-Adds of a layer), counted on the meta device."""
    detector, width_mult, size = parse(name)
    with torch.device("meta"):
        model = create_detector(detector, width_mult=width_mult, size=size)
    counted = detector_costs(model)
    return counted.mult_adds, counted.params


@functools.cache
def coco_map(name: str) -> tuple[float | None, str]:
    """The papers' COCO mAP (%) of a grid row and where it is printed; (None, "") for any α or size no paper
    printed one for."""
    detector, width_mult, size = parse(name)
    if width_mult != 1.0 or size != detector_defaults(detector)["size"]:
        return None, ""
    return paper_map(detector) or (None, "")
