"""Metric-learning losses behind one small interface, mostly from pytorch-metric-learning.

A loss sees the whole batch: ``loss(embeddings, labels, triplets)`` where ``triplets`` are the
sampler's explicit (anchor, positive, negative) positions. The triplet recipe uses exactly those
triplets; the many-negative losses mine every pair in the batch (the sampler's band negatives are
part of the batch, so they take part as extra hard negatives).

Adding a loss is a few lines::

    @register("my_loss")
    def _my_loss(s: LossSettings) -> EmbeddingLoss:
        return PMLBatchLoss(losses.SomeLoss(...))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_metric_learning import distances, losses, miners
from torch import nn

from sbe.training.settings import Distance, LossSettings

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class EmbeddingLoss(nn.Module):
    """Interface: ``forward(embeddings (B, d), labels (B,), triplets) -> scalar loss``."""

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets
    ) -> torch.Tensor:
        raise NotImplementedError


class TripletLoss(EmbeddingLoss):
    """Triplet margin loss on the sampler's explicit triplets (the reference recipe)."""

    def __init__(self, margin: float, distance: Distance) -> None:
        super().__init__()
        self.loss = losses.TripletMarginLoss(margin=margin, distance=_pml_distance(distance))

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets
    ) -> torch.Tensor:
        return self.loss(embeddings, labels, indices_tuple=triplets)


class PMLBatchLoss(EmbeddingLoss):
    """A pytorch-metric-learning loss over all pairs of the batch, optionally after a miner."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets
    ) -> torch.Tensor:
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, indices_tuple=pairs)


LOSSES: dict[str, Callable[[LossSettings], EmbeddingLoss]] = {}


def register(name: str) -> Callable[[Callable[[LossSettings], EmbeddingLoss]], Callable]:
    """Decorator adding a loss factory under ``name``."""

    def deco(factory: Callable[[LossSettings], EmbeddingLoss]) -> Callable:
        LOSSES[name] = factory
        return factory

    return deco


@register("triplet")
def _triplet(s: LossSettings) -> EmbeddingLoss:
    return TripletLoss(s.margin, s.distance)


@register("multi_similarity")
def _multi_similarity(s: LossSettings) -> EmbeddingLoss:
    return PMLBatchLoss(
        losses.MultiSimilarityLoss(alpha=s.ms_alpha, beta=s.ms_beta, base=s.ms_base),
        miners.MultiSimilarityMiner(epsilon=s.ms_epsilon),
    )


@register("supcon")
def _supcon(s: LossSettings) -> EmbeddingLoss:
    return PMLBatchLoss(losses.SupConLoss(temperature=s.temperature))


def build_loss(name: str, settings: LossSettings | None = None) -> EmbeddingLoss:
    """The registered loss ``name`` built with ``settings``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name](settings or LossSettings())


def _pml_distance(distance: Distance) -> distances.BaseDistance:
    if distance == "cosine":
        return distances.CosineSimilarity()
    if distance == "euclidean":
        return distances.LpDistance(normalize_embeddings=True, p=2)
    raise ValueError(f"unknown distance {distance!r}")


@torch.no_grad()
def informative_triplets(
    embeddings: torch.Tensor, triplets: Triplets, margin: float, distance: Distance
) -> torch.Tensor:
    """Which triplets still violate the margin (non-zero triplet loss), whatever loss is trained.

    Args:
        embeddings: (B, d) unit rows.
        triplets: anchor, positive, negative positions, each (T,).
        margin: the margin in ``distance`` units.
        distance: ``cosine`` (1 - cos) or ``euclidean``.

    Returns:
        bool tensor (T,).
    """
    a, p, n = (embeddings[t] for t in triplets)
    if distance == "cosine":
        d_ap = 1 - (a * p).sum(-1)
        d_an = 1 - (a * n).sum(-1)
    else:
        d_ap = (a - p).norm(dim=-1)
        d_an = (a - n).norm(dim=-1)
    return (d_ap - d_an + margin) > 0
