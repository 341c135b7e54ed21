"""Training loop of the geo heads on frozen embeddings held in memory.

AdamW (no weight decay on biases, norms and log κ), linear warm-up then cosine decay (the schedule
of :mod:`sbe.training.schedule`, shared with the projector's trainer), gradient clipping, log κ
clamped after every step, early stopping on the validation loss (default) or on the validation
median location error, seeded shuffling. The best epoch's weights are restored at the end.

Resumable: with a checkpoint folder, every epoch ends by rewriting it as a whole (temp folder +
renames): current and best weights, AdamW state, scheduler, the shuffling generator and the torch
RNG states, counters and the epoch records. A fit started again on the same folder with the same
key continues after the last finished epoch and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sbe.device import resolve_device
from sbe.geo.heads import GeoHeads
from sbe.geo.labels import GeoLabels
from sbe.geo.loss import GeoLoss
from sbe.sphere import haversine_km, unit_to_latlon
from sbe.training.checkpoint import (
    optimisation_state,
    read_state_files,
    recover_dir,
    restore_optimizer_scheduler,
    restore_rng_tensors,
    rng_tensors,
    write_dir_atomic,
    write_state_files,
)
from sbe.training.schedule import FitResult, decay_param_groups, warmup_cosine_scheduler
from sbe.training.schedule import warmup_cosine as _warmup_cosine

STATE_NAME = "fit_state.json"
TENSORS_NAME = "fit_state.safetensors"
FILES = (TENSORS_NAME, STATE_NAME)


@dataclass
class FitSettings:
    """Optimisation settings of :func:`fit` (the ``[geo]`` fields of the same names)."""

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


param_groups = decay_param_groups  # the name callers know


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier at ``step`` (see :func:`sbe.training.schedule.warmup_cosine`)."""
    return _warmup_cosine(warmup, total)(step)


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


def _state_tensors(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_fit_checkpoint(
    directory: str | os.PathLike[str],
    *,
    key: str,
    heads: GeoHeads,
    best_state: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    """Write everything :func:`fit` needs to continue, as one folder swapped in atomically.

    Args:
        directory: the checkpoint folder (replaced as a whole).
        key: identifies the run; :func:`fit` resumes only from a checkpoint with its key.
        heads: the model now. best_state: the best epoch's weights so far.
        optimizer, scheduler, generator: the optimisation objects and the shuffling generator.
        state: JSON-ready counters (epoch, best score, patience, records).
    """
    opt_tensors, opt_payload = optimisation_state(optimizer, scheduler)
    tensors = {
        **{f"heads.{k}": v for k, v in _state_tensors(heads).items()},
        **{f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()},
        **opt_tensors,
        **rng_tensors(),
        "rng.generator": generator.get_state(),
    }
    payload = {"key": key, "fit": state, **opt_payload}

    def fill(tmp: Path) -> None:
        write_state_files(tmp, tensors, payload, FILES)

    write_dir_atomic(directory, fill)


def fit_checkpoint_key(directory: str | os.PathLike[str]) -> str | None:
    """The key of the checkpoint in ``directory`` (``None``: none, or unreadable)."""
    path = Path(directory) / STATE_NAME
    try:
        key = json.loads(path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, str) and (Path(directory) / TENSORS_NAME).is_file() else None


def _load_fit_checkpoint(
    directory: Path,
    heads: GeoHeads,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Restore a checkpoint into the live objects; returns ``(state, best_state)``."""
    tensors, payload = read_state_files(directory, FILES)
    device = next(heads.parameters()).device
    heads.load_state_dict(
        {k[len("heads.") :]: v.to(device) for k, v in tensors.items() if k.startswith("heads.")}
    )
    best_state = {
        k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")
    }
    restore_optimizer_scheduler(optimizer, scheduler, tensors, payload, device)
    generator.set_state(tensors["rng.generator"])
    restore_rng_tensors(tensors)
    return payload["fit"], best_state


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
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_key: str = "",
    on_resume: Callable[[list[dict[str, Any]]], None] | None = None,
) -> FitResult:
    """Train ``heads`` in place and leave them at the best validation epoch.

    Args:
        heads: the model (centres and gallery already installed).
        train_x, val_x: (N, D) float32 features. train_labels, val_labels: their labels.
        criterion: the loss.
        settings: optimisation settings.
        on_epoch: called with each epoch's record (for metrics.jsonl and progress).
        median_km: scores the heads on the validation set when ``select_on == "median_km"``.
        checkpoint: a folder rewritten after every epoch (``None`` = no checkpoints). When it
            already holds a checkpoint with ``checkpoint_key``, the fit continues after its epoch
            (a checkpoint with another key is ignored and replaced).
        checkpoint_key: identifies what is trained (data, heads and settings); the stage passes
            its config hash.
        on_resume: called once with the records of the epochs a resumed fit starts after.

    Returns:
        :class:`~sbe.training.schedule.FitResult` (``history``: every epoch, resumed ones too).
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    heads.to(device)
    opt = torch.optim.AdamW(decay_param_groups(heads, settings.weight_decay), lr=settings.lr)
    n = len(train_labels)
    steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
    total = steps_per_epoch * settings.epochs
    warmup = min(settings.warmup_steps, total // 5)
    sched = warmup_cosine_scheduler(opt, warmup, total)
    best_score, best_epoch, best_state = math.inf, 0, copy.deepcopy(heads.state_dict())
    history: list[dict[str, Any]] = []
    bad_epochs = 0
    stopped = False
    start = 1
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        recover_dir(ckpt)
        if fit_checkpoint_key(ckpt) == checkpoint_key:
            st, best_state = _load_fit_checkpoint(ckpt, heads, opt, sched, gen)
            start = int(st["epoch"]) + 1
            best_score, best_epoch = float(st["best_score"]), int(st["best_epoch"])
            bad_epochs, stopped = int(st["bad_epochs"]), bool(st["stopped"])
            history = list(st["history"])
            if on_resume is not None:
                on_resume(list(history))
    for epoch in range(start, settings.epochs + 1):
        if stopped:
            break
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
        if ckpt is not None:
            save_fit_checkpoint(
                ckpt,
                key=checkpoint_key,
                heads=heads,
                best_state=best_state,
                optimizer=opt,
                scheduler=sched,
                generator=gen,
                state={
                    "epoch": epoch,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                    "history": history,
                    "settings": dataclasses.asdict(settings),
                },
            )
    heads.load_state_dict(best_state)
    heads.eval()
    return FitResult(
        best_score=best_score,
        best_epoch=best_epoch,
        epochs_completed=len(history),
        stopped_early=stopped,
        history=history,
    )
