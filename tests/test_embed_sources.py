"""sbe embed on photo inputs: image folders (with metadata or sub-folders), CSV/JSONL lists and
WebDataset shards, indexed into sources.parquet and embedded by reference; then aggregate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LANDMARKS  # ../shared beside the checkout, or $SBE_LANDMARKS
from test_publish_fixtures import make_tiny_model
from test_sources import jpeg, write_csv, write_shard

from sbe.config import AggregateConfig, EmbedConfig, IndexConfig
from sbe.errors import SbeError
from sbe.models.published import load_embedder
from sbe.stages import aggregate, embed, index
from sbe.storage import load_manifest, to_numpy_matrix

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def run(inp: Path, out: Path, model: Path, **kw) -> object:
    return embed.run(EmbedConfig(input=inp, output=out, model=model, **kw), progress=False)


def parts(out: Path, sub: str = "parts") -> pa.Table:
    files = sorted((out / sub).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("row_index")


def photo_folder(root: Path, n: int = 9) -> list[str]:
    """``root/b<k>/img<i>.jpg`` (3 buildings) and the file names, sorted."""
    names = []
    for i in range(n):
        rel = f"b{i % 3}/img{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg(i))
        names.append(rel)
    return sorted(names)


def check_vectors(out: Path, model: Path, root: Path) -> None:
    """Each embedded row equals the model on its file's bytes."""
    src = pq.read_table(out / "sources.parquet")
    got = parts(out)
    refs = src.take(got["row_index"])
    data = [
        (Path(c) / m).read_bytes() if k == "file" else None
        for c, m, k in zip(
            refs["tar_file"].to_pylist(),
            refs["member_name"].to_pylist(),
            refs["source_kind"].to_pylist(),
            strict=True,
        )
    ]
    if all(d is not None for d in data):
        ref, fails = load_embedder(model, "cpu").embed_bytes(data)
        assert not fails
        np.testing.assert_allclose(to_numpy_matrix(got["embedding"]), ref, atol=1e-5)


