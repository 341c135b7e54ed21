"""The photos behind an index: a parquet with encoded images and the index's id column.

The index directory does not hold pictures. They are found, when they can be, by following the
index's provenance: ``index.json`` names its source folder, whose ``_manifest.json`` lists the
files it read; a parquet among them (or named by an embed stage's ``state.json``) with a binary
``image_bytes`` column and the index's id column is the photo source (the packaged-images format).

Used by ``sbe index build --local-features`` (gallery features of each row's photos), by
``sbe search --rerank`` (a candidate's photos when the index has no feature store) and by the
service (thumbnails, re-ranking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.index.table import as_id_scalar
from sbe.storage.artifacts import EmbedDir, source_dir
from sbe.storage.parquet import read_parquet_rows

IMAGE_COLUMN = "image_bytes"


def has_photos(path: Path, id_column: str) -> bool:
    """True if the parquet ``path`` holds a binary ``image_bytes`` column and ``id_column``."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid):
        return False
    if IMAGE_COLUMN not in schema.names or id_column not in schema.names:
        return False
    t = schema.field(IMAGE_COLUMN).type
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def find_photo_parquet(source_path: str | Path | None, id_column: str) -> Path | None:
    """The packaged photos behind an index's source, followed through the stage records.

    The source is an ``sbe aggregate`` output (its manifest names the embed folders it read and
    the locations table) or an ``sbe embed`` output; each embed folder's state names its input
    (:meth:`~sbe.storage.artifacts.EmbedDir.input_path`, moved-folder safe).

    Returns:
        The first of those parquet files that holds ``image_bytes`` and ``id_column``, or ``None``.
    """
    if source_path is None:
        return None
    src = source_dir(source_path)
    manifest = src.manifest()
    if manifest is None:
        return None
    embed_dirs: list[Path] = []
    candidates: list[Path | None] = []
    if manifest.stage == "embed":
        embed_dirs.append(src.root)
    else:
        embed_dirs += [p for d in manifest.extra.get("embed_dirs") or [] if (p := src.resolve(d))]
        candidates.append(src.resolve(manifest.extra.get("locations")))
    for d in embed_dirs:
        try:
            candidates.insert(0, EmbedDir(d).input_path())
        except SbeError:  # no readable state.json: not an embed output after all
            continue
    for c in candidates:
        if c is not None and c.suffix == ".parquet" and c.is_file() and has_photos(c, id_column):
            return c
    return None


class PhotoTable:
    """Photo rows of each id in one photo parquet, looked up once (a sort, not a scan per id).

    Args:
        path: the parquet (``image_bytes`` + ``id_column``).
        id_column: the index's id column.

    Raises:
        SbeError: the file cannot be read or lacks a column.
    """

    def __init__(self, path: str | Path, id_column: str, image_column: str = IMAGE_COLUMN) -> None:
        self.path = Path(path)
        self.id_column = id_column
        self.image_column = image_column
        try:
            schema = pq.read_schema(self.path)
        except (OSError, pa.ArrowInvalid) as e:
            raise SbeError(f"{self.path}: cannot read the photo parquet: {e}") from None
        for col in (id_column, image_column):
            if col not in schema.names:
                raise SbeError(f"{self.path}: no {col!r} column; cannot read photos from it")
        self._ids = pq.read_table(self.path, columns=[id_column]).column(id_column)

    def rows_of(self, id_value: Any) -> list[int]:
        """Rows of the photo parquet showing ``id_value`` (ascending; empty when none)."""
        try:
            scalar = as_id_scalar(id_value, self._ids.type)
        except SbeError:
            return []
        mask = pc.fill_null(pc.equal(self._ids, scalar), False)
        if isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks()
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist()

    def rows_of_many(self, id_values: Sequence[Any], limit: int) -> list[list[int]]:
        """Up to ``limit`` photo rows (ascending) of each id, in one pass over the id column.

        Returns:
            One list per id, in the order of ``id_values`` (empty for an id without photos).
        """
        want = pa.array(list(id_values), type=self._ids.type)
        # position of each photo's id among ``want`` (null = not wanted)
        pos = pc.index_in(self._ids, value_set=want)
        if isinstance(pos, pa.ChunkedArray):
            pos = pos.combine_chunks()
        pos_np = np.asarray(pos.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        # duplicate ids in ``want``: index_in gives the first; map every position to it
        first = {v: i for i, v in reversed(list(enumerate(want.to_pylist())))}
        alias = [first[v] for v in want.to_pylist()]
        out: list[list[int]] = [[] for _ in id_values]
        rows = np.flatnonzero(pos_np >= 0)
        for r in rows:
            lst = out[int(pos_np[r])]
            if len(lst) < limit:
                lst.append(int(r))
        return [out[a] for a in alias]

    def read(self, rows: Sequence[int]) -> dict[int, bytes | None]:
        """Encoded image bytes of photo rows (``None`` for an empty or null cell)."""
        col = self.image_column
        got = read_parquet_rows(self.path, rows, [col])
        return {
            int(r): (v if isinstance(v, bytes) and v else None)
            for r, v in ((r, got.get(int(r), {}).get(col)) for r in rows)
        }


def row_photo_reader(
    index_root: Path,
    source_path: str | None,
    id_column: str,
    ids: pa.ChunkedArray,
    photos: str | Path | None = None,
) -> tuple[Callable[[Sequence[int], int], list[list[bytes | None]]] | None, Path | None]:
    """``(rows, limit) -> per row, its photo bytes`` of an index's rows, from its photo parquet.

    Args:
        index_root: the index folder.
        source_path: ``index.json``'s source path (relative to ``index_root``), or None.
        id_column: the index's id column (also the photo parquet's).
        ids: the side table's id column (row -> id).
        photos: a photo parquet to use instead of following the provenance.

    Returns:
        ``(reader, parquet)``: ``reader(rows, limit)`` lists, per row, up to ``limit`` photos of
        the row's id (``None`` for an empty cell; an empty list when the id has none), finding
        them in one pass over the ids and reading them in one pass over the file; or
        ``(None, None)`` when no photo parquet is found.
    """
    source = None if source_path is None else Path(index_root) / source_path
    path = Path(photos) if photos is not None else find_photo_parquet(source, id_column)
    if path is None:
        return None, None
    table = PhotoTable(path, id_column)

    def reader(rows: Sequence[int], limit: int) -> list[list[bytes | None]]:
        photo_rows = table.rows_of_many([ids[int(r)].as_py() for r in rows], limit)
        got = table.read(sorted({r for pr in photo_rows for r in pr}))
        return [[got.get(r) for r in pr] for pr in photo_rows]

    return reader, path
