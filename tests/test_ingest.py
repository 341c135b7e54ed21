"""The ingest stage: per-tar parts, manifest, rerun skips, changed inputs redone, clear failures."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tarfactory import records, truncate, write_tar
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import IngestConfig, load_config
from sbe.errors import SbeError
from sbe.stages import ingest
from sbe.storage import DirLock, LockedError, load_manifest, read_part_meta
from sbe.storage.schemas import IMAGES_SCHEMA

SBE = Path(sys.executable).with_name("sbe")


def make_raw(root: Path, datasets=(88, 89), n: int = 6) -> Path:
    raw = root / "raw"
    for i, ds in enumerate(datasets):
        write_tar(raw / f"{ds:04d}.tar", records(n, ds), layout="nested" if i % 2 else "flat")
    return raw


def cfg_for(inputs: list[Path], out: Path, **kw) -> IngestConfig:
    return IngestConfig(inputs=inputs, output=out, workers=1, **kw)


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}


def test_run_writes_one_part_per_tar_and_a_manifest(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    recs = records(5, 90)
    recs[0].txt = None
    recs[1].jpeg = b"not a jpeg"
    write_tar(raw / "sub" / "0090.tar", recs)
    (raw / "notes.txt").write_text("not an input")
    out = tmp_path / "images"
    m = ingest.run(cfg_for([raw], out))
    assert sorted(m.outputs) == ["0088.parquet", "0089.parquet", "0090.parquet"]
    assert m.rows == {"images": 15, "tars": 3}
    assert m.skipped == {"corrupt_jpeg": 1, "missing_metadata": 1}
    assert set(m.skip_examples) == {"corrupt_jpeg", "missing_metadata"}
    assert [Path(i.path).name for i in m.inputs] == ["0088.tar", "0089.tar", "0090.tar"]
    assert m.extra["tars"]["0090.tar"]["rows"] == 3
    assert m.wall_seconds > 0 and not m.up_to_date
    on_disk = load_manifest(out)
    assert on_disk is not None and on_disk.rows == m.rows and on_disk.skipped == m.skipped
    for name in m.outputs:
        t = pq.read_table(out / name)
        assert t.schema.remove_metadata() == IMAGES_SCHEMA
        meta = read_part_meta(out / name)
        assert meta["stage"] == "ingest" and meta["source"]["path"].endswith(name[:4] + ".tar")
        assert meta["report"]["rows"] == t.num_rows
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock",
        "0088.parquet",
        "0089.parquet",
        "0090.parquet",
        "_manifest.json",
    ]


def test_rerun_skips_and_changed_tar_is_redone(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, datasets=(88, 89, 90))
    out = tmp_path / "images"
    cfg = cfg_for([raw], out)
    first = ingest.run(cfg)
    before = mtimes(out)

    again = ingest.run(cfg)
    assert again.up_to_date and again.rows == first.rows and mtimes(out) == before

    # different worker count: same content, still current
    assert ingest.run(cfg.model_copy(update={"workers": 2})).up_to_date

    # rewrite one tar with more images: only its part is redone
    write_tar(raw / "0089.tar", records(9, 89))
    redo = ingest.run(cfg)
    assert not redo.up_to_date
    assert redo.rows == {"images": 21, "tars": 3}
    assert redo.extra["tars_reused"] == 2
    assert redo.extra["tars"]["0089.tar"]["reused"] is False
    after = mtimes(out)
    assert after["0088.parquet"] == before["0088.parquet"]
    assert after["0090.parquet"] == before["0090.parquet"]
    assert after["0089.parquet"] != before["0089.parquet"]
    assert pq.read_table(out / "0089.parquet").num_rows == 9

    # a removed input's part goes too, so the folder mirrors the inputs
    (raw / "0090.tar").unlink()
    shrunk = ingest.run(cfg)
    assert shrunk.extra["removed_stale_parts"] == ["0090.parquet"]
    assert sorted(p.name for p in out.glob("*.parquet")) == ["0088.parquet", "0089.parquet"]

    # a content setting redoes everything
    stricter = ingest.run(cfg.model_copy(update={"normal_tolerance": 1e-3}))
    assert stricter.extra["tars_reused"] == 0


def test_killed_run_resumes_from_finished_parts(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, datasets=(88, 89))
    out = tmp_path / "images"
    cfg = cfg_for([raw], out)
    ingest.run(cfg)
    # simulate a kill: the manifest was never written and a temp file was left behind
    (out / "_manifest.json").unlink()
    (out / ".tmp-0089.parquet.123.abcd").write_bytes(b"half")
    m = ingest.run(cfg)
    assert m.extra["tars_reused"] == 2 and m.rows["images"] == 12
    assert not list(out.glob(".tmp-*"))


def test_damaged_tar_keeps_rows_and_is_reported(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, datasets=(88,), n=10)
    tar = raw / "0088.tar"
    truncate(tar, tar.stat().st_size // 2)
    m = ingest.run(cfg_for([raw], tmp_path / "images"))
    assert 0 < m.rows["images"] < 10
    assert m.skipped["truncated_archive"] == 1
    assert "0088.tar" in m.extra["damaged_tars"]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty file"),
        (os.urandom(2048), "not a tar"),
        (gzip.compress(b"\0" * 1024), "gzip-compressed"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path: Path, content: bytes, message: str) -> None:
    raw = make_raw(tmp_path)
    (raw / "0099.tar").write_bytes(content)
    out = tmp_path / "images"
    with pytest.raises(SbeError, match=message) as e:
        ingest.run(cfg_for([raw], out))
    assert "0099.tar" in str(e.value)
    assert not list(out.glob("*.parquet"))


def test_tar_without_valid_rows_fails_after_the_others(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    recs = records(3, 99)
    for r in recs:
        r.jpeg = b"broken"
    write_tar(raw / "0099.tar", recs)
    write_tar(raw / "0100.tar", [])  # an empty archive
    out = tmp_path / "images"
    with pytest.raises(SbeError) as e:
        ingest.run(cfg_for([raw], out))
    msg = str(e.value)
    assert "0099.tar: no valid rows (corrupt_jpeg: 3" in msg
    assert "0100.tar: no valid rows (the archive holds no image/metadata pairs)" in msg
    assert sorted(p.name for p in out.glob("*.parquet")) == ["0088.parquet", "0089.parquet"]
    assert load_manifest(out) is None  # no manifest claims success


def test_inputs_that_would_share_an_output_are_refused(tmp_path: Path) -> None:
    a = write_tar(tmp_path / "a" / "0088.tar", records(2, 88))
    b = write_tar(tmp_path / "b" / "0088.tar", records(2, 88))
    with pytest.raises(SbeError, match=r"same 0088\.parquet"):
        ingest.run(cfg_for([a, b], tmp_path / "images"))
    # the same file named twice is one input
    m = ingest.run(cfg_for([a, a, tmp_path / "a"], tmp_path / "images"))
    assert m.rows == {"images": 2, "tars": 1}


def test_missing_input_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SbeError, match="input not found"):
        ingest.run(cfg_for([tmp_path / "nope.tar"], tmp_path / "images"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SbeError, match="no tar files found"):
        ingest.run(cfg_for([tmp_path / "empty"], tmp_path / "images"))


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    out = tmp_path / "images"
    with DirLock(out), pytest.raises(LockedError):
        ingest.run(cfg_for([raw], out))


def test_ids_repeated_across_tars_are_a_warning(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_tar(raw / "a.tar", records(4, 88))
    write_tar(raw / "b.tar", records(3, 88, start=2))  # patches 2, 3 again (and 4)
    m = ingest.run(cfg_for([raw], tmp_path / "images"))
    assert m.rows["images"] == 7
    assert m.extra["warnings"]["duplicate_id_across_tars"] == 2
    assert m.extra["warning_examples"]["duplicate_id_across_tars"] == ["0088_000002", "0088_000003"]


def test_process_pool_gives_the_same_parts(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, datasets=(88, 89, 90))
    serial = ingest.run(cfg_for([raw], tmp_path / "serial"))
    pooled = ingest.run(IngestConfig(inputs=[raw], output=tmp_path / "pooled", workers=2))
    assert pooled.extra["processes"] == 2
    assert pooled.rows == serial.rows and pooled.skipped == serial.skipped
    for name in serial.outputs:
        a = pq.read_table(tmp_path / "serial" / name)
        b = pq.read_table(tmp_path / "pooled" / name)
        assert a.equals(b)


def test_part_rows_are_deterministic(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, datasets=(88,), n=12)
    a = ingest.run(cfg_for([raw], tmp_path / "a", decode_threads=1))
    b = ingest.run(cfg_for([raw], tmp_path / "b", decode_threads=2))
    ta, tb = (pq.read_table(tmp_path / d / "0088.parquet") for d in "ab")
    assert ta.equals(tb) and a.rows == b.rows
    assert np.all(np.diff(ta["image_id"].to_numpy()) > 0)


def test_ingest_tar_is_a_plain_picklable_function(tmp_path: Path) -> None:
    import pickle

    tar = write_tar(tmp_path / "0088.tar", records(3, 88))
    task = ingest.TarTask(str(tar), str(tmp_path / "out" / "0088.parquet"), ingest.ReadSettings())
    task = pickle.loads(pickle.dumps(task))
    fn = pickle.loads(pickle.dumps(ingest.ingest_tar))
    report = fn(task.tar, task.part, task.settings)
    assert report.rows == 3 and pq.read_table(task.part).num_rows == 3


def test_tar_stem_names() -> None:
    assert ingest.tar_stem("/x/0088.tar") == "0088"
    assert ingest.tar_stem("a.b.TAR") == "a.b"
    assert ingest.tar_stem("0088.tar.gz") == "0088"
    assert ingest.tar_stem("0088") == "0088"


def test_config_flags_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "sbe.toml"
    toml.write_text('workdir = "w"\n[ingest]\ninputs = ["raw", "more"]\nworkers = 3\n')
    sec = load_config(toml).section("ingest")
    assert sec.inputs == [tmp_path / "w" / "raw", tmp_path / "w" / "more"]
    assert sec.output == tmp_path / "w" / "images" and sec.workers == 3
    toml.write_text("[ingest]\nworkerz = 3\n")
    with pytest.raises(ValueError, match=r"ingest\.workerz: unknown key"):
        load_config(toml)


def test_cli_ingest_prints_summary_and_reruns(tmp_path: Path, monkeypatch) -> None:
    raw = make_raw(tmp_path)
    recs = records(3, 91)
    recs[0].jpeg = None
    write_tar(raw / "0091.tar", recs)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "raw", "--out", "imgs", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "missing_image: 1" in res.output and "14" in res.output
    assert (tmp_path / "imgs" / "0091.parquet").is_file()
    res = runner.invoke(app, ["ingest", "raw", "--out", "imgs", "--json"])
    data = json.loads(res.output)
    assert data["up_to_date"] is True and data["rows"] == {"images": 14, "tars": 3}


def test_cli_exit_codes(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, datasets=(88,))
    ok = subprocess.run(
        [str(SBE), "ingest", str(raw), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "bad.tar").write_bytes(b"plain text, not a tar" * 40)
    bad = subprocess.run(
        [str(SBE), "ingest", str(tmp_path / "bad.tar"), "--out", str(tmp_path / "o2")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    stderr = " ".join(bad.stderr.split())  # rich wraps long lines
    assert "bad.tar: not a tar archive" in stderr and "Traceback" not in stderr
