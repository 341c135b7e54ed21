"""``sbe embed`` on photos that are not packaged: the source index (``sources.parquet``).

An image folder (with or without ``metadata.csv``/``metadata.jsonl``), a CSV/JSONL list of paths,
a Mapillary download or WebDataset shards is read with the ingest readers
(:mod:`sbe.data.sources`) into one row per image: its key, where its bytes are, and the metadata
to pass through. No image is decoded here; the embed stage reads each image's bytes by its
reference (:func:`sbe.data.tarstream.read_image`) in its decode threads.

``sources.parquet`` columns (one row per image, in source order; ``row_index`` = row number)::

    row_index     int64     the row's number (embed parts and failures refer to it)
    OSMID         int64 | string   the key: the ``--id-column`` value (int64 when every key is a
                            plain integer, else text); without an id column, the image's path
    source_kind   string    "file" (tar_file is the folder) or "tar" (a WebDataset shard)
    tar_file      string    absolute path of the folder or shard
    member_name   string    the file's path inside the folder, or the member's name in the shard
    tar_offset    int64     byte offset in the shard (0 for a file)
    tar_size      int64     bytes
    image_key     string    the source's own name for the image
    lat, lon      float64   camera position (degrees), null where unknown
    heading       float32   degrees clockwise from north, null where unknown
    captured_at   timestamp[ms, UTC]
    <kept>        string    each ``--keep-columns`` column, as text
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sbe.data.sources import plan_folder
from sbe.data.sources.base import (
    MAX_IMAGE_BYTES,
    Columns,
    RowSkip,
    record_from_row,
    records_table,
)
from sbe.data.sources.webdataset import iter_samples, sample_columns, sidecar
from sbe.data.tarstream import NotATarError, TarStream
from sbe.errors import SbeError
from sbe.storage import SkipLog
from sbe.storage.schemas import OSMID

SOURCES_NAME = "sources.parquet"
#: columns that locate an image's bytes (``read_image(tar_file, member_name, offset, size)``)
REFERENCE_COLUMNS = ("tar_file", "member_name", "tar_offset", "tar_size")
FIXED_COLUMNS = (
    "row_index",
    OSMID,
    "source_kind",
    *REFERENCE_COLUMNS,
    "image_key",
    "lat",
    "lon",
    "heading",
    "captured_at",
)


@dataclass
class SourceIndex:
    """Every image of a source, before any is decoded.

    Attributes:
        table: the ``sources.parquet`` table (see the module docstring).
        files: every file read to make it (metadata, list, shards, and each image file), for the
            stage's input fingerprint.
        listing: content hash of ``(name, size, mtime)`` of those files (the input's identity
            in ``state.json``: a change is refused on resume).
        id_source: where ``OSMID`` came from: the id column's name, ``"sub-folder"`` or
            ``"path"``.
        skips, warns: counted problems with examples (a row naming a missing file, ...).
    """

    table: pa.Table
    files: list[Path]
    listing: str
    id_source: str
    skips: SkipLog = field(default_factory=SkipLog)
    warns: SkipLog = field(default_factory=SkipLog)

    def digest(self) -> str:
        """Hash of the whole table (kept columns included) and the listing."""
        return _table_digest(self.table, self.listing)

    def reference_digest(self) -> str:
        """Hash of what decides the embedding parts: keys and image references (not the kept
        columns, so changing ``--keep-columns`` rewrites only ``sources.parquet``)."""
        cols = self.table.select([OSMID, "row_index", *REFERENCE_COLUMNS])
        return _table_digest(cols, self.listing)


def _table_digest(table: pa.Table, salt: str) -> str:
    h = hashlib.sha256(salt.encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:32]


def _listing(files: Sequence[Path], root: Path | None) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        name = os.path.relpath(f, root) if root is not None else f.name
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def key_column(keys: list[str | None]) -> pa.Array:
    """Keys as int64 when every non-null one is a plain integer that round-trips, else text."""
    present = [k for k in keys if k is not None]

    def plain_int(k: str) -> bool:
        try:
            return str(int(k)) == k and -(1 << 63) <= int(k) < (1 << 63)
        except ValueError:
            return False

    if present and all(plain_int(k) for k in present):
        return pa.array([None if k is None else int(k) for k in keys], pa.int64())
    return pa.array(keys, pa.string())


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v)


def _check_keep(keep: Sequence[str], available: Sequence[str], where: str) -> None:
    missing = [c for c in keep if c not in available and c not in FIXED_COLUMNS]
    if missing:
        raise SbeError(
            f"{where}: no column {', '.join(map(repr, missing))} for --keep-columns "
            f"(found {', '.join(available) or 'none'})"
        )


def _index_table(
    records: pa.Table,
    keys: list[str | None],
    kind: str,
    container: list[str],
    offset: np.ndarray,
    size: np.ndarray,
    kept: dict[str, list[str | None]],
) -> pa.Table:
    n = records.num_rows
    cols: dict[str, Any] = {
        "row_index": pa.array(np.arange(n, dtype=np.int64)),
        OSMID: key_column(keys),
        "source_kind": pa.array([kind] * n, pa.string()),
        "tar_file": pa.array(container, pa.string()),
        "member_name": records.column("file"),
        "tar_offset": pa.array(offset, pa.int64()),
        "tar_size": pa.array(size, pa.int64()),
        "image_key": records.column("image_key"),
        "lat": records.column("lat"),
        "lon": records.column("lon"),
        "heading": records.column("heading"),
        "captured_at": records.column("captured_at"),
    }
    for name, values in kept.items():
        if name not in cols:
            cols[name] = pa.array(values, pa.string())
    return pa.table(cols)


def _keys(records: pa.Table, fallback: str) -> tuple[list[str | None], bool]:
    """``(keys, from_ids)``: the building keys, or ``fallback`` column when none has one."""
    keys = records.column("building_key").to_pylist()
    if any(k is not None for k in keys):
        return keys, True
    return records.column(fallback).to_pylist(), False


def index_folder(
    fmt: str, path: str | os.PathLike[str], id_column: str | None, keep: Sequence[str]
) -> SourceIndex:
    """The index of an image folder, CSV/JSONL list file or Mapillary download.

    Args:
        fmt: ``imagefolder`` or ``mapillary``.
        path: the folder, or the list file.
        id_column: the key column (``None``: ``building_id``/``OSMID``/``osm_id``, else the
            sub-folder, else the image path).
        keep: metadata columns to pass through.

    Raises:
        SbeError: no images; a list/metadata file without a path column or without
            ``id_column``; a ``keep`` column that no metadata file has.
    """
    plan = plan_folder(fmt, path, id_column)
    root = plan.root.resolve()
    _check_keep(keep, list(plan.extra), str(path))
    rec = plan.records
    keys, from_ids = _keys(rec, "file")
    if from_ids:
        id_source = id_column or ("sub-folder" if not plan.metadata_files else "id column")
    else:
        id_source = "path"
    n = rec.num_rows
    kept = {c: plan.extra[c] for c in keep if c in plan.extra}
    table = _index_table(rec, keys, "file", [str(root)] * n, np.zeros(n, np.int64), plan.size, kept)
    images = [root / f for f in rec.column("file").to_pylist()]
    files = sorted({*(Path(m).resolve() for m in plan.metadata_files), *images})
    return SourceIndex(table, files, _listing(files, root), id_source, plan.skips, plan.warns)


def index_shards(shards: Sequence[Path], id_column: str | None, keep: Sequence[str]) -> SourceIndex:
    """The index of WebDataset shards (img2dataset layout), streamed without reading images.

    A sample's metadata is its ``.json`` member, else its row in the parquet beside the shard.

    Raises:
        SbeError: a shard is not a tar; ``id_column`` is in no sample's metadata; a ``keep``
            column is in none either.
    """
    skips, warns = SkipLog(), SkipLog()
    recs: list[dict[str, Any]] = []
    container: list[str] = []
    offset: list[int] = []
    size: list[int] = []
    extra: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    files: list[Path] = []
    cols_cache: dict[tuple[str, ...], Columns] = {}
    for shard in shards:
        shard = Path(shard).resolve()
        files.append(shard)
        side_path = shard.with_suffix(".parquet")
        if side_path.is_file():
            files.append(side_path)
        side = sidecar(shard)
        stream = TarStream(shard)
        try:
            samples = list(iter_samples(stream, skips, read_images=False))
        except NotATarError as e:
            raise SbeError(f"{shard}: not a WebDataset shard ({e})") from None
        if stream.damage is not None:
            skips.add("truncated_archive", f"{shard.name}: {stream.damage}")
        for s in sorted(samples, key=lambda s: s.seq):
            if s.member is None:
                continue  # a .json without image: img2dataset's failed downloads
            where = f"{shard.name}:{s.member}"
            if s.size > MAX_IMAGE_BYTES:
                skips.add("corrupt_image", f"{where}: {s.size:,} bytes, over the limit")
                continue
            meta, cols = sample_columns(s, side, cols_cache, id_column, warns, where)
            try:
                rec = record_from_row(meta, s.member, cols, warns, where)
            except RowSkip as e:
                skips.add(e.reason, f"{where}: {e.detail}")
                continue
            rec["image_key"] = str(meta.get("key") or s.key.rsplit("/", 1)[-1])
            names.update(dict.fromkeys(meta))
            recs.append(rec)
            container.append(str(shard))
            offset.append(s.offset)
            size.append(s.size)
            extra.append(meta)
    if not recs:
        raise SbeError(f"no images in {', '.join(str(s) for s in shards)}")
    if id_column and id_column not in names:
        raise SbeError(
            f"{shards[0].parent}: no sample has {id_column!r} for --id-column "
            f"(metadata keys: {', '.join(names) or 'none'})"
        )
    _check_keep(keep, list(names), str(shards[0].parent))
    rec_table = records_table(recs)
    keys, from_ids = _keys(rec_table, "image_key")
    kept = {c: [_text(r.get(c)) for r in extra] for c in keep if c in names}
    table = _index_table(
        rec_table,
        keys,
        "tar",
        container,
        np.asarray(offset, np.int64),
        np.asarray(size, np.int64),
        kept,
    )
    id_source = (id_column or "id column") if from_ids else "key"
    return SourceIndex(table, files, _listing(files, None), id_source, skips, warns)
