"""Embedding new data: what the input is, and which row ranges ("chunks") make the output.

A chunk is a fixed range of input rows inside one row group; its output part is named after the
range (``rows-<start>-<stop>``), so a rerun finds finished work by name and a killed run resumes
exactly. The plan depends only on the input file, ``chunk_rows``, ``filter_valid`` and ``limit``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.storage.schemas import OSMID

IMAGE_BYTES = "image_bytes"
IS_VALID = "is_valid"


@dataclass(frozen=True)
class InputInfo:
    """The packaged input parquet: identity (for resume checks) and layout.

    Attributes:
        path: absolute path.
        size, mtime_ns: file size in bytes and modification time; a rewrite changes them.
        schema: the Arrow schema as text.
        num_rows: rows in the file.
        row_group_rows: rows of each row group.
        osmid_type: Arrow type of ``OSMID`` (kept as is in every output).
        has_valid: the file has an ``is_valid`` column.
    """

    path: Path
    size: int
    mtime_ns: int
    schema: str
    num_rows: int
    row_group_rows: tuple[int, ...]
    osmid_type: pa.DataType
    has_valid: bool

    def fingerprint(self) -> dict[str, Any]:
        """JSON identity recorded in ``state.json``."""
        return {
            "path": str(self.path),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "schema": self.schema,
            "num_rows": self.num_rows,
            "num_row_groups": len(self.row_group_rows),
        }

    def row_group_start(self, rg: int) -> int:
        return int(sum(self.row_group_rows[:rg]))


def inspect_input(path: str | os.PathLike[str]) -> InputInfo:
    """Read the footer of the input parquet and check its columns.

    Raises:
        SbeError: missing file, unreadable parquet, or missing / mistyped columns.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise SbeError(f"input parquet not found: {p}")
    try:
        pf = pq.ParquetFile(p)
    except (OSError, pa.ArrowInvalid) as e:
        raise SbeError(f"{p} is not a readable parquet file: {e}") from None
    schema = pf.schema_arrow
    names = set(schema.names)
    missing = {IMAGE_BYTES, OSMID} - names
    if missing:
        raise SbeError(
            f"{p} lacks column(s) {sorted(missing)}; the input needs image_bytes (encoded images) "
            f"and OSMID (any scalar id), optionally is_valid (bool)"
        )
    img_type = schema.field(IMAGE_BYTES).type
    if not (pa.types.is_binary(img_type) or pa.types.is_large_binary(img_type)):
        raise SbeError(f"{p}: image_bytes must be binary, got {img_type}")
    osmid_type = schema.field(OSMID).type
    if pa.types.is_nested(osmid_type):
        raise SbeError(f"{p}: OSMID must be a scalar, got {osmid_type}")
    has_valid = IS_VALID in names
    if has_valid and not pa.types.is_boolean(schema.field(IS_VALID).type):
        raise SbeError(f"{p}: is_valid must be boolean, got {schema.field(IS_VALID).type}")
    st = p.stat()
    md = pf.metadata
    return InputInfo(
        path=p,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        schema=schema.to_string(show_schema_metadata=False),
        num_rows=md.num_rows,
        row_group_rows=tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)),
        osmid_type=osmid_type,
        has_valid=has_valid,
    )


@dataclass(frozen=True)
class Chunk:
    """Input rows ``[start, stop)`` of row group ``row_group``; ``selected`` of them are embedded."""

    row_group: int
    start: int
    stop: int
    selected: int

    @property
    def name(self) -> str:
        return f"rows-{self.start:012d}-{self.stop:012d}"


@dataclass(frozen=True)
class Plan:
    """The chunks to embed and the row counts behind them.

    Attributes:
        chunks: chunks with at least one selected row, in input order.
        selected: rows that will be embedded or recorded as failures (filter and limit applied).
        filtered_out: rows dropped by ``is_valid == False`` (before the limit).
    """

    chunks: tuple[Chunk, ...]
    selected: int
    filtered_out: int


