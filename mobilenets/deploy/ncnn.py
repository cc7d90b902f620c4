"""ncnn files (.param + .bin) written by pnnx from the traced model, and run by ncnn's own Python module.

Two of ncnn's defaults change the answers without a word, so neither is left to chance here:

- pnnx stores the weights in fp16 unless told not to (``fp16=0``): an fp32 file here holds fp32 weights, and an fp16
  file is asked for by name (half the bytes, and what it costs is measured on the same images).
- ncnn's runtime options default to fp16 storage, packing and arithmetic wherever the CPU has them. The options a file
  was verified with are stated in its card (``<file>.param.json``) and :func:`load` applies them; verification also
  runs the file under ncnn's defaults, and the card reports both figures.

int8 is ncnn's own int8 format, written here (the wheels ship no ncnn2int8): see the int8 section below.

And one trap of the binding: ``ncnn.Mat(array)`` wraps the numpy buffer without copying it, so the array must live
until ``extract`` returns. A temporary (``ncnn.Mat(x.copy())``) may be freed before the network reads it: the first
inference after loading was then off by 18.8 with another top-1, and later ones varied from run to run (issue 37).
:func:`load` keeps every input buffer referenced until its output is copied out.

Needs ``pip install 'mobilenets[android]'`` (pnnx converts, ncnn runs).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import card as card_file
from mobilenets.deploy.cpu import runtime_threads
from mobilenets.deps import quiet, require
from mobilenets.errors import MobileNetsError

FORMAT = "ncnn"
SUFFIX = ".param"
RUNTIME = "ncnn"
PRECISIONS = ("fp32", "fp16", "int8")
# int8 activation ranges: the largest |x| each quantized layer's input reaches on the calibration images.
CALIBRATIONS = ("minmax",)
INT8_RUNS_ON = "every CPU: ncnn widens int8 to 16 bits and sums products in 32 bits (weights within [-127, 127])"
# pnnx names the blobs of a one-input, one-output network in0 and out0.
INPUT, OUTPUT = "in0", "out0"
# The reduced-precision switches of ncnn's Option (all on by default where the CPU has them).
_REDUCED = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed")
# The options each precision is verified and run with. fp32: every reduced-precision switch off. fp16: the file's fp16
# weights, and fp16 storage and arithmetic where the CPU has them (ncnn's own choice on phones).
OPTIONS = {
    "fp32": {name: False for name in _REDUCED},
    "fp16": {
        "use_fp16_storage": True,
        "use_fp16_packed": True,
        "use_fp16_arithmetic": True,
        "use_bf16_storage": False,
        "use_bf16_packed": False,
    },
    # int8 layers compute in int8 (32-bit sums); the float layers between them stay fp32.
    "int8": {**{name: False for name in _REDUCED}, "use_int8_inference": True},
}
_LAYER_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(\d+)")


def write(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """ncnn .param + .bin with fp32 weights (pnnx ``fp16=0``), batch 1."""
    resolution = resolution or model.resolution
    _convert(model, Path(path), [1, model.in_chans, resolution, resolution], fp16=False)


def write_fp16(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """ncnn .param + .bin with fp16 weights (pnnx's default): half the bytes."""
    resolution = resolution or model.resolution
    _convert(model, Path(path), [1, model.in_chans, resolution, resolution], fp16=True)


def _convert(model: nn.Module, path: Path, shape: list[int], fp16: bool) -> None:
    """Trace ``model`` on an input of ``shape`` and convert it with the pnnx executable; its by-products stay in a
    temporary folder."""
    pnnx = require("pnnx", "ncnn export")
    path = path.absolute()  # pnnx runs in the scratch folder
    with tempfile.TemporaryDirectory(prefix="mobilenets-pnnx-") as tmp:
        scratch = Path(tmp)
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(model.eval(), torch.randn(*shape), check_trace=False)
        traced.save(str(scratch / "model.pt"))
        command = [
            pnnx.EXEC_PATH,
            str(scratch / "model.pt"),
            f"inputshape=[{','.join(map(str, shape))}]f32",
            "device=cpu",
            f"fp16={int(fp16)}",
            f"ncnnparam={path}",
            f"ncnnbin={bin_path(path)}",
            *(f"{key}={scratch / name}" for key, name in _BY_PRODUCTS.items()),
        ]
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
    if done.returncode or not path.is_file() or not bin_path(path).is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise MobileNetsError(f"pnnx failed to convert the model: {lines[-1] if lines else done.returncode}")
    foreign = unconverted_ops(path)
    if foreign:
        raise MobileNetsError(f"ncnn has no layer for {', '.join(foreign)} (pnnx left them in the graph)")


# pnnx's other outputs (its own graph, Python scripts, an ONNX file): written to the scratch folder and dropped.
_BY_PRODUCTS = {
    "pnnxparam": "model.pnnx.param",
    "pnnxbin": "model.pnnx.bin",
    "pnnxpy": "model_pnnx.py",
    "pnnxonnx": "model.pnnx.onnx",
    "ncnnpy": "model_ncnn.py",
}


# ----------------------------------------------------------------------------------------------------
# int8: ncnn's own quantized layers, written from the fp32 file
#
# The ncnn wheel ships neither ncnn2table nor ncnn2int8; what they write is ncnn's documented int8 model format, which
# this writes directly: each Convolution / ConvolutionDepthWise / InnerProduct gets int8_scale_term (param 8) and, in
# the .bin, its weights as int8 (tag 0x000D4B38, padded to 4 bytes), its fp32 bias, the per-output-channel weight scales
# (127 / max|w|) and the scale of its input (127 / max|x| over the calibration images, measured by ncnn itself on the
# fp32 file). ncnn quantizes each such layer's input, multiplies in int8 with 32-bit sums, and dequantizes its output
# (bias and fused activation in fp32): every other layer (pooling, hard-swish, adds, the squeeze-excite multiply) stays
# in float, as ncnn2int8's files do.

_QUANTIZED = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}  # layer → its int8_scale_term
# Param ids of bias_term and weight_data_size per layer (num_output is 0, int8_scale_term 8 in all three).
_SIZE_KEYS = {"Convolution": (5, 6), "ConvolutionDepthWise": (5, 6), "InnerProduct": (1, 2)}
# Layers that read nothing from the .bin (the ones pnnx writes for our classifiers and detectors); any other stops the
# rewrite.
_WEIGHTLESS = {
    "Input", "ReLU", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Swish", "Pooling", "BinaryOp", "Flatten",
    "Reshape", "Split", "Concat", "Eltwise", "Dropout", "Softmax", "Padding", "Crop", "Permute", "UnaryOp", "GELU",
    "Slice",
}  # fmt: skip
# MemoryData (a constant: the mean, the std, a detector's anchors) reads raw fp32 from the .bin, without a tag; the
# rewrite copies it through. Its extents are params 0 (w), 1 (h), 11 (d) and 2 (c).
_CONSTANT = "MemoryData"
_FP32_TAG, _FP16_TAG, _INT8_TAG = 0, 0x01306B47, 0x000D4B38


