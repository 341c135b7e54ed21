"""Build the geo heads and their loss from :class:`GeoSettings` and the training coordinates.

One entry point for ``sbe geo train`` and for any other training loop (e.g. joint training with
the projector):

    geo_cfg = GeoSettings()                         # or GeoSettings.of(config.geo)
    heads = heads_from_config(geo_cfg, train_lat, train_lon, in_dim=256)
    criterion = loss_from_config(geo_cfg)
    labels = labels_from_table(train_table)                 # sbe.geo.labels
    loss, parts = criterion(heads(features[idx]), labels[idx])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbe.geo.heads import GeoHeads, GeoHeadsConfig
from sbe.geo.loss import GeoLoss
from sbe.geo.mvmf import build_centres, dedup_locations
from sbe.geo.settings import GeoSettings


def gallery_locations(lat_deg: np.ndarray, lon_deg: np.ndarray, limit: int) -> np.ndarray:
    """Deduplicated training locations (100 m grid), evenly thinned to at most ``limit``.

    Returns:
        float64 (P, 3) unit vectors.
    """
    uniq, _ = dedup_locations(lat_deg, lon_deg)
    if len(uniq) > limit:
        uniq = uniq[np.linspace(0, len(uniq) - 1, limit).astype(np.int64)]
    return uniq


def heads_from_config(
    cfg: GeoSettings | Any,
    train_lat: np.ndarray,
    train_lon: np.ndarray,
    in_dim: int,
    **config_fields: Any,
) -> GeoHeads:
    """Geo heads with centres (k-means + background), initial log κ and gallery installed.

    Args:
        cfg: the heads' settings (sizes, centre settings, κ range, seed); any object with the
            names of :class:`GeoSettings` (e.g. the ``[geo]`` section) is converted.
        train_lat, train_lon: (N,) training coordinates in degrees.
        in_dim: size of the features the heads will read.
        config_fields: other :class:`GeoHeadsConfig` fields (``input_space``, ``backbone``,
            ``extra``, ``season_readout``).
    """
    cfg = GeoSettings.of(cfg)
    centres = build_centres(train_lat, train_lon, cfg)
    gallery = gallery_locations(train_lat, train_lon, cfg.gallery_max)
    # the fields the heads share with the settings (sizes, κ range, season) come from them
    heads = GeoHeads(
        GeoHeadsConfig.of(
            cfg,
            in_dim=in_dim,
            num_centres=len(centres.xyz),
            num_data_centres=centres.num_data,
            num_gallery=len(gallery),
            **config_fields,
        )
    )
    heads.set_centres(centres.xyz, centres.log_kappa)
    heads.set_gallery(gallery)
    return heads


def loss_from_config(cfg: GeoSettings | Any) -> GeoLoss:
    """The weighted geo loss of ``cfg`` (:class:`GeoSettings` or an object with its names)."""
    return GeoLoss(GeoSettings.of(cfg))
