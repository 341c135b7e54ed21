"""Geo labels per row, computed from the target's lat/lon and the capture date of a split table."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from sbe.geo.koppen import climate_labels
from sbe.geo.season import day_of_year, doy_to_angle
from sbe.sphere import latlon_to_unit


@dataclass
class GeoLabels:
    """Targets of the three geo heads for N rows (torch tensors, so batches index directly).

    Attributes:
        xyz: (N, 3) float64 unit vectors of the true locations.
        fine: (N,) int64 Köppen-Geiger class, 0..30 (0 = water).
        coarse: (N,) int64 coarse group, 0..5.
        season_theta: (N,) float32 angle of the day of year in radians (0 where unknown).
        has_date: (N,) bool, whether the row has a capture date (others do not train the season head).
    """

    xyz: Tensor
    fine: Tensor
    coarse: Tensor
    season_theta: Tensor
    has_date: Tensor

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def __getitem__(self, index: Tensor | np.ndarray | slice) -> GeoLabels:
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return GeoLabels(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> GeoLabels:
        return GeoLabels(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def make_labels(
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    doy: np.ndarray | None = None,
    *,
    fallback_px: int = 5,
) -> GeoLabels:
    """Labels from coordinates and (optional) 0-based days of year (NaN = unknown).

    Args:
        lat_deg, lon_deg: (N,) degrees.
        doy: (N,) 0-based day of year, NaN where unknown; ``None`` = no dates at all.
        fallback_px: coastal fallback radius of the climate lookup, in raster pixels.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    fine, coarse = climate_labels(lat, lon, fallback_px=fallback_px)
    if doy is None:
        doy = np.full(len(lat), np.nan)
    doy = np.asarray(doy, dtype=np.float64)
    has_date = np.isfinite(doy)
    theta = np.where(has_date, doy_to_angle(np.nan_to_num(doy)), 0.0)
    return GeoLabels(
        xyz=torch.from_numpy(latlon_to_unit(lat, lon)),
        fine=torch.from_numpy(fine.astype(np.int64)),
        coarse=torch.from_numpy(coarse.astype(np.int64)),
        season_theta=torch.from_numpy(theta.astype(np.float32)),
        has_date=torch.from_numpy(has_date),
    )


def labels_from_table(table: pa.Table, *, fallback_px: int = 5) -> GeoLabels:
    """Labels for every row of a split (or backbone) table.

    Uses ``target_lat``, ``target_lon`` and, when present, ``capture_date`` (date32, nullable).
    """
    lat = table.column("target_lat").to_numpy()
    lon = table.column("target_lon").to_numpy()
    doy = (
        day_of_year(table.column("capture_date")) if "capture_date" in table.schema.names else None
    )
    return make_labels(lat, lon, doy, fallback_px=fallback_px)
