"""Index building: sources (files, parts, columns, bad rows), exact vs HNSW, the index directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sbe.config import IndexConfig
from sbe.errors import SbeError
from sbe.index import (
    IndexParams,
    SearchIndex,
    build_index,
    find_parquet_files,
    load_index_dir,
    open_source,
    read_source,
)
from sbe.index.faiss_index import index_kind, index_nbytes
from sbe.index.source import source_provenance
from sbe.stages import index as index_stage
from sbe.storage import Manifest, SkipLog, fixed_size_list, write_manifest


def clustered(n: int, d: int, clusters: int = 20, noise: float = 0.4, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres: float32 (n, d)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def buildings_table(vectors: np.ndarray, ids: pa.Array, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(vectors)
    return pa.table(
        {
            "OSMID": ids,
            "image_count": pa.array(rng.integers(1, 9, n).astype(np.int32)),
            "embedding": fixed_size_list(vectors),
            "lat": pa.array(rng.uniform(-60, 60, n)),
            "lon": pa.array(rng.uniform(-180, 180, n)),
        }
    )


def build(tmp_path: Path, src: Path, **kw) -> Manifest:
    cfg = IndexConfig(input=src, output=tmp_path / "index", **kw)
    return index_stage.run(cfg)


# ---- sources --------------------------------------------------------------------------------


def test_find_parquet_files_recurses_and_ignores_hidden(tmp_path: Path) -> None:
    t = pa.table({"a": [1]})
    for rel in ["parts/p-00001.parquet", "parts/p-00000.parquet", "parts/.tmp-x.parquet",
                "_staging/p.parquet", "top.parquet"]:  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, tmp_path / rel)
    (tmp_path / "state.json").write_text("{}")
    got = [p.relative_to(tmp_path).as_posix() for p in find_parquet_files(tmp_path)]
    assert got == ["parts/p-00000.parquet", "parts/p-00001.parquet", "top.parquet"]
    assert find_parquet_files(tmp_path / "top.parquet") == [tmp_path / "top.parquet"]
    with pytest.raises(SbeError, match="not found"):
        find_parquet_files(tmp_path / "missing")


def test_embeddings_dataset_with_float16_parts_and_failures(tmp_path: Path) -> None:
    """The embed stage's layout: state.json + parts/ (float16), a failures part without vectors."""
    x = clustered(300, 24)
    parts = tmp_path / "emb" / "parts"
    parts.mkdir(parents=True)
    osmid = np.repeat(np.arange(100), 3).astype(np.int64) * 11
    for i, (s, e) in enumerate([(0, 120), (120, 300)]):
        t = pa.table(
            {
                "OSMID": pa.array(osmid[s:e]),
                "row_index": pa.array(np.arange(s, e, dtype=np.int64)),
                "embedding": fixed_size_list(x[s:e].astype(np.float16)),
            }
        )
        pq.write_table(t, parts / f"part-{i:05d}.parquet")
    pq.write_table(
        pa.table({"row_index": pa.array([7], pa.int64()), "OSMID": [5], "reason": ["bad jpeg"]}),
        parts / "failures-00000.parquet",
    )
    (tmp_path / "emb" / "state.json").write_text("{}")

    src = open_source(tmp_path / "emb")
    assert src.id_column == "OSMID" and src.dtype == "float16" and src.dim == 24
    assert src.metadata_columns == ["row_index"] and src.location_columns is None
    assert [f.name for f in src.skipped_files] == ["failures-00000.parquet"]
    table, vec = read_source(src, batch_rows=50)
    assert vec.dtype == np.float32 and vec.shape == (300, 24) and vec.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vec, x, atol=2e-3)  # float16 storage
    assert table.column("row_index").to_pylist() == list(range(300))

    m = build(tmp_path, tmp_path / "emb")
    assert m.rows == {"input_rows": 300, "vectors": 300, "unique_ids": 100}
    assert m.skipped == {"file without 'embedding'": 1}
    info = m.extra["index"]
    assert info["kind"] == "exact" and info["source"]["embedding_dtype"] == "float16"


def test_split_file_uses_building_id_and_target_location(tmp_path: Path) -> None:
    x = clustered(40, 8)
    t = pa.table(
        {
            "image_id": pa.array(np.arange(40, dtype=np.int64) + 10_000),
            "building_id": pa.array(np.arange(40, dtype=np.int64) // 4),
            "target_lat": pa.array(np.linspace(10, 11, 40)),
            "target_lon": pa.array(np.linspace(20, 21, 40)),
            "embedding": fixed_size_list(x.astype(np.float16)),
        }
    )
    pq.write_table(t, tmp_path / "test.parquet")
    src = open_source(tmp_path / "test.parquet")
    assert src.id_column == "building_id"
    assert src.location_columns == ("target_lat", "target_lon")
    assert src.metadata_columns == ["target_lat", "target_lon", "image_id"]
    src2 = open_source(tmp_path / "test.parquet", id_column="image_id", metadata_columns=[])
    assert src2.columns == ["image_id"] and src2.location_columns is None


def test_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    x = clustered(10, 4)
    x[2] = np.nan
    x[5] = 0.0
    emb = fixed_size_list(x)
    valid = np.ones(10, bool)
    valid[7] = False
    emb = pa.FixedSizeListArray.from_arrays(emb.values, 4, mask=pa.array(~valid))
    ids = pa.array([f"w{i}" if i != 8 else None for i in range(10)])
    pq.write_table(pa.table({"OSMID": ids, "embedding": emb}), tmp_path / "b.parquet")
    skips = SkipLog()
    table, vec = read_source(open_source(tmp_path / "b.parquet"), skips=skips)
    assert skips.counts == {
        "null id": 1,
        "null embedding": 1,
        "non-finite embedding": 1,
        "zero embedding": 1,
    }
    assert skips.examples["null embedding"] == ["w7"]
    assert skips.examples["non-finite embedding"] == ["w2"]
    assert table.column("OSMID").to_pylist() == ["w0", "w1", "w3", "w4", "w6", "w9"]
    np.testing.assert_allclose(vec, x[[0, 1, 3, 4, 6, 9]], atol=1e-6)


def test_source_errors_are_clear(tmp_path: Path) -> None:
    pq.write_table(pa.table({"OSMID": [1], "embedding": [[0.1, 0.2]]}), tmp_path / "v.parquet")
    with pytest.raises(SbeError, match="fixed_size_list"):
        open_source(tmp_path / "v.parquet")
    pq.write_table(pa.table({"name": ["a"], "embedding": fixed_size_list(np.ones((1, 2), np.float32))}), tmp_path / "n.parquet")  # fmt: skip
    with pytest.raises(SbeError, match="no id column"):
        open_source(tmp_path / "n.parquet")
    d = tmp_path / "mixed"
    d.mkdir()
    for i, dim in enumerate([4, 5]):
        t = pa.table({"OSMID": [i], "embedding": fixed_size_list(np.ones((1, dim), np.float32))})
        pq.write_table(t, d / f"{i}.parquet")
    with pytest.raises(SbeError, match="dimension 4"):
        open_source(d)
    with pytest.raises(SbeError, match="'lat' not found"):
        open_source(d / "0.parquet", metadata_columns=["lat"])
    pq.write_table(pa.table({"OSMID": [1]}), tmp_path / "noemb.parquet")
    with pytest.raises(SbeError, match="no parquet file"):
        open_source(tmp_path / "noemb.parquet")


# ---- faiss ----------------------------------------------------------------------------------


def test_auto_kind_threshold() -> None:
    p = IndexParams(exact_max_rows=100)
    assert p.resolve(100) == "exact" and p.resolve(101) == "hnsw"
    assert IndexParams(kind="hnsw").resolve(5) == "hnsw"
    assert IndexParams(kind="exact").resolve(10**9) == "exact"
    assert set(IndexParams().recorded("exact")) == {"kind", "exact_max_rows"}
    assert IndexParams(hnsw_m=16).recorded("hnsw")["hnsw_m"] == 16


def test_hnsw_recall_against_exact() -> None:
    """HNSW's top-10 on held-out queries matches exact search's for most neighbours."""
    data = clustered(4000, 32, clusters=40, seed=1)
    base, queries = data[:3800], data[3800:]
    exact = build_index(base, IndexParams(kind="exact"))
    hnsw = build_index(base, IndexParams(kind="hnsw", hnsw_m=16, ef_construction=40, ef_search=64))
    assert index_kind(exact) == "exact" and index_kind(hnsw) == "hnsw"
    _, truth = exact.search(queries, 10)
    _, approx = hnsw.search(queries, 10)
    recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth, strict=True)])
    assert recall >= 0.9
    # the exact index is exact: brute force in numpy agrees
    brute = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    assert np.mean(brute == truth) > 0.99
    # lowering efSearch to the minimum costs recall (the knob does something)
    hnsw.hnsw.efSearch = 10
    _, rough = hnsw.search(queries, 10)
    rough_recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(rough, truth, strict=True)])
    assert rough_recall <= recall
    sizes = index_nbytes(hnsw)
    assert sizes["vectors"] == 3800 * 32 * 4 and sizes["graph"] > 3800 * 16 * 4


# ---- stage + directory -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [
        pa.array(np.arange(300, dtype=np.int64) * 1_000_003 + 2**40),
        pa.array([f"way/{i}" for i in range(300)]),
        pa.array(np.arange(300, dtype=np.int32)),
    ],
    ids=["int64", "string", "int32"],
)
def test_ids_and_metadata_round_trip(tmp_path: Path, ids: pa.Array) -> None:
    x = clustered(300, 16)
    t = buildings_table(x, ids)
    pq.write_table(t, tmp_path / "buildings.parquet")
    m = build(tmp_path, tmp_path / "buildings.parquet")
    index, side, info = load_index_dir(tmp_path / "index")
    assert info.id_type == str(ids.type) and side.schema.field("OSMID").type == ids.type
    assert side.column_names == ["OSMID", "lat", "lon", "image_count"]
    for col in side.column_names:
        assert side.column(col).equals(t.column(col)), col
    np.testing.assert_allclose(index.reconstruct_batch(np.arange(300)), x, atol=1e-6)
    assert info.location_columns == ["lat", "lon"] and m.rows["unique_ids"] == 300
    # search by an id given as text (as from the command line) returns the right metadata
    res = SearchIndex.load(tmp_path / "index").search_id(str(ids[17].as_py()), k=3)
    hit = res.hits(0)[0]
    row = hit["row"]
    assert hit["id"] == ids[row].as_py()
    assert hit["lat"] == t.column("lat")[row].as_py() and hit["lon"] == t.column("lon")[row].as_py()
    assert hit["image_count"] == t.column("image_count")[row].as_py()


def test_stage_picks_hnsw_above_threshold_and_records_parameters(tmp_path: Path) -> None:
    x = clustered(600, 16)
    pq.write_table(buildings_table(x, pa.array(np.arange(600))), tmp_path / "b.parquet")
    m = build(tmp_path, tmp_path / "b.parquet", exact_max_rows=500, hnsw_m=12, ef_search=40)
    info = json.loads((tmp_path / "index" / "index.json").read_text())
    assert info["kind"] == "hnsw" and info["faiss_class"] == "IndexHNSWFlat"
    assert info["parameters"]["hnsw_m"] == 12 and info["parameters"]["ef_search"] == 40
    assert info["count"] == 600 and info["dim"] == 16 and info["metric"] == "inner_product"
    assert info["memory"]["file"] == (tmp_path / "index" / "index.faiss").stat().st_size
    assert info["memory"]["graph"] > 0 and info["memory"]["peak_rss"] > 0
    assert m.extra["index"]["build_id"] == info["build_id"]
    loaded = SearchIndex.load(tmp_path / "index")
    assert loaded.index.hnsw.efSearch == 40
    assert SearchIndex.load(tmp_path / "index", ef_search=100).index.hnsw.efSearch == 100


def test_rerun_is_skipped_until_input_changes(tmp_path: Path) -> None:
    x = clustered(100, 8)
    path = tmp_path / "b.parquet"
    pq.write_table(buildings_table(x, pa.array(np.arange(100))), path)
    first = build(tmp_path, path)
    again = build(tmp_path, path)
    assert again.up_to_date and again.extra["index"]["build_id"] == first.extra["index"]["build_id"]
    pq.write_table(buildings_table(x[:90], pa.array(np.arange(90))), path)
    changed = build(tmp_path, path)
    assert not changed.up_to_date and changed.rows["vectors"] == 90
    other = build(tmp_path, path, hnsw_m=8, kind="hnsw")
    assert not other.up_to_date and other.extra["index"]["kind"] == "hnsw"


def test_mixed_builds_are_detected(tmp_path: Path) -> None:
    """A directory whose files come from two builds (a killed rebuild) refuses to load."""
    x = clustered(100, 8)
    pq.write_table(buildings_table(x, pa.array(np.arange(100))), tmp_path / "b.parquet")
    build(tmp_path, tmp_path / "b.parquet")
    stale = (tmp_path / "index" / "ids.parquet").read_bytes()
    build(tmp_path, tmp_path / "b.parquet", kind="hnsw", hnsw_m=8)
    (tmp_path / "index" / "ids.parquet").write_bytes(stale)
    with pytest.raises(SbeError, match="another index build"):
        SearchIndex.load(tmp_path / "index")
    (tmp_path / "index" / "index.faiss").write_bytes(b"")
    with pytest.raises(SbeError, match="incomplete"):
        SearchIndex.load(tmp_path / "index")
    with pytest.raises(SbeError, match="not an index directory"):
        SearchIndex.load(tmp_path)


