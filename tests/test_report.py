"""``sbe report``: data gathering, graceful degradation, gallery marks, tar offsets, no network."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import tarfile
from html import unescape
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LANDMARKS
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import ReportConfig
from sbe.data.tarstream import read_tar_member
from sbe.geo import koppen
from sbe.models.projector import Projector
from sbe.pipeline import wire
from sbe.report import gather as g
from sbe.report.build import build_report
from sbe.report.svg import Series, line_chart, nice_ticks
from sbe.report.thumbs import ImageReadError, image_locations
from sbe.report.worldmap import great_circle, koppen_background
from sbe.stages import report as stage
from sbe.storage import to_numpy_matrix

SECTIONS = [
    "dataset", "training", "metrics", "gallery", "geolocation", "clusters", "run", "verification"
]  # fmt: skip
#: what the tiny pipeline's evaluation does not run (re-ranking is opt-in: seconds per query)
NO_RERANK = "no re-ranking in the evaluation (run `sbe evaluate --rerank`)"
# a src/href attribute whose value is a network URL (http:, https: or protocol-relative)
NETWORK_REF = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _metrics_notes() -> list[str]:
    """What the metrics section of the tiny pipeline's report lacks: nothing, or (on a fresh clone
    without ``../shared``, or ``SBE_LANDMARKS=``) the real photos, with both reasons."""
    if LANDMARKS.is_dir():
        return []
    return [
        f"no labels.csv in {LANDMARKS}",
        "real-photo check skipped: no landmarks folder found",
    ]


def _jpeg(colour: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _tar_with_jpegs(path: Path, blobs: dict[str, bytes]) -> dict[str, tuple[int, int]]:
    """Write a plain tar; return member name -> (data offset, size) as tarfile reports them."""
    with tarfile.open(path, "w") as tf:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tf:
        return {m.name: (m.offset_data, m.size) for m in tf.getmembers()}


def _ingest_part(path: Path, tar: Path, ids: list[int], locs: list[tuple[int, int]]) -> None:
    pq.write_table(
        pa.table(
            {
                "image_id": pa.array(ids, pa.int64()),
                "tar_file": pa.array([str(tar)] * len(ids)),
                "tar_offset": pa.array([o for o, _ in locs], pa.int64()),
                "tar_size": pa.array([s for _, s in locs], pa.int64()),
            }
        ),
        path,
    )


# ---- tar offsets -------------------------------------------------------------------------------


def test_offsets_read_the_exact_bytes_of_each_member(tmp_path: Path) -> None:
    blobs = {f"d/{i:03d}.jpg": _jpeg((40 * i, 255 - 30 * i, 7 * i), 24 + 8 * i) for i in range(6)}
    blobs["d/readme.txt"] = b"not an image"
    tar = tmp_path / "0001.tar"
    locs = _tar_with_jpegs(tar, blobs)
    names = [n for n in blobs if n.endswith(".jpg")]
    images = tmp_path / "images"
    images.mkdir()
    ids = [100 + i for i in range(len(names))]
    _ingest_part(images / "0001.parquet", tar, ids, [locs[n] for n in names])
    table = image_locations(images, [ids[4], ids[1], 999])
    assert sorted(table.column("image_id").to_pylist()) == [ids[1], ids[4]]
    got = g.image_bytes_by_id(images, [ids[1], ids[4], 999])
    assert got[ids[1]] == blobs[names[1]] and got[ids[4]] == blobs[names[4]]
    assert got[999] == "not in the ingest output"
    offset, size = locs[names[5]]
    assert read_tar_member(tar, offset, size) == blobs[names[5]]
    with pytest.raises(ImageReadError, match="ends early"):
        read_tar_member(tar, os.path.getsize(tar) - 10, 100)
    with pytest.raises(ImageReadError, match="cannot open"):
        read_tar_member(tmp_path / "gone.tar", 0, 10)


def test_unreadable_images_are_reasons_not_crashes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _ingest_part(images / "0001.parquet", tmp_path / "moved.tar", [1], [(512, 100)])
    got = g.image_bytes_by_id(images, [1])
    assert isinstance(got[1], str) and "cannot open" in got[1]
    assert g.image_bytes_by_id(tmp_path / "none", [1]) == {
        1: f"ingest output not found at {tmp_path / 'none'}"
    }


# ---- gallery -----------------------------------------------------------------------------------


@given(
    n=st.integers(2, 40),
    d=st.integers(2, 8),
    q=st.integers(1, 10),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_top_k_excludes_the_query_and_matches_brute_force(
    n: int, d: int, q: int, k: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.choice(n, size=min(q, n), replace=False)
    rows, sims = g.top_k_excluding_self(v, queries, k)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert rows.shape == (len(queries), min(k, n - 1))
    for i, qr in enumerate(queries):
        assert qr not in rows[i]
        assert len(set(rows[i].tolist())) == rows.shape[1]
        expect = unit[rows[i]] @ unit[qr]
        np.testing.assert_allclose(sims[i], expect, atol=1e-5)
        assert np.all(np.diff(sims[i]) <= 1e-6)
        others = np.delete(unit @ unit[qr], [qr, *rows[i].tolist()])
        if len(others):
            assert others.max() <= sims[i, -1] + 1e-5


def test_pick_queries_only_draws_buildings_with_two_rows() -> None:
    building = np.array([5, 5, 6, 7, 7, 7, 8, 9, 9])
    drawn = g.pick_queries(building, 100, seed=3)
    assert set(drawn.tolist()) == {0, 1, 3, 4, 5, 7, 8}
    a, b = g.pick_queries(building, 3, seed=1), g.pick_queries(building, 3, seed=1)
    assert a.tolist() == b.tolist() and len(a) == 3
    assert len(g.pick_queries(np.array([1, 2, 3]), 5, seed=0)) == 0


def _gallery_world(tmp_path: Path) -> tuple[Path, Path, Path, dict[int, int]]:
    """A 3-building test split with real JPEGs in a tar, an ingest part and a projector."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)).astype(np.float32)
    building, emb, blobs = [], [], {}
    for b in range(3):
        for j in range(4):
            building.append(1000 + b)
            emb.append(centres[b] + 0.05 * rng.standard_normal(16))
            blobs[f"{b}_{j}.jpg"] = _jpeg((80 * b, 60 * j, 120))
    ids = list(range(1, 13))
    tar = tmp_path / "0001.tar"
    locs = _tar_with_jpegs(tar, blobs)
    images = tmp_path / "images"
    images.mkdir()
    _ingest_part(images / "0001.parquet", tar, ids, [locs[n] for n in blobs])
    split = tmp_path / "split"
    split.mkdir()
    arr = np.asarray(emb, dtype=np.float16)
    pq.write_table(
        pa.table(
            {
                "building_id": pa.array(building, pa.int64()),
                "image_id": pa.array(ids, pa.int64()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), 16),
            }
        ),
        split / "test.parquet",
    )
    from sbe.models.projector import ProjectorConfig

    run = tmp_path / "run"
    Projector(ProjectorConfig(input_dim=16, output_dim=8, hidden_dim=16)).save_pretrained(
        run / "best"
    )
    return split, run, images, dict(zip(ids, building, strict=True))


