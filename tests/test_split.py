"""Split stage: building identities, geographic cells, hash assignment, streaming output, manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_split_fixtures import (
    BACKBONE_IDENTITY,
    generate,
    make_images,
    read_splits,
    write_backbone_dir,
)
from typer.testing import CliRunner

import sbe.data.identity as identity_mod
from sbe.cli import app
from sbe.config import SplitConfig
from sbe.data.geosplit import assign_splits, cell_ids, nearest_distance_m
from sbe.data.identity import (
    group_targets,
    identities_from_labels,
    neighbour_pairs,
    positions_m,
)
from sbe.errors import SbeError
from sbe.sphere import haversine_km, offset_latlon
from sbe.stages import split as split_stage
from sbe.storage import read_part_meta, to_numpy_matrix

LAT0, LON0 = 45.5, -73.6


def _points(east_north: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    en = np.asarray(east_north, dtype=np.float64)
    n = len(en)
    return offset_latlon(np.full(n, LAT0), np.full(n, LON0), en[:, 0], en[:, 1])


def _normal(deg: float) -> list[float]:
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0]


# ---- grouping -------------------------------------------------------------------------------


def test_two_points_on_one_wall_are_one_identity() -> None:
    lat, lon = _points([(0, 0), (6, 0)])
    labels = group_targets(lat, lon, np.array([_normal(90), _normal(90)]), 15, 30)
    assert labels[0] == labels[1]


def test_opposite_facades_of_a_street_stay_apart() -> None:
    # 12 m apart (within the radius) but facing each other across the street
    lat, lon = _points([(0, 0), (0, 12)])
    labels = group_targets(lat, lon, np.array([_normal(90), _normal(270)]), 15, 30)
    assert labels[0] != labels[1]


def test_angle_threshold_and_radius() -> None:
    lat, lon = _points([(0, 0), (5, 0), (10, 0), (200, 0), (210, 0)])
    normals = np.array([_normal(90), _normal(115), _normal(150), _normal(0), _normal(0)])
    labels = group_targets(lat, lon, normals, 15, 30)
    assert labels[0] == labels[1]  # 25 degrees apart
    assert labels[2] != labels[1] and labels[2] != labels[0]  # 35 and 60 degrees
    assert labels[3] == labels[4] != labels[0]
    far = group_targets(*_points([(0, 0), (16, 0)]), np.array([_normal(0)] * 2), 15, 30)
    assert far[0] != far[1]


def test_chains_join_transitively() -> None:
    # A-B and B-C are 10 m apart, A-C 20 m: one wall, one identity
    lat, lon = _points([(0, 0), (10, 0), (20, 0), (60, 0)])
    labels = group_targets(lat, lon, np.array([_normal(90)] * 4), 15, 30)
    assert labels[0] == labels[1] == labels[2] != labels[3]


def test_missing_normal_never_joins() -> None:
    lat, lon = _points([(0, 0), (3, 0)])
    labels = group_targets(lat, lon, np.array([_normal(90), [np.nan, 0, 0]]), 15, 30)
    assert labels[0] != labels[1]
    labels = group_targets(lat, lon, np.array([_normal(90), [0, 0, 0]]), 15, 30)
    assert labels[0] != labels[1]


def test_identities_have_stable_ids_and_centroids() -> None:
    lat, lon = _points([(0, 0), (10, 0), (500, 0)])
    uids = np.array([70, 30, 50], dtype=np.int64)
    labels = np.array([5, 5, 2])
    ident = identities_from_labels(uids, labels, lat, lon)
    assert list(ident.building_id) == [30, 50]  # smallest uid, ascending
    assert list(ident.target_identity) == [0, 0, 1]
    assert list(ident.n_targets) == [2, 1]
    mid_lat, mid_lon = _points([(5, 0)])
    assert haversine_km(ident.lat_deg[0], ident.lon_deg[0], mid_lat[0], mid_lon[0]) * 1000 < 0.01


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 120),
    seed=st.integers(0, 10_000),
    radius=st.floats(1.0, 40.0),
    block=st.sampled_from([16, 1000, 4_000_000]),
)
def test_neighbour_pairs_equal_brute_force(n: int, seed: int, radius: float, block: int) -> None:
    rng = np.random.default_rng(seed)
    en = rng.uniform(0, 80, size=(n, 2))
    en[: n // 4] = en[0] if n else en[: n // 4]  # a stack of duplicates: dense spot
    lat, lon = _points([tuple(p) for p in en]) if n else (np.zeros(0), np.zeros(0))
    old = identity_mod._MAX_PAIR_BLOCK
    identity_mod._MAX_PAIR_BLOCK = block  # force many small chunks
    try:
        i, j = neighbour_pairs(positions_m(lat, lon), radius)
    finally:
        identity_mod._MAX_PAIR_BLOCK = old
    xyz = positions_m(lat, lon)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    ti, tj = np.nonzero(np.triu(d <= radius, k=1))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(
        zip(ti.tolist(), tj.tolist(), strict=True)
    )


# ---- cells and assignment ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-80, 80),
    lon=st.floats(-180, 179.99),
    de=st.floats(-1500, 1500),
    dn=st.floats(-1500, 1500),
    cell=st.sampled_from([100.0, 500.0, 2000.0]),
)
def test_cells_are_about_square(lat: float, lon: float, de: float, dn: float, cell: float) -> None:
    lat2, lon2 = offset_latlon(np.array([lat]), np.array([lon]), np.array([de]), np.array([dn]))
    a, b = cell_ids(np.array([lat, lat2[0]]), np.array([lon, lon2[0]]), cell)
    dist_m = haversine_km(lat, lon, lat2[0], lon2[0]) * 1000
    if a == b:
        assert dist_m <= cell * np.sqrt(2) * 1.1
    if dist_m > cell * np.sqrt(2) * 1.1:
        assert a != b


def test_cell_ids_fixed_grid() -> None:
    lat, lon = _points([(0, 0), (1, 1), (2000, 0), (0, 2000)])
    c = cell_ids(lat, lon, 500)
    assert c.dtype == np.int64
    assert len(set(c[2:])) == 2 and c[2] not in c[:2] and c[3] not in c[:2]
    # the grid is global: the same point gets the same cell whatever else is in the batch
    assert cell_ids(lat[:1], lon[:1], 500)[0] == c[0]
    # across the antimeridian both sides get valid, different cells
    ant = cell_ids(np.array([10.0, 10.0]), np.array([179.999, -179.999]), 500)
    assert ant[0] != ant[1] and (ant >= 0).all()


def test_split_ratios_honoured_on_many_cells() -> None:
    cells = np.arange(50_000, dtype=np.int64) * 7919
    s = assign_splits(cells, [0.7, 0.15, 0.15], "sbe")
    frac = np.bincount(s, minlength=3) / len(s)
    np.testing.assert_allclose(frac, [0.7, 0.15, 0.15], atol=0.01)
    assert not (assign_splits(cells, [0.8, 0.0, 0.2], "x") == 1).any()
    other_salt = assign_splits(cells, [0.7, 0.15, 0.15], "other")
    assert 0.4 < (other_salt == s).mean() < 0.7  # a different draw, not a relabelling


@settings(max_examples=30, deadline=None)
@given(
    cells=st.lists(st.integers(0, 2**60), min_size=1, max_size=200, unique=True),
    drop=st.integers(0, 199),
)
def test_assignment_stable_when_cells_added_or_removed(cells: list[int], drop: int) -> None:
    arr = np.asarray(cells, dtype=np.int64)
    base = assign_splits(arr, [0.7, 0.15, 0.15], "s")
    fewer = np.delete(arr, drop % len(arr))
    more = np.concatenate([arr, arr[::-1] + 1])
    np.testing.assert_array_equal(
        assign_splits(fewer, [0.7, 0.15, 0.15], "s"), np.delete(base, drop % len(arr))
    )
    np.testing.assert_array_equal(assign_splits(more, [0.7, 0.15, 0.15], "s")[: len(arr)], base)


def test_nearest_distance_m() -> None:
    qlat, qlon = _points([(0, 0), (100, 0)])
    rlat, rlon = _points([(30, 40), (1000, 0)])
    np.testing.assert_allclose(
        nearest_distance_m(qlat, qlon, rlat, rlon), [50, np.hypot(70, 40)], atol=0.01
    )
    assert np.isinf(nearest_distance_m(qlat, qlon, rlat[:0], rlon[:0])).all()


# ---- the stage ---------------------------------------------------------------------------------


def _run(inp: Path, out: Path, **kw) -> object:
    return split_stage.run(SplitConfig(input=inp, output=out, **kw))


@pytest.fixture
def gen(tmp_path: Path):
    # 1 km grid per city with 50 m spacing: several 500 m cells per city
    return generate(tmp_path / "backbone", 240, seed=3, spacing_m=50.0)


def test_split_output_rows_identities_and_cells(gen, tmp_path: Path) -> None:
    out = tmp_path / "split"
    m = _run(gen.folder, out, cell_size_m=300)
    tables = read_splits(out)
    src = gen.table
    true_building = dict(zip(src["image_id"].to_pylist(), gen.building.tolist(), strict=True))
    all_ids = np.concatenate([t["image_id"].to_numpy() for t in tables.values()])
    assert len(all_ids) == len(set(all_ids))  # nothing duplicated
    # nothing lost except the counted singleton drops
    dropped = m.skipped.get("singleton_identity", 0)
    assert len(all_ids) + dropped == src.num_rows
    assert m.rows == {"input_images": src.num_rows, **{s: t.num_rows for s, t in tables.items()}}
    # identities are exactly the generator's buildings; no building or cell in two splits
    seen_building: dict[int, str] = {}
    seen_cell: dict[int, str] = {}
    truth_of: dict[int, set[int]] = {}
    for s, t in tables.items():
        for bid, cid, iid in zip(
            t["building_id"].to_pylist(),
            t["cell_id"].to_pylist(),
            t["image_id"].to_pylist(),
            strict=True,
        ):
            assert seen_building.setdefault(bid, s) == s
            assert seen_cell.setdefault(cid, s) == s
            truth_of.setdefault(bid, set()).add(true_building[iid])
    assert all(len(v) == 1 for v in truth_of.values())  # one identity = one true building
    assert len({next(iter(v)) for v in truth_of.values()}) == len(truth_of)  # and vice versa
    assert m.extra["grouping"]["identities"] == len(set(gen.building.tolist()))
    # every split got something with these sizes, and the manifest counts match the files
    for s, t in tables.items():
        stats = m.extra["splits"][s]
        assert t.num_rows == stats["images"] > 0
        assert len(set(t["building_id"].to_pylist())) == stats["identities"]
        assert len(set(t["cell_id"].to_pylist())) == stats["cells"]


def test_singletons_dropped_from_train_val_kept_in_test(gen, tmp_path: Path) -> None:
    out = tmp_path / "split"
    m = _run(gen.folder, out, cell_size_m=300)
    tables = read_splits(out)
    counts = {}
    for s, t in tables.items():
        _, n = np.unique(t["building_id"].to_numpy(), return_counts=True)
        counts[s] = int((n == 1).sum())
        assert counts[s] == m.extra["splits"][s]["singleton_identities"]
    assert counts["train"] == counts["val"] == 0
    assert counts["test"] > 0
    assert m.skipped["singleton_identity"] == m.extra["grouping"]["dropped_singleton_images"] > 0
    m2 = _run(gen.folder, tmp_path / "split2", cell_size_m=300, singletons_in_test=False)
    t2 = read_splits(tmp_path / "split2")["test"]
    _, n2 = np.unique(t2["building_id"].to_numpy(), return_counts=True)
    assert (n2 > 1).all()
    assert m2.skipped["singleton_identity"] == m.skipped["singleton_identity"] + counts["test"]


def test_leakage_check_matches_brute_force(gen, tmp_path: Path) -> None:
    out = tmp_path / "split"
    m = _run(gen.folder, out, cell_size_m=300)
    tables = read_splits(out)

    def pos(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        return t["target_lat"].to_numpy(), t["target_lon"].to_numpy()

    tl, tn = pos(tables["train"])
    for name in ("val", "test"):
        ql, qn = pos(tables[name])
        d = haversine_km(ql[:, None], qn[:, None], tl[None], tn[None]).min() * 1000
        got = m.extra["leakage"][f"{name}_train"]["min_distance_m"]
        assert got > 0
        assert got == pytest.approx(d, abs=0.05)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_embeddings_and_columns_carried_unchanged(tmp_path: Path, dtype) -> None:
    g = generate(tmp_path / "bb", 60, seed=5, dtype=dtype, dim=12)
    _run(g.folder, tmp_path / "split")
    src = {r: i for i, r in enumerate(g.table["image_id"].to_pylist())}
    src_emb = to_numpy_matrix(g.table["embedding"])
    src_fp = to_numpy_matrix(g.table["fingerprint"])
    for s, t in read_splits(tmp_path / "split").items():
        f = t.schema.field("embedding")
        assert f.type == pa.list_(pa.from_numpy_dtype(dtype), 12), s
        rows = [src[i] for i in t["image_id"].to_pylist()]
        np.testing.assert_array_equal(to_numpy_matrix(t["embedding"]), src_emb[rows])
        np.testing.assert_array_equal(to_numpy_matrix(t["fingerprint"]), src_fp[rows])
        np.testing.assert_array_equal(
            t["target_lat"].to_numpy(), g.table["target_lat"].to_numpy()[rows]
        )
        assert read_part_meta(tmp_path / "split" / f"{s}.parquet")["backbone"] == BACKBONE_IDENTITY
        # deterministic row order: input order (part name, then row)
        assert rows == sorted(rows)


def test_small_read_batches_give_the_same_files(gen, tmp_path: Path, monkeypatch) -> None:
    _run(gen.folder, tmp_path / "a", cell_size_m=300)
    monkeypatch.setattr(split_stage, "READ_BATCH_ROWS", 7)
    _run(gen.folder, tmp_path / "b", cell_size_m=300)
    for s, t in read_splits(tmp_path / "a").items():
        assert t.equals(pq.read_table(tmp_path / "b" / f"{s}.parquet"))


def test_stable_when_data_added_or_removed(tmp_path: Path) -> None:
    base, _ = make_images(160, seed=7, spacing_m=50.0)
    extra, _ = make_images(80, seed=8, spacing_m=50.0, dataset_offset=10)
    write_backbone_dir(tmp_path / "a", base)
    write_backbone_dir(tmp_path / "b", pa.concat_tables([base, extra]))
    write_backbone_dir(tmp_path / "c", base.slice(0, base.num_rows // 2))
    where = {}
    for name in "abc":
        _run(tmp_path / name, tmp_path / f"s{name}", cell_size_m=300)
        where[name] = {
            iid: s
            for s, t in read_splits(tmp_path / f"s{name}").items()
            for iid in t["image_id"].to_pylist()
        }
    # an image keeps its split when other data comes or goes (its building is unchanged; a
    # building cut in half by the removal may only lose images to the singleton rule)
    common_ab = set(where["a"]) & set(where["b"])
    assert len(common_ab) > 0.9 * len(where["a"])
    assert all(where["a"][i] == where["b"][i] for i in common_ab)
    common_ac = set(where["a"]) & set(where["c"])
    assert len(common_ac) > 0.4 * len(where["a"])
    assert all(where["a"][i] == where["c"][i] for i in common_ac)


def test_identity_target_mode(gen, tmp_path: Path) -> None:
    m = _run(gen.folder, tmp_path / "split", identity="target")
    for t in read_splits(tmp_path / "split").values():
        np.testing.assert_array_equal(t["building_id"].to_numpy(), t["target_uid"].to_numpy())
    assert m.extra["grouping"]["identities"] == m.extra["grouping"]["targets"]


def test_bad_rows_are_counted(tmp_path: Path) -> None:
    table, _ = make_images(30, seed=2)
    lat = table["target_lat"].to_numpy().copy()
    lat[0] = 95.0  # out of range: an error in the data (NaN means "no position", kept)
    table = table.set_column(
        table.schema.get_field_index("target_lat"), "target_lat", pa.array(lat)
    )
    table = pa.concat_tables([table, table.slice(5, 3)])  # three duplicated images
    write_backbone_dir(tmp_path / "bb", table)
    m = _run(tmp_path / "bb", tmp_path / "split")
    assert m.skipped["bad_target_position"] == 1
    assert m.skipped["duplicate_image_id"] == 3
    total = sum(t.num_rows for t in read_splits(tmp_path / "split").values())
    assert total + sum(m.skipped.values()) == table.num_rows


def test_mixed_backbones_and_bad_inputs_are_errors(tmp_path: Path) -> None:
    table, _ = make_images(20, seed=1)
    paths = write_backbone_dir(tmp_path / "bb", table)
    from sbe.storage import write_part

    write_part(pq.read_table(paths[0]), paths[0], {"backbone": {"name": "other", "dim": 16}})
    with pytest.raises(SbeError, match="different backbone"):
        _run(tmp_path / "bb", tmp_path / "split")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        SbeError, match=r"no backbone embeddings in .*: pass --in DIR or run `sbe backbone` first"
    ):
        _run(tmp_path / "empty", tmp_path / "split2")
    t32, _ = make_images(20, seed=1, dtype=np.float32)
    write_backbone_dir(tmp_path / "mixed", table, n_parts=1)
    write_part(t32, tmp_path / "mixed" / "zz.parquet", {"backbone": BACKBONE_IDENTITY})
    with pytest.raises(SbeError, match="embedding type"):
        _run(tmp_path / "mixed", tmp_path / "split3")


def test_rerun_skips_and_change_redoes(gen, tmp_path: Path) -> None:
    out = tmp_path / "split"
    m1 = _run(gen.folder, out)
    assert not m1.up_to_date
    mtime = (out / "train.parquet").stat().st_mtime_ns
    m2 = _run(gen.folder, out)
    assert m2.up_to_date and (out / "train.parquet").stat().st_mtime_ns == mtime
    m3 = _run(gen.folder, out, salt="different")
    assert not m3.up_to_date
    part = sorted(gen.folder.glob("*.parquet"))[0]
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 10**9))
    assert not _run(gen.folder, out, salt="different").up_to_date
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    saved = json.loads((out / "_manifest.json").read_text())
    assert saved["extra"]["backbone"] == BACKBONE_IDENTITY
    assert set(saved["extra"]["leakage"]) == {"val_train", "test_train"}


def test_cli_split(gen, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "split"
    res = runner.invoke(
        app,
        [
            "split",
            "--in",
            str(gen.folder),
            "--out",
            str(out),
            "--identity",
            "target",
            "--cell-size-m",
            "800",
        ],
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "_manifest.json").read_text())
    assert saved["config"]["identity"] == "target" and saved["config"]["cell_size_m"] == 800
    assert "train" in res.output
    res = runner.invoke(
        app, ["split", "--in", str(gen.folder), "--out", str(out), "--identity", "x"]
    )
    assert res.exit_code == 2


def test_streaming_part_is_atomic(tmp_path: Path) -> None:
    from sbe.data.parquet_stream import StreamingPart

    schema = pa.schema([pa.field("a", pa.int64(), nullable=False)])
    path = tmp_path / "p.parquet"
    with (
        pytest.raises(RuntimeError),
        StreamingPart(path, schema, {"x": 1}, row_group_rows=4) as part,
    ):
        part.write(pa.table({"a": np.arange(10)}, schema=schema))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with StreamingPart(path, schema, {"x": 2}, row_group_rows=4) as part:
        for s in range(0, 10, 3):
            part.write(pa.table({"a": np.arange(s, min(s + 3, 10))}, schema=schema))
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 3  # 4 + 4 + 2 rows
    assert pq.read_table(path)["a"].to_pylist() == list(range(10))
    assert read_part_meta(path) == {"x": 2}


def _without_positions(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table`` with target lat/lon NaN in ``rows`` (photos with an id but no coordinates)."""
    for name in ("target_lat", "target_lon"):
        v = table[name].to_numpy().copy()
        v[rows] = np.nan
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(v))
    return table


