"""The network a run starts from."""

from __future__ import annotations

from torch import nn

from mobilenets.models import create_model
from mobilenets.training.config import TrainConfig, model_kwargs


def start_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> tuple[nn.Module, dict]:
    """The model a run trains, and what it was started from (``{}``: random initialization)."""
    return create_model(cfg.model, **model_kwargs(cfg, num_classes, in_chans)), {}
