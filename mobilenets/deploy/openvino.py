"""OpenVINO IR (.xml + .bin) run by OpenVINO's CPU plugin: writer, int8 quantizer (NNCF) and runner.

bf16 is an execution mode, not a file format: the IR keeps fp32 weights and the CPU plugin computes in
bf16 where the CPU has AVX512_BF16 or AMX. A bf16 file can be written anywhere; running it needs that CPU.

int8 and saturation: the CPU plugin multiplies u8 activations by s8 weights; without VNNI/AMX x86 adds
pairs of products in 16 bits, which saturates (OpenVINO's documented "saturation (overflow) issue"). NNCF's
``OverflowFix.ENABLE`` quantizes every weight to 7 bits (|w| ≤ 64) so that no pair can overflow. That is
our default; full 8-bit weights (``weight_bits=8``) are only right on CPUs with VNNI/AMX.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy.cpu import runtime_threads
from mobilenets.deps import quiet, require
from mobilenets.errors import MobileNetsError

FORMAT = "openvino"
SUFFIX = ".xml"
RUNTIME = "OpenVINO"
PRECISIONS = ("fp32", "bf16", "int8")
# Activation range estimators of NNCF (the first is the default: NNCF's own choice).
# NNCF's MEAN_QUANTILE ("percentile") is not offered: it kept 57% of a small trained model's clear decisions.
CALIBRATIONS = ("nncf", "minmax", "histogram")
METADATA_KEY = "mobilenets"


def write(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """OpenVINO IR (.xml + .bin) with a dynamic batch axis and fp32 weights."""
    ov = require("openvino", "OpenVINO export")
    resolution = resolution or model.resolution
    with quiet(), torch.no_grad():
        ov_model = ov.convert_model(
            model,
            example_input=torch.randn(1, model.in_chans, resolution, resolution),
            input=[(-1, model.in_chans, resolution, resolution)],
        )
        ov.save_model(ov_model, str(path), compress_to_fp16=False)


def quantize(
    model: nn.Module,
    path: Path,
    calib_images: torch.Tensor,
    resolution: int,
    weight_bits: int = 7,
    calibration: str = CALIBRATIONS[0],
) -> None:
    """int8 IR with NNCF post-training quantization (per-channel symmetric weights, u8 activations whose ranges
    ``calibration`` estimates: "nncf" NNCF's default, "minmax",
    "histogram").

    ``weight_bits`` 7 (the default) is safe on every CPU; 8 only on CPUs with VNNI/AMX (see module doc).
    """
    ov = require("openvino", "int8 OpenVINO export")
    nncf = require("nncf", "int8 OpenVINO export")
    params = require("nncf.quantization.advanced_parameters", "int8 OpenVINO export")
    if weight_bits not in (7, 8):
        raise MobileNetsError(f"int8 weight bits must be 7 (safe on every CPU) or 8 (VNNI only), got {weight_bits}")
    fix = params.OverflowFix.ENABLE if weight_bits == 7 else params.OverflowFix.DISABLE
    estimators = {"minmax": "MINMAX", "histogram": "HISTOGRAM"}
    if calibration not in CALIBRATIONS:
        raise MobileNetsError(f"OpenVINO (NNCF) calibrates by {', '.join(CALIBRATIONS)}, not {calibration!r}")
    ranges = require("nncf.quantization.range_estimator", "int8 OpenVINO export").RangeEstimatorParametersSet
    estimator = (
        {"activations_range_estimator_params": getattr(ranges, estimators[calibration])}
        if (calibration in estimators)
        else {}
    )
    fp32 = path.with_name("fp32_" + path.name)
    write(model, fp32, resolution)
    # NNCF draws progress bars on stdout: send them to stderr so `--json` output stays clean.
    with quiet(), contextlib.redirect_stdout(sys.stderr):
        ov_model = ov.Core().read_model(str(fp32))
        data = nncf.Dataset([img.numpy() for img in calib_images.split(1)])
        quantized = nncf.quantize(
            ov_model,
            data,
            subset_size=len(calib_images),
            # Full bias correction: with 7-bit weights the fast one kept 91.9% of the pretrained model's
            # clear decisions on 64 photo crops, the full one 100% (benchmarks/deploy_latency.py).
            fast_bias_correction=False,
            advanced_parameters=params.AdvancedQuantizationParameters(overflow_fix=fix, **estimator),
        )
        ov.save_model(quantized, str(path), compress_to_fp16=False)
    fp32.unlink()
    fp32.with_suffix(".bin").unlink()


def quantize_qat(model: nn.Module, path: Path, qat: dict, resolution: int) -> None:
    """int8 IR converted from the graph a ``train --qat`` run trained: its QDQ ONNX file
    (``onnx.quantize_qat``: the scales learned in training, int8 weights on the 7-bit grid) read by OpenVINO's
    ONNX frontend, which turns each QuantizeLinear/DequantizeLinear pair into the FakeQuantize NNCF would
    write (no calibration, no NNCF). ``model`` is the run's float model."""
    from mobilenets.deploy import onnx as onnx_module

    ov = require("openvino", "int8 OpenVINO export")
    qdq = path.with_name("qdq_" + path.stem + ".onnx")
    try:
        onnx_module.quantize_qat(model, qdq, qat, resolution, target=FORMAT)
        with quiet():
            ov_model = ov.convert_model(str(qdq))
            ov_model.reshape([-1, model.in_chans, resolution, resolution])
            ov.save_model(ov_model, str(path), compress_to_fp16=False)
    finally:
        qdq.unlink(missing_ok=True)


