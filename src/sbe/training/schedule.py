"""What both trainers share: the warm-up + cosine learning-rate schedule, parameter groups, and
the record a fit returns.

Used by the projector's :class:`sbe.training.loop.Trainer` and by the geo heads'
:func:`sbe.geo.trainer.fit`, so that the two optimise with the same schedule arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimiser step: linear warm-up from 0 to 1, then cosine decay to 0.

    Args:
        warmup_steps: steps of the linear ramp (0 = none); step ``s < warmup_steps`` gets
            ``(s + 1) / warmup_steps``.
        total_steps: the step at which the multiplier reaches 0 (held there afterwards).

    Returns:
        ``f(step) -> multiplier`` for :class:`torch.optim.lr_scheduler.LambdaLR`.
    """

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return f


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`warmup_cosine`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps))


def residual_param_groups(
    model: torch.nn.Module, lr: float, residual_lr_scale: float
) -> list[dict[str, Any]]:
    """Projector groups: the MLP at ``lr``; the residual path at ``lr * residual_lr_scale``.

    Adam moves every weight by about ``lr`` per step whatever the gradient's size, which quickly
    erases a closed-form residual initialisation whose weights are small; a smaller rate there
    keeps it while the MLP learns corrections. A scale of 0 freezes the residual path.

    Args:
        model: a module with an optional ``residual`` sub-module (a Linear) or ``None``.
        lr: the base learning rate.
        residual_lr_scale: the residual path's rate relative to ``lr``.
    """
    res = getattr(model, "residual", None)
    residual = list(res.parameters()) if res is not None else []
    ids = {id(p) for p in residual}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}
    ]
    if residual:
        for p in residual:
            p.requires_grad_(residual_lr_scale > 0)
        if residual_lr_scale > 0:
            groups.append({"params": residual, "lr": lr * residual_lr_scale})
    return groups


def decay_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only (not biases, norms or learned log κ)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "log_kappa" not in name else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@dataclass
class FitResult:
    """What a fit did.

    Attributes:
        best_score: the selected epoch's validation score (higher-is-better mAP@R for the
            projector; lower-is-better loss or km for the geo heads).
        best_epoch: the selected epoch (0 = the initial model, where that is a candidate).
        epochs_completed: epochs trained so far (a resumed fit counts the earlier ones too).
        stopped_early: patience ran out.
        baseline: the projector trainer's raw-backbone validation metrics (empty elsewhere).
        history: per-epoch records (this call's epochs, or all of them where resumed records
            are kept, as the geo trainer does).
    """

    best_score: float
    best_epoch: int
    epochs_completed: int = 0
    stopped_early: bool = False
    baseline: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
