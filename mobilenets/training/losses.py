"""Training losses. A new loss is one function here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with label smoothing, computed in float32 whatever the autocast dtype of ``logits``."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