def valid_mask(pf: pq.ParquetFile) -> np.ndarray:
    """``is_valid`` over the whole file as a bool array; null counts as valid.

    Reads only that column (one byte per row), so it is cheap even for huge inputs.
    """
    parts = [
        pc.fill_null(b.column(0), True).to_numpy(zero_copy_only=False)
        for b in pf.iter_batches(batch_size=65536, columns=[IS_VALID])
    ]
    return np.concatenate(parts).astype(bool) if parts else np.zeros(0, dtype=bool)


def make_plan(
    info: InputInfo,
    chunk_rows: int,
    filter_valid: bool = True,
    limit: int | None = None,
) -> Plan:
    """Split the input into chunks and apply the validity filter and the row limit.

    Args:
        info: from :func:`inspect_input`.
        chunk_rows: rows per chunk (chunks never cross row groups).
        filter_valid: skip rows whose ``is_valid`` is False.
        limit: keep only the first ``limit`` selected rows (``None`` = all).

    Returns:
        The :class:`Plan`; a chunk cut by the limit ends right after its last selected row.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    n = info.num_rows
    if filter_valid and info.has_valid:
        keep = valid_mask(pq.ParquetFile(info.path))
        if len(keep) != n:
            raise SbeError(f"{info.path}: is_valid has {len(keep)} values for {n} rows")
    else:
        keep = None
    filtered_out = 0 if keep is None else int(n - keep.sum())
    cut = n  # rows at index >= cut are beyond the limit
    if limit is not None:
        if limit <= 0:
            cut = 0
        elif keep is None:
            cut = min(n, limit)
        else:
            cum = np.cumsum(keep)
            if len(cum) and cum[-1] >= limit:
                # the row holding the limit-th selected row is the last one kept
                cut = int(np.searchsorted(cum, limit)) + 1
    chunks: list[Chunk] = []
    start = 0
    for rg, rows in enumerate(info.row_group_rows):
        rg_stop = start + rows
        for s in range(start, rg_stop, chunk_rows):
            e = min(s + chunk_rows, rg_stop, cut)
            if e <= s:
                break
            sel = (e - s) if keep is None else int(keep[s:e].sum())
            if sel:
                chunks.append(Chunk(rg, s, e, sel))
        start = rg_stop
    selected = sum(c.selected for c in chunks)
    return Plan(tuple(chunks), selected, filtered_out)


def read_chunks(
    pf: pq.ParquetFile,
    info: InputInfo,
    chunks: list[Chunk],
    columns: list[str],
    batch_rows: int = 1024,
) -> Iterator[tuple[Chunk, pa.Table]]:
    """Stream the rows of ``chunks`` (sorted, within the same file) one chunk table at a time.

    Only the row groups holding a chunk are read, each front to back with ``iter_batches`` (memory
    stays at about one chunk plus one batch); reading a row group stops after its last chunk.
    """
    by_rg: dict[int, list[Chunk]] = {}
    for c in sorted(chunks, key=lambda c: c.start):
        by_rg.setdefault(c.row_group, []).append(c)
    for rg, todo in by_rg.items():
        pos = info.row_group_start(rg)  # input row index of buffer[0]
        buffer: list[pa.RecordBatch] = []
        buffered = 0
        pending = list(todo)
        batches = pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=columns)
        for batch in batches:
            buffer.append(batch)
            buffered += batch.num_rows
            while pending and pos + buffered >= pending[0].stop:
                c = pending.pop(0)
                table = pa.Table.from_batches(buffer).slice(c.start - pos, c.stop - c.start)
                yield c, table.combine_chunks()
                # drop everything before the end of this chunk
                rest = pa.Table.from_batches(buffer).slice(c.stop - pos)
                buffer = rest.to_batches()
                buffered = rest.num_rows
                pos = c.stop
            if not pending:
                break
            if buffered and pos + buffered <= pending[0].start:
                # rows before the next pending chunk (already done): drop them unread-further
                pos += buffered
                buffer, buffered = [], 0
        if pending:
            raise SbeError(f"{info.path}: row group {rg} ended before row {pending[0].stop}")
