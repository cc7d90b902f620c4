"""MNN files (.mnn) converted by MNN's converter from the ONNX writer's file, and run by MNN's own Python module.

fp32 keeps fp32 weights; fp16 stores them in fp16 (``mnnconvert --fp16``: half the bytes), and MNN widens them to
fp32 where the CPU has no fp16 arithmetic (x86); int8 is MNN's offline quantizer (``mnnquant``) calibrated on real
images. The runtime options a file was verified with are stated in its card (``<file>.mnn.json``); verification also
runs it under MNN's defaults, and the card reports both figures.

The wheel's ``mnnconvert``/``mnnquant`` scripts send usage logs to Alibaba's servers (and pip-install a logging SDK
when it is missing): we call the converter's and the quantizer's native entry points (``_tools``) in a subprocess
instead. MNN prints its CPU features and precision choice on stdout; that is kept out of our output.

Needs ``pip install 'mobilenets[android]'``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import card as card_file
from mobilenets.deploy.cpu import runtime_threads
from mobilenets.deps import require
from mobilenets.errors import MobileNetsError

FORMAT = "mnn"
SUFFIX = ".mnn"
RUNTIME = "MNN"
PRECISIONS = ("fp32", "fp16", "int8")
# Activation calibrations of mnnquant's feature_quantize_method (the first is the default). EMA kept more of the float
# model's clear decisions than mnnquant's own default, KL: V3-Small α 0.75 and V2 α 0.35 trained on Fashion-MNIST
# (1,000 test images) 100% and 99.9% against 94.5% and 91.2% (refused); the pretrained V1 1.0/224 (256 photo crops)
# 98.8% with both, 91.4% of all images against 87.9%.
CALIBRATIONS = ("ema", "kl")
INT8_RUNS_ON = "every CPU: MNN widens int8 products to 32-bit sums (symmetric weights within [-127, 127])"
INPUT, OUTPUT = "input", "logits"  # the ONNX writer's names, which MNN's converter keeps
# MNN's CPU backend options each precision is verified and run with: "high" pins fp32 arithmetic; "low" lets MNN use
# fp16 (or bf16) arithmetic where the CPU has it, its usual mobile choice for an fp16 file.
OPTIONS = {
    "fp32": {"precision": "high"},
    "fp16": {"precision": "low"},
    "int8": {"precision": "high"},
}


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """MNN writes "The device supports: …" and "MNN use high precision" with printf: drop what reaches fd 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _mnn():
    with _quiet_stdout():
        require("MNN", "running MNN files")
        return require("MNN.nn", "running MNN files"), require("MNN.expr", "running MNN files")


