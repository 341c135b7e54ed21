"""Camera positions and compass angles from a Mapillary-style GeoJSON (API v4 image fields).

One ``FeatureCollection``; per feature: ``id`` (digits), ``geometry`` (Point lon/lat) and optionally
``computed_geometry``, ``compass_angle`` / ``computed_compass_angle`` (degrees clockwise from
north), ``is_pano``, ``captured_at`` (ms since the epoch) and ``sequence``. The fields may sit in
``properties`` or at the feature's top level (both layouts occur in downloads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbe.data.geojson import read_feature_collection
from sbe.errors import SbeError


@dataclass
class CameraMetadata:
    """Per image: id, position, heading (NaN = unknown), panorama flag.

    Attributes:
        image_id: int64 (N,).
        lat, lon: float64 (N,) degrees.
        heading: float64 (N,) degrees clockwise from north, as given (not wrapped).
        is_pano: bool (N,).
        used: counts of which fields gave position and angle (``computed_geometry``...).
    """

    image_id: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    heading: np.ndarray
    is_pano: np.ndarray
    used: dict[str, int]


def _point(g: Any) -> tuple[float, float] | None:
    if isinstance(g, dict) and g.get("type") == "Point":
        c = g.get("coordinates")
        if isinstance(c, list | tuple) and len(c) >= 2:
            try:
                return float(c[0]), float(c[1])
            except (TypeError, ValueError):
                return None
    return None


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def read_camera_metadata(path: str | Path, prefer_computed: bool = True) -> CameraMetadata:
    """Read a Mapillary-style GeoJSON (see the module docstring).

    Args:
        path: the file.
        prefer_computed: take ``computed_geometry``/``computed_compass_angle`` when present.

    Raises:
        SbeError: unreadable, not a FeatureCollection, or an id that is not an integer.
    """
    path = Path(path)
    data = read_feature_collection(path, "images")
    feats = data.get("features") or []
    n = len(feats)
    ids = np.zeros(n, dtype=np.int64)
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    head = np.full(n, np.nan)
    pano = np.zeros(n, dtype=bool)
    used = {"computed_geometry": 0, "geometry": 0, "computed_compass_angle": 0, "compass_angle": 0}
    for i, f in enumerate(feats):  # file parsing, once per image
        props = {**f, **(f.get("properties") or {})}
        raw_id = props.get("id")
        try:
            ids[i] = int(str(raw_id))
        except ValueError:
            raise SbeError(
                f"{path}: feature {i} has id {raw_id!r}, not an integer image id"
            ) from None
        geo_keys = ("computed_geometry", "geometry") if prefer_computed else ("geometry",)
        for k in geo_keys:
            p = _point(props.get(k))
            if p is not None:
                lon[i], lat[i] = p
                used[k] += 1
                break
        ang_keys = (
            ("computed_compass_angle", "compass_angle") if prefer_computed else ("compass_angle",)
        )
        for k in ang_keys:
            a = _number(props.get(k))
            if a is not None:
                head[i] = a
                used[k] += 1
                break
        pano[i] = bool(props.get("is_pano")) or str(props.get("camera_type", "")).lower() in {
            "spherical",
            "equirectangular",
        }
    return CameraMetadata(ids, lat, lon, head, pano, {k: v for k, v in used.items() if v})
