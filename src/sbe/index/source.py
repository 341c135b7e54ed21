"""Embedding sources: one parquet file or a folder of them, read into ids, metadata and a matrix.

Every dataset the pipeline writes with an ``embedding`` column is a source: an embeddings
dataset (``state.json`` + ``parts/*.parquet`` with ``OSMID``, ``row_index``), the buildings file
from ``sbe aggregate`` (``OSMID``, ``image_count``, ``lat``, ``lon``) and a split file
(``building_id``, ``image_id``, ``target_lat``, ``target_lon``). Vectors are streamed record batch
by record batch into one preallocated float32 matrix, so reading never builds Python lists and
peak memory is the matrix plus one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.storage import SkipLog, load_manifest, to_numpy_matrix

#: id columns tried in order when none is given
ID_CANDIDATES = ("OSMID", "building_id", "image_id")
#: (lat, lon) column pairs tried in order for locations
LOCATION_CANDIDATES = (("lat", "lon"), ("target_lat", "target_lon"))
#: other columns carried as metadata when present (besides the id and the location)
EXTRA_METADATA = ("building_id", "image_id", "image_count", "row_index")

DEFAULT_BATCH_ROWS = 65_536


def find_parquet_files(path: str | Path) -> list[Path]:
    """The parquet files of a source, in a stable order.

    Args:
        path: a ``.parquet`` file, or a folder searched recursively (so ``DIR/parts/*.parquet``
            is found from ``DIR``). Files or folders whose name starts with ``.`` or ``_``
            (temps, locks, manifests) are ignored.

    Returns:
        Sorted list of files.

    Raises:
        SbeError: the path does not exist or holds no parquet file.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise SbeError(f"input not found: {p}")
    files = [
        f
        for f in sorted(p.rglob("*.parquet"))
        if f.is_file() and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
    ]
    if not files:
        raise SbeError(f"no parquet files under {p}")
    return files


@dataclass(frozen=True)
class EmbeddingSource:
    """What will be read from a source; see :func:`open_source`.

    Attributes:
        files: parquet files holding the embedding column.
        skipped_files: parquet files without it (e.g. an embed stage's ``failures`` part).
        id_column: column identifying a row (its Arrow type is kept).
        id_type: Arrow type of the id column.
        embedding_column: the ``fixed_size_list<float16|float32, dim>`` column.
        dim: embedding dimension D.
        dtype: value type of the embedding column as stored (``float16`` or ``float32``).
        metadata_columns: other columns carried beside the id, source names.
        location_columns: ``(lat, lon)`` column names within ``metadata_columns``, or ``None``.
        num_rows: rows in ``files`` (before skips).
    """

    files: list[Path]
    skipped_files: list[Path]
    id_column: str
    id_type: pa.DataType
    embedding_column: str
    dim: int
    dtype: str
    metadata_columns: list[str] = field(default_factory=list)
    location_columns: tuple[str, str] | None = None
    num_rows: int = 0

    @property
    def columns(self) -> list[str]:
        """Id then metadata columns: the side table's columns, in order."""
        return [self.id_column, *self.metadata_columns]


def open_source(
    path: str | Path,
    *,
    id_column: str | None = None,
    embedding_column: str = "embedding",
    metadata_columns: Sequence[str] | None = None,
) -> EmbeddingSource:
    """Inspect a source's schemas (footers only) and decide what to read.

    Args:
        path: a parquet file or a folder of them (see :func:`find_parquet_files`).
        id_column: id column; ``None`` picks the first of ``OSMID``, ``building_id``, ``image_id``.
        embedding_column: name of the fixed-size embedding column.
        metadata_columns: columns to carry beside the id; ``None`` means automatic: the location
            (``lat``/``lon``, else ``target_lat``/``target_lon``) and any of ``building_id``,
            ``image_id``, ``image_count``, ``row_index`` that exist.

    Returns:
        The :class:`EmbeddingSource`.

    Raises:
        SbeError: no file has the embedding column, a column is missing or has the wrong type,
            or files disagree on the dimension.
    """
    all_files = find_parquet_files(path)
    schemas = {f: pq.read_schema(f) for f in all_files}
    files = [f for f in all_files if embedding_column in schemas[f].names]
    skipped = [f for f in all_files if f not in files]
    if not files:
        raise SbeError(f"no parquet file under {path} has an {embedding_column!r} column")
    first = schemas[files[0]]

    if id_column is None:
        id_column = next((c for c in ID_CANDIDATES if c in first.names), None)
        if id_column is None:
            raise SbeError(
                f"{files[0]}: no id column found (tried {', '.join(ID_CANDIDATES)}); "
                "name one with --id-column"
            )

    emb_type = first.field(embedding_column).type
    if not pa.types.is_fixed_size_list(emb_type) or emb_type.value_type not in (
        pa.float16(),
        pa.float32(),
    ):
        raise SbeError(
            f"{files[0]}: column {embedding_column!r} must be fixed_size_list<float16|float32>, "
            f"got {emb_type}"
        )
    dim = emb_type.list_size

    location: tuple[str, str] | None = None
    if metadata_columns is None:
        location = next(
            (pair for pair in LOCATION_CANDIDATES if all(c in first.names for c in pair)), None
        )
        extra = [c for c in EXTRA_METADATA if c in first.names and c != id_column]
        metadata = [*(location or ()), *extra]
    else:
        metadata = [c for c in metadata_columns if c != id_column]
        location = next(
            (pair for pair in LOCATION_CANDIDATES if all(c in metadata for c in pair)), None
        )

    num_rows = 0
    for f in files:
        schema = schemas[f]
        for col in (id_column, *metadata):
            if col not in schema.names:
                raise SbeError(
                    f"{f}: column {col!r} not found (columns: {', '.join(schema.names)})"
                )
        t = schema.field(embedding_column).type
        if not pa.types.is_fixed_size_list(t) or t.list_size != dim:
            raise SbeError(f"{f}: {embedding_column!r} is {t}, but {files[0]} has dimension {dim}")
        num_rows += pq.ParquetFile(f).metadata.num_rows

    return EmbeddingSource(
        files=files,
        skipped_files=skipped,
        id_column=id_column,
        id_type=first.field(id_column).type,
        embedding_column=embedding_column,
        dim=dim,
        dtype=np.dtype(emb_type.value_type.to_pandas_dtype()).name,
        metadata_columns=metadata,
        location_columns=location,
        num_rows=num_rows,
    )


def read_source(
    source: EmbeddingSource,
    *,
    skips: SkipLog | None = None,
    normalize: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """Read ids, metadata and vectors, dropping rows that cannot be indexed.

    Rows with a null id or null embedding, a non-finite value, or an all-zero vector are skipped
    and counted in ``skips`` (reasons ``null id``, ``null embedding``, ``non-finite embedding``,
    ``zero embedding``).

    Args:
        source: from :func:`open_source`.
        skips: where skipped rows are counted (with a few ids as examples).
        normalize: L2-normalise the vectors (inputs are meant to be normalised already, but
            float16 storage leaves norms a little off 1).
        batch_rows: record batch size while streaming.
        on_rows: called with the number of rows read after each batch (progress).

    Returns:
        ``(table, vectors)``: an Arrow table with :attr:`EmbeddingSource.columns` (row i
        describes vector i) and a C-contiguous float32 array of shape (N, D).
    """
    skips = skips if skips is not None else SkipLog()
    vectors = np.empty((source.num_rows, source.dim), dtype=np.float32)
    pieces: list[pa.Table] = []
    n = 0
    read_cols = [*source.columns, source.embedding_column]
    for f in source.files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=read_cols):
            seen = batch.num_rows
            batch = _drop_nulls(batch, source, skips)
            m = batch.num_rows
            if m:
                # numpy casts float16 -> float32 on assignment; no intermediate float32 copy
                vectors[n : n + m] = to_numpy_matrix(batch.column(source.embedding_column))
                pieces.append(pa.Table.from_batches([batch.drop_columns(source.embedding_column)]))
                n += m
            if on_rows is not None:
                on_rows(seen)
    vectors = vectors[:n]
    if pieces:
        try:
            table = pa.concat_tables(pieces, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SbeError(f"input files disagree on column types: {e}") from None
    else:
        table = pa.schema([pq.read_schema(source.files[0]).field(c) for c in source.columns])
        table = table.empty_table()

    sq_norms = np.einsum("ij,ij->i", vectors, vectors)
    bad = ~np.isfinite(sq_norms) | (sq_norms == 0)
    if bad.any():
        ids = table.column(source.id_column)
        for reason, mask in (
            ("non-finite embedding", ~np.isfinite(sq_norms)),
            ("zero embedding", sq_norms == 0),
        ):
            rows = np.flatnonzero(mask)
            for r in rows[:5]:
                skips.add(reason, str(ids[int(r)].as_py()), n=0)
            if len(rows):
                skips.add(reason, n=len(rows))
        keep = np.flatnonzero(~bad)
        vectors = vectors[keep]
        sq_norms = sq_norms[keep]
        table = table.take(pa.array(keep))
    if normalize and len(vectors):
        vectors /= np.sqrt(sq_norms, dtype=np.float32)[:, None]
    return table.combine_chunks(), np.ascontiguousarray(vectors)


def _drop_nulls(batch: pa.RecordBatch, source: EmbeddingSource, skips: SkipLog) -> pa.RecordBatch:
    ids = batch.column(source.id_column)
    emb = batch.column(source.embedding_column)
    if not ids.null_count and not emb.null_count:
        return batch
    null_id = pc.is_null(ids)
    null_emb = pc.and_(pc.is_null(emb), pc.invert(null_id))
    if ids.null_count:
        skips.add("null id", n=pc.sum(null_id).as_py())
    if emb.null_count:
        examples = ids.filter(null_emb)
        for v in examples[:5]:
            skips.add("null embedding", str(v.as_py()), n=0)
        skips.add("null embedding", n=len(examples))
    return batch.filter(pc.and_(pc.invert(null_id), pc.is_valid(emb)))


def source_provenance(path: str | Path, max_hops: int = 3) -> dict[str, Any]:
    """What made a source's vectors, read from the stage records beside it.

    Looks at ``state.json`` and ``_manifest.json`` in the source folder (the file's folder for a
    file) and follows the manifest's ``input`` back (buildings -> embeddings) up to ``max_hops``
    folders. Recognised: a published model folder (``model_dir``, from an embed stage's
    ``state.json`` identity or its config's ``model``) and a backbone identity (``backbone``).

    Returns:
        ``{"model_dir": str | None, "backbone": dict | None}``.
    """
    found: dict[str, Any] = {"model_dir": None, "backbone": None}
    p = Path(path)
    folder: Path | None = p if p.is_dir() else p.parent
    for _ in range(max_hops):
        if folder is None or not folder.is_dir():
            break
        state = _read_json(folder / "state.json")
        manifest = load_manifest(folder)
        records = [state]
        if manifest is not None:
            records += [manifest.extra, manifest.config]
        for rec in records:
            model = rec.get("model")
            if found["model_dir"] is None:
                if isinstance(rec.get("model_dir"), str):
                    found["model_dir"] = rec["model_dir"]
                elif isinstance(model, dict) and isinstance(model.get("model_dir"), str):
                    found["model_dir"] = model["model_dir"]
                elif isinstance(model, str) and manifest is not None and manifest.stage == "embed":
                    found["model_dir"] = model
            if found["backbone"] is None:
                if isinstance(rec.get("backbone"), dict):
                    found["backbone"] = rec["backbone"]
                elif isinstance(model, dict) and isinstance(model.get("backbone"), dict):
                    found["backbone"] = model["backbone"]
        if all(v is not None for v in found.values()) or manifest is None:
            break
        nxt = manifest.config.get("input")
        if isinstance(nxt, list):  # e.g. aggregate over several embed shards
            nxt = nxt[0] if nxt else None
        folder = Path(nxt) if isinstance(nxt, str) else None
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
