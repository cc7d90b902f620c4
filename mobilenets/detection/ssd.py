"""SSD300 on MobileNetV1 as the TF object detection API's ``ssd_mobilenet_v1`` lays it out: the model of the
MobileNets paper's Table 13 (COCO, 19.3% mAP, 1.2B Mult-Adds, 6.8M parameters).

Six feature maps: conv11 (the 512-channel map at stride 16) and conv13 (1024 channels, stride 32) of MobileNet,
then four extra layers, each a 1×1 conv to half the depth and a 3×3 stride-2 conv (full, not separable: that is
SSDLite's change). Per map, one conv predicts the class logits and one the box offsets of its anchors: 3
anchors per location on conv11, 6 on the others.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from mobilenets.detection.base import (
    ASPECT_RATIOS,
    EXTRA_DEPTHS,
    Detector,
    SSDHead,
    TFAnchorGenerator,
    check_detector_args,
    extra_depth,
    normal_init,
    set_bn_momentum,
)
from mobilenets.models.layers import ConvBNAct
from mobilenets.models.mobilenet_v1 import MobileNetV1

# TF's Conv2d_11_pointwise and Conv2d_13_pointwise: TF counts the stem as Conv2d_0, our ``blocks`` start at 0.
FEATURE_BLOCKS = (10, 12)
BN_EPS = 1e-3  # TF's SSD configs (decay 0.9997, epsilon 0.001)
# TF's ssd_mobilenet_v1_coco.config: inputs scaled to [-1, 1], NMS at IoU 0.6, 100 detections per image.
DEFAULTS = dict(nms_thresh=0.6, detections_per_img=100, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
# TF's config predicts from each map with a 1×1 conv (convolutional_box_predictor kernel_size: 1), not the SSD
# paper's 3×3: Table 13's 6.8M parameters need 1×1 (MobileNet's 3.2M conv weights + 2.2M in
# the extra layers + 1.4M in 1×1 predictors), where 3×3 predictors would make 17.9M. ``head_kernel=3`` builds those.
HEAD_KERNEL = 1


def extra_block(in_channels: int, depth: int, width_mult: float) -> nn.Sequential:
    """An SSD extra layer: 1×1 conv to d/2, then a full 3×3 stride-2 conv to d, each with BN and ReLU6 (TF's
    ``multi_resolution_feature_maps`` without ``use_depthwise``)."""
    mid, out = extra_depth(depth // 2, width_mult), extra_depth(depth, width_mult)
    layer = dict(act="relu6", bn_eps=BN_EPS)
    return nn.Sequential(
        OrderedDict(reduce=ConvBNAct(in_channels, mid, 1, **layer), conv=ConvBNAct(mid, out, 3, 2, **layer))
    )


class SSDFeatures(nn.Module):
    """MobileNetV1's stem and blocks up to conv13, plus four extra layers: six feature maps. The classifier's
    layers keep their names (``stem``, ``blocks``), so its state dict initializes the backbone.

    Args:
        extra_block: builds an extra layer from (input channels, depth d, α); SSD's by default, SSDLite's
            (depthwise separable) for ``ssdlite320_mobilenet_v1``.
    """

    def __init__(
        self,
        classifier: MobileNetV1,
        width_mult: float = 1.0,
        extra_block: Callable[[int, int, float], nn.Module] = extra_block,
    ):
        super().__init__()
        self.stem, self.blocks = classifier.stem, classifier.blocks
        self.out_channels = [self.blocks[i].pointwise.conv.out_channels for i in FEATURE_BLOCKS]
        extra = []
        for depth in EXTRA_DEPTHS:
            extra.append(extra_block(self.out_channels[-1], depth, width_mult))
            self.out_channels.append(extra_depth(depth, width_mult))
        self.extra = nn.ModuleList(extra)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in FEATURE_BLOCKS:
                maps.append(x)
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def ssd300_mobilenet_v1(
    *,
    num_classes: int = 91,
    width_mult: float = 1.0,
    size: int | Sequence[int] = 300,
    head_kernel: int = HEAD_KERNEL,
    anchor_generator: DefaultBoxGenerator | None = None,
    **kwargs,
) -> Detector:
    """SSD300 MobileNet (MobileNets paper Table 13; TF's ssd_mobilenet_v1_coco).

    Args:
        num_classes: background included (91 for COCO: 90 categories + background).
        width_mult: α, for MobileNet and the extra layers (never below 16 channels there, as TF).
        size: input side or (H, W); images of any size are resized to it.
        head_kernel: 1 as TF's config and Table 13's parameter count; 3 for the classic SSD head.
        anchor_generator: default TF's anchors (3 boxes per location on the first map, 6 on the others).
        kwargs: torchvision SSD's ``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``,
            ``iou_thresh``, ``positive_fraction``, ``image_mean``, ``image_std``.
    """
    classifier = MobileNetV1(width_mult=width_mult, act="relu6", bn_eps=BN_EPS)
    hw = check_detector_args(num_classes, size, classifier.min_resolution)
    features = SSDFeatures(classifier, width_mult)
    anchor_generator = anchor_generator or TFAnchorGenerator([ASPECT_RATIOS] * 6)
    head = SSDHead(features.out_channels, anchor_generator.num_anchors_per_location(), num_classes, head_kernel)
    normal_init(features)  # TF's N(0, 0.03) from scratch
    # BatchNorm momentum 0.03 as our SSDLite (torchvision's); TF's decay 0.9997 (momentum 0.0003) suits only long runs.
    set_bn_momentum(features, 0.03)
    config = dict(
        name="ssd300_mobilenet_v1",
        backbone="mobilenet_v1",
        num_classes=num_classes,
        width_mult=width_mult,
        size=list(hw),
        head_kernel=head_kernel,
    )
    return Detector(
        features, head, anchor_generator, hw, num_classes, classifier.min_resolution, config, **{**DEFAULTS, **kwargs}
    )
