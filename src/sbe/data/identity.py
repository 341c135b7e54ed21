"""Identity: which facade targets belong to one building.

A 3D Street View ``TargetID`` is a point on a facade; one building carries many of them. Two targets
are *joined* when they are within ``radius_m`` of each other and their facade normals agree to within
``max_angle_deg`` (points on one wall); identities are the connected components of that relation,
so chains of targets along one wall become one identity while the two sides of a street (opposite
normals) or the two walls of a corner (perpendicular normals) stay apart.

Everything is vectorised: candidate pairs come from a KD-tree over 3D positions in metres, queried
in chunks whose size adapts to the local density (bounded memory), and the components come from
``scipy.sparse.csgraph.connected_components`` (union-find over the accepted pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from sbe.sphere import EARTH_RADIUS_M, latlon_to_unit, unit_to_latlon

#: cap on (queries x neighbours) held at once while collecting candidate pairs
_MAX_PAIR_BLOCK = 4_000_000


def positions_m(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Earth-centred 3D positions in metres on a sphere.

    Chord length between two of these equals the great-circle distance to within 1e-9 relative at
    street scale, and the frame works everywhere (no local projection, no antimeridian seam).

    Returns:
        float64 array of shape (N, 3), metres.
    """
    return latlon_to_unit(lat_deg, lon_deg) * EARTH_RADIUS_M


def unit_normals(normals: np.ndarray) -> np.ndarray:
    """Normalise (N, 3) facade normals; rows that are not finite or nearly zero become NaN.

    A NaN normal never agrees with anything, so such a target stays its own identity.
    """
    n = np.asarray(normals, dtype=np.float64)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = n / norm
    bad = ~np.isfinite(norm[:, 0]) | (norm[:, 0] < 1e-6)
    out[bad] = np.nan
    return out


def neighbour_pairs(xyz_m: np.ndarray, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with ``|xyz_i - xyz_j| <= radius_m``, found in bounded memory.

    Args:
        xyz_m: float64 (N, 3) positions in metres.
        radius_m: join radius in metres.

    Returns:
        ``(i, j)``: int64 arrays of equal length, ``i < j``.
    """
    n = len(xyz_m)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    tree = cKDTree(xyz_m)
    counts = tree.query_ball_point(xyz_m, radius_m, return_length=True).astype(np.int64)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    start = 0
    while start < n:
        # grow the chunk while (chunk rows x its densest row) stays under the block cap
        stop = start + 1
        k = int(counts[start])
        step = 1024
        while stop < n:
            nxt = min(n, stop + step)
            k_next = max(k, int(counts[stop:nxt].max()))
            if (nxt - start) * k_next > _MAX_PAIR_BLOCK:
                break
            stop, k = nxt, k_next
        if k >= 2:
            dist, idx = tree.query(xyz_m[start:stop], k=k, distance_upper_bound=radius_m)
            rows = np.arange(start, stop, dtype=np.int64)[:, None]
            keep = np.isfinite(dist) & (idx > rows)
            out_i.append(np.broadcast_to(rows, idx.shape)[keep])
            out_j.append(idx[keep].astype(np.int64))
        start = stop
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(out_i), np.concatenate(out_j)


def group_targets(
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    normals: np.ndarray,
    radius_m: float,
    max_angle_deg: float,
) -> np.ndarray:
    """Group facade targets into buildings: connected components of "near and facing the same way".

    Args:
        lat_deg, lon_deg: (N,) target positions in degrees.
        normals: (N, 3) facade normals (any consistent frame; normalised here).
        radius_m: two targets closer than this (metres) may be joined.
        max_angle_deg: ... if the angle between their normals is at most this.

    Returns:
        int64 (N,) component label per target, ``0..n_groups-1``.
    """
    n = len(lat_deg)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    i, j = neighbour_pairs(positions_m(lat_deg, lon_deg), radius_m)
    nrm = unit_normals(normals)
    cos_min = np.cos(np.radians(max_angle_deg))
    agree = np.einsum("ij,ij->i", nrm[i], nrm[j]) >= cos_min - 1e-12  # NaN compares False
    i, j = i[agree], j[agree]
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


@dataclass
class Identities:
    """Identities over a set of targets.

    Attributes:
        target_identity: int64 (T,) index into the identity arrays for each target.
        building_id: int64 (G,) stable id per identity: the smallest ``target_uid`` it contains.
        lat_deg, lon_deg: float64 (G,) centroid of the identity's targets.
        n_targets: int64 (G,) targets per identity.
    """

    target_identity: np.ndarray
    building_id: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    n_targets: np.ndarray

    def __len__(self) -> int:
        return len(self.building_id)


def identities_from_labels(
    target_uid: np.ndarray, labels: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray
) -> Identities:
    """Turn per-target group labels (any integers) into :class:`Identities`: stable ids, centroids.

    The identity order is ascending ``building_id``, so it does not depend on how the labels were
    numbered.
    """
    target_uid = np.asarray(target_uid, dtype=np.int64)
    _, labels = np.unique(np.asarray(labels), return_inverse=True)  # any labels -> 0..G-1
    labels = labels.reshape(-1)
    n_groups = int(labels.max()) + 1 if len(labels) else 0
    min_uid = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(min_uid, labels, target_uid)
    order = np.argsort(min_uid, kind="stable")
    rank = np.empty(n_groups, dtype=np.int64)
    rank[order] = np.arange(n_groups)
    target_identity = rank[labels]
    unit = latlon_to_unit(lat_deg, lon_deg)
    sums = np.zeros((n_groups, 3))
    for axis in range(3):
        sums[:, axis] = np.bincount(target_identity, weights=unit[:, axis], minlength=n_groups)
    clat, clon = unit_to_latlon(sums) if n_groups else (np.zeros(0), np.zeros(0))
    return Identities(
        target_identity=target_identity,
        building_id=min_uid[order],
        lat_deg=np.asarray(clat, dtype=np.float64),
        lon_deg=np.asarray(clon, dtype=np.float64),
        n_targets=np.bincount(target_identity, minlength=n_groups).astype(np.int64),
    )


def identity_extent_m(ident: Identities, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Largest distance in metres from each identity's centroid to one of its targets.

    Returns:
        float64 (G,).
    """
    xyz = positions_m(lat_deg, lon_deg)
    centre = positions_m(ident.lat_deg, ident.lon_deg)[ident.target_identity]
    d = np.linalg.norm(xyz - centre, axis=1)
    out = np.zeros(len(ident))
    np.maximum.at(out, ident.target_identity, d)
    return out
