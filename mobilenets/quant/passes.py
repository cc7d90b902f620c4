"""Graph passes that put a ReLU6 network's int8 activations on the grid its clamp allows.

XNNPACK's and litert-torch's PT2E quantizers fuse conv → relu but not conv → hardtanh (ReLU6), and quantize
relu → clamp(0, 6) twice: the relu's output over the conv's whole pre-activation range (20 and more in a trained
MobileNet), so the conv's int8 output sits on a grid ~3× coarser than [0, 6]. :func:`relu6_as_relu_clamp` writes
ReLU6 as relu → clamp; PTQ then points each relu's observer at its clamp's (:func:`share_relu6_observers`, after
calibration) and QAT trains it on that grid from the start (:func:`share_relu6_ranges`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class _ReLUThenClamp6(nn.Module):
    """ReLU6 written as relu → clamp(max=6), the same function.

    The PT2E quantizers of XNNPACK and litert-torch fuse conv → relu (the conv's int8 output covers [0, max])
    but not conv → hardtanh (ReLU6): there the conv output is quantized over its whole pre-activation range
    and the clip inherits that coarse grid. On the pretrained MobileNet this raised top-1 agreement with the
    float model on 64 photo crops from 53% to 75% (ExecuTorch) and from 3% to ~95% of the clear ones (LiteRT).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).clamp(max=6.0)


def relu6_as_relu_clamp(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ReLU6 written as relu → clamp(6), for int8 quantizers."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, _ReLUThenClamp6())
    return model


def share_relu6_observers(prepared: torch.fx.GraphModule) -> int:
    """Give each ReLU6's relu the int8 grid of its clamp(max=6), in a PT2E graph prepared and calibrated from a
    :func:`relu6_as_relu_clamp` model, before ``convert_pt2e``. Returns how many relus it re-pointed.

    The quantizers observe conv → relu's output over its whole calibrated range (20 to 48 in the pretrained
    MobileNetV1), so where the clip stays a separate op the runtime stores the conv's int8 output on a grid 3-8×
    coarser than the clamp's [0, 6] (LiteRT; ExecuTorch-XNNPACK where a stride-2 block's zero pad follows the
    clamp). Values above 6 are clipped next anyway, so the relu's observer is pointed at the clamp's (or, through
    zero pads, the next one's) and both get its scale and zero point: the same int8 scheme on a finer grid. The
    pretrained V1's int8 files then kept 100% of the float model's clear decisions on 256 photo crops (minmax;
    ExecuTorch 98.1% and LiteRT 98.1% without).
    """
    pairs = relu6_observer_pairs(prepared)
    for relu_observer, clamp_observer in pairs:
        relu_observer.target = clamp_observer
    prepared.recompile()
    return len(pairs)


def relu6_observer_pairs(gm: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, str]]:
    """Each ReLU6 of a PT2E graph (prepared, or prepared for QAT) from a :func:`relu6_as_relu_clamp` model:
    (the node of its relu's observer or fake-quantize, the module name of the one its clamp(0, 6) output goes to,
    through zero pads) where relu → observer → clamp → [zero pads] → observer has no other quantized branch.

    The clamp may also feed float consumers directly (a detector's feature map read by its float prediction convs
    and by the next int8 layer): they read the clamp's float output, which sharing leaves as it is (values above 6
    are clipped next anyway). Leaving such a ReLU6 unpaired puts the relu and the clamp on two grids, and LiteRT's
    int8 MINIMUM, which needs one scale in and out, then reads the next layer's input on the wrong one (SSD300 V1:
    the feature maps after the first branch off by 50-260%, the file's mAP 6 points down)."""
    observed = "activation_post_process"
    relus = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.clamp.default:
            continue
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
        observer = node.args[0]
        if high != 6.0 or low not in (None, 0, 0.0) or observer.op != "call_module" or observed not in observer.target:
            continue
        relu = observer.args[0]
        if relu.op != "call_function" or relu.target not in relus or len(relu.users) != 1 or len(observer.users) != 1:
            continue
        last = node
        while len(last.users) == 1 and is_zero_pad(next(iter(last.users))):
            last = next(iter(last.users))  # zero pads (TF "SAME" on stride 2) keep values within [0, 6]
        outputs = [u for u in last.users if u.op == "call_module" and observed in u.target]
        if len(outputs) == 1:
            pairs.append((observer, outputs[0].target))
    return pairs


def is_zero_pad(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target != torch.ops.aten.pad.default:
        return False
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    return mode == "constant" and value in (None, 0, 0.0)


RELU6_CLAMP = "mobilenets_relu6_clamp"  # node.meta key of the clamps share_relu6_ranges inserts


def share_relu6_ranges(gm: torch.fx.GraphModule) -> int:
    """Quantize each ReLU6's relu output on its clamp's int8 grid, in a QAT graph (in place); returns how many.

    XNNPACK's quantizer fake-quantizes relu → clamp(0, 6) twice, the relu's output over its whole range (20 and
    more in a trained MobileNet): the int8 files then store the conv's output on a grid ~3× coarser than [0, 6]
    (the PTQ exporters fix the same in ``fold.share_relu6_observers``). Here the relu's node calls the clamp's
    fake-quantize module, behind a clamp(0, 6) of its own so that the shared observer sees only values in [0, 6].
    The conversions drop that clamp (:func:`drop_relu6_clamps`): a quantize whose grid ends at or below 6
    clips as it does.
    """
    pairs = relu6_observer_pairs(gm)
    for relu_fq, clamp_fq in pairs:
        relu = relu_fq.args[0]
        with gm.graph.inserting_after(relu):
            clamp = gm.graph.call_function(torch.ops.aten.clamp.default, (relu, 0.0, 6.0))
        clamp.meta[RELU6_CLAMP] = True
        relu_fq.args = (clamp,)
        relu_fq.target = clamp_fq
    gm.delete_all_unused_submodules()
    gm.recompile()
    return len(pairs)


def drop_relu6_clamps(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` without the clamps :func:`share_relu6_ranges` inserted (the same function: see there)."""
    for node in list(gm.graph.nodes):
        if node.meta.get(RELU6_CLAMP):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm
