"""The geolocation section: predicted vs true places of test images, and the geo metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbe.report.places import Places
from sbe.report.readers import (
    Unavailable,
    manifest_of,
    need_dir,
    parquet_schema,
    read_json,
    read_parquet,
)
from sbe.report.worldmap import MapBuilding, MapMode, MapPoint
from sbe.storage import to_numpy_matrix

#: ``predict(geo_dir, embeddings (N, D) float32) -> [{"locations": [{"lat", "lon", ...}], ...}]``
GeoPredictor = Callable[[Path, np.ndarray], list[dict[str, Any]]]


@dataclass
class Geolocation:
    """Test-split predictions for the map, and the metrics of ``GEO_DIR/metrics.json``."""

    points: list[MapPoint]
    test_rows: int
    metrics: dict[str, Any] | None
    selection: dict[str, Any]
    input_space: str | None


def geo_metrics(geo_dir: Path | None) -> dict[str, Any]:
    folder = need_dir(geo_dir, "geo output")
    return read_json(folder / "metrics.json", "geo metrics (metrics.json)")


def geolocation(
    split_dir: Path | None,
    geo_dir: Path | None,
    predict: GeoPredictor,
    *,
    max_points: int,
    seed: int,
) -> Geolocation:
    """Predicted vs true locations of (a seeded sample of) the test images."""
    metrics = geo_metrics(geo_dir)
    assert geo_dir is not None
    if not (Path(geo_dir) / "model.safetensors").is_file():
        raise Unavailable(f"no trained geo heads in {geo_dir}")
    test = need_dir(split_dir, "split output") / "test.parquet"
    columns = ["image_id", "target_lat", "target_lon", "embedding"]
    table = read_parquet(test, "test split", "split", columns)
    n = table.num_rows
    if n == 0:
        raise Unavailable(f"{test} has no rows")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    table = table.take(rows)
    emb = to_numpy_matrix(table.column("embedding"), np.float32)
    preds = predict(Path(geo_dir), emb)
    lat = table.column("target_lat").to_numpy()
    lon = table.column("target_lon").to_numpy()
    ids = table.column("image_id").to_numpy()
    points = []
    for i, p in enumerate(preds):
        if not p.get("locations"):
            continue
        top = p["locations"][0]
        modes = tuple(
            MapMode(
                float(m["lat"]),
                float(m["lon"]),
                float(m["prob"]),
                float(m["radius_50_km"]),
                float(m["radius_90_km"]),
            )
            for m in p["locations"]
            if m.get("radius_50_km") is not None and m.get("radius_90_km") is not None
        )
        points.append(
            MapPoint(
                float(lat[i]),
                float(lon[i]),
                float(top["lat"]),
                float(top["lon"]),
                f"{ids[i]}",
                modes,
            )
        )
    space = None
    with contextlib.suppress(Unavailable):
        space = read_json(Path(geo_dir) / "config.json", "geo config").get("input_space")
    return Geolocation(
        points=points,
        test_rows=n,
        metrics=metrics.get("test"),
        selection=dict(metrics.get("selection") or {}),
        input_space=space,
    )


def map_buildings(
    buildings_dir: Path | None, places: Places, *, max_points: int, seed: int
) -> tuple[list[MapBuilding], int]:
    """The located buildings of ``sbe aggregate`` (a seeded sample beyond ``max_points``).

    Returns:
        ``(buildings, located)``: the sample to draw, captioned by ``places``, and how many
        buildings have a location in all.

    Raises:
        Unavailable: no finished aggregate output, or its buildings have no locations.
    """
    manifest_of(buildings_dir, "aggregate output", "aggregate")
    assert buildings_dir is not None
    path = Path(buildings_dir) / "buildings.parquet"
    names = parquet_schema(path, "buildings").names
    if not {"lat", "lon"} <= set(names):
        raise Unavailable(
            f"{path} has no lat/lon: the buildings are not located (`sbe aggregate --locations`)"
        )
    columns = ["lat", "lon"] + (["image_count"] if "image_count" in names else [])
    table = read_parquet(path, "buildings", "aggregate", columns)
    lat = table.column("lat").to_numpy(zero_copy_only=False).astype(np.float64)
    lon = table.column("lon").to_numpy(zero_copy_only=False).astype(np.float64)
    count = (
        table.column("image_count").to_numpy(zero_copy_only=False)
        if "image_count" in columns
        else np.zeros(len(lat), dtype=np.int64)
    )
    located = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon))
    if len(located) == 0:
        raise Unavailable(f"{path}: no building has a location")
    rows = located
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_points, replace=False))
    out = [
        MapBuilding(
            float(lat[r]), float(lon[r]), places.caption(lat[r], lon[r]), int(count[r] or 0)
        )
        for r in rows
    ]
    return out, len(located)
