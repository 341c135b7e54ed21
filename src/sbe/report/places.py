"""Human captions for places: the synthetic world's city names, else coordinates.

The report never captions a picture or a map mark with a bare internal id: a place is named by
its city when the run is synthetic (``sbe synth`` writes ``truth.parquet`` with a city per
building) and by its coordinates otherwise (real data has no city column to trust).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.sphere import haversine_km

#: a place farther than this from every city centre of the world is not named after one
CITY_RADIUS_KM = 60.0


def latlon_text(lat: float, lon: float, digits: int = 4) -> str:
    """``"33.8544° S, 151.2072° E"``: hemisphere letters rather than signs."""
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{abs(lat):.{digits}f}° {ns}, {abs(lon):.{digits}f}° {ew}"


def grid_text(lat: float, lon: float) -> str:
    """The 1° cell of a place, ``"48° N, 2° E"``: a coarse region for real data's filters."""
    la, lo = math.floor(lat), math.floor(lon)
    return f"{abs(la)}° {'N' if la >= 0 else 'S'}, {abs(lo)}° {'E' if lo >= 0 else 'W'}"


@dataclass
class Places:
    """City centres of a synthetic world (empty for real data).

    Attributes:
        names: city names. lat, lon: their centres, degrees (mean of the buildings).
    """

    names: list[str] = field(default_factory=list)
    lat: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lon: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def city(self, lat: float | None, lon: float | None) -> str | None:
        """The city whose centre is nearest to (``lat``, ``lon``), within :data:`CITY_RADIUS_KM`."""
        if not self.names or lat is None or lon is None or not np.isfinite([lat, lon]).all():
            return None
        km = haversine_km(
            np.full(len(self.names), float(lat)), np.full(len(self.names), float(lon)),
            self.lat, self.lon,
        )  # fmt: skip
        i = int(np.argmin(km))
        return self.names[i] if km[i] <= CITY_RADIUS_KM else None

    def group(self, lat: float | None, lon: float | None) -> str:
        """What a filter groups by: the city, else the 1° cell, else ``"unknown place"``."""
        if lat is None or lon is None or not np.isfinite([lat, lon]).all():
            return "unknown place"
        return self.city(lat, lon) or grid_text(lat, lon)

    def caption(self, lat: float | None, lon: float | None) -> str:
        """``"Sydney · 33.8544° S, 151.2072° E"``, the coordinates alone without a city."""
        if lat is None or lon is None or not np.isfinite([lat, lon]).all():
            return "location unknown"
        city = self.city(lat, lon)
        text = latlon_text(lat, lon)
        return f"{city} · {text}" if city else text


def world_places(raw_dir: Path | None) -> Places:
    """The city centres of the synthetic world in ``raw_dir`` (``truth.parquet``).

    Real data (no ``truth.parquet``, or one without ``city``/``building_lat``/``building_lon``)
    and an unreadable file give empty :class:`Places`: captions then use coordinates.
    """
    if raw_dir is None:
        return Places()
    path = Path(raw_dir) / "truth.parquet"
    columns = ["city", "building_lat", "building_lon"]
    try:
        if not set(columns) <= set(pq.read_schema(path).names):
            return Places()
        t = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException):
        return Places()
    city = np.asarray(t.column("city").to_pylist(), dtype=object)
    lat = t.column("building_lat").to_numpy()
    lon = t.column("building_lon").to_numpy()
    names = sorted({str(c) for c in city if c})
    if not names:
        return Places()
    # each synthetic city is a few km across: the mean of its buildings is its centre
    centres = [(lat[city == n].mean(), lon[city == n].mean()) for n in names]
    return Places(
        names=names,
        lat=np.array([c[0] for c in centres]),
        lon=np.array([c[1] for c in centres]),
    )
