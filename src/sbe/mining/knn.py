"""k nearest neighbours of *other identities*, with faiss on all cores.

Small sets use exact search (``IndexFlatL2``). Above ``exact_max_rows`` an inverted-file index
(``IndexIVFFlat``) is trained on a seeded sample, and its ``nprobe`` is the smallest value of the
ladder 1, 2, 3, 4, 6, 8, 12, ... whose measured recall against exact search, on a seeded sample of
queries, reaches ``target_recall``; the recall is recorded so the approximation is never silent.
If that would mean scanning more than ``max_scan_fraction`` of the lists (data without cluster
structure, where no inverted file helps), exact search is used instead and the reason recorded.

Excluding the anchor's own identity is exact without a per-anchor loop: an anchor whose identity
has ``s`` images in the set can lose at most ``s`` results (itself included), so searching
``k + s`` (rounded up to a power of two to batch anchors) always leaves ``k`` others whenever that
many exist; the kept results are then packed left in one vectorised pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from sbe.device import usable_cores

#: cap on (anchors x results) searched at once: bounds memory to ~12 bytes x this
_MAX_RESULTS_BLOCK = 8_000_000


#: CPU cores this process may run on (affinity-aware); kept under its old name
available_cores = usable_cores


def set_threads(threads: int = 0) -> int:
    """Let faiss use ``threads`` OpenMP threads (0 = every available core); returns the number."""
    n = threads or available_cores()
    faiss.omp_set_num_threads(n)
    return n


@contextlib.contextmanager
def faiss_threads(threads: int = 0) -> Iterator[int]:
    """:func:`set_threads` for the duration of a block, then restore the previous setting."""
    previous = faiss.omp_get_max_threads()
    try:
        yield set_threads(threads)
    finally:
        faiss.omp_set_num_threads(previous)


@dataclass
class IndexInfo:
    """How a :class:`VectorIndex` searches, for manifests and footers."""

    kind: str  # "flat" (exact) or "ivf_flat"
    rows: int
    dim: int
    nlist: int = 0
    nprobe: int = 0
    measured_recall: float = 1.0  # vs exact search, on ``recall_queries`` sampled rows
    recall_queries: int = 0
    recall_k: int = 0
    fallback: str = ""  # why an approximate index was given up for exact search

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def nprobe_ladder(nlist: int) -> list[int]:
    """Candidate ``nprobe`` values: 1, 2, 3, 4, 6, 8, 12, ... (steps of about sqrt 2), ending at nlist."""
    out, p = [], 1
    while p < nlist:
        out.append(p)
        p = p + max(1, p // 2) if p & (p - 1) == 0 else (p // 3) * 4
    return [*out, nlist]


def recall_at_k(found_dist: np.ndarray, exact_dist: np.ndarray) -> float:
    """Share of returned neighbours that lie within the exact k-th neighbour distance.

    Counting by distance (not by id) makes ties between equidistant points harmless.

    Args:
        found_dist: (n, k) distances returned by the approximate search (inf/NaN = missing).
        exact_dist: (n, k) exact distances, ascending.
    """
    radius = exact_dist[:, -1:] * (1 + 1e-5) + 1e-7
    hits = np.nan_to_num(found_dist, nan=np.inf) <= radius
    return float(hits.sum() / found_dist.size)


class VectorIndex:
    """Euclidean k-NN over the rows of one float32 matrix.

    Args:
        x: float32 (N, d) vectors; the index keeps a copy.
        exact_max_rows: at most this many rows: exact search.
        target_recall: recall the approximate index is tuned to reach.
        tune_k: k used when measuring recall (use the k you will search with).
        nlist: inverted lists for the approximate index (0 = about 4 sqrt(N)).
        recall_queries: sampled queries used to measure recall.
        max_scan_fraction: if reaching ``target_recall`` needs ``nprobe`` above this share of
            ``nlist``, the inverted file saves too little over exact search, so exact it is.
        seed: seeds the training sample, the k-means and the recall queries.
    """

    index: faiss.Index  # flat (exact) or IVF-flat (approximate)
    info: IndexInfo

    def __init__(
        self,
        x: np.ndarray,
        *,
        exact_max_rows: int = 100_000,
        target_recall: float = 0.97,
        tune_k: int = 200,
        nlist: int = 0,
        recall_queries: int = 1000,
        max_scan_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        if n <= exact_max_rows:
            self._exact(x)
            return
        rng = np.random.default_rng(seed)
        nlist = nlist or max(1, round(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
        index.cp.seed = seed
        train_rows = np.sort(rng.choice(n, size=min(n, 50 * nlist), replace=False))
        index.train(x[train_rows])
        index.add(x)
        self.index = index
        self._quantizer = quantizer  # keep the Python object alive with the index
        q_rows = np.sort(rng.choice(n, size=min(n, recall_queries), replace=False))
        tune_k = min(tune_k, n)
        exact_d, _ = faiss.knn(x[q_rows], x, tune_k)
        exact_d = np.sqrt(np.maximum(exact_d, 0))
        recall = 0.0
        ladder = [p for p in nprobe_ladder(nlist) if p <= max(1.0, max_scan_fraction * nlist)]
        for nprobe in ladder:
            index.nprobe = nprobe
            found_d, _ = index.search(x[q_rows], tune_k)
            found_d = np.sqrt(np.maximum(np.where(found_d < 0, np.inf, found_d), 0))
            recall = recall_at_k(found_d, exact_d)
            if recall >= target_recall:
                break
        if recall < target_recall:
            del self.index, self._quantizer, index, quantizer
            self._exact(x)
            self.info.fallback = (
                f"ivf_flat reached recall {recall:.3f} < {target_recall} at nprobe {nprobe} "
                f"of {nlist} lists"
            )
            return
        self.info = IndexInfo(
            kind="ivf_flat",
            rows=n,
            dim=d,
            nlist=nlist,
            nprobe=nprobe,
            measured_recall=round(recall, 4),
            recall_queries=len(q_rows),
            recall_k=tune_k,
        )

    def _exact(self, x: np.ndarray) -> None:
        self.index = faiss.IndexFlatL2(x.shape[1])
        self.index.add(x)
        self.info = IndexInfo(kind="flat", rows=len(x), dim=x.shape[1])

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query.

        Returns:
            ``(distance, row)``: float32 (n, k) Euclidean distances (not squared), ascending, and
            int64 (n, k) row indices; missing results are ``inf`` and ``-1``.
        """
        k = max(1, min(k, self.info.rows))
        dist, rows = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        missing = rows < 0
        dist = np.sqrt(np.maximum(dist, 0))
        dist[missing] = np.inf
        return dist, rows


