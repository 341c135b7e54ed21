"""Faiss indexes over L2-normalised vectors: exact inner product when small, HNSW when large.

On unit vectors inner product is cosine similarity, so both kinds rank by the same number:
``IndexFlatIP`` scans every vector (exact, cost linear in N), ``IndexHNSWFlat`` with
``METRIC_INNER_PRODUCT`` walks a proximity graph (approximate, cost about logarithmic in N;
``ef_search`` trades recall for latency and can be changed at query time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from sbe.storage import atomic_path

IndexKind = Literal["exact", "hnsw"]

#: vectors added per call while building, so progress can be reported
ADD_CHUNK = 50_000


@dataclass(frozen=True)
class IndexParams:
    """How to build an index.

    Attributes:
        kind: ``exact`` (``IndexFlatIP``), ``hnsw`` (``IndexHNSWFlat``), or ``auto``: exact up to
            ``exact_max_rows`` vectors, HNSW above.
        exact_max_rows: the ``auto`` threshold, in vectors.
        hnsw_m: HNSW graph degree M (neighbours per node per layer; layer 0 has 2M).
        ef_construction: HNSW candidate list size while building (larger: better graph, slower).
        ef_search: HNSW candidate list size while searching (larger: higher recall, slower).
    """

    kind: Literal["auto", "exact", "hnsw"] = "auto"
    exact_max_rows: int = 100_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64

    def resolve(self, n: int) -> IndexKind:
        """The kind used for ``n`` vectors."""
        if self.kind != "auto":
            return self.kind
        return "exact" if n <= self.exact_max_rows else "hnsw"

    def recorded(self, kind: IndexKind) -> dict[str, int | str]:
        """The parameters that matter for ``kind``, as saved in ``index.json``."""
        if kind == "exact":
            return {"kind": kind, "exact_max_rows": self.exact_max_rows}
        d = asdict(self)
        d["kind"] = kind
        return d


def build_index(
    vectors: np.ndarray,
    params: IndexParams,
    *,
    on_added: Callable[[int], None] | None = None,
) -> faiss.Index:
    """Build an inner-product index over ``vectors``.

    Args:
        vectors: C-contiguous float32 array (N, D), rows L2-normalised.
        params: :class:`IndexParams`; ``params.resolve(N)`` picks the kind.
        on_added: called with the number of vectors added after each chunk (progress).

    Returns:
        A faiss index whose id i is row i of ``vectors``.
    """
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ValueError(f"expected float32 (N, D), got {vectors.dtype} {vectors.shape}")
    vectors = np.ascontiguousarray(vectors)
    n, d = vectors.shape
    kind = params.resolve(n)
    if kind == "exact":
        index: faiss.Index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    for start in range(0, n, ADD_CHUNK):
        chunk = vectors[start : start + ADD_CHUNK]
        index.add(chunk)
        if on_added is not None:
            on_added(len(chunk))
    return index


def index_kind(index: faiss.Index) -> IndexKind:
    """``exact`` or ``hnsw`` for an index made by :func:`build_index`."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexFlat):
        return "exact"
    raise TypeError(f"unsupported faiss index {type(index).__name__}")


def set_ef_search(index: faiss.Index, ef_search: int) -> None:
    """Set HNSW's search-time candidate list size (no-op for exact indexes)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(ef_search)


def index_nbytes(index: faiss.Index) -> dict[str, int]:
    """Memory held by the index's arrays, in bytes.

    Returns:
        ``{"vectors": ..., "graph": ..., "total": ...}``; ``graph`` is 0 for exact indexes.
    """
    index = faiss.downcast_index(index)
    vec = index.ntotal * index.d * 4
    graph = 0
    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        # faiss's bundled stubs omit HNSW.neighbors/offsets (both exist at runtime).
        graph = (
            h.neighbors.size() * 4  # type: ignore[attr-defined]
            + h.offsets.size() * 8  # type: ignore[attr-defined]
            + h.levels.size() * 4
            + h.assign_probas.size() * 8
            + h.cum_nneighbor_per_level.size() * 4
        )
    return {"vectors": vec, "graph": int(graph), "total": int(vec + graph)}


def write_index(index: faiss.Index, path: str | Path) -> int:
    """Write ``index`` atomically (temp file + rename).

    Returns:
        The file size in bytes.
    """
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Path(path).stat().st_size


def read_index(path: str | Path) -> faiss.Index:
    """Read an index written by :func:`write_index`."""
    return faiss.read_index(str(path))


@contextlib.contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """Temporarily set faiss's OpenMP thread count (``None`` or 0: leave it)."""
    if not n:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)
