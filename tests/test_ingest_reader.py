"""Reading one raw tar: pairing in any layout, every kind of damage counted, offsets that work."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tarfactory import Extra, Record, make_jpeg, member_offset, records, write_tar

from sbe.data.images import decode_rgb, fingerprint
from sbe.data.rawtar import SKIP_REASONS, ReadSettings, inspect_jpeg, read_raw_tar
from sbe.data.streetview import format_metadata
from sbe.data.tarstream import NotATarError, TarStream, is_safe_member_path, probe_tar
from sbe.storage import to_numpy_matrix
from sbe.storage.schemas import IMAGES_SCHEMA, make_uid

FLOAT32_FIELDS = ["target_height", "normal_x", "normal_y", "normal_z", "camera_height"]


def read(path: Path, **kw) -> tuple[pa.Table, object]:
    return read_raw_tar(path, ReadSettings(**kw))


def test_rows_carry_every_field_offset_and_fingerprint(tmp_path: Path) -> None:
    recs = records(7, 88, capture_date=dt.date(2020, 5, 17))
    tar = write_tar(tmp_path / "0088.tar", recs[::-1], layout="nested")
    table, rep = read(tar)
    assert table.schema == IMAGES_SCHEMA
    assert rep.rows == 7 and rep.skipped == {} and rep.damage is None and rep.error is None
    ids = table["image_id"].to_numpy()
    assert (np.diff(ids) > 0).all(), "rows sorted by image_id"
    by_stem = {r.stem: r for r in recs}
    fps = to_numpy_matrix(table["fingerprint"])
    raw = tar.read_bytes()
    for i, row in enumerate(table.drop_columns(["fingerprint"]).to_pylist()):
        rec = by_stem[Path(row["member_name"]).stem]
        d = rec.meta
        assert row["member_name"] == f"0088/0088/{rec.stem}.jpg"
        assert row["image_id"] == make_uid(88, d.patch_id)
        assert row["target_uid"] == make_uid(88, d.target_id)
        assert (row["dataset_id"], row["target_id"], row["patch_id"], row["panorama_id"]) == (
            d.dataset_id,
            d.target_id,
            d.patch_id,
            d.panorama_id,
        )
        for name in ("target_lat", "target_lon", "camera_lat", "camera_lon"):
            assert row[name] == getattr(d, name)  # float64: exact
        for name in [*FLOAT32_FIELDS, "camera_distance", "heading", "pitch"]:
            assert row[name] == pytest.approx(getattr(d, name), rel=1e-6, abs=1e-6)
        assert row["capture_date"] == dt.date(2020, 5, 17)
        assert row["tar_file"] == str(tar)
        # one seek + read gives the JPEG back, byte for byte
        jpeg = raw[row["tar_offset"] : row["tar_offset"] + row["tar_size"]]
        assert jpeg == rec.jpeg
        assert (row["image_width"], row["image_height"]) == (48, 48)
        np.testing.assert_array_equal(fps[i], fingerprint(decode_rgb(rec.jpeg, min_side=16)))


def _content(table: pa.Table) -> pa.Table:
    return table.drop_columns(["tar_file", "member_name", "tar_offset"])


@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("order", ["pairs", "txt_first", "images_first"])
def test_any_layout_and_member_order_gives_the_same_rows(tmp_path: Path, layout, order) -> None:
    recs = records(6, 88)
    ref, _ = read(write_tar(tmp_path / "ref" / "0088.tar", recs))
    table, rep = read(write_tar(tmp_path / "0088.tar", recs, layout=layout, order=order))
    assert rep.skipped == {}
    assert _content(table).equals(_content(ref))


def test_mixed_folders_pair_by_full_stem_path(tmp_path: Path) -> None:
    recs = records(4, 88)
    recs[0].folder = "a/"
    recs[1].folder = "a/b/"
    recs[2].folder = ""
    # same file stem in two folders: two distinct records, not one pair
    twin = records(1, 88, start=50)[0]
    twin.stem = recs[3].stem
    twin.folder = "other/"
    table, rep = read(write_tar(tmp_path / "0088.tar", [*recs, twin]))
    assert rep.rows == 5 and rep.skipped == {}
    assert sorted(table["member_name"].to_pylist())[0].startswith("0088/0088/")


def test_jpeg_extension_case_insensitive(tmp_path: Path) -> None:
    recs = records(4, 88)
    for r, ext in zip(recs, [".jpeg", ".JPG", ".JPEG", ".Jpg"], strict=True):
        r.image_ext = ext
    table, rep = read(write_tar(tmp_path / "0088.tar", recs))
    assert rep.rows == 4 and rep.skipped == {}
    assert {Path(n).suffix for n in table["member_name"].to_pylist()} == {
        ".jpeg",
        ".JPG",
        ".JPEG",
        ".Jpg",
    }


def test_missing_halves_are_counted(tmp_path: Path) -> None:
    recs = records(6, 88)
    recs[1].jpeg = None
    recs[4].txt = None
    recs[5].txt = None
    _, rep = read(write_tar(tmp_path / "0088.tar", recs, order="images_first"))
    assert rep.rows == 3
    assert rep.skipped == {"missing_image": 1, "missing_metadata": 2}
    assert any(recs[1].stem in e for e in rep.skip_examples["missing_image"])


def test_corrupt_images_are_counted_not_fatal(tmp_path: Path) -> None:
    recs = records(6, 88)
    recs[0].jpeg = recs[0].jpeg[: len(recs[0].jpeg) // 2]  # truncated JPEG
    recs[1].jpeg = os.urandom(800)  # noise
    recs[2].jpeg = make_jpeg(fmt="PNG")  # decodable, but not a JPEG
    recs[3].jpeg = b""  # empty member
    table, rep = read(write_tar(tmp_path / "0088.tar", recs))
    assert rep.rows == 2 and rep.skipped == {"corrupt_jpeg": 4}
    kept = {Path(n).stem for n in table["member_name"].to_pylist()}
    assert kept == {recs[4].stem, recs[5].stem}
    assert any("not a JPEG" in e for e in rep.skip_examples["corrupt_jpeg"])


def test_malformed_d_lines_are_counted_by_kind(tmp_path: Path) -> None:
    recs = records(7, 88)
    good = format_metadata(recs[0].meta).split()
    recs[0].txt = " ".join(good[:-1])  # 16 numbers
    recs[1].txt = " ".join([*good[:5], "north", *good[6:]])
    recs[2].txt = " ".join([*good[:5], "91.5", *good[6:]])  # target_lat
    recs[3].txt = ""
    recs[4].txt = b"\xff\xfe\x00d"
    _, rep = read(write_tar(tmp_path / "0088.tar", recs))
    assert rep.rows == 2 and rep.skipped == {"malformed_d_line": 5}
    assert rep.malformed_kinds == {
        "token_count": 1,
        "not_numeric": 1,
        "out_of_range": 1,
        "missing_d_line": 1,
        "not_text": 1,
    }
    assert any("target_lat" in e for e in rep.skip_examples["malformed_d_line"])


def test_duplicate_ids_keep_the_first_in_archive_order(tmp_path: Path) -> None:
    recs = records(4, 88)
    clone = records(1, 88, start=3)[0]  # same d line (patch 3), other stem, other pixels
    clone.stem = "zz_clone"
    clone.jpeg = make_jpeg(seed=999)
    table, rep = read(write_tar(tmp_path / "0088.tar", [clone, *recs]))
    assert rep.rows == 4 and rep.skipped == {"duplicate_id": 1}
    row = table.filter(pa.compute.equal(table["patch_id"], 3)).to_pylist()[0]
    assert Path(row["member_name"]).stem == "zz_clone"


def test_repeated_member_names_keep_the_first(tmp_path: Path) -> None:
    recs = records(3, 88)
    again = Record(recs[0].stem, make_jpeg(seed=77), recs[0].txt)
    tar = write_tar(tmp_path / "0088.tar", [*recs, again])
    table, rep = read(tar)
    assert rep.rows == 3 and rep.skipped == {"duplicate_member": 2}
    # tarfile's getmember() finds the *last* occurrence; ingest keeps the first (offset 512)
    last_offset, _ = member_offset(tar, f"0088/0088/{recs[0].stem}.jpg")
    offsets = table["tar_offset"].to_pylist()
    assert 512 in offsets and last_offset not in offsets


@pytest.mark.parametrize(
    "name", ["/abs/0088_x.jpg", "../0088_x.txt", "a/../../0088_x.jpg", "./../x.txt", "C:/x.jpg"]
)
def test_unsafe_paths_are_refused(tmp_path: Path, name: str) -> None:
    assert not is_safe_member_path(name)
    recs = records(2, 88)
    extras = [Extra(name, make_jpeg() if name.endswith("jpg") else b"d 1")]
    table, rep = read(write_tar(tmp_path / "0088.tar", recs, extras=extras))
    assert rep.rows == 2 and rep.skipped == {"unsafe_member_path": 1}
    assert name not in table["member_name"].to_pylist()


def test_safe_paths_are_accepted() -> None:
    for name in ["a.jpg", "0088/0088/x.jpg", "./x.txt", "a..b.jpg", "x/..y/z.txt", "a:b.jpg"]:
        assert is_safe_member_path(name), name


def test_links_devices_and_fifos_are_unsupported(tmp_path: Path) -> None:
    recs = records(2, 88)
    jpg = f"0088/0088/{recs[0].stem}.jpg"
    extras = [
        Extra("0088/0088", type=tarfile.DIRTYPE),  # directories pass silently
        Extra("0088/link_0.jpg", type=tarfile.SYMTYPE, linkname=jpg),
        Extra("0088/link_0.txt", type=tarfile.LNKTYPE, linkname=jpg),
        Extra("0088/fifo.jpg", type=tarfile.FIFOTYPE),
        Extra("0088/dev.txt", type=tarfile.CHRTYPE),
        Extra("README.md", b"hello"),  # not a record member: ignored with a warning
    ]
    _, rep = read(write_tar(tmp_path / "0088.tar", recs, extras=extras))
    assert rep.rows == 2
    assert rep.skipped == {"unsupported_member": 4}
    assert rep.warnings == {"ignored_member": 1}


def _intact_extents(tar: Path) -> dict[str, int]:
    """Member name -> end of its data, in the intact tar."""
    with tarfile.open(tar, "r:") as tf:
        return {m.name: m.offset_data + m.size for m in tf.getmembers()}


def _expected_stems(recs: list[Record], ends: dict[str, int], cut: int) -> set[str]:
    keep = set()
    for r in recs:
        j, t = f"0088/0088/{r.stem}.jpg", f"0088/0088/{r.stem}.txt"
        if ends[j] <= cut and ends[t] <= cut:
            keep.add(r.stem)
    return keep


@pytest.fixture(scope="module")
def intact_tar(tmp_path_factory) -> tuple[Path, list[Record]]:
    recs = records(12, 88)
    return write_tar(tmp_path_factory.mktemp("intact") / "0088.tar", recs), recs


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frac=st.floats(0.0, 1.0))
def test_truncation_anywhere_keeps_every_complete_row(
    intact_tar, tmp_path_factory, frac: float
) -> None:
    tar, recs = intact_tar
    ends = _intact_extents(tar)
    last_data = max(ends.values())
    # anywhere after the first header, up to the end-of-archive marker
    cut = 512 + int(frac * (last_data + 511 - 512))
    cut_tar = tmp_path_factory.mktemp("cut") / "0088.tar"
    cut_tar.write_bytes(tar.read_bytes()[:cut])
    table, rep = read(cut_tar)
    want = _expected_stems(recs, ends, cut)
    assert {Path(n).stem for n in table["member_name"].to_pylist()} == want
    assert rep.skipped.get("truncated_archive") == 1 and rep.damage
    assert set(rep.skipped) <= {"truncated_archive", "missing_image", "missing_metadata"}


def test_cut_at_member_boundary_is_reported(tmp_path: Path, intact_tar) -> None:
    tar, recs = intact_tar
    ends = _intact_extents(tar)
    boundary = -(-ends[f"0088/0088/{recs[5].stem}.txt"] // 512) * 512
    cut_tar = tmp_path / "0088.tar"
    cut_tar.write_bytes(tar.read_bytes()[:boundary])
    table, rep = read(cut_tar)
    assert table.num_rows == 6 and rep.skipped == {"truncated_archive": 1}
    assert "without an end-of-archive marker" in rep.damage


def test_garbage_header_mid_archive_is_reported(tmp_path: Path, intact_tar) -> None:
    tar, recs = intact_tar
    ends = _intact_extents(tar)
    header = -(-ends[f"0088/0088/{recs[3].stem}.txt"] // 512) * 512  # header of record 4's jpg
    data = bytearray(tar.read_bytes())
    data[header : header + 512] = os.urandom(512)
    bad = tmp_path / "0088.tar"
    bad.write_bytes(bytes(data))
    table, rep = read(bad)
    assert table.num_rows == 4
    assert rep.skipped == {"truncated_archive": 1} and "invalid header" in rep.damage


def test_not_a_tar_and_compressed_inputs_are_refused(tmp_path: Path) -> None:
    good = write_tar(tmp_path / "0088.tar", records(2, 88))
    cases = {
        "noise.tar": os.urandom(4096),
        "empty.tar": b"",
        "short.tar": b"d 1 2 3",
        "text.tar": b"hello world\n" * 100,
        "0088.tar.gz": gzip.compress(good.read_bytes()),
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(NotATarError):
            probe_tar(p)
        table, rep = read(p)
        assert table.num_rows == 0 and rep.error, name
    assert "gzip-compressed" in read(tmp_path / "0088.tar.gz")[1].error
    assert "gunzip" in read(tmp_path / "0088.tar.gz")[1].error


def test_empty_archive_yields_no_rows_and_no_damage(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "0088.tar", [])
    probe_tar(tar)
    table, rep = read(tar)
    assert table.num_rows == 0 and table.schema == IMAGES_SCHEMA
    assert rep.error is None and rep.damage is None and rep.skipped == {}


def test_dataset_id_from_d_line_wins_over_tar_name(tmp_path: Path) -> None:
    recs = records(3, 91)
    table, rep = read(write_tar(tmp_path / "0088.tar", recs))
    assert table["dataset_id"].to_pylist() == [91, 91, 91]
    assert table["image_id"].to_pylist()[0] == make_uid(91, 0)
    assert rep.warnings == {"dataset_id_differs_from_tar_name": 3}
    # a tar name that is not a number implies nothing
    _, rep = read(write_tar(tmp_path / "city.tar", recs))
    assert rep.warnings == {}


def test_bad_capture_date_keeps_the_row_with_a_null(tmp_path: Path) -> None:
    recs = records(3, 88)
    recs[0].txt = format_metadata(recs[0].meta) + "t 2021-02-30\n"
    recs[1].txt = format_metadata(recs[1].meta, dt.date(2019, 1, 2))
    table, rep = read(write_tar(tmp_path / "0088.tar", recs))
    assert table["capture_date"].to_pylist() == [None, dt.date(2019, 1, 2), None]
    assert rep.warnings == {"bad_capture_date": 1} and rep.skipped == {}


def test_threaded_decode_gives_identical_rows(tmp_path: Path) -> None:
    recs = records(20, 88)
    recs[5].jpeg = b"garbage"
    tar = write_tar(tmp_path / "0088.tar", recs, order="images_first")
    one, r1 = read(tar, decode_threads=1)
    many, r2 = read(tar, decode_threads=3, max_pending_decodes=2)
    assert one.equals(many) and r1.skipped == r2.skipped == {"corrupt_jpeg": 1}


def test_long_and_non_utf8_names_keep_correct_offsets(tmp_path: Path) -> None:
    recs = records(2, 88)
    recs[0].folder = "deep/" * 30  # > 100 chars: PAX / GNU long-name headers
    recs[1].folder = "caf\udce9/"  # undecodable byte 0xE9 in the archive
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        tar = tmp_path / f"0088-{fmt}.tar"
        with tarfile.open(tar, "w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
            for r in recs:
                for name, data in [
                    (r.folder + r.stem + ".jpg", r.jpeg),
                    (r.folder + r.stem + ".txt", r.txt.encode()),
                ]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        table, rep = read(tar)
        assert rep.rows == 2 and rep.skipped == {}, fmt
        raw = tar.read_bytes()
        for row in table.to_pylist():
            blob = raw[row["tar_offset"] : row["tar_offset"] + row["tar_size"]]
            assert Image.open(io.BytesIO(blob)).size == (48, 48)
        names = table["member_name"].to_pylist()
        assert any("\\xe9" in n for n in names) and any(n.startswith("deep/deep/") for n in names)
        table.to_pandas()  # the names are valid UTF-8


def test_tar_stream_reports_offsets_and_skips_directories(tmp_path: Path) -> None:
    recs = records(2, 88)
    tar = write_tar(tmp_path / "0088.tar", recs, extras=[Extra("0088", type=tarfile.DIRTYPE)])
    stream = TarStream(tar)
    members = list(stream)
    assert [m.path for m in members] == [
        f"0088/0088/{r.stem}{ext}" for r in recs for ext in (".jpg", ".txt")
    ]
    assert stream.damage is None
    for m in members:
        assert (m.offset, m.size) == member_offset(tar, m.name)


@pytest.mark.parametrize(
    "mode,progressive", [("RGB", False), ("RGB", True), ("L", False), ("CMYK", False)]
)
def test_inspect_jpeg_reports_the_original_size(mode: str, progressive: bool) -> None:
    buf = io.BytesIO()
    img = Image.new("RGB", (640, 480), (200, 40, 10)).convert(mode)
    img.save(buf, "JPEG", quality=90, progressive=progressive)
    w, h, fp = inspect_jpeg(buf.getvalue())
    assert (w, h) == (640, 480) and len(fp) == 768
    pixels = np.frombuffer(fp, np.uint8).reshape(16, 16, 3).astype(int)
    expected = np.asarray(img.convert("RGB"), dtype=int)[0, 0]
    assert np.abs(pixels - expected).max() <= 6  # a flat image stays flat at 16x16


def test_skip_reasons_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ingest.md").read_text()
    for reason in SKIP_REASONS:
        assert f"`{reason}`" in doc, reason


def test_oversized_members_are_not_read(tmp_path: Path, monkeypatch) -> None:
    import sbe.data.rawtar as rawtar

    recs = records(4, 88)
    recs[0].jpeg = make_jpeg(200, 200, seed=1)  # bigger than the others
    recs[1].txt = recs[1].txt + "a " + "0.5 " * 400 + "\n"  # a long (ignored) `a` line
    monkeypatch.setattr(rawtar, "MAX_IMAGE_BYTES", len(recs[0].jpeg) - 1)
    monkeypatch.setattr(rawtar, "MAX_METADATA_BYTES", 1000)
    _, rep = read(write_tar(tmp_path / "0088.tar", recs))
    assert rep.rows == 2
    assert rep.skipped == {"corrupt_jpeg": 1, "malformed_d_line": 1}
    assert rep.malformed_kinds == {"too_large": 1}
    assert "limit" in rep.skip_examples["corrupt_jpeg"][0]


@pytest.fixture(scope="module")
def six_records() -> list[Record]:
    return records(6, 88)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    perm=st.permutations(range(12)),
    folders=st.lists(st.sampled_from(["", "a/", "a/b/", "0088/0088/"]), min_size=6, max_size=6),
)
def test_pairing_is_independent_of_member_order_and_folders(
    six_records, tmp_path_factory, perm, folders
) -> None:
    recs = six_records
    members = []
    for r, folder in zip(recs, folders, strict=True):
        members += [(folder + r.stem + ".jpg", r.jpeg), (folder + r.stem + ".txt", r.txt.encode())]
    tar = tmp_path_factory.mktemp("perm") / "0088.tar"
    with tarfile.open(tar, "w") as tf:
        for i in perm:
            name, data = members[i]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    table, rep = read(tar)
    assert rep.skipped == {} and rep.rows == 6
    assert table["patch_id"].to_pylist() == list(range(6))
    raw = tar.read_bytes()
    for row in table.select(["member_name", "tar_offset", "tar_size"]).to_pylist():
        rec = recs[int(Path(row["member_name"]).stem.split("_")[1])]
        assert raw[row["tar_offset"] : row["tar_offset"] + row["tar_size"]] == rec.jpeg
