"""Configuration of a published sbe model (Hugging Face ``PretrainedConfig``).

This file is copied verbatim into every published model folder and must import without ``sbe``
installed: it depends on ``transformers`` only.

The architecture is stored as the dicts the training run saved (``projector`` is the projector's
own ``config.json``; ``backbone`` is the backbone identity the embeddings were computed with), so
loading never has to infer anything from tensor shapes.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

#: bump when the meaning of a field changes; loaders refuse formats newer than they know
SBE_FORMAT = 1

#: the fields the published projector understands; anything else in a run's projector config
#: means a newer architecture, which must be refused rather than silently dropped
PROJECTOR_FIELDS = frozenset(
    {
        "model_type",
        "input_dim",
        "output_dim",
        "hidden_dim",
        "num_hidden_layers",
        "activation",
        "dropout",
        "layer_norm",
        "residual",
    }
)


class SbeEmbeddingConfig(PretrainedConfig):
    """Frozen backbone (referenced) + projection head (+ optional geo heads).

    Args:
        backbone: the backbone identity dict: ``name`` (``efficientnet-lite0``, ``efficientnet-lite2``
            or ``hf:<id or path>``), ``dim``, ``preprocess`` (``resize``, ``crop``, ``mean``, ``std``
            in 0-255 units) and, for ``hf:`` backbones, ``pooling``.
        projector: the projector config (``input_dim``, ``output_dim``, ``hidden_dim``,
            ``num_hidden_layers``, ``activation``, ``dropout``, ``layer_norm``, ``residual``).
        geo: the geo heads' config dict when the model carries them, else ``None``.
        backbone_bundled: path, relative to the model folder, of a bundled copy of the backbone
            weights; ``None`` = load the backbone from its own source.
        backbone_source: override where the backbone is loaded from (a local path or hub id), e.g.
            ``AutoModel.from_pretrained(folder, trust_remote_code=True, backbone_source="/weights")``.
        sbe_format: layout version of the model folder.
    """

    model_type = "sbe_embedding"

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        projector: dict[str, Any] | None = None,
        geo: dict[str, Any] | None = None,
        backbone_bundled: str | None = None,
        backbone_source: str | None = None,
        sbe_format: int = SBE_FORMAT,
        **kwargs: Any,
    ) -> None:
        self.backbone = dict(backbone or {})
        self.projector = dict(projector or {})
        self.geo = dict(geo) if geo else None
        self.backbone_bundled = backbone_bundled
        self.backbone_source = backbone_source
        self.sbe_format = int(sbe_format)
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        """Size of the output embedding."""
        return int(self.projector["output_dim"])

    def check(self) -> None:
        """Raise ``ValueError`` with a clear message when the config cannot be built."""
        if self.sbe_format > SBE_FORMAT:
            raise ValueError(
                f"model folder format {self.sbe_format} is newer than this code understands "
                f"({SBE_FORMAT}); update the modeling files"
            )
        if not self.backbone.get("name"):
            raise ValueError("config.backbone has no 'name'")
        for key in ("resize", "crop", "mean", "std"):
            if key not in self.backbone.get("preprocess", {}):
                raise ValueError(f"config.backbone.preprocess has no {key!r}")
        unknown = set(self.projector) - PROJECTOR_FIELDS
        if unknown:
            raise ValueError(
                f"projector config has fields this code does not know: {sorted(unknown)}"
            )
        missing = PROJECTOR_FIELDS - {"model_type"} - set(self.projector)
        if missing:
            raise ValueError(f"projector config lacks fields: {sorted(missing)}")
        if int(self.projector["input_dim"]) != int(self.backbone.get("dim", -1)):
            raise ValueError(
                f"projector input_dim {self.projector['input_dim']} != backbone dim "
                f"{self.backbone.get('dim')}"
            )
