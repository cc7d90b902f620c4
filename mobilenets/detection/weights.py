"""torchvision's SSDLite weights as a detector run's ``model.pt``: ``mobilenets import-weights
ssdlite320_mobilenet_v3_large_coco-a79551df.pth -o ssdlite_coco.pt``.

The output has the layout ``mobilenets train`` writes for a detector (meta + state dict), so ``predict``, ``eval``,
``export`` and ``train --init`` read it as any trained detector. The network (V3-Large or Small, reduced tail or
not, the number of classes) is read from the tensors' shapes; torchvision's labels are COCO's category ids (1..90,
"N/A" for the ten ids COCO does not use), kept as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from mobilenets.detection.base import Detector
from mobilenets.detection.ssdlite import build_ssdlite, load_torchvision_state_dict
from mobilenets.errors import MobileNetsError

CLASS_CONV = "head.classification_head.module_list.0.1.weight"  # (anchors × classes, C4 channels, 1, 1)
ANCHORS_C4 = 6
CANDIDATES = [(b, r) for b in ("mobilenet_v3_large", "mobilenet_v3_small") for r in (True, False)]


def is_torchvision_ssdlite(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict has torchvision's SSDLite layout (``backbone.features.0…`` and an SSDLite head)."""
    return CLASS_CONV in state and any(k.startswith("backbone.features.0.0.") for k in state)


def coco_classes(num_classes: int) -> list[str]:
    """torchvision's COCO names for labels 1..num_classes-1 (``classes[i]`` names label i + 1)."""
    from torchvision.models._meta import _COCO_CATEGORIES

    if num_classes == len(_COCO_CATEGORIES):
        return list(_COCO_CATEGORIES[1:])
    return [f"class {i}" for i in range(1, num_classes)]


def detector_from_torchvision(state: Mapping[str, torch.Tensor]) -> tuple[Detector, dict, str]:
    """Our detector holding a torchvision SSDLite state dict, its ``model_kwargs`` and its registered name: the
    first of V3-Large/Small with or without reduced tail whose every tensor fits."""
    if not is_torchvision_ssdlite(state):
        raise MobileNetsError("not a torchvision SSDLite state dict (no backbone.features.0 / SSDLite head keys)")
    num_classes = state[CLASS_CONV].shape[0] // ANCHORS_C4
    errors = []
    for backbone, reduced_tail in CANDIDATES:
        kwargs = dict(num_classes=num_classes, reduced_tail=reduced_tail)
        model = build_ssdlite(backbone, **kwargs)
        try:
            load_torchvision_state_dict(model, state)
        except MobileNetsError as e:
            errors.append(str(e))
            continue
        return model.eval(), dict(kwargs, width_mult=1.0, size=list(model.resolution)), f"ssdlite320_{backbone}"
    raise MobileNetsError(
        "the state dict fits none of ssdlite320_mobilenet_v3_large/_small (reduced tail or not) at α 1; "
        f"first mismatch: {errors[0]}"
    )


def import_torchvision_ssdlite(state: Mapping[str, torch.Tensor], output: str | os.PathLike, source: str) -> dict:
    """Write ``output`` (a ``model.pt``) from a torchvision SSDLite state dict; returns its meta."""
    from mobilenets.io import atomic_path

    output = Path(output)
    if output.suffix not in (".pt", ".pth"):
        raise MobileNetsError(f"a detector is written as a model.pt (-o NAME.pt), got {output.name!r}")
    model, kwargs, name = detector_from_torchvision(state)
    meta = dict(
        task="detection",
        model=name,
        model_kwargs=kwargs,
        classes=coco_classes(kwargs["num_classes"]),
        category_ids=list(range(1, kwargs["num_classes"])),
        resolution=kwargs["size"],
        in_chans=3,
        dataset="coco (torchvision's weights)",
        init=dict(source=dict(format="torchvision_ssdlite", file=Path(source).name), notes=[]),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        torch.save(dict(meta=meta, config={}, model=model.state_dict(), ema=None), tmp)
    return meta
