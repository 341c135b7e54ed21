"""Sphere maths on WGS84 lat/lon treated as a sphere of radius :data:`EARTH_RADIUS_KM`.

Units are explicit in every name: degrees (``_deg``), kilometres (``_km``), metres (``_m``).
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0
EARTH_RADIUS_M = EARTH_RADIUS_KM * 1000.0


def latlon_to_unit(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Unit vectors on S^2 from latitude/longitude in degrees.

    Returns:
        float64 array of shape (N, 3): (cos φ cos λ, cos φ sin λ, sin φ).
    """
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    cl = np.cos(lat)
    return np.stack([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)], axis=-1)


def unit_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude/longitude in degrees from (N, 3) vectors (normalised first)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    lat = np.degrees(np.arcsin(np.clip(xyz[..., 2], -1.0, 1.0)))
    lon = np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0]))
    return lat, lon


def haversine_km(
    lat1_deg: np.ndarray, lon1_deg: np.ndarray, lat2_deg: np.ndarray, lon2_deg: np.ndarray
) -> np.ndarray:
    """Great-circle distance in km (haversine form: accurate for tiny and large distances)."""
    p1, p2 = np.radians(lat1_deg), np.radians(lat2_deg)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2_deg) - np.asarray(lon1_deg))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def local_en_m(
    lat_deg: np.ndarray, lon_deg: np.ndarray, lat0_deg: float, lon0_deg: float
) -> np.ndarray:
    """East/north offsets in metres from a reference point (equirectangular; for < ~50 km spans).

    Returns:
        float64 array of shape (N, 2): (east_m, north_m).
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    dlon = (np.asarray(lon_deg, dtype=np.float64) - lon0_deg + 180.0) % 360.0 - 180.0
    east = np.radians(dlon) * EARTH_RADIUS_M * np.cos(np.radians(lat0_deg))
    north = np.radians(lat - lat0_deg) * EARTH_RADIUS_M
    return np.stack([east, north], axis=-1)


def offset_latlon(
    lat_deg: np.ndarray, lon_deg: np.ndarray, east_m: np.ndarray, north_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move points by small east/north offsets in metres; inverse of :func:`local_en_m`."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    new_lat = lat + np.degrees(np.asarray(north_m) / EARTH_RADIUS_M)
    new_lon = np.asarray(lon_deg, dtype=np.float64) + np.degrees(
        np.asarray(east_m) / (EARTH_RADIUS_M * np.cos(np.radians(lat)))
    )
    return new_lat, (new_lon + 180.0) % 360.0 - 180.0
