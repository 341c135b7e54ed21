"""The side table of an index: row i of ``ids.parquet`` describes faiss id i.

It holds the id column with its original Arrow type (integer or string OSMIDs stay as they were)
and the metadata columns (location, image count, ...). The file carries the build id of the
index it belongs to in its footer, so a directory mixing files of two builds (a build killed
half-way through writing) is detected on load instead of silently returning wrong ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.storage import write_parquet_atomic

BUILD_KEY = b"sbe_index_build"


def write_side_table(table: pa.Table, path: str | Path, build_id: str) -> None:
    """Write the side table atomically, tagged with ``build_id``."""
    meta = dict(table.schema.metadata or {})
    meta[BUILD_KEY] = build_id.encode()
    write_parquet_atomic(table.replace_schema_metadata(meta), path)


def read_side_table(path: str | Path, build_id: str | None = None) -> pa.Table:
    """Read a side table; with ``build_id``, check it belongs to that build.

    Raises:
        SbeError: the table was written by another build.
    """
    # ParquetFile, not pq.read_table: the latter goes through pyarrow.dataset, which imports
    # pandas (about a second), and `sbe search --id` should start in well under that
    with pq.ParquetFile(path) as f:
        table = f.read()
    if build_id is not None:
        found = (table.schema.metadata or {}).get(BUILD_KEY, b"").decode()
        if found != build_id:
            raise SbeError(
                f"{path} belongs to another index build ({found or 'unknown'} != {build_id}); "
                "the index directory is incomplete: rerun `sbe index build`"
            )
    return table.replace_schema_metadata(None)


def as_id_scalar(value: Any, id_type: pa.DataType) -> pa.Scalar:
    """Convert a user-given id (e.g. the string ``"123"`` from the command line) to ``id_type``.

    Raises:
        SbeError: the value cannot be an id of that type.
    """
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    is_text = pa.types.is_string(id_type) or pa.types.is_large_string(id_type)
    try:
        if is_text:
            return pa.scalar(str(value), type=id_type)
        if isinstance(value, str):
            return pa.scalar(value.strip()).cast(id_type)
        return pa.scalar(value, type=id_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        raise SbeError(f"{value!r} is not a valid id (ids are {id_type})") from None


def rows_of_id(ids: pa.Array | pa.ChunkedArray, value: Any) -> np.ndarray:
    """Rows whose id equals ``value``, ascending (int64, possibly empty)."""
    scalar = as_id_scalar(value, ids.type)
    mask = pc.fill_null(pc.equal(ids, scalar), False)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).astype(np.int64)
