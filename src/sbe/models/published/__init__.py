"""Published models: the Hugging Face classes copied into model folders, and the embedding API.

The classes themselves live in :mod:`sbe.modelcode` (self-contained: ``sbe publish`` copies those
files into the model folder for ``AutoModel.from_pretrained(..., trust_remote_code=True)``).

The names below load on first use: ``processing_sbe`` (numpy + Pillow) is imported by decoder
worker processes, which must not pay for importing torch and transformers through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SbeEmbeddingConfig": "sbe.modelcode.configuration_sbe",
    "Embedder": "sbe.models.published.embedder",
    "load_embedder": "sbe.models.published.embedder",
    "model_fingerprint": "sbe.models.published.embedder",
    "model_identity": "sbe.models.published.embedder",
    "SbeEmbeddingModel": "sbe.modelcode.modeling_sbe",
    "SbeEmbeddingOutput": "sbe.modelcode.modeling_sbe",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