def _tool(name: str, *args: str) -> None:
    """Run MNN's native ``mnnconvert``/``mnnquant`` (module ``_tools`` of the mnn wheel) in a subprocess."""
    import importlib.util

    if importlib.util.find_spec("_tools") is None:  # importing it here would print MNN's CPU line on our stdout
        require("MNN", f"MNN's {name}")
    calls = {
        "mnnconvert": "import sys, _tools; _tools.mnnconvert(['mnnconvert', *sys.argv[1:]])",
        "mnnquant": "import sys, _tools; _tools.mnnquant(['mnnquant', *sys.argv[1:]])",
    }
    done = subprocess.run([sys.executable, "-c", calls[name], *args], capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise MobileNetsError(f"MNN's {name} failed: {lines[-1] if lines else done.returncode}")


def _convert(model: nn.Module, path: Path, resolution: int, fp16: bool) -> None:
    from mobilenets.deploy import onnx as onnx_module

    with tempfile.TemporaryDirectory(prefix="mobilenets-mnn-") as tmp:
        source = Path(tmp) / "model.onnx"
        onnx_module.write(model, source, resolution)
        fp16_flag = ["--fp16"] if fp16 else []
        _tool("mnnconvert", "-f", "ONNX", "--modelFile", str(source), "--MNNModel", str(path), *fp16_flag)
    if not Path(path).is_file():
        raise MobileNetsError(f"MNN's converter wrote no file for {Path(path).name}")


def write(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """.mnn with fp32 weights and a dynamic batch axis, from the ONNX writer's file."""
    _convert(model, Path(path), resolution or model.resolution, fp16=False)


def write_fp16(model: nn.Module, path: Path, resolution: int | None = None) -> None:
    """.mnn with fp16 weights (``mnnconvert --fp16``): half the bytes."""
    _convert(model, Path(path), resolution or model.resolution, fp16=True)


def _static_batch(onnx_path: Path) -> None:
    """Fix the ONNX file's batch axis to 1: mnnquant cannot size a dynamic input (it aborts with length_error)."""
    onnx = require("onnx", "int8 MNN export")
    proto = onnx.load(str(onnx_path))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(onnx_path))


def _calibration_folder(calib_images: torch.Tensor, folder: Path) -> dict:
    """Write ``calib_images`` as PNGs that mnnquant's preprocessing, dst = (pixel − mean) · normal, maps back to the
    images (to within half a step of 8 bits per channel), and return that mean/normal. mnnquant reads image files
    only; the per-channel affine spans each channel's range over the calibration set."""
    from PIL import Image

    x = calib_images.detach().float().numpy()
    low, high = x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3))
    normal = np.maximum(high - low, 1e-6) / 255
    pixels = np.rint((x - low[None, :, None, None]) / normal[None, :, None, None]).clip(0, 255).astype(np.uint8)
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")
    return {"format": "GRAY" if x.shape[1] == 1 else "RGB", "mean": (-low / normal).tolist(), "normal": normal.tolist()}


def quantize(
    model: nn.Module, path: Path, calib_images: torch.Tensor, resolution: int, calibration: str = CALIBRATIONS[0]
) -> None:
    """int8 .mnn by MNN's offline quantizer (``mnnquant``): per-channel symmetric int8 weights (MAX_ABS, after bias
    correction for their rounding), int8 activations whose ranges ``calibration`` ("ema", "kl") estimates on
    ``calib_images``. Batch 1."""
    from mobilenets.deploy import onnx as onnx_module
    from mobilenets.quant.ptq import correct_bias_for_int8_weights

    if calibration not in CALIBRATIONS:
        raise MobileNetsError(f"MNN calibrates by {', '.join(CALIBRATIONS)}, not {calibration!r}")
    model = correct_bias_for_int8_weights(model, calib_images, qmax=127)
    with tempfile.TemporaryDirectory(prefix="mobilenets-mnnquant-") as tmp:
        scratch = Path(tmp)
        onnx_module.write(model, scratch / "fp32.onnx", resolution)
        _static_batch(scratch / "fp32.onnx")
        fp32 = [str(scratch / "fp32.onnx"), str(scratch / "fp32.mnn")]
        _tool("mnnconvert", "-f", "ONNX", "--modelFile", fp32[0], "--MNNModel", fp32[1])
        config = {
            **_calibration_folder(calib_images, scratch / "calibration"),
            "width": resolution,
            "height": resolution,
            "path": str(scratch / "calibration") + "/",
            "used_image_num": len(calib_images),
            "feature_quantize_method": calibration.upper(),
            "weight_quantize_method": "MAX_ABS",
            "batch_size": min(32, len(calib_images)),
        }
        (scratch / "config.json").write_text(json.dumps(config))
        # mnnquant also writes <output>.json (its scales): it stays in the scratch folder.
        _tool("mnnquant", str(scratch / "fp32.mnn"), str(scratch / "int8.mnn"), str(scratch / "config.json"))
        if not (scratch / "int8.mnn").is_file():
            raise MobileNetsError("MNN's mnnquant wrote no file")
        os.replace(scratch / "int8.mnn", path)


