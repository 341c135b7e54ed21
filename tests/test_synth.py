"""``sbe synth``: the raw format it writes, its geometry, determinism, resume, packaged parquet, CLI.

One small world (6 buildings, 96 px) is generated once per module and inspected by most tests.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import SynthConfig
from sbe.data.images import ImageDecodeError, decode_rgb
from sbe.sphere import haversine_km, local_en_m
from sbe.stages import synth as stage
from sbe.storage import load_manifest
from sbe.synth.season import season_of
from sbe.synth.writers import TRUTH_SCHEMA

SIZE = 96
STEM = re.compile(r"^(\d{4})_(\d+)_(\d+)_(\d+)$")


def _cfg(out: Path, **kw) -> SynthConfig:
    # the ten hand-made cities (the gazetteer world, the default, is tests/test_synth_places.py)
    base = dict(
        output=out,
        buildings=6,
        seed=11,
        image_size=SIZE,
        workers=1,
        jpeg_quality=85,
        places="cities10",
    )
    base.update(kw)
    return SynthConfig(**base)


def _members(tar_path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    stage.run(_cfg(out, preview=True))
    return out


@pytest.fixture(scope="module")
def records(world: Path) -> list[dict]:
    """Every image of the world: its tar, member name, parsed `d` values, date, JPEG bytes."""
    rows = []
    for tar in sorted(world.glob("*.tar")):
        members = _members(tar)
        for name, data in members.items():
            if not name.endswith(".txt"):
                continue
            text = data.decode("ascii")
            lines = text.splitlines()
            tokens = lines[0].split()
            stem = name.rsplit("/", 1)[-1][:-4]
            rows.append(
                {
                    "tar": tar.name,
                    "name": name,
                    "stem": stem,
                    "tokens": tokens,
                    "d": [float(x) for x in tokens[1:]],
                    "lines": lines,
                    "jpg": members.get(name[:-4] + ".jpg"),
                }
            )
    return rows


def test_manifest_counts(world: Path, records: list[dict]) -> None:
    m = load_manifest(world)
    assert m is not None and m.stage == "synth"
    assert m.rows["buildings"] == 6
    assert m.rows["images"] == len(records)
    assert m.rows["tars"] == len(list(world.glob("*.tar")))
    assert m.wall_seconds > 0
    truth = pq.read_table(world / "truth.parquet")
    assert truth.schema.equals(TRUTH_SCHEMA)
    assert truth.num_rows == len(records)
    assert len(set(truth.column("building_index").to_pylist())) == 6


def test_d_line_has_17_numbers_in_range(records: list[dict]) -> None:
    assert records
    for r in records:
        assert r["tokens"][0] == "d" and len(r["tokens"]) == 18, r["lines"][0]
        ds, tid, pid, sv, tlat, tlon, th, nx, ny, nz, clat, clon, ch, dist, head, pitch, roll = r[
            "d"
        ]
        for v in (ds, tid, pid, sv):
            assert v == int(v) and v >= 0
        assert -90 <= tlat <= 90 and -180 <= tlon <= 180
        assert -90 <= clat <= 90 and -180 <= clon <= 180
        assert abs(math.hypot(nx, ny, nz) - 1.0) < 1e-5 and nz == 0.0
        assert 0.0 <= head < 360.0
        assert -90.0 <= pitch <= 90.0 and roll == 0.0
        assert 2.0 <= ch <= 3.0  # camera about 2.5 m above the street
        assert 0.5 <= th <= 40.0 and dist > 1.0


def test_names_pairs_and_layouts(world: Path, records: list[dict]) -> None:
    layouts = set()
    for tar in sorted(world.glob("*.tar")):
        members = _members(tar)
        stems = defaultdict(set)
        for name in members:
            folder, _, base = name.rpartition("/")
            stem, ext = base.rsplit(".", 1)
            stems[(folder, stem)].add(ext)
            m = STEM.match(stem)
            assert m, name
            assert int(m.group(1)) == int(tar.stem)
            if folder:
                assert folder == f"{tar.stem}/{tar.stem}"
            layouts.add("nested" if folder else "flat")
        assert all(exts == {"jpg", "txt"} for exts in stems.values())
    assert layouts == {"nested", "flat"}  # both layouts of the real data
    for r in records:
        _, patch, pano, target = (int(x) for x in STEM.match(r["stem"]).groups())
        ds, tid, pid, sv = (int(x) for x in r["d"][:4])
        assert (ds, pid, sv, tid) == (int(r["tar"][:4]), patch, pano, target)


def test_geometry_is_consistent(records: list[dict]) -> None:
    for r in records:
        _, _, _, _, tlat, tlon, th, nx, ny, _, clat, clon, ch, dist, head, pitch, _ = r["d"]
        horiz = float(haversine_km(clat, clon, tlat, tlon)) * 1000.0
        dh = th - ch
        # the `d` distance is the 3-D camera-target distance
        assert math.isclose(math.hypot(horiz, dh), dist, rel_tol=2e-3, abs_tol=0.02)
        assert math.isclose(math.degrees(math.atan2(dh, horiz)), pitch, abs_tol=0.05)
        east, north = local_en_m(np.array([tlat]), np.array([tlon]), clat, clon)[0]
        bearing = math.degrees(math.atan2(east, north)) % 360.0
        assert min(abs(bearing - head), 360 - abs(bearing - head)) < 0.1
        # the normal points from the facade toward the street, where the camera is
        assert -(east * nx + north * ny) > 0.5


def test_ids_targets_panoramas(records: list[dict]) -> None:
    by_ds = defaultdict(list)
    for r in records:
        by_ds[int(r["d"][0])].append(r)
    for rows in by_ds.values():
        patches = [int(r["d"][2]) for r in rows]
        assert len(patches) == len(set(patches))  # PatchID unique per image within a dataset
        targets = defaultdict(list)
        panos = defaultdict(list)
        for r in rows:
            targets[int(r["d"][1])].append(r)
            panos[int(r["d"][3])].append(r)
        for views in targets.values():
            assert 2 <= len(views) <= 7
            # one physical point: same position and normal in every view
            assert len({tuple(v["d"][4:10]) for v in views}) == 1
            assert len({int(v["d"][3]) for v in views}) == len(views)  # different panoramas
        for views in panos.values():
            # one panorama: one camera position and one capture date
            assert len({tuple(v["d"][10:13]) for v in views}) == 1
            assert len({v["lines"][1] for v in views}) == 1


def test_dates_and_seasons(world: Path, records: list[dict]) -> None:
    truth = {r["stem"]: r for r in pq.read_table(world / "truth.parquet").to_pylist()}
    hemispheres = set()
    for r in records:
        assert len(r["lines"]) == 2 and r["lines"][1].startswith("t ")
        date = dt.date.fromisoformat(r["lines"][1][2:])
        t = truth[r["stem"]]
        assert t["capture_date"] == date
        assert t["season"] == season_of(date, r["d"][4])
        hemispheres.add(t["hemisphere"])
    assert hemispheres == {"N", "S"}


def test_images_decode_at_size(records: list[dict]) -> None:
    for r in records[:20]:
        img = decode_rgb(r["jpg"])
        assert img.size == (SIZE, SIZE)
        arr = np.asarray(img, dtype=np.float32)
        assert arr.std() > 8.0  # not a blank frame


def test_preview_written(world: Path) -> None:
    path = world / "preview.png"
    assert path.is_file() and path.stat().st_size < 1_000_000
    with Image.open(path) as im:
        assert im.size[0] > 3 * SIZE and im.size[1] > SIZE


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    stage.run(_cfg(again, preview=True))
    names = sorted(p.name for p in world.glob("*.tar"))
    assert names == sorted(p.name for p in again.glob("*.tar"))
    for n in names:
        assert (world / n).read_bytes() == (again / n).read_bytes(), n
    other = tmp_path / "other"
    stage.run(_cfg(other, seed=12))
    a = (world / "0001.tar").read_bytes()
    assert a != (other / "0001.tar").read_bytes()


@pytest.mark.slow
def test_independent_of_worker_count(world: Path, tmp_path: Path) -> None:
    par = tmp_path / "par"
    stage.run(_cfg(par, workers=2))
    for p in sorted(world.glob("*.tar")):
        assert p.read_bytes() == (par / p.name).read_bytes(), p.name


def test_rerun_skips_current_tars_and_redoes_damaged(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    cfg = _cfg(out, buildings=3, seed=5)
    m1 = stage.run(cfg)
    assert m1.extra["tars_written"] == m1.rows["tars"] >= 2
    tars = sorted(out.glob("*.tar"))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tars}
    # a killed run: a half-written temp file, one tar gone, the manifest gone
    (out / ".tmp-0001.tar.999.deadbeef").write_bytes(b"partial")
    tars[0].unlink()
    (out / "_manifest.json").unlink()
    m2 = stage.run(cfg)
    assert m2.extra["tars_written"] == 1 and m2.extra["tars_skipped"] == m1.rows["tars"] - 1
    assert not list(out.glob(".tmp-*"))
    for p in tars:
        assert p.read_bytes() == before[p.name][1]
        if p != tars[0]:
            assert p.stat().st_mtime_ns == before[p.name][0]  # untouched
    m3 = stage.run(cfg)
    assert m3.up_to_date
    # a truncated tar is detected (size differs from its truth part) and rewritten
    tars[1].write_bytes(tars[1].read_bytes()[:1000])
    m4 = stage.run(cfg)
    assert m4.extra["tars_written"] == 1
    assert tars[1].read_bytes() == before[tars[1].name][1]


def test_smaller_rerun_removes_stale_tars(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    stage.run(_cfg(out, buildings=4, seed=2))
    assert len(list(out.glob("*.tar"))) == 4
    m = stage.run(_cfg(out, buildings=2, seed=2))
    assert sorted(p.name for p in out.glob("*.tar")) == ["0001.tar", "0002.tar"]
    assert m.rows["tars"] == 2
    assert pq.read_table(out / "truth.parquet").num_rows == m.rows["images"]


def test_packaged_parquet(tmp_path: Path) -> None:
    path = tmp_path / "packaged_images.parquet"
    cfg = _cfg(tmp_path / "raw", buildings=2, packaged=path, packaged_buildings=6)
    m = stage.run(cfg)
    table = pq.read_table(path)
    schema = table.schema
    assert [f.name for f in schema] == ["image_bytes", "OSMID", "is_valid", "lat", "lon"]
    assert str(schema.field("image_bytes").type) == "binary"
    assert str(schema.field("OSMID").type) == "int64"
    assert str(schema.field("is_valid").type) == "bool"
    assert str(schema.field("lat").type) == "double"
    osm = table.column("OSMID").to_pylist()
    assert len(set(osm)) == 6 and len(osm) > 6  # several images per building
    valid = table.column("is_valid").to_pylist()
    assert False in valid and None in valid and True in valid
    info = m.extra["packaged"]
    assert len(info["corrupt_rows"]) == 2
    blobs = table.column("image_bytes").to_pylist()
    for i, b in enumerate(blobs):
        if i in info["corrupt_rows"]:
            assert valid[i] is True
            with pytest.raises(ImageDecodeError):
                decode_rgb(b)
        else:
            assert decode_rgb(b).size == (SIZE, SIZE)
    # the same building has one location; packaged buildings are new (not in the tars)
    loc = {}
    for o, la, lo in zip(
        osm, table.column("lat").to_pylist(), table.column("lon").to_pylist(), strict=True
    ):
        assert loc.setdefault(o, (la, lo)) == (la, lo)
    truth = pq.read_table(tmp_path / "raw" / "truth.parquet")
    tar_locs = set(
        zip(
            truth.column("building_lat").to_pylist(),
            truth.column("building_lon").to_pylist(),
            strict=True,
        )
    )
    assert not tar_locs & set(loc.values())
    # deterministic: a fresh run writes the same table
    path2 = tmp_path / "again.parquet"
    stage.run(_cfg(tmp_path / "raw2", buildings=2, packaged=path2, packaged_buildings=6))
    assert pq.read_table(path2).equals(table)


def test_cli_synth(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        ["synth", str(out), "--buildings", "2", "--seed", "4", "--image-size", "64", "--workers", "1",
         "--difficulty", "0.3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "images" in res.output and "buildings" in res.output
    m = load_manifest(out)
    assert m.config["difficulty"] == 0.3 and m.rows["buildings"] == 2
    with tarfile.open(out / "0001.tar") as tf:
        name = next(n for n in tf.getnames() if n.endswith(".jpg"))
        img = Image.open(io.BytesIO(tf.extractfile(name).read()))
        assert img.size == (64, 64)
    bad = CliRunner().invoke(app, ["synth", str(out), "--difficulty", "1.5"])
    assert bad.exit_code != 0