def set_metadata(path: Path, info: dict) -> None:
    """Store ``info`` in the IR's rt_info (``<rt_info><mobilenets value="..."/>``)."""
    ov = require("openvino", "OpenVINO export")
    core = ov.Core()
    model = core.read_model(str(path))
    model.set_rt_info(json.dumps(info, sort_keys=True), METADATA_KEY)
    tmp = path.with_name("meta_" + path.name)
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)


def metadata(path: Path) -> dict | None:
    ov = require("openvino", "reading OpenVINO files")
    model = ov.Core().read_model(str(path))
    if not model.has_rt_info(METADATA_KEY):
        return None
    return json.loads(model.get_rt_info(METADATA_KEY).astype(str))


def compiled(path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None):
    """Compile an IR for the CPU. ``precision`` fp32 pins f32 math; bf16 asks for bf16 math (needs the CPU)."""
    from mobilenets.deploy.cpu import require_feature

    ov = require("openvino", "running OpenVINO files")
    core = ov.Core()
    model = core.read_model(str(path))
    if batch_size:
        shape = list(model.inputs[0].get_partial_shape().get_min_shape())
        model.reshape([batch_size, *shape[1:]])
    if precision == "bf16":
        require_feature("bf16", "running an OpenVINO bf16 file")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    threads = runtime_threads(threads)
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)


