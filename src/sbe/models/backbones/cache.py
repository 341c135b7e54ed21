"""Where derived model files (safetensors copies of weights, exported ONNX graphs) are cached.

``$SBE_CACHE`` if set, else ``$XDG_CACHE_HOME/sbe``, else ``~/.cache/sbe``. Every file in it is
derived from something else and written atomically, so deleting the folder is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path


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
