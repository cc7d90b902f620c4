"""Pretrained MobileNetV1 weights: import Google's TF frozen graphs and timm state dicts, save and load ours.

Three sources, one result (a ``MobileNetV1`` state dict plus a :class:`ModelCard`):

* a TensorFlow frozen GraphDef ``.pb`` of the TF-slim layout (``MobilenetV1/Conv2d_0``, ``Conv2d_1_depthwise``,
  ``Conv2d_1_pointwise``, ..., ``Logits/Conv2d_1c_1x1``), any α. Read with tensorboard's copy of the
  ``GraphDef`` protobuf, so TensorFlow is not needed. TF-slim's numerical conventions are carried into the
  model config: ReLU6, BatchNorm ε = 1e-3, TF "SAME" padding (odd pixel bottom/right), inputs in [-1, 1],
  1001 classes with a background class 0.
* a timm ``mobilenetv1_*`` state dict (``.pth`` loaded with ``weights_only=True``, or ``.safetensors``).
* our own ``.safetensors`` files, which carry their model card in the header (and beside them, for
  people, the same card as ``.json``).

Google's ImageNet MobileNetV1 1.0/224 is found offline in the PyPI package ``nudity==0.2.3`` (MIT), whose
``retrained_graph.pb`` holds the complete, untouched MobileNetV1 classifier under a 2-class retrained
head we ignore. :func:`pretrained_model` converts it once and caches the result under the user's cache dir.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model, model_defaults
from mobilenets.models.layers import scale_channels
from mobilenets.models.mobilenet_v1 import BLOCKS, STEM, MobileNetV1

CARD_FORMAT = "mobilenets-model-card/1"
CARD_METADATA_KEY = "mobilenets_model_card"
PRETRAINED_PACKAGE = "nudity==0.2.3"
PRETRAINED_GRAPH = ("nudity", "files/retrained_graph.pb")
PRETRAINED_CACHE_NAME = "mobilenet_v1_1.0_224_imagenet_tf.safetensors"
GET_PRETRAINED = (
    f"install Google's MobileNetV1 ImageNet graph with `pip install --no-deps {PRETRAINED_PACKAGE}` "
    "(`make test`/`make demo` do it), or pass --weights FILE (.pb, .pth or .safetensors)"
)
TF_PREFIX = "MobilenetV1/"
TF_BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
TIMM_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


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
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass
class ModelCard:
    """What a weights file holds and how to use it; saved as JSON beside (and inside) the safetensors.

    Args:
        arch: registered family name the model is built from (``create_model(arch, **model_kwargs)``).
        model_kwargs: width_mult, resolution, num_classes, act, padding, bn_eps.
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


def imagenet_class_names(background: bool = False) -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (sorted synset) order, offline from torchvision.

    With ``background`` a "background" class 0 comes first, as in TF-slim's 1001-way classifiers.
    """
    from torchvision.models import MobileNet_V2_Weights

    names = list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    return (["background"] if background else []) + names


def _class_names_for(num_classes: int, background: bool) -> list[str]:
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


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``: all or nothing."""
    path = Path(path)
    if not path.parent.is_dir():
        raise MobileNetsError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def card_path(weights_path: str | os.PathLike) -> Path:
    """The JSON model card beside a weights file: ``model.safetensors`` → ``model.json``."""
    return Path(weights_path).with_suffix(".json")


def save_weights(model: torch.nn.Module, card: ModelCard, path: str | os.PathLike) -> Path:
    """Save a model's state dict as ``.safetensors`` (card in its header) plus the card as ``.json`` beside it.

    Both files are written atomically; the card inside the safetensors is the one :func:`load_weights` reads.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise MobileNetsError(f"save weights as .safetensors, got {path.name!r}")
    card_json = json.dumps(card.to_dict(), indent=2, ensure_ascii=False)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_atomic(path, save(tensors, metadata={CARD_METADATA_KEY: card_json}))
    write_atomic(card_path(path), (card_json + "\n").encode())
    return path


def _describe(card: ModelCard) -> str:
    bg = " incl. background" if card.background_class else ""
    return f"{card.arch} α={card.width_mult} ({card.num_classes} classes{bg})"


def check_state_dict(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str, what: str) -> None:
    """Raise a MobileNetsError naming every missing, unexpected or wrongly shaped tensor (first few of each)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
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
    if problems:
        raise MobileNetsError(f"{where} does not fit {what}: " + " | ".join(problems))


