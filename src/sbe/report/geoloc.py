"""The geolocation section: predicted vs true places of test images, and the geo metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbe.report.readers import Unavailable, need_dir, read_json, read_parquet
from sbe.report.worldmap import MapPoint
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
        points.append(
            MapPoint(
                float(lat[i]), float(lon[i]), float(top["lat"]), float(top["lon"]), f"{ids[i]}"
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