def _parse_line(line: str) -> tuple[str, str, list[str], list[str], dict[int, str]]:
    fields = line.split()
    kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
    blobs = fields[4 : 4 + n_in + n_out]
    params = dict(item.split("=", 1) for item in fields[4 + n_in + n_out :])
    return kind, name, blobs[:n_in], blobs[n_in:], {int(k): v for k, v in params.items()}


def _data_layers(path: Path) -> list[tuple[int, str, str, str, dict[int, str]]]:
    """(line number, type, name, input blob, params) of the layers with data in the .bin, in .bin order."""
    out = []
    for number, line in enumerate(Path(path).read_text().splitlines()[2:], start=2):
        if not line.strip():
            continue
        kind, name, inputs, _, params = _parse_line(line)
        if kind in _QUANTIZED or kind == _CONSTANT:
            out.append((number, kind, name, inputs[0] if inputs else "", params))
        elif kind not in _WEIGHTLESS:
            raise MobileNetsError(f"ncnn int8: the {kind} layer {name} is not one this writer walks the weights of")
    return out


def _sizes(kind: str, params: dict[int, str]) -> tuple[int, int, int]:
    """(num_output, bias_term, weight_data_size) of a Convolution / ConvolutionDepthWise / InnerProduct layer."""
    bias_key, size_key = _SIZE_KEYS[kind]
    return int(params.get(0, 0)), int(params.get(bias_key, 0)), int(params.get(size_key, 0))


