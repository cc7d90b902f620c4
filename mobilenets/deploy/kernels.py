"""Which kernels a runtime runs attention with, int8 or float, read from the runtime itself on this CPU.

A quantizer's graph says what it asked for (Q/DQ pairs, FakeQuantize nodes); the runtime decides what runs. So the
file is loaded the way inference loads it and the kernels are counted after the runtime's own rewrites: ONNX
Runtime's optimized graph (a QDQ MatMul becomes QLinearMatMul, a QDQ Softmax QLinearSoftmax, a float Q·Kᵀ with its
scale a FusedMatMul) and OpenVINO's compiled CPU model (each layer with its runtime precision; in fp32 its CPU
plugin fuses MatMul → Softmax → MatMul into one "Subgraph" kernel). A LiteRT file is read op by op with the tensor
types the interpreter allocates (its builtin kernels, the XNNPACK delegate left off so that the ops stay visible):
litert-torch writes Q·Kᵀ and attention·V as FULLY_CONNECTED (or BATCH_MATMUL) on two activations. An ExecuTorch
file is read from its XNNPACK subgraphs (the nodes and value types XNNPACK runs): batch matmuls and softmaxes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

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
    """Counts of the kernels for matmuls of two activations (Q·Kᵀ, attention·V) and softmaxes in an ONNX,
    OpenVINO, LiteRT or ExecuTorch file: "matmul int8", "matmul float", "softmax int8", "softmax float", and
    OpenVINO's fused "attention subgraph float". A classifier's matmul is not counted (a layer's weights are
    constants: ONNX's Gemm, OpenVINO's FullyConnected)."""
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
    if format == "tflite":
        interpreter = require("ai_edge_litert.interpreter", "running LiteRT files")
        interp = interpreter.Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interp.get_tensor_details()}
        ops = interp._get_ops_details()  # noqa: SLF001 - the interpreter's only op-level view
        produced = {int(t) for op in ops for t in op["outputs"]} | {d["index"] for d in interp.get_input_details()}
        for op in ops:
            name, inputs = op["op_name"], [int(t) for t in op["inputs"] if t >= 0]
            if name in ("FULLY_CONNECTED", "BATCH_MATMUL") and len(inputs) >= 2 and inputs[1] in produced:
                kind = "matmul"  # two activations: a layer's weights are constants
            elif name == "SOFTMAX":
                kind = "softmax"
            else:
                continue
            kernels[f"{kind} {'int8' if dtypes[inputs[0]] in (np.int8, np.uint8) else 'float'}"] += 1
        return kernels
    if format == "executorch":
        from mobilenets.deploy.executorch import xnnpack_graphs

        for graph in xnnpack_graphs(path):
            values = {}
            for v in graph.get("xvalues", []):
                t = v["xvalue_union"].get("tensor_value", v["xvalue_union"])
                values[t.get("id_out")] = (t.get("datatype", ""), t.get("constant_buffer_idx", 0))
            for node in graph.get("xnodes", []):
                kind, u = node["xnode_union_type"], node["xnode_union"]
                if kind in ("XNNBatchMatrixMultiply", "XNNFullyConnected"):
                    first, second = (
                        values.get(u.get("input1_id", u.get("input_id"))),
                        values.get(u.get("input2_id", u.get("filter_id"))),
                    )
                    if second is None or second[1]:
                        continue  # a layer's constant weights, not attention
                    name = "matmul"
                elif kind == "XNNSoftmax":
                    first, name = values.get(u.get("input_id")), "softmax"
                else:
                    continue
                kernels[f"{name} {'int8' if first and 'int8' in first[0] else 'float'}"] += 1
        return kernels
    raise MobileNetsError(
        f"attention kernels are read from onnx, openvino, tflite and executorch files, not {format!r}"
    )
