"""Start a run from weights (``--init pretrained|FILE``) instead of a random initialization.

Three steps, each a function:

1. :func:`read_init` reads the source into one :class:`InitSource`: the tensors, the network they were trained
   in (family and ``create_model`` keyword arguments: α, ReLU6, TF "SAME" padding, BN ε) and the input
   normalization they expect. Sources: ``"pretrained"`` (Google's MobileNetV1 1.0/224 ImageNet weights), our
   ``.safetensors`` (its model card says all that), a ``model.pt``/``checkpoint.pt`` of an earlier
   ``mobilenets train`` run (its meta says it), a timm or torchvision MobileNet V1/V2/V3 state dict (``.pth`` or
   ``.safetensors``), or a TF-slim frozen graph ``.pb``.
2. :func:`init_model_kwargs` merges the run's settings (classes, input channels, resolution, stem stride,
   dropout) with the source's conventions, which win for everything that changes the numbers. A different α
   is an error naming both values; the resolution is free (the head pools globally).
3. :func:`adapt_state` loads every tensor that fits: the classifier is replaced for the dataset's classes
   (TF's 1001-class head is dropped) unless the source was trained on exactly these classes, and the stem's
   RGB filters are summed for 1-channel data (replicated ÷3 for the opposite case).

:func:`start_model` does all three and returns the model with ``init_meta``: the source, the mean/std the
data must be normalized with, the model kwargs to save with the run, and notes for the run to print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.models import base_name, create_model, model_defaults
from mobilenets.training.config import TrainConfig, model_kwargs

PRETRAINED = "pretrained"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
INIT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES, ".pb")
HEAD = "classifier"  # every registered family names its last layer so (see models/)
# Settings of the run that the source's conventions never override: they do not change a tensor's meaning.
RUN_KWARGS = ("num_classes", "in_chans", "resolution", "stem_stride", "dropout")


@dataclass
class InitSource:
    """Weights to start from, and the network and inputs they were trained with.

    Args:
        tensors: the state dict, in our parameter names.
        arch: the registered family they fit (``mobilenet_v1``, ``squeezenet1_1``, ...).
        model_kwargs: ``create_model(arch, **model_kwargs)`` rebuilds the source network.
        mean, std: per-channel input normalization of pixels in [0, 1] (TF-slim: 0.5/0.5, i.e. [-1, 1]).
        class_names: the source's classes (None when unknown).
        source: where the numbers came from: ``init`` (the spec given), format, file, sha256, origin.
    """

    tensors: dict[str, torch.Tensor]
    arch: str
    model_kwargs: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None
    source: dict = field(default_factory=dict)

    @property
    def width_mult(self) -> float | None:
        return self.model_kwargs.get("width_mult")

    def describe(self) -> str:
        """One line: what the weights are and where they came from."""
        what = self.source.get("origin") or self.source.get("format", "weights")
        alpha = f" α={float(self.width_mult)}" if self.width_mult is not None else ""
        return f"{self.arch}{alpha} from {self.source.get('file', self.source.get('init'))} ({what})"


# --- 1. read ----------------------------------------------------------------------------------------


def read_init(spec: str | os.PathLike) -> InitSource:
    """Read ``--init``: "pretrained", or a ``.safetensors``, ``.pt``/``.pth``/``.bin`` or ``.pb`` file."""
    from mobilenets import weights as W

    if str(spec) == PRETRAINED:
        return _from_card(*W.read_weights(W.pretrained_weights_path()), PRETRAINED)
    path = Path(spec).expanduser()
    if not path.is_file():
        hint = " (did you mean a run's model.pt?)" if path.is_dir() else ""
        raise MobileNetsError(f"--init {spec}: no such file{hint}; give 'pretrained' or a weights file")
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".pb"):
        return _from_card(*W.read_weights(path), str(spec))
    if suffix in TORCH_SUFFIXES:
        obj = W.read_torch_file(path)
        if isinstance(obj, dict) and isinstance(obj.get("meta"), dict):
            return _from_run(obj, path, str(spec))
        state = W.state_dict_from(obj, path)
        if W.detect_source(state) is not None:  # timm's or torchvision's MobileNet V1/V2/V3
            return _from_card(*W.convert_state_dict(state, path), str(spec))
        raise MobileNetsError(
            f"--init {spec}: a plain state dict without a model description; give a model.pt/checkpoint.pt of "
            "`mobilenets train`, a timm or torchvision MobileNet state dict, or convert it with "
            "`mobilenets import-weights`"
        )
    raise MobileNetsError(f"--init {spec}: unknown weights format {path.suffix!r}; use {', '.join(INIT_SUFFIXES)}")


def _from_card(tensors: dict, card, spec: str) -> InitSource:
    """A source described by a model card (ours, TF-slim's or timm's conventions)."""
    pre = card.preprocessing
    source = {"init": str(spec), **card.source}
    return InitSource(dict(tensors), card.arch, dict(card.model_kwargs), pre.mean, pre.std, card.class_names, source)


def _from_run(ckpt: dict, path: Path, spec: str) -> InitSource:
    """A ``model.pt``/``checkpoint.pt`` of ``mobilenets train``: its meta rebuilds the network."""
    meta = ckpt["meta"]
    state = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(state, dict) or "model" not in meta or "model_kwargs" not in meta:
        raise MobileNetsError(f"--init {spec}: {path.name} is a damaged training output (no model weights or kwargs)")
    from mobilenets import weights as W

    family = base_name(meta["model"])
    kwargs = {**model_defaults(meta["model"]), **{k: v for k, v in meta["model_kwargs"].items() if v is not None}}
    earlier = meta.get("init", {}).get("source") if isinstance(meta.get("init"), dict) else None
    source = {"init": spec, "format": "mobilenets_run", "file": path.name, "sha256": W.sha256_file(path)}
    source["origin"] = f"a `mobilenets train` run of {meta['model']} on {meta.get('dataset', '?')}"
    if earlier:
        source["started_from"] = earlier
    return InitSource(
        dict(state),
        family,
        kwargs,
        tuple(meta["mean"]),
        tuple(meta["std"]),
        list(meta.get("classes", [])) or None,
        source,
    )


# --- 2. the network ---------------------------------------------------------------------------------


def init_model_kwargs(model_name: str, run_kwargs: dict, src: InitSource, width_mult: float | None = None) -> dict:
    """``create_model(model_name, **kwargs)`` of a run that starts from ``src``.

    The run decides ``RUN_KWARGS`` (when not None); the source decides the rest (α, act, padding, BN ε,
    variant). ``width_mult`` is the α the user asked for (None: whatever the source has).
    """
    family = base_name(model_name)
    if family != src.arch:
        raise MobileNetsError(
            f"--init {src.source.get('init')} holds {src.arch} weights but the run trains {model_name}; "
            f"pass --model {src.arch}"
        )
    asked = width_mult
    if asked is None and model_name != family:  # e.g. mobilenet_v1_0.5_160 names its α
        asked = model_defaults(model_name).get("width_mult")
    if asked is not None and src.width_mult is not None and abs(asked - src.width_mult) > 1e-9:
        have, asked = float(src.width_mult), float(asked)
        flags = model_name if width_mult is None else f"{model_name} --width-mult {width_mult}"
        fix = "drop --width-mult" if width_mult is not None else f"train --model {src.arch}"
        raise MobileNetsError(
            f"--init {src.source.get('init')} holds α={have} weights but the run asks for α={asked} ({flags}); "
            f"{fix} to fine-tune α={have}, or start from weights of α={asked}"
        )
    kwargs = {k: v for k, v in src.model_kwargs.items() if k not in ("num_classes", "in_chans")}
    kwargs.update({k: v for k, v in run_kwargs.items() if k in RUN_KWARGS and v is not None})
    return kwargs


# --- 3. the tensors ---------------------------------------------------------------------------------


def adapt_state(
    model: nn.Module,
    src: InitSource,
    keep_head: bool = False,
) -> tuple[dict[str, torch.Tensor], tuple[tuple[float, ...], tuple[float, ...]], list[str]]:
    """The source's tensors made to fit ``model``, the mean/std its inputs need, and notes for the user.

    Every tensor whose name and shape match is kept. The classifier is dropped unless ``keep_head``. When the
    stem takes another number of input channels than the source's (1-channel data, RGB weights), its filters
    are combined so that a gray image gives the same response as the gray image in RGB: each RGB filter scaled
    by s'/s_c and summed, the constant that per-channel means leave behind folded into the next BN's running
    mean (exact away from the borders; with TF's or timm's equal 0.5/0.5 it is a plain sum).
    Raises MobileNetsError when no tensor outside the classifier fits.
    """
    target = model.state_dict()
    in_chans = int(getattr(model, "in_chans", 3))
    mean, std = tuple(src.mean), tuple(src.std)
    loaded: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    misfit: list[str] = []
    stem = _stem_key(target)
    head = [k for k in src.tensors if k.startswith(HEAD + ".")]
    for key, value in src.tensors.items():
        if key in head and not keep_head:
            continue
        if key not in target:
            if not key.endswith("num_batches_tracked"):
                misfit.append(f"{key} (not in the model)")
            continue
        want = target[key]
        if key == stem and value.ndim == 4 and value.shape[1] != want.shape[1] and value.shape[0] == want.shape[0]:
            value, mean, std, shift, note = _adapt_stem(value, src.mean, src.std, in_chans)
            if shift is not None:
                bn = _next_running_mean(target, stem, value.shape[0])
                if bn is None:
                    note += "; no BatchNorm follows it, so the per-channel mean offset is not compensated"
                else:
                    loaded[bn] = src.tensors[bn].float() - shift
            notes.append(note)
        if tuple(value.shape) != tuple(want.shape):
            misfit.append(f"{key} ({tuple(value.shape)} in the source, {tuple(want.shape)} in the model)")
            continue
        if key not in loaded:
            loaded[key] = value.to(want.dtype)
    body = [k for k in target if not k.startswith(HEAD + ".") and not k.endswith("num_batches_tracked")]
    fitted = sum(k in loaded for k in body)
    if fitted == 0:
        raise MobileNetsError(
            f"--init {src.source.get('init')}: none of its tensors fit the model ({'; '.join(misfit[:3])}); "
            "start from weights of the same model family"
        )
    missing = [k for k in body if k not in loaded]
    notes.insert(0, _summary(src, fitted, len(body), head, keep_head, model))
    if missing or misfit:
        listed = "; ".join(misfit[:3] + [f"{k} (not in the source)" for k in missing[:3]])
        notes.append(f"warning: {len(missing)} tensor(s) keep their random initialization: {listed}")
    return loaded, (mean, std), notes


def _summary(src: InitSource, fitted: int, body: int, head: list[str], keep_head: bool, model: nn.Module) -> str:
    line = f"init: {src.describe()}: loaded {fitted}/{body} backbone tensors"
    if keep_head:
        return line + f" and its classifier ({model.num_classes} classes, the same as the dataset's)"
    if head:
        n_src = src.tensors[head[0]].shape[0]
        bg = " incl. TF's background class" if src.class_names and src.class_names[0] == "background" else ""
        return line + f"; its {n_src}-class classifier{bg} is replaced by a new {model.num_classes}-class one"
    return line + f"; a new {model.num_classes}-class classifier"


def _stem_key(state: dict[str, torch.Tensor]) -> str | None:
    """The first convolution's weight (the one that sees the image): the first 4-D tensor in module order."""
    return next((k for k, v in state.items() if v.ndim == 4), None)