def test_provenance_is_read_from_the_source_manifest_extra(tmp_path: Path) -> None:
    """The model and backbone come from one place: ``extra`` of the source folder's manifest
    (``extra["model"]`` as embed/aggregate record it, else ``extra["backbone"]``); the index
    stores the model relative to itself."""
    bld = tmp_path / "buildings"
    bld.mkdir()
    model = tmp_path / "models" / "m1"
    identity = {"model_dir": str(model), "backbone": {"name": "efficientnet-lite0"}, "dim": 8}
    write_manifest(bld, Manifest(stage="aggregate", extra={"model": identity}))
    x = clustered(20, 8)
    pq.write_table(buildings_table(x, pa.array(np.arange(20))), bld / "buildings.parquet")
    got = source_provenance(bld / "buildings.parquet")
    assert got == {"model_dir": str(model), "backbone": {"name": "efficientnet-lite0"}}
    m = build(tmp_path, bld)
    assert m.extra["index"]["model_dir"] == "../models/m1"
    assert SearchIndex.load(tmp_path / "index").info.model_path(tmp_path / "index").resolve() == model  # fmt: skip
    # an explicit model wins
    m = build(tmp_path, bld, model=tmp_path / "other")
    assert m.extra["index"]["model_dir"] == "../other"
    # a backbone-only record (the backbone and split stages)
    write_manifest(bld, Manifest(stage="split", extra={"backbone": {"name": "hf:x"}}))
    assert source_provenance(bld) == {"model_dir": None, "backbone": {"name": "hf:x"}}
    # config keys and state.json are not guessed from any more
    write_manifest(bld, Manifest(stage="embed", config={"model": "/models/m1"}))
    assert source_provenance(bld) == {"model_dir": None, "backbone": None}
    assert source_provenance(tmp_path / "nowhere") == {"model_dir": None, "backbone": None}


# ---- issue 20: id column encodings and NaN ids ------------------------------------------------


@pytest.mark.parametrize("kind", ["dictionary", "large_string", "large_binary"])
def test_dictionary_and_large_id_columns_index_and_cluster(tmp_path: Path, kind: str) -> None:
    """Two parts with different dictionaries (as two writers make them) index and cluster."""
    from sbe.config import ClusterConfig
    from sbe.stages import cluster as cluster_stage

    x = clustered(40, 8)
    text = pa.array([f"way/{i}" for i in range(40)])
    ids = {
        "dictionary": None,
        "large_string": text.cast(pa.large_string()),
        "large_binary": text.cast(pa.large_binary()),
    }[kind]
    src = tmp_path / "parts"
    src.mkdir()
    for k, (a, b) in enumerate([(0, 25), (25, 40)]):
        part = text[a:b].dictionary_encode() if ids is None else ids[a:b]
        pq.write_table(buildings_table(x[a:b], part, seed=k), src / f"p{k}.parquet")
    m = build(tmp_path, src)
    assert m.rows["vectors"] == 40 and m.rows["unique_ids"] == 40
    index = SearchIndex.load(tmp_path / "index")
    plain = pa.binary() if kind == "large_binary" else pa.string()
    assert index.table.schema.field("OSMID").type in (plain, pa.large_binary(), pa.large_string())
    assert not pa.types.is_dictionary(index.table.schema.field("OSMID").type)
    hit = index.search_id("way/7", k=1, exclude_self=False).hits()[0]
    assert hit["id"] in ("way/7", b"way/7") and hit["similarity"] == pytest.approx(1.0, abs=1e-5)
    c = cluster_stage.run(ClusterConfig(input=src, output=tmp_path / "c", k=3))
    assert c.rows["vectors"] == 40
    got = pq.read_table(tmp_path / "c" / "assignments.parquet")["OSMID"]
    assert got.to_pylist() == pa.chunked_array([ids if ids is not None else text]).to_pylist()


def test_nan_and_infinite_ids_are_skipped(tmp_path: Path) -> None:
    x = clustered(6, 8)
    ids = pa.array([1.0, float("nan"), 2.0, float("inf"), None, 3.0])
    pq.write_table(buildings_table(x, ids), tmp_path / "b.parquet")
    m = build(tmp_path, tmp_path / "b.parquet")
    assert m.rows["vectors"] == 3 and m.skipped == {"null id": 1, "NaN or infinite id": 2}
    assert SearchIndex.load(tmp_path / "index").table["OSMID"].to_pylist() == [1.0, 2.0, 3.0]
