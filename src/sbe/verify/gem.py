"""Generalised-mean (GeM) pooling of a conv feature map, fixed or with a learnable exponent.

``GeM(x) = (mean_hw clamp(x, eps) ** p) ** (1 / p)`` per channel (Radenović, Tolias, Chum,
"Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018): p = 1 is average pooling,
p -> inf max pooling; p = 3 is the usual fixed choice for retrieval. The learnable form trains
``p`` by gradient (one scalar, kept >= 1).

The EfficientNet-Lite backbones pool with a fixed exponent when asked for ``pooling="gem"``
(``[backbone] gem_p``, :func:`sbe.models.backbones.pooling.gem`); :func:`fit_gem_exponent` is how
a value for that setting is learned from labelled images (``benchmarks/pooling_resolution.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbe.models.backbones.pooling import GEM_EPS, GEM_P, gem
from sbe.settings import Record
from sbe.training.losses import LossSettings, build_loss
from sbe.training.samplers import PKSampler


class GeM(nn.Module):
    """GeM pooling of (B, C, H, W) -> (B, C).

    Args:
        p: the exponent (initial value when learnable).
        learnable: train ``p`` (a parameter) or keep it fixed (a buffer).
        eps: lower clamp of the activations (keeps the power and root defined).
    """

    def __init__(self, p: float = GEM_P, learnable: bool = False, eps: float = GEM_EPS) -> None:
        super().__init__()
        if p < 1:
            raise ValueError(f"GeM exponent must be >= 1, got {p}")
        t = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(t)
        else:
            self.register_buffer("p", t)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GeM expects (B, C, H, W), got {tuple(x.shape)}")
        # the pooling the backbones ship (sbe.modelcode), with this layer's exponent
        return gem(x.float().flatten(2).transpose(1, 2), self.p.clamp(min=1.0), self.eps)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.3f}, learnable={isinstance(self.p, nn.Parameter)}"


@dataclass(frozen=True)
class GemFitSettings(Record):
    """How :func:`fit_gem_exponent` trains.

    Attributes:
        p_init: the starting exponent. p_max: the largest exponent allowed.
        loss: a registered loss name (``supcon``, ``multi_similarity``, ``triplet``).
        loss_settings: its hyper-parameters (default: :class:`LossSettings`'s); with
            ``learn_temperature`` the supcon temperature is the starting value.
        learn_temperature: train the supcon temperature with ``p`` (ignored for other losses).
        identities_per_batch, images_per_identity: P and K of each batch.
        steps: optimisation steps. lr: AdamW learning rate (units of ``p`` per step, roughly).
        seed: seeds the batches and torch (the result is deterministic under a seed on CPU).
    """

    p_init: float = GEM_P
    p_max: float = 16.0
    loss: str = "supcon"
    loss_settings: LossSettings | None = None
    learn_temperature: bool = True
    identities_per_batch: int = 16
    images_per_identity: int = 4
    steps: int = 300
    lr: float = 0.05
    seed: int = 0


def fit_gem_exponent(
    feature_maps: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    settings: GemFitSettings | None = None,
) -> float:
    """Learn the GeM exponent that best separates identities, from labelled conv feature maps.

    ``p`` trains (``GeM(learnable=True)``, AdamW, no weight decay: decay would pull ``p`` toward
    0, a meaningless value); the pooled vectors are L2-normalised and scored by a metric loss of
    :mod:`sbe.training.losses` on P x K batches (:class:`~sbe.training.samplers.PKSampler`).
    After each step ``p`` is projected back into ``[1, p_max]`` (1 = average pooling).

    With ``supcon`` the softmax temperature trains too (``learn_temperature``): raw backbone
    cosines all lie within a few hundredths of each other, and ``p`` changes that spread, so with
    a fixed temperature the loss can fall just by compressing or stretching every similarity. On
    EfficientNet-Lite0 features of the demo's train split a fixed 0.1 drove ``p`` to 1, 0.03 to
    7.3; a learned temperature settles near 0.07 from either start and ``p`` with it
    (``docs/verify.md``). The softmax ignores a shift of an anchor's similarities, so with the
    scale learned the loss scores how ``p`` separates identities, not how it moves the scale.

    Args:
        feature_maps: (N, C, H, W) non-negative conv features (any float dtype; e.g. the
            EfficientNet-Lite last conv layer, float16 to save memory).
        labels: (N,) identity of each map (any integers; identities with one map only serve as
            negatives).
        settings: :class:`GemFitSettings` (default: its defaults).

    Returns:
        The learned exponent, in ``[1, p_max]``.

    Raises:
        ValueError: shapes that disagree, or fewer than 2 identities with 2 or more maps.
    """
    f = settings or GemFitSettings()
    maps = torch.as_tensor(feature_maps)
    labels = np.asarray(labels)
    if maps.dim() != 4 or len(labels) != maps.shape[0]:
        raise ValueError(
            f"fit_gem_exponent needs (N, C, H, W) maps and N labels, got {tuple(maps.shape)} "
            f"and {labels.shape}"
        )
    if not 1.0 <= f.p_init <= f.p_max:
        raise ValueError(f"p_init must lie in [1, p_max={f.p_max}], got {f.p_init}")
    torch.manual_seed(f.seed)
    rng = np.random.default_rng(f.seed)
    sampler = PKSampler(
        labels, f.identities_per_batch, f.images_per_identity, steps_per_epoch=f.steps
    )
    sampler.start_epoch(rng)
    gem = GeM(f.p_init, learnable=True)
    loss_settings = f.loss_settings or LossSettings()
    criterion = build_loss(f.loss, loss_settings)
    params = list(gem.parameters())
    log_t: nn.Parameter | None = None
    # pytorch-metric-learning's SupConLoss divides by its `temperature` attribute: a tensor trains
    supcon: Any = criterion.loss if f.loss == "supcon" else None
    if f.learn_temperature and supcon is not None:
        log_t = nn.Parameter(torch.tensor(float(np.log(loss_settings.temperature))))
        params.append(log_t)
    opt = torch.optim.AdamW(params, lr=f.lr, weight_decay=0.0)
    for _ in range(f.steps):
        batch = sampler.sample(rng)
        rows = torch.from_numpy(batch.rows)
        x = maps[rows].float()
        emb = F.normalize(gem(x), dim=1)
        y = torch.from_numpy(batch.labels)
        triplets = (
            torch.from_numpy(batch.anchors),
            torch.from_numpy(batch.positives),
            torch.from_numpy(batch.negatives),
        )
        if log_t is not None:
            supcon.temperature = log_t.exp()
        value = criterion(emb, y, triplets)
        if not torch.isfinite(value):
            raise FloatingPointError(f"fit_gem_exponent: the loss became {float(value)}")
        opt.zero_grad()
        value.backward()
        opt.step()
        with torch.no_grad():
            gem.p.clamp_(1.0, f.p_max)
    return float(gem.p.detach())