def _next_running_mean(state: dict[str, torch.Tensor], after: str, channels: int) -> str | None:
    keys = list(state)
    for k in keys[keys.index(after) + 1 :]:
        if state[k].ndim == 4:
            return None  # another conv comes first: no BN right after the stem
        if k.endswith("running_mean") and state[k].shape == (channels,):
            return k
    return None


def _adapt_stem(weight: torch.Tensor, mean: tuple, std: tuple, in_chans: int):
    """(weight, mean, std, running-mean shift or None, note) for a stem fed ``in_chans`` instead of the source's."""
    have = weight.shape[1]
    w = weight.float()
    if have == 3 and in_chans == 1:
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        m1, s1 = float(m.mean()), float(s.mean())
        # z = Σ_c W_c (g - m_c)/s_c = (Σ_c W_c s1/s_c)·(g - m1)/s1 + Σ_c W_c (m1 - m_c)/s_c
        new = (w * (s1 / s)).sum(1, keepdim=True)
        shift = (w * ((m1 - m) / s)).sum((1, 2, 3))
        note = "1-channel data: the stem's RGB filters are summed (a gray image gives the RGB weights' response)"
        return new, (m1,), (s1,), (shift if shift.abs().max() > 0 else None), note
    if have == 1 and in_chans == 3:
        note = "3-channel data: the stem's gray filters are copied to R, G and B (÷3)"
        return (w / 3).expand(-1, 3, -1, -1).contiguous(), mean * 3, std * 3, None, note
    return weight, mean, std, None, f"the stem takes {have} channels in the source, {in_chans} here"


