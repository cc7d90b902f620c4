"""Ship a model to a device runtime: fold BatchNorm, export to ONNX / ExecuTorch-XNNPACK / OpenVINO, int8.

Every export is verified by default: the written file is loaded by its own runtime, run on real images
(photos for 3-channel models, Fashion-MNIST for 1-channel ones) and compared with the PyTorch model
(max |Δ| of the logits and top-1 agreement). A file that fails is never left at the output path: files
are written to a temporary name in the same folder and moved into place only after they pass.

The runtimes are optional (``pip install 'mobilenets[deploy]'``); each is imported where it is needed.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import importlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.errors import MobileNetsError

FORMATS = ("onnx", "executorch", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
SUFFIXES = {"onnx": ".onnx", "executorch": ".pte", "openvino": ".xml"}
# Which precisions each format can hold. bf16 is an OpenVINO execution mode (the IR keeps fp32 weights and
# the CPU plugin computes in bf16 where the CPU has AVX512_BF16/AMX); ONNX Runtime and XNNPACK have no bf16.
FORMAT_PRECISIONS = {"onnx": ("fp32", "int8"), "executorch": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
# pip package that provides each optional module, for the error message.
_PACKAGES = {
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript",
    "executorch": "executorch",
    "openvino": "openvino",
    "nncf": "nncf",
}
DEFAULT_OPSET = 17
# Verification thresholds: max |Δ| relative to the largest reference logit, and top-1 agreement.
RTOL = {"fp32": 1e-3, "bf16": float("inf"), "int8": float("inf")}
MIN_AGREEMENT = {"fp32": 0.97, "bf16": 0.9, "int8": 0.8}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Per-channel mean/std of the training images in [0, 1]; the same constants as mobilenets.data.
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def require(module: str, purpose: str):
    """Import an optional dependency, or fail with a one-line message naming the extra that installs it."""
    try:
        with _quiet():
            return importlib.import_module(module)
    except ImportError as e:
        package = _PACKAGES.get(module.split(".")[0], module.split(".")[0])
        raise MobileNetsError(
            f"{purpose} needs the optional package {package!r} ({e.name or module} is not importable): "
            "install it with pip install 'mobilenets[deploy]'"
        ) from None


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation chatter (it is not about the user's model)."""
    loggers = [logging.getLogger(n) for n in ("torch._dynamo", "torch.utils._pytree", "torch.onnx", "nncf")]
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


