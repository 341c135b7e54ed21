"""Published models: the Hugging Face classes copied into model folders, and the embedding API.

``configuration_sbe.py`` and ``modeling_sbe.py`` are self-contained (no ``sbe`` imports) because
``sbe publish`` copies them into the model folder for ``AutoModel.from_pretrained(...,
trust_remote_code=True)``.
"""

from sbe.models.published.configuration_sbe import SbeEmbeddingConfig
from sbe.models.published.embedder import (
    Embedder,
    load_embedder,
    model_fingerprint,
    model_identity,
)
from sbe.models.published.modeling_sbe import SbeEmbeddingModel, SbeEmbeddingOutput

__all__ = [
    "Embedder",
    "SbeEmbeddingConfig",
    "SbeEmbeddingModel",
    "SbeEmbeddingOutput",
    "load_embedder",
    "model_fingerprint",
    "model_identity",
]