def dump(path: Path) -> dict:
    """The .mnn file as a dict (``mnnconvert -f MNN --JsonFile``): its ops, their parameters and weights."""
    with tempfile.TemporaryDirectory(prefix="mobilenets-mnndump-") as tmp:
        out = Path(tmp) / "model.json"
        _tool("mnnconvert", "-f", "MNN", "--modelFile", str(path), "--JsonFile", str(out))
        if not out.is_file():
            raise MobileNetsError(f"{path} is not a readable MNN file; pass a .mnn of an export")
        # A channel whose weights are all 0 gets the scale 0/0: the dump writes bare nan (and inf), which JSON lacks.
        text = re.sub(r"(?<![\w\"])(-?)inf(?![\w\"])", r"\1Infinity", out.read_text())
        return json.loads(re.sub(r"(?<![\w\"])-?nan(?![\w\"])", "NaN", text))


def _unpack(buf: np.ndarray, count: int, bits: int) -> np.ndarray:
    """``count`` unsigned integers of ``bits`` bits packed most significant first (MNN's FillBuffer)."""
    packed = np.unpackbits(buf)[: count * bits]
    if packed.size != count * bits:
        raise MobileNetsError("an int8 weight buffer of the .mnn file is truncated; re-export it")
    return packed.reshape(count, bits) @ (1 << np.arange(bits - 1, -1, -1))


def _int8_values(quan: dict) -> np.ndarray:
    """The integer weights (channels × taps) of a quantized conv, decoded from MNN's IDST buffer
    (tools/converter's IDSTEncoder.hpp). Type 4: the int8 weights themselves. Types 1 and 2 start with the shape (a
    count, then each extent as uint16, or int32 with shapeInt32). Type 1 then has the number of distinct values n
    (0 for 256), those values as int8, and each weight's index into them in ceil(log2 n) bits. Type 2 (sparse) has
    the number of stored entries (uint32), the bits of a step, each entry's step from the previous one, then the
    value table as type 1 and each entry's index into it; weights between entries are 0."""
    buf = np.asarray(quan["buffer"], dtype=np.int64).astype(np.uint8)
    kind = int(quan.get("type", 1))
    if kind == 4:
        channels = int(quan.get("aMax") or len(quan.get("alpha", [])) or 1)
        return buf.astype(np.int8).astype(np.int64).reshape(channels, -1)
    if kind not in (1, 2):
        raise MobileNetsError(f"the .mnn file stores int8 weights in IDST type {kind}, which this reader does not know")
    ndim, at = int(buf[0]), 1
    width = 4 if quan.get("shapeInt32") else 2
    extents = [int.from_bytes(bytes(buf[at + i * width : at + (i + 1) * width]), "little") for i in range(ndim)]
    at += ndim * width
    count = int(np.prod(extents))
    if kind == 2:
        stored = int.from_bytes(bytes(buf[at : at + 4]), "little")
        step_bits = int(buf[at + 4])
        at += 5
        steps = _unpack(buf[at:], stored, step_bits)
        at += (stored * step_bits + 7) // 8
    n = int(buf[at]) or 256
    table = buf[at + 1 : at + 1 + n].astype(np.int8).astype(np.int64)
    bits = max(1, int(np.ceil(np.log2(n))))
    index = _unpack(buf[at + 1 + n :], stored if kind == 2 else count, bits)
    if kind == 1:
        return table[index].reshape(extents)
    values = np.zeros(count, dtype=np.int64)
    values[np.cumsum(steps)] = table[index]
    return values.reshape(extents)


