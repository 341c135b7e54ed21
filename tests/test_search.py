"""Search: the Python API (by vector, id, row, image), self-exclusion, and the ``sbe search`` CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import IndexConfig
from sbe.errors import SbeError
from sbe.index import IndexParams, SearchIndex, build_index
from sbe.index.directory import IndexInfo
from sbe.stages import index as index_stage
from sbe.stages.search import load_vectors
from sbe.storage import fixed_size_list

runner = CliRunner()


def clustered(n: int, d: int, clusters: int = 10, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def image_index(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """An image-level index keyed by building: 60 buildings x 3 images, string OSMIDs."""
    osmid = np.repeat(np.arange(60), 3)
    noise = np.random.default_rng(1).normal(scale=0.1, size=(180, 16))
    x = clustered(60, 16)[osmid] + noise
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    t = pa.table(
        {
            "OSMID": pa.array([f"b{i}" for i in osmid]),
            "row_index": pa.array(np.arange(180, dtype=np.int64)),
            "embedding": fixed_size_list(x),
            "lat": pa.array(48.0 + osmid / 100.0),
            "lon": pa.array(2.0 + osmid / 100.0),
        }
    )
    pq.write_table(t, tmp_path / "images.parquet")
    index_stage.run(IndexConfig(input=tmp_path / "images.parquet", output=tmp_path / "idx"))
    return tmp_path / "idx", x, osmid


def test_search_by_vector_finds_the_row_first(image_index) -> None:
    idx_dir, x, _ = image_index
    index = SearchIndex.load(idx_dir)
    res = index.search(x[[4, 50]] * 3.0, k=5)  # scale does not matter: queries are normalised
    assert res.rows.shape == (2, 5) and res.rows[0, 0] == 4 and res.rows[1, 0] == 50
    np.testing.assert_allclose(res.similarity[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(res.similarity, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(res.similarity[0], x[res.rows[0]] @ x[4], atol=1e-5)
    assert res.ids(0)[0] == "b1"  # row 4 is building 1's second image
    assert index.search(x[4], k=1).rows.shape == (1, 1)  # a single (D,) vector works too
    with pytest.raises(SbeError, match="dimension 16"):
        index.search(np.ones((1, 3)), k=1)
    with pytest.raises(SbeError, match="NaN"):
        index.search(np.full(16, np.nan), k=1)


def test_search_id_excludes_itself_by_default(image_index) -> None:
    """Search by id queries with the id's mean vector and leaves out all of its rows."""
    idx_dir, x, osmid = image_index
    index = SearchIndex.load(idx_dir)
    mine = np.flatnonzero(osmid == 7)
    res = index.search_id("b7", k=10)
    assert len(res) == 1 and not set(res.rows[0]) & set(mine)
    assert "b7" not in res.ids(0) and len(res.ids(0)) == 10
    centroid = x[mine].mean(0)
    centroid /= np.linalg.norm(centroid)
    brute = [r for r in np.argsort(-(x @ centroid)) if r not in mine][:10]
    np.testing.assert_array_equal(res.rows[0], brute)

    kept = index.search_id("b7", k=10, exclude_self=False)
    assert set(kept.rows[0][:3]) == set(mine)  # its own images are the nearest
    with pytest.raises(SbeError, match="not in the index"):
        index.search_id("b999", k=3)


def test_search_rows_excludes_only_the_query_row(image_index) -> None:
    idx_dir, _, _ = image_index
    index = SearchIndex.load(idx_dir)
    res = index.search_rows([0, 1, 2], k=5)
    for q, row in enumerate([0, 1, 2]):
        assert row not in res.rows[q]
        # the two other images of the same building are still found
        assert set(range(3)) - {row} <= set(res.rows[q])
    same = index.search_rows([5], k=1, exclude_self=False)
    assert same.rows[0, 0] == 5
    with pytest.raises(IndexError):
        index.search_rows([180])


