"""Write one parquet part batch by batch, atomically, with provenance in its footer.

The streaming counterpart of :func:`sbe.storage.write_part`: rows arrive in record batches (bounded
memory), are buffered into row groups of a fixed size, and the file appears under its final name
only when :meth:`StreamingPart.close` succeeds. The footer carries ``meta`` under the same key as
``write_part``, so :func:`sbe.storage.read_part_meta` and :func:`sbe.storage.part_is_current` work.
What is only known once every row is written (counts, statistics) can be added with
:meth:`StreamingPart.set_result`: it lands in the footer too and ``read_part_meta`` returns it
under ``"result"``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sbe.storage import atomic_path
from sbe.storage.parts import META_KEY, RESULT_KEY


class StreamingPart:
    """An atomic, row-group-buffered parquet writer.

    Example:
        >>> with StreamingPart(path, schema, meta={"split": "train"}) as part:
        ...     for batch in batches:
        ...         part.write(batch)

    Args:
        path: final file path.
        schema: the output schema; every batch is cast to it.
        meta: JSON-serialisable provenance stored in the footer.
        row_group_rows: rows per row group (the unit of random access for readers).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        meta: dict[str, Any],
        *,
        row_group_rows: int = 8192,
        compression: str = "zstd",
    ) -> None:
        md = dict(schema.metadata or {})
        md[META_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
        self.schema = schema.with_metadata(md)
        self.path = Path(path)
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = pq.ParquetWriter(tmp, self.schema, compression=compression)
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._result: dict[str, Any] | None = None

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append rows (cast to the schema; column order must match)."""
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        table = table.cast(self.schema)
        self._buffer.extend(table.to_batches())
        self._buffered += table.num_rows
        self.rows += table.num_rows
        while self._buffered >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def set_result(self, result: dict[str, Any]) -> None:
        """Store ``result`` (JSON-serialisable) in the footer at close, next to ``meta``."""
        self._result = dict(result)

    def _flush(self, n: int) -> None:
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        self._writer.write_table(table.slice(0, n), row_group_size=n)
        rest = table.slice(n)
        self._buffer = rest.to_batches()
        self._buffered = rest.num_rows

    def close(self) -> None:
        """Flush, write the footer and move the file to its final name."""
        if self._buffered:
            self._flush(self._buffered)
        if self._result is not None:
            blob = json.dumps(self._result, sort_keys=True, default=str)
            self._writer.add_key_value_metadata({RESULT_KEY.decode(): blob})
        self._writer.close()
        self._stack.close()

    def abort(self) -> None:
        """Drop everything written so far; the final path is left untouched."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> StreamingPart:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