def int8_weights(path: Path) -> list[dict]:
    """Every int8 weight of an int8 .mnn: {"name", "values" (channels × taps), "scales" (per channel), "depthwise",
    "zero_point" (of the weights), "activation", "activation_zero_point" (of the layer's int8 input)}."""
    out = []
    for op in dump(path).get("oplists", []):
        main = op.get("main") if isinstance(op.get("main"), dict) else {}
        quan, symmetric = main.get("quanParameter"), main.get("symmetricQuan") or {}
        if not quan or not quan.get("buffer"):
            continue
        activation = "int8" if symmetric.get("outputDataType", "DT_INT8") == "DT_INT8" else "uint8"
        out.append(
            {
                "name": op.get("name", ""),
                "values": _int8_values(quan),
                "scales": np.asarray(quan.get("alpha", []), dtype=np.float32),
                "depthwise": op.get("type") == "ConvolutionDepthwise",
                # MAX_ABS weights are symmetric (readType > 0 marks MNN's asymmetric ones, min and step per channel)
                "zero_point": 0 if not quan.get("readType") else None,
                "activation": activation,
                # EMA gives the int8 inputs a zero point (a ReLU's [0, max] spans [-127, 127]), KL does not
                "activation_zero_point": int(symmetric.get("zeroPoint", 0)),
            }
        )
    return out


def int8_ranges(path: Path) -> list[dict]:
    """For every int8 weight of an int8 .mnn, read from the file: its integer min/max, zero point, whether a
    depthwise conv uses it, and the activations' type."""
    ranges = []
    for w in int8_weights(path):
        values = w.pop("values")
        w.pop("scales")
        ranges.append({"name": w.pop("name"), "min": int(values.min()), "max": int(values.max()), **w})
    return ranges


def float_ops(path: Path) -> list[str]:
    """The op types of an int8 .mnn that keep float arithmetic (those without int8 weights or int8 I/O)."""
    kinds = set()
    for op in dump(path).get("oplists", []):
        main = op.get("main") if isinstance(op.get("main"), dict) else {}
        if not main.get("quanParameter") and op.get("type") not in ("Input", "Const", "FloatToInt8", "Int8ToFloat"):
            kinds.add(op.get("type", "?"))
    return sorted(kinds)


sidecar = card_file.path_for
metadata = card_file.read


def companions(path: Path) -> list[Path]:
    """Files that travel with a .mnn: its card."""
    return [sidecar(path)]


def set_metadata(path: Path, info: dict) -> None:
    """The card beside the .mnn, with the runtime options the file is verified and run with."""
    card = {**info, "runtime_options": OPTIONS.get(info.get("precision"), OPTIONS["fp32"])}
    if info.get("precision") == "int8" and "float_ops" not in card:
        card["float_ops"] = float_ops(path)
    card_file.write(path, card)


def options_for(path: Path, precision: str) -> dict:
    """The runtime options ``path`` is run with: its card's, else those of ``precision``."""
    return card_file.runtime_options(path, precision, OPTIONS)