# ----------------------------------------------------------------------------------------------------
# BatchNorm folding


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every Conv2d → BatchNorm2d pair folded into one biased Conv2d.

    With BN's running statistics, ``bn(conv(x)) = γ·(W*x + b − μ)/√(σ²+ε) + β`` is again a convolution:
    ``W' = W·γ/√(σ²+ε)`` and ``b' = (b − μ)·γ/√(σ²+ε) + β``. The new weights are computed in float64 and
    rounded once, so the folded model's outputs equal the original's up to float rounding. Pairs are found
    as consecutive children of any ``nn.Sequential`` (ConvBNAct, SqueezeNet, DenseNet's stem); BN layers that
    follow something else (DenseNet's pre-activation BN) are kept.
    """
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and bn.running_mean is not None
            ):
                parent._modules[first] = _fold_conv_bn(conv, bn)
                parent._modules[second] = nn.Identity()
    return model


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    dtype = conv.weight.dtype
    scale = bn.weight.double() if bn.affine else torch.ones_like(bn.running_var, dtype=torch.float64)
    shift = bn.bias.double() if bn.affine else torch.zeros_like(bn.running_var, dtype=torch.float64)
    scale = scale / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=dtype)
    with torch.no_grad():
        fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
        fused.bias.copy_(((bias - bn.running_mean.double()) * scale + shift).to(dtype))
    return fused


# ----------------------------------------------------------------------------------------------------
# Real images for calibration and verification


def _read_idx_images(path: Path) -> np.ndarray:
    # A few lines of the IDX format (big-endian header: magic, dims, then uint8 pixels).
    # TODO(merge): switch to mobilenets.data.load_fashion_mnist once data.py lands.
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_idx_labels(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images (N, 1, 28, 28) uint8 and labels (N,) from the installed IDX files."""
    root = Path(data_dir or os.environ.get("MOBILENETS_FASHION_MNIST") or FASHION_MNIST_DIR)
    prefix = "train" if split == "train" else "t10k"
    images_path, labels_path = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.exists() or not labels_path.exists():
        raise MobileNetsError(
            f"Fashion-MNIST not found in {root}: install it with `sudo apt-get install dataset-fashion-mnist` "
            "(or `make data`), or set MOBILENETS_FASHION_MNIST to the folder holding the IDX .gz files"
        )
    images = torch.from_numpy(_read_idx_images(images_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx_labels(labels_path))
    return images, labels


def normalize(
    images: torch.Tensor, resolution: int, stats: tuple[tuple[float, ...], tuple[float, ...]]
) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 resized to ``resolution`` and normalized with (mean, std)."""
    x = images.float() / 255
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    return (x - mean) / std


def _photos() -> list[np.ndarray]:
    skimage_data = require("skimage.data", "real photos for verification (scikit-image)")
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut(), skimage_data.rocket()]
    try:
        from sklearn.datasets import load_sample_images

        photos += list(load_sample_images().images)
    except ImportError:
        pass
    return [p[..., :3] for p in photos]


def photo_crops(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """``n`` normalized crops (N, 3, R, R) of real photos (scikit-image's and scikit-learn's sample photos).

    Crops cover 35–100% of the shorter side at random positions, half of them mirrored, ImageNet mean/std.
    Different seeds give different crops: calibration and verification use different ones.
    """
    photos = _photos()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = torch.from_numpy(photos[i % len(photos)].copy()).permute(2, 0, 1)
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.35 + 0.65 * torch.rand(1, generator=g).item())) if i >= len(photos) else min(h, w)
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = img[:, top : top + side, left : left + side]
        if torch.rand(1, generator=g).item() < 0.5 and i >= len(photos):
            crop = crop.flip(-1)
        out.append(normalize(crop.unsqueeze(0), resolution, IMAGENET_STATS))
    return torch.cat(out)


def real_images(n: int, in_chans: int, resolution: int, split: str = "test", seed: int = 0) -> torch.Tensor:
    """``n`` real images a model of ``in_chans`` channels can take: photos (3) or Fashion-MNIST (1).

    ``split="train"`` is for calibration (Fashion-MNIST's training set; photo crops with another seed),
    ``split="test"`` for verification.
    """
    if n < 1:
        raise MobileNetsError(f"the number of images must be >= 1, got {n}")
    if in_chans == 3:
        return photo_crops(n, resolution, seed=seed + (1000 if split == "train" else 0))
    if in_chans == 1:
        images, _ = fashion_mnist(split)
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        return normalize(images[idx], resolution, FASHION_MNIST_STATS)
    raise MobileNetsError(
        f"no built-in real images for in_chans={in_chans} (photos have 3 channels, Fashion-MNIST 1): "
        "pass the images yourself (calib_images= / verify_images=)"
    )


# ----------------------------------------------------------------------------------------------------
# Results


@dataclass
class Verification:
    """How an exported file's outputs compare with the PyTorch model's on real images."""

    runtime: str
    num_images: int
    max_abs_diff: float
    max_abs_ref: float
    top1_agreement: float
    tolerance: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        return (
            np.isfinite(self.max_abs_diff)
            and self.max_abs_diff <= self.tolerance
            and self.top1_agreement >= self.min_agreement
        )

    def summary(self) -> str:
        tol = "" if not np.isfinite(self.tolerance) else f" (tolerance {self.tolerance:.3g})"
        return (
            f"{self.runtime} vs PyTorch on {self.num_images} real images: max |Δ| {self.max_abs_diff:.3g}{tol}, "
            f"top-1 agreement {100 * self.top1_agreement:.1f}% (need ≥ {100 * self.min_agreement:.0f}%)"
        )


@dataclass
class ExportResult:
    path: Path
    format: str
    precision: str
    size_bytes: int
    verification: Verification | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        if self.verification is not None:
            d["verification"]["passed"] = bool(self.verification.passed)
        return d


def compare_outputs(
    reference: torch.Tensor,
    outputs: np.ndarray | torch.Tensor,
    runtime: str,
    precision: str = "fp32",
    min_agreement: float | None = None,
) -> Verification:
    """max |Δ| and top-1 agreement of a runtime's logits against the PyTorch reference."""
    ref = reference.detach().float()
    out = torch.as_tensor(np.asarray(outputs)).float().reshape(ref.shape)
    max_ref = float(ref.abs().max())
    return Verification(
        runtime=runtime,
        num_images=int(ref.shape[0]),
        max_abs_diff=float((out - ref).abs().max()),
        max_abs_ref=max_ref,
        top1_agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
        tolerance=RTOL[precision] * max_ref,
        min_agreement=MIN_AGREEMENT[precision] if min_agreement is None else min_agreement,
    )


# ----------------------------------------------------------------------------------------------------
# Writing files atomically


@contextmanager
def _staging(path: Path, format: str) -> Iterator[Path]:
    """A temporary file name in ``path``'s folder; on success the caller moves it into place."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MobileNetsError(f"cannot write {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise MobileNetsError(f"cannot write {path}: the folder {folder} is not writable; choose another -o path")
    if path.is_dir():
        raise MobileNetsError(f"cannot write {path}: it is a folder; give a file name ending in {SUFFIXES[format]}")
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=folder))
    try:
        yield tmpdir / ("model" + SUFFIXES[format])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _commit(staged: Path, path: Path, format: str) -> int:
    """Move a verified staged file (and OpenVINO's .bin beside its .xml) into place; return total bytes."""
    size = 0
    if format == "openvino":
        # The .bin first: an .xml is only ever visible next to the weights it describes.
        bin_staged, bin_path = staged.with_suffix(".bin"), Path(path).with_suffix(".bin")
        size += bin_staged.stat().st_size
        os.replace(bin_staged, bin_path)
    size += staged.stat().st_size
    os.replace(staged, path)
    return size


def _check_path(path: str | os.PathLike, format: str) -> Path:
    path = Path(path)
    if path.suffix != SUFFIXES[format]:
        raise MobileNetsError(f"{format} files end in {SUFFIXES[format]}: got output path {path}")
    return path


# ----------------------------------------------------------------------------------------------------
# Per-format writers and runners (they work on temporary paths; `export` adds verification and atomicity)


def _example(model: nn.Module, batch_size: int = 1, resolution: int | None = None) -> torch.Tensor:
    res = resolution or model.resolution
    return torch.randn(batch_size, model.in_chans, res, res)


def write_onnx(model: nn.Module, path: Path, resolution: int | None = None, opset: int = DEFAULT_OPSET) -> None:
    """ONNX file with a dynamic batch axis (input "input", output "logits")."""
    require("onnx", "ONNX export")
    if opset < 17:
        raise MobileNetsError(f"opset must be >= 17 (LayerNorm-era ops and our verification need it), got {opset}")
    example = _example(model, 2, resolution)
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )


def onnxruntime_session(path: Path, threads: int | None = None):
    ort = require("onnxruntime", "running ONNX files")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, images: torch.Tensor, threads: int | None = None) -> np.ndarray:
    session = onnxruntime_session(path, threads)
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


def _lower_executorch(exported, quantized: bool = False) -> bytes:
    exir = require("executorch.exir", "ExecuTorch export")
    partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "ExecuTorch export")
    with _quiet():
        program = exir.to_edge_transform_and_lower(exported, partitioner=[partitioner.XnnpackPartitioner()])
        return program.to_executorch().buffer


def write_executorch(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """ExecuTorch program with the whole network delegated to XNNPACK (batch 1, the mobile case)."""
    with _quiet(), torch.no_grad():
        exported = torch.export.export(model, (_example(model, 1, resolution),))
    path.write_bytes(_lower_executorch(exported))


def executorch_method(path: Path, threads: int | None = None):
    runtime = require("executorch.runtime", "running ExecuTorch files")
    if threads:
        portable = require("executorch.extension.pybindings.portable_lib", "running ExecuTorch files")
        portable._unsafe_reset_threadpool(threads)
    with _quiet():
        return runtime.Runtime.get().load_program(str(path)).load_method("forward")


def run_executorch(path: Path, images: torch.Tensor, threads: int | None = None) -> np.ndarray:
    method = executorch_method(path, threads)
    # The program has a static batch of 1: run the images one by one.
    return np.concatenate([method.execute([img.unsqueeze(0).contiguous()])[0].numpy() for img in images])


def write_openvino(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """OpenVINO IR (.xml + .bin) with a dynamic batch axis and fp32 weights."""
    ov = require("openvino", "OpenVINO export")
    res = resolution or model.resolution
    with _quiet(), torch.no_grad():
        ov_model = ov.convert_model(
            model, example_input=_example(model, 1, res), input=[(-1, model.in_chans, res, res)]
        )
        ov.save_model(ov_model, str(path), compress_to_fp16=False)


def openvino_compiled(path: Path, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None):
    """Compile an IR for the CPU. ``precision`` fp32 pins f32 math; bf16/int8 let the plugin use bf16."""
    ov = require("openvino", "running OpenVINO files")
    core = ov.Core()
    model = core.read_model(str(path))
    if batch_size:
        shape = list(model.inputs[0].get_partial_shape().get_min_shape())
        model.reshape([batch_size, *shape[1:]])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16"}
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise MobileNetsError("this CPU has no bf16 support (AVX512_BF16 or AMX): export fp32 or int8 instead")
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)


def run_openvino(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    compiled = openvino_compiled(path, precision, threads)
    return compiled(images.numpy())[0]


# ---- int8 ------------------------------------------------------------------------------------------


def quantize_onnx(fp32_path: Path, path: Path, calib_images: torch.Tensor) -> None:
    """Static int8 (QDQ, per-channel weights, MinMax-calibrated activations) with ONNX Runtime's quantizer."""
    quantization = require("onnxruntime.quantization", "int8 ONNX export")
    shape_inference = require("onnxruntime.quantization.shape_inference", "int8 ONNX export")
    pre = path.with_name("pre_" + path.name)
    with _quiet():
        shape_inference.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib_images.split(1))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    with _quiet():
        quantization.quantize_static(
            str(pre),
            str(path),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
        )
    pre.unlink()


def quantize_executorch(
    model: nn.Module, path: Path, calib_images: torch.Tensor, resolution: int | None = None
) -> None:
    """int8 ExecuTorch program: PT2E quantization with XNNPACK's quantizer (per-channel symmetric weights)."""
    xnn_quantizer = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "int8 ExecuTorch export")
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "int8 ExecuTorch export")
    example = _example(model, 1, resolution)
    quantizer = xnn_quantizer.XNNPACKQuantizer().set_global(
        xnn_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    with _quiet(), torch.no_grad():
        graph = torch.export.export(model, (example,)).module()
        prepared = pt2e.prepare_pt2e(graph, quantizer)
        for img in calib_images.split(1):
            prepared(img)
        converted = pt2e.convert_pt2e(prepared)
        exported = torch.export.export(converted, (example,))
    path.write_bytes(_lower_executorch(exported, quantized=True))


def quantize_openvino(fp32_path: Path, path: Path, calib_images: torch.Tensor) -> None:
    """int8 OpenVINO IR with NNCF post-training quantization (per-channel weights, symmetric)."""
    ov = require("openvino", "int8 OpenVINO export")
    nncf = require("nncf", "int8 OpenVINO export")
    # NNCF draws progress bars on stdout: send them to stderr so `--json` output stays clean.
    with _quiet(), contextlib.redirect_stdout(sys.stderr):
        model = ov.Core().read_model(str(fp32_path))
        data = nncf.Dataset([img.numpy() for img in calib_images.split(1)])
        quantized = nncf.quantize(model, data, subset_size=len(calib_images), fast_bias_correction=True)
        ov.save_model(quantized, str(path), compress_to_fp16=False)


# ----------------------------------------------------------------------------------------------------
# The export entry point


def write_model_file(
    model: nn.Module,
    path: Path,
    format: str,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    resolution: int | None = None,
) -> None:
    """Write ``model`` (already BN-folded, eval) to ``path`` without verification. Paths are not staged."""
    check_target(format, precision)
    if precision == "int8" and calib_images is None:
        raise MobileNetsError("int8 export needs calibration images (calib_images=, CLI --calib N)")
    if format == "onnx":
        if precision == "int8":
            fp32 = path.with_name("fp32_" + path.name)
            write_onnx(model, fp32, resolution)
            quantize_onnx(fp32, path, calib_images)
            fp32.unlink()
        else:
            write_onnx(model, path, resolution)
    elif format == "executorch":
        if precision == "int8":
            quantize_executorch(model, path, calib_images, resolution)
        else:
            write_executorch(model, path, resolution)
    else:
        if precision == "int8":
            fp32 = path.with_name("fp32_" + path.name)
            write_openvino(model, fp32, resolution)
            quantize_openvino(fp32, path, calib_images)
            fp32.unlink()
            fp32.with_suffix(".bin").unlink()
        else:
            write_openvino(model, path, resolution)


def run_model_file(
    path: Path, format: str, images: torch.Tensor, precision: str = "fp32", threads: int | None = None
) -> np.ndarray:
    """Logits of an exported file on ``images``, computed by the file's own runtime."""
    if format == "onnx":
        return run_onnx(path, images, threads)
    if format == "executorch":
        return run_executorch(path, images, threads)
    return run_openvino(path, images, precision, threads)


RUNTIME_OF = {"onnx": "ONNX Runtime", "executorch": "ExecuTorch-XNNPACK", "openvino": "OpenVINO"}


def check_target(format: str, precision: str) -> None:
    if format not in FORMATS:
        raise MobileNetsError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise MobileNetsError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision not in FORMAT_PRECISIONS[format]:
        raise MobileNetsError(
            f"{format} does not offer {precision}; it offers {', '.join(FORMAT_PRECISIONS[format])} "
            "(bf16 is an OpenVINO CPU mode)"
        )


def export(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "onnx",
    precision: str = "fp32",
    *,
    resolution: int | None = None,
    calib_images: torch.Tensor | None = None,
    verify: bool = True,
    verify_images: torch.Tensor | None = None,
    min_agreement: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Fold BN, write ``model`` as ``format`` at ``precision``, verify it with its runtime, move it into place.

    Args:
        resolution: input side the file is built for (default: the model's); ONNX and OpenVINO files take
            any batch size, ExecuTorch programs batch 1.
        calib_images: normalized images for int8 calibration (default: 200 real training images).
        verify_images: normalized images to compare on (default: 32 real test images).
        min_agreement: top-1 agreement the file needs (default: 97% fp32, 90% bf16, 80% int8).

    Raises MobileNetsError (and leaves nothing at ``path``) when the file cannot be written or fails.
    """
    check_target(format, precision)
    path = _check_path(path, format)
    say = progress or (lambda _msg: None)
    model = model.eval()
    res = resolution or model.resolution
    if precision == "int8" and calib_images is None:
        calib_images = real_images(200, model.in_chans, res, split="train")
    if verify and verify_images is None:
        verify_images = real_images(32, model.in_chans, res, split="test")
    folded = fold_bn(model)
    with _staging(path, format) as staged:
        say(f"writing {format} {precision} ({RUNTIME_OF[format]})")
        try:
            write_model_file(folded, staged, format, precision, calib_images, res)
        except MobileNetsError:
            raise
        except Exception as e:  # noqa: BLE001 - an exporter failure is the user's "export failed"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MobileNetsError(f"{format} {precision} export failed: {msg}") from e
        verification = None
        if verify:
            say(f"verifying with {RUNTIME_OF[format]} on {len(verify_images)} real images")
            with torch.no_grad():
                reference = model(verify_images)
            outputs = run_model_file(staged, format, verify_images, precision)
            verification = compare_outputs(reference, outputs, RUNTIME_OF[format], precision, min_agreement)
            if not verification.passed:
                raise MobileNetsError(
                    f"{format} {precision} export failed verification, nothing written: {verification.summary()}"
                )
        size = _commit(staged, path, format)
    return ExportResult(path=path, format=format, precision=precision, size_bytes=size, verification=verification)


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state_dict (``torch.save``'d, optionally under "model"/"state_dict", or .safetensors) into ``model``.

    TODO(merge): use the training engine's checkpoint reader (mobilenets.train) and mobilenets.weights once
    they land; pretrained ImageNet weights plug in here.
    """
    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"checkpoint {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reading failure is "not a checkpoint"
        raise MobileNetsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise MobileNetsError(
            f"{path} does not fit this model (build it with the options it was trained with): "
            f"{' '.join(first[:2])[:300]}"
        ) from None
    return model