def test_gallery_marks_right_answers_by_building(tmp_path: Path) -> None:
    split, run, images, building_of = _gallery_world(tmp_path)
    options = g.ReportOptions(gallery_queries=5, gallery_k=4, thumb=g.ThumbSettings(48, 80))
    gal = g.retrieval_gallery(split, run, images, options)
    assert len(gal.queries) == 5 and gal.missing_images == 0
    table = pq.read_table(split / "test.parquet")
    projected = Projector.from_pretrained(run / "best").project(
        to_numpy_matrix(table.column("embedding"), np.float32)
    )
    row_of = {iid: i for i, iid in enumerate(table.column("image_id").to_pylist())}
    for q in gal.queries:
        assert q.query.building_id == building_of[q.query.image_id]
        assert q.query.uri and q.query.uri.startswith("data:image/jpeg;base64,")
        assert [t.rank for t in q.results] == [1, 2, 3, 4]
        assert q.query.image_id not in [t.image_id for t in q.results]
        sims = (
            projected[[row_of[t.image_id] for t in q.results]] @ projected[row_of[q.query.image_id]]
        )
        np.testing.assert_allclose([t.similarity for t in q.results], sims, atol=1e-5)
        for t in q.results:
            assert t.correct == (building_of[t.image_id] == q.query.building_id)
            assert t.uri is not None