def test_identities_without_coordinates_are_split_by_hash(tmp_path: Path) -> None:
    table, building = make_images(80, seed=4)
    uid = table["target_uid"].to_numpy()
    # half the buildings lose every position: they can only be assigned by identity
    lost = np.isin(building, np.unique(building)[::2])
    write_backbone_dir(tmp_path / "bb", _without_positions(table, np.flatnonzero(lost)))
    m = _run(tmp_path / "bb", tmp_path / "split", cell_size_m=300)
    assert "bad_target_position" not in m.skipped
    un = m.extra["unlocated"]
    assert un["images_without_position"] == int(lost.sum())
    assert "salted hash" in un["assignment"]
    splits = read_splits(tmp_path / "split")
    where: dict[int, str] = {}
    for name, t in splits.items():
        for u, cell in zip(t["target_uid"].to_numpy(), t["cell_id"].to_numpy(), strict=True):
            assert where.setdefault(int(u), name) == name  # a target never spans two splits
            assert (cell == -1) == bool(lost[np.flatnonzero(uid == u)[0]])
    lost_uids = np.unique(uid[lost])
    got = {where[int(u)] for u in lost_uids if int(u) in where}
    assert got == {"train", "val", "test"}  # 40 identities: the hash reaches every split
    # the assignment depends on the salt and on nothing else
    m2 = _run(tmp_path / "bb", tmp_path / "split2", cell_size_m=300, salt="other")
    other = {
        int(u): name
        for name, t in read_splits(tmp_path / "split2").items()
        for u in t["target_uid"].to_numpy()
    }
    assert any(other.get(int(u)) != where.get(int(u)) for u in lost_uids)
    assert m2.extra["unlocated"]["identities"] == m.extra["unlocated"]["identities"]


