"""Typed provenance: which backbone made an output's vectors, and which stages led to it.

Every ``_manifest.json`` carries a :class:`Lineage` (field ``lineage``): the chain of stages
upstream of it (name + config hash, the stage itself last) and the :class:`BackboneIdentity` of
the vectors it holds or was trained on. A stage does not guess provenance from its inputs' JSON
any more: it reads ``ArtifactDir(...).lineage()`` (:mod:`sbe.storage.artifacts`).

No paths are recorded: a lineage stays true when a work folder is moved or copied.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BackboneIdentity(BaseModel):
    """What a downstream stage must know to reproduce a backbone's vectors.

    The dict form (:meth:`to_dict`) is exactly what :meth:`Backbone.identity` returned and what
    ``load_backbone(identity)`` rebuilds from; keys a backbone family adds (``weights``,
    ``revision``, ``model_type``, ``num_prefix_tokens``, ``gem_p``) are kept as they are.

    Attributes:
        name: the spec string (``efficientnet-lite0``, ``hf:<id or path>``).
        dim: embedding dimension D (always recorded by the backbones of this package).
        preprocess: resize/crop/mean/std (``Preprocess.to_dict``), when recorded.
        pooling: the resolved pooling mode, when recorded.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    dim: int | None = None
    preprocess: dict[str, Any] | None = None
    pooling: str | None = None

    @classmethod
    def of(cls, value: Any) -> BackboneIdentity | None:
        """An identity from a recorded dict (``None`` for anything that is not one)."""
        if isinstance(value, BackboneIdentity):
            return value
        if not isinstance(value, dict) or not value.get("name"):
            return None
        try:
            return cls.model_validate(value)
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """The recorded dict, key for key (what config hashes and ``load_backbone`` take)."""
        return self.model_dump(mode="json", exclude_unset=True)

    @property
    def image_size(self) -> int | None:
        """The square crop side in pixels the model reads."""
        return (
            int(self.preprocess["crop"]) if self.preprocess and "crop" in self.preprocess else None
        )

    @property
    def normalisation(self) -> tuple[list[float], list[float]] | None:
        """Per-channel ``(mean, std)`` in 0-255 units."""
        if not self.preprocess or "mean" not in self.preprocess:
            return None
        return list(self.preprocess["mean"]), list(self.preprocess["std"])

    def same_model(self, other: BackboneIdentity) -> bool:
        """Whether two identities give the same vectors space (name and dimension)."""
        return (self.name, self.dim) == (other.name, other.dim)


class LineageStep(BaseModel):
    """One stage of a chain: its name and the config hash it committed with."""

    model_config = ConfigDict(frozen=True)

    stage: str
    config_hash: str


class Lineage(BaseModel):
    """The stages an output descends from, and the backbone of its vectors.

    Attributes:
        steps: upstream stages first, the stage that wrote the manifest last; a stage that read
            several upstream outputs lists each of their chains once (first seen first).
        backbone: the backbone identity, when the chain went through a backbone.
        backbone_weights: the backbone stage's weights fingerprint (file name and size, or a hub
            revision), when recorded.
    """

    steps: list[LineageStep] = Field(default_factory=list)
    backbone: BackboneIdentity | None = None
    backbone_weights: str | None = None

    @property
    def stages(self) -> list[str]:
        """The stage names of the chain, in order."""
        return [s.stage for s in self.steps]

    def step(self, stage: str) -> LineageStep | None:
        """The last step of ``stage`` in the chain (``None`` when it is not upstream)."""
        return next((s for s in reversed(self.steps) if s.stage == stage), None)

    @classmethod
    def merge(cls, parents: list[Lineage]) -> Lineage:
        """One lineage from several inputs' lineages (steps deduplicated, first backbone wins)."""
        steps: list[LineageStep] = []
        for p in parents:
            steps += [s for s in p.steps if s not in steps]
        backbone = next((p.backbone for p in parents if p.backbone is not None), None)
        weights = next((p.backbone_weights for p in parents if p.backbone is not None), None)
        return cls(steps=steps, backbone=backbone, backbone_weights=weights)

    def then(
        self,
        stage: str,
        config_hash: str,
        backbone: BackboneIdentity | None = None,
        backbone_weights: str | None = None,
    ) -> Lineage:
        """This lineage extended by ``stage`` (which may set the backbone: the backbone stage)."""
        return Lineage(
            steps=[*self.steps, LineageStep(stage=stage, config_hash=config_hash)],
            backbone=backbone if backbone is not None else self.backbone,
            backbone_weights=backbone_weights if backbone is not None else self.backbone_weights,
        )