def _load_into(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str, what: str) -> None:
    check_state_dict(model, tensors, where, what)
    state = model.state_dict()
    state.update({k: v.to(state[k].dtype) for k, v in tensors.items()})
    model.load_state_dict(state)


def _expect(card: ModelCard, where: str, model_name: str | None, num_classes: int | None) -> None:
    """Compare a card with what the caller asked for (``--model``, ``--num-classes``); say what differs."""
    if model_name is not None:
        wanted = model_defaults(model_name)  # raises for unknown names
        family = re.sub(r"_[\d.]+_\d+$", "", model_name)
        if family != card.arch:
            raise MobileNetsError(f"{where} holds {card.arch} weights, not {family} (--model {model_name})")
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


def build_model(
    card: ModelCard, tensors: Mapping[str, torch.Tensor] | None = None, where: str = "weights"
) -> MobileNetV1:
    """The model a card describes, in eval mode; with ``tensors``, loaded with them (shapes checked first)."""
    model = create_model(card.arch, **card.model_kwargs)
    if tensors is not None:
        _load_into(model, tensors, where, _describe(card))
    return model.eval()


def load_weights(
    path: str | os.PathLike, model_name: str | None = None, num_classes: int | None = None
) -> tuple[MobileNetV1, ModelCard]:
    """Load any supported weights file into a model in eval mode; return ``(model, card)``.

    ``.safetensors`` (ours, with card; or a timm state dict), ``.pth``/``.pt``/``.bin`` (timm state dict,
    loaded with ``weights_only=True``) and ``.pb`` (TF-slim frozen graph). ``model_name`` and
    ``num_classes``, when given, must agree with the file (α, family, class count), else a MobileNetsError
    says what differs.
    """
    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"weights file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".pb":
        tensors, card = import_tf_graph(path)
    elif suffix in (".pth", ".pt", ".bin"):
        tensors, card = import_timm(path)
    elif suffix == ".safetensors":
        tensors, card = _read_safetensors(path)
    else:
        raise MobileNetsError(f"unknown weights format {path.name!r}: use .safetensors, .pth/.pt or .pb")
    _expect(card, str(path), model_name, num_classes)
    return build_model(card, tensors, str(path)), card


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise MobileNetsError(f"{path} is not a readable safetensors file ({e})") from None
    if CARD_METADATA_KEY in metadata:
        try:
            card_dict = json.loads(metadata[CARD_METADATA_KEY])
        except json.JSONDecodeError as e:
            raise MobileNetsError(f"{path}: its model card is not valid JSON ({e})") from None
        return tensors, ModelCard.from_dict(card_dict, where=f"{path}'s model card")
    if "conv_stem.weight" in tensors:
        return timm_to_ours(tensors, str(path), source={"format": "timm_state_dict", "file": path.name})
    raise MobileNetsError(
        f"{path} has no mobilenets model card and is not a timm mobilenetv1 state dict; "
        "convert it with `mobilenets import-weights`"
    )


# --- TF-slim frozen graph ---------------------------------------------------------------------------


@dataclass
class TFGraph:
    """The constants and the few node attributes of a frozen GraphDef that the import needs."""

    consts: dict[str, np.ndarray]
    input_shape: tuple[int, ...] | None
    bn_eps: set[float]
    strides: dict[str, int]  # layer scope (e.g. "Conv2d_2_depthwise") → spatial stride


