"""ONNX files run by ONNX Runtime: writer, int8 quantizer (QDQ) and runner.

int8 and saturation: ONNX Runtime's x86 kernels multiply u8 activations by s8 weights. CPUs with VNNI
(AVX512_VNNI / AVX_VNNI) or AMX accumulate those products in 32 bits; AVX2-only x86 CPUs (Intel before
Cascade/Ice Lake, AMD before Zen 4) add pairs of them in 16 bits (vpmaddubsw), which saturates once
2·255·|w| > 32767. Weights quantized to 7 bits (|w| ≤ 64: 2·255·64 = 32640) cannot saturate there, and
are exact everywhere else: ONNX Runtime's documented ``reduce_range``. That is our default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy.cpu import runtime_threads
from mobilenets.deps import quiet, require
from mobilenets.errors import MobileNetsError
from mobilenets.quant.ptq import correct_bias_for_int8_weights
from mobilenets.quant.qat import check_export, fake_quant_graph

FORMAT = "onnx"
SUFFIX = ".onnx"
RUNTIME = "ONNX Runtime"
PRECISIONS = ("fp32", "int8")
# Activation calibrations of ONNX Runtime's quantizer (the first is the default).
# ONNX Runtime's "Entropy" method is not offered: on our models it gave exactly MinMax's ranges (every file
# byte-identical in its scales), a choice that does nothing.
CALIBRATIONS = ("minmax", "percentile")
DEFAULT_OPSET = 17
METADATA_KEY = "mobilenets"


def _example(model: nn.Module, batch_size: int, resolution: int) -> torch.Tensor:
    return torch.randn(batch_size, model.in_chans, resolution, resolution)


def write(model: nn.Module, path: Path, resolution: int | None = None, opset: int = DEFAULT_OPSET) -> None:
    """fp32 ONNX file with a dynamic batch axis (input "input", output "logits")."""
    require("onnx", "ONNX export")
    resolution = resolution or model.resolution
    if opset < 17:
        raise MobileNetsError(f"opset must be >= 17 (LayerNorm-era ops and our verification need it), got {opset}")
    with quiet(), torch.no_grad():
        torch.onnx.export(
            model,
            (_example(model, 2, resolution),),
            str(path),
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )


def quantize(
    model: nn.Module,
    path: Path,
    calib_images: torch.Tensor,
    resolution: int,
    weight_bits: int = 7,
    calibration: str = CALIBRATIONS[0],
) -> None:
    """Static int8 (QDQ, per-channel weights, u8 activations calibrated by ``calibration``, one of
    CALIBRATIONS) with ONNX Runtime's quantizer, after bias correction for the int8 weights.

    ``weight_bits`` 7 (the default) is safe on every CPU; 8 only on CPUs with VNNI/AMX or Arm (see module doc).
    """
    quantization = require("onnxruntime.quantization", "int8 ONNX export")
    shape_inference = require("onnxruntime.quantization.shape_inference", "int8 ONNX export")
    if weight_bits not in (7, 8):
        raise MobileNetsError(f"int8 weight bits must be 7 (safe on every CPU) or 8 (VNNI only), got {weight_bits}")
    fp32 = path.with_name("fp32_" + path.name)
    pre = path.with_name("pre_" + path.name)
    methods = {"minmax": "MinMax", "percentile": "Percentile"}
    if calibration not in methods:
        raise MobileNetsError(f"ONNX Runtime calibrates by {', '.join(CALIBRATIONS)}, not {calibration!r}")
    # ONNX Runtime's symmetric int8 weights: scale = max|w| / 64 with reduce_range (7 bits), / 127 without.
    model = correct_bias_for_int8_weights(model, calib_images, qmax=64 if weight_bits == 7 else 127)
    write(model, fp32, resolution)
    with quiet():
        shape_inference.quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib_images.split(1))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    with quiet():
        quantization.quantize_static(
            str(pre),
            str(path),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            reduce_range=weight_bits == 7,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, methods[calibration]),
        )
    fp32.unlink()
    pre.unlink()


def quantize_qat(
    model: nn.Module, path: Path, qat: dict, resolution: int, opset: int = DEFAULT_OPSET, target: str = FORMAT
) -> None:
    """int8 QDQ file converted from the graph a ``train --qat`` run trained: the fake-quantize ops at the
    scales training learned become QuantizeLinear/DequantizeLinear pairs (no calibration), then the weights
    are stored as int8 and the biases as int32 (see :func:`finish_qdq`). ``model`` is the run's float model."""
    onnx = require("onnx", "int8 ONNX export")
    check_export(qat, target, resolution)
    write(fake_quant_graph(model, qat, resolution), path, resolution, opset)
    proto = onnx.load(str(path))
    finish_qdq(proto)
    onnx.save(proto, str(path))


