"""`mobilenets export`: fold BN, write a file for a runtime at a precision, verify it, move it into place.

Every export is verified by default: the written file is loaded by its own runtime, run on real images
(photos for 3-channel models, Fashion-MNIST for 1-channel ones) and compared with the PyTorch model
(max |Δ| of the logits and top-1 agreement). A file that fails is never left at the output path: files
are written to a temporary name in the same folder and moved into place only after they pass.

A file is built for a target, not for the machine that builds it. int8 files are safe on every CPU by
default (see each runtime module); a check this machine cannot run (bf16 math without AVX512_BF16/AMX,
8-bit weights without VNNI) is skipped, and the result says which and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import FORMATS, runtime_module
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import real_images
from mobilenets.deploy.verify import VERIFY_IMAGES, Verification, compare_outputs, int8_safety
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_staging
from mobilenets.quant.fold import fold_bn, static_padding
from mobilenets.quant.ptq import equalize_cross_layer
from mobilenets.quant.qat import converts_to

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SUFFIXES = {f: runtime_module(f).SUFFIX for f in FORMATS}
RUNTIME_OF = {f: runtime_module(f).RUNTIME for f in FORMATS}
# Which precisions each format can hold. bf16 is an OpenVINO execution mode (the IR keeps fp32 weights and
# the CPU plugin computes in bf16 where the CPU has AVX512_BF16/AMX); the other runtimes have no bf16. fp16 is a file
# with fp16 weights (ncnn, MNN: half the bytes), run with fp16 arithmetic where the CPU has it.
FORMAT_PRECISIONS = {f: runtime_module(f).PRECISIONS for f in FORMATS}
# Formats whose int8 kernels multiply u8 activations by s8 weights on x86: 8-bit weights saturate there
# without VNNI, so their int8 weights default to 7 bits. The others use signed int8 activations.
# int8 activation calibrations per format (the first is the default); see each runtime's quantize.
CALIBRATIONS = {f: tuple(getattr(runtime_module(f), "CALIBRATIONS", ())) for f in FORMATS}
WEIGHT_BITS_FORMATS = ("onnx", "openvino", "web")
DEFAULT_WEIGHT_BITS = 7


@dataclass
class ExportResult:
    path: Path
    format: str
    precision: str
    size_bytes: int
    verification: Verification | None = None
    skipped: list[str] = field(default_factory=list)  # checks this machine could not run, and why
    built_for: dict = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)  # further checks that passed (web: the page on image files)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        if self.verification is not None:
            d["verification"]["passed"] = bool(self.verification.passed)
        return d


def check_calibration(format: str, calibration: str | None) -> None:
    if calibration is not None and calibration not in CALIBRATIONS.get(format, ()):
        offered = ", ".join(CALIBRATIONS.get(format, ())) or "none"
        raise MobileNetsError(f"{format} int8 calibrates by {offered}; got --calibration {calibration!r}")


def check_target(format: str, precision: str, weight_bits: int = DEFAULT_WEIGHT_BITS) -> None:
    if format not in FORMATS:
        raise MobileNetsError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise MobileNetsError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision not in FORMAT_PRECISIONS[format]:
        raise MobileNetsError(
            f"{format} does not offer {precision}; it offers {', '.join(FORMAT_PRECISIONS[format])} "
            "(bf16 is an OpenVINO CPU mode, fp16 an ncnn and MNN file)"
        )
    if weight_bits not in (7, 8):
        raise MobileNetsError(
            f"int8 weight bits must be 7 (safe on every CPU) or 8 (VNNI CPUs only), got {weight_bits}"
        )
    if weight_bits == 8 and format not in WEIGHT_BITS_FORMATS:
        raise MobileNetsError(
            f"{format} int8 uses signed activations and is exact on every CPU at 8 bits already: "
            f"drop --int8-weight-bits (it applies to {', '.join(WEIGHT_BITS_FORMATS)})"
        )


def built_for(format: str, precision: str, weight_bits: int, model: nn.Module, resolution: int) -> dict:
    """What a file is built for, stored in it (ONNX metadata_props, OpenVINO rt_info, a card beside a .pte)."""
    from mobilenets import __version__

    info = {
        "producer": f"mobilenets {__version__}",
        "format": format,
        "runtime": RUNTIME_OF[format],
        "precision": precision,
        "input": [1, model.in_chans, resolution, resolution],
        "num_classes": getattr(model, "num_classes", None),
        "built_on": cpu_info().line(),
    }
    if precision == "bf16":
        info["runs_on"] = "x86 CPUs with AVX512_BF16 or AMX (OpenVINO computes in bf16 there)"
    elif precision == "fp16":
        info["runs_on"] = "every CPU: fp16 arithmetic where the CPU has it (Arm v8.2+), fp16 weights widened elsewhere"
    elif precision == "int8" and format in WEIGHT_BITS_FORMATS:
        info["int8"] = {"weights": f"int{weight_bits} per-channel symmetric", "activations": "uint8"}
        info["runs_on"] = (
            "every CPU: 7-bit weights cannot saturate u8×s8 16-bit accumulation on x86 without VNNI"
            if weight_bits == 7
            else "x86 CPUs with VNNI or AMX, and Arm; saturates (wrong answers) on AVX2-only x86"
        )
    elif precision == "int8":
        info["int8"] = {"weights": "int8 per-channel symmetric", "activations": "int8"}
        info["runs_on"] = getattr(
            runtime_module(format),
            "INT8_RUNS_ON",
            "every CPU: signed int8 activations are accumulated in 32 bits by XNNPACK",
        )
    else:
        info["runs_on"] = "every CPU"
    return info


def write_model_file(
    model: nn.Module,
    path: Path,
    format: str,
    precision: str = "fp32",
    calib_images: torch.Tensor | None = None,
    resolution: int | None = None,
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    calibration: str | None = None,
) -> None:
    """Write ``model`` (already BN-folded, eval) to ``path`` without verification. Paths are not staged.

    ``calibration``: how int8 activation ranges are estimated, one of the runtime's CALIBRATIONS (None: its default).
    """
    check_target(format, precision, weight_bits)
    res = resolution or model.resolution
    module = runtime_module(format)
    if precision == "int8":
        if calib_images is None:
            raise MobileNetsError("int8 export needs calibration images (calib_images=, CLI --calib N)")
        options = {"calibration": calibration} if calibration else {}
        if format in WEIGHT_BITS_FORMATS:
            module.quantize(model, path, calib_images, res, weight_bits=weight_bits, **options)
        else:
            module.quantize(model, path, calib_images, res, **options)
    elif precision == "fp16":
        module.write_fp16(model, path, res)
    else:
        module.write(model, path, res)


def _file_info(path: Path, format: str) -> dict | None:
    try:
        return runtime_module(format).metadata(path)
    except (OSError, ValueError, RuntimeError):
        return None


def runnable_here(path: Path, format: str, precision: str, info: dict | None = None) -> str | None:
    """Why this machine cannot run ``path`` correctly (one line), or None when it can."""
    cpu = cpu_info()
    if precision == "bf16" and not cpu.has("bf16"):
        return f"this CPU has no bf16 math (AVX512_BF16 or AMX): {cpu.model}"
    if precision == "int8" and format in WEIGHT_BITS_FORMATS:
        info = info if info is not None else _file_info(path, format)
        bits = ((info or {}).get("int8") or {}).get("weights", "")
        if bits.startswith("int8") and not cpu.has("vnni"):
            return (
                f"{path.name} has 8-bit weights, which saturate on this CPU without VNNI ({cpu.model}): "
                "re-export it with the default 7-bit weights"
            )
    return None


def load_runner(
    path: Path, format: str, precision: str = "fp32", threads: int | None = None, batch_size: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 NCHW batch to logits, or one clear error when this CPU cannot run the file."""
    reason = runnable_here(Path(path), format, precision)
    if reason:
        raise MobileNetsError(f"cannot run {Path(path).name} here: {reason}")
    return runtime_module(format).load(Path(path), precision, threads, batch_size)


def run_model_file(
    path: Path, format: str, images: torch.Tensor, precision: str = "fp32", threads: int | None = None
) -> np.ndarray:
    """Logits of an exported file on ``images``, computed by the file's own runtime."""
    return load_runner(path, format, precision, threads)(images.numpy())


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
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    progress: Callable[[str], None] | None = None,
    calibration: str | None = None,
    equalize: bool = False,
    card=None,
) -> ExportResult:
    """Fold BN, write ``model`` as ``format`` at ``precision``, verify it with its runtime, move it into place.

    Args:
        resolution: input side the file is built for (default: the model's); ONNX and OpenVINO files take
            any batch size, ExecuTorch and LiteRT programs batch 1.
        calib_images: normalized images for int8 calibration (default: 200 real training images).
        verify_images: normalized images to compare on (default: ``VERIFY_IMAGES`` = 512 real test images).
        min_agreement: top-1 agreement the file needs, within the 95% interval of the measured one (default: 97%
            fp32, 90% bf16, 97% int8 on the float model's clear decisions; see ``verify.Verification.passed``).
        weight_bits: int8 weights of ONNX/OpenVINO files: 7 (default, safe on every CPU) or 8 (VNNI CPUs).
        calibration: int8 activation ranges by one of the runtime's ``CALIBRATIONS`` (:data:`CALIBRATIONS`;
            None: the runtime's default, the first listed).
        equalize: int8 after cross-layer equalization of the ReLU-joined conv pairs (``fold.equalize_cross_layer``).
        card: the :class:`mobilenets.weights.ModelCard` whose classes and preprocessing a web page uses
            (default: "class N" and the datasets' mean/std); other formats do not store them.

    Raises MobileNetsError (and leaves nothing at ``path``) when the file cannot be written or fails. A check
    this machine cannot run is skipped and named in ``ExportResult.skipped``; the int8 range check always runs.
    """
    check_target(format, precision, weight_bits)
    check_calibration(format, calibration)
    path = _check_path(path, format)
    say = progress or (lambda _msg: None)
    model = model.eval()
    res = resolution or model.resolution
    module = runtime_module(format)
    if precision == "int8" and calib_images is None:
        calib_images = real_images(200, model.in_chans, res, split="train")
    if verify and verify_images is None:
        verify_images = real_images(VERIFY_IMAGES, model.in_chans, res, split="test")
    folded = static_padding(fold_bn(model), res)
    if equalize and precision == "int8":
        folded = equalize_cross_layer(folded)
    info = built_for(format, precision, weight_bits, model, res)
    if precision == "int8" and info.get("int8") is not None:
        info["int8"]["calibration"] = calibration or (CALIBRATIONS[format] or ("default",))[0]
        info["int8"]["equalized"] = bool(equalize)
    # A `train --qat` model: the int8 file of the runtime it trained for is converted from the graph it trained
    # (its learned scales); another runtime quantizes its (QAT-trained) float weights with its own quantizer.
    qat = getattr(model, "qat_state", None) if precision == "int8" else None
    if qat is not None:
        exact = converts_to(qat, format) and hasattr(module, "quantize_qat")
        if exact and format in WEIGHT_BITS_FORMATS and weight_bits != DEFAULT_WEIGHT_BITS:
            raise MobileNetsError(
                f"this QAT model trained on the {DEFAULT_WEIGHT_BITS}-bit weight grid; export it without --weight-bits"
            )
        info["int8"]["qat"] = (
            f"converted from the {qat['target']} QAT graph (activation ranges learned in training)"
            if exact
            else f"QAT weights (trained for {qat['target']}), activations calibrated by {module.RUNTIME}'s quantizer"
        )
    skipped, checks = [], []
    _check_output(path, format)
    # Written and verified under a temporary folder beside ``path``; moved into place (companions first) only
    # after every check passed.
    with atomic_staging(path, getattr(module, "companions", None)) as staged:
        say(f"writing {format} {precision} ({module.RUNTIME})")
        try:
            if qat is not None and exact:
                module.quantize_qat(model, staged, qat, res)
            else:
                write_model_file(folded, staged, format, precision, calib_images, res, weight_bits, calibration)
            module.set_metadata(staged, info)
            if card is not None and hasattr(module, "set_card"):
                module.set_card(staged, card)
        except MobileNetsError:
            raise
        except Exception as e:  # noqa: BLE001 - an exporter failure is the user's "export failed"
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MobileNetsError(f"{format} {precision} export failed: {msg}") from e
        if precision == "int8":
            safety = int8_safety(module.int8_ranges(staged))
            if weight_bits == DEFAULT_WEIGHT_BITS and not safety.everywhere:
                raise MobileNetsError(f"{format} int8 export failed its range check, nothing written: {safety.detail}")
        verification = None
        if verify:
            reason = runnable_here(staged, format, precision, info)
            if reason:
                skipped.append(f"verification with {module.RUNTIME}: {reason}")
                say(f"skipped verification: {reason}")
            else:
                say(f"verifying with {module.RUNTIME} on {len(verify_images)} real images")
                with torch.no_grad():
                    reference = model(verify_images)
                outputs = run_model_file(staged, format, verify_images, precision)
                verification = compare_outputs(reference, outputs, module.RUNTIME, precision, min_agreement)
                if not verification.passed:
                    raise MobileNetsError(
                        f"{format} {precision} export failed verification, nothing written: {verification.summary()}"
                    )
                if hasattr(module, "load_with_defaults"):  # ncnn, MNN: what a loader that skips the card gets
                    checks.append(_check_defaults(staged, module, reference, verify_images, precision, verification))
                if hasattr(module, "verify_page"):  # web: real image files through the page's own preprocessing
                    say(f"classifying real image files in the page ({module.RUNTIME})")
                    checks.append(module.verify_page(staged, model, precision, min_agreement))
        size = _size(staged, format)
    return ExportResult(path, format, precision, size, verification, skipped, info, checks)


