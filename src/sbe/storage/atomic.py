"""Atomic writes: every file appears whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TEMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` if the block succeeds.

    The temp name starts with ``.tmp-`` so readers never see it as output and
    :func:`clean_stale_temps` can remove leftovers of a killed run.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TEMP_PREFIX}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_parquet_atomic(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    row_group_size: int | None = None,
    compression: str = "zstd",
) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression=compression)


def clean_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Remove temp files left by a killed run. Call only while holding the folder's lock."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.rglob(f"{TEMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed
