"""sbe aggregate: per-OSMID mean vectors (re-normalised), image counts, GeoParquet."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_publish_fixtures import make_tiny_model, packaged_parquet

from sbe.config import AggregateConfig, EmbedConfig
from sbe.errors import SbeError
from sbe.inference.buildings import mean_embeddings
from sbe.stages import aggregate, embed
from sbe.storage import fixed_size_list, to_numpy_matrix
from sbe.storage.schemas import embed_schema

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def brute_force(ids: list, emb: np.ndarray) -> dict:
    out: dict = {}
    for i, e in zip(ids, emb, strict=True):
        if i is not None:
            out.setdefault(i, []).append(e)
    return {
        k: (len(v), np.sum(v, axis=0) / np.linalg.norm(np.sum(v, axis=0))) for k, v in out.items()
    }


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(st.one_of(st.none(), st.integers(-3, 12)), min_size=0, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    as_string=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_mean_embeddings_matches_brute_force(
    tmp_path: Path, ids: list, cuts: list, as_string: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(ids), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    if as_string:
        ids = [None if i is None else f"node/{i}" for i in ids]
    id_type = pa.string() if as_string else pa.int64()
    bounds = sorted({0, len(ids), *[min(c, len(ids)) for c in cuts]})
    parts = []
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        t = pa.table(
            {
                "OSMID": pa.array(ids[a:b], id_type),
                "row_index": pa.array(range(a, b), pa.int64()),
                "embedding": fixed_size_list(emb[a:b]),
            },
            schema=embed_schema(id_type, 8),
        )
        parts.append(tmp_path / f"{seed}-{k}.parquet")
        pq.write_table(t, parts[-1])
    got = mean_embeddings(parts, 8, id_type)
    want = brute_force(ids, emb)
    keys = got.keys.to_pylist()
    assert keys == sorted(want)
    assert got.null_ids == sum(i is None for i in ids)
    for k, n, v in zip(keys, got.counts, got.vectors, strict=True):
        assert n == want[k][0]
        np.testing.assert_allclose(v, want[k][1], atol=1e-5)


def test_buildings_and_geoparquet(tmp_path: Path, model: Path) -> None:
    import geopandas

    inp = packaged_parquet(
        tmp_path / "in.parquet", 40, locations=True, bad={4: b"junk"}, images_per_building=4
    )
    embed.run(EmbedConfig(input=inp, output=tmp_path / "emb", model=model, chunk_rows=7))
    m = aggregate.run(AggregateConfig(input=[tmp_path / "emb"], output=tmp_path / "b"))
    assert m.rows == {"images": 39, "buildings": 10, "located buildings": 10}
    t = pq.read_table(tmp_path / "b" / "buildings.parquet")
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 16)
    assert t.schema.field("OSMID").type == pa.int64()
    assert t["OSMID"].to_pylist() == list(range(1000, 1010))
    assert t["image_count"].to_pylist() == [4, 3, *[4] * 8]  # row 4 failed to decode

    parts = pq.read_table(tmp_path / "emb" / "parts")
    emb = to_numpy_matrix(parts["embedding"])
    ids = parts["OSMID"].to_pylist()
    want = brute_force(ids, emb)
    vecs = to_numpy_matrix(t["embedding"])
    for k, v in zip(t["OSMID"].to_pylist(), vecs, strict=True):
        np.testing.assert_allclose(v, want[k][1], atol=1e-5)

    g = geopandas.read_parquet(tmp_path / "b" / "buildings.geoparquet")
    assert g.crs.to_epsg() == 4326
    assert len(g) == 10 and list(g.geometry.geom_type.unique()) == ["Point"]
    np.testing.assert_allclose(g.geometry.x, -73.5 - 0.001 * np.arange(10), atol=1e-9)
    np.testing.assert_allclose(g.geometry.y, 45.0 + 0.001 * np.arange(10), atol=1e-9)
    assert g["image_count"].tolist() == t["image_count"].to_pylist()
    meta = json.loads(pq.read_schema(tmp_path / "b" / "buildings.geoparquet").metadata[b"geo"])
    assert meta["columns"]["geometry"]["encoding"] == "WKB"

    again = aggregate.run(AggregateConfig(input=[tmp_path / "emb"], output=tmp_path / "b"))
    assert again.up_to_date


def test_locations_file_partial(tmp_path: Path, model: Path) -> None:
    inp = packaged_parquet(tmp_path / "in.parquet", 12, images_per_building=3)  # no lat/lon
    embed.run(EmbedConfig(input=inp, output=tmp_path / "emb", model=model))
    m = aggregate.run(AggregateConfig(input=[tmp_path / "emb"], output=tmp_path / "a"))
    assert not (tmp_path / "a" / "buildings.geoparquet").exists()
    assert "lat" not in pq.read_schema(tmp_path / "a" / "buildings.parquet").names
    assert m.rows["located buildings"] == 0
    # string ids that cast to the int64 OSMID; two rows for one building average on the sphere
    locs = pa.table(
        {
            "OSMID": ["1000", "1002", "1002", "999"],
            "latitude": [10.0, 0.0, 0.0, 5.0],
            "longitude": [20.0, 179.0, -179.0, 5.0],
        }
    )
    pq.write_table(locs, tmp_path / "locs.parquet")
    m = aggregate.run(
        AggregateConfig(
            input=[tmp_path / "emb"], output=tmp_path / "b", locations=tmp_path / "locs.parquet"
        )
    )
    assert m.rows["located buildings"] == 2 and m.skipped
    t = pq.read_table(tmp_path / "b" / "buildings.parquet")
    assert t["lat"].to_pylist()[1] is None
    np.testing.assert_allclose(t["lat"].to_pylist()[2], 0.0, atol=1e-9)
    assert abs(abs(t["lon"].to_pylist()[2]) - 180.0) < 1e-6  # not 0: a spherical mean
    g = pq.read_table(tmp_path / "b" / "buildings.geoparquet")
    assert g["OSMID"].to_pylist() == [1000, 1002]


def test_shards_aggregate_to_the_unsharded_result(tmp_path: Path, model: Path) -> None:
    inp = packaged_parquet(tmp_path / "in.parquet", 30, osmid="string", images_per_building=5)
    cfg = {"input": inp, "model": model, "chunk_rows": 4}
    embed.run(EmbedConfig(output=tmp_path / "all", **cfg))
    for k in range(3):
        embed.run(EmbedConfig(output=tmp_path / f"s{k}", shard_index=k, shard_count=3, **cfg))
    aggregate.run(AggregateConfig(input=[tmp_path / "all"], output=tmp_path / "ba"))
    aggregate.run(
        AggregateConfig(input=[tmp_path / f"s{k}" for k in range(3)], output=tmp_path / "bs")
    )
    a = pq.read_table(tmp_path / "ba" / "buildings.parquet")
    b = pq.read_table(tmp_path / "bs" / "buildings.parquet")
    assert a["OSMID"].equals(b["OSMID"]) and a["image_count"].equals(b["image_count"])
    np.testing.assert_allclose(
        to_numpy_matrix(a["embedding"]), to_numpy_matrix(b["embedding"]), atol=1e-5
    )
    with pytest.raises(SbeError, match="complete set of shards"):
        aggregate.run(
            AggregateConfig(input=[tmp_path / "s0", tmp_path / "s2"], output=tmp_path / "x")
        )
    with pytest.raises(SbeError, match="pass all"):
        aggregate.run(AggregateConfig(input=[tmp_path / "s1"], output=tmp_path / "x"))
    state = json.loads((tmp_path / "all" / "state.json").read_text())
    state["status"] = "running"
    (tmp_path / "all" / "state.json").write_text(json.dumps(state))
    with pytest.raises(SbeError, match="not finished"):
        aggregate.run(AggregateConfig(input=[tmp_path / "all"], output=tmp_path / "x"))


def test_cli_aggregate(tmp_path: Path, model: Path) -> None:
    from typer.testing import CliRunner

    from sbe.cli import app

    inp = packaged_parquet(tmp_path / "in.parquet", 9, locations=True)
    embed.run(EmbedConfig(input=inp, output=tmp_path / "emb", model=model))
    r = CliRunner().invoke(
        app, ["aggregate", "--in", str(tmp_path / "emb"), "--out", str(tmp_path / "b"), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows"]["buildings"] == 3


# ---- issue 20: input edge cases -------------------------------------------------------------


def _with_osmid(src: Path, dst: Path, osmid: pa.Array) -> Path:
    t = pq.read_table(src)
    pq.write_table(t.set_column(t.schema.get_field_index("OSMID"), "OSMID", osmid), dst)
    return dst


def test_nan_and_infinite_osmids_are_skipped_and_counted(tmp_path: Path, model: Path) -> None:
    """NaN/inf float ids name no building: they are dropped like nulls, not merged into one."""
    base = packaged_parquet(tmp_path / "base.parquet", 10, locations=True)
    nan, inf = float("nan"), float("inf")
    ids = pa.array([1.0, 1.0, nan, nan, inf, 2.0, None, -inf, 3.0, 3.0], pa.float64())
    inp = _with_osmid(base, tmp_path / "in.parquet", ids)
    embed.run(EmbedConfig(input=inp, output=tmp_path / "emb", model=model, chunk_rows=4))
    m = aggregate.run(AggregateConfig(input=[tmp_path / "emb"], output=tmp_path / "b"))
    t = pq.read_table(tmp_path / "b" / "buildings.parquet")
    assert t["OSMID"].to_pylist() == [1.0, 2.0, 3.0]
    assert t["image_count"].to_pylist() == [2, 1, 2]
    assert m.rows["buildings"] == 3 and m.rows["images"] == 5
    assert m.skipped == {"null OSMID": 1, "NaN or infinite OSMID": 4}
    # the located buildings come from the packaged input's rows with a finite id
    assert m.rows["located buildings"] == 3


@pytest.mark.parametrize("kind", ["dictionary", "large_string", "large_binary"])
def test_dictionary_and_large_osmid_columns(tmp_path: Path, model: Path, kind: str) -> None:
    base = packaged_parquet(tmp_path / "base.parquet", 12, locations=True)
    as_text = pq.read_table(base)["OSMID"].cast(pa.string())
    osmid = {
        "dictionary": as_text.dictionary_encode(),
        "large_string": as_text.cast(pa.large_string()),
        "large_binary": as_text.cast(pa.large_binary()),
    }[kind]
    inp = _with_osmid(base, tmp_path / "in.parquet", osmid)
    embed.run(EmbedConfig(input=inp, output=tmp_path / "emb", model=model, chunk_rows=5))
    part = next((tmp_path / "emb" / "parts").glob("*.parquet"))
    stored = osmid.type.value_type if kind == "dictionary" else osmid.type
    assert pq.read_schema(part).field("OSMID").type == stored  # dictionaries decoded
    m = aggregate.run(AggregateConfig(input=[tmp_path / "emb"], output=tmp_path / "b"))
    assert m.rows == {"images": 12, "buildings": 4, "located buildings": 4}
    t = pq.read_table(tmp_path / "b" / "buildings.parquet")
    want = ["1000", "1001", "1002", "1003"]
    got = [v.decode() if isinstance(v, bytes) else v for v in t["OSMID"].to_pylist()]
    assert got == want
    assert not pa.types.is_dictionary(t.schema.field("OSMID").type)
    # a dictionary-encoded location table works too
    locs = pa.table(
        {"OSMID": pa.array(want).dictionary_encode(), "lat": [1.0, 2.0, 3.0, 4.0], "lon": [5.0] * 4}
    )
    if kind == "dictionary":
        pq.write_table(locs, tmp_path / "locs.parquet")
        m = aggregate.run(
            AggregateConfig(
                input=[tmp_path / "emb"], output=tmp_path / "c", locations=tmp_path / "locs.parquet"
            )
        )
        lat = pq.read_table(tmp_path / "c" / "buildings.parquet")["lat"].to_pylist()
        np.testing.assert_allclose(lat, [1.0, 2.0, 3.0, 4.0], atol=1e-9)


def test_bad_locations_table_is_one_clear_line(tmp_path: Path, model: Path) -> None:
    from typer.testing import CliRunner

    from sbe.cli import app

    inp = packaged_parquet(tmp_path / "in.parquet", 6)
    embed.run(EmbedConfig(input=inp, output=tmp_path / "emb", model=model))
    (tmp_path / "notparquet.parquet").write_text("OSMID,lat,lon\n1000,1,2\n")
    pq.write_table(pa.table({"OSMID": [1000], "lat": [1.0]}), tmp_path / "nolon.parquet")
    pq.write_table(
        pa.table({"OSMID": [1000], "lat": ["x"], "lon": ["y"]}), tmp_path / "text.parquet"
    )
    for name, words in [
        ("notparquet.parquet", "not a readable parquet"),
        ("nolon.parquet", "needs columns OSMID, lat and lon"),
        ("text.parquet", "must be numbers"),
        ("missing.parquet", "not found"),
    ]:
        path = tmp_path / name
        args = ["aggregate", "--in", str(tmp_path / "emb"), "--out", str(tmp_path / "b")]
        r = CliRunner().invoke(app, [*args, "--locations", str(path)])
        assert r.exit_code != 0
        assert isinstance(r.exception, SbeError), r.exception
        message = str(r.exception)
        assert str(path) in message and words in message and "\n" not in message
