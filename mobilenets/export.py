"""Old import path of the deploy package: ``from mobilenets.export import export, build_model, ...`` still works.

The code lives in :mod:`mobilenets.deploy` (one module per runtime, fold, images, verify, cpu, bench).
"""

from mobilenets.data import FASHION_MNIST_STATS, IMAGENET_STATS
from mobilenets.deploy.deps import quiet as _quiet
from mobilenets.deploy.deps import require
from mobilenets.deploy.executorch import method as executorch_method
from mobilenets.deploy.executorch import run as run_executorch
from mobilenets.deploy.executorch import write as write_executorch
from mobilenets.deploy.export import (
    DEFAULT_WEIGHT_BITS,
    FORMAT_PRECISIONS,
    FORMATS,
    PRECISIONS,
    RUNTIME_OF,
    SUFFIXES,
    ExportResult,
    build_model,
    check_target,
    export,
    load_runner,
    load_weights,
    run_model_file,
    write_model_file,
)
from mobilenets.deploy.fold import fold_bn, static_padding
from mobilenets.deploy.images import fashion_mnist, normalize, photo_crops, real_images
from mobilenets.deploy.onnx import DEFAULT_OPSET
from mobilenets.deploy.onnx import run as run_onnx
from mobilenets.deploy.onnx import session as onnxruntime_session
from mobilenets.deploy.onnx import write as write_onnx
from mobilenets.deploy.openvino import compiled as openvino_compiled
from mobilenets.deploy.openvino import run as run_openvino
from mobilenets.deploy.openvino import write as write_openvino
from mobilenets.deploy.verify import CLEAR_MARGIN, MIN_AGREEMENT, RTOL, Verification, compare_outputs

__all__ = [
    "CLEAR_MARGIN",
    "DEFAULT_OPSET",
    "DEFAULT_WEIGHT_BITS",
    "FASHION_MNIST_STATS",
    "FORMATS",
    "FORMAT_PRECISIONS",
    "IMAGENET_STATS",
    "MIN_AGREEMENT",
    "PRECISIONS",
    "RTOL",
    "RUNTIME_OF",
    "SUFFIXES",
    "ExportResult",
    "Verification",
    "_quiet",
    "build_model",
    "check_target",
    "compare_outputs",
    "executorch_method",
    "export",
    "fashion_mnist",
    "fold_bn",
    "load_runner",
    "load_weights",
    "normalize",
    "onnxruntime_session",
    "openvino_compiled",
    "photo_crops",
    "real_images",
    "require",
    "run_executorch",
    "run_model_file",
    "run_onnx",
    "run_openvino",
    "static_padding",
    "write_executorch",
    "write_model_file",
    "write_onnx",
    "write_openvino",
]
