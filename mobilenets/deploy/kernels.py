"""Which kernels a runtime runs attention with, int8 or float, read from the runtime itself on this CPU.

A quantizer's graph says what it asked for (Q/DQ pairs, FakeQuantize nodes); the runtime decides what runs. So the
file is loaded the way inference loads it and the kernels are counted after the runtime's own rewrites: ONNX
Runtime's optimized graph (a QDQ MatMul becomes QLinearMatMul, a QDQ Softmax QLinearSoftmax, a float Q·Kᵀ with its
scale a FusedMatMul) and OpenVINO's compiled CPU model (each layer with its runtime precision; in fp32 its CPU
plugin fuses MatMul → Softmax → MatMul into one "Subgraph" kernel).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from mobilenets.deps import require
from mobilenets.errors import MobileNetsError

ONNX_KERNELS = {
    "QLinearMatMul": "matmul int8",
    "MatMulInteger": "matmul int8",
    "MatMul": "matmul float",
    "FusedMatMul": "matmul float",
    "QLinearSoftmax": "softmax int8",
    "Softmax": "softmax float",
}


def attention_kernels(path: str | Path, format: str) -> Counter:
    """Counts of the kernels for matmuls of two activations (Q·Kᵀ, attention·V) and softmaxes in an ONNX or
    OpenVINO file: "matmul int8", "matmul float", "softmax int8", "softmax float", and OpenVINO's fused
    "attention subgraph float". A classifier's matmul is not counted (ONNX: a Gemm; OpenVINO: a FullyConnected)."""
    path = Path(path)
    kernels: Counter = Counter()
    if format == "onnx":
        onnx = require("onnx", "reading ONNX files")
        ort = require("onnxruntime", "running ONNX files")
        with tempfile.TemporaryDirectory() as tmp:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            options.log_severity_level = 3
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            nodes = onnx.load(options.optimized_model_filepath).graph.node
        kernels.update(ONNX_KERNELS[n.op_type] for n in nodes if n.op_type in ONNX_KERNELS)
        return kernels
    if format == "openvino":
        ov = require("openvino", "running OpenVINO files")
        for op in ov.Core().compile_model(str(path), "CPU").get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer, precision = info["layerType"].astype(str), info["runtimePrecision"].astype(str)
            if layer in ("MatMul", "Softmax", "Subgraph"):
                name = "attention subgraph" if layer == "Subgraph" else layer.lower()
                kernels[f"{name} {'int8' if precision in ('i8', 'u8') else 'float'}"] += 1
        return kernels
    raise MobileNetsError(f"attention kernels are read from onnx and openvino files, not {format!r}")
