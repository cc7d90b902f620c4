"""Our weights files: a ``.safetensors`` whose header carries a :class:`ModelCard` (and the same card as
``.json`` beside it, for people), written atomically; plus the helpers every importer shares: reading
``torch.save`` files safely, checking a state dict against the model a card describes, building that model."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_bytes, atomic_write_text
from mobilenets.models import base_name, create_model, model_defaults
from mobilenets.models.layers import scale_channels

CARD_FORMAT = "mobilenets-model-card/1"
CARD_METADATA_KEY = "mobilenets_model_card"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)  # inputs in [-1, 1], as TF-slim and timm's tf_* ports


# --- model card -------------------------------------------------------------------------------------


@dataclass
class Preprocessing:
    """How an image becomes the input tensor these weights expect.

    Args:
        resolution: square input side.
        crop: "central_fraction" (TF-slim eval: keep the central ``crop_pct`` of each side, then resize to
            resolution×resolution) or "resize_shorter" (timm/torchvision: resize the shorter side to
            ``resolution / crop_pct``, then take the central resolution×resolution).
        crop_pct: fraction of the image kept by the crop.
        interpolation: "tf_bilinear" (TF1 ``resize_bilinear``, no antialias, no half-pixel centers),
            "bilinear" or "bicubic" (PIL).
        mean, std: per-channel, applied to pixel values in [0, 1]. TF-slim's 0.5/0.5 maps to [-1, 1].
    """

    resolution: int = 224
    crop: str = "central_fraction"
    crop_pct: float = 0.875
    interpolation: str = "tf_bilinear"
    mean: tuple[float, float, float] = INCEPTION_MEAN
    std: tuple[float, float, float] = INCEPTION_STD


@dataclass
class ModelCard:
    """What a weights file holds and how to use it; saved as JSON beside (and inside) the safetensors.

    Args:
        arch: registered family name the model is built from (``create_model(arch, **model_kwargs)``).
        model_kwargs: width_mult, resolution, num_classes and the conventions that change the numbers
            (V1/V2: act; all: padding, bn_eps; V3: layout when not the default).
        class_names: one per output; with ``background_class`` the first is "background" (TF-slim's 1001).
        source: where the numbers came from (format, file, sha256, origin, licence).
    """

    arch: str
    model_kwargs: dict
    preprocessing: Preprocessing
    class_names: list[str]
    background_class: bool = False
    source: dict = field(default_factory=dict)
    format: str = CARD_FORMAT

    @property
    def num_classes(self) -> int:
        return int(self.model_kwargs["num_classes"])

    @property
    def width_mult(self) -> float:
        return float(self.model_kwargs.get("width_mult", 1.0))

    @property
    def name(self) -> str:
        """A readable name like ``mobilenet_v1_1.0_224``."""
        return f"{self.arch}_{self.width_mult}_{self.model_kwargs.get('resolution', 224)}"

    def describe(self) -> str:
        """One line: ``mobilenet_v3_large α=1.0 (1000 classes) from torchvision``."""
        bg = " incl. background" if self.background_class else ""
        origin = SOURCE_NAMES.get(self.source.get("format", ""), "")
        return f"{self.arch} α={self.width_mult} ({self.num_classes} classes{bg})" + (
            f" from {origin}" if origin else ""
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "model card") -> ModelCard:
        try:
            if d.get("format") != CARD_FORMAT:
                raise MobileNetsError(f"{where}: format {d.get('format')!r} is not {CARD_FORMAT!r}")
            pre = dict(d["preprocessing"])
            pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
            card = cls(
                arch=str(d["arch"]),
                model_kwargs=dict(d["model_kwargs"]),
                preprocessing=Preprocessing(**pre),
                class_names=[str(c) for c in d["class_names"]],
                background_class=bool(d.get("background_class", False)),
                source=dict(d.get("source", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, MobileNetsError):
                raise
            raise MobileNetsError(
                f"{where} is malformed ({type(e).__name__}: {e}); re-create it with `mobilenets import-weights`"
            ) from None
        if len(card.class_names) != card.num_classes:
            raise MobileNetsError(
                f"{where} lists {len(card.class_names)} class names for a {card.num_classes}-class model; "
                "the card must name every output"
            )
        return card


SOURCE_NAMES = {
    "tf_frozen_graph": "a TF-slim frozen graph",
    "timm_state_dict": "a timm state dict",
    "torchvision_state_dict": "a torchvision state dict",
}


def imagenet_class_names(background: bool = False) -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (sorted synset) order, offline from torchvision.

    With ``background`` a "background" class 0 comes first, as in TF-slim's 1001-way classifiers.
    """
    from torchvision.models import MobileNet_V2_Weights

    names = list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    return (["background"] if background else []) + names


def class_names_for(num_classes: int, background: bool = False) -> list[str]:
    """ImageNet's names for a 1000 (1001 with background) class head, else ``class_0``, ``class_1``, ..."""
    if num_classes == 1000 + background:
        return imagenet_class_names(background)
    return (["background"] if background else []) + [f"class_{i}" for i in range(num_classes - background)]


# --- files ------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights_path: str | os.PathLike) -> Path:
    """The JSON model card beside a weights file: ``model.safetensors`` → ``model.json``."""
    return Path(weights_path).with_suffix(".json")


def save_weights(model: torch.nn.Module, card: ModelCard, path: str | os.PathLike) -> Path:
    """Save a model's state dict as ``.safetensors`` (card in its header) plus the card as ``.json`` beside it.

    Both files are written atomically; the card inside the safetensors is the one ``load_weights`` reads.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise MobileNetsError(f"save weights as .safetensors, got {path.name!r}")
    card_json = json.dumps(card.to_dict(), indent=2, ensure_ascii=False)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={CARD_METADATA_KEY: card_json}))
    atomic_write_text(card_path(path), card_json + "\n")
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelCard | None]:
    """The tensors of a ``.safetensors`` file and its model card (None when it has none: timm's, torchvision's)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise MobileNetsError(f"{path} is not a readable safetensors file ({e})") from None
    if CARD_METADATA_KEY not in metadata:
        return tensors, None
    try:
        card_dict = json.loads(metadata[CARD_METADATA_KEY])
    except json.JSONDecodeError as e:
        raise MobileNetsError(f"{path}: its model card is not valid JSON ({e})") from None
    return tensors, ModelCard.from_dict(card_dict, where=f"{path}'s model card")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state dict from a ``torch.save`` file, read with ``weights_only=True`` (a file can never run
    code), unwrapped from a "state_dict"/"model"/"model_state" key and DDP's "module." prefix."""
    return state_dict_from(read_torch_file(path), path)


def read_torch_file(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors: empty, pickled code refused, unreadable."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise MobileNetsError(f"{path} is empty (0 bytes): not a PyTorch state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        text = str(e)
        m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if m:
            raise MobileNetsError(
                f"refused to load {path}: it holds pickled Python objects ({m.group(1)}) beyond tensors, which could "
                "run code (torch.load weights_only=True rejected it); re-save it as a plain state dict or safetensors"
            ) from None
        reason = re.search(r"WeightsUnpickler error: \s*(.+)", text) or re.match(r"\s*([^.\n]+)", text)
        first = reason.group(1).strip() if reason else type(e).__name__
        raise MobileNetsError(f"{path} is not a readable PyTorch state dict ({first})") from None
    return obj


def state_dict_from(obj: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside what :func:`read_torch_file` returned (``path`` names it in errors)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MobileNetsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


# --- the model a card describes ---------------------------------------------------------------------


def expected_shapes(arch: str, model_kwargs: Mapping) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in ``create_model(arch, **model_kwargs)``, without allocating or initializing it."""
    with torch.device("meta"):
        model = create_model(arch, **model_kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def state_dict_problems(expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor]) -> str:
    """ "" when ``tensors`` fit ``expected`` exactly; else the shape mismatches, missing and unexpected names
    (the first three of each)."""
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = [k for k in expected if k not in got and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} is {got[k]} in the file but {expected[k]} in the model"
        for k in expected
        if k in got and got[k] != expected[k]
    ]
    problems = []
    for label, items in (("shape mismatch", wrong), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {'; '.join(items[:3])}{more}")
    return " | ".join(problems)


def check_state_dict(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str, what: str) -> None:
    """Raise a MobileNetsError naming every missing, unexpected or wrongly shaped tensor (first few of each)."""
    problems = state_dict_problems({k: tuple(v.shape) for k, v in model.state_dict().items()}, tensors)
    if problems:
        raise MobileNetsError(f"{where} does not fit {what}: {problems}")


def build_model(card: ModelCard, tensors: Mapping[str, torch.Tensor] | None = None, where: str = "weights"):
    """The model a card describes, in eval mode; with ``tensors``, loaded with them (shapes checked first)."""
    model = create_model(card.arch, **card.model_kwargs)
    if tensors is not None:
        check_state_dict(model, tensors, where, card.describe())
        state = model.state_dict()
        state.update({k: v.to(state[k].dtype) for k, v in tensors.items()})
        model.load_state_dict(state)
    return model.eval()


def check_expected(card: ModelCard, where: str, model_name: str | None, num_classes: int | None = None) -> None:
    """Compare a card with what the caller asked for (``--model``, ``--num-classes``); say what differs.

    A resolution in ``model_name`` other than the card's is taken (the weights pool globally): the card's
    resolution is changed to it.
    """
    if model_name is not None:
        wanted = model_defaults(model_name)  # raises for unknown names
        family = base_name(model_name)
        if family != card.arch:
            raise MobileNetsError(
                f"{where} holds {card.describe()}, not {family} weights (--model {model_name}); "
                f"leave --model out to use it as {card.name}, or give a {family} file"
            )
        if "width_mult" in wanted and abs(wanted["width_mult"] - card.width_mult) > 1e-9:
            raise MobileNetsError(
                f"{where} holds α={card.width_mult} weights but {model_name} has α={wanted['width_mult']}; "
                f"use --model {card.name} or leave --model out"
            )
        if wanted.get("resolution") and wanted["resolution"] != card.model_kwargs.get("resolution"):
            # Weights do not depend on the input size (global pooling): run at the name's resolution ρ.
            card.model_kwargs["resolution"] = card.preprocessing.resolution = wanted["resolution"]
    if num_classes is not None and num_classes != card.num_classes:
        bg = " (incl. TF's background class 0)" if card.background_class else ""
        raise MobileNetsError(
            f"{where} has {card.num_classes} classes{bg} but {num_classes} were asked for; "
            + ("import with --drop-background for 1000 classes, or " if card.background_class else "")
            + "fine-tune a new classifier with reset_classifier()"
        )


def fit_model_kwargs(
    arch: str, candidates: list[dict], tensors: Mapping[str, torch.Tensor], where: str, what: str
) -> dict:
    """The first of ``candidates`` (``create_model(arch, **kwargs)`` options) whose model ``tensors`` fit exactly.

    Raises a MobileNetsError naming what does not fit the first candidate when none does.
    """
    first = ""
    for kwargs in candidates:
        try:
            problems = state_dict_problems(expected_shapes(arch, kwargs), tensors)
        except MobileNetsError as e:  # e.g. an α the family cannot build
            problems = str(e)
        if not problems:
            return kwargs
        first = first or problems
    raise MobileNetsError(f"{where} does not fit {what}: {first}")


# α values people use, tried first where several α give a layer the same rounded width.
COMMON_WIDTHS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.4, 1.3, 1.25, 1.5, 2.0)


def width_mult_candidates(
    tensors: Mapping[str, torch.Tensor], key: str, paper_channels: int, where: str
) -> list[float]:
    """The α that could have given layer ``key`` its output channels (``paper_channels`` at α = 1).

    Widths are rounded to multiples of 8, so one layer cannot tell α = 0.35 from 1/3 (both give 32 of 96): the
    common values first, then a 0.05 grid, then the plain ratio. Every other layer decides (the caller fits them).
    """
    if key not in tensors or tensors[key].ndim < 1:
        raise MobileNetsError(f"{where} has no tensor for {key}: an incomplete state dict")
    channels = tensors[key].shape[0]
    grid = [round(0.05 * k, 2) for k in range(1, 61)]
    fits = [a for a in (*COMMON_WIDTHS, *grid) if scale_channels(paper_channels, a) == channels]
    return list(dict.fromkeys([*fits, channels / paper_channels]))
