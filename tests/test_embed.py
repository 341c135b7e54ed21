"""sbe embed: streamed, exact, resumable per-image embeddings of a packaged parquet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_publish_fixtures import make_tiny_model, packaged_parquet

from sbe.config import EmbedConfig
from sbe.errors import SbeError
from sbe.inference.plan import inspect_input, make_plan, read_chunks
from sbe.models.published import load_embedder
from sbe.stages import embed as stage
from sbe.storage import DirLock, LockedError, to_numpy_matrix

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def run(inp: Path, out: Path, model: Path, **kw) -> object:
    return stage.run(EmbedConfig(input=inp, output=out, model=model, **kw))


def read_parts(out: Path, sub: str = "parts") -> pa.Table:
    files = sorted((out / sub).glob("*.parquet"))
    if not files:
        return pa.table({})
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("row_index")


def test_outputs_schema_failures_and_values(tmp_path: Path, model: Path) -> None:
    bad = {3: b"\xff\xd8\xff\xe0 truncated jpeg", 4: None, 17: b"", 40: b"GIF89a?"}
    inp = packaged_parquet(tmp_path / "in.parquet", 90, osmid="string", bad=bad, row_group_size=35)
    m = run(inp, tmp_path / "out", model, chunk_rows=10, batch_size=8)

    parts = read_parts(tmp_path / "out")
    assert parts.schema.field("OSMID").type == pa.string()  # kept as is
    assert parts.schema.field("row_index").type == pa.int64()
    assert parts.schema.field("embedding").type == pa.list_(pa.float32(), 16)
    assert parts["row_index"].to_pylist() == [i for i in range(90) if i not in bad]
    src = pq.read_table(inp)
    assert parts["OSMID"].to_pylist() == src["OSMID"].take(parts["row_index"]).to_pylist()
    # every good row of a batch with a bad image is kept, and equals the image on its own
    emb = to_numpy_matrix(parts["embedding"])
    images = src["image_bytes"].to_pylist()
    ref, fails = load_embedder(model, "cpu").embed_bytes([images[i] for i in (0, 5, 41)])
    assert not fails
    np.testing.assert_allclose(emb[[0, 3, 37]], ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    failures = read_parts(tmp_path / "out", "failures")
    assert failures["row_index"].to_pylist() == sorted(bad)
    assert failures["OSMID"].to_pylist() == src["OSMID"].take(sorted(bad)).to_pylist()
    reasons = dict(
        zip(failures["row_index"].to_pylist(), failures["reason"].to_pylist(), strict=True)
    )
    assert reasons[4] == "null image bytes" and reasons[17] == "empty image bytes"

    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["status"] == "complete"
    assert state["counters"] == {
        "input_rows": 90,
        "filtered_out": 0,
        "selected": 90,
        "chunks_total": 10,
        "chunks_done": 10,
        "embedded": 86,
        "failed": 4,
        "remaining": 0,
    }
    assert state["input"]["schema"].startswith("image_bytes: binary")
    # paths are recorded relative to the output, so a moved work folder keeps working
    assert state["input"]["path"] == "../in.parquet"
    assert state["model"]["model_dir"] == m.extra["model"]["model_dir"]
    assert (tmp_path / "out" / state["model"]["model_dir"]).resolve() == Path(model).resolve()
    assert not Path(state["model"]["model_dir"]).is_absolute()
    assert m.rows["embedded"] == 86 and sum(m.skipped.values()) == 4
    # part names are the input row ranges, never crossing a row group (35 | 35 | 20 rows)
    names = sorted(p.name for p in (tmp_path / "out" / "parts").iterdir())
    assert names[:4] == [
        "rows-000000000000-000000000010.parquet",
        "rows-000000000010-000000000020.parquet",
        "rows-000000000020-000000000030.parquet",
        "rows-000000000030-000000000035.parquet",
    ]
    again = run(inp, tmp_path / "out", model, chunk_rows=10, batch_size=8)
    assert again.up_to_date


def test_all_failed_chunk_keeps_the_osmid_type(tmp_path: Path, model: Path) -> None:
    """A chunk whose every image fails still gets a (typed, empty) part: done, and readable with
    the others (the reference wrote int64 marker parts that broke string OSMIDs)."""
    inp = packaged_parquet(tmp_path / "in.parquet", 6, osmid="string", bad={2: b"x", 3: None})
    run(inp, tmp_path / "out", model, chunk_rows=2)
    empty = pq.read_table(tmp_path / "out" / "parts" / "rows-000000000002-000000000004.parquet")
    assert empty.num_rows == 0 and empty.schema.field("OSMID").type == pa.string()
    assert read_parts(tmp_path / "out")["row_index"].to_pylist() == [0, 1, 4, 5]
    assert ds.dataset(tmp_path / "out" / "parts").to_table().num_rows == 4


def test_is_valid_filter(tmp_path: Path, model: Path) -> None:
    valid = [None if i % 3 else False for i in range(30)]
    valid[1] = True
    inp = packaged_parquet(tmp_path / "in.parquet", 30, is_valid=valid)
    run(inp, tmp_path / "a", model, chunk_rows=8)
    kept = [i for i, v in enumerate(valid) if v is not False]
    assert read_parts(tmp_path / "a")["row_index"].to_pylist() == kept
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    assert state["counters"]["filtered_out"] == 10
    run(inp, tmp_path / "b", model, chunk_rows=8, filter_valid=False)
    assert read_parts(tmp_path / "b")["row_index"].to_pylist() == list(range(30))


def test_limit_is_exact_then_extends(tmp_path: Path, model: Path) -> None:
    valid = [i % 4 != 1 for i in range(60)]
    inp = packaged_parquet(tmp_path / "in.parquet", 60, is_valid=valid, osmid="string")
    selected = [i for i in range(60) if valid[i]]
    # far below the chunk size: the reference wrote nothing here
    m = run(inp, tmp_path / "out", model, limit=7)
    rows = read_parts(tmp_path / "out")["row_index"].to_pylist()
    assert rows == selected[:7] and m.rows["embedded"] == 7
    m = run(inp, tmp_path / "out", model, limit=20, chunk_rows=8)
    assert read_parts(tmp_path / "out")["row_index"].to_pylist() == selected[:20]
    run(inp, tmp_path / "out", model, chunk_rows=8)
    full = read_parts(tmp_path / "out")
    assert full["row_index"].to_pylist() == selected
    run(inp, tmp_path / "ref", model, chunk_rows=8)
    ref = read_parts(tmp_path / "ref")
    np.testing.assert_allclose(
        to_numpy_matrix(full["embedding"]), to_numpy_matrix(ref["embedding"]), atol=1e-5
    )
    assert run(inp, tmp_path / "out", model, limit=0, chunk_rows=8).rows["embedded"] == 0
    assert read_parts(tmp_path / "out").num_rows == 0


def test_resume_refuses_other_input_or_model(tmp_path: Path, model: Path) -> None:
    inp = packaged_parquet(tmp_path / "in.parquet", 20)
    run(inp, tmp_path / "out", model, chunk_rows=8)
    time.sleep(0.01)
    packaged_parquet(tmp_path / "in.parquet", 20, seed=1)  # same size and schema, new content
    with pytest.raises(SbeError, match="different input"):
        run(inp, tmp_path / "out", model, chunk_rows=8)
    packaged_parquet(tmp_path / "in2.parquet", 20)
    other = make_tiny_model(tmp_path / "other")
    (tmp_path / "out" / "state.json").unlink()
    run(tmp_path / "in2.parquet", tmp_path / "out2", model)
    with pytest.raises(SbeError, match="another model"):
        run(tmp_path / "in2.parquet", tmp_path / "out2", other)
    with DirLock(tmp_path / "out2"), pytest.raises(LockedError):
        run(tmp_path / "in2.parquet", tmp_path / "out2", model)
    with pytest.raises(SbeError, match="lacks column"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
        run(tmp_path / "bad.parquet", tmp_path / "out3", model)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_rows(tmp_path: Path, model: Path) -> None:
    inp = packaged_parquet(
        tmp_path / "in.parquet", 400, bad={7: b"junk", 255: b""}, row_group_size=150
    )
    args = ["--input", str(inp), "--model", str(model), "--chunk-rows", "10", "--batch-size", "4"]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from sbe.cli import main; main()", "embed", "--output", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "parts").glob("rows-*.parquet"))) >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: parts being written, state being updated
    proc.wait()
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "running" and state["counters"]["chunks_done"] < 40
    stage.run(EmbedConfig(input=inp, output=out, model=model, chunk_rows=10, batch_size=4))
    stage.run(EmbedConfig(input=inp, output=tmp_path / "ref", model=model, chunk_rows=10))
    got, want = read_parts(out), read_parts(tmp_path / "ref")
    assert got["row_index"].to_pylist() == want["row_index"].to_pylist()  # none missing, none twice
    assert len(set(got["row_index"].to_pylist())) == got.num_rows == 398
    np.testing.assert_allclose(
        to_numpy_matrix(got["embedding"]), to_numpy_matrix(want["embedding"]), atol=1e-5
    )
    assert read_parts(out, "failures")["row_index"].to_pylist() == [7, 255]
    assert not [p for p in out.rglob(".tmp-*")]
    assert json.loads((out / "state.json").read_text())["counters"]["embedded"] == 398


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    groups=st.lists(st.integers(1, 23), min_size=1, max_size=5),
    chunk=st.integers(1, 9),
    limit=st.one_of(st.none(), st.integers(0, 80)),
    valid_seed=st.integers(0, 2**16),
    with_valid=st.booleans(),
)
def test_plan_covers_exactly_the_selected_rows(
    tmp_path: Path,
    groups: list[int],
    chunk: int,
    limit: int | None,
    valid_seed: int,
    with_valid: bool,
) -> None:
    n = sum(groups)
    rng = np.random.default_rng(valid_seed)
    valid = [None if r < 0.2 else bool(r < 0.7) for r in rng.random(n)] if with_valid else None
    cols = {
        "image_bytes": pa.array([bytes([i % 256]) for i in range(n)]),
        "OSMID": pa.array(range(n)),
    }
    if valid is not None:
        cols["is_valid"] = pa.array(valid, pa.bool_())
    path = tmp_path / f"p{valid_seed}-{len(groups)}-{chunk}.parquet"
    with pq.ParquetWriter(path, pa.table(cols).schema) as w:
        start = 0
        for g in groups:  # exact row groups
            w.write_table(pa.table(cols).slice(start, g))
            start += g
    info = inspect_input(path)
    plan = make_plan(info, chunk, filter_valid=True, limit=limit)
    selected = [i for i in range(n) if valid is None or valid[i] is not False]
    if limit is not None:
        selected = selected[:limit]
    bounds = np.cumsum([0, *groups])
    covered: list[int] = []
    for c in plan.chunks:
        assert c.stop - c.start <= chunk and c.selected > 0
        rg = int(np.searchsorted(bounds, c.start, side="right") - 1)
        assert c.row_group == rg and c.stop <= bounds[rg + 1]  # never crosses a row group
        rows = [i for i in range(c.start, c.stop) if valid is None or valid[i] is not False]
        assert len(rows) == c.selected
        covered += rows
    assert covered == selected and plan.selected == len(selected)
    assert len({c.name for c in plan.chunks}) == len(plan.chunks)
    # reading any subset of chunks returns exactly their rows
    subset = list(plan.chunks[::2])
    got = list(read_chunks(pq.ParquetFile(path), info, subset, ["OSMID"], batch_rows=3))
    assert [c for c, _ in got] == subset
    for c, t in got:
        assert t["OSMID"].to_pylist() == list(range(c.start, c.stop))


def test_cli_embed_json(tmp_path: Path, model: Path) -> None:
    from typer.testing import CliRunner

    from sbe.cli import app

    inp = packaged_parquet(tmp_path / "in.parquet", 12)
    r = CliRunner().invoke(
        app,
        [
            "embed",
            "-i",
            str(inp),
            "-o",
            str(tmp_path / "o"),
            "-m",
            str(model),
            "--limit",
            "5",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["rows"]["embedded"] == 5 and out["stage"] == "embed"
    assert ds.dataset(tmp_path / "o" / "parts").count_rows() == 5
    r = CliRunner().invoke(
        app, ["embed", "-i", str(inp), "-o", str(tmp_path / "o2"), "-m", str(model), "--shard", "x"]
    )
    assert r.exit_code == 2


def test_up_to_date_rerun_rewrites_nothing(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "tiny")
    inp = packaged_parquet(tmp_path / "in.parquet", n=12)
    cfg = EmbedConfig(input=inp, output=tmp_path / "out", model=model, chunk_rows=5)
    first = stage.run(cfg)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir() if p.is_file()}
    again = stage.run(cfg)
    assert again.up_to_date and not first.up_to_date
    assert again.rows == first.rows
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in stamps.items() if k != ".lock"
    }


def test_finished_parts_are_kept_only_on_proof(tmp_path: Path, model: Path) -> None:
    """A finished run's parts are reused by a run with other settings only where each part's own
    record proves it holds the same rows from the same input and model; --restart redoes all."""
    inp = packaged_parquet(tmp_path / "in.parquet", 20)
    out = tmp_path / "out"
    run(inp, out, model, chunk_rows=5, limit=10)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    assert len(first) == 2
    m = stage.run(EmbedConfig(input=inp, output=out, model=model, chunk_rows=5))
    assert m.extra["images_this_run"] == 10  # only the two new chunks
    after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    assert {k: after[k] for k in first} == first and len(after) == 4
    m = stage.run(EmbedConfig(input=inp, output=out, model=model, chunk_rows=5), restart=True)
    assert m.extra["images_this_run"] == 20 and not m.up_to_date
    # a part whose record names another runtime is not trusted
    m = stage.run(EmbedConfig(input=inp, output=out, model=model, chunk_rows=5, runtime="torch"))
    assert m.extra["images_this_run"] == 20
