"""Input sources of ``sbe ingest``: image folders, WebDataset shards, Mapillary downloads.

Every fixture is generated here (JPEGs from PIL, metadata files written by the test).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LANDMARKS  # ../shared beside the checkout, or $SBE_LANDMARKS
from PIL import Image
from test_backbone_stage import _env, tiny_vit  # noqa: F401 (fixtures)

from sbe.config import IngestConfig
from sbe.data.sources import detect_format, detect_one
from sbe.data.sources.base import building_uid, parse_time
from sbe.data.tarstream import TarReader, read_image
from sbe.errors import SbeError
from sbe.stages import ingest
from sbe.storage.schemas import IMAGES_SCHEMA, make_uid


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def make_folder(root: Path, n: int = 6, sub: bool = True) -> list[str]:
    names = []
    for i in range(n):
        rel = f"b{i % 3}/img{i}.jpg" if sub else f"img{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg(i))
        names.append(rel)
    return names


def write_csv(
    path: Path, header: list[str], rows: list[list[object]], sep: str = ",", encoding: str = "utf-8"
) -> None:
    lines = [sep.join(header)] + [sep.join("" if v is None else str(v) for v in r) for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def run_ingest(inputs: list[Path], out: Path, **kw) -> object:
    return ingest.run(IngestConfig(inputs=inputs, output=out, workers=1, **kw))


def read_out(out: Path) -> pa.Table:
    parts = sorted(p for p in out.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts])


# ---- image folder -------------------------------------------------------------------------------


def test_imagefolder_with_metadata_csv_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    names = make_folder(root)
    rows = [
        [n, f"w{i % 3}", 48.1 + i / 100, 11.5, 90 + i, f"2021-06-0{i + 1}", f"s{i % 2}"]
        for i, n in enumerate(names)
    ]
    write_csv(
        root / "metadata.csv",
        ["file_name", "building_id", "lat", "lon", "heading", "captured_at", "sequence"],
        rows,
    )
    out = tmp_path / "images"
    m = run_ingest([root], out)
    assert m.rows["images"] == 6 and m.extra["input_format"] == "imagefolder"
    t = read_out(out)
    assert t.schema.names == IMAGES_SCHEMA.names
    d = t.sort_by("member_name").to_pydict()
    assert d["member_name"] == sorted(names)
    assert d["building_key"] == ["w0", "w0", "w1", "w1", "w2", "w2"]
    assert d["target_uid"][0] == building_uid("w0") and building_uid("w0") >= 1 << 62
    assert d["camera_lat"][0] == pytest.approx(48.10)
    assert d["heading"][1] == pytest.approx(93)  # b0/img3.jpg is row 3
    assert d["source_kind"] == ["file"] * 6 and d["tar_offset"] == [0] * 6
    assert d["target_lat"] == [None] * 6 and d["normal_x"] == [None] * 6  # never invented
    assert str(d["capture_date"][0]) == "2021-06-01"
    assert d["image_width"] == [64] * 6 and d["image_height"] == [48] * 6
    # the folder is stored relative to the output folder, and the reference reads the bytes back
    assert d["tar_file"][0] == os.path.join("..", "photos")
    data = read_image(out / d["tar_file"][0], d["member_name"][0], 0, d["tar_size"][0])
    assert data == (root / d["member_name"][0]).read_bytes()
    # image ids: dataset 0, patch = position in sorted file order
    assert sorted(d["image_id"]) == [make_uid(0, i) for i in range(6)]


def test_imagefolder_rerun_is_up_to_date_and_a_change_redoes(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_folder(root)
    out = tmp_path / "images"
    run_ingest([root], out)
    assert run_ingest([root], out).up_to_date
    (root / "b0" / "new.jpg").write_bytes(jpeg(99))
    m = run_ingest([root], out)
    assert not m.up_to_date and m.rows["images"] == 7


def test_imagefolder_without_metadata_uses_subfolders_as_ids(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_folder(root)
    (root / "loose.jpg").write_bytes(jpeg(50))
    out = tmp_path / "images"
    run_ingest([root], out)
    d = read_out(out).to_pydict()
    keys = dict(zip(d["member_name"], d["building_key"], strict=True))
    assert keys["b1/img1.jpg"] == "b1" and keys["loose.jpg"] is None
    assert d["camera_lat"] == [None] * 7


def test_metadata_jsonl_and_epoch_ms_and_id_column(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    names = make_folder(root, 3, sub=False)
    lines = [
        {
            "file_name": n,
            "OSMID": 1000 + i,
            "compass_angle": 10.0 * i,
            "captured_at": 1_600_000_000_000,
            "lat": 1.0,
            "lon": 2.0,
        }
        for i, n in enumerate(names)
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    out = tmp_path / "images"
    m = run_ingest([root], out)
    d = read_out(out).to_pydict()
    assert d["building_key"] == ["1000", "1001", "1002"] and d["target_uid"] == [1000, 1001, 1002]
    assert d["heading"] == [0.0, 10.0, 20.0] and d["heading_source"] == ["compass_angle"] * 3
    assert str(d["capture_date"][0]) == "2020-09-13"
    assert m.skipped == {"bad_metadata_row": 1}
    with pytest.raises(SbeError, match=r"metadata.jsonl.*'bid'"):
        run_ingest([root], tmp_path / "x", id_column="bid")


def test_bad_inputs_are_counted_skips_and_good_rows_kept(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    names = make_folder(root, 6, sub=False)
    (root / "broken.jpg").write_bytes(b"not an image at all")
    rows = [
        [names[0], "a", 1.0, 2.0, 10],  # good
        [names[1], "b", "abc", 2.0, 10],  # non-numeric coordinate
        [names[2], "c", 1.0, 2.0, 360],  # heading outside [0, 360)
        ["missing.jpg", "d", 1.0, 2.0, 10],  # missing file
        ["broken.jpg", "e", 1.0, 2.0, 10],  # unreadable image
        ["../escape.jpg", "f", 1.0, 2.0, 10],  # leaves the folder
        [names[3], "g", 95.0, 2.0, 10],  # latitude out of range
        [names[4], "h", "", "", ""],  # good, no position
    ]
    write_csv(root / "metadata.csv", ["file_name", "building_id", "lat", "lon", "heading"], rows)
    out = tmp_path / "images"
    m = run_ingest([root], out)
    assert m.rows["images"] == 2
    assert m.skipped == {
        "bad_coordinate": 2,
        "bad_heading": 1,
        "missing_image": 1,
        "corrupt_image": 1,
        "unsafe_path": 1,
    }
    ex = m.skip_examples
    assert (
        "metadata.csv row 2" in ex["bad_coordinate"][0] and "lat 'abc'" in ex["bad_coordinate"][0]
    )
    assert "missing.jpg" in ex["missing_image"][0] and "broken.jpg" in ex["corrupt_image"][0]
    assert m.extra["warnings"]["image_without_metadata"] == 1  # names[5] has no row
    d = read_out(out).to_pydict()
    assert sorted(d["building_key"]) == ["a", "h"]


@pytest.mark.parametrize(("sep", "encoding"), [(";", "utf-8-sig"), ("\t", "latin-1")])
def test_csv_delimiter_and_encoding_detected(tmp_path: Path, sep: str, encoding: str) -> None:
    root = tmp_path / "photos"
    names = make_folder(root, 2, sub=False)
    write_csv(
        root / "metadata.csv",
        ["file_name", "building_id", "lat", "lon"],
        [[names[0], "Zürich", 1.5, 2.5], [names[1], "Köln", 3.5, 4.5]],
        sep=sep,
        encoding=encoding,
    )
    out = tmp_path / "images"
    m = run_ingest([root], out)
    d = read_out(out).to_pydict()
    assert d["building_key"] == ["Zürich", "Köln"] and d["camera_lon"] == [2.5, 4.5]
    assert ("metadata_encoding_latin1" in m.extra["warnings"]) == (encoding == "latin-1")


def test_metadata_without_file_name_is_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_folder(root, 2)
    write_csv(root / "metadata.csv", ["image", "lat"], [["b0/img0.jpg", 1]])
    with pytest.raises(SbeError, match=r"metadata.csv: no file_name column"):
        run_ingest([root], tmp_path / "out")


# ---- WebDataset ---------------------------------------------------------------------------------


def write_shard(path: Path, samples: list[tuple[str, bytes | None, dict | None]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for key, img, meta in samples:
            for name, data in (
                (f"{key}.jpg", img),
                (f"{key}.json", None if meta is None else json.dumps(meta).encode()),
            ):
                if data is None:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_shards_end_to_end(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(
        shards / "00000.tar",
        [
            (
                f"0000000{i}",
                jpeg(i),
                {
                    "key": f"0000000{i}",
                    "status": "success",
                    "building_id": f"x{i % 2}",
                    "lat": 1.0,
                    "lon": 2.0,
                    "heading": 45,
                },
            )
            for i in range(4)
        ],
    )
    write_shard(
        shards / "00001.tar",
        [
            ("00010000", jpeg(10), None),
            ("00010001", b"garbage", {"key": "00010001"}),
            ("00010002", jpeg(12), {"key": "00010002", "heading": 400}),
        ],
    )
    pq.write_table(
        pa.table({"key": ["00010000"], "building_id": ["from-parquet"]}), shards / "00001.parquet"
    )
    assert detect_one(shards) == "webdataset"
    out = tmp_path / "images"
    m = run_ingest([shards], out)
    assert m.extra["input_format"] == "webdataset" and m.rows["images"] == 5
    assert m.skipped == {"corrupt_image": 1, "bad_heading": 1}
    t = read_out(out)
    d = t.to_pydict()
    assert d["image_key"] == ["00000000", "00000001", "00000002", "00000003", "00010000"]
    assert d["building_key"][-1] == "from-parquet"  # from the parquet beside the shard
    assert d["source_kind"] == ["tar"] * 5 and d["dataset_id"] == [0, 0, 0, 0, 1]
    # offsets point at the JPEG inside the shard, read back as the backbone does
    reader = TarReader(
        d["tar_file"],
        np.array(d["tar_offset"]),
        np.array(d["tar_size"]),
        {f: f for f in set(d["tar_file"])},
        d["member_name"],
    )
    assert reader(2) == jpeg(2)
    reader.close()


# ---- Mapillary -----------------------------------------------------------------------------------


def test_mapillary_geojson_and_per_image_json(tmp_path: Path) -> None:
    root = tmp_path / "mly"
    root.mkdir()
    for i in range(4):
        (root / f"{1000 + i}.jpg").write_bytes(jpeg(i))
    feats = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [11.0, 48.0]},
            "properties": {
                "id": "1000",
                "captured_at": 1_600_000_000_000,
                "compass_angle": 12.0,
                "computed_compass_angle": 14.5,
                "sequence": "seqA",
                "is_pano": False,
                "camera_type": "perspective",
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [11.1, 48.1]},
            "properties": {
                "id": "1001",
                "compass_angle": 200.0,
                "is_pano": True,
                "camera_type": "spherical",
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": ["x", 48.1]},
            "properties": {"id": "1002"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [1, 2]},
            "properties": {"id": "9999"},
        },
    ]
    (root / "images.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": feats})
    )
    (root / "1003.json").write_text(
        json.dumps(
            {
                "id": "1003",
                "geometry": {"type": "Point", "coordinates": [0.5, 0.25]},
                "computed_geometry": {"type": "Point", "coordinates": [0.6, 0.35]},
            }
        )
    )
    assert detect_one(root) == "mapillary"
    out = tmp_path / "images"
    m = run_ingest([root], out)
    assert m.rows["images"] == 3 and m.skipped == {"bad_coordinate": 1, "missing_image": 1}
    d = read_out(out).to_pydict()
    assert d["image_key"] == ["1000", "1001", "1003"]
    assert d["heading"][0] == pytest.approx(14.5) and d["heading_source"][:2] == [
        "computed",
        "camera",
    ]
    assert d["position_source"] == ["gps", "gps", "computed"] and d["camera_lat"][
        2
    ] == pytest.approx(0.35)
    assert d["is_pano"] == [False, True, None] and d["sequence"][0] == "seqA"
    assert d["building_key"] == [None] * 3 and d["target_uid"] == [None] * 3


# ---- detection, helpers ---------------------------------------------------------------------------


def test_format_detection(tmp_path: Path) -> None:
    from tarfactory import records, write_tar

    raw = tmp_path / "raw"
    raw.mkdir()
    write_tar(raw / "0088.tar", records(88, 2))
    assert detect_one(raw) == "3dsv" and detect_one(raw / "0088.tar") == "3dsv"
    folder = tmp_path / "f"
    make_folder(folder, 2)
    assert detect_one(folder) == "imagefolder"
    write_csv(folder / "list.csv", ["path"], [["b0/img0.jpg"]])
    assert detect_one(folder / "list.csv") == "imagefolder"
    with pytest.raises(SbeError, match="different formats"):
        detect_format([raw, folder])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SbeError, match=r"no tar files found under .*nor images or metadata"):
        detect_one(empty)


def test_parse_time_and_building_uid() -> None:
    assert parse_time("1970-01-02") == 86_400_000
    assert (
        parse_time("1970-01-01T00:00:01Z") == 1000 and parse_time(5) == 5 and parse_time("") is None
    )
    with pytest.raises(ValueError):
        parse_time("yesterday")
    assert building_uid("123") == 123 and building_uid("w123") != building_uid("w124")
    assert building_uid("w123") == building_uid("w123")


def test_3dsv_rows_have_source_kind_tar(tmp_path: Path) -> None:
    from tarfactory import records, write_tar

    raw = tmp_path / "raw"
    raw.mkdir()
    write_tar(raw / "0088.tar", records(88, 3))
    out = tmp_path / "images"
    run_ingest([raw], out)
    d = read_out(out).to_pydict()
    n = len(d["image_id"])
    assert n > 0 and d["source_kind"] == ["tar"] * n and d["building_key"] == [None] * n
    assert None not in d["target_lat"] and None not in d["normal_x"]


# ---- recipes ---------------------------------------------------------------------------------------


def test_recipe_folder_metadata_ingest_backbone(tmp_path: Path, tiny_vit: Path) -> None:  # noqa: F811
    """folder + metadata.csv -> ingest -> backbone, then the work folder moved elsewhere."""
    from sbe.config import BackboneConfig
    from sbe.stages import backbone

    work = tmp_path / "work"
    root = work / "photos"
    names = make_folder(root, 5)
    write_csv(
        root / "metadata.csv",
        ["file_name", "building_id", "lat", "lon"],
        [[n, f"b{i}", 1, 2] for i, n in enumerate(names)],
    )
    (root / names[4]).write_bytes(jpeg(4))
    run_ingest([root], work / "images")
    moved = tmp_path / "moved"
    shutil.move(str(work), str(moved))
    m = backbone.run(
        BackboneConfig(
            input=moved / "images",
            output=moved / "backbone",
            model=f"hf:{tiny_vit}",
            runtime="torch",
            device="cpu",
            threads=1,
            decode_workers=1,
        )
    )
    assert m.rows["embedded"] == 5
    t = pa.concat_tables([pq.read_table(p) for p in sorted((moved / "backbone").glob("*.parquet"))])
    assert t.num_rows == 5 and t.column("target_lat").null_count == 5
    assert np.isfinite(
        np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    ).all()


@pytest.mark.skipif(
    not (LANDMARKS / "labels.csv").is_file(), reason=f"{LANDMARKS} is not on this machine"
)
def test_recipe_landmarks_mini_as_image_folder(tmp_path: Path) -> None:
    """The landmarks-mini photos ingested in place, their landmark labels as building ids."""
    out = tmp_path / "images"
    m = run_ingest([LANDMARKS / "labels.csv"], out, id_column="landmark")
    import csv

    with open(LANDMARKS / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert m.rows["images"] == len(rows) and m.skipped == {}
    d = read_out(out).to_pydict()
    want = {r["path"]: r["landmark"] for r in rows}
    got = dict(zip(d["member_name"], d["building_key"], strict=True))
    assert got == want
    sizes = {r["path"]: (int(r["width"]), int(r["height"])) for r in rows}
    assert all(
        sizes[f] == (w, h)
        for f, w, h in zip(d["member_name"], d["image_width"], d["image_height"], strict=True)
    )