def load(
    path: Path,
    precision: str = "fp32",
    threads: int | None = None,
    batch_size: int | None = None,
    options: dict | None | str = "card",
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits, running ``path`` on MNN's CPU backend.

    ``options``: "card" (the options the file was verified with), a dict of MNN runtime options, or None for MNN's
    defaults (what a user who skips the card gets).
    """
    mnn_nn, expr = _mnn()
    config = {"backend": "CPU", **(options_for(path, precision) if options == "card" else (options or {}))}
    threads = runtime_threads(threads)
    if threads:
        config["numThread"] = threads
    with _quiet_stdout():
        manager = mnn_nn.create_runtime_manager((config,))
        module = mnn_nn.load_module_from_file(str(path), [INPUT], [OUTPUT], runtime_manager=manager)

    one_by_one = (metadata(path) or {}).get("precision", precision) == "int8"  # mnnquant's files have batch 1

    def run_batch(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)  # referenced until the outputs are read
        logits = []
        for chunk in np.split(x, len(x)) if one_by_one else [x]:
            out = module.forward(expr.const(chunk, list(chunk.shape), expr.NCHW))
            logits.append(np.array(out.read(), dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(logits)

    return run_batch


def load_with_defaults(path: Path, precision: str = "fp32", threads: int | None = None):
    """:func:`load` under MNN's default options (no precision given), which the card's options replace."""
    return load(path, precision, threads, options=None)


def default_options() -> dict:
    """MNN's default of the option the card sets ("normal" precision)."""
    return {"precision": "normal"}


def run(path: Path, images: torch.Tensor, precision: str = "fp32", threads: int | None = None) -> np.ndarray:
    return load(path, precision, threads)(images.numpy())


# ----------------------------------------------------------------------------------------------------
# Detectors: box decoding and NMS in the file
#
# MNN's converter maps the ONNX writer's whole detector graph (detection.FinalDetector), NonMaxSuppression included:
# MNN runs it as its NonMaxSuppressionV2 with torchvision's rules (score > threshold kept, IoU > threshold suppressed,
# ties included: tests/test_detection_android.py), so the file gives the final boxes, labels and scores.

DETECTOR_INPUT, DETECTOR_OUTPUTS = "image", ("boxes", "labels", "scores")  # detection.INPUT, FINAL_OUTPUTS


def write_detector(
    model: nn.Module,
    path: Path,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,  # noqa: ARG001 - the detectors' writer signature; no int8 here
    _weight_bits: int = 7,
) -> dict:
    """.mnn of a detector with NMS in the file, from the ONNX writer's graph, with fp32 or fp16 weights (``--fp16``).

    No int8 (:data:`mobilenets.deploy.detection.DETECTION_REFUSED`): the box decoding, softmax, top-k and the head's
    1×1 prediction convs must stay float (:data:`mobilenets.deploy.detection.INT8_SCOPES`), and mnnquant does not
    leave them so. It gives every tensor an int8 range (``extraTensorDescribe.quantInfo``) and every unary op an int8
    lookup table (``tableInt8``: the decoding's exp too), which MNN then uses: with every conv skipped (KL
    calibration) the boxes escape their clip (to -161 px) and none of the test detector's 72 confident detections is
    kept. With those ranges and tables taken out of the float part (the file rewritten through MNN's JSON form, which
    then gives the fp32 detections when every conv is skipped), int8 in the other formats' scopes kept 49 of 72 (68%,
    interval 57-78%; measured on the candidate graph, NMS in the runner): below the 95% rule, where ncnn's int8
    keeps 69. mnnquant's EMA calibration quantizes the
    prediction convs whatever ``skip_quant_op_names`` says, and its KL file of the graph with NMS crashes MNN.
    """
    from mobilenets.deploy import detection  # torchvision's detection code: loaded only for detectors

    if precision not in ("fp32", "fp16"):
        raise MobileNetsError(f"MNN detector files are fp32 or fp16, not {precision}")
    module = detection.graph(model.eval(), nms_in_file=True)
    with tempfile.TemporaryDirectory(prefix="mobilenets-mnn-") as tmp:
        source = Path(tmp) / "detector.onnx"
        detection._trace_onnx(module, source, model.resolution)
        fp16 = ["--fp16"] if precision == "fp16" else []
        _tool("mnnconvert", "-f", "ONNX", "--modelFile", str(source), "--MNNModel", str(path), *fp16)
    if not Path(path).is_file():
        raise MobileNetsError(f"MNN's converter wrote no file for {Path(path).name}")
    return {}


def detector_runner(
    path: Path, threads: int | None = None, options: dict | None | str = "card"
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function from one image (1, 3, H, W) to the file's [boxes (K, 4), labels (K,), scores (K,)].

    ``options``: "card" (the options in the file's card, fp32's without one), a dict of MNN runtime options, or None
    for MNN's defaults (what a user who skips the card gets).
    """
    mnn_nn, expr = _mnn()
    if options == "card":
        options = options_for(path, (metadata(path) or {}).get("precision", "fp32"))
    config = {"backend": "CPU", **(options or {}), "numThread": threads or 1}
    with _quiet_stdout():
        manager = mnn_nn.create_runtime_manager((config,))
        module = mnn_nn.load_module_from_file(
            str(path), [DETECTOR_INPUT], list(DETECTOR_OUTPUTS), runtime_manager=manager
        )

    def run(x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)  # referenced until the outputs are read
        outputs = module.forward([expr.const(x, list(x.shape), expr.NCHW)])
        return [np.array(out.read()).copy() for out in outputs]

    return run
