"""The projector trainer's own settings (what ``[train]`` holds, minus its paths).

The library does not read the CLI's config schema: the train stage builds a
:class:`TrainSettings` from its section (:meth:`TrainSettings.of`), and Python callers may build
one directly. The defaults are those of ``[train]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sbe.settings import Record

Distance = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class LossSettings:
    """Hyper-parameters any registered loss may read.

    Attributes:
        margin: triplet margin (in the units of ``distance``); also the margin of
            :func:`informative_triplets`.
        distance: ``cosine`` (1 - cos) or ``euclidean`` (on unit vectors) for the triplet loss.
        ms_alpha, ms_beta, ms_base: multi-similarity loss weights and similarity offset.
        ms_epsilon: multi-similarity miner slack.
        temperature: supervised-contrastive temperature.
    """

    margin: float = 0.45
    distance: Distance = "euclidean"
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5
    ms_epsilon: float = 0.1
    temperature: float = 0.1


@dataclass(frozen=True)
class TrainSettings(LossSettings, Record):
    """Head, loss, sampler and optimiser settings of one projector training (the loss's own
    hyper-parameters are those of :class:`LossSettings`, which it extends).

    See ``docs/training.md`` for what each does; ``device`` and ``log_every`` say how, not what
    (they may change between an interrupted run and its resume).
    """

    # projection head
    output_dim: int = 256
    hidden_dim: int = 1024
    num_hidden_layers: int = 1
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    dropout: float = 0.1
    layer_norm: bool = True
    residual: bool = True
    residual_init: Literal["random", "pca", "whitening"] = "whitening"
    whitening_shrinkage: float = 0.1
    residual_lr_scale: float = 1.0
    # loss (the rest of its settings: LossSettings) and sampling
    loss: Literal["triplet", "multi_similarity", "supcon"] = "supcon"
    identities_per_batch: int = 64
    images_per_identity: int = 4
    curriculum: Literal["none", "bands"] = "none"
    ucb_exploration: float = 0.05
    ucb_warmup_steps: int = 50
    # optimisation
    epochs: int = 30
    steps_per_epoch: int = 0
    min_steps_per_epoch: int = 50
    lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    amp: bool = True
    patience: int = 5
    val_queries: int = 2000
    log_every: int = 50
    geo_weight: float = 0.0
    device: str = "auto"
    seed: int = 0
