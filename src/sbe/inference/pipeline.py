"""Chunk tables in, embedding parts out: threaded decoding overlapped with the model, per-image
failures, one atomic part per chunk.

Decoding runs in a thread pool (Pillow releases the GIL) a bounded window ahead of the model
(:func:`sbe.models.backbones.pipeline.run_ahead`, the engine's core, with
:meth:`Embedder.decode_or_reason` per image), so the model never waits for images and memory stays
at a few batches. Model batches may span two chunks; a chunk's part is written as soon as its last
row is embedded.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sbe.data.tarstream import ImageReadError, read_image
from sbe.inference.plan import IMAGE_BYTES, IS_VALID, Chunk
from sbe.models.backbones.pipeline import run_ahead
from sbe.models.published.embedder import Embedder
from sbe.storage import fixed_size_list, read_part_meta, write_parquet_atomic, write_part
from sbe.storage.artifacts import EmbedDir
from sbe.storage.schemas import OSMID, embed_failures_schema, embed_schema

#: columns of a chunk table that locate each image when it has no ``image_bytes``
#: (``sbe.data.tarstream.read_image(tar_file, member_name, tar_offset, tar_size)``)
REFERENCE_COLUMNS = ("tar_file", "member_name", "tar_offset", "tar_size")
PARTS_DIR = EmbedDir.PARTS
FAILURES_DIR = EmbedDir.FAILURES

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _where(container: str, member: str) -> str:
    return os.path.join(container, member) if os.path.isdir(container) else f"{container}:{member}"


def read_reference(container: str, member: str, offset: int, size: int) -> bytes | str:
    """An image's bytes by its reference, or why they cannot be read: ``missing_image: <path>
    does not exist`` when the file (or shard) is gone, else ``unreadable_image: <path>: ...``."""
    try:
        return read_image(container, member, offset, size)
    except ImageReadError as e:
        gone = os.path.join(container, member) if os.path.isdir(container) else container
        if not os.path.exists(gone):
            return f"missing_image: {gone} does not exist"
        return f"unreadable_image: {_where(container, member)}: {e}"


def reason_kind(reason: str) -> str:
    """The category of a failure message (``"UnidentifiedImageError: cannot ..."`` -> its class)."""
    head = reason.split(":", 1)[0].strip()
    return head if head and " " not in head else reason


@dataclass
class ChunkResult:
    """What one chunk produced (also stored in its part's footer, so a rerun can report it)."""

    name: str
    start: int
    stop: int
    embedded: int
    failed: int
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        return {
            "embedded": self.embedded,
            "failed": self.failed,
            "reasons": self.reasons,
            "examples": self.examples,
        }


class ChunkWriter:
    """Writes (and recognises finished) parts of one embedding output folder.

    Args:
        out_dir: the output folder (``parts/`` and ``failures/`` go under it).
        osmid_type: Arrow type of the input's OSMID column (kept as is).
        dim: embedding size.
        meta: provenance stored in every part footer (input and model fingerprints, settings);
            a part is finished only if its footer carries the same values.
    """

    def __init__(
        self, out_dir: str | Path, osmid_type: pa.DataType, dim: int, meta: dict[str, Any]
    ) -> None:
        self.out_dir = Path(out_dir)
        self.schema = embed_schema(osmid_type, dim)
        self.failures_schema = embed_failures_schema(osmid_type)
        self.dim = dim
        self.meta = dict(meta)

    def part_path(self, chunk: Chunk) -> Path:
        return self.out_dir / PARTS_DIR / f"{chunk.name}.parquet"

    def failures_path(self, chunk: Chunk) -> Path:
        return self.out_dir / FAILURES_DIR / f"{chunk.name}.parquet"

    def _expected(self, chunk: Chunk) -> dict[str, Any]:
        return {**self.meta, "rows": [chunk.start, chunk.stop], "selected": chunk.selected}

    def finished(self, chunk: Chunk) -> ChunkResult | None:
        """The recorded result if the chunk's part exists and is current, else ``None``."""
        path = self.part_path(chunk)
        if not path.is_file():
            return None
        meta = read_part_meta(path)
        if meta is None:
            return None
        expected = self._expected(chunk)
        if any(meta.get(k) != v for k, v in _jsonable(expected).items()):
            return None
        if meta.get("failed", 0) and not self.failures_path(chunk).is_file():
            return None
        return ChunkResult(
            chunk.name,
            chunk.start,
            chunk.stop,
            int(meta.get("embedded", 0)),
            int(meta.get("failed", 0)),
            dict(meta.get("reasons", {})),
            {k: list(v) for k, v in meta.get("examples", {}).items()},
        )

    def write(
        self,
        chunk: Chunk,
        osmid: pa.Array,
        positions: np.ndarray,
        embeddings: np.ndarray,
        failures: list[tuple[int, str]],
    ) -> ChunkResult:
        """Write the chunk's failures (if any) and then its part, each atomically.

        The part is written last: its presence means the chunk is complete.

        Args:
            chunk: the chunk.
            osmid: the chunk's OSMID column (all ``stop - start`` rows).
            positions: int64 (N,) positions within the chunk of the embedded rows.
            embeddings: float32 (N, D).
            failures: ``(position within the chunk, reason)`` of every failed row.
        """
        reasons: dict[str, int] = {}
        examples: dict[str, list[str]] = {}
        fpath = self.failures_path(chunk)
        if failures:
            fpos = np.array([p for p, _ in failures], dtype=np.int64)
            texts = [_ADDRESS.sub("", r) for _, r in failures]
            for p, t in zip(fpos, texts, strict=True):
                kind = reason_kind(t)
                reasons[kind] = reasons.get(kind, 0) + 1
                ex = examples.setdefault(kind, [])
                if len(ex) < 3:
                    ex.append(f"row {chunk.start + int(p)}: {t}")
            ftable = pa.table(
                {
                    OSMID: osmid.take(pa.array(fpos)),
                    "row_index": pa.array(fpos + chunk.start, pa.int64()),
                    "reason": pa.array(texts, pa.string()),
                },
                schema=self.failures_schema,
            )
            write_parquet_atomic(ftable, fpath)
        else:
            fpath.unlink(missing_ok=True)
        pos = np.asarray(positions, dtype=np.int64)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(len(pos), self.dim)
        table = pa.table(
            {
                OSMID: osmid.take(pa.array(pos)),
                "row_index": pa.array(pos + chunk.start, pa.int64()),
                "embedding": fixed_size_list(emb),
            },
            schema=self.schema,
        )
        result = ChunkResult(
            chunk.name, chunk.start, chunk.stop, len(pos), len(failures), reasons, examples
        )
        write_part(table, self.part_path(chunk), {**self._expected(chunk), **result.to_meta()})
        return result


def _jsonable(obj: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class _Open:
    """A chunk being embedded: its rows, the slots for their embeddings, and its failures."""

    def __init__(self, chunk: Chunk, table: pa.Table, dim: int, filter_valid: bool) -> None:
        self.chunk = chunk
        n = table.num_rows
        if filter_valid and IS_VALID in table.column_names:
            keep = pc.fill_null(table.column(IS_VALID), True).to_numpy(zero_copy_only=False)
            self.selected = np.flatnonzero(keep).astype(np.int64)
        else:
            self.selected = np.arange(n, dtype=np.int64)
        self.osmid = table.column(OSMID).combine_chunks()
        self.emb = np.empty((len(self.selected), dim), dtype=np.float32)
        self.good = np.zeros(len(self.selected), dtype=bool)
        self.failures: list[tuple[int, str]] = []
        self.remaining = len(self.selected)


def embed_chunks(
    embedder: Embedder,
    tables: Iterable[tuple[Chunk, pa.Table]],
    writer: ChunkWriter,
    *,
    filter_valid: bool = True,
    max_in_flight: int | None = None,
) -> Iterator[ChunkResult]:
    """Embed chunk tables and write their parts; yields each chunk's result in input order.

    Args:
        embedder: the loaded model.
        tables: ``(chunk, table)`` with columns ``OSMID``, maybe ``is_valid``, and either
            ``image_bytes`` (e.g. from :func:`sbe.inference.plan.read_chunks`) or the
            :data:`REFERENCE_COLUMNS` of each image, which is then read in the decode threads.
        writer: where parts go.
        filter_valid: skip rows whose ``is_valid`` is False.
        max_in_flight: images decoded ahead of the model (default: two batches + one per thread).

    Yields:
        :class:`ChunkResult` per chunk, after its part is on disk.
    """
    bs = embedder.batch_size
    window_cap = max_in_flight or (2 * bs + embedder.decode_workers)
    batch: list[tuple[_Open, int, np.ndarray]] = []
    open_chunks: deque[_Open] = deque()

    def tagged(st: _Open, j: int, data: bytes | None) -> tuple[_Open, int, np.ndarray | str]:
        return st, j, embedder.decode_or_reason(data)

    def tagged_ref(
        st: _Open, j: int, ref: tuple[str, str, int, int]
    ) -> tuple[_Open, int, np.ndarray | str]:
        data = read_reference(*ref)
        if isinstance(data, str):
            return st, j, data
        out = embedder.decode_or_reason(data)
        if isinstance(out, str):  # one category, each example naming its file
            out = f"corrupt_image: {_where(ref[0], ref[1])}: {out}"
        return st, j, out

    def jobs() -> Iterator[tuple[Any, tuple[Any, ...]]]:
        # lazily: a chunk's table is read, and its _Open made, when the window reaches it
        for chunk, table in tables:
            st = _Open(chunk, table, writer.dim, filter_valid)
            open_chunks.append(st)
            if IMAGE_BYTES in table.column_names:
                images = table.column(IMAGE_BYTES).to_pylist()
                for j, row in enumerate(st.selected):
                    yield tagged, (st, j, images[row])
                del images
                continue
            refs = list(zip(*(table.column(c).to_pylist() for c in REFERENCE_COLUMNS), strict=True))
            for j, row in enumerate(st.selected):
                yield tagged_ref, (st, j, refs[row])

    def run_batch() -> None:
        if not batch:
            return
        emb = embedder.embed_uint8(np.stack([a for _, _, a in batch]))
        for (st, j, _), e in zip(batch, emb, strict=True):
            st.emb[j] = e
            st.good[j] = True
            st.remaining -= 1
        batch.clear()

    def ready() -> Iterator[ChunkResult]:
        while open_chunks and open_chunks[0].remaining == 0:
            st = open_chunks.popleft()
            yield writer.write(
                st.chunk, st.osmid, st.selected[st.good], st.emb[st.good], st.failures
            )

    with ThreadPoolExecutor(max(1, embedder.decode_workers), thread_name_prefix="decode") as pool:
        with closing(run_ahead(pool, jobs(), window_cap)) as decoded:
            for st, j, res in decoded:
                if isinstance(res, str):
                    st.failures.append((int(st.selected[j]), res))
                    st.remaining -= 1
                else:
                    batch.append((st, j, res))
                    if len(batch) >= bs:
                        run_batch()
                yield from ready()
        run_batch()
        yield from ready()
