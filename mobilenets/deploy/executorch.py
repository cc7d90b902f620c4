"""ExecuTorch programs delegated to XNNPACK: writer, int8 quantizer (PT2E) and runner.

int8 and saturation: XNNPACK's quantizer makes signed int8 activations (qs8) and symmetric per-channel
int8 weights (zero point 0, [-127, 127]). XNNPACK's kernels widen int8 to 16 bits and accumulate products
in 32 bits (vpmaddwd on AVX2, VNNI/AMX where present, sdot or smlal on Arm): no CPU saturates them.
"""

from __future__ import annotations

import gc
import importlib.resources
import json
import re
import tempfile
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import card as card_file
from mobilenets.deploy.cpu import runtime_threads
from mobilenets.deps import quiet, require
from mobilenets.errors import MobileNetsError
from mobilenets.quant.passes import relu6_as_relu_clamp
from mobilenets.quant.ptq import PT2E_CALIBRATIONS, correct_bias_for_int8_weights, pt2e_quantize, with_calibration
from mobilenets.quant.qat import converted_graph

FORMAT = "executorch"
SUFFIX = ".pte"
RUNTIME = "ExecuTorch-XNNPACK"
PRECISIONS = ("fp32", "int8")
# Activation observers of the PT2E quantizer: "minmax" (the default) or "mse" (XNNPACK's own default
# HistogramObserver, which picks the range with the least L2 quantization error). With the ReLU6 outputs on the
# clamp's grid (quantized_graph), minmax kept 100% of the pretrained MobileNetV1 1.0/224's clear decisions on 256
# and on 512 photo crops, mse 98.1% and 98.8% (benchmarks/int8_pretrained_clear.py).
CALIBRATIONS = PT2E_CALIBRATIONS


def _example(model: nn.Module, resolution: int) -> torch.Tensor:
    return torch.randn(1, model.in_chans, resolution, resolution)


def _lower(exported, info: dict | None = None) -> bytes:
    exir = require("executorch.exir", "ExecuTorch export")
    partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "ExecuTorch export")
    with quiet():
        program = exir.to_edge_transform_and_lower(exported, partitioner=[partitioner.XnnpackPartitioner()])
        return program.to_executorch().buffer


def write(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """ExecuTorch program with the whole network delegated to XNNPACK (batch 1, the mobile case)."""
    resolution = resolution or model.resolution
    with quiet(), torch.no_grad():
        exported = torch.export.export(model, (_example(model, resolution),))
    path.write_bytes(_lower(exported))


def quantized_graph(
    model: nn.Module, calib_images: torch.Tensor, resolution: int, calibration: str = CALIBRATIONS[0]
) -> torch.fx.GraphModule:
    """The PT2E-quantized graph (XNNPACK quantizer, per-channel symmetric weights) before lowering.

    Biases first absorb the mean error of the int8 weights (``quant.ptq.correct_bias_for_int8_weights``):
    on the pretrained MobileNet top-1 agreement with the float model on 64 photo crops went from 73% to 88%.
    After calibration each ReLU6's conv output takes the clamp's [0, 6] grid (``quant.passes.share_relu6_observers``):
    on the pretrained MobileNetV1 1.0/224 the .pte kept 100% (minmax) / 98.1% (mse) of the float model's clear
    decisions on 256 photo crops, against 98.1% / 96.9% without.
    """
    xnn_quantizer = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "int8 ExecuTorch export")
    config = xnn_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    quantizer = xnn_quantizer.XNNPACKQuantizer().set_global(with_calibration(config, calibration, RUNTIME))
    with quiet(), torch.no_grad():
        model = correct_bias_for_int8_weights(model, calib_images)
        graph = torch.export.export(relu6_as_relu_clamp(model), (_example(model, resolution),)).module()
        return pt2e_quantize(graph, quantizer, calib_images.split(1), "int8 ExecuTorch export")


def quantize(
    model: nn.Module, path: Path, calib_images: torch.Tensor, resolution: int, calibration: str = CALIBRATIONS[0]
) -> None:
    """int8 ExecuTorch program: PT2E quantization with XNNPACK's quantizer, lowered to XNNPACK."""
    converted = quantized_graph(model, calib_images, resolution, calibration)
    with quiet(), torch.no_grad():
        exported = torch.export.export(converted, (_example(model, resolution),))
    path.write_bytes(_lower(exported))


def quantize_qat(model: nn.Module, path: Path, qat: dict, resolution: int) -> None:
    """int8 ExecuTorch program converted from the graph a ``train --qat`` run trained (no calibration: the
    activation ranges are the ones learned in training); ``model`` is the run's float model, BN not folded."""
    converted = converted_graph(model, qat, resolution, FORMAT)
    with quiet(), torch.no_grad():
        exported = torch.export.export(converted, (_example(model, resolution),))
    path.write_bytes(_lower(exported))


