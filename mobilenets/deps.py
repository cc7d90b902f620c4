"""Optional runtimes: import them where they are needed, with a one-line error naming the extra to install."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from mobilenets.errors import MobileNetsError

# pip package that provides each optional module, and the extra that installs it, for the error message.
PACKAGES = {
    "onnx": ("onnx", "deploy"),
    "onnxruntime": ("onnxruntime", "deploy"),
    "onnxscript": ("onnxscript", "deploy"),
    "executorch": ("executorch", "deploy"),
    "torchao": ("torchao", "deploy"),
    "openvino": ("openvino", "deploy"),
    "nncf": ("nncf", "deploy"),
    "skimage": ("scikit-image", "deploy"),
    "litert_torch": ("litert-torch", "litert"),
    "ai_edge_litert": ("ai-edge-litert", "litert"),
    "playwright": ("playwright", "web"),
    "pnnx": ("pnnx", "android"),
    "ncnn": ("ncnn", "android"),
    "MNN": ("mnn", "android"),
}


def require(module: str, purpose: str):
    """Import an optional dependency, or fail with a one-line message naming the extra that installs it."""
    try:
        with quiet(), quiet_native_info():
            return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        package, extra = PACKAGES.get(top, (top, "deploy"))
        raise MobileNetsError(
            f"{purpose} needs the optional package {package!r} ({e.name or module} is not importable): "
            f"install it with pip install 'mobilenets[{extra}]'"
        ) from None


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' deprecation chatter and progress lines (they are not about the user's model)."""
    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"  # litert-torch prints its progress to stdout
    names = ("torch._dynamo", "torch.utils._pytree", "torch.onnx", "torch.export", "nncf")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old


# Info lines that C++ libraries write straight to the stderr file descriptor: absl's (TensorFlow's logging in the LiteRT
# converter, "I0000 00:00:1796590452.899244 9098 port.cc:153] oneDNN custom operations are on ..."), the notice absl
# prints before its first line, and TensorFlow Lite's ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.").
NATIVE_INFO_LINE = re.compile(
    r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] |INFO: |WARNING: All log messages before absl::InitializeLog\(\)"
)


@contextmanager
def quiet_native_info() -> Iterator[None]:
    """Drop the info lines native libraries print to the stderr descriptor inside the block (TF_CPP_MIN_LOG_LEVEL
    cannot: the converter logs its oneDNN notice while it loads); every other line, warnings and errors, is
    passed on when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept, dropping = [], False
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                # an info record may end in blank lines (MLIR's diagnostics do): they go with it
                dropping = bool(NATIVE_INFO_LINE.match(line)) or (dropping and not line.strip())
                if not dropping:
                    kept.append(line)
            kept = "".join(kept)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
