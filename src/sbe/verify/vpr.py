"""Visual place recognition (VPR) evaluation in the format of the public VPR benchmarks.

Folder layout (the one of gmberton's ``VPR-datasets-downloader`` / ``VPR-methods-evaluation``,
used for Pitts30k, Tokyo 24/7, MSLS, SF-XL...)::

    root/database/@<utm_east>@<utm_north>@<zone>@<band>@<lat>@<lon>@<id>@...@.jpg
    root/queries/@...@.jpg

An image's UTM east/north are fields 1 and 2 of its ``@``-split name (field 0 is empty); other
fields may be empty. Alternatively ``database.csv``/``queries.csv`` beside the folders give
``name,lat,lon`` per image (projected to UTM with pyproj, one zone per set). A database image
is a positive of a query when they lie within 25 m.

Recall@N: the share of queries with a positive among their N nearest database images (cosine on
L2-normalised embeddings), optionally after re-ranking the top ``rerank_k`` with verified local
matches (:mod:`sbe.verify.rerank`).
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbe.errors import SbeError
from sbe.storage import atomic_path

POSITIVE_RADIUS_M = 25.0
RECALL_KS = (1, 5, 10, 20)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_utm(name: str) -> tuple[float, float]:
    """UTM (east, north) in metres from a VPR image name ``@east@north@...``.

    Raises:
        SbeError: the name does not follow the convention.
    """
    fields = Path(name).name.split("@")
    try:
        return float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise SbeError(
            f"{name}: expected a VPR image name '@utm_east@utm_north@...@.jpg' "
            "(or give database.csv/queries.csv with name,lat,lon)"
        ) from None


def utm_zone(lat: float, lon: float) -> tuple[int, str]:
    """UTM zone number and latitude band letter (Norway/Svalbard exceptions not applied)."""
    zone = int((lon + 180) // 6) % 60 + 1
    bands = "CDEFGHJKLMNPQRSTUVWXX"
    band = bands[int(min(max((lat + 80) // 8, 0), 20))]
    return zone, band


@functools.lru_cache(maxsize=16)
def _utm_transformer(zone: int, south: bool) -> Any:
    import pyproj

    # WGS84 / UTM zone N north (EPSG:326NN) or south (EPSG:327NN: false northing 10 000 km)
    epsg = (32700 if south else 32600) + zone
    return pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


def latlon_to_utm(lat: float, lon: float, zone: int | None = None) -> tuple[float, float, int, str]:
    """WGS84 latitude/longitude (degrees) -> UTM (east m, north m, zone, band), with pyproj.

    Args:
        lat, lon: degrees.
        zone: project into this zone instead of the point's own (one zone for a whole set keeps
            distances right across a zone border).

    Returns:
        ``(east, north, zone, band)``; southern latitudes carry the 10 000 km false northing.
    """
    z, band = utm_zone(lat, lon)
    zone = zone or z
    east, north = _utm_transformer(zone, lat < 0).transform(lon, lat)
    return float(east), float(north), zone, band


def vpr_name(lat: float, lon: float, image_id: str, zone: int | None = None) -> str:
    """The VPR file name of an image at ``lat``/``lon`` (UTM to cm, lat/lon to 1e-5 degree)."""
    east, north, z, band = latlon_to_utm(lat, lon, zone)
    fields = [f"{east:.2f}", f"{north:.2f}", str(z), band, f"{lat:.5f}", f"{lon:.5f}", image_id]
    return "@" + "@".join(fields) + "@" * 8 + ".jpg"


@dataclass
class VprData:
    """A VPR test set: image paths and UTM positions (east, north, metres)."""

    database: list[Path]
    database_xy: np.ndarray
    queries: list[Path]
    queries_xy: np.ndarray

    def positives(self, radius_m: float = POSITIVE_RADIUS_M) -> list[np.ndarray]:
        """Per query, the database indices within ``radius_m`` (int64 arrays, ascending)."""
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors().fit(self.database_xy)
        found = nn.radius_neighbors(self.queries_xy, radius=radius_m, return_distance=False)
        return [np.sort(f).astype(np.int64) for f in found]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _positions(folder: Path, paths: list[Path], table: Path) -> np.ndarray:
    if table.is_file():
        with open(table, newline="") as fh:
            rows = {r["name"]: r for r in csv.DictReader(fh)}
        xy = []
        zone = None
        for p in paths:
            if p.name not in rows:
                raise SbeError(f"{table} has no row for {p.name}")
            lat, lon = float(rows[p.name]["lat"]), float(rows[p.name]["lon"])
            # One zone for the whole set, so distances across a zone border stay right.
            zone = zone or utm_zone(lat, lon)[0]
            east, north, _, _ = latlon_to_utm(lat, lon, zone)
            xy.append((east, north))
        return np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    xy = []
    for p in paths:
        try:
            xy.append(parse_utm(p.name))
        except SbeError:
            raise SbeError(
                f"{folder}: {p.name} has no coordinates: name images '@utm_east@utm_north@...@.jpg'"
                f" or give {table.name} (name,lat,lon) beside {folder.name}/"
            ) from None
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def read_vpr_folder(root: str | os.PathLike[str]) -> VprData:
    """Read a VPR test folder (module docstring).

    Raises:
        SbeError: ``database/`` or ``queries/`` missing or empty, or names without positions.
    """
    root = Path(root)
    parts = {}
    for sub in ("database", "queries"):
        folder = root / sub
        if not folder.is_dir():
            raise SbeError(f"{folder} not found: a VPR folder has database/ and queries/")
        paths = _images(folder)
        if not paths:
            raise SbeError(f"{folder} has no images")
        parts[sub] = (paths, _positions(folder, paths, root / f"{sub}.csv"))
    return VprData(
        parts["database"][0], parts["database"][1], parts["queries"][0], parts["queries"][1]
    )


def write_vpr_folder(
    root: str | os.PathLike[str],
    database: Sequence[tuple[bytes, float, float]],
    queries: Sequence[tuple[bytes, float, float]],
) -> VprData:
    """Write JPEG images with their positions as a VPR folder (names carry UTM).

    Args:
        root: the folder (``database/`` and ``queries/`` are created in it).
        database, queries: ``(jpeg_bytes, lat, lon)`` per image.

    Returns:
        The folder as :func:`read_vpr_folder` reads it.
    """
    root = Path(root)
    all_pts = [*database, *queries]
    if not all_pts:
        raise SbeError("write_vpr_folder: no images")
    zone = utm_zone(all_pts[0][1], all_pts[0][2])[0]
    for sub, items in (("database", database), ("queries", queries)):
        for i, (data, lat, lon) in enumerate(items):
            with atomic_path(root / sub / vpr_name(lat, lon, f"{sub[0]}{i:06d}", zone)) as tmp:
                tmp.write_bytes(data)
    return read_vpr_folder(root)


def recall_at(
    rankings: Sequence[Sequence[int]] | np.ndarray,
    positives: Sequence[np.ndarray],
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, float]:
    """Recall@N of rankings (database indices, best first) against per-query positives.

    Returns:
        ``{"recall@N": share of queries, ...}`` (queries without a positive count as misses, as
        in the public evaluation code).
    """
    out = {}
    for k in ks:
        hits = [
            len(np.intersect1d(np.asarray(r[:k]), pos)) > 0
            for r, pos in zip(rankings, positives, strict=True)
        ]
        out[f"recall@{k}"] = float(np.mean(hits)) if hits else float("nan")
    return out


def evaluate_vpr(
    data: VprData,
    embed: Callable[[list[Path]], np.ndarray],
    *,
    ks: Sequence[int] = RECALL_KS,
    rerank: Callable[[Path, list[Path], np.ndarray], np.ndarray] | None = None,
    rerank_k: int = 10,
    radius_m: float = POSITIVE_RADIUS_M,
) -> dict[str, object]:
    """Recall@N of an embedding function on a VPR set, with and without re-ranking.

    Args:
        data: the set (:func:`read_vpr_folder`).
        embed: image paths -> float (n, d) embeddings.
        ks: the N of Recall@N.
        rerank: optional ``(query_path, candidate_paths, similarities) -> new order`` (indices
            into the candidates, best first), e.g. built on :func:`sbe.verify.rerank.rerank`.
        rerank_k: how many global candidates are re-ranked.
        radius_m: positive radius.

    Returns:
        ``{"queries", "database", "queries_without_positive", "global": {recall@N...},
        "reranked": {...} (with rerank)}``.
    """
    pos = data.positives(radius_m)
    db = _normalise(embed(data.database))
    q = _normalise(embed(data.queries))
    sims = q @ db.T
    depth = min(max(max(ks), rerank_k), len(data.database))
    ranking = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
    result: dict[str, object] = {
        "queries": len(data.queries),
        "database": len(data.database),
        "queries_without_positive": int(sum(len(p) == 0 for p in pos)),
        "global": recall_at(ranking, pos, ks),
    }
    if rerank is not None:
        reranked = ranking.copy()
        for i, qp in enumerate(data.queries):
            head = ranking[i, :rerank_k]
            order = np.asarray(rerank(qp, [data.database[j] for j in head], sims[i, head]))
            reranked[i, : len(head)] = head[order]
        result["reranked"] = recall_at(reranked, pos, ks)
    return result


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
