"""Resumable training checkpoints without pickle.

A checkpoint is a folder:

- ``config.json`` + ``model.safetensors``: the projector (``Projector.save_pretrained``);
- ``optimizer.safetensors``: every optimiser state tensor and the torch RNG states;
- ``trainer_state.json``: optimiser hyper-parameters and step counters, the scheduler state,
  the numpy generator state, epoch, best score, patience, bandit statistics.

The folder is written under a temporary name and swapped in with renames, so a kill at any moment
leaves either the previous checkpoint or the new one (:func:`recover_dir` finishes an interrupted
swap).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sbe.models.projector import Projector
from sbe.storage import atomic_path

STATE_NAME = "trainer_state.json"
TENSORS_NAME = "optimizer.safetensors"
EXTRA_NAME = "extra.safetensors"  # a jointly trained module (e.g. geo heads)
FILES = (TENSORS_NAME, STATE_NAME)


def _old_name(final: Path) -> Path:
    return final.parent / f".old-{final.name}"


def write_dir_atomic(final: str | os.PathLike[str], fill: Callable[[Path], None]) -> None:
    """Create folder ``final`` as a whole: ``fill(tmp_dir)`` writes it, then two renames swap it in.

    Between the renames only ``.old-<name>`` exists; :func:`recover_dir` puts it back.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        old = _old_name(final)
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def recover_dir(final: str | os.PathLike[str]) -> None:
    """Finish a swap interrupted by a kill and drop temp folders of dead writers.

    Call only while holding the run folder's lock.
    """
    final = Path(final)
    old = _old_name(final)
    if not final.exists() and old.exists():
        os.replace(old, final)
    elif old.exists():
        shutil.rmtree(old)
    for stale in final.parent.glob(f".tmp-{final.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale)


def optimizer_split(
    opt: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, vals in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(vals)
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def restore_optimizer_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    tensors: dict[str, torch.Tensor],
    payload: dict[str, Any],
    device: torch.device,
) -> None:
    """Load optimiser and scheduler state saved by :func:`optimizer_split` and the scheduler's
    ``state_dict``.

    Args:
        tensors: the checkpoint's tensors (``optimizer.*`` entries are read).
        payload: the checkpoint's JSON state (``optimizer`` and ``scheduler`` entries are read).
        device: where the parameters live; state tensors (all but ``step``) are moved there.
    """
    optimizer.load_state_dict(optimizer_join(tensors, payload["optimizer"]))
    for st in optimizer.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)
    sched = scheduler.state_dict()
    sched.update(payload["scheduler"])
    scheduler.load_state_dict(sched)


def rng_tensors() -> dict[str, torch.Tensor]:
    """The torch RNG states (CPU and every CUDA device) as uint8 tensors."""
    out = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng_tensors(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def optimisation_state(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimiser's state tensors, and the JSON entries ``optimizer`` and ``scheduler``
    (:func:`restore_optimizer_scheduler` reads both back)."""
    opt_tensors, opt_meta = optimizer_split(optimizer)
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    return opt_tensors, {"optimizer": opt_meta, "scheduler": sched}


def write_state_files(
    folder: Path, tensors: dict[str, torch.Tensor], payload: dict[str, Any], names: tuple[str, str]
) -> None:
    """Write a checkpoint's tensors (safetensors) and JSON state, each atomically.

    Args:
        folder: the (temporary) checkpoint folder.
        names: ``(tensors file, JSON file)``.
    """
    with atomic_path(folder / names[0]) as t:
        save_file(tensors, str(t))
    with atomic_path(folder / names[1]) as t:
        t.write_text(json.dumps(payload, indent=1) + "\n")


def read_state_files(
    folder: Path, names: tuple[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors on the CPU, JSON state)`` written by :func:`write_state_files`."""
    tensors = load_file(str(folder / names[0]), device="cpu")
    return tensors, json.loads((folder / names[1]).read_text())


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model: Projector,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    state: dict[str, Any],
    extra: torch.nn.Module | None = None,
) -> None:
    """Write a complete, resumable checkpoint folder atomically.

    Args:
        directory: the checkpoint folder (replaced as a whole).
        model, optimizer, scheduler: the training objects.
        rng: the numpy generator the sampler draws from.
        state: JSON-serialisable trainer state (epoch, best score, patience, bandit, ...).
        extra: another trained module (e.g. joint geo heads), saved as ``extra.safetensors``.
    """
    opt_tensors, opt_payload = optimisation_state(optimizer, scheduler)
    payload = {"trainer": state, **opt_payload, "numpy_rng": rng.bit_generator.state}

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if extra is not None:
            with atomic_path(tmp / EXTRA_NAME) as t:
                save_file({k: v.contiguous() for k, v in extra.state_dict().items()}, str(t))
        write_state_files(tmp, {**opt_tensors, **rng_tensors()}, payload, FILES)

    write_dir_atomic(directory, fill)


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model: Projector,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    restore_rng: bool = True,
    extra: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote into live objects.

    Returns:
        The trainer ``state`` dict that was saved.
    """
    directory = Path(directory)
    loaded = Projector.from_pretrained(directory)
    if loaded.config != model.config:
        raise ValueError(
            f"checkpoint architecture {loaded.config} differs from the configured {model.config}"
        )
    model.load_state_dict(loaded.state_dict())
    if extra is not None:
        device = next(extra.parameters()).device
        extra.load_state_dict(load_file(str(directory / EXTRA_NAME), device=str(device)))
    tensors, payload = read_state_files(directory, FILES)
    device = next(model.parameters()).device
    restore_optimizer_scheduler(optimizer, scheduler, tensors, payload, device)
    rng.bit_generator.state = payload["numpy_rng"]
    if restore_rng:
        restore_rng_tensors(tensors)
    return payload["trainer"]
