"""Building footprints of a synthetic world, as an OpenStreetMap export would give them.

Every building of every region (targets and fillers) becomes one polygon in WGS84 lon/lat with an
OSM-style id ``w<building index>``. A facade spans ``u0..u1`` of its street line; the building
extends from it into the block (away from the street) by a depth. Corner buildings, which own a
front and a side facade, are the rectangle the two facades span; other buildings get a depth of
8-14 m, cut where a building placed before them (corners first) already stands, so footprints never
overlap. Written as GeoParquet (``footprints.parquet``) by ``sbe synth``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely

from sbe.data.footprints import geoparquet_table
from sbe.sphere import offset_latlon
from sbe.storage import write_parquet_atomic
from sbe.synth.world import DatasetPlan, WorldPlan

FOOTPRINTS_NAME = "footprints.parquet"
ID_COLUMN = "osm_id"
DEPTH_RANGE_M = (8.0, 14.0)


def footprint_id(building_index: int) -> str:
    """The OSM-style id of a synthetic building (a way: ``w<index>``)."""
    return f"w{int(building_index)}"


def _facade_rect(plan: DatasetPlan, facade: int, depth: float) -> shapely.Polygon:
    """The rectangle behind one facade, ``depth`` metres into the block (local east/north)."""
    f = plan.facades[facade]
    line = plan.lines[f.line]
    corners = [
        line.point(f.u0)[:2],
        line.point(f.u1)[:2],
        line.point(f.u1, 0.0, -depth)[:2],
        line.point(f.u0, 0.0, -depth)[:2],
    ]
    return shapely.Polygon(corners)


def region_footprints(
    plan: DatasetPlan, rng: np.random.Generator
) -> tuple[list[int], list[shapely.Geometry]]:
    """Footprints of one region in its local (east, north) metre frame.

    Returns:
        ``(building indexes, polygons)`` in building-index order.
    """
    placed: list[tuple[int, shapely.Geometry]] = []
    corners = [b for b in sorted(plan.buildings) if len(plan.buildings[b].facades) == 2]
    others = [b for b in sorted(plan.buildings) if len(plan.buildings[b].facades) != 2]
    for b in corners:
        f0, f1 = plan.buildings[b].facades
        w0, w1 = plan.facades[f0].width, plan.facades[f1].width
        poly = shapely.union(_facade_rect(plan, f0, w1), _facade_rect(plan, f1, w0))
        placed.append((b, poly))
    geoms = [p for _, p in placed]
    for b in others:
        depth = float(rng.uniform(*DEPTH_RANGE_M))
        polys = [_facade_rect(plan, f, depth) for f in plan.buildings[b].facades]
        poly = shapely.union_all(polys)
        if geoms:  # cut what a building placed before already covers
            arr = np.array(geoms, dtype=object)
            hit = arr[shapely.intersects(arr, poly)]
            if len(hit):
                poly = shapely.difference(poly, shapely.union_all(hit))
        if poly.is_empty:
            continue
        if poly.geom_type != "Polygon":  # keep the main part of a cut building
            parts = shapely.get_parts(poly)
            parts = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
            if len(parts) == 0:
                continue
            poly = parts[int(np.argmax(shapely.area(parts)))]
        placed.append((b, poly))
        geoms.append(poly)
    placed.sort(key=lambda x: x[0])
    return [b for b, _ in placed], [p for _, p in placed]


def _to_lonlat(plan: DatasetPlan, geom: shapely.Geometry) -> shapely.Geometry:
    def f(xy: np.ndarray) -> np.ndarray:
        lat, lon = offset_latlon(np.asarray(plan.lat0), np.asarray(plan.lon0), xy[:, 0], xy[:, 1])
        return np.stack([lon, lat], axis=1)

    return shapely.transform(geom, f)


def world_footprints(world: WorldPlan, seed: int) -> pa.Table:
    """Every building of the world as a GeoParquet table (see the module docstring).

    Columns: ``osm_id`` (string), ``building_index`` (int64), ``dataset_id`` (int32),
    ``is_target`` (bool: carries targets), ``geometry`` (WKB polygon, lon/lat).
    """
    ids: list[str] = []
    index: list[int] = []
    dataset: list[int] = []
    target: list[bool] = []
    geoms: list[shapely.Geometry] = []
    for plan in world.datasets:
        rng = np.random.default_rng([seed, 6007, plan.dataset_id])
        buildings, polys = region_footprints(plan, rng)
        for b, p in zip(buildings, polys, strict=True):
            ids.append(footprint_id(b))
            index.append(b)
            dataset.append(plan.dataset_id)
            target.append(plan.buildings[b].is_target)
            geoms.append(_to_lonlat(plan, p))
    return geoparquet_table(
        np.array(geoms, dtype=object),
        {
            ID_COLUMN: pa.array(ids, pa.string()),
            "building_index": pa.array(index, pa.int64()),
            "dataset_id": pa.array(dataset, pa.int32()),
            "is_target": pa.array(target, pa.bool_()),
        },
    )


def write_footprints(world: WorldPlan, seed: int, path: str | Path) -> int:
    """Write :func:`world_footprints` atomically to ``path``; returns the number of footprints."""
    table = world_footprints(world, seed)
    write_parquet_atomic(table, path)
    return table.num_rows
