"""Reading a few rows of a parquet file without reading the rest."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq


def read_parquet_rows(
    path: str | os.PathLike[str], rows: Sequence[int], columns: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """Values of some columns at the given row indices, reading only the row groups holding them
    (each once, all columns together).

    Returns:
        ``{row index: {column: value}}`` for every requested row inside the file.
    """
    pf = pq.ParquetFile(path)
    starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    want = sorted({int(r) for r in rows if 0 <= int(r) < starts[-1]})
    out: dict[int, dict[str, Any]] = {}
    by_group: dict[int, list[int]] = {}
    for r in want:
        by_group.setdefault(int(np.searchsorted(starts, r, side="right") - 1), []).append(r)
    for g, rs in by_group.items():
        table = pf.read_row_group(g, columns=list(columns))
        local = table.take([r - int(starts[g]) for r in rs]).to_pylist()
        out.update(zip(rs, local, strict=True))
    return out