def load(
    path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits, running ``path`` on OpenVINO's CPU plugin."""
    if batch_size:
        request = compiled(path, precision, threads, batch_size).create_infer_request()
        return lambda x: request.infer({0: x})[0]
    model = compiled(path, precision, threads)
    return lambda x: model(x)[0]


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    return load(path, precision, threads)(images.numpy())


# Runs an IR in a fresh process, since oneDNN reads ONEDNN_MAX_CPU_ISA once per process.
_RUN_CAPPED = """
import sys, numpy as np, openvino as ov
core, x = ov.Core(), np.load(sys.argv[1])
for xml, out in zip(sys.argv[2::2], sys.argv[3::2]):
    model = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    np.save(out, np.concatenate([model(x[i : i + 16])[0] for i in range(0, len(x), 16)]))
"""


def run_on_kernels(path: Path, images: torch.Tensor, isa: str | None = None) -> np.ndarray:
    """Logits of ``path`` from oneDNN's kernels capped at ``isa`` (``ONEDNN_MAX_CPU_ISA``: "AVX2",
    "AVX512_CORE_VNNI", …; None for this CPU's own, e.g. AMX), in f32 on one thread, in a fresh process: how the
    file computes on a CPU that lacks this one's newer instructions."""
    return run_files_on_kernels([path], images, isa)[0]


def run_files_on_kernels(paths: list[Path], images: torch.Tensor, isa: str | None = None) -> list[np.ndarray]:
    """:func:`run_on_kernels` for several files, in one process (one start of OpenVINO)."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    with tempfile.TemporaryDirectory() as tmp:
        x, outs = Path(tmp) / "x.npy", [Path(tmp) / f"y{i}.npy" for i in range(len(paths))]
        np.save(x, images.numpy())
        args = [str(a) for pair in zip(paths, outs) for a in pair]
        done = subprocess.run(
            [sys.executable, "-c", _RUN_CAPPED, str(x), *args], env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise MobileNetsError(f"OpenVINO failed on {isa or 'native'} kernels: {done.stderr.strip()[-500:]}")
        return [np.load(y) for y in outs]


def write_fake_quant_pass(path: Path, out: Path) -> Path:
    """``path``'s int8 IR with every FakeQuantize node rewritten as its float formula (clamp to the input range,
    scale to levels, round half to even, rescale to the output range): the file's own integer arithmetic, up to
    float summation order, as a graph the CPU plugin's low-precision transformations never lower to int8
    kernels. The reference each of oneDNN's kernel families (AVX2, VNNI, AMX) is judged against."""
    ov = require("openvino", "reading OpenVINO files")
    from openvino import opset13 as ops
    from openvino.utils import replace_node

    model = ov.Core().read_model(str(path))
    for node in [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]:
        x, in_lo, in_hi, out_lo, out_hi = (node.input_value(i) for i in range(5))
        steps = ops.constant(np.float32(node.get_attributes()["levels"] - 1))
        clamped = ops.minimum(ops.maximum(x, in_lo), in_hi)
        level = ops.round(
            ops.multiply(ops.divide(ops.subtract(clamped, in_lo), ops.subtract(in_hi, in_lo)), steps), "half_to_even"
        )
        replace_node(node, ops.add(ops.multiply(level, ops.divide(ops.subtract(out_hi, out_lo), steps)), out_lo))
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def _consumer(node, hops: int = 4) -> str:
    """The type of the first op after a weight's Convert/Subtract/Multiply decompression chain."""
    for _ in range(hops):
        targets = list(node.output(0).get_target_inputs())
        if not targets:
            break
        node = targets[0].get_node()
        if node.get_type_name() not in ("Convert", "Subtract", "Multiply", "Reshape"):
            return node.get_type_name()
    return node.get_type_name()


def int8_ranges(path: Path) -> list[dict]:
    """Every int8 weight constant of an IR: its integer range, whether a depthwise conv uses it, and the type
    of the activations it meets.

    NNCF stores quantized weights as i8 constants (decompressed by Convert → Multiply) and quantizes
    activations with FakeQuantize nodes of 256 levels; a FakeQuantize whose lower bound is 0 is u8.
    Depthwise convs (GroupConvolution) widen to 32 bits on every CPU; the u8×s8 pair sums that saturate
    without VNNI are those of Convolution and MatMul.
    """
    ov = require("openvino", "reading OpenVINO files")
    model = ov.Core().read_model(str(path))
    unsigned, signed, out = 0, 0, []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            low = op.input_value(1).get_node()
            if low.get_type_name() == "Constant":
                if float(np.min(low.get_data())) >= 0:
                    unsigned += 1
                else:
                    signed += 1
        elif kind == "Constant" and op.get_element_type() == ov.Type.i8:
            w = op.get_data()
            if w.ndim >= 2:
                depthwise = _consumer(op) == "GroupConvolution"
                out.append(
                    {"name": op.get_friendly_name(), "min": int(w.min()), "max": int(w.max()), "depthwise": depthwise}
                )
    activation = "uint8" if unsigned else ("int8" if signed else "none")
    return [{**w, "activation": activation} for w in out]


def companions(path: Path) -> list[Path]:
    """Files that travel with an .xml: its weights."""
    return [Path(path).with_suffix(".bin")]