def set_metadata(path: Path, info: dict) -> None:
    """A .pte has no free-form metadata field: the card goes beside it as ``<file>.json``."""
    card_file.write(path, info)


sidecar = card_file.path_for
metadata = card_file.read


def companions(path: Path) -> list[Path]:
    """Files that travel with a .pte: its card."""
    return [sidecar(path)]


# Methods loaded by :func:`method`: their XNNPACK runtimes keep a pointer to ExecuTorch's one process-wide thread pool,
# which ``_unsafe_reset_threadpool`` destroys and replaces. Resetting it under a live method left that method running
# on a freed pool: a benchmark that loaded ExecuTorch fp32 and int8 files at 1 thread (verification) and 2 (timing)
# aborted in glibc's mutex code ("__pthread_mutex_lock_full: Assertion ... failed") on the Intel Xeon.
_LIVE_METHODS: weakref.WeakSet = weakref.WeakSet()


def method(path: Path, threads: int | None = None):
    """``path``'s forward method, on ExecuTorch's thread pool resized to ``threads`` where that is safe: only while no
    method loaded here is alive (see ``_LIVE_METHODS``); otherwise it runs on the pool as it is, with a warning."""
    runtime = require("executorch.runtime", "running ExecuTorch files")
    threads = runtime_threads(threads)
    if threads:
        portable = require("executorch.extension.pybindings.portable_lib", "running ExecuTorch files")
        current = portable._threadpool_get_thread_count()
        if current != threads:
            gc.collect()  # methods no longer referenced release the pool now, not at some later collection
            if not _LIVE_METHODS:
                portable._unsafe_reset_threadpool(threads)
            else:
                warnings.warn(
                    f"ExecuTorch's thread pool stays at {current} threads, not {threads}: {len(_LIVE_METHODS)} "
                    "loaded ExecuTorch method(s) still use it (resizing it under them is unsafe)",
                    stacklevel=2,
                )
    with quiet():
        loaded = runtime.Runtime.get().load_program(str(path)).load_method("forward")
    _LIVE_METHODS.add(loaded)
    return loaded


