"""torchvision MobileNet state dicts (``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small``, any
``width_mult``), mapped to our names with every shape checked.

torchvision's conventions go into the card: V2 has ReLU6 and BN ε = 1e-5, V3 BN ε = 1e-3; PyTorch (symmetric)
padding; the eval transform of its ImageNet weights (bilinear resize of the shorter side to 256, central 224,
ImageNet mean/std; the IMAGENET1K_V2 recipes resize to 232, within a pixel of the same crop). For α ≠ 1 V3 scales
the table's expansion widths and the head, which is our ``layout="torchvision"``; α is read from the tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from mobilenets.errors import MobileNetsError
from mobilenets.models import FAMILIES
from mobilenets.models.mobilenet_v2 import BLOCKS as V2_BLOCKS
from mobilenets.models.mobilenet_v3 import SIZES as V3_SIZES
from mobilenets.weights.cards import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    Preprocessing,
    class_names_for,
    fit_model_kwargs,
    width_mult_candidates,
)

TORCHVISION_PREPROCESSING = Preprocessing(
    crop="resize_shorter", crop_pct=224 / 256, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD
)


def is_torchvision_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    return "features.0.0.weight" in sd and any(re.match(r"features\.1\.(conv|block)\.", k) for k in sd)


def torchvision_to_ours(
    sd: Mapping[str, torch.Tensor], where: str, source: dict | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Map a torchvision ``mobilenet_v2``/``mobilenet_v3_large``/``mobilenet_v3_small`` state dict to our names
    and describe it in a card (α, classes and V3's layout from the shapes)."""
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    version = "mobilenet_v3" if any(re.match(r"features\.\d+\.block\.", k) for k in sd) else "mobilenet_v2"
    inner = "block" if version == "mobilenet_v3" else "conv"
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(rf"features\.(\d+)\.{inner}\.", k))})
    if blocks != list(range(1, len(blocks) + 1)):
        raise MobileNetsError(f"{where}: torchvision blocks features.{blocks} are not numbered 1..N")
    last = len(blocks) + 1
    if version == "mobilenet_v2":
        arch, paper_last = "mobilenet_v2", V2_BLOCKS[-1][1]
        renames = {"features.0.0.": "stem.conv.", "features.0.1.": "stem.bn.", "classifier.1.": "classifier."}
        renames |= {f"features.{last}.0.": "head_conv.conv.", f"features.{last}.1.": "head_conv.bn."}
    else:
        size = {len(rows): s for s, (rows, *_) in V3_SIZES.items()}.get(len(blocks))
        if size is None:
            raise MobileNetsError(
                f"{where} has {len(blocks)} inverted residual blocks: not torchvision's mobilenet_v3_large (15) or "
                "mobilenet_v3_small (11)"
            )
        arch, paper_last = f"mobilenet_v3_{size}", V3_SIZES[size][0][-1][2]
        renames = {"features.0.0.": "stem.conv.", "features.0.1.": "stem.bn."}
        renames |= {f"features.{last}.0.": "last_conv.conv.", f"features.{last}.1.": "last_conv.bn."}
        renames |= {"classifier.0.": "head.", "classifier.3.": "classifier."}
    for b in blocks:
        renames |= _block_renames(sd, f"features.{b}.{inner}.", f"blocks.{b - 1}.", version)
    tensors, unknown = {}, []
    for key, value in sd.items():
        prefix = next((p for p in renames if key.startswith(p) and "." not in key[len(p) :]), None)
        if prefix is None:
            unknown.append(key)
        else:
            tensors[renames[prefix] + key[len(prefix) :]] = value
    if unknown:
        raise MobileNetsError(
            f"{where}: torchvision tensors {', '.join(unknown[:3])} have no counterpart in our {arch} "
            "(dilated or reduced-tail models cannot be imported)"
        )
    if "classifier.weight" not in tensors:
        raise MobileNetsError(f"{where} has no classifier weight: an incomplete torchvision state dict")
    alphas = width_mult_candidates(tensors, f"blocks.{len(blocks) - 1}.project.conv.weight", paper_last, where)
    num_classes = int(tensors["classifier.weight"].shape[0])
    if version == "mobilenet_v2":
        conventions = [dict(act="relu6", padding="symmetric", bn_eps=1e-5)]
    else:  # the layouts agree at α = 1, where the default is kept
        conventions = [
            dict(padding="symmetric", bn_eps=1e-3, layout="torchvision"),
            dict(padding="symmetric", bn_eps=1e-3),
        ]
    candidates = [
        dict(width_mult=a, resolution=224, num_classes=num_classes, **c)
        for a in alphas
        for c in (conventions[::-1] if a == 1.0 else conventions)
    ]
    kwargs = fit_model_kwargs(arch, candidates, tensors, where, f"torchvision's {arch} α={alphas[0]:g}")
    width_mult = kwargs["width_mult"]
    tv_name = FAMILIES[arch].importers["torchvision"][0]
    source = dict(source or {"format": "torchvision_state_dict"})
    source.setdefault("origin", f"torchvision {tv_name}(width_mult={width_mult:g}) (pytorch/vision, BSD-3-Clause)")
    card = ModelCard(
        arch=arch,
        model_kwargs=kwargs,
        preprocessing=Preprocessing(**vars(TORCHVISION_PREPROCESSING)),
        class_names=class_names_for(kwargs["num_classes"]),
        source=source,
    )
    return tensors, card


def _block_renames(sd: Mapping[str, torch.Tensor], theirs: str, ours: str, version: str) -> dict[str, str]:
    """Prefix renames of one torchvision inverted residual.

    Its parts are numbered in order: [expand 1×1 (absent when the expansion is 1)], depthwise, [SE, V3], project.
    V2 writes the project conv and BN as two parts, V3 as one ConvBNActivation; V3's SE is fc1/fc2.
    """
    first = sd.get(f"{theirs}0.0.weight")
    expands = first is not None and first.shape[1] != 1  # a depthwise conv has one input channel per group
    parts = (["expand"] if expands else []) + ["depthwise"]
    if version == "mobilenet_v3" and any(k.startswith(f"{theirs}{len(parts)}.fc1.") for k in sd):
        parts.append("se")
    renames = {}
    for i, part in enumerate(parts):
        if part == "se":
            renames |= {f"{theirs}{i}.fc1.": f"{ours}se.reduce.", f"{theirs}{i}.fc2.": f"{ours}se.expand."}
        else:
            renames |= {f"{theirs}{i}.0.": f"{ours}{part}.conv.", f"{theirs}{i}.1.": f"{ours}{part}.bn."}
    n = len(parts)
    if version == "mobilenet_v2":
        renames |= {f"{theirs}{n}.": f"{ours}project.conv.", f"{theirs}{n + 1}.": f"{ours}project.bn."}
    else:
        renames |= {f"{theirs}{n}.0.": f"{ours}project.conv.", f"{theirs}{n}.1.": f"{ours}project.bn."}
    return renames
