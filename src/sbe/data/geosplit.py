"""Geographic splits: a global grid of ~square cells, and a salted hash of the cell picks the split.

Assigning whole cells (not ids) keeps neighbouring facades in the same split, and hashing each cell
on its own (no permutation of a sorted list) keeps every assignment fixed when data elsewhere is
added or removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from sbe.data.identity import positions_m
from sbe.sphere import EARTH_RADIUS_M

#: metres per degree of latitude on the sphere
M_PER_DEG = np.pi * EARTH_RADIUS_M / 180.0
_ROW_SHIFT = 32


def cell_ids(lat_deg: np.ndarray, lon_deg: np.ndarray, cell_size_m: float) -> np.ndarray:
    """Global grid cell of each point: rows of ``cell_size_m`` of latitude, and in each row,
    columns of ``cell_size_m`` of longitude measured at the row's central latitude.

    Cells are close to square everywhere (the column count shrinks toward the poles) and the grid
    depends only on ``cell_size_m``, so the same place always gets the same cell.

    Args:
        lat_deg, lon_deg: (N,) degrees.
        cell_size_m: cell side in metres.

    Returns:
        int64 (N,): ``row << 32 | column``.
    """
    lat = np.clip(np.asarray(lat_deg, dtype=np.float64), -90.0, 90.0)
    lon = (np.asarray(lon_deg, dtype=np.float64) + 180.0) % 360.0  # [0, 360)
    dlat = cell_size_m / M_PER_DEG
    n_rows = int(np.ceil(180.0 / dlat))
    row = np.minimum(np.floor((lat + 90.0) / dlat).astype(np.int64), n_rows - 1)
    row_centre = np.minimum(-90.0 + (row + 0.5) * dlat, 90.0)
    circumference_m = 360.0 * M_PER_DEG * np.cos(np.radians(row_centre))
    n_cols = np.maximum(1, np.floor(circumference_m / cell_size_m)).astype(np.int64)
    col = np.minimum(np.floor(lon / 360.0 * n_cols).astype(np.int64), n_cols - 1)
    return (row << _ROW_SHIFT) | col


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed uint64 -> uint64 hash."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _salt64(salt: str) -> np.uint64:
    return np.uint64(
        int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little")
    )


def cell_uniform(cell_id: np.ndarray, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per cell, fixed by ``(salt, cell_id)`` alone.

    Returns:
        float64 (N,).
    """
    with np.errstate(over="ignore"):
        h = _mix64(_mix64(np.asarray(cell_id, dtype=np.int64).view(np.uint64)) ^ _salt64(salt))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def assign_splits(cell_id: np.ndarray, ratios: Sequence[float], salt: str) -> np.ndarray:
    """Split index per cell from a salted hash: 0 = first ratio (train), 1 = val, 2 = test, ...

    Args:
        cell_id: int64 (N,).
        ratios: fraction of cells per split; must sum to 1.
        salt: changing it draws a different (but again stable) assignment.

    Returns:
        int8 (N,).
    """
    r = np.asarray(ratios, dtype=np.float64)
    if np.any(r < 0) or abs(r.sum() - 1.0) > 1e-6:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {list(ratios)}")
    edges = np.cumsum(r)[:-1]
    split = np.searchsorted(edges, cell_uniform(cell_id, salt), side="right")
    # a zero ratio must never receive anything, even at a float tie
    return np.minimum(split, len(r) - 1).astype(np.int8)


def nearest_distance_m(
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    ref_lat: np.ndarray,
    ref_lon: np.ndarray,
) -> np.ndarray:
    """Distance in metres from each query point to the nearest reference point (KD-tree).

    Returns:
        float64 (Q,); ``inf`` for every query when there are no reference points.
    """
    if len(query_lat) == 0:
        return np.zeros(0)
    if len(ref_lat) == 0:
        return np.full(len(query_lat), np.inf)
    tree = cKDTree(positions_m(ref_lat, ref_lon))
    d, _ = tree.query(positions_m(query_lat, query_lon), k=1)
    return np.asarray(d, dtype=np.float64)