def load(
    path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits; the program has batch 1, so images run one by one."""
    m = method(path, threads)

    def run_batch(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x))
        return np.concatenate([m.execute([img.unsqueeze(0).contiguous()])[0].numpy() for img in t])

    return run_batch


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    return load(path, precision, threads)(images.numpy())


# ----------------------------------------------------------------------------------------------------
# Reading the int8 weights back out of a .pte (a 32-byte XNNHeader "XH00", an XNNGraph flatbuffer -
# executorch/backends/xnnpack/serialization/schema.fbs - and constant data or the program's named data map)

_WEIGHT_TYPES = {"xnn_datatype_qcint8", "xnn_datatype_qint8"}
_ACTIVATION_TYPES = {"xnn_datatype_qint8": "int8", "xnn_datatype_qdint8": "int8", "xnn_datatype_quint8": "uint8"}
_NO_OFFSET = 2**64 - 1


def _xnnpack_payloads(path: Path) -> tuple[list[bytes], dict[str, bytes]]:
    """The XNNPACK delegate payloads of a .pte and its named data (key -> bytes)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        pte = deserialize_pte_binary(path.read_bytes())
    except OSError as e:
        raise MobileNetsError(f"cannot read {path}: {e.strerror}; pass an existing .pte file") from e
    except Exception as e:
        raise MobileNetsError(f"{path} is not a readable ExecuTorch program; pass a .pte file") from e
    program = getattr(pte, "program", pte)  # executorch < 0.7 returned the Program itself
    payloads = [
        bytes(program.backend_delegate_data[d.processed.index].data)
        for plan in program.execution_plan
        for d in plan.delegates
        if "xnnpack" in d.id.lower()
    ]
    if not payloads:
        raise MobileNetsError(f"{path} has no XNNPACK delegate; export it with the XNNPACK partitioner")
    store = getattr(pte, "named_data", None)
    named = {k: bytes(store.buffers[e.buffer_index]) for k, e in store.pte_data.items()} if store else {}
    return payloads, named


def _graph_json(flatbuffer: bytes) -> dict:
    """An XNNGraph flatbuffer as a dict, decompiled by the flatc executorch ships."""
    import executorch.backends.xnnpack.serialization as serialization
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    with tempfile.TemporaryDirectory() as d:
        schema = Path(d, "schema.fbs")
        schema.write_bytes(importlib.resources.files(serialization).joinpath("schema.fbs").read_bytes())
        Path(d, "graph.bin").write_bytes(flatbuffer)
        _flatc_decompile(d, str(schema), str(Path(d, "graph.bin")), ["--raw-binary"])
        text = Path(d, "graph.json").read_text()
    # flatc writes non-finite floats (clamp bounds) as bare inf/nan, which JSON lacks.
    text = re.sub(r'(?<![\w"])-?nan(?![\w"])', "NaN", text)
    text = re.sub(r'(?<![\w"])(-?)inf(?![\w"])', r"\1Infinity", text)
    return json.loads(text)


def _split(payload: bytes) -> tuple[bytes, bytes]:
    """(flatbuffer, constant data) of an XNNPACK payload; old payloads are a bare flatbuffer."""
    if payload[4:8] != b"XH00":
        return payload, b""
    fb_off, fb_size, const_off = (int.from_bytes(payload[a:b], "little") for a, b in ((10, 14), (14, 18), (18, 22)))
    const_size = int.from_bytes(payload[22:30], "little")
    return payload[fb_off : fb_off + fb_size], payload[const_off : const_off + const_size]


def xnnpack_graphs(path: str | Path) -> list[dict]:
    """Every XNNPACK subgraph of the .pte ``path`` as a dict (the XNNGraph schema: ``xvalues``, ``xnodes``, ...)."""
    payloads, _ = _xnnpack_payloads(Path(path))
    return [_graph_json(_split(payload)[0]) for payload in payloads]


def int8_weights(path: Path) -> list[dict]:
    """Every int8 weight of every XNNPACK subgraph in ``path`` as stored: {"name", "values" (np.int8 array, in
    XNNPACK's layout), "zero_point", "shape", "activation"}; see int8_ranges."""
    path = Path(path)
    payloads, named = _xnnpack_payloads(path)
    ranges = []
    for k, payload in enumerate(payloads):
        flatbuffer, constants = _split(payload)
        graph = _graph_json(flatbuffer)
        table = graph.get("constant_data") or []
        activations, weights = set(), []
        for xvalue in graph.get("xvalues", []):
            if xvalue.get("xvalue_union_type") != "XNNQuantizedTensorValue":
                continue
            tensor, quant = xvalue["xvalue_union"]["tensor_value"], xvalue["xvalue_union"]
            dtype, idx = tensor.get("datatype"), tensor.get("constant_buffer_idx", 0)
            if idx == 0:
                if dtype in _ACTIVATION_TYPES:
                    activations.add(_ACTIVATION_TYPES[dtype])
                continue
            if dtype not in _WEIGHT_TYPES:
                continue  # int32 biases, 4-bit weights
            entry = table[idx]
            if entry.get("named_key"):
                if entry["named_key"] not in named:
                    raise MobileNetsError(
                        f"{path}: weight data '{entry['named_key']}' is not inside the file (external .ptd data); "
                        "export with the weights embedded"
                    )
                blob = named[entry["named_key"]][: entry["size"]]
            elif entry.get("offset", _NO_OFFSET) != _NO_OFFSET:
                blob = constants[entry["offset"] : entry["offset"] + entry["size"]]
            else:
                raise MobileNetsError(f"{path}: XNNPACK constant {idx} has neither key nor offset; re-export the file")
            if not blob or len(blob) != entry["size"]:
                raise MobileNetsError(f"{path}: XNNPACK constant {idx} is truncated; the file is damaged, re-export it")
            q = np.frombuffer(blob, dtype=np.int8)
            per_tensor = quant.get("quant_params_type") == "PerTensorQuant"
            zero_point = int(quant["quant_params"].get("zero_point", 0)) if per_tensor else 0
            prefix = f"delegate{k}/" if k else ""
            weights.append(
                {
                    "name": f"{prefix}xvalue_{tensor['id_out']}",
                    "values": q,
                    "zero_point": zero_point,
                    "shape": list(tensor.get("dims", [])),
                }
            )
        activation = "uint8" if "uint8" in activations else ("int8" if activations else "none")
        ranges += [{**w, "activation": activation} for w in weights]
    return ranges


def int8_ranges(path: Path) -> list[dict]:
    """For every int8 weight of every XNNPACK subgraph in ``path``: its integer min/max, zero point and the
    datatype of the quantized activations of the same subgraph ("int8", "uint8" or "none").

    Each dict: {"name": "xvalue_<id>" (prefixed "delegate<k>/" past the first subgraph), "min": int, "max": int,
    "zero_point": int, "activation": str, "shape": list[int]}. Raises MobileNetsError for a file that is not a
    .pte, has no XNNPACK delegate, or keeps its weights outside the file.
    """
    ranges = []
    for w in int8_weights(path):
        values = w.pop("values")
        ranges.append({"name": w.pop("name"), "min": int(values.min()), "max": int(values.max()), **w})
    return ranges
