"""LiteRT (TensorFlow Lite) flatbuffers: writer (litert-torch), int8 quantizer (PT2E) and runner (ai-edge-litert).

The files take NHWC input, the layout of Android's image buffers and of TF-slim's published MobileNet .tflite
files; ``load`` takes the usual NCHW batch and transposes it. int8 files are full-integer: int8 input and output
tensors and every op in int8 (convolutions, ReLU6, hard-swish, residual adds, the squeeze-excite's x·gate), with
quantization parameters calibrated on real images; the runner quantizes the input and dequantizes the logits with
the file's own parameters. One exception: litert-torch's quantizer leaves MobileNetV3's hard-sigmoid gate,
relu6(x + 3)/6 on a 1×1 tensor per squeeze-excite block, in float between a DEQUANTIZE and a QUANTIZE.

int8 and saturation: LiteRT's int8 scheme has signed int8 activations (any zero point) and symmetric weights
(zero point 0) within [-127, 127], per output channel for convolutions. XNNPACK, LiteRT's default CPU path,
sign-extends int8 to 16 bits and multiply-adds pairs into 32 bits on AVX2 (vpmaddwd), uses VNNI's dot products
(which add into 32 bits without an intermediate saturation) where present, and sdot or paired 16-bit products
on Arm: two products of [-128, 127] × [-127, 127] sum to at most 32,512, within int16 - the reason the weights
stop at -127. No CPU saturates such a file; :func:`int8_ranges` reads the ranges back to check it.

Needs ``pip install 'mobilenets[litert]'``: litert-torch converts without TensorFlow, ai-edge-litert runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy.cpu import runtime_threads
from mobilenets.deps import quiet as _quiet
from mobilenets.deps import quiet_native_info as _quiet_native_info
from mobilenets.deps import require as _require
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_bytes as atomic_write
from mobilenets.quant.passes import relu6_as_relu_clamp
from mobilenets.quant.ptq import PT2E_CALIBRATIONS, correct_bias_for_int8_weights, pt2e_quantize, with_calibration
from mobilenets.quant.qat import converted_graph

FORMAT = "tflite"
SUFFIX = ".tflite"
RUNTIME = "LiteRT"
PRECISIONS = ("fp32", "int8")
# Activation observers of litert-torch's PT2E quantizer, as ExecuTorch's: "minmax" (the default), "mse" (histogram).
CALIBRATIONS = PT2E_CALIBRATIONS
# Name of the model-metadata entry (a flatbuffer Metadata: name → buffer) that holds what the file was built for.
METADATA_NAME = "mobilenets"


def _nhwc_example(model: nn.Module, resolution: int) -> torch.Tensor:
    return torch.zeros(1, resolution, resolution, getattr(model, "in_chans", 3))


def _convert(model: nn.Module, path: Path, resolution: int, quant_config=None) -> None:
    litert_torch = _require("litert_torch", "LiteRT export")
    with _quiet(), _quiet_native_info(), torch.no_grad():
        edge = litert_torch.convert(model, (_nhwc_example(model, resolution),), quant_config=quant_config)
        edge.export(str(path))


def write(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """fp32 LiteRT file with NHWC input of batch 1, converted by litert-torch (no TensorFlow needed)."""
    litert_torch = _require("litert_torch", "LiteRT export")
    resolution = resolution or model.resolution
    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    nhwc.in_chans = getattr(model, "in_chans", 3)
    _convert(nhwc, path, resolution)


def quantize(
    model: nn.Module,
    path: Path,
    calib_images: torch.Tensor,
    resolution: int | None = None,
    calibration: str = CALIBRATIONS[0],
) -> None:
    """Full-integer int8 LiteRT file: PT2E quantization with litert-torch's quantizer (per-channel symmetric
    int8 weights, int8 activations observed by ``calibration`` on ``calib_images``, normalized NCHW float).

    Biases first absorb the mean error of the int8 weights (``quant.ptq.correct_bias_for_int8_weights``): on the
    pretrained MobileNet top-1 agreement with the float model on 64 photo crops went from ~72% to 89%. After
    calibration each ReLU6's conv output takes the clamp's [0, 6] grid (``quant.passes.share_relu6_observers``): on the
    pretrained MobileNetV1 1.0/224 the file kept 100% (minmax) / 99.4% (mse) of the float model's clear decisions
    on 256 photo crops, against 98.1% / 97.5% without."""
    litert_torch = _require("litert_torch", "int8 LiteRT export")
    pt2e_quantizer = _require("litert_torch.quantize.pt2e_quantizer", "int8 LiteRT export")
    quant_config = _require("litert_torch.quantize.quant_config", "int8 LiteRT export")
    pt2e_utils = _require("torchao.quantization.pt2e", "int8 LiteRT export")
    resolution = resolution or model.resolution
    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(with_calibration(config, calibration, RUNTIME))
    model = correct_bias_for_int8_weights(model, calib_images)
    nhwc = litert_torch.to_channel_last_io(relu6_as_relu_clamp(model), args=[0]).eval()
    example = _nhwc_example(model, resolution)
    with _quiet(), torch.no_grad():
        # Strict (Dynamo) tracing: litert-torch's quantizer finds adds and multiplies by the source function each
        # node records, which only strict export records. Traced non-strict, V2/V3's residual adds and the
        # squeeze-excite's x·gate stayed float ops between DEQUANTIZE and QUANTIZE nodes in the int8 file.
        graph = torch.export.export(nhwc, (example,), strict=True).module()
        batches = (img.permute(0, 2, 3, 1) for img in calib_images.split(1))  # the graph is traced at batch 1
        converted = pt2e_quantize(graph, quantizer, batches, "int8 LiteRT export", fold_quantize=False)
        converted = pt2e_utils.move_exported_model_to_eval(converted)
    converted.in_chans = getattr(model, "in_chans", 3)
    converted.training = False  # its ops are in eval form already; exported modules refuse .eval()
    _convert(converted, path, resolution, quant_config.QuantConfig(pt2e_quantizer=quantizer))


def quantize_qat(model: nn.Module, path: Path, qat: dict, resolution: int) -> None:
    """Full-integer int8 LiteRT file converted from the graph a ``train --qat`` run trained (its learned
    activation ranges, no calibration): PT2E's converted graph, NHWC at the input, through litert-torch's
    static-quantization path. ``model`` is the run's float model."""
    litert_torch = _require("litert_torch", "int8 LiteRT export")
    pt2e_quantizer = _require("litert_torch.quantize.pt2e_quantizer", "int8 LiteRT export")
    quant_config = _require("litert_torch.quantize.quant_config", "int8 LiteRT export")
    pt2e_utils = _require("torchao.quantization.pt2e", "int8 LiteRT export")
    converted = converted_graph(model, qat, resolution, FORMAT, fold_quantize=False)
    pt2e_utils.allow_exported_model_train_eval(converted)
    nhwc = litert_torch.to_channel_last_io(converted, args=[0]).eval()
    nhwc.in_chans = getattr(model, "in_chans", 3)
    # The QuantConfig only tells litert-torch the graph is statically quantized (its quantizer's global config
    # is static int8, the scheme the QAT graph trained with); the graph's own Q/DQ nodes give the parameters.
    static = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    _convert(nhwc, path, resolution, quant_config.QuantConfig(pt2e_quantizer=static))


