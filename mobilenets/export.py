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

from mobilenets.data import FASHION_MNIST_STATS, IMAGENET_STATS, load_fashion_mnist
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
# bf16/int8 agreement is judged on images whose float top-1 probability beats the runner-up by this much.
CLEAR_MARGIN = 0.2


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


def static_padding(model: nn.Module, resolution: int) -> nn.Module:
    """A copy of ``model`` whose TensorFlow "SAME" pads (:class:`~mobilenets.models.layers.PadSame`) are fixed
    for ``resolution``: symmetric pads move into the conv's own ``padding``, asymmetric ones become a
    constant ``ZeroPad2d``. Outputs are unchanged at that resolution.

    PadSame computes its pads from the input's shape, which exporters trace as shape arithmetic
    (Shape/Gather/Sub/Div nodes) in front of a dynamic Pad: slower, and opaque to int8 quantizers and to the
    runtimes' Pad-into-Conv fusion. Models without PadSame come back as they are (copied).
    """
    from mobilenets.models.layers import PadSame

    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, inp, _n=name: sizes.__setitem__(_n, tuple(inp[0].shape[-2:])))
        for name, m in model.named_modules()
        if isinstance(m, PadSame)
    ]
    if not hooks:
        return model
    with torch.no_grad():
        model(torch.zeros(1, model.in_chans, resolution, resolution))
    for h in hooks:
        h.remove()
    for name, (h, w) in sizes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        pad: PadSame = getattr(parent, child)
        (top, bottom), (left, right) = pad._pad(h), pad._pad(w)
        conv = getattr(parent, "conv", None)
        if top == bottom and left == right and isinstance(conv, nn.Conv2d) and conv.padding == (0, 0):
            conv.padding = (top, left)
            setattr(parent, child, nn.Identity())
        else:
            setattr(parent, child, nn.ZeroPad2d((left, right, top, bottom)))
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


def fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images (N, 1, 28, 28) uint8 and labels (N,), read by :mod:`mobilenets.data`."""
    ds = load_fashion_mnist(split, data_dir)
    return ds.images, ds.labels


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


def photo_crops(
    n: int, resolution: int, seed: int = 0, stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS
) -> torch.Tensor:
    """``n`` normalized crops (N, 3, R, R) of real photos (scikit-image's and scikit-learn's sample photos).

    Crops cover 35–100% of the shorter side at random positions, half of them mirrored, normalized with
    ``stats`` (mean, std; ImageNet's by default, (0.5, 0.5) for TF-slim weights). Different seeds give
    different crops: calibration and verification use different ones.
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
        out.append(normalize(crop.unsqueeze(0), resolution, stats))
    return torch.cat(out)


def real_images(
    n: int,
    in_chans: int,
    resolution: int,
    split: str = "test",
    seed: int = 0,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> torch.Tensor:
    """``n`` real images a model of ``in_chans`` channels can take: photos (3) or Fashion-MNIST (1).

    ``split="train"`` is for calibration (Fashion-MNIST's training set; photo crops with another seed),
    ``split="test"`` for verification. ``stats`` (mean, std) is the normalization the model was trained
    with; by default ImageNet's for photos and Fashion-MNIST's own for 1-channel images.
    """
    if n < 1:
        raise MobileNetsError(f"the number of images must be >= 1, got {n}")
    if in_chans == 3:
        return photo_crops(n, resolution, seed=seed + (1000 if split == "train" else 0), stats=stats or IMAGENET_STATS)
    if in_chans == 1:
        images, _ = fashion_mnist(split)
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        return normalize(images[idx], resolution, stats or FASHION_MNIST_STATS)
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
    clear_images: int = 0
    clear_agreement: float = float("nan")
    judge_clear: bool = False

    @property
    def judged_agreement(self) -> float:
        """The agreement the pass/fail rule uses: on clear predictions for bf16/int8 when there are any."""
        return self.clear_agreement if self.judge_clear and self.clear_images else self.top1_agreement

    @property
    def passed(self) -> bool:
        return (
            bool(np.isfinite(self.max_abs_diff))
            and self.max_abs_diff <= self.tolerance
            and self.judged_agreement >= self.min_agreement
        )

    def summary(self) -> str:
        tol = "" if not np.isfinite(self.tolerance) else f" (tolerance {self.tolerance:.3g})"
        head = f"{self.runtime} vs PyTorch on {self.num_images} real images: max |Δ| {self.max_abs_diff:.3g}{tol}, "
        need = f"need ≥ {100 * self.min_agreement:.0f}%"
        if not (self.judge_clear and self.clear_images):
            return head + f"top-1 agreement {100 * self.top1_agreement:.1f}% ({need})"
        return head + (
            f"top-1 agreement {100 * self.top1_agreement:.1f}% on all, {100 * self.clear_agreement:.1f}% on the "
            f"{self.clear_images} the float model predicts clearly ({need} on those)"
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
    """max |Δ| and top-1 agreement of a runtime's logits against the PyTorch reference.

    Reduced precisions (bf16, int8) are judged on the images the float model predicts clearly — its top-1
    probability at least ``CLEAR_MARGIN`` above the runner-up. On an image whose two best classes are nearly
    tied any rounding may swap them, which says nothing about the file; a wrong decision where the float
    model is sure does. Agreement on all images is reported too.
    """
    ref = reference.detach().float()
    out = torch.as_tensor(np.asarray(outputs)).float().reshape(ref.shape)
    max_ref = float(ref.abs().max())
    agree = out.argmax(1) == ref.argmax(1)
    if ref.shape[1] > 1:
        top2 = ref.softmax(1).topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) >= CLEAR_MARGIN
    else:
        clear = torch.zeros_like(agree)
    return Verification(
        clear_images=int(clear.sum()),
        clear_agreement=float(agree[clear].float().mean()) if clear.any() else float("nan"),
        judge_clear=precision != "fp32",
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


class _ReLUThenClamp6(nn.Module):
    """ReLU6 written as relu → clamp(max=6), the same function.

    XNNPACK's PT2E quantizer fuses conv → relu (the conv's int8 output covers [0, max]) but not
    conv → hardtanh (ReLU6): there the conv output is quantized over its whole pre-activation range and the
    clip inherits that coarse grid. On the pretrained MobileNet this raised top-1 agreement with the float
    model on 64 photo crops from 53% to 75%.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).clamp(max=6.0)


def _relu6_as_relu_clamp(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, _ReLUThenClamp6())
    return model


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
    model = _relu6_as_relu_clamp(model)
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
    folded = static_padding(fold_bn(model), res)
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


Stats = tuple[tuple[float, ...], tuple[float, ...]]


def build_model(
    name: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    pretrained: bool = False,
    **model_kwargs,
) -> tuple[nn.Module, Stats | None]:
    """The model to export, in eval mode, and the input normalization (mean, std) its weights expect.

    Exactly one source of weights, or none (random initialization, for latency only):
      - ``pretrained``: Google's ImageNet MobileNetV1 (:func:`mobilenets.weights.pretrained_model`);
      - ``weights``: a file :func:`mobilenets.weights.load_weights` reads (ours + card, timm, TF-slim .pb);
      - ``checkpoint``: a ``model.pt``/``checkpoint.pt`` of ``mobilenets train`` (it rebuilds its own
        network; ``name`` may be left out), or a plain state_dict for ``create_model(name, **model_kwargs)``.
    The normalization is None when unknown (random or plain state_dict weights): callers use their default.
    """
    from mobilenets.models import create_model

    if sum(bool(x) for x in (checkpoint, weights, pretrained)) > 1:
        raise MobileNetsError("give one source of weights: --pretrained, --weights FILE or --checkpoint FILE")
    if pretrained or weights:
        from mobilenets import weights as W

        extra = {k: v for k, v in model_kwargs.items() if v is not None}
        if extra:
            raise MobileNetsError(
                f"{', '.join(sorted(extra))} come from the weights file; leave them out with --pretrained/--weights "
                "(another input size goes in the name, e.g. mobilenet_v1_1.0_160)"
            )
        model, card = W.pretrained_model(name) if pretrained else W.load_weights(weights, model_name=name)
        return model.eval(), (tuple(card.preprocessing.mean), tuple(card.preprocessing.std))
    state = None
    if checkpoint is not None:
        from mobilenets.train import model_from_checkpoint
        from mobilenets.weights import read_torch_file, state_dict_from

        path = Path(checkpoint)
        if not path.is_file():
            raise MobileNetsError(f"checkpoint {path} not found")
        if path.suffix == ".safetensors":
            state = _read_safetensors(path)
        else:
            obj = read_torch_file(path)
            if isinstance(obj, dict) and "meta" in obj:
                model, meta = model_from_checkpoint(obj, path)
                return model, (tuple(meta["mean"]), tuple(meta["std"]))
            state = state_dict_from(obj, path)
    if name is None:
        raise MobileNetsError("name the model to export (see `mobilenets list`), or pass a training --checkpoint")
    model = create_model(name, **{k: v for k, v in model_kwargs.items() if v is not None})
    if state is not None:
        _load_state(model, state, checkpoint)
    return model.eval(), None


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state_dict (``torch.save``'d, optionally under "model"/"state_dict", or .safetensors) into ``model``.

    Files are read with ``weights_only=True``: a checkpoint can never run code.
    """
    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        from mobilenets.weights import read_state_dict

        state = read_state_dict(path)
    return _load_state(model, state, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any reading failure is "not a checkpoint"
        raise MobileNetsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None


def _load_state(model: nn.Module, state: dict, path: str | os.PathLike) -> nn.Module:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise MobileNetsError(
            f"{path} does not fit this model (build it with the options it was trained with): "
            f"{' '.join(first[:2])[:300]}"
        ) from None
    return model
