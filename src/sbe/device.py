"""Where computation runs: the torch device a setting names, and the CPU cores this process may use.

Deliberately light: importing this module does not import torch (decoder worker processes and the
ingest stage count cores without it); :func:`resolve_device` imports torch when called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sbe.errors import SbeError

if TYPE_CHECKING:
    import torch

#: device types the project runs on
DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device a ``device`` setting names.

    Args:
        device: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The ``torch.device``.

    Raises:
        SbeError: an unknown device name, or a CUDA device when torch sees no GPU.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SbeError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in DEVICE_TYPES:
        raise SbeError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SbeError(
            f"device {device!r} requested but torch sees no GPU (CUDA is not available); "
            "use --device cpu or auto"
        )
    return dev


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask (taskset, cgroup cpusets), not the
    machine's count, so a pinned or containerised run does not oversubscribe.

    Returns:
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux (macOS, Windows)
        return max(1, os.cpu_count() or 1)
