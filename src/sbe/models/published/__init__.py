"""Published models: the Hugging Face classes copied into model folders, and the embedding API.

``configuration_sbe.py``, ``layers_sbe.py``, ``processing_sbe.py`` and ``modeling_sbe.py`` are
self-contained (no ``sbe`` imports) because ``sbe publish`` copies them into the model folder for
``AutoModel.from_pretrained(..., trust_remote_code=True)``.

The names below load on first use: ``processing_sbe`` (numpy + Pillow) is imported by decoder
worker processes, which must not pay for importing torch and transformers through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SbeEmbeddingConfig": "configuration_sbe",
    "Embedder": "embedder",
    "load_embedder": "embedder",
    "model_fingerprint": "embedder",
    "model_identity": "embedder",
    "SbeEmbeddingModel": "modeling_sbe",
    "SbeEmbeddingOutput": "modeling_sbe",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