def _constant_bytes(params: dict[int, str]) -> int:
    """Bytes of a MemoryData layer's raw fp32 data (ncnn's MemoryData::load_model: w·h·d·c, 1 for a scalar)."""
    w, h, d, c = (int(params.get(key, 0)) for key in (0, 1, 11, 2))
    return 4 * max(w, 1) * max(h, 1) * max(d, 1) * max(c, 1)


def _weights_at(data: bytes, at: int, kind: str, params: dict[int, str]) -> tuple[int, np.ndarray | None, int]:
    """(tag, the fp32 weights or None, the offset after weights and bias) of a layer whose data starts at ``at``."""
    outputs, bias_term, size = _sizes(kind, params)
    tag = int.from_bytes(data[at : at + 4], "little")
    itemsize = {_FP32_TAG: 4, _FP16_TAG: 2, _INT8_TAG: 1}.get(tag)
    if itemsize is None:
        raise MobileNetsError(f"ncnn: the weights of a {kind} layer have the unknown tag {tag:#x} in the .bin")
    weights = np.frombuffer(data, np.float32, size, at + 4) if tag == _FP32_TAG else None
    end = at + 4 + itemsize * size + (-(itemsize * size) % 4) + 4 * outputs * bias_term
    if tag == _INT8_TAG:  # then the per-channel weight scales and the input scale
        end += 4 * (int(params.get(7, 1)) if kind == "ConvolutionDepthWise" else outputs) + 4
    return tag, weights, end


def _input_ranges(path: Path, blobs: list[str], calib_images: torch.Tensor) -> dict[str, float]:
    """max |x| of each blob over ``calib_images``, computed by ncnn (fp32 options) on the fp32 file."""
    ncnn = require("ncnn", "int8 ncnn export")
    network = net(path, {**OPTIONS["fp32"], "lightmode": False}, 1)  # keep every blob: several are read per image
    ranges = dict.fromkeys(blobs, 0.0)
    for image in np.ascontiguousarray(calib_images.numpy(), dtype=np.float32):
        mat = ncnn.Mat(image)
        with network.create_extractor() as extractor:
            extractor.input(INPUT, mat)
            for blob in blobs:
                status, out = extractor.extract(blob)
                if status != 0:
                    raise MobileNetsError(f"ncnn could not compute blob {blob} while calibrating")
                ranges[blob] = max(ranges[blob], float(np.abs(np.array(out)).max()))
        del mat
    return ranges


def quantize(
    model: nn.Module, path: Path, calib_images: torch.Tensor, resolution: int, calibration: str = CALIBRATIONS[0]
) -> None:
    """int8 ncnn file: pnnx's fp32 file (after bias correction for int8 weights), its convolutions and fully
    connected layers rewritten as ncnn's int8 layers (per-channel symmetric weights, per-tensor input scales from
    ``calib_images``)."""
    from mobilenets.quant.ptq import correct_bias_for_int8_weights

    if calibration not in CALIBRATIONS:
        raise MobileNetsError(f"ncnn int8 calibrates by {', '.join(CALIBRATIONS)}, not {calibration!r}")
    path = Path(path)
    write(correct_bias_for_int8_weights(model, calib_images, qmax=127), path, resolution)
    _rewrite_int8(path, calib_images)


