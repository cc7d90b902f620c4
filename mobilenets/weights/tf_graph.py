"""Google's TF-slim MobileNetV1 frozen graphs (``.pb``): read without TensorFlow, map to our names, check shapes.

The graph is read with tensorboard's copy of the ``GraphDef`` protobuf. TF-slim's numerical conventions are
carried into the model config: ReLU6, BatchNorm ε = 1e-3, TF "SAME" padding (odd pixel bottom/right), inputs in
[-1, 1], 1001 classes with a background class 0.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mobilenets.errors import MobileNetsError
from mobilenets.models.layers import scale_channels
from mobilenets.models.mobilenet_v1 import BLOCKS, STEM
from mobilenets.weights.cards import ModelCard, Preprocessing, class_names_for, sha256_file

TF_PREFIX = "MobilenetV1/"
TF_BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


@dataclass
class TFGraph:
    """The constants and the few node attributes of a frozen GraphDef that the import needs."""

    consts: dict[str, np.ndarray]
    input_shape: tuple[int, ...] | None
    bn_eps: set[float]
    strides: dict[str, int]  # layer scope (e.g. "Conv2d_2_depthwise") → spatial stride


def read_tf_graph(path: str | os.PathLike) -> TFGraph:
    """Parse a frozen GraphDef without TensorFlow (tensorboard ships the protobuf classes)."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import graph_pb2
    from tensorboard.util import tensor_util

    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise MobileNetsError(f"{path} is empty (0 bytes): not a TensorFlow frozen graph")
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise MobileNetsError(
            f"{path} is not a TensorFlow GraphDef, or it is truncated/corrupt ({e}); re-download the .pb"
        ) from None
    consts, input_shape, eps, strides = {}, None, set(), {}
    for node in graph.node:
        if node.op == "Const" and node.name.startswith(TF_PREFIX):
            try:
                consts[node.name] = tensor_util.make_ndarray(node.attr["value"].tensor)
            except (TypeError, ValueError) as e:
                raise MobileNetsError(f"{path}: constant {node.name} unreadable ({e}): corrupt file?") from None
            if node.name.endswith("batchnorm/add/y"):
                eps.add(float(consts[node.name]))
        elif node.op in ("FusedBatchNorm", "FusedBatchNormV3") and node.name.startswith(TF_PREFIX):
            eps.add(float(node.attr["epsilon"].f))
        elif node.op == "Placeholder" and node.name == "input" and node.attr["shape"].shape.dim:
            input_shape = tuple(int(d.size) for d in node.attr["shape"].shape.dim)
        if node.op in ("Conv2D", "DepthwiseConv2dNative") and node.name.startswith(TF_PREFIX):
            m = re.search(r"/(Conv2d_\d+(?:_depthwise|_pointwise)?)/", node.name)
            if m:
                strides[m.group(1)] = int(node.attr["strides"].list.i[1])
    if not consts:
        raise MobileNetsError(f"{path} holds no MobilenetV1/* constants: not a TF-slim MobileNetV1 frozen graph")
    return TFGraph(consts, input_shape, {round(e, 9) for e in eps}, strides)


def _tf_layer_names() -> list[tuple[str, str]]:
    """(TF-slim scope, our module path) for every conv+BN of MobileNetV1, in order."""
    names = [("Conv2d_0", "stem")]
    for i in range(len(BLOCKS)):
        names += [
            (f"Conv2d_{i + 1}_depthwise", f"blocks.{i}.depthwise"),
            (f"Conv2d_{i + 1}_pointwise", f"blocks.{i}.pointwise"),
        ]
    return names


