"""Image-to-image retrieval metrics: Recall@K and mAP@R, batched with torch matmul in blocks.

Every query is an image of the set being searched; it is excluded from its own gallery, and its
relevant items are the other images with the same label. Similarity is cosine (rows are
L2-normalised here, so raw backbone embeddings and projector outputs are treated alike).

- Recall@K: share of queries with at least one relevant item among the top K.
- mAP@R (Musgrave et al., "A Metric Learning Reality Check"): with R = number of relevant items
  of the query, ``AP@R = 1/R * sum_{i<=R} P@i * rel_i``, averaged over queries.
- mAP (optional): average precision over the whole ranking, for small sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: similarity-matrix elements per block (float32: 32M elements = 128 MB)
BLOCK_ELEMENTS = 1 << 25


def dense_labels(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to 0..L-1 (int64), keeping their sorted order."""
    _, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


def eligible_queries(labels: np.ndarray) -> np.ndarray:
    """Indices of rows whose label occurs at least twice (a query needs a relevant item).

    Returns:
        int64 array of row indices, ascending.
    """
    dense = dense_labels(labels)
    counts = np.bincount(dense)
    return np.flatnonzero(counts[dense] >= 2).astype(np.int64)


def sample_queries(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded query set: ``n`` eligible rows (all of them when fewer), ascending."""
    rows = eligible_queries(labels)
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=n, replace=False))
    return rows


@torch.no_grad()
def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    queries: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10, 100),
    *,
    full_map: bool = False,
    device: str | torch.device = "cpu",
    block_elements: int = BLOCK_ELEMENTS,
) -> dict[str, float]:
    """Leave-one-out retrieval within one set of images.

    Args:
        embeddings: (N, D) vectors of the gallery (any float dtype; normalised here).
        labels: (N,) identity of each row (any integers).
        queries: row indices used as queries; ``None`` = every row whose label occurs twice or
            more. Rows without any relevant item are dropped.
        ks: cut-offs for Recall@K (a K above N-1 is clipped to N-1).
        full_map: also compute ``map`` over the whole ranking (sorts all N-1 items per query;
            meant for small sets).
        device: where the similarity blocks are computed.
        block_elements: similarity-matrix elements per block (memory bound).

    Returns:
        ``{"recall@K": float, ..., "map@r": float, ["map": float,] "queries": int}``; metric
        values are in [0, 1].
    """
    x = torch.as_tensor(embeddings).to(device).float()
    x = F.normalize(x, dim=1)
    n = x.shape[0]
    dense = torch.from_numpy(dense_labels(labels)).to(device)
    counts = torch.bincount(dense)
    q_rows = torch.arange(n, device=device) if queries is None else torch.as_tensor(queries)
    q_rows = q_rows.to(device=device, dtype=torch.long)
    q_rows = q_rows[counts[dense[q_rows]] >= 2]
    n_q = int(q_rows.numel())
    out_keys = sorted({int(k) for k in ks})
    eff_k = {k: min(k, max(n - 1, 1)) for k in out_keys}
    hits_at = {k: 0.0 for k in out_keys}
    ap_r_sum = 0.0
    ap_full_sum = 0.0
    if n_q == 0:
        res: dict[str, float] = {f"recall@{k}": float("nan") for k in out_keys}
        res["map@r"] = float("nan")
        if full_map:
            res["map"] = float("nan")
        res["queries"] = 0
        return res
    block = max(1, min(n_q, block_elements // max(n, 1)))
    for s in range(0, n_q, block):
        rows = q_rows[s : s + block]
        b = rows.numel()
        sims = x[rows] @ x.T
        sims[torch.arange(b, device=device), rows] = float("-inf")
        qlab = dense[rows]
        r = counts[qlab] - 1  # relevant items per query (self excluded)
        depth = n - 1 if full_map else min(n - 1, max(max(eff_k.values()), int(r.max())))
        top = torch.topk(sims, depth, dim=1, sorted=True).indices
        hits = dense[top] == qlab[:, None]  # (b, depth) bool
        for k in out_keys:
            hits_at[k] += float(hits[:, : eff_k[k]].any(dim=1).sum())
        ranks = torch.arange(1, depth + 1, device=device, dtype=torch.float32)
        prec = hits.float().cumsum(dim=1) / ranks
        contrib = prec * hits.float()
        within_r = ranks[None, :] <= r[:, None].float()
        ap_r_sum += float(((contrib * within_r).sum(dim=1) / r.float()).sum())
        if full_map:
            ap_full_sum += float((contrib.sum(dim=1) / r.float()).sum())
    res = {f"recall@{k}": hits_at[k] / n_q for k in out_keys}
    res["map@r"] = ap_r_sum / n_q
    if full_map:
        res["map"] = ap_full_sum / n_q
    res["queries"] = n_q
    return res