def _rewrite_int8(
    path: Path, calib_images: torch.Tensor, keep_float: Callable[[np.ndarray], bool] = lambda _w: False
) -> list[str]:
    """Rewrite the fp32 file at ``path`` in place: every Convolution / ConvolutionDepthWise / InnerProduct whose fp32
    weights ``keep_float`` does not claim becomes ncnn's int8 layer. Returns the names of the layers kept float."""
    path = Path(path)
    layers_ = _data_layers(path)
    quantized = [layer for layer in layers_ if layer[1] in _QUANTIZED]
    ranges = _input_ranges(path, sorted({blob for *_, blob, _ in quantized}), calib_images)
    lines = path.read_text().splitlines()
    data = bin_path(path).read_bytes()
    out, at, kept = [], 0, []
    for number, kind, name, blob, params in layers_:
        if kind == _CONSTANT:
            size = _constant_bytes(params)
            out.append(data[at : at + size])
            at += size
            continue
        tag, weights, end = _weights_at(data, at, kind, params)
        if tag != _FP32_TAG:
            raise MobileNetsError(f"ncnn int8: {name}'s weights are not fp32 in the .bin (tag {tag:#x})")
        if keep_float(weights):
            out.append(data[at:end])
            at = end
            kept.append(name)
            continue
        outputs, bias_term, size = _sizes(kind, params)
        bias = data[at + 4 + 4 * size : end]
        at = end
        channels = int(params.get(7, 1)) if kind == "ConvolutionDepthWise" else outputs
        per_channel = weights.reshape(channels, -1).astype(np.float64)
        scales = 127 / np.maximum(np.abs(per_channel).max(axis=1), 1e-12)
        q = np.clip(np.rint(per_channel * scales[:, None]), -127, 127).astype(np.int8).tobytes()
        input_scale = 127 / max(ranges[blob], 1e-12)
        out += [_INT8_TAG.to_bytes(4, "little"), q, b"\0" * (-len(q) % 4), bias]
        out += [scales.astype(np.float32).tobytes(), np.float32(input_scale).tobytes()]
        params[8] = str(_QUANTIZED[kind])
        fields = lines[number].split()
        head = fields[: 4 + int(fields[2]) + int(fields[3])]
        lines[number] = " ".join([*head, *(f"{k}={v}" for k, v in params.items())])
    if at != len(data):
        raise MobileNetsError(f"ncnn int8: {len(data) - at} bytes of the .bin belong to no layer this writer knows")
    bin_path(path).write_bytes(b"".join(out))
    path.write_text("\n".join(lines) + "\n")
    return kept


def int8_weights(path: Path) -> list[dict]:
    """Every int8 weight of an int8 ncnn file, read from its .bin: {"name", "values" (channels × taps, int8),
    "scales" (127 / max|w| per channel), "input_scale", "depthwise", "activation"}."""
    data = bin_path(path).read_bytes()
    out, at = [], 0
    for _, kind, name, _, params in _data_layers(path):
        if kind == _CONSTANT:
            at += _constant_bytes(params)
            continue
        tag, _, end = _weights_at(data, at, kind, params)
        if tag != _INT8_TAG:  # an fp32/fp16 layer: not int8
            at = end
            continue
        outputs, _, size = _sizes(kind, params)
        channels = int(params.get(7, 1)) if kind == "ConvolutionDepthWise" else outputs
        values = np.frombuffer(data, np.int8, size, at + 4).reshape(channels, -1)
        scales = np.frombuffer(data, np.float32, channels, end - 4 * channels - 4)
        input_scale = float(np.frombuffer(data, np.float32, 1, end - 4)[0])
        at = end
        entry = {"name": name, "values": values, "scales": scales, "input_scale": input_scale}
        out.append({**entry, "depthwise": kind == "ConvolutionDepthWise", "activation": "int8"})
    return out