# ----------------------------------------------------------------------------------------------------
# Running


def _interpreter(path: Path, threads: int | None = None):
    interpreter = _require("ai_edge_litert.interpreter", "running LiteRT files")
    _check_file(path)
    try:
        # The default op resolver applies the XNNPACK delegate; num_threads=None means one thread.
        with _quiet_native_info():  # the delegate says "INFO: Created ..." as it is applied
            interp = interpreter.Interpreter(model_path=str(path), num_threads=runtime_threads(threads))
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MobileNetsError(f"LiteRT cannot load {path}: {first}; re-export it") from None
    return interp


def _to_file(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float32 array → the input tensor's dtype with its quantization (scale, zero point), if any."""
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def _from_file(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


def load(
    path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to float32 logits.

    The file has batch 1, so images run one by one (``batch_size`` is accepted for the common runtime interface
    and changes nothing); NCHW is transposed to the file's NHWC, and an int8 file's input is quantized and its
    output dequantized with the parameters stored in the file. ``precision`` is read from the file, not from
    the argument.
    """
    interp = _interpreter(Path(path), threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    file_shape = tuple(int(d) for d in inp["shape"])

    def run_batch(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 4 and (1, *x.shape[2:], x.shape[1]) == file_shape:
            x = x.transpose(0, 2, 3, 1)
        elif x.ndim != 4 or (1, *x.shape[1:]) != file_shape:
            raise MobileNetsError(
                f"{path} takes images of shape {list(file_shape)} (NHWC); got a batch of shape {list(x.shape)}: "
                "pass NCHW images of the size it was exported for"
            )
        outputs = []
        for img in x:
            interp.set_tensor(inp["index"], _to_file(np.ascontiguousarray(img[None]), inp))
            interp.invoke()
            outputs.append(_from_file(interp.get_tensor(out["index"]), out))
        return np.concatenate(outputs)

    return run_batch


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    """Logits of ``path`` on ``images`` (normalized NCHW float), computed by LiteRT."""
    return load(path, precision, threads)(images.numpy())


def run_reference(path: Path, images: torch.Tensor) -> np.ndarray:
    """Logits computed by LiteRT's reference kernels (portable C++, int32 accumulation, no XNNPACK): the
    exact integer arithmetic the file specifies, to compare XNNPACK's output with on this CPU."""
    interpreter = _require("ai_edge_litert.interpreter", "running LiteRT files")
    _check_file(Path(path))
    with _quiet_native_info():
        interp = interpreter.Interpreter(
            model_path=str(path), experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_REF
        )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for img in images.permute(0, 2, 3, 1).numpy():
        interp.set_tensor(inp["index"], _to_file(np.ascontiguousarray(img[None]), inp))
        interp.invoke()
        outputs.append(_from_file(interp.get_tensor(out["index"]), out))
    return np.concatenate(outputs)


# ----------------------------------------------------------------------------------------------------
# Reading the file: metadata and int8 parameters (LiteRT's flatbuffer schema, ai_edge_litert.schema_py_generated)


def _check_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MobileNetsError(f"cannot read {path}: {e.strerror}; pass an existing .tflite file") from None
    if data[4:8] != b"TFL3":  # the flatbuffer file identifier of LiteRT models
        raise MobileNetsError(f"{path} is not a LiteRT (.tflite) model file; pass a file written by export")
    return data


def _model(path: Path):
    schema = _require("ai_edge_litert.schema_py_generated", "reading LiteRT files")
    return schema, schema.Model.GetRootAs(_check_file(Path(path)), 0)


def set_metadata(path: Path, info: dict) -> None:
    """Store ``info`` (plus the file's input layout) as JSON in the model's metadata entry "mobilenets".

    LiteRT keeps named metadata buffers in the file and ignores the ones it does not know. (Android's Task
    Library reads a separate "TFLITE_METADATA" schema written by tflite-support; we do not write that one.)
    """
    flatbuffer_utils = _require("ai_edge_litert.tools.flatbuffer_utils", "LiteRT metadata")
    schema = _require("ai_edge_litert.schema_py_generated", "LiteRT metadata")
    path = Path(path)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(_check_file(path)))
    if any(b.offset and b.offset > 1 for b in model.buffers):
        raise MobileNetsError(f"{path} stores its weights outside the flatbuffer; cannot add metadata to it")
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    info = {**info, "input_layout": "NHWC", "input_shape": [int(d) for d in tensor.shape]}
    data = json.dumps(info, sort_keys=True).encode()
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME.encode(), len(model.buffers) - 1
    model.metadata.append(entry)
    atomic_write(path, bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def metadata(path: Path) -> dict | None:
    """What the file was built for (the "mobilenets" metadata entry), or None when it has none."""
    _, model = _model(path)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def int8_ranges(path: Path) -> list[dict]:
    """For every int8 weight in ``path``: its integer min/max and zero point, and the type of the quantized
    activations of the same graph ("int8", "uint8" or "none").

    Each dict: {"name", "min", "max", "zero_point" (the largest in magnitude, per channel), "activation",
    "shape", "depthwise"}. Weights are the int8 filters of convolutions and fully connected layers;
    activations the quantized tensors without data in the file.
    """
    schema, model = _model(path)
    types, ops = schema.TensorType, schema.BuiltinOperator
    # Ops whose input 1 is a weight multiplied with activations; other int8 constants (the scalar of a
    # MINIMUM that clamps at 6, say) meet activations in elementwise int32 arithmetic only.
    dense, depthwise = {ops.CONV_2D, ops.FULLY_CONNECTED, ops.TRANSPOSE_CONV}, {ops.DEPTHWISE_CONV_2D}
    code = {}
    for i in range(model.OperatorCodesLength()):
        c = model.OperatorCodes(i)
        code[i] = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
    ranges = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        filters: dict[int, bool] = {}  # weight tensor → depthwise?
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            if code[op.OpcodeIndex()] in dense | depthwise and op.InputsLength() > 1:
                filters[int(op.Inputs(1))] = code[op.OpcodeIndex()] in depthwise  # TRANSPOSE_CONV's too
        activations, weights = set(), []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1)
            if tensor.Type() not in (types.INT8, types.UINT8, types.INT16):
                continue
            if not constant:
                activations.add({types.INT8: "int8", types.UINT8: "uint8", types.INT16: "int16"}[tensor.Type()])
                continue
            if tensor.Type() != types.INT8 or t not in filters:
                continue
            if buffer.DataLength() == 0:
                raise MobileNetsError(f"{path}: weight {tensor.Name().decode()} is stored outside the flatbuffer")
            values = buffer.DataAsNumpy().view(np.int8)
            quant = tensor.Quantization()
            zero_points = quant.ZeroPointAsNumpy() if quant is not None and quant.ZeroPointLength() else np.zeros(1)
            weights.append(
                {
                    "name": tensor.Name().decode(),
                    "min": int(values.min()),
                    "max": int(values.max()),
                    "zero_point": int(zero_points[np.argmax(np.abs(zero_points))]),
                    "shape": [int(d) for d in tensor.ShapeAsNumpy()],
                    "depthwise": filters[t],
                }
            )
        activation = "uint8" if "uint8" in activations else ("int8" if "int8" in activations else "none")
        ranges += [{**w, "activation": activation} for w in weights]
    return ranges


def int8_weight_ranges(path: Path) -> list[tuple[str, int, int, str]]:
    """(tensor name, min int value, max int value, activation dtype) of every int8 weight in ``path``."""
    return [(r["name"], r["min"], r["max"], r["activation"]) for r in int8_ranges(path)]
