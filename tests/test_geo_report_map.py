"""The report map's modes layer: the top-k modes of the geo predictions of sample photos."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.report import html as h
from sbe.report.geoloc import Geolocation, geolocation
from sbe.report.worldmap import MapMode, MapPoint, geodesic_circle, world_map_svg
from sbe.sphere import haversine_km


def _point(label: str, modes: tuple[MapMode, ...]) -> MapPoint:
    return MapPoint(48.0, 2.0, modes[0].lat, modes[0].lon, label, modes)


MODES = (
    MapMode(47.0, 3.0, 0.6, 150.0, 900.0),
    MapMode(-33.9, 151.2, 0.3, 400.0, 2500.0),
    MapMode(40.0, 179.0, 0.1, 300.0, 1200.0),
)


def test_geodesic_circle_points_lie_at_the_radius_and_split_at_the_antimeridian() -> None:
    for lat, lon, r in ((48.0, 2.0, 500.0), (-70.0, 100.0, 3000.0), (10.0, 179.5, 800.0)):
        runs = geodesic_circle(lat, lon, r)
        pts = np.array([p for run in runs for p in run])
        d = haversine_km(np.full(len(pts), lat), np.full(len(pts), lon), pts[:, 0], pts[:, 1])
        assert np.allclose(d, r, rtol=1e-3), (lat, lon, r, d.min(), d.max())
        for run in runs:  # no segment jumps across the map
            lons = np.array([p[1] for p in run])
            assert np.all(np.abs(np.diff(lons)) < 180)
    assert len(geodesic_circle(10.0, 179.5, 800.0)) == 2  # crosses the antimeridian
    assert len(geodesic_circle(48.0, 2.0, 500.0)) == 1


def test_modes_layer_draws_mass_and_both_radii_of_the_first_photos() -> None:
    pts = [_point(f"img{i}", MODES) for i in range(4)] + [MapPoint(1.0, 1.0, 2.0, 2.0, "bare")]
    svg = world_map_svg(pts, None, mode_points=pts[:2])
    assert 'data-layer="modes"' in svg and 'data-layer="predictions"' in svg
    layer = svg.split('data-layer="modes">')[1].split('<g class="layer"')[0]
    assert re.findall(r'data-photo="([^"]+)"', layer) == ["img0", "img1"]
    masses = [float(m) for m in re.findall(r'class="mode-pt"[^>]*data-mass="([0-9.]+)"', layer)]
    assert masses == [0.6, 0.3, 0.1] * 2
    r50 = [float(m) for m in re.findall(r'data-r50="([0-9.]+)"', layer)]
    r90 = [float(m) for m in re.findall(r'data-r90="([0-9.]+)"', layer)]
    assert r50 == [150.0, 400.0, 300.0] * 2 and r90 == [900.0, 2500.0, 1200.0] * 2
    # a solid 50 % and a dashed 90 % circle per mode; both circles of the third mode cross the
    # antimeridian and are drawn in two runs
    assert layer.count('class="mode-r50"') == 2 * 4 and layer.count('class="mode-r90"') == 2 * 4
    assert layer.count('class="mode-truth"') == 2
    # dot area grows with the mass
    radii = [float(r) for r in re.findall(r'r="([0-9.]+)" class="mode-pt"', layer)]
    assert radii[0] > radii[1] > radii[2]
    assert "mass 60%, 50 % within 150 km, 90 % within 900 km" in layer
    # no modes: no layer
    assert 'data-layer="modes"' not in world_map_svg(pts, None)
    assert 'data-layer="modes"' not in world_map_svg(pts[-1:], None, mode_points=pts[-1:])


def test_geolocation_keeps_the_modes_and_the_section_offers_the_layer(tmp_path: Path) -> None:
    split, geo = tmp_path / "split", tmp_path / "geo"
    split.mkdir()
    geo.mkdir()
    n = 5
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * 4, np.float32)), 4)
    pq.write_table(
        pa.table(
            {
                "image_id": pa.array([f"i{k}" for k in range(n)]),
                "target_lat": pa.array(np.linspace(40, 50, n)),
                "target_lon": pa.array(np.linspace(0, 10, n)),
                "embedding": emb,
            }
        ),
        split / "test.parquet",
    )
    (geo / "metrics.json").write_text('{"test": null, "selection": {}}')
    (geo / "model.safetensors").write_bytes(b"")
    keys = ("lat", "lon", "prob", "radius_50_km", "radius_90_km")

    def predict(_: Path, e: np.ndarray) -> list[dict]:
        return [{"locations": [dict(zip(keys, (m.lat, m.lon, m.mass, m.radius_50_km, m.radius_90_km), strict=True)) for m in MODES]} for _ in e]  # fmt: skip

    got = geolocation(split, geo, predict, max_points=10, seed=0)
    assert isinstance(got, Geolocation) and len(got.points) == n
    assert all(p.modes == MODES for p in got.points)
    assert (got.points[0].pred_lat, got.points[0].pred_lon) == (47.0, 3.0)
    section = str(h.geo_section(got, {}, "no curves", None, []))
    assert 'type="checkbox" data-layer="modes"' in section
    assert f"top-k modes of {min(n, h.MODE_PHOTOS)} sample photos" in section
    assert section.count('class="photo-modes"') == min(n, h.MODE_PHOTOS)
    assert "the top 3 modes of the predicted location mixture" in section


def test_section_without_predictions_has_no_modes_layer() -> None:
    section = str(h.geo_section("no geo predictor given", {}, "no curves", None, []))
    assert "no geo predictor given" in section and 'data-layer="modes"' not in section
    bare = Geolocation([MapPoint(1.0, 2.0, 3.0, 4.0, "x")], 1, None, {}, None)
    section = str(h.geo_section(bare, {}, "no curves", None, []))
    assert 'data-layer="predictions"' in section and 'data-layer="modes"' not in section
