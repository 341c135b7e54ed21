"""An index directory: ``index.faiss`` + ``ids.parquet`` + ``index.json``.

``index.json`` (:class:`IndexInfo`) is written last and names the build that the other two files
belong to (the side table carries the same build id; the faiss file's size is recorded), so a
directory left by a build killed mid-write fails to load with a clear message.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import faiss
import pyarrow as pa
from pydantic import BaseModel, Field

from sbe import __version__
from sbe.errors import SbeError
from sbe.index.faiss_index import read_index, write_index
from sbe.index.table import read_side_table, write_side_table
from sbe.storage import write_json_atomic
from sbe.storage.artifacts import IndexDir

INDEX_FILE = IndexDir.INDEX
IDS_FILE = IndexDir.IDS
INFO_FILE = IndexDir.INFO
FORMAT_VERSION = 1


class IndexInfo(BaseModel):
    """What ``index.json`` records about an index.

    Attributes:
        build_id: random id shared with the side table's footer.
        kind: ``exact`` (IndexFlatIP) or ``hnsw`` (IndexHNSWFlat, inner product).
        metric: always ``inner_product`` on L2-normalised vectors (cosine similarity).
        dim, count: vector dimension and number of vectors.
        id_column, id_type: the id column of the side table and its Arrow type.
        unique_ids: distinct ids (fewer than ``count`` for image-level indexes keyed by building).
        metadata_columns: side-table columns besides the id.
        location_columns: ``[lat, lon]`` column names, or ``None``.
        parameters: build parameters (kind, M, efConstruction, efSearch, threshold).
        build_seconds: time to add the vectors to faiss; read_seconds: time to read the source.
        memory: bytes: ``vectors``, ``graph``, ``total`` (index arrays), ``file`` (index.faiss),
            ``peak_rss`` (peak resident memory of the building process).
        source: input path (relative to the index folder), file count, fingerprint hash, stored
            embedding dtype.
        model_dir: the published model that made the vectors, when known (used by image
            queries), relative to the index folder (older indexes hold an absolute path; both
            resolve with :meth:`model_path`).
        backbone: backbone identity recorded by the source's stage, when known.
    """

    format_version: int = FORMAT_VERSION
    build_id: str
    kind: Literal["exact", "hnsw"]
    faiss_class: str
    metric: Literal["inner_product"] = "inner_product"
    normalized: bool = True
    dim: int
    count: int
    id_column: str
    id_type: str
    unique_ids: int
    embedding_column: str = "embedding"
    metadata_columns: list[str] = Field(default_factory=list)
    location_columns: list[str] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    build_seconds: float = 0.0
    read_seconds: float = 0.0
    memory: dict[str, int] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    model_dir: str | None = None
    backbone: dict[str, Any] | None = None
    sbe_version: str = __version__
    faiss_version: str = faiss.__version__
    created_at: str = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def model_path(self, index_dir: str | Path) -> Path | None:
        """The recorded model folder as a path (a relative one is under ``index_dir``)."""
        return None if self.model_dir is None else Path(index_dir) / self.model_dir


def save_index_dir(
    out_dir: str | Path, index: faiss.Index, table: pa.Table, info: IndexInfo
) -> IndexInfo:
    """Write the three files, ``index.json`` last.

    Args:
        out_dir: the index directory (created if missing).
        index: faiss index; id i <-> row i of ``table``.
        table: side table (id + metadata columns).
        info: the record to write; ``memory["file"]`` is filled in.

    Returns:
        The written :class:`IndexInfo`.
    """
    if index.ntotal != table.num_rows:
        raise ValueError(
            f"index has {index.ntotal} vectors but the side table {table.num_rows} rows"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    file_bytes = write_index(index, out / INDEX_FILE)
    write_side_table(table, out / IDS_FILE, info.build_id)
    info = info.model_copy(update={"memory": {**info.memory, "file": file_bytes}})
    write_json_atomic(out / INFO_FILE, info.model_dump(mode="json"))
    return info


def load_info(index_dir: str | Path) -> IndexInfo:
    """Read ``index.json``.

    Raises:
        SbeError: missing or unreadable.
    """
    path = Path(index_dir) / INFO_FILE
    if not path.is_file():
        raise SbeError(
            f"{index_dir} is not an index directory (no {INFO_FILE}); run `sbe index build`"
        )
    try:
        return IndexInfo.model_validate_json(path.read_text())
    except ValueError as e:
        raise SbeError(f"{path} is not a valid index record: {e}") from None


def load_index_dir(index_dir: str | Path) -> tuple[faiss.Index, pa.Table, IndexInfo]:
    """Read an index directory and check its three files belong together.

    Returns:
        ``(index, side_table, info)``.

    Raises:
        SbeError: a file is missing or comes from another build.
    """
    d = Path(index_dir)
    info = load_info(d)
    index_path = d / INDEX_FILE
    if not index_path.is_file() or not (d / IDS_FILE).is_file():
        raise SbeError(
            f"{d} is incomplete (missing {INDEX_FILE} or {IDS_FILE}); rerun `sbe index build`"
        )
    recorded = info.memory.get("file")
    if recorded is not None and index_path.stat().st_size != recorded:
        raise SbeError(
            f"{index_path} does not match {INFO_FILE} (size {index_path.stat().st_size} != "
            f"{recorded}); the index directory is incomplete: rerun `sbe index build`"
        )
    table = read_side_table(d / IDS_FILE, info.build_id)
    index = read_index(index_path)
    if index.ntotal != info.count or table.num_rows != info.count or index.d != info.dim:
        raise SbeError(f"{d}: index, side table and {INFO_FILE} disagree; rerun `sbe index build`")
    return index, table, info
