"""``sbe label``: building identity from footprints (ray casting, bad input, the stage, crashes).

The stage tests run on a planned synthetic world without rendering: its footprints, its
Mapillary-style metadata (noisy) and an ingest-like table of its views, so labelling is scored
against the world's truth.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from faults import crash_matrix

from sbe.config import LabelConfig
from sbe.data.footprints import (
    HEADING_OUT_OF_RANGE,
    INSIDE,
    NO_HEADING,
    NO_HIT,
    NO_POSITION,
    REASONS,
    RaySettings,
    cast_rays,
    footprint_uid,
    geoparquet_table,
    read_footprints,
)
from sbe.errors import SbeError
from sbe.sphere import offset_latlon
from sbe.stages import label as label_stage
from sbe.storage import write_part
from sbe.storage.schemas import FINGERPRINT_DIM, IMAGES_SCHEMA, make_uid
from sbe.synth.difficulty import knobs_for
from sbe.synth.footprints import write_footprints
from sbe.synth.mapillary import MetadataNoise, view_features, write_mapillary
from sbe.synth.metadata import view_geometry
from sbe.synth.world import WorldPlan, plan_world

LAT0, LON0 = 52.37, 4.89


def _rect(e0: float, n0: float, e1: float, n1: float) -> shapely.Polygon:
    """A lon/lat rectangle given in metres east/north of (LAT0, LON0)."""
    pts = [(e0, n0), (e1, n0), (e1, n1), (e0, n1)]
    ll = [offset_latlon(LAT0, LON0, e, n) for e, n in pts]
    return shapely.Polygon([(float(lon), float(lat)) for lat, lon in ll])


def _at(east: float, north: float) -> tuple[float, float]:
    lat, lon = offset_latlon(LAT0, LON0, east, north)
    return float(lat), float(lon)


def _write_geojson(path: Path, ids: list[Any], geoms: list[Any], key: str = "osm_id") -> Path:
    feats = [
        {
            "type": "Feature",
            "properties": {key: i},
            "geometry": json.loads(shapely.to_geojson(g)) if g is not None else None,
        }
        for i, g in zip(ids, geoms, strict=True)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


@pytest.fixture
def street(tmp_path: Path) -> Path:
    """Three buildings: a row north of the origin (w1, w2 with a 4 m gap) and one east (3)."""
    geoms = [_rect(-10, 20, -2, 30), _rect(2, 20, 10, 30), _rect(20, -5, 30, 5)]
    return _write_geojson(tmp_path / "street.geojson", ["w1", "w2", "3"], geoms)


# ---- ray casting ---------------------------------------------------------------------------------


def test_first_hit_distance_normal_and_incidence(street: Path) -> None:
    fp = read_footprints(street)
    lat, lon = _at(-6, 0)
    lab = cast_rays(fp, np.array([lat, lat]), np.array([lon, lon]), np.array([0.0, 90.0]))
    assert lab.labelled.all()
    assert list(fp.ids[lab.footprint]) == ["w1", "3"]
    # the facade of w1 is 20 m north, of "3" 26 m east (camera at 6 m west)
    np.testing.assert_allclose(lab.distance_m, [20.0, 26.0], atol=0.01)
    np.testing.assert_allclose(lab.normal_e, [0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(lab.normal_n, [-1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(lab.incidence_deg, [0.0, 0.0], atol=1e-4)
    hit = np.array([_at(-6, 20), _at(20, 0)])
    np.testing.assert_allclose(np.c_[lab.hit_lat, lab.hit_lon], hit, atol=1e-8)


def test_oblique_ray_reports_incidence(street: Path) -> None:
    fp = read_footprints(street)
    lat, lon = _at(-26, 0)  # 45 deg toward w1's facade: hits it at (-6, 20)
    lab = cast_rays(fp, np.array([lat]), np.array([lon]), np.array([45.0]))
    assert fp.ids[lab.footprint[0]] == "w1"
    np.testing.assert_allclose(lab.incidence_deg, [45.0], atol=1e-3)
    np.testing.assert_allclose(lab.distance_m, [20 * np.sqrt(2)], atol=0.01)


def test_gap_is_bridged_by_the_field_of_view_tolerance(street: Path) -> None:
    fp = read_footprints(street)
    lat, lon = _at(0, 0)  # straight north runs through the 4 m gap between w1 and w2
    args = (np.array([lat]), np.array([lon]), np.array([0.0]))
    strict = cast_rays(fp, *args, RaySettings(fov_tolerance_deg=0))
    assert strict.status[0] == REASONS.index(NO_HIT)
    loose = cast_rays(fp, *args, RaySettings(fov_tolerance_deg=10, fov_step_deg=2))
    # at +-2 deg the ray still passes; at +4 deg it meets w2's side wall 28.6 m out (first of the
    # two +-4 deg rays tried)
    assert loose.offset_deg[0] == pytest.approx(4.0) and fp.ids[loose.footprint[0]] == "w2"
    np.testing.assert_allclose(loose.distance_m, [2 / np.sin(np.radians(4))], rtol=1e-4)
    # beyond the maximum distance nothing is hit
    far = cast_rays(fp, *args, RaySettings(max_distance_m=15))
    assert far.status[0] == REASONS.index(NO_HIT)


def test_unlabelled_photos_are_counted_by_reason(street: Path) -> None:
    fp = read_footprints(street)
    inside = _at(-6, 25)
    ok = _at(-6, 0)
    lat = np.array([ok[0], np.nan, ok[0], ok[0], inside[0], ok[0]])
    lon = np.array([ok[1], np.nan, ok[1], ok[1], inside[1], ok[1]])
    head = np.array([0.0, 0.0, np.nan, 360.0, 0.0, 180.0])
    lab = cast_rays(fp, lat, lon, head)
    assert lab.reason_counts() == {
        NO_POSITION: 1,
        NO_HEADING: 1,
        HEADING_OUT_OF_RANGE: 1,
        INSIDE: 1,
        NO_HIT: 1,
    }
    assert lab.labelled.tolist() == [True, False, False, False, False, False]
    assert np.isnan(lab.hit_lat[1:]).all() and (lab.footprint[1:] == -1).all()


def test_chunks_do_not_change_labels(street: Path) -> None:
    fp = read_footprints(street)
    rng = np.random.default_rng(0)
    e, n = rng.uniform(-15, 15, 500), rng.uniform(-10, 10, 500)
    lat, lon = offset_latlon(LAT0, LON0, e, n)
    head = rng.uniform(0, 360, 500)
    a = cast_rays(fp, lat, lon, head, RaySettings(chunk=37))
    b = cast_rays(fp, lat, lon, head, RaySettings(chunk=100_000))
    np.testing.assert_array_equal(a.footprint, b.footprint)
    np.testing.assert_array_equal(a.distance_m, b.distance_m)
    assert 0 < a.labelled.sum() < 500


def test_footprint_uid_is_stable_and_keeps_numeric_ids() -> None:
    uid = footprint_uid(["123", "w123", "08b1f...gers", "123"])
    assert uid[0] == 123 and uid[3] == 123
    assert uid[1] != uid[2] and (uid[1:3] >= (1 << 62)).all()
    assert footprint_uid(["w123"])[0] == uid[1]


# ---- bad input -----------------------------------------------------------------------------------


def test_geoparquet_round_trip_and_crs_check(tmp_path: Path) -> None:
    geoms = np.array([_rect(0, 20, 8, 30), _rect(20, 0, 30, 8)], dtype=object)
    table = geoparquet_table(geoms, {"id": pa.array(["a", "b"])})
    pq.write_table(table, tmp_path / "ok.parquet")
    fp = read_footprints(tmp_path / "ok.parquet", "id")
    assert list(fp.ids) == ["a", "b"] and fp.source["crs"] == "OGC:CRS84"
    with pytest.raises(SbeError, match=r"ok\.parquet: no id column 'osm_id' \(columns: id"):
        read_footprints(tmp_path / "ok.parquet", "osm_id")
    geo = json.loads(table.schema.metadata[b"geo"])
    geo["columns"]["geometry"]["crs"] = {"id": {"authority": "EPSG", "code": 3857}}
    bad = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(bad, tmp_path / "merc.parquet")
    with pytest.raises(SbeError, match=r"merc\.parquet: .*CRS EPSG:3857, not WGS84"):
        read_footprints(tmp_path / "merc.parquet", "id")
    geo["columns"]["geometry"]["crs"] = {"id": {"authority": "OGC", "code": "CRS84"}}
    pq.write_table(
        table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), tmp_path / "c.parquet"
    )
    assert len(read_footprints(tmp_path / "c.parquet", "id")) == 2
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "plain.parquet")
    with pytest.raises(SbeError, match="no GeoParquet 'geo' metadata"):
        read_footprints(tmp_path / "plain.parquet", "id")


def test_projected_coordinates_are_one_clear_error(tmp_path: Path) -> None:
    geoms = [shapely.box(500000, 5800000, 500010, 5800010), shapely.box(0, 0, 200, 200)]
    path = _write_geojson(tmp_path / "utm.geojson", ["a", "b"], geoms)
    with pytest.raises(SbeError, match=r"utm\.geojson: coordinates are not WGS84 lon/lat"):
        read_footprints(path)


def test_bad_footprints_are_counted_skips_with_examples(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(4.89, 52.37), (4.8901, 52.3701), (4.8901, 52.37), (4.89, 52.3701)])
    geoms = [
        _rect(0, 20, 8, 30),
        bowtie,  # self-intersecting
        shapely.box(190, 10, 191, 11),  # lon out of range
        shapely.Point(4.89, 52.37),
        None,
        _rect(20, 0, 30, 8),
    ]
    ids = ["w1", "w2", "w3", "n4", "w5", None]
    fp = read_footprints(_write_geojson(tmp_path / "mixed.geojson", ids, geoms))
    assert list(fp.ids) == ["w1"]
    assert fp.skips.counts == {
        "missing_id": 1,
        "empty_geometry": 1,
        "not_a_polygon": 1,
        "coordinates_out_of_range": 1,
        "invalid_polygon": 1,
    }
    assert fp.skips.examples["invalid_polygon"] == ["row 1 (osm_id='w2')"]


def test_geojson_without_the_id_property(tmp_path: Path) -> None:
    path = _write_geojson(tmp_path / "x.geojson", ["a"], [_rect(0, 20, 8, 30)], key="name")
    with pytest.raises(SbeError, match=r"x\.geojson: no id column 'osm_id' .*found: name"):
        read_footprints(path)


# ---- the stage on a synthetic world --------------------------------------------------------------


def ingest_from_world(world: WorldPlan, folder: Path) -> dict[int, int]:
    """Ingest-like parts (images schema) of every view; returns image_id -> true building index.

    Camera positions and headings are the true ones; targets are the 3D Street View ones (the
    label stage replaces both when given metadata).
    """
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[int, int] = {}
    for plan in world.datasets:
        rows: dict[str, list[Any]] = {f.name: [] for f in IMAGES_SCHEMA}
        for v in plan.views:
            g = view_geometry(plan, v)
            image_id = int(make_uid(plan.dataset_id, v.patch_id))
            truth[image_id] = plan.targets[v.target_id].building
            vals = {
                "image_id": image_id,
                "target_uid": int(make_uid(plan.dataset_id, v.target_id)),
                "dataset_id": plan.dataset_id,
                "target_id": v.target_id,
                "patch_id": v.patch_id,
                "panorama_id": v.panorama_id,
                "target_lat": g.target_lat,
                "target_lon": g.target_lon,
                "target_height": float(g.target_enu[2]),
                "normal_x": g.normal[0],
                "normal_y": g.normal[1],
                "normal_z": 0.0,
                "camera_lat": g.camera_lat,
                "camera_lon": g.camera_lon,
                "camera_height": float(g.camera_enu[2]),
                "camera_distance": g.distance_m,
                "heading": g.heading_deg,
                "pitch": g.pitch_deg,
                "capture_date": None,
                "tar_file": f"/nowhere/{plan.dataset_id:04d}.tar",
                "member_name": f"{v.patch_id}.jpg",
                "tar_offset": 0,
                "tar_size": 1,
                "image_width": 64,
                "image_height": 64,
                "fingerprint": [0] * FINGERPRINT_DIM,
            }
            for k, x in vals.items():
                rows[k].append(x)
        n = len(rows["image_id"])
        for field in IMAGES_SCHEMA:  # source columns this test does not set are null
            if field.name not in rows or not rows[field.name]:
                rows[field.name] = [None] * n
        table = pa.table(rows, schema=IMAGES_SCHEMA)
        write_part(table, folder / f"{plan.dataset_id:04d}.parquet", {"stage": "ingest"})
    return truth


@pytest.fixture(scope="module")
def world_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("label-world")
    world = plan_world(40, 3, knobs_for(0.5), 10)
    truth = ingest_from_world(world, root / "images")
    n_fp = write_footprints(world, 3, root / "footprints.parquet")
    write_mapillary(world, MetadataNoise(), 3, root / "mapillary.geojson")
    return {"root": root, "world": world, "truth": truth, "footprints": n_fp}


def _cfg(inputs: dict[str, Any], out: Path, **kw: Any) -> LabelConfig:
    root = inputs["root"]
    settings: dict[str, Any] = {
        "input": root / "images",
        "footprints": root / "footprints.parquet",
        "metadata": root / "mapillary.geojson",
        "output": out,
    }
    return LabelConfig(**{**settings, **kw})


def _accuracy(out: Path, truth: dict[int, int]) -> tuple[float, int]:
    t = pq.read_table(sorted(p for p in out.glob("[0-9]*.parquet")))
    got = t.column("footprint_id").to_pylist()
    ids = t.column("image_id").to_pylist()
    right = sum(g == f"w{truth[i]}" for g, i in zip(got, ids, strict=True))
    return right / len(truth), t.num_rows


def test_label_stage_on_a_synthetic_world(world_inputs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "labelled"
    m = label_stage.run(_cfg(world_inputs, out))
    truth = world_inputs["truth"]
    accuracy, n_labelled = _accuracy(out, truth)
    assert accuracy >= 0.9, accuracy
    assert m.rows["photos"] == len(truth)
    assert m.rows["labelled"] == n_labelled
    assert n_labelled + sum(m.skipped.values()) == len(truth)
    unl = pq.read_table(out / label_stage.UNLABELLED)
    assert unl.num_rows == sum(m.skipped.values())
    assert set(unl.column("reason").to_pylist()) <= set(m.skipped)
    # target columns: hit point within the ray length, facade normal a unit vector
    t = pq.read_table(sorted(out.glob("[0-9]*.parquet")))
    assert t.schema.field("target_lat").type == pa.float64()
    assert set(IMAGES_SCHEMA.names) <= set(t.column_names)
    d = t.column("camera_distance").to_numpy()
    assert (d > 0).all() and (d <= 60.0 + 1e-3).all()
    nrm = np.hypot(t.column("normal_x").to_numpy(), t.column("normal_y").to_numpy())
    np.testing.assert_allclose(nrm, 1.0, atol=1e-5)
    uid = t.column("target_uid").to_numpy()
    np.testing.assert_array_equal(uid, footprint_uid(t.column("footprint_id").to_pylist()))
    assert len(np.unique(uid)) == len(set(t.column("footprint_id").to_pylist()))
    b = pq.read_table(out / label_stage.BUILDINGS)
    assert b.num_rows == len(np.unique(uid)) and sum(b.column("photos").to_pylist()) == len(t)
    # OSM-style ids outside a synth folder: OpenStreetMap data (ODbL); metadata: Mapillary
    assert m.extra["data_sources"] == ["mapillary", "osm_footprints"]
    assert m.extra["metadata"]["fields_used"] == {
        "geometry": len(truth),
        "compass_angle": len(truth),
    }
    assert label_stage.run(_cfg(world_inputs, out)).up_to_date


def test_label_accuracy_falls_with_noise(world_inputs: dict[str, Any], tmp_path: Path) -> None:
    """With exact positions and headings every view hits its own building."""
    world, truth = world_inputs["world"], world_inputs["truth"]
    feats = view_features(world, MetadataNoise(0.0, 0.0), 3)
    path = tmp_path / "exact.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    out = tmp_path / "exact"
    label_stage.run(_cfg(world_inputs, out, metadata=path))
    accuracy, _ = _accuracy(out, truth)
    assert accuracy == 1.0
    noisy = tmp_path / "noisy.geojson"
    feats = view_features(world, MetadataNoise(6.0, 10.0), 3)
    noisy.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    label_stage.run(_cfg(world_inputs, tmp_path / "noisy", metadata=noisy))
    assert _accuracy(tmp_path / "noisy", truth)[0] < 0.85


def test_label_without_metadata_uses_the_table(
    world_inputs: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "plain"
    m = label_stage.run(_cfg(world_inputs, out, metadata=None))
    assert _accuracy(out, world_inputs["truth"])[0] == 1.0
    assert m.extra["metadata"] is None


def test_metadata_misses_and_panoramas_are_counted(
    world_inputs: dict[str, Any], tmp_path: Path
) -> None:
    feats = view_features(world_inputs["world"], MetadataNoise(0.0, 0.0), 3)
    feats[0]["properties"]["is_pano"] = True
    feats[1]["properties"]["compass_angle"] = 400.0
    del feats[2]
    path = tmp_path / "m.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    m = label_stage.run(_cfg(world_inputs, tmp_path / "out", metadata=path))
    assert m.skipped == {"panorama": 1, "heading_out_of_range": 1, "not_in_metadata": 1}


def test_no_hit_at_all_is_an_error(world_inputs: dict[str, Any], tmp_path: Path) -> None:
    far = _write_geojson(tmp_path / "far.geojson", ["w1"], [shapely.box(10, 10, 10.001, 10.001)])
    with pytest.raises(SbeError, match=r"no photo of .* hit a footprint"):
        label_stage.run(_cfg(world_inputs, tmp_path / "out", footprints=far))


def test_label_crash_matrix(world_inputs: dict[str, Any], tmp_path: Path) -> None:
    def run(work: Path, settings: dict[str, Any]) -> Any:
        return label_stage.run(_cfg(world_inputs, work / "out", **settings))

    report = crash_matrix("label", run, tmp_path, changed={"max_distance_m": 20.0})
    assert report.points["same"] >= 4  # marker, parts, unlabelled, buildings, manifest


# ---- the whole route on the tiny pipeline's world ------------------------------------------------


def test_route_metadata_and_footprints_to_a_trained_head(tiny_pipeline, tmp_path: Path) -> None:
    """synth (footprints + Mapillary-style metadata) -> ingest -> label -> backbone -> split ->
    train, scored against the synthetic truth; the card's data line says synthetic."""
    from sbe.config import BackboneConfig, SplitConfig, TrainConfig
    from sbe.stages import backbone as backbone_stage
    from sbe.stages import split as split_stage
    from sbe.stages import train as train_stage
    from sbe.stages.publish import data_sources

    cfg, _ = tiny_pipeline
    raw = Path(cfg.section("synth").output)
    images = Path(cfg.section("ingest").output)
    m = label_stage.run(
        LabelConfig(
            input=images,
            footprints=raw / "footprints.parquet",
            metadata=raw / "mapillary.geojson",
            output=tmp_path / "labelled",
        )
    )
    truth = pq.read_table(raw / "truth.parquet")
    uid = make_uid(truth["dataset_id"].to_numpy(), truth["patch_id"].to_numpy())
    true_building = dict(zip(uid.tolist(), truth["building_index"].to_pylist(), strict=True))
    accuracy, _ = _accuracy(tmp_path / "labelled", true_building)
    assert accuracy >= 0.9, accuracy
    assert m.extra["data_sources"] == ["synthetic"]

    bb = cfg.section("backbone").model_copy(
        update={"input": tmp_path / "labelled", "output": tmp_path / "backbone"}
    )
    assert isinstance(bb, BackboneConfig)
    backbone_stage.run(bb)
    sm = split_stage.run(
        SplitConfig(
            input=tmp_path / "backbone",
            output=tmp_path / "split",
            identity="target",
            cell_size_m=150,
        )
    )
    assert all(sm.rows[s] > 0 for s in ("train", "val", "test"))
    tm = train_stage.run(
        TrainConfig(
            input=tmp_path / "split",
            neighbors=None,
            output=tmp_path / "run",
            epochs=1,
            min_steps_per_epoch=5,
            device="cpu",
        )
    )
    assert "head_below_backbone" in tm.extra["val_vs_backbone"]
    assert data_sources(tmp_path / "split") == ["synthetic"]


def test_benchmark_runs_small() -> None:
    """benchmarks/label_footprints.py still runs against the library (tiny sizes, no timing)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "label_footprints.py"
    args = ["--footprints", "3000", "--photos", "2000", "--loop-sample", "100"]
    args += ["--buildings", "12", "--repeats", "1"]
    proc = subprocess.run(
        [sys.executable, str(bench), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "agree on 100.00%" in proc.stdout, proc.stdout
    assert "| 0 | 0 | 100.0% | 100.0% |" in proc.stdout, proc.stdout