def finish_qdq(proto) -> None:
    """A QDQ graph from fake-quantize ops made into the form ONNX Runtime's quantizer writes (in place):
    constants as initializers, each QuantizeLinear of a constant weight folded into an int8 initializer (its
    DequantizeLinear stays, without the all-zero zero point), and each Conv/Gemm float bias stored as int32 at
    scale input scale × weight scale (the integer kernels' bias, as ONNX Runtime's quantizer stores it).
    """
    onnx = require("onnx", "int8 ONNX export")
    numpy_helper = require("onnx.numpy_helper", "int8 ONNX export")
    graph = proto.graph
    # Constant nodes (the exporter's scales and zero points) become initializers, as the quantizer writes them.
    constants = [n for n in graph.node if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]]
    for node in constants:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0]))
        graph.node.remove(node)
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    new_inits, new_inits_nodes, dropped = [], [], set()

    def quantized(q) -> np.ndarray:
        w, scale, zp = consts[q.input[0]], consts[q.input[1]], consts[q.input[2]]
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        values = np.rint(w / scale.reshape(shape)) + zp.astype(np.int64).reshape(shape)
        return np.clip(values, info.min, info.max).astype(zp.dtype)

    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in producer:
            q = producer[node.input[0]]
            if q.op_type == "QuantizeLinear" and q.input[0] in consts:
                name = q.input[0] + "_quantized"
                new_inits.append(numpy_helper.from_array(quantized(q), name))
                node.input[0] = name
                dropped.add(id(q))
                if len(node.input) > 2 and not consts[node.input[2]].any():
                    # Symmetric weights: no zero point (0 is the default). With an explicit one, OpenVINO's ONNX
                    # frontend left the depthwise convs in f32 (their weights dequantized at run time).
                    del node.input[2]
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in consts:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        x_scale, w_scale = consts[x_dq.input[1]], consts[w_dq.input[1]]
        bias_scale = (x_scale.astype(np.float64) * w_scale.astype(np.float64)).astype(np.float32).reshape(-1)
        bias = consts[node.input[2]].astype(np.float64)
        bias_scale = np.broadcast_to(bias_scale, bias.shape).copy()
        name = node.input[2] + "_int32"
        new_inits += [
            numpy_helper.from_array(np.rint(bias / bias_scale).astype(np.int32), name),
            numpy_helper.from_array(bias_scale, name + "_scale"),
            numpy_helper.from_array(np.zeros(bias.shape, np.int32), name + "_zero_point"),
        ]
        dq = onnx.helper.make_node(
            "DequantizeLinear", [name, name + "_scale", name + "_zero_point"], [name + "_dq"], axis=0
        )
        new_inits_nodes.append(dq)
        node.input[2] = name + "_dq"
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(new_inits_nodes + kept)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)


def set_metadata(path: Path, info: dict) -> None:
    """Store ``info`` (what the file was built for) as the ONNX model's metadata_props["mobilenets"]."""
    onnx = require("onnx", "ONNX export")
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(info, sort_keys=True))
    onnx.save(proto, str(path))


def metadata(path: Path) -> dict | None:
    onnx = require("onnx", "reading ONNX files")
    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    return None


def session(path: Path, threads: int | None = None):
    ort = require("onnxruntime", "running ONNX files")
    options = ort.SessionOptions()
    threads = runtime_threads(threads)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load(
    path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits, running ``path`` with ONNX Runtime."""
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    return load(path, precision, threads)(images.numpy())


def int8_ranges(path: Path) -> list[dict]:
    """Every quantized weight of an int8 file: its integer range, whether a depthwise conv uses it, and the
    type of the activations it meets.

    Read from the file itself (the DequantizeLinear nodes of weight initializers, and the zero points of the
    activations' QuantizeLinear nodes), so a test can assert that a file cannot saturate on any CPU.
    """
    onnx = require("onnx", "reading ONNX files")
    numpy_helper = require("onnx.numpy_helper", "reading ONNX files")
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    activation_types = set()
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            activation_types.add(str(numpy_helper.to_array(inits[node.input[2]]).dtype))
    activation = "uint8" if "uint8" in activation_types else ("int8" if activation_types else "none")
    # A weight is depthwise when the Conv it feeds has one group per input channel.
    depthwise_inputs = set()
    for node in proto.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            depthwise_inputs.add(node.input[1])
    out = []
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w = numpy_helper.to_array(inits[node.input[0]])
            if w.dtype == np.int8 and w.ndim >= 2:
                depthwise = node.output[0] in depthwise_inputs
                out.append(
                    {
                        "name": node.input[0],
                        "min": int(w.min()),
                        "max": int(w.max()),
                        "depthwise": depthwise,
                        "activation": activation,
                    }
                )
    return out
