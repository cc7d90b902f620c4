"""What SSD and SSDLite share: the detector class (torchvision's SSD with our checks and attributes), the argument
checks, TF's anchor layout, and the plain-conv SSD head.

The detector *is* ``torchvision.models.detection.SSD``: its transform (resize to the fixed input size and
normalize), anchor matcher, box coder, loss with hard negative mining and postprocess (``batched_nms``) are
torchvision's. We supply the feature extractor (a MobileNet and the extra layers) and the prediction head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDScoringHead

from mobilenets.errors import MobileNetsError

# The SSD anchors of the TF object detection API's configs, which torchvision's SSDLite keeps: six feature maps,
# scales spread linearly from 0.2 (the first map) to 0.95 (the last), aspect ratios 1, 2, 1/2, 3, 1/3 and an extra
# square box of scale sqrt(s_k·s_k+1) at every location.
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = [2, 3]  # DefaultBoxGenerator adds each ratio and its inverse to the two squares: 6 boxes
EXTRA_DEPTHS = (512, 256, 256, 128)  # the four extra feature maps' channels (TF's layer_depth, torchvision's)
CPU = torch.device("cpu")
MIN_DEPTH = 16  # TF's min_depth: α never thins an extra layer below 16 channels


def check_detector_args(num_classes: int, size: int | Sequence[int], min_size: int) -> tuple[int, int]:
    """``size`` as (height, width), after checking it and ``num_classes``; one-line errors that say the fix."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise MobileNetsError(
            f"num_classes={num_classes!r}: a detector needs at least 2 classes, background (0) and one object class "
            "(COCO: 91 = 90 categories + background)"
        )
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in hw):
        raise MobileNetsError(f"size must be an int or (height, width) of ints, got {size!r}")
    if min(hw) < min_size:
        raise MobileNetsError(
            f"input size {hw[0]}x{hw[1]} is too small for this detector's feature maps (below the backbone's output "
            f"stride its last maps hold nothing but padding): use size >= {min_size}"
        )
    return hw


def extra_depth(depth: int, width_mult: float) -> int:
    """An extra layer's channels under α, as TF's ``depth_multiplier`` and torchvision's ``get_depth``."""
    return max(MIN_DEPTH, int(depth * width_mult))


def normal_init(module: nn.Module, std: float = 0.03) -> None:
    """N(0, 0.03) conv weights and zero biases: TF's SSD configs' initializer, which torchvision's SSDLite keeps for
    the extra layers and heads."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


class TFAnchorGenerator(DefaultBoxGenerator):
    """TF's ``ssd_anchor_generator``: DefaultBoxGenerator's boxes except on the lowest map, which gets only three
    (``reduce_boxes_in_lowest_layer``, on by default in TF's configs): a square of scale 0.1 and the 2 and 1/2 boxes
    of scale 0.2. TF does not clip the boxes to the image.
    """

    def __init__(self, aspect_ratios: list[list[int]], min_ratio: float = MIN_SCALE, max_ratio: float = MAX_SCALE):
        super().__init__(aspect_ratios, min_ratio, max_ratio, clip=False)  # calls our _generate_wh_pairs

    def _generate_wh_pairs(self, num_outputs: int, dtype=torch.float32, device=CPU):
        pairs = super()._generate_wh_pairs(num_outputs, dtype, device)
        w, h = self.scales[0] * math.sqrt(2), self.scales[0] / math.sqrt(2)
        pairs[0] = torch.tensor([[0.1, 0.1], [w, h], [h, w]], dtype=dtype, device=device)
        return pairs

    def num_anchors_per_location(self) -> list[int]:
        return [len(p) for p in self._wh_pairs]


class SSDHead(nn.Module):
    """SSD's prediction head: per feature map, one plain k×k conv (with bias) for the class logits and one for the
    box offsets. torchvision's ``SSDHead`` with the kernel size as an option (it fixes 3; TF's ssd_mobilenet_v1
    config uses 1)."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int, kernel_size: int = 3):
        super().__init__()

        def convs(columns: int) -> nn.ModuleList:
            return nn.ModuleList(
                nn.Conv2d(c, columns * a, kernel_size, padding=kernel_size // 2)
                for c, a in zip(in_channels, num_anchors)
            )

        self.classification_head = SSDScoringHead(convs(num_classes), num_classes)
        self.regression_head = SSDScoringHead(convs(4), 4)
        normal_init(self)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


# torchvision SSD's own options, which every builder passes on.
SSD_OPTIONS = (
    "score_thresh",
    "nms_thresh",
    "detections_per_img",
    "topk_candidates",
    "iou_thresh",
    "positive_fraction",
    "image_mean",
    "image_std",
)


class Detector(SSD):
    """torchvision's SSD, plus what the rest of mobilenets reads from a model: ``resolution`` (the fixed input
    size, (H, W)), ``in_chans``, ``min_resolution``, ``num_classes`` and ``config`` (the builder's arguments).

    ``model(images)`` takes a list of 3×H×W tensors in [0, 1] of any sizes (each is resized to ``resolution``),
    and, in training, targets ``[{"boxes": (N, 4) x1y1x2y2 in pixels, "labels": (N,) int64 in 1..num_classes-1}]``;
    it returns ``{"bbox_regression", "classification"}`` losses in training and ``[{"boxes", "labels", "scores"}]``
    in pixels of each input image in eval.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        anchor_generator: DefaultBoxGenerator,
        size,
        num_classes,
        min_resolution: int,
        config: dict,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - set(SSD_OPTIONS))
        if unknown:
            # torchvision's SSD hands unknown options to its transform, which ignores them: a typo would pass.
            raise MobileNetsError(
                f"{config.get('name', 'the detector')} does not take the option {unknown[0]!r}; its options: "
                f"num_classes, width_mult, size, anchor_generator, {', '.join(SSD_OPTIONS)}"
            )
        # torchvision's SSD takes its fixed size as (width, height); ours is (height, width) as a tensor's.
        super().__init__(backbone, anchor_generator, (size[1], size[0]), num_classes, head=head, **kwargs)
        self.resolution, self.in_chans, self.min_resolution = tuple(size), 3, min_resolution
        self.num_classes, self.config = num_classes, config
