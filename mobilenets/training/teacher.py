"""The teacher of a distillation run: loaded frozen, fed the student's batch at its own size and normalization."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.data import match_channels
from mobilenets.errors import MobileNetsError
from mobilenets.models import list_models
from mobilenets.weights.checkpoint import load_model

TEACHER_HELP = (
    "use --teacher pretrained, a registered name with weights (mobilenet_v1_1.0_160), or an earlier run "
    "(its folder, model.pt or checkpoint.pt)"
)


@dataclass
class Teacher:
    """A frozen model and the input it expects.

    Args:
        model: in eval mode, no parameter requires a gradient.
        resolution: its input side; the student's batch is resized to it.
        mean, std: its input normalization (of pixel values in [0, 1]).
        in_chans: its input channels.
        info: what the run's metadata records (source, model, resolution, mean, std, num_classes).
    """

    model: nn.Module
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, student_mean: Sequence[float], student_std: Sequence[float]) -> torch.Tensor:
        """The teacher's logits for a batch prepared (augmented, normalized) for the student."""
        x = teacher_input(x, student_mean, student_std, self.resolution, self.in_chans, self.mean, self.std)
        return self.model(x)


def teacher_input(
    x: torch.Tensor,
    student_mean: Sequence[float],
    student_std: Sequence[float],
    resolution: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Re-express a student's input batch as the teacher's: same pixels, the teacher's size and normalization."""

    def column(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(list(values), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)

    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x = x * column(student_std) + column(student_mean)  # back to pixel values in [0, 1]
    x = match_channels(x, in_chans)
    if tuple(x.shape[-2:]) != (resolution, resolution):
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=resolution < x.shape[-1]
        )
    x = (x - column(mean)) / column(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def load_teacher(spec: str, classes: Sequence[str], device: torch.device, channels_last: bool = False) -> Teacher:
    """Load ``--teacher`` (see TrainConfig.teacher) for a dataset with these ``classes``, frozen, on ``device``."""
    path = Path(spec).expanduser()
    if spec == "pretrained" or (not path.exists() and spec in list_models()):
        try:
            teacher = _from_weights(None if spec == "pretrained" else spec, None, spec)
        except MobileNetsError as e:
            raise MobileNetsError(f"--teacher {spec}: {e}") from None
    elif path.is_dir() or path.is_file():
        if path.is_dir():
            path = path / "model.pt"
        if path.suffix.lower() in (".safetensors", ".pb"):
            teacher = _from_weights(None, path, str(path.resolve()))
        else:
            teacher = _from_run(path)
    else:
        raise MobileNetsError(f"--teacher {spec}: no such file or folder, and not a registered model; {TEACHER_HELP}")
    names = teacher.info.pop("classes")
    if len(names) != len(classes):
        raise MobileNetsError(
            f"--teacher {spec} predicts {len(names)} classes but the dataset has {len(classes)}; a teacher must "
            "predict the dataset's classes (train one on it first with `mobilenets train`)"
        )
    if teacher.info.get("kind") == "run" and list(names) != list(classes):
        raise MobileNetsError(
            f"--teacher {spec} was trained on other classes ({', '.join(names[:3])}, ...) than the dataset's "
            f"({', '.join(classes[:3])}, ...); use a teacher trained on this dataset"
        )
    model = teacher.model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    teacher.model = model
    return teacher


def _from_weights(model_name: str | None, path: Path | None, source: str) -> Teacher:
    from mobilenets import weights as W

    model, card = W.pretrained_model(model_name) if path is None else W.load_weights(path)
    pre = card.preprocessing
    info = dict(kind="weights", source=source, model=card.name, resolution=pre.resolution, mean=list(pre.mean))
    info.update(std=list(pre.std), num_classes=card.num_classes, classes=list(card.class_names))
    return Teacher(model, pre.resolution, tuple(pre.mean), tuple(pre.std), model.in_chans, info)


def _from_run(path: Path) -> Teacher:
    model, meta = load_model(path)
    info = dict(kind="run", source=str(path.resolve()), model=meta["model"], resolution=meta["resolution"])
    info.update(mean=list(meta["mean"]), std=list(meta["std"]), num_classes=len(meta["classes"]))
    info.update(model_kwargs=dict(meta["model_kwargs"]), classes=list(meta["classes"]))
    return Teacher(model, meta["resolution"], tuple(meta["mean"]), tuple(meta["std"]), meta["in_chans"], info)