def test_result_padding_records_and_table(image_index) -> None:
    idx_dir, x, _ = image_index
    index = SearchIndex.load(idx_dir)
    res = index.search(x[:2], k=200)  # more than the 180 indexed
    assert (res.rows[:, 180:] == -1).all() and np.isnan(res.similarity[:, 180:]).all()
    assert len(res.hits(0)) == 180
    table = res.to_table()
    assert table.num_rows == 360
    assert table.column_names == ["query", "rank", "row", "similarity", "OSMID", "lat", "lon", "row_index"]  # fmt: skip
    assert table.schema.field("similarity").type == pa.float32()
    hit = res.hits(1)[0]
    assert hit == {
        "rank": 1,
        "id": "b0",
        "similarity": pytest.approx(1.0, abs=1e-5),
        "row": 1,
        "lat": 48.0,
        "lon": 2.0,
        "row_index": 1,
    }


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(2, 12),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_exact_search_matches_brute_force(n: int, d: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    table = pa.table({"OSMID": pa.array(np.arange(n))})
    info = IndexInfo(
        build_id="t", kind="exact", faiss_class="IndexFlatIP", dim=d, count=n,
        id_column="OSMID", id_type="int64", unique_ids=n,
    )  # fmt: skip
    index = SearchIndex(build_index(x, IndexParams(kind="exact")), table, info)
    q = rng.normal(size=(3, d)).astype(np.float32)
    res = index.search(q, k)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    expected = np.sort(qn @ x.T, axis=1)[:, ::-1][:, : min(k, n)]
    np.testing.assert_allclose(res.similarity[:, : min(k, n)], expected, atol=1e-5)
    assert (res.rows[:, n:] == -1).all()


def test_load_vectors_formats(tmp_path: Path) -> None:
    v = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "q.npy", v)
    (tmp_path / "q.json").write_text(json.dumps(v[0].tolist()))
    pq.write_table(pa.table({"embedding": fixed_size_list(v.astype(np.float16))}), tmp_path / "q.parquet")  # fmt: skip
    np.testing.assert_array_equal(load_vectors(tmp_path / "q.npy"), v)
    np.testing.assert_array_equal(load_vectors(tmp_path / "q.json"), v[:1])
    np.testing.assert_array_equal(load_vectors(tmp_path / "q.parquet"), v)
    (tmp_path / "q.txt").write_text("1 2 3")
    with pytest.raises(SbeError, match=r"\.npy, \.json or \.parquet"):
        load_vectors(tmp_path / "q.txt")


# ---- CLI ------------------------------------------------------------------------------------


def _json(result) -> dict:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_cli_build_and_search_json(tmp_path: Path, image_index) -> None:
    idx_dir, x, _ = image_index
    out = _json(runner.invoke(app, ["search", "--index", str(idx_dir), "--id", "b3", "--k", "4", "--json"]))  # fmt: skip
    assert out["id_column"] == "OSMID" and out["kind"] == "exact" and out["count"] == 180
    (q,) = out["queries"]
    assert q["query"] == "OSMID=b3" and [h["rank"] for h in q["hits"]] == [1, 2, 3, 4]
    assert all(h["id"] != "b3" for h in q["hits"])
    for h in q["hits"]:
        b = int(h["id"][1:])
        assert h["lat"] == pytest.approx(48.0 + b / 100) and h["lon"] == pytest.approx(
            2.0 + b / 100
        )
    with_self = _json(runner.invoke(app, ["search", "--index", str(idx_dir), "--id", "b3", "--include-self", "--json"]))  # fmt: skip
    assert with_self["queries"][0]["hits"][0]["id"] == "b3"

    np.save(tmp_path / "q.npy", x[[10, 20]])
    out = _json(runner.invoke(app, ["search", "--index", str(idx_dir), "--vector-file", str(tmp_path / "q.npy"), "-k", "2", "--json"]))  # fmt: skip
    assert [q["hits"][0]["row"] for q in out["queries"]] == [10, 20]

    table = runner.invoke(app, ["search", "--index", str(idx_dir), "--id", "b3", "--k", "2"])
    assert table.exit_code == 0 and "similarity" in table.stdout
    assert len(re.findall(r"48\.\d{6}", table.stdout)) == 2  # one latitude per hit

    bad = runner.invoke(app, ["search", "--index", str(idx_dir), "--k", "2"])
    assert isinstance(bad.exception, SbeError) and "exactly one" in str(bad.exception)