def _check_defaults(path: Path, module, reference: torch.Tensor, images: torch.Tensor, precision: str, verified):
    """Run ``path`` under its runtime's default options too (ncnn's and MNN's defaults may reduce precision), write
    both figures into its card, and say how the defaults compare: a user who skips the card gets the second."""
    defaults = module.load_with_defaults(path, precision)(images.numpy())
    plain = compare_outputs(reference, defaults, f"{module.RUNTIME} defaults", precision, verified.min_agreement)
    figures = {
        "images": verified.num_images,
        "with_card_options": {"max_abs_diff": verified.max_abs_diff, "top1_agreement": verified.top1_agreement},
        "with_runtime_defaults": {"max_abs_diff": plain.max_abs_diff, "top1_agreement": plain.top1_agreement},
        "runtime_defaults": module.default_options(),
    }
    module.set_metadata(path, {**module.metadata(path), "verification": figures})
    verdict = "passes" if plain.passed else "FAILS"
    card_options = _options_line(module.metadata(path)["runtime_options"])
    return (
        f"under {module.RUNTIME}'s default options ({_options_line(module.default_options())}): max |Δ| "
        f"{plain.max_abs_diff:.3g}, top-1 agreement {100 * plain.top1_agreement:.1f}%, {verdict} the {precision} "
        f"check; the card's options ({card_options}) give the figures above"
    )