def int8_ranges(path: Path) -> list[dict]:
    """For every int8 weight of an int8 ncnn file: its integer min/max, whether a depthwise conv uses it, and the
    activations' type (ncnn quantizes each int8 layer's input to signed int8)."""
    ranges = []
    for w in int8_weights(path):
        values = w.pop("values")
        w.pop("scales"), w.pop("input_scale")
        ranges.append({"name": w.pop("name"), "min": int(values.min()), "max": int(values.max()), "zero_point": 0, **w})
    return ranges


def float_layers(path: Path) -> list[str]:
    """The layer types of a file that compute in float (in an int8 file, all but its int8 layers: those with
    int8_scale_term, param 8, set)."""
    kinds = set()
    for line in Path(path).read_text().splitlines()[2:]:
        if line.strip():
            kind, _, _, _, params = _parse_line(line)
            if kind != "Input" and not (kind in _QUANTIZED and int(params.get(8, 0))):
                kinds.add(kind)
    return sorted(kinds)


def layers(path: Path) -> list[tuple[str, str]]:
    """(type, name) of every layer of a .param file, in file order."""
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].strip() != "7767517":
        raise MobileNetsError(f"{path} is not an ncnn .param file (no 7767517 magic); pass the .param of an export")
    return [(m.group(1), m.group(2)) for line in lines[2:] if (m := _LAYER_LINE.match(line))]


def unconverted_ops(path: Path) -> list[str]:
    """Ops pnnx could not map to ncnn layers (left as pnnx.*, F.*, torch.* or Tensor.* entries)."""
    foreign = {kind for kind, _ in layers(path) if kind.startswith(("pnnx.", "F.", "torch.", "Tensor.", "nn."))}
    return sorted(foreign)


def bin_path(path: Path) -> Path:
    return Path(path).with_suffix(".bin")


sidecar = card_file.path_for
metadata = card_file.read


def companions(path: Path) -> list[Path]:
    """Files that travel with a .param: its weights and its card."""
    return [bin_path(path), sidecar(path)]


def set_metadata(path: Path, info: dict) -> None:
    """The card beside the .param (ncnn's text format has no free-form field), with the runtime options to load the
    file with: the ones it is verified under."""
    card = {**info, "runtime_options": OPTIONS.get(info.get("precision"), OPTIONS["fp32"])}
    if info.get("precision") == "int8":
        card["float_layers"] = float_layers(path)
    card_file.write(path, card)


def options_for(path: Path, precision: str) -> dict:
    """The runtime options ``path`` is run with: its card's, else those of ``precision``."""
    return card_file.runtime_options(path, precision, OPTIONS)


def net(path: Path, options: dict | None, threads: int | None = None):
    """An ncnn.Net with ``options`` set (None: ncnn's defaults) and ``path`` loaded."""
    ncnn = require("ncnn", "running ncnn files")
    network = ncnn.Net()
    for name, value in (options or {}).items():
        setattr(network.opt, name, value)
    threads = runtime_threads(threads)
    if threads:
        network.opt.num_threads = threads
    if network.load_param(str(path)) != 0 or network.load_model(str(bin_path(path))) != 0:
        raise MobileNetsError(f"ncnn could not load {path} and {bin_path(path).name}; re-export them")
    return network


