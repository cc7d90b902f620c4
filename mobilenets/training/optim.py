"""Optimizers (TF-style RMSprop, SGD, AdamW), weight-decay groups, the learning-rate schedule and the EMA of weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from mobilenets.errors import MobileNetsError
from mobilenets.training.config import TrainConfig
from mobilenets.training.distributed import _unwrap


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow 1 computes it, the optimizer the paper trained with.

    Three differences from ``torch.optim.RMSprop``: the mean square starts at 1, epsilon sits inside the
    square root, and the learning rate multiplies the update before it enters the momentum buffer:
        ms ← decay·ms + (1−decay)·g²;  mom ← momentum·mom + lr·g/√(ms+ε);  w ← w − mom
    With ε = 1.0 (the V1 paper's setting via Inception V3) the step is close to SGD's early on; V3's reference
    code uses ε = 1e-3, where the step is closer to Adam's (normalized by the gradients' root mean square).
    Each group's tensors are updated together (``torch._foreach_*``): a handful of kernel launches per
    step on a GPU instead of a handful per weight.
    """

    def __init__(
        self, params, lr: float, decay: float = 0.9, momentum: float = 0.9, eps: float = 1.0, weight_decay=0.0
    ):
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            for p in params:
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                    state["mom"] = torch.zeros_like(p)
            ms = [self.state[p]["ms"] for p in params]
            mom = [self.state[p]["mom"] for p in params]
            torch._foreach_mul_(ms, group["decay"])
            torch._foreach_addcmul_(ms, grads, grads, value=1 - group["decay"])
            denom = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_addcdiv_(mom, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, mom)


def param_groups(
    model: nn.Module,
    weight_decay: float,
    depthwise_weight_decay: float,
    lr: float | None = None,
    backbone_lr_scale: float = 1.0,
) -> list[dict]:
    """Weight decay on conv/linear weights; ``depthwise_weight_decay`` on depthwise filters; none on BN/bias.

    Parameters with ``requires_grad`` False (a frozen backbone) are left out. With ``backbone_lr_scale`` ≠ 1
    each group is split in two, the classifier's first (at ``lr``), then the backbone's (at
    ``lr × backbone_lr_scale``); each group is named, e.g. "head/decay" or "backbone/depthwise".
    """
    kinds: dict[str, list] = {"decay": [], "depthwise": [], "no_decay": []}
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
                kinds["depthwise"].append(p)
            elif name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                kinds["decay"].append(p)
            else:
                kinds["no_decay"].append(p)
    decay = {"decay": weight_decay, "depthwise": depthwise_weight_decay, "no_decay": 0.0}
    if backbone_lr_scale == 1.0:
        groups = [dict(params=params, weight_decay=decay[kind]) for kind, params in kinds.items()]
        return [g for g in groups if g["params"]]
    if lr is None:
        raise ValueError("param_groups: backbone_lr_scale needs the base lr")
    head = {id(p) for p in head_module(model).parameters()}
    groups = []
    for part, part_lr in (("head", lr), ("backbone", lr * backbone_lr_scale)):
        for kind, params in kinds.items():
            mine = [p for p in params if (id(p) in head) == (part == "head")]
            groups.append(dict(params=mine, weight_decay=decay[kind], lr=part_lr, name=f"{part}/{kind}"))
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.depthwise_weight_decay, cfg.lr, cfg.backbone_lr_scale)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=cfg.lr, decay=0.9, momentum=cfg.momentum, eps=cfg.rmsprop_eps)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


# --- fine-tuning: which weights train -------------------------------------------------------------------


def head_module(model: nn.Module) -> nn.Module:
    """The classifier (every model here has ``.classifier``); everything else is the backbone."""
    model = _unwrap(model)
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        raise MobileNetsError(
            f"{type(model).__name__} has no .classifier module, so its backbone cannot be told apart; "
            "drop --freeze/--freeze-epochs/--backbone-lr-scale"
        )
    return head


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter outside the classifier."""
    head = {id(p) for p in head_module(model).parameters()}
    return [p for p in _unwrap(model).parameters() if id(p) not in head]


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``requires_grad`` False) or unfreeze every parameter outside the classifier."""
    for p in backbone_parameters(model):
        p.requires_grad_(trainable)


def backbone_bn_eval(model: nn.Module) -> None:
    """Put the backbone's BatchNorm layers in eval mode: a frozen backbone keeps its running statistics.

    Call it after every ``model.train()``, which puts them back in training mode.
    """
    head = set(head_module(model).modules())
    for m in _unwrap(model).modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in head:
            m.eval()


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
        ema_f, model_f = [], []  # floating tensors, lerped together (one foreach launch per kernel on a GPU)
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_f.append(ema_v)
                model_f.append(v.detach())
            else:
                ema_v.copy_(v)
        if ema_f:
            torch._foreach_lerp_(ema_f, model_f, 1 - d)
