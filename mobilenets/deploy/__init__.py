"""Ship a model to a device runtime: fold BatchNorm, write ONNX / ExecuTorch-XNNPACK / OpenVINO / LiteRT / ncnn /
MNN files (fp32, fp16, bf16, int8), verify them with their own runtime, and measure their latency.

One module per runtime (``onnx``, ``executorch``, ``openvino``, ``litert``, ``web``, ``ncnn``, ``mnn``), each with the
same functions:
``write`` (fp32 file), ``quantize`` (int8 file, calibrated on real images), ``load`` (a runner), ``run``,
``set_metadata``/``metadata`` (what the file was built for) and ``int8_ranges`` (the integer weight ranges
read back from an int8 file). A new runtime is one new module and one line in ``RUNTIME_MODULES``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mobilenets.errors import MobileNetsError

# format → module; the order is the order of tables and of `--format` choices.
RUNTIME_MODULES = {
    "onnx": "mobilenets.deploy.onnx",
    "executorch": "mobilenets.deploy.executorch",
    "openvino": "mobilenets.deploy.openvino",
    "tflite": "mobilenets.deploy.litert",
    "web": "mobilenets.deploy.web",
    "ncnn": "mobilenets.deploy.ncnn",
    "mnn": "mobilenets.deploy.mnn",
}
FORMATS = tuple(RUNTIME_MODULES)


def runtime_module(format: str) -> ModuleType:
    """The module that writes, quantizes and runs ``format`` files."""
    if format not in RUNTIME_MODULES:
        raise MobileNetsError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(RUNTIME_MODULES[format])