def load(
    path: Path,
    precision: str = "fp32",
    threads: int | None = None,
    batch_size: int | None = None,
    options: dict | None | str = "card",
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits, running ``path`` with ncnn image by image.

    ``options``: "card" (the options the file was verified with), a dict of ncnn Option fields, or None for ncnn's
    defaults (what a user who skips the card gets).
    """
    ncnn = require("ncnn", "running ncnn files")
    network = net(path, options_for(path, precision) if options == "card" else options, threads)

    def run_batch(x: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(x, dtype=np.float32)  # referenced until the last extract returns
        logits = []
        for image in images:
            # ncnn.Mat wraps `image`'s buffer without a copy: `image` and `mat` stay alive through extract.
            mat = ncnn.Mat(image)
            with network.create_extractor() as extractor:
                extractor.input(INPUT, mat)
                status, out = extractor.extract(OUTPUT)
                if status != 0:
                    raise MobileNetsError(f"ncnn failed to run {Path(path).name} (extract returned {status})")
                logits.append(np.array(out, dtype=np.float32).reshape(-1).copy())
            del mat
        return np.stack(logits)

    return run_batch


def load_with_defaults(path: Path, precision: str = "fp32", threads: int | None = None):
    """:func:`load` under ncnn's default options, which the card's options replace."""
    return load(path, precision, threads, options=None)


def default_options() -> dict:
    """ncnn's defaults of the switches the card sets, on this machine's build."""
    ncnn = require("ncnn", "running ncnn files")
    opt = ncnn.Net().opt
    return {name: bool(getattr(opt, name)) for name in _REDUCED}


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    return load(path, precision, threads)(images.numpy())


# ----------------------------------------------------------------------------------------------------
# Detectors: box decoding in the file; each class's top-k and NMS in the runner
#
# ncnn has no TopK and no NMS layer, and pnnx maps neither torchvision's strided box decoding (``0::4`` slices,
# ``unbind``) nor the gather of each class's top-k boxes. The file holds the detector up to its top-k with ncnn's own
# layers: ``BoxCoder.decode_single`` and ``clip_boxes_to_image``'s arithmetic, in the same order, on the contiguous
# (A, 2) halves of the offsets, with the anchors' centres and sizes as constants. It gives every anchor's box (A, 4)
# and softmax scores (A, C); the runner (:func:`mobilenets.deploy.detection.file_detector`) takes each class's top-k
# and applies torchvision's ``batched_nms``.

DETECTOR_OUTPUTS = ("out0", "out1")  # boxes (A, 4), scores (A, C), as pnnx names a graph's two outputs


class DecodedWithNcnnLayers(nn.Module):
    """image (1, 3, H, W) in [0, 1] → boxes (A, 4) in input pixels, clipped, and softmax scores (A, C): the
    :class:`~mobilenets.deploy.detection.DecodedDetector` ``decoded``'s outputs, in ops pnnx maps to ncnn layers."""

    def __init__(self, decoded: nn.Module):
        super().__init__()
        self.backbone, self.head = decoded.backbone, decoded.head
        self.register_buffer("mean", decoded.mean.clone())
        self.register_buffer("std", decoded.std.clone())
        anchors = decoded.anchors
        # torchvision's widths = x2 - x1 and ctr_x = x1 + 0.5 · widths, computed once (the same fp32 values)
        size = anchors[:, 2:] - anchors[:, :2]
        self.register_buffer("anchor_size", size)
        self.register_buffer("anchor_centre", anchors[:, :2] + 0.5 * size)
        wx, wy, ww, wh = decoded.box_coder.weights
        # A scalar where x and y share the weight (every torchvision SSD: 10, 10, 5, 5): ncnn's scalar BinaryOp.
        self.centre_weights = wx if wx == wy else torch.tensor([[wx, wy]])
        self.size_weights = ww if ww == wh else torch.tensor([[ww, wh]])
        self.size_clip = float(decoded.box_coder.bbox_xform_clip)
        h, w = decoded.resolution
        self.limits = float(w) if w == h else torch.tensor([[w, h, w, h]], dtype=torch.float32)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.mean) / self.std
        out = self.head(list(self.backbone(x).values()))
        offsets, logits = out["bbox_regression"].flatten(0, 1), out["cls_logits"].flatten(0, 1)
        centre = offsets[:, :2] / self.centre_weights * self.anchor_size + self.anchor_centre
        size = torch.exp(torch.clamp(offsets[:, 2:] / self.size_weights, max=self.size_clip)) * self.anchor_size
        half = 0.5 * size
        boxes = torch.cat((centre - half, centre + half), dim=1).clamp(min=0)
        boxes = boxes.clamp(max=self.limits) if isinstance(self.limits, float) else torch.minimum(boxes, self.limits)
        return boxes, torch.softmax(logits, dim=-1)