def identity_sizes(identity: np.ndarray) -> np.ndarray:
    """Images per identity, per row: int64 (N,)."""
    _, inv, counts = np.unique(identity, return_inverse=True, return_counts=True)
    return counts[inv.reshape(-1)]


def knn_other_identities(
    index: VectorIndex,
    x: np.ndarray,
    identity: np.ndarray,
    k: int,
    anchors: np.ndarray | None = None,
    batch_rows: int = 16_384,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """k nearest neighbours of each anchor among rows of a *different* identity.

    Args:
        index: built over ``x``.
        x: float32 (N, d), the indexed vectors (anchors are rows of it).
        identity: int64 (N,) identity per row (e.g. ``building_id``).
        k: neighbours per anchor.
        anchors: row indices to query (default: all rows, in order).
        batch_rows: anchors per yielded batch.

    Yields:
        ``(anchor_rows, rows, distance)`` per batch: int64 (b,), int32 (b, k) neighbour rows
        (``-1`` padding when fewer than k exist), float32 (b, k) ascending distances (NaN padding).
    """
    n = len(x)
    sizes = identity_sizes(identity)
    if anchors is None:
        anchors = np.arange(n, dtype=np.int64)
    for start in range(0, len(anchors), batch_rows):
        a = anchors[start : start + batch_rows]
        out_rows = np.full((len(a), k), -1, dtype=np.int32)
        out_dist = np.full((len(a), k), np.nan, dtype=np.float32)
        # search width per anchor: k + a power of two >= its identity size
        width = np.minimum(k + (1 << np.ceil(np.log2(sizes[a])).astype(np.int64)), n)
        for w in np.unique(width):
            sel = np.flatnonzero(width == w)
            step = max(1, _MAX_RESULTS_BLOCK // int(w))
            for s in range(0, len(sel), step):
                part = sel[s : s + step]
                dist, rows = index.search(x[a[part]], int(w))
                own = identity[a[part]][:, None]
                keep = (rows >= 0) & (identity[np.maximum(rows, 0)] != own)
                # pack kept results left, preserving their (ascending) order
                order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
                kept = np.take_along_axis(keep, order, axis=1)
                r = np.take_along_axis(rows, order, axis=1)
                dd = np.take_along_axis(dist, order, axis=1)
                m = r.shape[1]
                out_rows[part, :m] = np.where(kept, r, -1)
                out_dist[part, :m] = np.where(kept, dd, np.nan)
        yield a, out_rows, out_dist