def _options_line(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "none"


# ----------------------------------------------------------------------------------------------------
# Writing files atomically


def _check_output(path: Path, format: str) -> None:
    """The output path can take a ``format`` export: its folder exists and is writable, and a folder export does
    not replace something that is not an earlier export."""
    folder = path.parent
    if not folder.is_dir():
        raise MobileNetsError(f"cannot write {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise MobileNetsError(f"cannot write {path}: the folder {folder} is not writable; choose another -o path")
    if _is_folder(format):
        if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or _is_export(path, format))):
            raise MobileNetsError(f"cannot write {path}: it exists and is not a {format} export; choose another -o")
    elif path.is_dir():
        raise MobileNetsError(f"cannot write {path}: it is a folder; give a file name ending in {SUFFIXES[format]}")


def _size(path: Path, format: str) -> int:
    """Bytes of an export: the file and its companions (OpenVINO's .bin, a .pte's card), or the folder's files."""
    if _is_folder(format):
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    companions = getattr(runtime_module(format), "companions", lambda _p: [])
    return sum(p.stat().st_size for p in [*companions(path), path] if p.exists())


def _is_folder(format: str) -> bool:
    return getattr(runtime_module(format), "FOLDER", False)


def _is_export(path: Path, format: str) -> bool:
    """Whether the folder ``path`` holds an earlier export of ``format`` (which a new one may replace)."""
    try:
        return runtime_module(format).metadata(path) is not None
    except (OSError, ValueError, RuntimeError, MobileNetsError):
        return False


def _check_path(path: str | os.PathLike, format: str) -> Path:
    path = Path(path)
    if _is_folder(format):
        return path
    if path.suffix != SUFFIXES[format]:
        raise MobileNetsError(f"{format} files end in {SUFFIXES[format]}: got output path {path}")
    return path


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
        from mobilenets.weights import read_torch_file, state_dict_from
        from mobilenets.weights.checkpoint import model_from_checkpoint

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