class _Trunk(nn.Module):
    """The detector graph's backbone and head on a batch: what bias correction runs."""

    def __init__(self, graph: DecodedWithNcnnLayers):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.graph
        return g.head(list(g.backbone((x - g.mean) / g.std).values()))


def write_detector(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    _weight_bits: int = 7,
) -> dict:
    """ncnn file of a detector (:class:`DecodedWithNcnnLayers`): fp32 or fp16 weights (pnnx ``fp16``), or int8,
    ncnn's int8 layers (per-channel symmetric weights, per-tensor input ranges measured by ncnn on ``calib_images``)
    in the backbone, extra layers and the head's depthwise convs, after bias correction; the head's 1×1 prediction
    convs stay fp32 (:data:`mobilenets.deploy.detection.INT8_SCOPES`). Returns what an int8 file keeps float."""
    from mobilenets.deploy import detection  # torchvision's detection code: loaded only for detectors

    graph = DecodedWithNcnnLayers(detection.DecodedDetector(model.eval())).eval()
    shape = [1, 3, *model.resolution]
    if precision != "int8":
        _convert(graph, Path(path), shape, fp16=precision == "fp16")
        return {}
    if calib_images is None:
        raise MobileNetsError("int8 export needs calibration images (calib_images=, CLI --calib N)")
    from mobilenets.quant.fold import fold_bn
    from mobilenets.quant.ptq import correct_bias_for_int8_weights

    graph = fold_bn(graph)
    scopes = detection.int8_module_names(graph)
    in_scope = {
        name
        for name, m in graph.named_modules()
        if isinstance(m, nn.Conv2d) and any(name.startswith(s + ".") for s in scopes)
    }
    kept = {name: m for name, m in graph.named_modules() if isinstance(m, nn.Conv2d) and name not in in_scope}
    corrected = correct_bias_for_int8_weights(_Trunk(graph), calib_images, qmax=127).graph
    with torch.no_grad():  # bias correction is for int8 weights: the convs kept float keep their biases
        for name, m in corrected.named_modules():
            if name in kept and m.bias is not None:
                m.bias.copy_(kept[name].bias)
    _convert(corrected, Path(path), shape, fp16=False)
    float_weights = {m.weight.detach().numpy().astype(np.float32).tobytes() for m in kept.values()}
    kept_layers = _rewrite_int8(Path(path), calib_images, keep_float=lambda w: w.tobytes() in float_weights)
    if len(kept_layers) != len(kept):
        raise MobileNetsError(f"ncnn int8: found {len(kept_layers)} of the {len(kept)} convs to keep float in the file")
    return {**detection.INT8_KEPT_FLOAT, "float_convs": sorted(kept)}


def detector_runner(
    path: Path, threads: int | None = None, options: dict | None | str = "card"
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function from one image (1, 3, H, W) to the file's [boxes (A, 4), scores (A, C)].

    ``options``: "card" (the options in the file's card, fp32's without one), a dict of ncnn Option fields, or None
    for ncnn's defaults (what a user who skips the card gets).
    """
    ncnn = require("ncnn", "running ncnn files")
    if options == "card":
        options = options_for(path, (metadata(path) or {}).get("precision", "fp32"))
    network = net(path, options, threads or 1)

    def run(x: np.ndarray) -> list[np.ndarray]:
        image = np.ascontiguousarray(x[0], dtype=np.float32)  # referenced until both extracts return
        # ncnn.Mat wraps `image`'s buffer without a copy: `image` and `mat` stay alive through extract.
        mat = ncnn.Mat(image)
        outputs = []
        with network.create_extractor() as extractor:
            extractor.input(INPUT, mat)
            for name in DETECTOR_OUTPUTS:
                status, out = extractor.extract(name)
                if status != 0:
                    raise MobileNetsError(f"ncnn failed to run {Path(path).name} (extract {name} returned {status})")
                outputs.append(np.array(out, dtype=np.float32).copy())
        del mat
        return outputs

    return run
