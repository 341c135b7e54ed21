"""Exact cosine top-k of some rows among all rows, the query row itself excluded."""

from __future__ import annotations

import numpy as np


def top_k_excluding_self(
    vectors: np.ndarray, queries: np.ndarray, k: int, dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of the given rows among all rows, the query row itself excluded.

    Args:
        vectors: (N, D) float; rows are L2-normalised here.
        queries: (Q,) row indices.
        k: results per query (capped at N - 1).
        dtype: the precision of the similarities (``np.float64`` where near-ties must order
            the same on every machine).

    Returns:
        ``(rows, similarity)``: (Q, k) int64 and ``dtype``, best first (ties by row order).
    """
    v: np.ndarray = np.asarray(vectors, dtype=dtype)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v[queries] @ v.T
    sims[np.arange(len(queries)), queries] = -np.inf
    k = min(k, len(v) - 1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(sims, order, axis=1)
