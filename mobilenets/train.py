"""The training engine: one CPU, one GPU, or many processes under ``torchrun`` (DistributedDataParallel).

Reads top to bottom: config and presets, optimizer pieces, checkpoints, evaluation, then :func:`train`.

    from mobilenets.train import TrainConfig, train
    result = train(TrainConfig(model="mobilenet_v1", width_mult=0.5, dataset="fashion-mnist", epochs=2))
    print(result.test_acc, result.out_dir)

Determinism: the sample order of every epoch and the random crops of every step are fixed by
(seed, epoch, step), and the global RNG (dropout) is reseeded per step. So a run resumed from a
checkpoint continues bit-for-bit (on CPU and deterministic GPU ops), and N processes under torchrun
see exactly the batches one process sees (``batch_size`` is the global batch, split across ranks).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets import data as D
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model, model_defaults

# ----------------------------------------------------------------------------------------------------
# Config


@dataclass
class TrainConfig:
    """Everything a run depends on. ``None`` means "the preset's value" (or the model's, for model fields).

    The resolved config (presets applied, see :meth:`resolved`) is saved as ``config.json`` in ``out_dir``.

    Model:
        model: registered name (``mobilenets list``), e.g. "mobilenet_v1" or "mobilenet_v1_0.5_160".
        width_mult: α; None keeps the name's.
        resolution: input side; images are resized to it. None: the dataset's image side for built-in
            small sets (28 for Fashion-MNIST, 32 for digits and CIFAR; at least the model's minimum), else
            the name's (224).
        stem_stride: 2 as in the paper; 1 is the small-image stem (28–32 px inputs keep a 2×2 final map
            instead of 1×1). None: 1 when resolution ≤ 64, else 2. MobileNets only.
        dropout: before the classifier; None keeps the model's (0).
    Data:
        dataset: "fashion-mnist", "digits", or a path (ImageFolder root, CIFAR python-pickle folder).
        data_dir: folder with Fashion-MNIST's IDX files (default /usr/share/datasets/fashion-mnist).
        max_train_samples / max_test_samples: class-balanced subsets (None: all).
        num_workers: DataLoader worker processes for ImageFolder data (in-memory sets need none).
    Schedule and optimizer (None: from ``preset``, one of "paper", "sgd", "adamw" — see PRESETS):
        epochs, max_steps (stop early after this many optimizer steps), batch_size (global, all ranks),
        accum_steps (micro-batches per step: batch_size / (processes × accum_steps) images per forward),
        optimizer ("rmsprop" TF-style, "sgd", "adamw"), lr (None: the preset's per-256 rate scaled by
        batch_size/256), momentum, weight_decay, depthwise_weight_decay (paper: none on depthwise filters),
        schedule ("cosine", "exponential", "constant"), warmup_epochs, lr_decay (exponential: factor per
        epoch), label_smoothing, ema_decay (0: no EMA of weights), crop_scale_min (smallest random crop,
        as a fraction of the area; 1: no crops), translate (random shift, fraction of the side), flip.
    Run:
        seed, device ("auto", "cpu", "cuda", "cuda:1"), amp ("auto": bf16 on GPU, off on CPU; "bf16",
        "fp16", "off"), channels_last (None: on), compile (torch.compile), sync_bn (DDP),
        gpu_data (None: keep in-memory sets on the GPU), out_dir, checkpoint_every (steps; 0: epoch ends
        only), resume (continue from ``out_dir``/checkpoint.pt), eval_every (epochs), progress (tqdm),
        tensorboard, plots.
    """

    # model
    model: str = "mobilenet_v1"
    width_mult: float | None = None
    resolution: int | None = None
    stem_stride: int | None = None
    dropout: float | None = None
    # data
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    num_workers: int = 0
    # schedule and optimizer
    preset: str = "sgd"
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    accum_steps: int = 1
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    depthwise_weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    lr_decay: float | None = None
    label_smoothing: float | None = None
    ema_decay: float | None = None
    crop_scale_min: float | None = None
    translate: float | None = None
    flip: bool | None = None
    # run
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    sync_bn: bool = False
    gpu_data: bool | None = None
    out_dir: str = "runs/train"
    checkpoint_every: int = 0
    resume: bool = False
    eval_every: int = 1
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with every preset value filled in and the values checked."""
        if self.preset not in PRESETS:
            raise MobileNetsError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = dataclasses.replace(self)
        preset = PRESETS[self.preset]
        for key, value in preset.items():
            if key == "lr_per_256":
                continue
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        if cfg.lr is None:
            cfg.lr = preset["lr_per_256"] * cfg.batch_size / 256
        if cfg.flip is None:
            # Mirrored digits are different symbols; clothes, photos and CIFAR objects are not.
            cfg.flip = str(cfg.dataset).lower() != "digits"
        cfg._check()
        return cfg

    def _check(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.amp in ("auto", "bf16", "fp16", "off"), "amp must be auto, bf16, fp16 or off"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.accum_steps >= 1, "accum_steps must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a finite number > 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1) (0 turns EMA off)"),
            (0 < self.crop_scale_min <= 1, "crop_scale_min must be in (0, 1]"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise MobileNetsError(f"bad training config: {message}")


# The paper's recipe (§3.2, after Inception V3) and two that train faster on today's hardware.
# lr_per_256 is scaled linearly to the batch size unless --lr is given.
PRESETS: dict[str, dict] = {
    "paper": dict(
        optimizer="rmsprop",  # TF-style: decay 0.9, momentum 0.9, epsilon 1.0 (see RMSpropTF)
        lr_per_256=0.045 * 8,  # Inception V3's 0.045 was for batch 32
        momentum=0.9,
        weight_decay=4e-5,
        depthwise_weight_decay=0.0,  # "very little or no weight decay on the depthwise filters"
        schedule="exponential",
        warmup_epochs=0.0,
        lr_decay=0.94**0.5,  # Inception V3: ×0.94 every two epochs, applied smoothly per step here
        label_smoothing=0.0,  # "no label smoothing"
        ema_decay=0.0,
        crop_scale_min=0.35,  # "limit the size of small crops" (Inception uses 0.08)
        translate=0.0,
    ),
    "sgd": dict(
        optimizer="sgd",
        lr_per_256=0.4,
        momentum=0.9,
        weight_decay=5e-5,
        depthwise_weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.3,
        lr_decay=1.0,
        label_smoothing=0.1,
        ema_decay=0.0,
        crop_scale_min=1.0,
        translate=0.1,
    ),
    "adamw": dict(
        optimizer="adamw",
        lr_per_256=4e-3,
        momentum=0.9,  # Adam's beta1
        weight_decay=0.05,
        depthwise_weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.5,
        lr_decay=1.0,
        label_smoothing=0.1,
        ema_decay=0.999,
        crop_scale_min=1.0,
        translate=0.1,
    ),
}
OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("cosine", "exponential", "constant")
# Fields that may differ between a run and the run it resumes (they do not change the numbers).
RESUME_FREE = {
    "resume",
    "progress",
    "tensorboard",
    "plots",
    "num_workers",
    "device",
    "out_dir",
    "epochs",
    "max_steps",
    "checkpoint_every",
    "eval_every",
}


# ----------------------------------------------------------------------------------------------------
# Optimizer pieces


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow 1 computes it, the optimizer the paper trained with.

    Three differences from ``torch.optim.RMSprop``: the mean square starts at 1, epsilon sits inside the
    square root, and the learning rate multiplies the update before it enters the momentum buffer:
        ms ← decay·ms + (1−decay)·g²;  mom ← momentum·mom + lr·g/√(ms+ε);  w ← w − mom
    With ε = 1.0 (the paper's setting via Inception V3) the step is close to SGD's early on.
    """

    def __init__(
        self, params, lr: float, decay: float = 0.9, momentum: float = 0.9, eps: float = 1.0, weight_decay=0.0
    ):
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                    state["mom"] = torch.zeros_like(p)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
                mom.mul_(group["momentum"]).addcdiv_(g, (ms + group["eps"]).sqrt_(), value=group["lr"])
                p.sub_(mom)


def param_groups(model: nn.Module, weight_decay: float, depthwise_weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights; ``depthwise_weight_decay`` on depthwise filters; none on BN/bias."""
    decay, depthwise, no_decay = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if (
                name == "weight"
                and isinstance(module, nn.Conv2d)
                and module.groups > 1
                and module.groups == module.in_channels
            ):
                depthwise.append(p)
            elif name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                decay.append(p)
            else:
                no_decay.append(p)
    groups = [
        dict(params=decay, weight_decay=weight_decay),
        dict(params=depthwise, weight_decay=depthwise_weight_decay),
        dict(params=no_decay, weight_decay=0.0),
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.depthwise_weight_decay)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=cfg.lr, decay=0.9, momentum=cfg.momentum, eps=1.0)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate at ``step`` as a fraction of ``cfg.lr``: linear warmup, then the schedule."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "exponential":
        return cfg.lr_decay ** ((step - warmup) / steps_per_epoch)
    return 1.0


class ModelEma(nn.Module):
    """Exponential moving average of a model's weights (and a copy of its BN statistics).

    The decay ramps up as min(decay, (1 + step) / (10 + step)) so short runs are not dominated by the
    random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1 - d)
            else:
                ema_v.copy_(v)


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint (weights_only); a damaged file is a clear error, never a silent partial load."""
    path = Path(path)
    if not path.is_file():
        raise MobileNetsError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means "damaged"
        raise MobileNetsError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); it is damaged — "
            "delete it to start over"
        ) from None


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [torch.from_numpy(np.random.get_state()[1].astype(np.int64))] + list(np.random.get_state()[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    keys, *rest = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + rank


# ----------------------------------------------------------------------------------------------------
# Distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        here = True
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), here)


def _all_reduce(t: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


# ----------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalResult:
    """Top-1/top-5 accuracy (fractions), mean loss, per-class accuracy and the confusion matrix."""

    top1: float
    top5: float
    loss: float
    num_samples: int
    classes: list[str]
    per_class_acc: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: D.Dataset,
    *,
    resolution: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    amp: str = "off",
    channels_last: bool = False,
    num_workers: int = 0,
    dist_info: Dist | None = None,
) -> EvalResult:
    """Top-1/top-5, loss, per-class accuracy and confusion matrix of ``model`` on ``dataset``.

    Under torchrun each rank evaluates every world_size-th image and the counts are summed.
    """
    dist_info = dist_info or Dist()
    device = torch.device(device)
    resolution = resolution or getattr(model, "resolution", None) or 224
    in_chans = getattr(_unwrap(model), "in_chans", 3)
    was_training = model.training
    model.eval()
    n_cls = dataset.num_classes
    confusion = torch.zeros(n_cls, n_cls, dtype=torch.float64)
    top5_hits = torch.zeros((), dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    k = min(5, n_cls)
    mine = torch.arange(dist_info.rank, len(dataset), dist_info.world_size)
    for x, y in _eval_batches(dataset, mine, batch_size, num_workers):
        x = D.prepare_batch(x.to(device), dataset.mean, dataset.std, resolution, in_chans, channels_last=channels_last)
        y = y.to(device)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        topk = logits.topk(k, dim=1).indices
        top5_hits += (topk == y[:, None]).any(1).sum().double().cpu()
        confusion += torch.bincount(y.cpu() * n_cls + topk[:, 0].cpu(), minlength=n_cls * n_cls).view(n_cls, n_cls)
    packed = _all_reduce(torch.cat([confusion.flatten(), top5_hits[None], loss_sum[None]]), dist_info)
    confusion = packed[: n_cls * n_cls].view(n_cls, n_cls)
    top5_hits, loss_sum = packed[-2], packed[-1]
    model.train(was_training)
    total = float(confusion.sum())
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return EvalResult(
        top1=float(confusion.diag().sum()) / max(total, 1),
        top5=float(top5_hits) / max(total, 1),
        loss=float(loss_sum) / max(total, 1),
        num_samples=int(total),
        classes=list(dataset.classes),
        per_class_acc=per_class,
        confusion=confusion.long().tolist(),
    )


def _eval_batches(dataset: D.Dataset, indices: torch.Tensor, batch_size: int, num_workers: int):
    if isinstance(dataset, D.ArrayDataset):
        for i in range(0, len(indices), batch_size):
            idx = indices[i : i + batch_size].to(dataset.images.device)
            yield dataset.images[idx], dataset.labels[idx]
        return
    batches = [indices[i : i + batch_size].tolist() for i in range(0, len(indices), batch_size)]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=D.collate_skip_bad
    )
    for x, y, _bad in loader:
        if len(y):
            yield x, y


def _autocast(device: torch.device, amp: str):
    if amp in ("bf16", "fp16") and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return torch.autocast(device.type, enabled=False)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


# ----------------------------------------------------------------------------------------------------
# Models and saved weights


def model_kwargs(cfg: TrainConfig, num_classes: int, in_chans: int) -> dict:
    """The create_model keyword arguments of a run (what model.pt stores to rebuild the network)."""
    defaults = model_defaults(cfg.model)
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, resolution=cfg.resolution)
    if cfg.dropout is not None:
        kwargs["dropout"] = cfg.dropout
    if "width_mult" in defaults:
        if cfg.width_mult is not None:
            kwargs["width_mult"] = cfg.width_mult
        kwargs["stem_stride"] = cfg.stem_stride
    elif cfg.width_mult is not None:
        raise MobileNetsError(f"{cfg.model} has no width multiplier; drop --width-mult or pick a MobileNet")
    return kwargs


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``model.pt`` (or a ``checkpoint.pt``) written by :func:`train`.

    Returns the model in eval mode and its metadata (model name, kwargs, classes, mean, std, resolution).
    """
    return model_from_checkpoint(load_checkpoint(path), path)


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """:func:`load_model` for a checkpoint already read (``path`` names it in errors)."""
    meta = ckpt.get("meta")
    if meta is None:
        raise MobileNetsError(f"{path} is not a mobilenets training output (no 'meta'); pass a model.pt")
    model = create_model(meta["model"], **meta["model_kwargs"])
    state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model.eval(), meta


# ----------------------------------------------------------------------------------------------------
# Results and logs


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions (0.91 = 91%); times in seconds.

    ``history`` has one dict per evaluated epoch: epoch, step, lr, train_loss, train_acc, test_loss,
    test_acc, test_top5, train_time_s (cumulative, training only), img_per_s.
    """

    test_acc: float
    test_top5: float
    test_loss: float
    train_time_s: float
    wall_time_s: float
    epochs: int
    steps: int
    history: list[dict]
    out_dir: str
    checkpoint_path: str
    model_path: str
    config: dict
    classes: list[str]
    per_class_acc: list[float]
    step_losses: list[float]
    skipped_files: int = 0
    interrupted: bool = False
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return d


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and test, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax2.plot(epochs, [100 * h["test_acc"] for h in history], "o-", label="test top-1")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_confusion(result: EvalResult, path: Path, title: str = "") -> None:
    """The confusion matrix (rows: true class, columns: predicted), row-normalized, counts printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(result.confusion, dtype=np.float64)
    n = len(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5, min(0.55 * n + 2, 30))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
        ax.set_xticks(range(n), result.classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), result.classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title or f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%")
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


class _NullWriter:
    def add_scalar(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboard(out_dir: Path, purge_step: int, enabled: bool):
    if not enabled:
        return _NullWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
        return _NullWriter()
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step or None)


# ----------------------------------------------------------------------------------------------------
# Signals: SIGINT/SIGTERM ask the loop to save and stop after the current step.


class _StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------------------
# The engine


def resolve_device(name: str, dist_info_local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info_local_rank)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MobileNetsError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MobileNetsError("device cuda requested but no GPU is available; use --device cpu")
    return device


def default_resolution(cfg: TrainConfig, train_set: D.Dataset) -> int:
    """The input side a run uses when none is given (see TrainConfig.resolution)."""
    if isinstance(train_set, D.ArrayDataset):
        return max(train_set.image_size, 16 if cfg.stem_stride in (None, 1) else 32)
    return model_defaults(cfg.model).get("resolution", 224)


def load_train_test(cfg: TrainConfig) -> tuple[D.Dataset, D.Dataset]:
    size = cfg.resolution or model_defaults(cfg.model).get("resolution", 224)
    kw = dict(data_dir=cfg.data_dir, seed=cfg.seed, image_size=size)
    train_set = D.load_dataset(cfg.dataset, "train", max_samples=cfg.max_train_samples, **kw)
    test_set = D.load_dataset(cfg.dataset, "test", max_samples=cfg.max_test_samples, **kw)
    if isinstance(train_set, D.ImageFolderDataset):
        train_set.check_readable()
        test_set.check_readable()
    if train_set.classes != test_set.classes:
        raise MobileNetsError(
            f"train and test splits of {cfg.dataset} have different classes "
            f"({len(train_set.classes)} vs {len(test_set.classes)}); give both splits the same class folders"
        )
    return train_set, test_set


def train(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` and evaluate it on the test split; see TrainConfig.

    Writes to ``cfg.out_dir``: config.json, checkpoint.pt (latest, for --resume), model.pt (the trained
    weights for ``mobilenets eval``), metrics.csv, steps.csv, tensorboard/, curves.png, confusion.png and
    result.json. ``on_step(step, info)`` is called on rank 0 after every optimizer step.
    SIGINT/SIGTERM save a checkpoint and return early with ``interrupted=True``; a NaN/Inf loss raises
    MobileNetsError naming the step and keeps the last good checkpoint.
    """
    wall_start = time.perf_counter()
    cfg = cfg.resolved()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist_info = setup_distributed(device.type)
    try:
        return _train(cfg, device, dist_info, on_step, wall_start)
    finally:
        if dist_info.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device, dist_info: Dist, on_step, wall_start: float) -> TrainResult:
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    model_path = out_dir / "model.pt"

    # --- data ---------------------------------------------------------------------------------------
    train_set, test_set = load_train_test(cfg)
    if cfg.resolution is None:
        cfg.resolution = default_resolution(cfg, train_set)
    if cfg.stem_stride is None and "width_mult" in model_defaults(cfg.model):
        cfg.stem_stride = 1 if cfg.resolution <= 64 else 2
    in_chans = train_set.in_chans
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise MobileNetsError(
            f"batch_size {cfg.batch_size} is larger than the training set ({len(train_set)} images); lower it"
        )
    if cfg.batch_size % (dist_info.world_size * cfg.accum_steps):
        raise MobileNetsError(
            f"batch_size {cfg.batch_size} must divide by the {dist_info.world_size} process(es) × "
            f"accum_steps {cfg.accum_steps}"
        )
    total_steps = steps_per_epoch * cfg.epochs
    last_step = min(total_steps, cfg.max_steps or total_steps)
    on_gpu = device.type == "cuda"
    # Channels-last runs MobileNets' depthwise/pointwise convs faster on GPUs and on CPUs (oneDNN, ~1.4x).
    channels_last = True if cfg.channels_last is None else cfg.channels_last
    amp = ("bf16" if on_gpu else "off") if cfg.amp == "auto" else cfg.amp
    if isinstance(train_set, D.ArrayDataset) and (cfg.gpu_data if cfg.gpu_data is not None else on_gpu):
        train_set, test_set = train_set.to(device), test_set.to(device)
    augment = D.Augment(crop_scale=(cfg.crop_scale_min, 1.0), translate=cfg.translate, flip=cfg.flip)

    # --- model, optimizer, schedule, EMA ------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    kwargs = model_kwargs(cfg, train_set.num_classes, in_chans)
    model = create_model(cfg.model, **kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, steps_per_epoch, cfg))
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    meta = dict(
        model=cfg.model,
        model_kwargs=kwargs,
        classes=list(train_set.classes),
        mean=list(train_set.mean),
        std=list(train_set.std),
        resolution=cfg.resolution,
        in_chans=in_chans,
        dataset=str(cfg.dataset),
    )
    config = asdict(cfg)

    # --- resume -------------------------------------------------------------------------------------
    state = dict(
        epoch=0,
        step_in_epoch=0,
        step=0,
        train_time_s=0.0,
        history=[],
        step_losses=[],
        epoch_stats=[0.0, 0.0, 0.0],
        skipped=0,
    )
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        changed = sorted(k for k, v in ckpt["config"].items() if k not in RESUME_FREE and config.get(k) != v)
        if changed:
            diffs = ", ".join(f"{k}: {ckpt['config'][k]!r} → {config.get(k)!r}" for k in changed[:4])
            raise MobileNetsError(
                f"cannot resume {ckpt_path}: the run was started with different settings ({diffs}); "
                "use the same flags or a new --out-dir"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["ema"])
        state.update(ckpt["state"])
        # A run stopped by max_steps mid-epoch logged a partial-epoch evaluation; the epoch's real row comes later.
        state["history"] = [h for h in state["history"] if h["step"] % steps_per_epoch == 0]
        _set_rng_state(ckpt["rng"])
    elif cfg.resume and dist_info.is_main:
        print(f"note: no checkpoint in {out_dir}; starting a new run", file=sys.stderr)

    if cfg.sync_bn and not on_gpu:
        raise MobileNetsError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm is CUDA-only); drop it on the CPU")
    if cfg.sync_bn and dist_info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if on_gpu else None, broadcast_buffers=True
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    eval_model = ema.module if ema is not None else model

    def run_eval() -> EvalResult:
        return evaluate(
            eval_model,
            test_set,
            resolution=cfg.resolution,
            device=device,
            amp=amp,
            channels_last=channels_last,
            num_workers=cfg.num_workers,
            dist_info=dist_info,
        )

    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    writer = _tensorboard(out_dir, state["step"], cfg.tensorboard and dist_info.is_main)

    def save_checkpoint() -> None:
        if not dist_info.is_main:
            return
        atomic_save(
            dict(
                meta=meta,
                config=config,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                ema=ema.module.state_dict() if ema is not None else None,
                state=copy.deepcopy(state),
                rng=_rng_state(),
            ),
            ckpt_path,
        )

    # --- loop ---------------------------------------------------------------------------------------
    bad = D.BadFiles()
    last_eval: EvalResult | None = None
    interrupted = False
    show = cfg.progress and dist_info.is_main
    from tqdm.auto import tqdm

    with _StopFlag() as stop:
        while state["step"] < last_step:
            epoch = state["epoch"]
            order = D.epoch_order(len(train_set), cfg.seed, epoch)
            first = state["step_in_epoch"]
            steps_here = min(steps_per_epoch, first + last_step - state["step"])
            bar = tqdm(
                total=steps_per_epoch,
                initial=first,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="step",
                disable=not show,
                dynamic_ncols=True,
                leave=True,
                file=sys.stderr,
            )
            train_model.train()
            for k, (images, labels, bad_paths) in enumerate(
                _train_batches(train_set, order, first, steps_here, cfg, dist_info), start=first
            ):
                t0 = time.perf_counter()
                bad.add(bad_paths)
                if len(labels) < 2:  # (almost) every file of this batch was unreadable: BatchNorm needs 2
                    state["step_in_epoch"] = k + 1
                    bar.update(1)
                    continue
                step = state["step"]
                # Per-step seed for dropout and the crops: a resumed run replays exactly these numbers.
                torch.manual_seed(_step_seed(cfg.seed, step, dist_info.rank))
                rand = _rank_part(D.augment_rand(cfg.batch_size, D.step_generator(cfg.seed, epoch, k)), dist_info)
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                # Gradient accumulation: micro-batches of the rank's share, gradients summed before the step.
                chunks = torch.arange(len(labels), device=device).tensor_split(cfg.accum_steps)
                for j, idx in enumerate(chunks):
                    last_chunk = j == len(chunks) - 1
                    sync = train_model.no_sync() if dist_info.enabled and not last_chunk else contextlib.nullcontext()
                    with sync:
                        x = D.prepare_batch(
                            images[idx],
                            train_set.mean,
                            train_set.std,
                            cfg.resolution,
                            in_chans,
                            augment,
                            rand[idx.cpu()][: len(idx)],
                            channels_last,
                        )
                        y = labels[idx]
                        with _autocast(device, amp):
                            logits = train_model(x)
                            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                        scaler.scale(loss * (len(idx) / len(labels))).backward()
                    loss_sum += loss.detach().float() * len(idx)
                    correct += (logits.detach().argmax(1) == y).sum()
                stats = torch.stack(
                    [
                        loss_sum,
                        correct.float(),
                        torch.tensor(float(len(labels)), device=device),
                        torch.tensor(float(stop.signum is not None), device=device),
                    ]
                )
                stats = _all_reduce(stats.cpu().double(), dist_info)
                step_loss = float(stats[0] / stats[2])
                if not math.isfinite(step_loss):
                    writer.close()
                    bar.close()
                    where = (
                        f"the last good checkpoint {ckpt_path} (step {_ckpt_step(ckpt_path)})"
                        if ckpt_path.exists()
                        else "no checkpoint was written yet"
                    )
                    raise MobileNetsError(
                        f"loss is {step_loss} at step {step + 1} (epoch {epoch + 1}, batch {k + 1}); stopped "
                        f"before updating the weights, keeping {where}. Lower --lr, check the data, "
                        "or use --amp off"
                    )
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                if ema is not None:
                    ema.update(model, step)
                state["step"] = step + 1
                state["step_in_epoch"] = k + 1
                for i in range(3):
                    state["epoch_stats"][i] += float(stats[i])
                state["step_losses"].append(step_loss)
                dt = time.perf_counter() - t0
                state["train_time_s"] += dt
                if show:
                    es = state["epoch_stats"]
                    bar.set_postfix(
                        loss=f"{step_loss:.3f}",
                        acc=f"{es[1] / es[2]:.3f}",
                        img_s=f"{cfg.batch_size / max(dt, 1e-9):.0f}",
                        refresh=False,
                    )
                    bar.update(1)
                if dist_info.is_main:
                    writer.add_scalar("train/loss", step_loss, state["step"])
                    writer.add_scalar("train/lr", lr, state["step"])
                    if on_step is not None:
                        on_step(state["step"], dict(epoch=epoch, loss=step_loss, lr=lr))
                if bool(stats[3]):
                    interrupted = True
                    break
                if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                    save_checkpoint()
                if state["step"] >= last_step:
                    break
            bar.close()
            if interrupted:
                save_checkpoint()
                break

            epoch_done = state["step_in_epoch"] >= steps_per_epoch
            if epoch_done or state["step"] >= last_step:
                es = state["epoch_stats"]
                train_loss, train_acc = es[0] / max(es[2], 1), es[1] / max(es[2], 1)
                if epoch_done:
                    state.update(epoch=epoch + 1, step_in_epoch=0, epoch_stats=[0.0, 0.0, 0.0])
                if (epoch + 1) % cfg.eval_every == 0 or state["step"] >= last_step:
                    last_eval = run_eval()
                    row = dict(
                        epoch=round(state["step"] / steps_per_epoch, 3) if not epoch_done else epoch + 1,
                        step=state["step"],
                        lr=optimizer.param_groups[0]["lr"],
                        train_loss=train_loss,
                        train_acc=train_acc,
                        test_loss=last_eval.loss,
                        test_acc=last_eval.top1,
                        test_top5=last_eval.top5,
                        train_time_s=state["train_time_s"],
                        img_per_s=state["step"] * cfg.batch_size / max(state["train_time_s"], 1e-9),
                    )
                    state["history"].append(row)
                    if dist_info.is_main:
                        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5"):
                            writer.add_scalar(key.replace("_", "/", 1), row[key], state["step"])
                        write_metrics_csv(out_dir / "metrics.csv", state["history"])
                        if show:
                            tqdm.write(
                                f"epoch {epoch + 1}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
                                f"test loss {last_eval.loss:.4f} top-1 {100 * last_eval.top1:.2f}% "
                                f"top-5 {100 * last_eval.top5:.2f}%",
                                file=sys.stderr,
                            )
                if bad.count and dist_info.is_main:
                    print(f"warning: epoch {epoch + 1}: {bad.message()}", file=sys.stderr)
                state["skipped"] += bad.count
                bad = D.BadFiles()
                save_checkpoint()

    writer.close()
    if last_eval is None:  # interrupted before any evaluation, or resumed at the end
        last_eval = run_eval()
    if dist_info.is_main:
        atomic_save(dict(meta=meta, config=config, model=eval_model.state_dict(), ema=None), model_path)
        write_metrics_csv(out_dir / "steps.csv", [dict(step=i + 1, loss=v) for i, v in enumerate(state["step_losses"])])
        if cfg.plots and state["history"]:
            plot_curves(state["history"], out_dir / "curves.png", title=f"{cfg.model} on {cfg.dataset}")
            plot_confusion(last_eval, out_dir / "confusion.png")
    result = TrainResult(
        test_acc=last_eval.top1,
        test_top5=last_eval.top5,
        test_loss=last_eval.loss,
        train_time_s=state["train_time_s"],
        wall_time_s=time.perf_counter() - wall_start,
        epochs=state["epoch"],
        steps=state["step"],
        history=state["history"],
        out_dir=str(out_dir),
        checkpoint_path=str(ckpt_path),
        model_path=str(model_path),
        config=config,
        classes=list(train_set.classes),
        per_class_acc=last_eval.per_class_acc,
        step_losses=state["step_losses"],
        skipped_files=state["skipped"],
        interrupted=interrupted,
        model=eval_model,
    )
    if dist_info.is_main:
        atomic_write_text(out_dir / "result.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _rank_part(batch: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    """This rank's contiguous share of a global batch (rows ``batch`` is indexed by)."""
    return batch.tensor_split(dist_info.world_size)[dist_info.rank]


def _ckpt_step(path: Path) -> int | str:
    try:
        return load_checkpoint(path)["state"]["step"]
    except MobileNetsError:
        return "?"


def _train_batches(train_set: D.Dataset, order: torch.Tensor, first: int, last: int, cfg: TrainConfig, dist_info: Dist):
    """Batches ``first``..``last``-1 of an epoch: (uint8 images, labels, unreadable paths) for this rank.

    Global batch k is order[k·B:(k+1)·B]; rank r takes its r-th contiguous part, so the union over ranks
    is exactly what one process sees, and rank r's images are one process's r-th accumulation micro-batch.
    """
    B = cfg.batch_size
    index_lists = [_rank_part(order[k * B : (k + 1) * B], dist_info) for k in range(first, last)]
    if isinstance(train_set, D.ArrayDataset):
        for idx in index_lists:
            idx = idx.to(train_set.images.device)
            yield train_set.images[idx], train_set.labels[idx], []
        return
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=[idx.tolist() for idx in index_lists],
        num_workers=cfg.num_workers,
        collate_fn=D.collate_skip_bad,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    yield from loader


# ----------------------------------------------------------------------------------------------------
# Evaluating saved weights, CLI help, the demo


def evaluate_file(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> EvalResult:
    """Evaluate a model.pt / checkpoint.pt written by :func:`train` on a split of a dataset.

    The dataset defaults to the one the model was trained on; its classes must match the model's.
    """
    model, meta = load_model(path)
    dev = resolve_device(device)
    ds = D.load_dataset(
        dataset or meta["dataset"],
        split,
        data_dir=data_dir,
        max_samples=max_samples,
        image_size=meta["resolution"],
        in_chans=meta["in_chans"],
    )
    if list(ds.classes) != list(meta["classes"]):
        raise MobileNetsError(
            f"the dataset's {len(ds.classes)} classes ({', '.join(ds.classes[:3])}, ...) are not the "
            f"{len(meta['classes'])} the model was trained on ({', '.join(meta['classes'][:3])}, ...)"
        )
    # Normalize with the statistics the model was trained with, whatever the dataset's defaults.
    ds.mean, ds.std = tuple(meta["mean"]), tuple(meta["std"])
    return evaluate(model.to(dev), ds, resolution=meta["resolution"], batch_size=batch_size, device=dev)


FIELD_HELP = {
    "model": "registered model name (`mobilenets list`)",
    "width_mult": "width multiplier α (default: the name's)",
    "resolution": "input side in pixels; images are resized to it (default: 28 for Fashion-MNIST, 16 for "
    "digits, 32 for CIFAR, the name's 224 for image folders)",
    "stem_stride": "first conv's stride: 2 as in the paper, 1 = small-image stem for 28-32 px inputs "
    "(default: 1 when resolution <= 64)",
    "dropout": "dropout before the classifier (default: the model's, 0)",
    "dataset": "fashion-mnist, digits, a CIFAR python folder or an ImageFolder root",
    "data_dir": "folder with Fashion-MNIST's four IDX .gz files (default: /usr/share/datasets/fashion-mnist)",
    "max_train_samples": "train on a class-balanced subset of this size",
    "max_test_samples": "evaluate on a class-balanced subset of this size",
    "num_workers": "DataLoader worker processes decoding ImageFolder images",
    "preset": "recipe: paper, sgd or adamw; other flags override its values",
    "epochs": "passes over the training set",
    "max_steps": "stop after this many optimizer steps (the schedule still spans --epochs)",
    "batch_size": "global batch size (split across torchrun processes and accumulation steps)",
    "accum_steps": "gradient accumulation: micro-batches per optimizer step (same result, less memory)",
    "optimizer": "rmsprop (TF-style, the paper's), sgd (Nesterov) or adamw",
    "lr": "peak learning rate (default: the preset's per-256 rate × batch_size/256)",
    "momentum": "momentum (Adam's beta1 for adamw)",
    "weight_decay": "L2 / decoupled weight decay on conv and FC weights (never on BN and biases)",
    "depthwise_weight_decay": "weight decay on depthwise filters (the paper: little or none)",
    "schedule": "learning-rate schedule after warmup: cosine, exponential or constant",
    "warmup_epochs": "linear warmup length in epochs",
    "lr_decay": "exponential schedule: LR factor per epoch",
    "label_smoothing": "label smoothing (the paper: none)",
    "ema_decay": "EMA of the weights, evaluated and saved instead of the raw weights (0 = off)",
    "crop_scale_min": "smallest random crop as a fraction of the image area (1 = no crops)",
    "translate": "random shift as a fraction of the image side",
    "flip": "random horizontal flips (default: on, off for digits)",
    "seed": "seed of the initial weights, sample order and augmentation",
    "device": "auto, cpu, cuda or cuda:N",
    "amp": "mixed precision: auto (bf16 on GPU, off on CPU), bf16, fp16 or off",
    "channels_last": "channels-last memory format (default: on)",
    "compile": "torch.compile the model",
    "sync_bn": "synchronized BatchNorm across torchrun processes",
    "gpu_data": "keep in-memory datasets on the GPU (default: on GPU)",
    "out_dir": "where checkpoints, metrics, plots and TensorBoard events go",
    "checkpoint_every": "also checkpoint every N steps (0 = at epoch ends only)",
    "resume": "continue bit-for-bit from OUT_DIR/checkpoint.pt",
    "eval_every": "evaluate on the test split every N epochs",
    "progress": "tqdm progress bars",
    "tensorboard": "write TensorBoard events to OUT_DIR/tensorboard",
    "plots": "write curves.png and confusion.png at the end",
}


def set_cpu_threads(threads: int | None = None) -> int:
    """Use ``threads`` CPU threads, or by default the cores that are idle right now (at least 1).

    On a shared machine, threads that fight other processes for the cores make PyTorch's OpenMP
    barriers wait for the slowest one: on 2 busy cores, 2 threads ran a MobileNet step ~10x slower
    than 1 thread. So the default counts the cores other processes leave free, measured over 0.3 s.
    """
    if threads is None:
        cores = os.cpu_count() or 1
        threads = max(1, min(cores, round(cores - busy_cores())))
    torch.set_num_threads(threads)
    return threads


def busy_cores(window_s: float = 0.3) -> float:
    """How many cores' worth of CPU time the whole machine used in the last ``window_s`` seconds."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values[:8]), idle

    try:
        total0, idle0 = read()
        time.sleep(window_s)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):  # not Linux: fall back to the 1-minute load average
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    if total1 == total0:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


# The demo's run, tuned to pass 88% on Fashion-MNIST within a few minutes on 2 CPU cores: the sgd preset
# without label smoothing and random shifts (both slow down a 3-epoch run; they pay off in long ones).
DEMO = dict(
    model="mobilenet_v1",
    width_mult=0.25,
    resolution=28,
    stem_stride=1,
    epochs=3,
    batch_size=128,
    preset="sgd",
    label_smoothing=0.0,
    translate=0.0,
)


def demo_config(
    dataset: str | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    width_mult: float | None = None,
    out_dir: str = "runs/demo",
) -> TrainConfig:
    """The config `mobilenets demo` trains: a small MobileNet on Fashion-MNIST (digits when it is missing)."""
    if dataset is None:
        dataset = "fashion-mnist" if D.fashion_mnist_dir(data_dir) else "digits"
        if dataset == "digits":
            print(
                "note: Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist, or make data); "
                "the demo trains on scikit-learn's digits instead",
                file=sys.stderr,
            )
    kw = dict(DEMO)
    if dataset == "digits":
        kw.update(resolution=16, epochs=15, batch_size=64)
    if epochs is not None:
        kw["epochs"] = epochs
    if width_mult is not None:
        kw["width_mult"] = width_mult
    return TrainConfig(dataset=dataset, data_dir=data_dir, out_dir=out_dir, **kw)