def test_no_coordinates_at_all_still_trains(tmp_path: Path) -> None:
    table, _ = make_images(60, seed=5)
    write_backbone_dir(tmp_path / "bb", _without_positions(table, np.arange(table.num_rows)))
    m = _run(tmp_path / "bb", tmp_path / "split", identity="building")
    assert all(m.rows[s] > 0 for s in ("train", "val", "test"))
    assert m.extra["grouping"]["identities"] == m.extra["grouping"]["targets"]
    assert "warnings" not in m.extra


def test_small_area_shrinks_cells_and_says_so(tmp_path: Path) -> None:
    # 30 buildings 60 m apart in one city: a few 2 km cells only
    table, _ = make_images(30, seed=6, cities=[(45.5017, -73.5673)])
    write_backbone_dir(tmp_path / "bb", table)
    m = _run(tmp_path / "bb", tmp_path / "split", cell_size_m=2000)
    used = m.extra["cell_size_m"]["used"]
    assert m.extra["cell_size_m"]["configured"] == 2000 and used < 2000
    assert all(m.rows[s] > 0 for s in ("train", "val", "test"))
    (warning,) = m.extra["warnings"]
    assert f"used {used:g} m cells" in warning and "--cell-size-m" in warning
    # a large enough area keeps the configured size and says nothing
    big = _run(tmp_path / "bb", tmp_path / "split-small-cells", cell_size_m=120)
    assert big.extra["cell_size_m"]["used"] == 120 and "warnings" not in big.extra


