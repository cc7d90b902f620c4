"""Quantization-aware training of a detector (SSD, SSDLite): the parts its int8 files quantize train through fake
int8 quantization of the target runtime, the rest trains in float, and the loss is torchvision's SSD loss.

A detector's int8 files (``deploy/detection.py``) quantize the backbone with its extra layers and the head's
depthwise convs; the head's 1×1 prediction convs, box decoding, softmax, top-k and NMS stay float. QAT fakes
exactly that: BatchNorm is folded (as for the classifiers' QAT, see :mod:`mobilenets.quant.qat`), the backbone
and the head are each exported (``torch.export``, any batch ≥ 2) and prepared by PT2E with the target's
quantizer (:func:`mobilenets.quant.qat.quantizer`), and the head's annotations outside its depthwise convs are
dropped (:func:`annotate_only_in`, the exporters' rule). torchvision's ``SSD.forward`` then runs as usual around
the two graphs (anchors, matching, hard-negative mining, postprocessing), so a QAT detector trains, evaluates
(COCO mAP) and predicts as any.

What ``model.pt`` keeps: the trained weights in the detector's own layout (each folded conv, its BN an identity
with the folded bias; :meth:`QATDetector.float_state`), so eval, predict and export load it as any detector. An
int8 export quantizes these weights with the runtime's own PTQ on the same grids training used (per-channel
symmetric weights: the same integers; the 7-bit grid for ONNX Runtime and OpenVINO), with activation ranges
calibrated on real images rather than the moving averages training kept; the file's card says so.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator

import torch
from torch import nn

from mobilenets.deps import quiet, require
from mobilenets.quant.fold import fold_bn
from mobilenets.quant.passes import relu6_as_relu_clamp, share_relu6_ranges
from mobilenets.quant.qat import check_target, folded_state, quantizer

# The head's submodules its int8 files quantize (relative to the head): each class/box head's depthwise conv.
HEAD_INT8 = re.compile(r"^(classification|regression)_head\.module_list\.\d+\.0$")


def annotate_only_in(quantizer_, names: list[str]):
    """``quantizer_`` made to annotate only the nodes traced from the modules ``names`` (or below them): it annotates
    everywhere, then drops the annotations outside (a PT2E quantizer's per-module configs cannot say this: an
    exported graph's weight nodes carry no module scope). Returns the quantizer."""
    annotate = quantizer_.annotate

    def in_scope(node: torch.fx.Node) -> bool:
        paths = [path.removeprefix("L['self'].") for path, _ in node.meta.get("nn_module_stack", {}).values()]
        return any(path == n or path.startswith(n + ".") for path in paths for n in names)

    def annotate_in_scope(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
        graph = annotate(graph)
        for node in graph.graph.nodes:
            if "quantization_annotation" in node.meta and not in_scope(node):
                del node.meta["quantization_annotation"]
        return graph

    quantizer_.annotate = annotate_in_scope
    return quantizer_


class QATDetector(nn.Module):
    """A detector whose backbone and head run as PT2E fake-quantized graphs of ``target``'s int8 scheme.

    Called like the detector: ``model(images, targets)`` gives the SSD losses in training, ``model(images)`` the
    detections in eval. ``named_parameters`` and ``modules`` are the folded float detector's (the graphs share its
    tensors), so the optimizer trains them and gives depthwise filters their own weight decay.
    """

    def __init__(self, model: nn.Module, target: str):
        super().__init__()
        pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "quantization-aware training")
        self.target = check_target(target)
        float_model = relu6_as_relu_clamp(fold_bn(model)).train()
        object.__setattr__(self, "float_model", float_model)  # not a submodule: state_dict is the graphs'
        object.__setattr__(self, "template", model)
        h, w = model.resolution
        device = next(float_model.parameters()).device
        batch = torch.export.Dim("batch", min=2)
        x = torch.randn(2, 3, h, w, device=device)
        with quiet(), torch.no_grad():
            backbone = torch.export.export(float_model.backbone, (x,), dynamic_shapes=({0: batch},)).module()
            features = list(float_model.backbone(x).values())
            shapes = ([{0: batch} for _ in features],)
            head = torch.export.export(float_model.head, (features,), dynamic_shapes=shapes).module()
            backbone = pt2e.prepare_qat_pt2e(backbone, quantizer(target))
            head_names = [n for n, _ in float_model.head.named_modules() if HEAD_INT8.search(n)]
            head = pt2e.prepare_qat_pt2e(head, annotate_only_in(quantizer(target), head_names))
        for graph in (backbone, head):
            share_relu6_ranges(graph)
        # The detector with the two graphs in place of its backbone and head (its other parts shared).
        detector = copy.copy(float_model)
        detector._modules = dict(float_model._modules)
        detector.backbone, detector.head = backbone, head
        self.detector = detector
        self.train()

    @property
    def resolution(self):
        return self.template.resolution

    def forward(self, images, targets=None):
        return self.detector(images, targets)

    def train(self, mode: bool = True) -> QATDetector:
        from torchao.quantization.pt2e import disable_observer, enable_observer

        # BN is folded and the SSD heads have no dropout: the graphs have no mode to switch, only their observers
        # (which must not move in evaluation: test images would calibrate them). The detector's own modules
        # (transform, anchors) switch as usual: SSD.forward computes losses in training, detections in eval.
        for graph in (self.detector.backbone, self.detector.head):
            graph.apply(enable_observer if mode else disable_observer)
        for name, module in self.detector.named_children():
            if name not in ("backbone", "head"):
                module.train(mode)
        self.detector.training = self.training = mode
        self.float_model.train(mode)
        return self

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Iterator:
        return self.float_model.named_parameters(prefix, recurse, remove_duplicate)

    def modules(self) -> Iterator[nn.Module]:
        return self.float_model.modules()

    def float_state(self) -> dict:
        """The trained weights as a state_dict of the original detector (:func:`mobilenets.quant.qat.folded_state`):
        each folded conv's weight and bias, its BN an identity whose shift is the folded bias."""
        return folded_state(self.template, self.float_model)


def prepare_detector(model: nn.Module, target: str) -> QATDetector:
    """``model`` (a trained detector) ready for quantization-aware training towards ``target``'s int8 scheme."""
    return QATDetector(model, target)