def test_imagefolder_with_metadata_csv_ids_and_kept_columns(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "photos"
    names = photo_folder(photos)
    rows = [
        [f, f"way/{int(f[1])}", 45 + int(f[1]), 7.0, "north" if i % 2 else "south"]
        for i, f in enumerate(names)
    ]
    rows.append(["b9/missing.jpg", "way/9", 1, 1, "x"])  # a row naming a missing file
    (photos / "b0" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rows.append(["b0/bad.jpg", "way/0", 45, 7.0, "x"])  # an unreadable image
    write_csv(photos / "metadata.csv", ["file_name", "osm", "lat", "lon", "side"], rows)
    out = tmp_path / "emb"
    m = run(photos, out, model, id_column="osm", keep_columns=["side"], chunk_rows=4)

    src = pq.read_table(out / "sources.parquet")
    assert src.num_rows == 10  # the missing file is not listed
    assert src["row_index"].to_pylist() == list(range(10))
    assert src["OSMID"].type == pa.string()
    by_file = dict(zip(src["member_name"].to_pylist(), src["OSMID"].to_pylist(), strict=True))
    assert by_file["b1/img4.jpg"] == "way/1" and by_file["b0/bad.jpg"] == "way/0"
    assert set(src["tar_file"].to_pylist()) == {str(photos.resolve())}
    side = dict(zip(src["member_name"].to_pylist(), src["side"].to_pylist(), strict=True))
    assert side["b0/img0.jpg"] == "south" and side["b0/img3.jpg"] == "north"
    assert src["lat"].to_pylist()[src["member_name"].to_pylist().index("b2/img5.jpg")] == 47.0

    got = parts(out)
    bad_row = src["member_name"].to_pylist().index("b0/bad.jpg")
    assert got["row_index"].to_pylist() == [i for i in range(10) if i != bad_row]
    assert got["OSMID"].to_pylist() == src["OSMID"].take(got["row_index"]).to_pylist()
    check_vectors(out, model, photos)
    fails = parts(out, "failures")
    assert fails["row_index"].to_pylist() == [bad_row]
    assert (
        fails["reason"][0].as_py().startswith(f"corrupt_image: {photos.resolve() / 'b0/bad.jpg'}")
    )
    assert m.rows["embedded"] == 9 and m.rows["failed"] == 1
    assert m.skipped["missing_image"] == 1 and m.skipped["corrupt_image"] == 1
    assert "missing.jpg" in m.skip_examples["missing_image"][0]
    assert m.extra["id_source"] == "osm" and m.extra["input_format"] == "imagefolder"

    # one vector per building, located at the mean camera position
    b = aggregate.run(AggregateConfig(input=[out], output=tmp_path / "bld"))
    table = pq.read_table(tmp_path / "bld" / "buildings.parquet")
    assert table["OSMID"].to_pylist() == ["way/0", "way/1", "way/2"]
    assert table["image_count"].to_pylist() == [3, 3, 3]  # the undecodable one left out
    assert b.rows["buildings"] == 3 and b.rows["located buildings"] == 3
    np.testing.assert_allclose(table["lat"].to_numpy(), [45, 46, 47], atol=1e-6)
    assert (tmp_path / "bld" / "buildings.geoparquet").is_file()
    index.run(IndexConfig(input=tmp_path / "bld", output=tmp_path / "idx", kind="exact"))
    assert load_manifest(tmp_path / "idx").rows


def test_subfolder_per_building_and_up_to_date_rerun(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, 7)
    out = tmp_path / "emb"
    m = run(photos, out, model, chunk_rows=3)
    src = pq.read_table(out / "sources.parquet")
    assert src["OSMID"].to_pylist() == ["b0", "b0", "b0", "b1", "b1", "b2", "b2"]
    assert m.extra["id_source"] == "sub-folder" and m.rows["parts"] == 3
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    m2 = run(photos, out, model, chunk_rows=3)
    assert m2.up_to_date
    assert {
        p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"
    } == before
    aggregate.run(AggregateConfig(input=[out], output=tmp_path / "bld"))
    table = pq.read_table(tmp_path / "bld" / "buildings.parquet")
    assert table["OSMID"].to_pylist() == ["b0", "b1", "b2"]
    assert table["image_count"].to_pylist() == [3, 2, 2]
    assert "lat" not in table.column_names  # no camera positions: no locations invented
    # a photo added to the folder: the output describes another input, refused
    (photos / "b2" / "new.jpg").write_bytes(jpeg(99))
    with pytest.raises(SbeError, match="holds embeddings of a different input"):
        run(photos, out, model, chunk_rows=3)


def test_csv_list_with_integer_ids(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "data"
    names = photo_folder(photos / "imgs", 6)
    write_csv(
        tmp_path / "list.csv",
        ["path", "building_id", "city"],
        [[f"data/imgs/{f}", 100 + int(f[1]), "Lyon"] for f in names],
    )
    out = tmp_path / "emb"
    m = run(tmp_path / "list.csv", out, model, keep_columns=["city"])
    src = pq.read_table(out / "sources.parquet")
    assert src["OSMID"].type == pa.int64()  # every id is a plain integer
    assert sorted(set(src["OSMID"].to_pylist())) == [100, 101, 102]
    assert src["city"].to_pylist() == ["Lyon"] * 6
    assert set(src["tar_file"].to_pylist()) == {str(tmp_path.resolve())}
    assert m.rows["embedded"] == 6
    check_vectors(out, model, tmp_path)
    aggregate.run(AggregateConfig(input=[out], output=tmp_path / "bld"))
    table = pq.read_table(tmp_path / "bld" / "buildings.parquet")
    assert table["OSMID"].to_pylist() == [100, 101, 102]
    assert table["image_count"].to_pylist() == [2, 2, 2]


def test_csv_list_without_path_column_is_one_clear_error(tmp_path: Path, model: Path) -> None:
    write_csv(tmp_path / "list.csv", ["name", "building_id"], [["a.jpg", 1]])
    with pytest.raises(SbeError, match=r"list\.csv: no file_name or path or file"):
        run(tmp_path / "list.csv", tmp_path / "emb", model)
    write_csv(tmp_path / "list2.csv", ["path", "building_id"], [["a.jpg", 1]])
    with pytest.raises(SbeError, match=r"list2\.csv: no column 'osm' for --id-column"):
        run(tmp_path / "list2.csv", tmp_path / "emb2", model, id_column="osm")
    photos = tmp_path / "p"
    photo_folder(photos, 3)
    with pytest.raises(SbeError, match="no column 'city' for --keep-columns"):
        run(photos, tmp_path / "emb3", model, keep_columns=["city"])


def test_webdataset_shards(tmp_path: Path, model: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(
        shards / "00000.tar",
        [
            (
                f"00000{i:04d}",
                jpeg(i),
                {
                    "key": f"00000{i:04d}",
                    "building_id": f"B{i // 2}",
                    "lat": 1.0 * i,
                    "lon": 2.0,
                    "url": f"http://x/{i}",
                },
            )
            for i in range(5)
        ]
        + [("000000009", None, {"key": "000000009", "status": "failed"})],
    )
    write_shard(
        shards / "00001.tar",
        [
            (
                "000010000",
                jpeg(10),
                {"key": "000010000", "building_id": "B0", "lat": 0.0, "lon": 2.0, "url": "u"},
            ),
            ("000010001", b"GIF89a garbage", {"key": "000010001", "building_id": "B9"}),
        ],
    )
    out = tmp_path / "emb"
    m = run(shards, out, model, keep_columns=["url"], chunk_rows=4)
    src = pq.read_table(out / "sources.parquet")
    assert src.num_rows == 7
    assert src["source_kind"].to_pylist() == ["tar"] * 7
    assert src["image_key"].to_pylist()[:2] == ["000000000", "000000001"]
    assert src["OSMID"].to_pylist() == ["B0", "B0", "B1", "B1", "B2", "B0", "B9"]
    assert src["url"].to_pylist()[0] == "http://x/0"
    got = parts(out)
    assert got["row_index"].to_pylist() == [0, 1, 2, 3, 4, 5]
    fails = parts(out, "failures")
    assert fails["OSMID"].to_pylist() == ["B9"]
    assert "00001.tar" in fails["reason"][0].as_py()
    # bytes read by offset equal the images written
    ref, _ = load_embedder(model, "cpu").embed_bytes([jpeg(i) for i in (0, 1, 2, 3, 4, 10)])
    np.testing.assert_allclose(to_numpy_matrix(got["embedding"]), ref, atol=1e-5)
    assert m.rows["embedded"] == 6 and m.rows["failed"] == 1
    aggregate.run(AggregateConfig(input=[out], output=tmp_path / "bld"))
    table = pq.read_table(tmp_path / "bld" / "buildings.parquet")
    assert table["OSMID"].to_pylist() == ["B0", "B1", "B2"]
    assert table["image_count"].to_pylist() == [3, 2, 1]


def test_folder_resume_after_a_kill_equals_a_clean_run(tmp_path: Path, model: Path) -> None:
    from faults import SimulatedCrash, crash_after

    photos = tmp_path / "photos"
    photo_folder(photos, 9)
    clean = tmp_path / "clean"
    run(photos, clean, model, chunk_rows=2)
    out = tmp_path / "out"
    with pytest.raises(SimulatedCrash), crash_after(4):
        run(photos, out, model, chunk_rows=2)
    assert not (out / "_manifest.json").exists()
    m = run(photos, out, model, chunk_rows=2)
    assert not m.up_to_date
    a, b = parts(clean), parts(out)
    assert a.drop_columns("embedding").equals(b.drop_columns("embedding"))
    np.testing.assert_allclose(
        to_numpy_matrix(a["embedding"]), to_numpy_matrix(b["embedding"]), atol=1e-5
    )
    assert pq.read_table(clean / "sources.parquet").equals(pq.read_table(out / "sources.parquet"))
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "complete" and state["counters"]["embedded"] == 9


def test_file_gone_after_listing_is_a_counted_failure(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, 4)
    write_index = embed.write_index

    def write_then_delete(out_dir: Path, index: object) -> object:
        info = write_index(out_dir, index)
        (photos / "b1" / "img1.jpg").unlink()  # vanishes while the run goes on
        return info

    monkeypatch.setattr(embed, "write_index", write_then_delete)
    m = run(photos, tmp_path / "emb", model)
    assert m.rows["embedded"] == 3 and m.rows["failed"] == 1
    assert m.skipped["missing_image"] == 1
    assert m.skip_examples["missing_image"][0].endswith(
        f"missing_image: {photos.resolve() / 'b1/img1.jpg'} does not exist"
    )


# ---- report pictures of photo inputs ------------------------------------------------------------


def test_report_reads_folder_source_images(tmp_path: Path, model: Path) -> None:
    """Gallery thumbnails from a folder-source ingest (a file per image, the folder stored
    relative to the ingest output), and cluster pictures from a photo embed's sources.parquet."""
    from sbe.config import IngestConfig
    from sbe.report.clusters import _osmid_images
    from sbe.report.gallery import image_bytes_by_id
    from sbe.report.thumbs import thumbnail_uri
    from sbe.stages import ingest

    photos = tmp_path / "photos"
    names = photo_folder(photos, 6)
    ingest.run(IngestConfig(inputs=[photos], output=tmp_path / "images", workers=1))
    rows = pa.concat_tables(
        [pq.read_table(p) for p in sorted((tmp_path / "images").glob("*.parquet"))]
    )
    assert set(rows["source_kind"].to_pylist()) == {"file"}
    assert not Path(rows["tar_file"][0].as_py()).is_absolute()
    ids = rows["image_id"].to_pylist()
    got = image_bytes_by_id(tmp_path / "images", [*ids, 12345])
    members = rows["member_name"].to_pylist()
    assert sorted(members) == names
    for i, m in zip(ids, members, strict=True):
        assert got[i] == (photos / m).read_bytes()
        assert thumbnail_uri(got[i], 32).startswith("data:image/jpeg;base64,")
    assert got[12345] == "not in the ingest output"

    out = tmp_path / "emb"
    run(photos, out, model)
    blobs, note = _osmid_images(out, ["b0", "b2", "nope"])
    assert note == ""
    assert blobs["b0"] == (photos / "b0/img0.jpg").read_bytes()
    assert blobs["b2"] == (photos / "b2/img2.jpg").read_bytes()
    assert "nope" not in blobs


# ---- the README recipes, as written, on generated data ------------------------------------------


def cli(*args: str) -> None:
    from typer.testing import CliRunner

    from sbe.cli import app

    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output


def test_recipe_photo_folder_with_csv(tmp_path: Path, model: Path) -> None:
    photos = tmp_path / "photos"
    names = photo_folder(photos, 6)
    write_csv(
        photos / "metadata.csv",
        ["file_name", "building_id", "lat", "lon", "heading", "captured_at"],
        [[f, 500 + int(f[1]), 45.0, 7.0 + int(f[1]), 90, "2024-05-01"] for f in names],
    )
    w = tmp_path / "work"
    cli("embed", "--in", str(photos), "--model", str(model), "--out", str(w / "embeddings"),
        "--keep-columns", "captured_at")  # fmt: skip
    cli("aggregate", "--in", str(w / "embeddings"), "--out", str(w / "buildings"))
    cli("index", "build", "--in", str(w / "buildings"), "--out", str(w / "index"))
    b = pq.read_table(w / "buildings" / "buildings.parquet")
    assert b["OSMID"].to_pylist() == [500, 501, 502]
    np.testing.assert_allclose(b["lon"].to_numpy(), [7, 8, 9], atol=1e-6)
    src = pq.read_table(w / "embeddings" / "sources.parquet")
    assert src["captured_at"].to_pylist()[0].year == 2024


def test_recipe_webdataset_from_img2dataset(tmp_path: Path, model: Path) -> None:
    """img2dataset's layout: NNNNN.tar with key.jpg + key.json (url, status, the
    --save_additional_columns values) and NNNNN.parquet beside it."""
    shards = tmp_path / "shards"
    shards.mkdir()
    samples = [
        (f"{i:09d}", jpeg(i), {"key": f"{i:09d}", "url": f"https://e/{i}.jpg", "status": "success",
                              "building_id": 7 + i % 2})
        for i in range(4)
    ]  # fmt: skip
    samples.append(("000000004", None, {"key": "000000004", "status": "failed_to_download"}))
    write_shard(shards / "00000.tar", samples)
    pq.write_table(pa.table({"key": [s[0] for s in samples]}), shards / "00000.parquet")
    w = tmp_path / "work"
    cli("embed", "--in", str(shards), "--model", str(model), "--out", str(w / "embeddings"),
        "--keep-columns", "url")  # fmt: skip
    cli("aggregate", "--in", str(w / "embeddings"), "--out", str(w / "buildings"))
    b = pq.read_table(w / "buildings" / "buildings.parquet")
    assert b["OSMID"].to_pylist() == [7, 8] and b["image_count"].to_pylist() == [2, 2]


@pytest.mark.skipif(not LANDMARKS.is_dir(), reason="landmarks-mini not present")
def test_recipe_landmarks_mini(tmp_path: Path, model: Path) -> None:
    """As a folder (sub-folders = landmarks) and as its labels.csv list: the same vectors."""
    import csv

    with open(LANDMARKS / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    w = tmp_path / "work"
    cli("embed", "--in", str(LANDMARKS / "images"), "--model", str(model),
        "--out", str(w / "emb-folder"))  # fmt: skip
    cli("embed", "--in", str(LANDMARKS / "labels.csv"), "--model", str(model),
        "--out", str(w / "emb-list"), "--id-column", "landmark",
        "--keep-columns", "landmark_name")  # fmt: skip
    cli("aggregate", "--in", str(w / "emb-list"), "--out", str(w / "buildings"))
    a, b = parts(w / "emb-folder"), parts(w / "emb-list")
    assert a.num_rows == b.num_rows == len(rows)
    assert a["OSMID"].to_pylist() == b["OSMID"].to_pylist()  # both sorted by path
    np.testing.assert_allclose(
        to_numpy_matrix(a["embedding"]), to_numpy_matrix(b["embedding"]), atol=1e-5
    )
    bld = pq.read_table(w / "buildings" / "buildings.parquet")
    assert bld["OSMID"].to_pylist() == sorted({r["landmark"] for r in rows})
    assert bld.column("lat").null_count == 0  # approximate landmark centres


def test_recipe_mapillary_ingest(tmp_path: Path) -> None:
    """The first step of the Mapillary + footprints recipe (``sbe label`` is separate)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        (root / f"{1000 + i}.jpg").write_bytes(jpeg(i))
        (root / f"{1000 + i}.json").write_text(
            json.dumps({"id": str(1000 + i), "computed_geometry": {"type": "Point",
                        "coordinates": [2.35 + i * 1e-4, 48.85]}, "computed_compass_angle": 10.0})
        )  # fmt: skip
    cli("ingest", "--in", str(root), "--format", "mapillary", "--out", str(tmp_path / "images"))
    rows = pa.concat_tables(
        [pq.read_table(p) for p in sorted((tmp_path / "images").glob("*.parquet"))]
    )
    assert rows.num_rows == 3 and rows["camera_lat"].null_count == 0
