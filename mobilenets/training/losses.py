"""Training losses. A new loss is one function here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with label smoothing, computed in float32 whatever the autocast dtype of ``logits``."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    weight: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s knowledge distillation, the loss the paper's §4.5/§4.7 MobileNets were trained with.

    ``(1 − w)·CE(student, labels) + w·T²·KL(softmax(teacher/T) ‖ softmax(student/T))``, the KL averaged
    over the batch. The T² keeps the soft targets' gradients the same size as the labels' whatever T
    (they shrink as 1/T² otherwise). Computed in float32.
    """
    s, t = student_logits.float(), teacher_logits.float()
    ce = F.cross_entropy(s, labels, label_smoothing=label_smoothing)
    kl = F.kl_div(
        F.log_softmax(s / temperature, dim=1),
        F.log_softmax(t / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * ce + weight * temperature**2 * kl
