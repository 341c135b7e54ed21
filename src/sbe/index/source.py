"""Embedding sources: one parquet file or a folder of them, read into ids, metadata and a matrix.

Every dataset the pipeline writes with an ``embedding`` column is a source: an embeddings
dataset (``state.json`` + ``parts/*.parquet`` with ``OSMID``, ``row_index``), the buildings file
from ``sbe aggregate`` (``OSMID``, ``image_count``, ``lat``, ``lon``) and a split file
(``building_id``, ``image_id``, ``target_lat``, ``target_lon``). Vectors are streamed record batch
by record batch into one preallocated float32 matrix, so reading never builds Python lists and
peak memory is the matrix plus one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.storage import SkipLog, to_numpy_matrix
from sbe.storage.artifacts import source_dir

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
        id_column: column identifying a row (its Arrow type is kept; dictionaries are decoded).
        id_type: Arrow type of the id column (the value type of a dictionary-encoded one).
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
        id_type=value_type(first.field(id_column).type),
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

    Rows with a null, NaN or infinite id, a null embedding, a non-finite value, or an all-zero
    vector are skipped and counted in ``skips`` (reasons ``null id``, ``NaN or infinite id``,
    ``null embedding``, ``non-finite embedding``, ``zero embedding``). Dictionary-encoded columns
    are decoded to their values (files may carry different dictionaries).

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
            batch = _drop_nulls(_decode_dictionaries(batch), source, skips)
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
        schema = pq.read_schema(source.files[0])
        fields = [pa.field(c, value_type(schema.field(c).type)) for c in source.columns]
        table = pa.schema(fields).empty_table()

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


def value_type(t: pa.DataType) -> pa.DataType:
    """The type a column is read as: a dictionary-encoded column becomes its values."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _decode_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    if not any(pa.types.is_dictionary(t) for t in batch.schema.types):
        return batch
    columns = [
        pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c
        for c in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _drop_nulls(batch: pa.RecordBatch, source: EmbeddingSource, skips: SkipLog) -> pa.RecordBatch:
    ids = batch.column(source.id_column)
    emb = batch.column(source.embedding_column)
    nonfinite = None
    if pa.types.is_floating(ids.type):
        # a NaN or infinite id names nothing (NaN never equals itself): drop it like a null
        nonfinite = pc.invert(pc.fill_null(pc.is_finite(ids), True))
        if not pc.any(nonfinite).as_py():
            nonfinite = None
    if not ids.null_count and not emb.null_count and nonfinite is None:
        return batch
    null_id = pc.is_null(ids)
    if ids.null_count:
        skips.add("null id", n=pc.sum(null_id).as_py())
    if nonfinite is not None:
        skips.add("NaN or infinite id", n=pc.sum(nonfinite).as_py())
        null_id = pc.or_(null_id, nonfinite)
    null_emb = pc.and_(pc.is_null(emb), pc.invert(null_id))
    if emb.null_count:
        examples = ids.filter(null_emb)
        for v in examples[:5]:
            skips.add("null embedding", str(v.as_py()), n=0)
        if len(examples):
            skips.add("null embedding", n=len(examples))
    return batch.filter(pc.and_(pc.invert(null_id), pc.is_valid(emb)))


def source_provenance(path: str | Path) -> dict[str, Any]:
    """What made a source's vectors, as the stage that wrote it recorded in its manifest.

    The one place read is the ``_manifest.json`` in the source folder (the file's folder for a
    file), through :class:`~sbe.storage.artifacts.ArtifactDir`: ``extra["model"]["model_dir"]``,
    the published model that ``sbe embed`` records and ``sbe aggregate`` passes on (relative to
    that folder; an older absolute one is rebased when the work folder moved), and the backbone
    of the manifest's lineage (else ``extra["model"]["backbone"]`` or ``extra["backbone"]``).

    Returns:
        ``{"model_dir": str | None, "backbone": dict | None}`` (``model_dir`` absolute).
    """
    folder = source_dir(path)
    found: dict[str, Any] = {"model_dir": None, "backbone": None}
    manifest = folder.manifest()
    if manifest is None:
        return found
    model = manifest.extra.get("model")
    if isinstance(model, dict) and isinstance(model.get("model_dir"), str):
        model_dir = folder.resolve(model["model_dir"])
        found["model_dir"] = str(model_dir.resolve()) if model_dir is not None else None
    backbone = folder.backbone()
    found["backbone"] = backbone.to_dict() if backbone is not None else None
    return found