def test_gallery_html_colours_follow_the_marks(tmp_path: Path) -> None:
    from sbe.report.html import gallery_section

    split, run, images, _ = _gallery_world(tmp_path)
    gal = g.retrieval_gallery(split, run, images, g.ReportOptions(gallery_queries=3, seed=1))
    html = gallery_section(gal)
    right = sum(t.correct is True for q in gal.queries for t in q.results)
    wrong = sum(t.correct is False for q in gal.queries for t in q.results)
    assert html.count('class="tile ok"') == right and html.count('class="tile bad"') == wrong
    assert html.count('class="tile query"') == 3 and right + wrong == 15


# ---- degradation -------------------------------------------------------------------------------


def test_every_section_says_why_when_nothing_exists(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    inputs = g.ReportInputs(**{f: missing / f for f in g.ReportInputs.__dataclass_fields__})
    built = build_report(inputs, geo_predict=lambda d, e: [])
    assert set(built.status) == set(SECTIONS)
    assert built.available == []
    for sid in SECTIONS:
        body = built.html.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert "not available:" in body, sid
    assert "split output not found at" in built.html
    assert built.html.startswith("<!DOCTYPE html>") and built.html.rstrip().endswith("</html>")


def test_corrupt_inputs_become_notes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("not json\n")
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "_manifest.json").write_text("{broken")
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "_manifest.json").write_text(
        json.dumps({"stage": "cluster", "extra": {"id_column": "OSMID"}})
    )
    (tmp_path / "clusters" / "assignments.parquet").write_bytes(b"PAR1 garbage")
    inputs = g.ReportInputs(run=run, split=tmp_path / "split", clusters=tmp_path / "clusters")
    built = build_report(inputs)
    assert any("no epoch records" in r for r in built.status["training"])
    assert any("no valid _manifest.json" in r for r in built.status["dataset"])
    assert built.status["clusters"] and "ArrowInvalid" in built.status["clusters"][0]


# ---- charts and map ----------------------------------------------------------------------------


@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False),
    span=st.floats(1e-6, 1e6, allow_nan=False),
)
@settings(max_examples=100, deadline=None)
def test_nice_ticks_cover_the_range(lo: float, span: float) -> None:
    hi = lo + span
    t = nice_ticks(lo, hi, 5)
    assert t[0] <= lo + 1e-9 * max(1, abs(lo)) and t[-1] >= hi - 1e-9 * max(1, abs(hi))
    assert all(b > a for a, b in itertools.pairwise(t))
    assert 2 <= len(t) <= 13


def test_line_chart_breaks_on_missing_values_and_escapes_names() -> None:
    svg = line_chart(
        [Series("a<b", [0, 1, 2, 3], [1.0, float("nan"), 2.0, 3.0])],
        title="t",
        x_label="x",
        y_label="y",
    )
    assert svg.count("<polyline") == 1  # the first point is a run of one: no line
    assert "a&lt;b" in svg and "a<b" not in svg


def test_great_circle_splits_at_the_antimeridian() -> None:
    runs = great_circle(10.0, 170.0, -10.0, -170.0)
    assert len(runs) == 2
    for run in runs:
        lons = [lon for _, lon in run]
        assert max(lons) - min(lons) < 30
    assert runs[0][0] == pytest.approx((10.0, 170.0))
    assert runs[-1][-1] == pytest.approx((-10.0, -170.0))


def test_map_background_is_the_koppen_raster_subsampled() -> None:
    w, h = 360, 180
    img = koppen_background(w, h)
    assert img.size == (w, h) and img.mode == "P"
    classes = np.asarray(img)
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, h, 300), rng.integers(0, w, 300)
    lat, lon = 90 - (r + 0.5) * 180 / h, -180 + (c + 0.5) * 360 / w
    rr, cc = koppen.pixel_of(lat, lon)
    assert np.array_equal(classes[r, c], koppen.load_raster()[rr, cc])
    assert (classes == 0).mean() > 0.5  # mostly water