# --- all three --------------------------------------------------------------------------------------


def start_model(
    cfg: TrainConfig, num_classes: int, in_chans: int, classes: list[str] | None = None
) -> tuple[nn.Module, dict]:
    """The model a run starts from, and ``init_meta`` (empty without ``cfg.init``).

    ``init_meta`` holds ``source`` (where the weights came from), ``mean``/``std`` (normalize the data with
    these), ``model_kwargs`` (what rebuilds the network: save it with the run) and ``notes`` (for the run to
    print). ``classes``, when given, lets a source trained on exactly these classes keep its classifier.
    """
    run_kwargs = model_kwargs(cfg, num_classes, in_chans)
    if not cfg.init:
        return create_model(cfg.model, **run_kwargs), {}
    resumed = _resumed_init(cfg)
    if resumed is not None:  # the checkpoint holds the weights: the source file need not exist any more
        return create_model(cfg.model, **resumed["model_kwargs"]), resumed
    # Reading may build models (a first use converts Google's graph): keep it off the run's seeded RNG, so the
    # new classifier's initialization does not depend on whether the weights cache existed.
    with torch.random.fork_rng(devices=[]):
        src = read_init(cfg.init)
    kwargs = init_model_kwargs(cfg.model, run_kwargs, src, cfg.width_mult)
    model = create_model(cfg.model, **kwargs)
    keep_head = bool(classes) and src.class_names == list(classes) and _head_fits(model, src)
    tensors, (mean, std), notes = adapt_state(model, src, keep_head)
    state = model.state_dict()
    state.update(tensors)
    model.load_state_dict(state)
    kwargs = {**kwargs, "num_classes": num_classes, "in_chans": in_chans}
    init_meta = dict(
        source=src.source,
        mean=[float(x) for x in mean],
        std=[float(x) for x in std],
        model_kwargs=kwargs,
        notes=notes,
    )
    return model, init_meta


def _resumed_init(cfg: TrainConfig) -> dict | None:
    """``init_meta`` as saved in ``out_dir/checkpoint.pt`` when the run resumes one started from ``cfg.init``."""
    from mobilenets.training.checkpoint import load_checkpoint

    path = Path(cfg.out_dir) / "checkpoint.pt"
    if not cfg.resume or not path.is_file():
        return None
    meta = load_checkpoint(path).get("meta") or {}
    saved = meta.get("init") or {}
    if saved.get("source", {}).get("init") != str(cfg.init):
        return None  # another start: resuming is refused later, naming the difference
    kwargs = dict(meta["model_kwargs"])
    return dict(source=saved["source"], mean=meta["mean"], std=meta["std"], model_kwargs=kwargs, notes=saved["notes"])


def _head_fits(model: nn.Module, src: InitSource) -> bool:
    target = model.state_dict()
    head = {k: v for k, v in src.tensors.items() if k.startswith(HEAD + ".")}
    return bool(head) and all(k in target and target[k].shape == v.shape for k, v in head.items())