def test_too_small_for_any_cell_size_is_said(tmp_path: Path) -> None:
    table, _ = make_images(2, seed=7, cities=[(45.5017, -73.5673)])
    write_backbone_dir(tmp_path / "bb", table)
    m = _run(tmp_path / "bb", tmp_path / "split")
    assert m.extra["cell_size_m"]["used"] == 500
    (warning,) = m.extra["warnings"]
    assert "too small for a geographic split" in warning


def test_identity_auto_is_per_footprint_after_label(tmp_path: Path) -> None:
    """``identity = auto``: each footprint is one identity when `sbe label` is upstream."""
    from sbe.config import SplitConfig
    from sbe.stages.split import identity_rule
    from sbe.storage import Manifest, write_manifest
    from sbe.storage.artifacts import BackboneDir
    from sbe.storage.lineage import Lineage, LineageStep

    folder = tmp_path / "backbone"
    folder.mkdir()
    cfg = SplitConfig(input=folder)
    steps = [
        LineageStep(stage="ingest", config_hash="a"),
        LineageStep(stage="backbone", config_hash="b"),
    ]
    write_manifest(folder, Manifest(stage="backbone", lineage=Lineage(steps=steps)))
    assert identity_rule(cfg, BackboneDir(folder)) == "building"
    labelled = [steps[0], LineageStep(stage="label", config_hash="c"), steps[1]]
    write_manifest(folder, Manifest(stage="backbone", lineage=Lineage(steps=labelled)))
    assert identity_rule(cfg, BackboneDir(folder)) == "target"
    assert identity_rule(SplitConfig(input=folder, identity="building"), BackboneDir(folder)) == (
        "building"
    )
