"""SSDLite (MobileNetV2 paper §6.2; MobileNetV3 paper §6.3) on MobileNetV2 and MobileNetV3, laid out as
torchvision's ``torchvision/models/detection/ssdlite.py`` so that its state dicts map onto ours
(:func:`load_torchvision_state_dict`).

Six feature maps feed the head: C4, the output of the *expansion* conv of the last stride-2 bottleneck (stride
16), the backbone's last 1×1 conv (stride 32), and four extra blocks that halve the map each time. Every head
and extra layer is depthwise separable, which is what makes SSD "Lite" (V2 Table 5: 2.1M / 0.35B against
SSD's 14.8M / 1.25B for the head alone).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssdlite import SSDLiteHead

from mobilenets.detection.base import (
    ASPECT_RATIOS,
    EXTRA_DEPTHS,
    MAX_SCALE,
    MIN_SCALE,
    Detector,
    SSDHead,
    check_detector_args,
    extra_depth,
    normal_init,
    set_bn_momentum,
)
from mobilenets.detection.ssd import SSDFeatures
from mobilenets.detection.ssd import extra_block as ssd_extra_block
from mobilenets.errors import MobileNetsError
from mobilenets.models.layers import ConvBNAct, DepthwiseSeparable, InvertedResidual, make_divisible, scale_channels
from mobilenets.models.mobilenet_v1 import MobileNetV1
from mobilenets.models.mobilenet_v2 import MobileNetV2
from mobilenets.models.mobilenet_v3 import SIZES, MobileNetV3

# The bottleneck whose expansion conv is C4 (0-based index into the model's ``blocks``): the last stride-2 one.
# V3 paper §6.3: "the 13th bottleneck block" of Large, the 9th of Small. V2 paper §6.2: "the expansion of layer
# 15", in TF's numbering where layer_1 is the stem conv: the 14th bottleneck, the first of the 160-channel stage.
C4_BLOCK = {"mobilenet_v2": 13, "mobilenet_v3_large": 12, "mobilenet_v3_small": 8}
BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # torchvision's SSDLite (TF's 1e-3; its decay 0.997 would be momentum 0.003)
# torchvision's SSDLite settings for evaluation, normalization to [-1, 1] as the TF checkpoints were trained with.
DEFAULTS = dict(
    score_thresh=0.001,
    nms_thresh=0.55,
    detections_per_img=300,
    topk_candidates=300,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)


def extra_block(in_channels: int, depth: int, width_mult: float = 1.0) -> nn.Sequential:
    """An SSDLite extra layer: 1×1 conv to half the channels, then a stride-2 depthwise separable conv (ReLU6)."""
    out_channels = extra_depth(depth, width_mult)
    mid = out_channels // 2
    layer = dict(act="relu6", bn_eps=BN_EPS)
    return nn.Sequential(
        OrderedDict(
            reduce=ConvBNAct(in_channels, mid, 1, **layer),
            separable=DepthwiseSeparable(mid, out_channels, stride=2, **layer),
        )
    )


class SSDLiteFeatures(nn.Module):
    """A MobileNetV2/V3 classifier's layers up to its last 1×1 conv, plus four extra blocks: six feature maps.

    The classifier's layers keep their names (``stem``, ``blocks.N``, ``last_conv`` or ``head_conv``), so a
    classifier's state dict initializes the backbone. ``out_channels`` lists the six maps' channels.
    """

    def __init__(
        self,
        classifier: MobileNetV2 | MobileNetV3,
        c4_block: int,
        width_mult: float = 1.0,
        extra_block: Callable[[int, int, float], nn.Module] = extra_block,
    ):
        super().__init__()
        if classifier.blocks[c4_block].use_residual or isinstance(classifier.blocks[c4_block].expand, nn.Identity):
            raise MobileNetsError(f"block {c4_block} has no expansion conv to take C4 from")
        self.c4_block = c4_block
        self.stem, self.blocks = classifier.stem, classifier.blocks
        self.last_name = "last_conv" if hasattr(classifier, "last_conv") else "head_conv"
        self.add_module(self.last_name, getattr(classifier, self.last_name))

        c4 = self.blocks[c4_block].expand.conv.out_channels
        channels = getattr(self, self.last_name).conv.out_channels
        self.out_channels = [c4, channels]
        extra = []
        for depth in EXTRA_DEPTHS:
            extra.append(extra_block(channels, depth, width_mult))
            channels = extra_depth(depth, width_mult)
            self.out_channels.append(channels)
        self.extra = nn.ModuleList(extra)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            if i == self.c4_block:
                x = block.expand(x)
                maps.append(x)
                x = block.project(block.se(block.depthwise(x)))  # stride 2: no residual
            else:
                x = block(x)
        x = getattr(self, self.last_name)(x)
        maps.append(x)
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def reduce_tail(model: MobileNetV3, c4_block: int) -> None:
    """Halve the channels of the blocks from C4's on (C4's output and the later blocks' expansion and output)
    and so the last 1×1 conv's: V3 paper §6.3's "reduced tail" (Table 6: same mAP, 35% fewer parameters), as
    torchvision's ``reduced_tail=True``."""
    cfg = model.cfg
    bnecks = cfg.bnecks()
    rows = SIZES[cfg.size][0]
    layer = dict(padding=cfg.padding, bn_eps=cfg.bn_eps)
    in_c = bnecks[c4_block][0]
    for i in range(c4_block, len(bnecks)):
        _, expanded, _, kernel, _, act, stride = bnecks[i]
        _, exp, c, se, _, _ = rows[i]
        out_c = scale_channels(c // 2, cfg.width_mult)
        if i > c4_block:
            # The table's exp/in ratio on the rounded input ("tf"), or the halved exp size scaled by α.
            tf_layout = cfg.layout == "tf"
            expanded = make_divisible(in_c * exp / c, 8) if tf_layout else scale_channels(exp // 2, cfg.width_mult)
        squeeze = make_divisible(expanded / 4, 8) if se and not cfg.minimal else None
        model.blocks[i] = InvertedResidual(in_c, expanded, out_c, stride, kernel, act, squeeze, **layer)
        in_c = out_c
    last = model.last_conv.conv.out_channels // bnecks[-1][2] * in_c  # 6× the last bneck's width, as the full tail
    model.last_conv = ConvBNAct(in_c, last, 1, act=cfg.act("HS"), **layer)


def build_ssdlite(
    backbone: str,
    *,
    num_classes: int = 91,
    width_mult: float = 1.0,
    size: int | Sequence[int] = 320,
    reduced_tail: bool = False,
    anchor_generator: DefaultBoxGenerator | None = None,
    backbone_kwargs: Mapping | None = None,
    lite: bool = True,
    **kwargs,
) -> Detector:
    """The detectors of this module, by backbone name ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small"). ``backbone_kwargs`` go to the classifier's config (e.g. ``{"layout": "torchvision"}``
    for V3's widths at α ≠ 1 as torchvision's). ``lite=False`` puts SSD's full 3×3 convs in the extra layers and
    head instead (the V2 paper's Table 5 "SSD" row, which costs.py counts)."""
    backbone_kwargs = {"width_mult": width_mult, "bn_eps": BN_EPS, **(backbone_kwargs or {})}
    if backbone == "mobilenet_v1":
        classifier = MobileNetV1(act="relu6", **backbone_kwargs)
    elif backbone == "mobilenet_v2":
        classifier = MobileNetV2(**backbone_kwargs)
    else:
        classifier = MobileNetV3(size=backbone.rsplit("_", 1)[1], **backbone_kwargs)
    hw = check_detector_args(num_classes, size, classifier.min_resolution)
    if reduced_tail:
        if not backbone.startswith("mobilenet_v3"):
            raise MobileNetsError(f"reduced_tail is MobileNetV3's option (V3 paper §6.3), not {backbone}'s")
        reduce_tail(classifier, C4_BLOCK[backbone])
    extra = extra_block if lite else ssd_extra_block
    if backbone == "mobilenet_v1":
        # V1 has no expansion conv: conv11 and conv13, as SSD300's, with SSDLite's extra layers.
        features = SSDFeatures(classifier, width_mult, extra)
    else:
        features = SSDLiteFeatures(classifier, C4_BLOCK[backbone], width_mult, extra)
    anchor_generator = anchor_generator or DefaultBoxGenerator([ASPECT_RATIOS] * 6, MIN_SCALE, MAX_SCALE)
    num_anchors = anchor_generator.num_anchors_per_location()
    if lite:
        norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
        head = SSDLiteHead(features.out_channels, num_anchors, num_classes, norm_layer)
    else:
        head = SSDHead(features.out_channels, num_anchors, num_classes, kernel_size=3)
    # From scratch, TF's and torchvision's N(0, 0.03) for every conv, the backbone's included.
    normal_init(features)
    set_bn_momentum(features, BN_MOMENTUM)
    config = dict(
        name=f"ssdlite320_{backbone}" if lite else f"ssd320_{backbone}",
        backbone=backbone,
        num_classes=num_classes,
        width_mult=width_mult,
        size=list(hw),
        reduced_tail=reduced_tail,
    )
    return Detector(
        features, head, anchor_generator, hw, num_classes, classifier.min_resolution, config, **{**DEFAULTS, **kwargs}
    )


def ssdlite320_mobilenet_v3_large(*, reduced_tail: bool = True, **kwargs) -> Detector:
    """SSDLite on MobileNetV3-Large (V3 paper Table 6), torchvision's ``ssdlite320_mobilenet_v3_large``.

    ``reduced_tail`` defaults to True as torchvision's model trained from scratch and its COCO weights (3,440,060
    parameters); False is the paper's first row (the full backbone, which an ImageNet classifier initializes).
    Other arguments: ``num_classes`` (background included, 91 for COCO), ``width_mult`` (α, backbone and extra
    layers), ``size`` (input side or (H, W)), ``anchor_generator``, and torchvision SSD's ``score_thresh``,
    ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ``iou_thresh``, ``positive_fraction``.
    """
    return build_ssdlite("mobilenet_v3_large", reduced_tail=reduced_tail, **kwargs)


def ssdlite320_mobilenet_v3_small(*, reduced_tail: bool = True, **kwargs) -> Detector:
    """SSDLite on MobileNetV3-Small (V3 paper Table 6); arguments as :func:`ssdlite320_mobilenet_v3_large`."""
    return build_ssdlite("mobilenet_v3_small", reduced_tail=reduced_tail, **kwargs)


def ssdlite320_mobilenet_v1(**kwargs) -> Detector:
    """SSDLite on MobileNetV1 (V2 paper Table 6's "MNet V1 + SSDLite"; TF's ssdlite_mobilenet_v1_coco): SSD300's
    feature maps (conv11, conv13) with SSDLite's separable extra layers and head; arguments as
    :func:`ssdlite320_mobilenet_v2`."""
    return build_ssdlite("mobilenet_v1", **kwargs)


def ssdlite320_mobilenet_v2(**kwargs) -> Detector:
    """SSDLite on MobileNetV2 (V2 paper §6.2, Table 6; TF's ssdlite_mobilenet_v2_coco); arguments as
    :func:`ssdlite320_mobilenet_v3_large` but no reduced tail."""
    return build_ssdlite("mobilenet_v2", **kwargs)


# ---------------------------------------------------------------------------------------------------
# torchvision's state dicts.


def _torchvision_module_pairs(model: Detector) -> list[tuple[str, str]]:
    """(torchvision module prefix, ours) for every backbone layer with weights, in order.

    torchvision splits its backbone into ``features.0`` (stem, bottlenecks up to C4, C4's expansion conv) and
    ``features.1`` (the rest of C4, the later bottlenecks, the last conv); a bottleneck is a ``block`` Sequential
    of its present layers; the extra blocks are Sequentials of three conv-BN-act.
    """
    features: SSDLiteFeatures = model.backbone
    c4 = features.c4_block
    pairs = [("backbone.features.0.0", "backbone.stem")]
    for i, block in enumerate(features.blocks):
        parts = [n for n in ("expand", "depthwise", "se", "project") if not isinstance(getattr(block, n), nn.Identity)]
        if i < c4:
            tv = [f"backbone.features.0.{i + 1}.block.{j}" for j in range(len(parts))]
        elif i == c4:
            # ``block[1:]`` keeps the Sequential's keys: the depthwise conv stays "1".
            tv = [f"backbone.features.0.{c4 + 1}"] + [f"backbone.features.1.0.{j}" for j in range(1, len(parts))]
        else:
            tv = [f"backbone.features.1.{i - c4}.block.{j}" for j in range(len(parts))]
        pairs += zip(tv, (f"backbone.blocks.{i}.{p}" for p in parts))
    pairs.append((f"backbone.features.1.{len(features.blocks) - c4}", f"backbone.{features.last_name}"))
    for i in range(len(features.extra)):
        for j, ours in enumerate(("reduce", "separable.depthwise", "separable.pointwise")):
            pairs.append((f"backbone.extra.{i}.{j}", f"backbone.extra.{i}.{ours}"))
    return pairs


# Inside a layer: Conv2dNormActivation's 0/1 are our ConvBNAct's conv/bn, SqueezeExcitation's fc1/fc2 our reduce/expand.
_LEAF_NAMES = {"conv": "0", "bn": "1", "reduce": "fc1", "expand": "fc2"}


def torchvision_key_map(model: Detector) -> dict[str, str]:
    """{torchvision ``ssdlite320_mobilenet_v3_large`` state-dict key: our key} for every tensor of ``model``."""
    pairs = _torchvision_module_pairs(model)
    mapping = {}
    for key in model.state_dict():
        if key.startswith("head."):
            mapping[key] = key  # torchvision's own SSDLiteHead
            continue
        for tv, ours in pairs:
            if key.startswith(ours + "."):
                leaf, rest = key[len(ours) + 1 :].split(".", 1)
                mapping[f"{tv}.{_LEAF_NAMES[leaf]}.{rest}"] = key
                break
        else:
            raise MobileNetsError(f"no torchvision name for {key}")
    return mapping


def load_torchvision_state_dict(model: Detector, state_dict: Mapping[str, torch.Tensor]) -> Detector:
    """Load a torchvision ``ssdlite320_mobilenet_v3_large`` (or ``_small`` layout) state dict into ``model``.

    Every tensor must find its place with the same shape (build ``model`` with the same ``num_classes``,
    ``width_mult`` and ``reduced_tail``); otherwise one :class:`MobileNetsError` names what differs.
    """
    mapping = torchvision_key_map(model)
    missing = sorted(set(mapping) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(mapping))
    if missing or unexpected:
        raise MobileNetsError(
            f"the state dict is not torchvision's SSDLite layout of this model: {len(missing)} keys missing "
            f"(first: {missing[:1]}), {len(unexpected)} unexpected (first: {unexpected[:1]})"
        )
    ours = model.state_dict()
    converted = {}
    for tv_key, key in mapping.items():
        if state_dict[tv_key].shape != ours[key].shape:
            raise MobileNetsError(
                f"{tv_key} has shape {tuple(state_dict[tv_key].shape)} but the model's {key} has "
                f"{tuple(ours[key].shape)}: build the detector with the checkpoint's num_classes, width_mult and "
                "reduced_tail"
            )
        converted[key] = state_dict[tv_key]
    model.load_state_dict(converted)
    return model
