from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sbe.storage import (
    DirLock,
    LockedError,
    Manifest,
    SkipLog,
    atomic_path,
    clean_stale_temps,
    config_hash,
    fingerprint_paths,
    fixed_size_list,
    manifest_is_current,
    part_is_current,
    read_part_meta,
    to_numpy_matrix,
    write_manifest,
    write_part,
)
from sbe.storage.schemas import make_uid, split_uid, uid_str


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.uint8, np.int32])
def test_fixed_size_list_roundtrip(tmp_path: Path, dtype) -> None:
    m = (np.arange(60).reshape(10, 6) % 50).astype(dtype)
    t = pa.table({"x": fixed_size_list(m)})
    assert t.schema.field("x").type == pa.list_(pa.from_numpy_dtype(dtype), 6)
    pq.write_table(t, tmp_path / "a.parquet")
    back = to_numpy_matrix(pq.read_table(tmp_path / "a.parquet")["x"])
    assert back.dtype == dtype and back.shape == (10, 6)
    np.testing.assert_array_equal(back, m)
    # slices keep their offset
    np.testing.assert_array_equal(to_numpy_matrix(t["x"].slice(3, 4)), m[3:7])


def test_to_numpy_matrix_rejects_variable_lists() -> None:
    with pytest.raises(TypeError):
        to_numpy_matrix(pa.array([[1.0, 2.0], [3.0]]))


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_clean_stale_temps(tmp_path: Path) -> None:
    (tmp_path / ".tmp-x.parquet.123.abc").write_bytes(b"x")
    (tmp_path / "keep.parquet").write_bytes(b"x")
    assert clean_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.parquet"]


def test_part_meta_and_currency(tmp_path: Path) -> None:
    p = tmp_path / "p.parquet"
    t = pa.table({"a": [1, 2, 3]})
    meta = {"source": {"path": "x.tar", "size": 10, "mtime_ns": 5}, "config": "abc"}
    assert not part_is_current(p, meta)
    write_part(t, p, meta)
    assert read_part_meta(p) == meta
    assert part_is_current(p, meta)
    assert not part_is_current(p, {**meta, "config": "changed"})
    assert pq.read_table(p).num_rows == 3


def test_manifest_currency(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.parquet").write_bytes(b"x")
    inputs = fingerprint_paths([src])
    cfg = {"k": 1}
    m = Manifest(
        stage="demo", config=cfg, config_hash=config_hash(cfg), inputs=inputs, outputs=["a.parquet"]
    )
    write_manifest(out, m)
    assert manifest_is_current(out, "demo", config_hash(cfg), inputs) is not None
    assert manifest_is_current(out, "demo", config_hash({"k": 2}), inputs) is None
    time.sleep(0.01)
    src.write_text("hello, changed")
    assert manifest_is_current(out, "demo", config_hash(cfg), fingerprint_paths([src])) is None
    (out / "a.parquet").unlink()
    assert manifest_is_current(out, "demo", config_hash(cfg), inputs) is None
    saved = json.loads((out / "_manifest.json").read_text())
    assert saved["stage"] == "demo" and "up_to_date" not in saved


def test_skiplog_keeps_few_examples() -> None:
    s = SkipLog()
    for i in range(20):
        s.add("corrupt_jpeg", f"img{i}")
    s.add("missing_image")
    assert s.counts == {"corrupt_jpeg": 20, "missing_image": 1}
    assert len(s.examples["corrupt_jpeg"]) == 5
    assert s.total == 21


def _hold_lock(folder: str, ready, release) -> None:
    with DirLock(folder):
        ready.set()
        release.wait(10)


def test_dirlock_excludes_second_writer_and_dies_with_process(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    proc.start()
    assert ready.wait(20)
    with pytest.raises(LockedError, match="another run"):
        DirLock(tmp_path).acquire()
    os.kill(proc.pid, 9)  # kill -9: the kernel drops the lock
    proc.join(10)
    with DirLock(tmp_path):
        pass


def test_uid_packing() -> None:
    uid = make_uid(88, 123)
    assert split_uid(uid) == (88, 123)
    assert uid_str(uid) == "0088_000123"
    arr = make_uid(np.array([1, 2]), np.array([3, 4]))
    assert arr.dtype == np.int64
    d, local = split_uid(arr)
    assert d.tolist() == [1, 2] and local.tolist() == [3, 4]


def test_read_parquet_rows_reads_several_columns_across_row_groups(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sbe.storage.parquet import read_parquet_rows

    table = pa.table({"a": list(range(10)), "b": [f"v{i}" for i in range(10)], "c": [0.0] * 10})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=4)
    got = read_parquet_rows(tmp_path / "t.parquet", [9, 1, 5, 5, 42], ["a", "b"])
    assert got == {1: {"a": 1, "b": "v1"}, 5: {"a": 5, "b": "v5"}, 9: {"a": 9, "b": "v9"}}