# ---- the stage on a real (tiny) pipeline -------------------------------------------------------


def _report_cfg(cfg, out: Path | None = None) -> ReportConfig:
    c = wire(cfg)
    if out is not None:
        c.report.output = out
    return c.section("report")


def test_pipeline_report_has_every_section_and_no_network_refs(tiny_pipeline) -> None:
    cfg, _ = tiny_pipeline
    path = cfg.workdir / "report" / "report.html"
    html = path.read_text()
    manifest = json.loads((cfg.workdir / "report" / "_manifest.json").read_text())
    assert manifest["extra"]["sections"] == {s: [] for s in SECTIONS} | {
        "metrics": _metrics_notes(),
        "verification": [NO_RERANK],
    }
    assert manifest["rows"]["bytes"] == path.stat().st_size < 5_000_000
    assert NETWORK_REF.search(html) is None
    assert "@import" not in html and "url(" not in html
    assert html.count('<section id="') == len(SECTIONS)
    for sid in SECTIONS:
        assert f'href="#{sid}"' in html
    assert html.count('class="tile query"') == 8


def test_network_ref_pattern_catches_remote_resources() -> None:
    for bad in (
        '<img src="https://x.org/a.png">',
        "<link href='http://cdn/x.css'>",
        '<script src="//cdn.example/x.js">',
    ):
        assert NETWORK_REF.search(bad), bad
    assert NETWORK_REF.search('<img src="data:image/jpeg;base64,AAAA"><a href="#gallery">') is None