def test_cli_index_build_json(tmp_path: Path) -> None:
    x = clustered(120, 8)
    pq.write_table(
        pa.table({"building_id": pa.array(np.arange(120)), "embedding": fixed_size_list(x)}),
        tmp_path / "b.parquet",
    )
    args = ["index", "build", "--in", str(tmp_path / "b.parquet"), "--out", str(tmp_path / "i")]
    out = _json(runner.invoke(app, [*args, "--kind", "hnsw", "--hnsw-m", "8", "--json"]))
    assert out["stage"] == "index" and out["rows"]["vectors"] == 120 and not out["up_to_date"]
    assert out["extra"]["index"]["kind"] == "hnsw" and out["extra"]["index"]["id_column"] == "building_id"  # fmt: skip
    again = _json(runner.invoke(app, [*args, "--kind", "hnsw", "--hnsw-m", "8", "--json"]))
    assert again["up_to_date"]
    bad = runner.invoke(app, [*args, "--kind", "ivf"])
    assert bad.exit_code == 2 and "index.kind" in bad.stderr


def test_image_query_without_a_model_is_a_clear_error(image_index, tmp_path: Path) -> None:
    idx_dir, _, _ = image_index
    img = tmp_path / "a.jpg"
    img.write_bytes(b"\xff\xd8")
    r = runner.invoke(app, ["search", "--index", str(idx_dir), "--image", str(img)])
    assert isinstance(r.exception, SbeError) and "--model" in str(r.exception)
    r = runner.invoke(app, ["search", "--index", str(idx_dir), "--image", str(img), "--model", str(tmp_path / "nomodel")])  # fmt: skip
    assert isinstance(r.exception, SbeError) and "sbe publish" in str(r.exception)


# ---- image queries through a published model --------------------------------------------------


