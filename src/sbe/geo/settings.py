"""The geo heads' own settings (what ``[geo]`` says about the heads, their loss and labels).

The library does not read the CLI's config schema: stages build a :class:`GeoSettings` from the
``[geo]`` section (:meth:`GeoSettings.of`); the optimisation settings are
:class:`sbe.geo.trainer.FitSettings`. The defaults are those of ``[geo]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sbe.settings import Record


@dataclass(frozen=True)
class GeoSettings(Record):
    """Architecture, MvMF centres, loss weights and label settings of the geo heads.

    Attributes:
        hidden_dim, dropout: the shared trunk.
        background_centres: fixed Fibonacci centres over land beside the data centres.
        centres_per_sample: one data centre per this many unique training locations.
        log_kappa_min, log_kappa_max: the range log κ is clamped to.
        background_log_kappa: initial log κ of the background centres.
        gallery_max: training locations kept as retrieval candidates.
        coastal_fallback_px: climate lookup radius (raster pixels) for points off the land mask.
        location_weight, climate_weight, season_weight: loss weights.
        season_loss: ``von_mises`` or ``cosine``.
        season_hemisphere: the season head predicts the local season (shifted in the south).
        label_smoothing: of the climate classes.
        lr: learning rate of the heads.
        seed: centres (k-means) and initial weights.
    """

    hidden_dim: int = 512
    dropout: float = 0.1
    background_centres: int = 800
    centres_per_sample: int = 10
    log_kappa_min: float = 4.0
    log_kappa_max: float = 16.0
    background_log_kappa: float = 6.5
    gallery_max: int = 20_000
    coastal_fallback_px: int = 5
    location_weight: float = 1.0
    climate_weight: float = 0.5
    season_weight: float = 0.25
    season_loss: Literal["von_mises", "cosine"] = "von_mises"
    season_hemisphere: bool = True
    label_smoothing: float = 0.05
    lr: float = 1e-3
    seed: int = 0