def test_stage_skips_when_current_and_redoes_on_change(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    sec = _report_cfg(cfg, tmp_path / "rep")
    first = stage.run(sec)
    assert not first.up_to_date and (tmp_path / "rep" / "report.html").is_file()
    assert stage.run(sec).up_to_date
    metrics = cfg.workdir / "run" / "metrics.jsonl"
    st_ = metrics.stat()
    os.utime(metrics, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))
    try:
        assert not stage.run(sec).up_to_date
    finally:
        os.utime(metrics, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    changed = sec.model_copy(update={"gallery_queries": 3})
    assert not stage.run(changed).up_to_date
    assert (tmp_path / "rep" / "report.html").read_text().count('class="tile query"') == 3


def test_missing_stages_degrade_in_a_copied_workdir(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    work = tmp_path / "w"
    shutil.copytree(cfg.workdir, work, ignore=shutil.ignore_patterns("report"))
    shutil.rmtree(work / "geo")
    shutil.rmtree(work / "clusters")
    shutil.rmtree(work / "images")  # the gallery's pictures are gone, its rankings are not
    c = cfg.model_copy(deep=True)
    c.workdir = work
    m = stage.run(_report_cfg(c))
    sections = m.extra["sections"]
    assert sections["geolocation"] and all(
        "geo output not found" in r for r in sections["geolocation"]
    )
    assert sections["clusters"] == [f"cluster output not found at {work / 'clusters'}"]
    assert sections["training"] == [] and sections["metrics"] == _metrics_notes()
    html = (work / "report" / "report.html").read_text()
    gallery = html.split('<section id="gallery">')[1].split("</section>")[0]
    assert "could not be read from the raw tars" in gallery
    assert sections["dataset"] == [f"ingest output not found at {work / 'images'}"]
    assert 'class="tile ok"' in gallery  # marks still computed without pictures


def test_report_cli_json(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    out = tmp_path / "cli-rep"
    res = CliRunner().invoke(
        app, ["report", "--workdir", str(cfg.workdir), "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["stage"] == "report" and data["outputs"] == ["report.html"]
    assert (out / "report.html").stat().st_size == data["rows"]["bytes"]


def test_band_curriculum_table_and_unexpected_records() -> None:
    from sbe.report.html import training_section

    curves = g.TrainingCurves(
        epochs=[1, 2],
        loss=[1.0, 0.9],
        val=[{"map@r": 0.4}, {"map@r": 0.5}],
        baseline={"map@r": 0.3},
        init={"map@r": 0.35},
        best_epoch=2,
        steps=[50, 100],
        step_loss=[1.1, 0.95],
        bands=[
            {
                "epoch": 1,
                "chosen_this_epoch": [26, 4, 8],
                "mean_reward": [0.036, None, 0.014],
                "band_negatives": 900,
                "fallback_negatives": 12,
            }
        ],
    )
    html = training_section(curves)
    assert "26, 4, 8" in html and "0.036, -, 0.014" in html and "Band curriculum" in html


def test_a_malformed_output_fails_the_report_instead_of_hiding(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # an epoch record whose bands block is not what this version writes: a bug to see, not a note
    (run / "metrics.jsonl").write_text(
        json.dumps({"kind": "epoch", "epoch": 1, "loss": 1.0, "bands": {"mean_reward": 5}}) + "\n"
    )
    with pytest.raises(TypeError):
        build_report(g.ReportInputs(run=run))
    # geo metrics.json present but without the selection block
    geo = tmp_path / "geo"
    geo.mkdir()
    (geo / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
    (geo / "metrics.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(KeyError, match="selection"):
        g.geo_curves(geo)


def test_a_present_parquet_without_its_columns_is_malformed(tmp_path: Path) -> None:
    split, run, images, _ = _gallery_world(tmp_path)
    table = pq.read_table(split / "test.parquet").drop_columns(["embedding"])
    pq.write_table(table, split / "test.parquet")
    with pytest.raises(
        g.Malformed, match=r"test.parquet has no column\(s\) embedding.*rerun `sbe split`"
    ):
        g.retrieval_gallery(split, run, images, g.ReportOptions(gallery_queries=2, gallery_k=2))
    with pytest.raises(g.Malformed, match=r"test\.parquet"):
        build_report(g.ReportInputs(split=split, run=run, images=images))
    part = images / "0001.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["tar_offset"]), part)
    with pytest.raises(g.Malformed, match="tar_offset"):
        g.image_bytes_by_id(images, [1])


def test_missing_or_unreadable_outputs_degrade_with_the_file_named(tmp_path: Path) -> None:
    split, run, images, _ = _gallery_world(tmp_path)
    (split / "test.parquet").unlink()
    built = build_report(g.ReportInputs(split=split, run=run, images=images))
    assert built.status["gallery"] == [f"test split not found ({split / 'test.parquet'})"]
    (split / "test.parquet").write_bytes(b"PAR1 not parquet")
    built = build_report(g.ReportInputs(split=split, run=run, images=images))
    (reason,) = built.status["gallery"]
    assert reason.startswith(f"test split unreadable ({split / 'test.parquet'}: ArrowInvalid")
    gallery = built.html.split('<section id="gallery">')[1].split("</section>")[0]
    assert "not available: test split unreadable" in gallery


def test_a_workdir_without_any_output_is_an_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", "--workdir", str(tmp_path / "typo")])
    assert res.exit_code == 1 and "nothing to report" in str(res.exception)
    assert not (tmp_path / "typo" / "report" / "report.html").exists()


def test_text_from_stage_outputs_is_escaped_by_the_templates() -> None:
    from sbe.report.html import dataset_section

    split = g.SplitSummary(
        splits={"train": {"images": 1234}},
        leakage={},
        grouping={"identity": "<script>alert(1)</script>", "targets": 3},
        rows={},
        skipped={"<b>bad</b>": 2},
    )
    html = dataset_section(split, "no <ingest>", "gone", "not synth & real")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bad&lt;/b&gt;: 2" in html and "not available: no &lt;ingest&gt;" in html
    assert '<td class="num">1,234</td>' in html and "not synth &amp; real" in html


# ---- issue 17: captions by place, the buildings layer, the gallery controls ------------------


def _truth(raw: Path, rows: list[tuple[str, float, float]]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "city": [c for c, _, _ in rows],
                "building_lat": [la for _, la, _ in rows],
                "building_lon": [lo for _, _, lo in rows],
            }
        ),
        raw / "truth.parquet",
    )


def test_places_name_the_synthetic_city_else_give_coordinates(tmp_path: Path) -> None:
    from sbe.report.places import grid_text, latlon_text, world_places

    _truth(tmp_path / "raw", [("Sydney", -33.85, 151.20), ("Sydney", -33.86, 151.22), ("Oslo", 59.91, 10.75)])  # fmt: skip
    places = world_places(tmp_path / "raw")
    assert places.names == ["Oslo", "Sydney"]
    np.testing.assert_allclose(places.lat, [59.91, -33.855])
    assert places.caption(-33.8544, 151.2072) == "Sydney · 33.8544° S, 151.2072° E"
    assert places.group(59.9, 10.7) == "Oslo"
    # farther than 60 km from every city: coordinates, and a 1° cell to filter by
    assert places.caption(48.8566, 2.3522) == "48.8566° N, 2.3522° E"
    assert places.group(48.8566, -2.3522) == "48° N, 3° W" == grid_text(48.8566, -2.3522)
    assert places.caption(float("nan"), 1.0) == "location unknown"
    assert latlon_text(-0.5, -120.25, 2) == "0.50° S, 120.25° W"
    # real data: no truth (or one without cities) names nothing, and never fails
    for raw in (None, tmp_path / "none", tmp_path):
        assert world_places(raw).caption(-33.8544, 151.2072) == "33.8544° S, 151.2072° E"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "truth.parquet").write_bytes(b"not parquet")
    assert world_places(tmp_path / "bad").names == []


def test_gallery_captions_and_filter_data_come_from_places(tmp_path: Path) -> None:
    from sbe.report.html import gallery_section
    from sbe.report.places import Places

    split, run, images, building_of = _gallery_world(tmp_path)
    table = pq.read_table(split / "test.parquet")
    # buildings 1000 and 1001 in "Aville", 1002 far from any city
    where = {1000: (10.0, 20.0), 1001: (10.01, 20.01), 1002: (-40.0, -70.0)}
    b = table.column("building_id").to_pylist()
    table = table.append_column("target_lat", pa.array([where[x][0] for x in b]))
    table = table.append_column("target_lon", pa.array([where[x][1] for x in b]))
    pq.write_table(table, split / "test.parquet")
    places = Places(["Aville"], np.array([10.0]), np.array([20.0]))
    options = g.ReportOptions(gallery_queries=6, gallery_k=3)
    gal = g.retrieval_gallery(split, run, images, options, places)
    for q in gal.queries:
        lat, lon = where[q.query.building_id]
        expect = "Aville" if q.query.building_id != 1002 else "40° S, 70° W"
        assert q.group == expect
        assert q.query.place.endswith(f"{abs(lat):.4f}° {'N' if lat > 0 else 'S'}, {abs(lon):.4f}° {'E' if lon > 0 else 'W'}")  # fmt: skip
        assert q.query.place.startswith("Aville · ") == (q.query.building_id != 1002)
        ranks = [t.rank for t in q.results if t.correct]
        assert q.first_right_rank == (ranks[0] if ranks else None)
    html = gallery_section(gal)
    groups = sorted({q.group for q in gal.queries})
    assert re.findall(r'<option value="([^"]+)">', html)[: len(groups)] == groups
    assert html.count('class="row gallery-query"') == len(gal.queries)
    for q in gal.queries:
        top = q.results[0]
        assert (
            f'data-place="{q.group}" data-correct="{"correct" if top.correct else "incorrect"}" '
            f'data-sim="{top.similarity:.6f}" data-rank="{q.first_right_rank or 999}"'
        ) in html
    # the text a reader sees (entities such as &#10003; decoded: they hold digits)
    captions = [unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", html)]
    assert len(captions) == len(gal.queries) * 4
    assert all("°" in c for c in captions)  # a place, never a bare id
    bad = [c for c in captions for i in set(building_of.values()) if str(i) in c]
    assert not bad, bad


def test_map_buildings_layer_sample_and_notes(tmp_path: Path) -> None:
    from sbe.report.geoloc import map_buildings
    from sbe.report.places import Places
    from sbe.report.worldmap import MapBuilding, world_map_svg
    from sbe.storage import Manifest, write_manifest

    out = tmp_path / "buildings"
    out.mkdir()
    lat = np.array([10.0, 10.1, 10.2, -40.0, np.nan])
    pq.write_table(
        pa.table(
            {
                "OSMID": pa.array([1, 2, 3, 4, 5], pa.int64()),
                "image_count": pa.array([1, 2, 3, 4, 5], pa.int32()),
                "lat": pa.array(lat),
                "lon": pa.array([20.0, 20.1, 20.2, -70.0, 1.0]),
            }
        ),
        out / "buildings.parquet",
    )
    with pytest.raises(g.Unavailable, match="no valid _manifest"):
        map_buildings(out, Places(), max_points=10, seed=0)
    write_manifest(out, Manifest(stage="aggregate"))
    places = Places(["Aville"], np.array([10.0]), np.array([20.0]))
    drawn, located = map_buildings(out, places, max_points=10, seed=0)
    assert located == 4 and [b.images for b in drawn] == [1, 2, 3, 4]
    assert drawn[0].label == "Aville · 10.0000° N, 20.0000° E"
    assert drawn[3].label == "40.0000° S, 70.0000° W"
    sample, located = map_buildings(out, places, max_points=2, seed=3)
    assert located == 4 and len(sample) == 2
    assert sample == map_buildings(out, places, max_points=2, seed=3)[0]  # seeded
    # 10.0-10.2 share a half-degree cell: one dot for three buildings
    svg = world_map_svg([], None, buildings=drawn)
    assert svg.count('class="building-pt"') == 2 and 'data-layer="predictions"' not in svg
    assert "3 buildings around Aville · 10.0000° N, 20.0000° E, 6 image(s)" in svg
    assert 'data-layer="buildings"' not in world_map_svg([], None, buildings=[])
    one = world_map_svg([], None, buildings=[MapBuilding(1.0, 2.0, "", 0)])
    assert "1 building: 1.0000, 2.0000</title>" in one
    pq.write_table(pa.table({"OSMID": [1]}), out / "buildings.parquet")
    with pytest.raises(g.Unavailable, match="not located"):
        map_buildings(out, places, max_points=10, seed=0)


def test_pipeline_report_names_cities_and_draws_the_buildings(tiny_pipeline) -> None:
    cfg, _ = tiny_pipeline
    html = (cfg.workdir / "report" / "report.html").read_text()
    cities = set(pq.read_table(cfg.workdir / "raw" / "truth.parquet", columns=["city"])["city"].to_pylist())  # fmt: skip
    gallery = html.split('<section id="gallery">')[1].split("</section>")[0]
    assert set(re.findall(r'data-place="([^"]+)"', gallery)) <= cities
    assert "<script>" in gallery and 'id="gallery-sort"' in gallery
    clusters = html.split('<section id="clusters">')[1].split("</section>")[0]
    for section in (gallery, clusters):
        captions = re.findall(r"<figcaption>(.*?)</figcaption>", section, re.S)
        assert captions and all("°" in c and any(x in c for x in cities) for c in captions)
    geo = html.split('<section id="geolocation">')[1].split("</section>")[0]
    buildings = pq.read_table(cfg.workdir / "buildings" / "buildings.parquet")
    assert 0 < geo.count('class="building-pt"') <= buildings.num_rows
    assert 'data-layer="predictions"' in geo and 'type="checkbox" data-layer="buildings"' in geo


# ---- verification --------------------------------------------------------------------------------


def _cost(cpu: float, wall: float, failed: int = 0) -> dict:
    return {
        "queries": 26, "fallback_queries": 0, "failed_images": failed, "pairs_matched": 300,
        "images_extracted": 26, "cpu_seconds": cpu * 26, "wall_seconds": wall * 26,
        "per_query_cpu_s": cpu, "per_query_wall_s": wall, "failure_examples": [],
    }  # fmt: skip


def _top1(queries: int, before: int, after: int, ceiling: int) -> dict:
    return {
        "queries": queries, "k": 10, "global_correct@1": before, "reranked_correct@1": after,
        "positive_in_top_k": ceiling, "gained": after - before, "lost": 0,
    }  # fmt: skip


def _evaluation(run: Path, **parts: object) -> Path:
    (run / "evaluate").mkdir(parents=True, exist_ok=True)
    doc = {"run": str(run), "split": "test", "retrieval": {}, **parts}
    (run / "evaluate" / "test.json").write_text(json.dumps(doc))
    return run


CALIBRATION = {
    "file": "calibration.json", "fit_split": "val", "test_split": "test", "method": "logistic",
    "target_precision": 0.95, "threshold": 0.9, "similarity_threshold": 0.4394,
    "fit": {"precision": 0.95, "recall": 0.098, "called": 120, "positives": 1165, "pairs": 25878},
    "test": {"precision": 0.9474, "recall": 0.1602, "called": 114, "positives": 674, "pairs": 9453},
    "sampled": {"fit": False, "test": False, "max_pairs": 2000000, "seed": 0},
}  # fmt: skip


def test_verification_section_shows_what_evaluate_measured(tmp_path: Path) -> None:
    from sbe.report.verification import verification, verification_section

    run = _evaluation(
        tmp_path / "run",
        calibration=CALIBRATION,
        landmarks={
            "images": 26,
            "rerank": {
                "k": 10,
                "backbone": _top1(26, 23, 24, 24),
                "projector": _top1(26, 21, 23, 24),
                "cost": _cost(17.6, 63.0),
            },
        },
        rerank={"split": "test", **_top1(100, 80, 84, 95), "cost": _cost(8.9, 18.3, failed=2)},
        vpr={
            "folder": "/data/vpr",
            "queries": 12,
            "database": 40,
            "queries_without_positive": 1,
            "embedding": "run (backbone + projector)",
            "global": {"recall@1": 0.5, "recall@5": 0.75},
            "reranked": {"recall@1": 0.5833, "recall@5": 0.75},
        },
    )
    v = verification(run)
    assert v.notes == [] and [r.what for r in v.reranked] == [
        "real photos, backbone ranking",
        "real photos, projector ranking",
        "test split sample, projector",
    ]
    text = unescape(re.sub(r"<[^>]+>", " ", str(verification_section(v))))
    text = re.sub(r"\s+", " ", text)
    assert "precision of 0.95 (cosine similarity of the trained embeddings ≥ 0.4394)" in text
    assert "precision 0.947 , recall 0.160 (114 of 9,453 pairs called" in text
    assert "real photos, backbone ranking 26 10 23/26 24/26 24/26 17.60 63.00 0" in text
    assert "test split sample, projector 100 10 80/100 84/100 95/100 8.90 18.30 2" in text
    assert "Recall@1 50.0% 58.3%" in text and "12 queries, 40 database images" in text


def test_verification_section_degrades_and_notes_what_did_not_run(tmp_path: Path) -> None:
    from sbe.report.verification import verification

    built = build_report(g.ReportInputs(run=tmp_path / "nothing"))
    assert built.status["verification"] == [f"training run not found at {tmp_path / 'nothing'}"]
    run = _evaluation(tmp_path / "run")
    built = build_report(g.ReportInputs(run=run))
    assert built.status["verification"] == [
        "the evaluation has no verification (run `sbe evaluate --calibrate --rerank`)"
    ]
    run = _evaluation(tmp_path / "run", calibration=CALIBRATION)
    assert verification(run).notes == [NO_RERANK]
    run = _evaluation(tmp_path / "run", calibration={"skipped": "no val split"}, rerank={
        "split": "test", **_top1(5, 3, 3, 4), "cost": _cost(1.0, 2.0)})  # fmt: skip
    assert verification(run).notes == ["calibration skipped: no val split"]


def test_a_malformed_verification_entry_fails_the_report(tmp_path: Path) -> None:
    broken = _top1(5, 3, 3, 4)
    del broken["reranked_correct@1"]
    run = _evaluation(tmp_path / "run", rerank={"split": "test", **broken, "cost": _cost(1, 2)})
    with pytest.raises(g.Malformed, match="missing reranked_correct@1"):
        build_report(g.ReportInputs(run=run))