@pytest.fixture(scope="module")
def published_model(tmp_path_factory) -> Path:
    """A model folder as ``sbe publish`` writes it: EfficientNet-Lite0 + a random projector."""
    published = pytest.importorskip("sbe.models.published")
    from sbe.models.backbones.efficientnet import EfficientNetLiteBackbone

    identity = EfficientNetLiteBackbone("efficientnet-lite0").identity()
    projector = {
        "input_dim": identity["dim"], "output_dim": 32, "hidden_dim": 64, "num_hidden_layers": 1,
        "activation": "gelu", "dropout": 0.0, "layer_norm": True, "residual": True,
    }  # fmt: skip
    cfg = published.SbeEmbeddingConfig(backbone=identity, projector=projector)
    folder = tmp_path_factory.mktemp("model")
    published.SbeEmbeddingModel(cfg).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_image_query_runs_the_published_model(
    tmp_path: Path, landmarks_dir: Path, published_model: Path
) -> None:
    """Index the landmark photos with the model, then query with a photo file: it comes first."""
    from sbe.models.published import load_embedder

    with open(landmarks_dir / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))[:12]
    paths = [str(landmarks_dir / r["path"]) for r in rows]
    vectors = load_embedder(published_model, "cpu").embed_images(paths)
    t = pa.table(
        {
            "image_id": pa.array(np.arange(len(rows), dtype=np.int64)),
            "landmark": pa.array([r["landmark"] for r in rows]),
            "lat": pa.array([float(r["lat"]) for r in rows]),
            "lon": pa.array([float(r["lon"]) for r in rows]),
            "embedding": fixed_size_list(vectors),
        }
    )
    pq.write_table(t, tmp_path / "landmarks.parquet")
    idx = tmp_path / "idx"
    r = runner.invoke(app, ["index", "build", "--in", str(tmp_path / "landmarks.parquet"), "--out", str(idx), "--model", str(published_model), "--metadata", "landmark,lat,lon"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = _json(runner.invoke(app, ["search", "--index", str(idx), "--image", paths[5], "--image", paths[9], "--k", "3", "--json"]))  # fmt: skip
    for q, want in zip(out["queries"], [5, 9], strict=True):
        top = q["hits"][0]
        assert top["id"] == want and top["similarity"] > 0.999
        assert top["landmark"] == rows[want]["landmark"]
        assert top["lat"] == pytest.approx(float(rows[want]["lat"]))


# ---- issue 20: bad query files, moved work folders -------------------------------------------


def test_bad_query_files_are_one_line_naming_the_file(image_index, tmp_path: Path) -> None:
    idx_dir, _, _ = image_index
    (tmp_path / "text.parquet").write_text("not parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "nocol.parquet")
    pq.write_table(pa.table({"embedding": [["a", "b"]]}), tmp_path / "strings.parquet")
    np.save(tmp_path / "dim.npy", np.ones((2, 5), np.float32))
    (tmp_path / "ragged.json").write_text("[[1, 2], [3]]")
    (tmp_path / "v.csv").write_text("1,2")
    for name, words in [
        ("text.parquet", "cannot read query vectors"),
        ("nocol.parquet", "no 'embedding' column (columns: x)"),
        ("strings.parquet", "cannot read query vectors"),
        ("dim.npy", "dimension 5"),
        ("ragged.json", "cannot read query vectors"),
        ("v.csv", "must be .npy, .json or .parquet"),
        ("missing.npy", "not found"),
    ]:
        path = tmp_path / name
        r = runner.invoke(app, ["search", "--index", str(idx_dir), "--vector-file", str(path)])
        assert isinstance(r.exception, SbeError), (name, r.exception)
        message = str(r.exception)
        assert str(path) in message and words in message and "\n" not in message, message


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import os

    from test_publish_fixtures import make_tiny_model

    os.environ["HF_HUB_OFFLINE"] = "1"
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_moved_work_folder_still_searches_by_image(tmp_path: Path, tiny_model: Path) -> None:
    """index.json records the model relative to the index: move the whole work folder (model
    included) and image queries still find the model; a bad image names itself."""
    import shutil

    from test_publish_fixtures import packaged_parquet

    from sbe.config import AggregateConfig, EmbedConfig
    from sbe.stages import aggregate, embed

    work = tmp_path / "work"
    shutil.copytree(tiny_model, work / "model")
    inp = packaged_parquet(work / "packaged.parquet", 12, images_per_building=1)
    embed.run(EmbedConfig(input=inp, output=work / "emb", model=work / "model"))
    aggregate.run(AggregateConfig(input=[work / "emb"], output=work / "b"))
    index_stage.run(IndexConfig(input=work / "b", output=work / "index"))
    info = json.loads((work / "index" / "index.json").read_text())
    assert info["model_dir"] == "../model" and info["source"]["path"] == "../b"

    moved = tmp_path / "elsewhere" / "work2"
    moved.parent.mkdir()
    shutil.move(work, moved)
    image = tmp_path / "q.jpg"
    image.write_bytes(pq.read_table(moved / "packaged.parquet")["image_bytes"][7].as_py())
    args = ["search", "--index", str(moved / "index"), "--k", "2", "--json"]
    out = _json(runner.invoke(app, [*args, "--image", str(image)]))
    top = out["queries"][0]["hits"][0]
    assert top["id"] == 1007 and top["similarity"] > 0.999

    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    r = runner.invoke(app, [*args, "--image", str(image), "--image", str(tmp_path / "bad.jpg")])
    assert isinstance(r.exception, SbeError), r.exception
    assert str(tmp_path / "bad.jpg") in str(r.exception) and "\n" not in str(r.exception)

    shutil.rmtree(moved / "model")
    r = runner.invoke(app, [*args, "--image", str(image)])
    assert isinstance(r.exception, SbeError) and "--model" in str(r.exception)


# ---- issue 17: folders, globs and several --image in one process -----------------------------


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_model: Path) -> tuple[Path, Path]:
    """An index of 12 one-image buildings made by the tiny published model, and the photos as
    files ``photos/b07.jpg`` (building 1007) etc."""
    from test_publish_fixtures import packaged_parquet

    from sbe.config import AggregateConfig, EmbedConfig
    from sbe.stages import aggregate, embed

    work = tmp_path_factory.mktemp("tiny-index")
    inp = packaged_parquet(work / "packaged.parquet", 12, images_per_building=1)
    embed.run(EmbedConfig(input=inp, output=work / "emb", model=tiny_model))
    aggregate.run(AggregateConfig(input=[work / "emb"], output=work / "b"))
    index_stage.run(IndexConfig(input=work / "b", output=work / "index"))
    photos = work / "photos"
    photos.mkdir()
    for i, blob in enumerate(pq.read_table(inp)["image_bytes"].to_pylist()):
        (photos / f"b{i:02d}.jpg").write_bytes(blob)
    return work / "index", photos


def _count_model_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    import sbe.models.published as published

    loads: list[Path] = []
    real = published.load_embedder

    def counting(model_dir, *args, **kwargs):
        loads.append(Path(model_dir))
        return real(model_dir, *args, **kwargs)

    monkeypatch.setattr(published, "load_embedder", counting)
    return loads


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_folder_of_images_is_answered_with_one_model_load(
    tiny_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx, photos = tiny_index
    folder = tmp_path / "queries"
    folder.mkdir()
    for i in (3, 7, 10):
        (folder / f"q{i:02d}.JPG").write_bytes((photos / f"b{i:02d}.jpg").read_bytes())
    (folder / "notes.txt").write_text("not an image: left out")
    (folder / "sub").mkdir()  # folders inside are not entered
    loads = _count_model_loads(monkeypatch)
    args = ["search", "--index", str(idx), "--k", "2", "--image", str(folder)]
    out = _json(runner.invoke(app, [*args, "--json"]))
    assert len(loads) == 1
    assert [q["query"] for q in out["queries"]] == [str(folder / f"q{i:02d}.JPG") for i in (3, 7, 10)]  # fmt: skip
    assert [q["hits"][0]["id"] for q in out["queries"]] == [1003, 1007, 1010]
    assert all(q["hits"][0]["similarity"] > 0.999 for q in out["queries"])
    # the table form: one table per query, each titled with its image
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert [r.stdout.count(f"q{i:02d}.JPG: top 2") for i in (3, 7, 10)] == [1, 1, 1], r.stdout
    assert len(loads) == 2  # the second command: again one load for three queries


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_globs_and_several_images_mix_in_one_query(
    tiny_index, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx, photos = tiny_index
    loads = _count_model_loads(monkeypatch)
    pattern = str(photos / "b0[12].jpg")
    args = ["search", "--index", str(idx), "--k", "1", "--json"]
    # a file named twice (by the pattern and by itself) is answered once, in its first place
    out = _json(runner.invoke(app, [*args, "--image", pattern, "--image", str(photos / "b11.jpg"), "--image", str(photos / "b02.jpg")]))  # fmt: skip
    assert len(loads) == 1
    assert [Path(q["query"]).name for q in out["queries"]] == ["b01.jpg", "b02.jpg", "b11.jpg"]
    assert [q["hits"][0]["id"] for q in out["queries"]] == [1001, 1002, 1011]


def test_image_values_that_name_nothing_are_one_error_line(image_index, tmp_path: Path) -> None:
    """Checked before the index or a model is loaded (this index has no model at all)."""
    idx_dir, _, _ = image_index
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    for value, words in [
        (tmp_path / "no-such-folder", "no such file or folder"),
        (tmp_path / "nothing-*.jpg", "no file matches this pattern"),
        (empty, "the folder holds no images"),
    ]:
        r = runner.invoke(app, ["search", "--index", str(idx_dir), "--image", str(value)])
        assert r.exit_code == 1 and isinstance(r.exception, SbeError), (value, r.output)
        message = str(r.exception)
        assert message.startswith(f"--image {value}: ") and words in message, message
        assert "\n" not in message


def test_expand_images_orders_and_dedupes(tmp_path: Path) -> None:
    from sbe.stages.search import expand_images

    for name in ("b.png", "a.jpeg", "c.webp", "d.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "e.jpg").write_bytes(b"x")
    assert [p.name for p in expand_images([tmp_path])] == ["a.jpeg", "b.png", "c.webp"]
    assert [p.name for p in expand_images([str(tmp_path / "**" / "*.jpg")])] == ["e.jpg"]
    got = expand_images([tmp_path / "c.webp", tmp_path, str(tmp_path / "*.png")])
    assert [p.name for p in got] == ["c.webp", "a.jpeg", "b.png"]


def _sbe(*args: str) -> subprocess.CompletedProcess[str]:
    """``sbe ARGS`` in a fresh interpreter (this checkout's source first on the path)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys\n"
        "from sbe.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = [m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules]\n"
        "    print('heavy modules:', heavy, file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_search_by_id_starts_without_torch_or_onnxruntime(image_index) -> None:
    """``sbe search --id`` needs faiss and the side table, never a model runtime."""
    idx_dir, _, _ = image_index
    r = _sbe("search", "--index", str(idx_dir), "--id", "b3", "--k", "2", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["queries"][0]["hits"]
    assert len(hits) == 2 and "b3" not in [h["id"] for h in hits]
    assert "heavy modules: []" in r.stderr


def test_a_missing_image_folder_is_one_line_from_the_command(image_index, tmp_path: Path) -> None:
    idx_dir, _, _ = image_index
    missing = tmp_path / "no-such-folder"
    r = subprocess.run(
        [sys.executable, "-m", "sbe.cli", "search", "--index", str(idx_dir), "--image", str(missing)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "COLUMNS": "400"},
    )  # fmt: skip
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"error: --image {missing}: no such file or folder"]