def import_tf_graph(
    path: str | os.PathLike, drop_background: bool = False, resolution: int | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Convert a TF-slim MobileNetV1 frozen graph to our state dict and card (any α; 1001 classes).

    Args:
        drop_background: drop TF's background class 0, giving the standard 1000 ImageNet outputs
            (logits 1..1000 are unchanged; probabilities renormalise over 1000).
        resolution: input side; default: the graph's input placeholder, else the file name's
            ``_<res>`` (``mobilenet_v1_0.5_160_frozen.pb``), else 224.
    """
    path = Path(path)
    graph = read_tf_graph(path)
    c = graph.consts

    def get(name: str) -> np.ndarray:
        full = TF_PREFIX + name
        if full not in c:
            raise MobileNetsError(
                f"{path} has no tensor {full}: not a complete TF-slim MobileNetV1 graph (truncated, or another "
                "architecture)"
            )
        return c[full]

    # α from the last pointwise layer (1024·α channels), checked below against every layer.
    last = get(f"Conv2d_{len(BLOCKS)}_pointwise/weights")
    width_mult = last.shape[-1] / BLOCKS[-1][0]
    tensors: dict[str, torch.Tensor] = {}
    widths = [STEM[0]] + [ch for out, _ in BLOCKS for ch in (None, out)]
    in_ch = 3
    for (scope, ours), paper_ch in zip(_tf_layer_names(), widths):
        if scope.endswith("_depthwise"):
            w = get(f"{scope}/depthwise_weights")  # (kh, kw, C, 1) → (C, 1, kh, kw)
            if w.ndim != 4 or w.shape[3] != 1:
                raise MobileNetsError(f"{path}: {scope}/depthwise_weights has shape {w.shape}, expected (3, 3, C, 1)")
            out_ch = w.shape[2]
            w = w.transpose(2, 3, 0, 1)
        else:
            w = get(f"{scope}/weights")  # HWIO → OIHW
            if w.ndim != 4:
                raise MobileNetsError(f"{path}: {scope}/weights has shape {w.shape}, expected (kh, kw, in, out)")
            out_ch = w.shape[3]
            w = w.transpose(3, 2, 0, 1)
        expected = in_ch if paper_ch is None else scale_channels(paper_ch, width_mult)
        if paper_ch is not None and w.shape[1] != in_ch:
            raise MobileNetsError(f"{path}: {scope} takes {w.shape[1]} inputs but the layer before gives {in_ch}")
        if out_ch != expected:
            raise MobileNetsError(
                f"{path}: {scope} has {out_ch} output channels but MobileNetV1 α={width_mult:g} has {expected}; "
                "the graph is not a TF-slim MobileNetV1 of one width multiplier"
            )
        tensors[f"{ours}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        for tf_name, our_name in TF_BN_FIELDS.items():
            full = f"{TF_PREFIX}{scope}/BatchNorm/{tf_name}"
            if full in c:
                value = c[full]
            elif tf_name == "gamma":  # slim may train BN without scale: γ = 1
                value = np.ones(out_ch, np.float32)
            else:
                value = get(f"{scope}/BatchNorm/{tf_name}")
            if value.shape != (out_ch,):
                raise MobileNetsError(f"{path}: {full} has shape {value.shape}, expected ({out_ch},)")
            tensors[f"{ours}.bn.{our_name}"] = torch.from_numpy(np.array(value, dtype=np.float32))
        in_ch = out_ch
    for scope, stride in ((s, st) for (s, _), (_, st) in zip(_tf_layer_names()[1::2], BLOCKS)):
        if graph.strides.get(scope, stride) != stride:
            raise MobileNetsError(f"{path}: {scope} has stride {graph.strides[scope]}, MobileNetV1 has {stride}")

    logits_w = get("Logits/Conv2d_1c_1x1/weights")  # (1, 1, C, classes) → Linear (classes, C)
    logits_b = get("Logits/Conv2d_1c_1x1/biases")
    if logits_w.shape[:3] != (1, 1, in_ch) or logits_b.shape != logits_w.shape[3:]:
        raise MobileNetsError(
            f"{path}: classifier weights {logits_w.shape} / biases {logits_b.shape} do not fit {in_ch} features"
        )
    logits_w, logits_b = logits_w[0, 0].T, logits_b
    background = logits_w.shape[0] == 1001
    if drop_background:
        if not background:
            raise MobileNetsError(f"{path} has {logits_w.shape[0]} classes, not 1001: no background class to drop")
        logits_w, logits_b, background = logits_w[1:], logits_b[1:], False
    tensors["classifier.weight"] = torch.from_numpy(np.ascontiguousarray(logits_w, dtype=np.float32))
    tensors["classifier.bias"] = torch.from_numpy(np.array(logits_b, dtype=np.float32))

    if len(graph.bn_eps) > 1:
        raise MobileNetsError(f"{path}: BatchNorm layers use different epsilons {sorted(graph.bn_eps)}")
    bn_eps = graph.bn_eps.pop() if graph.bn_eps else 1e-3  # TF-slim's mobilenet_v1_arg_scope default
    if resolution is None:
        shape = graph.input_shape
        if shape and len(shape) == 4 and shape[1] == shape[2] and shape[1] > 0:
            resolution = shape[1]
        else:
            m = re.search(r"_(\d{2,4})(?:_frozen)?\.pb$", path.name)
            resolution = int(m.group(1)) if m else 224
    num_classes = logits_w.shape[0]
    card = ModelCard(
        arch="mobilenet_v1",
        model_kwargs=dict(
            width_mult=width_mult,
            resolution=resolution,
            num_classes=num_classes,
            act="relu6",
            padding="tf_same",
            bn_eps=bn_eps,
        ),
        preprocessing=Preprocessing(resolution=resolution),
        class_names=class_names_for(num_classes, background),
        background_class=background,
        source=dict(
            format="tf_frozen_graph",
            file=path.name,
            sha256=sha256_file(path),
            origin="Google's TF-slim MobileNetV1 ImageNet weights (tensorflow/models, Apache-2.0)",
        ),
    )
    return tensors, card