def read_tf_graph(path: str | os.PathLike) -> TFGraph:
    """Parse a frozen GraphDef without TensorFlow (tensorboard ships the protobuf classes)."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import graph_pb2
    from tensorboard.util import tensor_util

    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise MobileNetsError(f"{path} is empty (0 bytes): not a TensorFlow frozen graph")
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise MobileNetsError(
            f"{path} is not a TensorFlow GraphDef, or it is truncated/corrupt ({e}); re-download the .pb"
        ) from None
    consts, input_shape, eps, strides = {}, None, set(), {}
    for node in graph.node:
        if node.op == "Const" and node.name.startswith(TF_PREFIX):
            try:
                consts[node.name] = tensor_util.make_ndarray(node.attr["value"].tensor)
            except (TypeError, ValueError) as e:
                raise MobileNetsError(f"{path}: constant {node.name} unreadable ({e}): corrupt file?") from None
            if node.name.endswith("batchnorm/add/y"):
                eps.add(float(consts[node.name]))
        elif node.op in ("FusedBatchNorm", "FusedBatchNormV3") and node.name.startswith(TF_PREFIX):
            eps.add(float(node.attr["epsilon"].f))
        elif node.op == "Placeholder" and node.name == "input" and node.attr["shape"].shape.dim:
            input_shape = tuple(int(d.size) for d in node.attr["shape"].shape.dim)
        if node.op in ("Conv2D", "DepthwiseConv2dNative") and node.name.startswith(TF_PREFIX):
            m = re.search(r"/(Conv2d_\d+(?:_depthwise|_pointwise)?)/", node.name)
            if m:
                strides[m.group(1)] = int(node.attr["strides"].list.i[1])
    if not consts:
        raise MobileNetsError(f"{path} holds no MobilenetV1/* constants: not a TF-slim MobileNetV1 frozen graph")
    return TFGraph(consts, input_shape, {round(e, 9) for e in eps}, strides)


def _tf_layer_names() -> list[tuple[str, str]]:
    """(TF-slim scope, our module path) for every conv+BN of MobileNetV1, in order."""
    names = [("Conv2d_0", "stem")]
    for i in range(len(BLOCKS)):
        names += [
            (f"Conv2d_{i + 1}_depthwise", f"blocks.{i}.depthwise"),
            (f"Conv2d_{i + 1}_pointwise", f"blocks.{i}.pointwise"),
        ]
    return names


def import_tf_graph(
    path: str | os.PathLike, drop_background: bool = False, resolution: int | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Convert a TF-slim MobileNetV1 frozen graph to our state dict and card (any α; 1001 classes).

    Args:
        drop_background: drop TF's background class 0, giving the standard 1000 ImageNet outputs
            (logits 1..1000 are unchanged; probabilities renormalise over 1000).
        resolution: input side; default: the graph's input placeholder, else the file name's
            ``_<res>`` (``mobilenet_v1_0.5_160_frozen.pb``), else 224.
    """
    path = Path(path)
    graph = read_tf_graph(path)
    c = graph.consts

    def get(name: str) -> np.ndarray:
        full = TF_PREFIX + name
        if full not in c:
            raise MobileNetsError(
                f"{path} has no tensor {full}: not a complete TF-slim MobileNetV1 graph (truncated, or another "
                "architecture)"
            )
        return c[full]

    # α from the last pointwise layer (1024·α channels), checked below against every layer.
    last = get(f"Conv2d_{len(BLOCKS)}_pointwise/weights")
    width_mult = last.shape[-1] / BLOCKS[-1][0]
    tensors: dict[str, torch.Tensor] = {}
    widths = [STEM[0]] + [ch for out, _ in BLOCKS for ch in (None, out)]
    in_ch = 3
    for (scope, ours), paper_ch in zip(_tf_layer_names(), widths):
        if scope.endswith("_depthwise"):
            w = get(f"{scope}/depthwise_weights")  # (kh, kw, C, 1) → (C, 1, kh, kw)
            if w.ndim != 4 or w.shape[3] != 1:
                raise MobileNetsError(f"{path}: {scope}/depthwise_weights has shape {w.shape}, expected (3, 3, C, 1)")
            out_ch = w.shape[2]
            w = w.transpose(2, 3, 0, 1)
        else:
            w = get(f"{scope}/weights")  # HWIO → OIHW
            if w.ndim != 4:
                raise MobileNetsError(f"{path}: {scope}/weights has shape {w.shape}, expected (kh, kw, in, out)")
            out_ch = w.shape[3]
            w = w.transpose(3, 2, 0, 1)
        expected = in_ch if paper_ch is None else scale_channels(paper_ch, width_mult)
        if paper_ch is not None and w.shape[1] != in_ch:
            raise MobileNetsError(f"{path}: {scope} takes {w.shape[1]} inputs but the layer before gives {in_ch}")
        if out_ch != expected:
            raise MobileNetsError(
                f"{path}: {scope} has {out_ch} output channels but MobileNetV1 α={width_mult:g} has {expected}; "
                "the graph is not a TF-slim MobileNetV1 of one width multiplier"
            )
        tensors[f"{ours}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        for tf_name, our_name in TF_BN_FIELDS.items():
            full = f"{TF_PREFIX}{scope}/BatchNorm/{tf_name}"
            if full in c:
                value = c[full]
            elif tf_name == "gamma":  # slim may train BN without scale: γ = 1
                value = np.ones(out_ch, np.float32)
            else:
                value = get(f"{scope}/BatchNorm/{tf_name}")
            if value.shape != (out_ch,):
                raise MobileNetsError(f"{path}: {full} has shape {value.shape}, expected ({out_ch},)")
            tensors[f"{ours}.bn.{our_name}"] = torch.from_numpy(np.array(value, dtype=np.float32))
        in_ch = out_ch
    for scope, stride in ((s, st) for (s, _), (_, st) in zip(_tf_layer_names()[1::2], BLOCKS)):
        if graph.strides.get(scope, stride) != stride:
            raise MobileNetsError(f"{path}: {scope} has stride {graph.strides[scope]}, MobileNetV1 has {stride}")

    logits_w = get("Logits/Conv2d_1c_1x1/weights")  # (1, 1, C, classes) → Linear (classes, C)
    logits_b = get("Logits/Conv2d_1c_1x1/biases")
    if logits_w.shape[:3] != (1, 1, in_ch) or logits_b.shape != logits_w.shape[3:]:
        raise MobileNetsError(
            f"{path}: classifier weights {logits_w.shape} / biases {logits_b.shape} do not fit {in_ch} features"
        )
    logits_w, logits_b = logits_w[0, 0].T, logits_b
    background = logits_w.shape[0] == 1001
    if drop_background:
        if not background:
            raise MobileNetsError(f"{path} has {logits_w.shape[0]} classes, not 1001: no background class to drop")
        logits_w, logits_b, background = logits_w[1:], logits_b[1:], False
    tensors["classifier.weight"] = torch.from_numpy(np.ascontiguousarray(logits_w, dtype=np.float32))
    tensors["classifier.bias"] = torch.from_numpy(np.array(logits_b, dtype=np.float32))

    if len(graph.bn_eps) > 1:
        raise MobileNetsError(f"{path}: BatchNorm layers use different epsilons {sorted(graph.bn_eps)}")
    bn_eps = graph.bn_eps.pop() if graph.bn_eps else 1e-3  # TF-slim's mobilenet_v1_arg_scope default
    if resolution is None:
        shape = graph.input_shape
        if shape and len(shape) == 4 and shape[1] == shape[2] and shape[1] > 0:
            resolution = shape[1]
        else:
            m = re.search(r"_(\d{2,4})(?:_frozen)?\.pb$", path.name)
            resolution = int(m.group(1)) if m else 224
    num_classes = logits_w.shape[0]
    card = ModelCard(
        arch="mobilenet_v1",
        model_kwargs=dict(
            width_mult=width_mult,
            resolution=resolution,
            num_classes=num_classes,
            act="relu6",
            padding="tf_same",
            bn_eps=bn_eps,
        ),
        preprocessing=Preprocessing(resolution=resolution),
        class_names=_class_names_for(num_classes, background),
        background_class=background,
        source=dict(
            format="tf_frozen_graph",
            file=path.name,
            sha256=sha256_file(path),
            origin="Google's TF-slim MobileNetV1 ImageNet weights (tensorflow/models, Apache-2.0)",
        ),
    )
    return tensors, card


# --- timm -------------------------------------------------------------------------------------------


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


def import_timm(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read a timm ``mobilenetv1_*`` state dict (``.pth`` via ``torch.load(weights_only=True)``, or
    ``.safetensors``) and map it to our names."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = read_state_dict(path)
    if "conv_stem.weight" not in obj:
        raise MobileNetsError(f"{path} is not a timm mobilenetv1 state dict (no conv_stem.weight)")
    return timm_to_ours(obj, str(path), source={"format": "timm_state_dict", "file": path.name})


def timm_to_ours(
    sd: Mapping[str, torch.Tensor], where: str, source: dict | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Map timm's mobilenetv1 names (conv_stem/bn1, blocks.S.B.conv_dw/bn1/conv_pw/bn2, classifier) to ours.

    timm's MobileNetV1 uses ReLU6, BN ε = 1e-5, symmetric padding and mean = std = 0.5 (its model card).
    """
    out: dict[str, torch.Tensor] = {}
    blocks: dict[tuple[int, int], str] = {}
    unknown = []
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(\w+)", key)
        if m:
            blocks[(int(m.group(1)), int(m.group(2)))] = ""
            continue
        if key == "conv_stem.weight":
            out["stem.conv.weight"] = value
        elif key.startswith("bn1.") and key[4:] in TIMM_BN_FIELDS:
            out[f"stem.bn.{key[4:]}"] = value
        elif key in ("classifier.weight", "classifier.bias"):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise MobileNetsError(
            f"{where}: timm tensors {', '.join(unknown[:3])} have no MobileNetV1 counterpart (only "
            "mobilenetv1_100/_125-style models without a head conv can be imported)"
        )
    order = sorted(blocks)
    if len(order) != len(BLOCKS):
        raise MobileNetsError(f"{where} has {len(order)} depthwise separable blocks, MobileNetV1 has {len(BLOCKS)}")
    renames = {
        "conv_dw.": "depthwise.conv.",
        "bn1.": "depthwise.bn.",
        "conv_pw.": "pointwise.conv.",
        "bn2.": "pointwise.bn.",
    }
    for i, (s, b) in enumerate(order):
        for theirs, ours in renames.items():
            for fld in ("weight",) if theirs.startswith("conv") else TIMM_BN_FIELDS:
                key = f"blocks.{s}.{b}.{theirs}{fld}"
                if key not in sd:
                    raise MobileNetsError(f"{where} has no tensor {key}: incomplete timm state dict")
                out[f"blocks.{i}.{ours}{fld}"] = sd[key]
    if "classifier.weight" not in out or "stem.conv.weight" not in out:
        raise MobileNetsError(f"{where} lacks conv_stem.weight or classifier.weight: incomplete timm state dict")
    width_mult = out["classifier.weight"].shape[1] / BLOCKS[-1][0]
    num_classes = out["classifier.weight"].shape[0]
    card = ModelCard(
        arch="mobilenet_v1",
        model_kwargs=dict(
            width_mult=width_mult,
            resolution=224,
            num_classes=num_classes,
            act="relu6",
            padding="symmetric",
            bn_eps=1e-5,
        ),
        preprocessing=Preprocessing(crop="resize_shorter", crop_pct=0.875, interpolation="bicubic"),
        class_names=_class_names_for(num_classes, background=False),
        source=source or {"format": "timm_state_dict"},
    )
    return out, card


# --- import to a file, pretrained default -----------------------------------------------------------


def import_weights(
    src: str | os.PathLike, out: str | os.PathLike, drop_background: bool = False, resolution: int | None = None
) -> ModelCard:
    """Convert ``src`` (.pb or timm .pth/.safetensors) into our ``out.safetensors`` + ``out.json``."""
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise MobileNetsError(f"source weights {src} not found")
    if out.suffix != ".safetensors" or not out.parent.is_dir():
        raise MobileNetsError(f"output must be a .safetensors file in an existing folder, got {out}")
    if src.suffix.lower() == ".pb":
        tensors, card = import_tf_graph(src, drop_background=drop_background, resolution=resolution)
    else:
        if drop_background:
            raise MobileNetsError("--drop-background applies to TF graphs (1001 classes) only")
        if src.suffix.lower() == ".safetensors":
            tensors, card = _read_safetensors(src)
        elif src.suffix.lower() in (".pth", ".pt", ".bin"):
            tensors, card = import_timm(src)
        else:
            raise MobileNetsError(f"unknown source format {src.name!r}: use a .pb, .pth/.pt or .safetensors file")
        if resolution is not None:
            card.model_kwargs["resolution"] = card.preprocessing.resolution = resolution
    save_weights(build_model(card, tensors, str(src)), card, out)
    return card


def find_pretrained_graph() -> Path | None:
    """Path of the MobileNetV1 ImageNet graph shipped by ``nudity==0.2.3``, or None if not installed.

    Located without importing the package (its ``__init__`` would import TensorFlow).
    """
    package, rel = PRETRAINED_GRAPH
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / rel
        if candidate.is_file():
            return candidate
    return None


def cache_dir() -> Path:
    """Where converted weights are cached: $MOBILENETS_CACHE, else $XDG_CACHE_HOME/mobilenets, else
    ~/.cache/mobilenets."""
    if os.environ.get("MOBILENETS_CACHE"):
        return Path(os.environ["MOBILENETS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mobilenets"


def pretrained_weights_path() -> Path:
    """The cached safetensors of Google's MobileNetV1 1.0/224, converting the installed graph on first use."""
    graph = find_pretrained_graph()
    cached = cache_dir() / PRETRAINED_CACHE_NAME
    if graph is None:
        if cached.is_file():
            return cached
        raise MobileNetsError(f"pretrained MobileNetV1 weights are not available: {GET_PRETRAINED}")
    if cached.is_file():
        try:
            card = _read_safetensors(cached)[1]
            if card.source.get("sha256") == sha256_file(graph):
                return cached
        except MobileNetsError:
            pass  # a stale or damaged cache is rebuilt below
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MobileNetsError(f"cannot create the weights cache {cached.parent} ({e}); set MOBILENETS_CACHE") from None
    import_weights(graph, cached)
    return cached


def pretrained_model(model_name: str | None = None) -> tuple[MobileNetV1, ModelCard]:
    """Google's ImageNet MobileNetV1 α=1.0 (TF-slim numbers: 1001 classes, background at 0), in eval mode.

    ``model_name`` may pick another input resolution ρ, e.g. ``mobilenet_v1_1.0_160`` (the weights were
    trained at 224). Raises MobileNetsError saying how to install the weights when they are not available.
    """
    if model_name is not None:
        wanted = model_defaults(model_name)
        if re.sub(r"_[\d.]+_\d+$", "", model_name) != "mobilenet_v1" or wanted.get("width_mult") != 1.0:
            raise MobileNetsError(
                f"pretrained weights exist for MobileNetV1 α=1.0 only (mobilenet_v1_1.0_224, or _192/_160/_128), "
                f"not {model_name}; pass --weights FILE for other models"
            )
    return load_weights(pretrained_weights_path(), model_name=model_name)
