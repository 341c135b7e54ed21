"""Training loop of the geo heads on frozen embeddings held in memory.

AdamW (no weight decay on biases, norms and log κ), linear warm-up then cosine decay, gradient
clipping, log κ clamped after every step, early stopping on the validation loss (default) or on the
validation median location error, seeded shuffling. The best epoch's weights are restored at the end.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sbe.device import resolve_device
from sbe.geo.heads import GeoHeads
from sbe.geo.labels import GeoLabels
from sbe.geo.loss import GeoLoss
from sbe.sphere import haversine_km, unit_to_latlon


@dataclass
class FitSettings:
    """Optimisation settings of :func:`fit` (see ``GeoConfig`` for their meaning)."""

    epochs: int = 40
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    patience: int = 8
    select_on: Literal["loss", "median_km"] = "loss"
    seed: int = 0
    device: str = "auto"


@dataclass
class FitResult:
    """What :func:`fit` did: best epoch (1-based), its validation score, per-epoch records."""

    best_epoch: int
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (0 = leave torch's setting), then restore.

    The heads are small: on a busy 2-core machine one thread was 20x faster in wall time than
    two, whose per-op hand-offs wait for a second core that other processes hold.
    """
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only (not biases, norms or log κ)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "log_kappa" not in name else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_loss(
    heads: GeoHeads,
    x: Tensor,
    labels: GeoLabels,
    criterion: GeoLoss,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean loss and parts over a whole set, plus the median error of the top-weight centre."""
    heads.eval()
    device = next(heads.parameters()).device
    sums: dict[str, float] = {}
    n = len(labels)
    top_centre = []
    for s in range(0, n, batch_size):
        xb = x[s : s + batch_size].to(device)
        lb = labels[slice(s, s + batch_size)].to(device)
        out = heads(xb)
        loss, parts = criterion(out, lb)
        w = len(lb) / n
        sums["loss"] = sums.get("loss", 0.0) + float(loss) * w
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * w
        top_centre.append(out.centres[out.location_logits.argmax(dim=1)].cpu())
    if n:
        plat, plon = unit_to_latlon(torch.cat(top_centre).numpy())
        tlat, tlon = unit_to_latlon(labels.xyz.numpy())
        sums["median_km_top_centre"] = float(np.median(haversine_km(plat, plon, tlat, tlon)))
    return sums


def fit(
    heads: GeoHeads,
    train_x: Tensor,
    train_labels: GeoLabels,
    val_x: Tensor,
    val_labels: GeoLabels,
    criterion: GeoLoss,
    settings: FitSettings,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    median_km: Callable[[GeoHeads], float] | None = None,
) -> FitResult:
    """Train ``heads`` in place and leave them at the best validation epoch.

    Args:
        heads: the model (centres and gallery already installed).
        train_x, val_x: (N, D) float32 features. train_labels, val_labels: their labels.
        criterion: the loss.
        settings: optimisation settings.
        on_epoch: called with each epoch's record (for metrics.jsonl and progress).
        median_km: scores the heads on the validation set when ``select_on == "median_km"``.

    Returns:
        :class:`FitResult`.
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    heads.to(device)
    opt = torch.optim.AdamW(param_groups(heads, settings.weight_decay), lr=settings.lr)
    n = len(train_labels)
    steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
    total = steps_per_epoch * settings.epochs
    warmup = min(settings.warmup_steps, total // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, warmup, total))
    best_score, best_epoch, best_state = math.inf, 0, copy.deepcopy(heads.state_dict())
    history: list[dict[str, Any]] = []
    bad_epochs = 0
    stopped = False
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        heads.train()
        order = torch.randperm(n, generator=gen)
        run_loss = 0.0
        for s in range(0, n, settings.batch_size):
            idx = order[s : s + settings.batch_size]
            out = heads(train_x[idx].to(device))
            loss, _ = criterion(out, train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            heads.clamp_()
            run_loss += loss.item() * len(idx) / n
        val = evaluate_loss(heads, val_x, val_labels, criterion)
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": run_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "lr": sched.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if settings.select_on == "median_km":
            if median_km is None:
                raise ValueError("select_on='median_km' needs a median_km scorer")
            record["val_median_km"] = median_km(heads)
            score = record["val_median_km"]
        else:
            score = val["loss"]
        improved = score < best_score - 1e-6
        if improved:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = copy.deepcopy(heads.state_dict())
        else:
            bad_epochs += 1
        record["best"] = improved
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if settings.patience and bad_epochs >= settings.patience:
            stopped = True
            break
    heads.load_state_dict(best_state)
    heads.eval()
    return FitResult(best_epoch, best_score, history, stopped)
