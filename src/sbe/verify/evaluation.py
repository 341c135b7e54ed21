"""Measuring verification: pairs for a calibration, re-ranked shortlists scored against labels.

Used by ``sbe evaluate --calibrate / --rerank / --vpr`` (:mod:`sbe.stages.evaluate`); everything
here works on arrays and callables, so the stage only reads files and translates its config.

* :func:`sample_pairs` / :func:`pair_similarities` / :func:`calibrate_splits`: the
  "same building?" threshold fitted on the pairs of one split (val) and checked on another
  (test). Pairs are *uniform* over a split's pairs (all of them up to a cap, a seeded uniform
  sample beyond), so the share of same-building pairs, which decides the precision a threshold
  reaches, is the split's own.
* :class:`ShortlistReranker`: re-orders global top-k shortlists by verified local matches (the
  order :func:`sbe.verify.rerank.rerank` gives: :func:`~sbe.verify.rerank.reranked_order`),
  memoising each image's features and each pair's count so that two rankings of
  the same photos (backbone and projector) share the work; photos that cannot be read or
  decoded are counted fallbacks, never errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbe.errors import SbeError
from sbe.mining.topk import top_k_excluding_self
from sbe.verify.calibration import Calibration, finite_json, fit_calibration, precision_recall
from sbe.verify.local import LocalFeatures, LocalMatcher
from sbe.verify.rerank import Combine, reranked_order

#: pairs per split at most before sampling (2 M pairs: ~2 000 images' every pair)
MAX_PAIRS = 2_000_000


def sample_pairs(
    n: int, max_pairs: int = MAX_PAIRS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` of ``n`` items: all of them, or a seeded uniform sample of ``max_pairs``.

    Args:
        n: number of items.
        max_pairs: the cap.
        seed: seed of the sample.

    Returns:
        ``(i, j)``: int64 arrays of equal length (distinct pairs, ``i < j``).
    """
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    rng = np.random.default_rng(seed)
    # uniform over unordered pairs: draw ordered pairs, drop i == j, sort each, drop repeats
    a = rng.integers(0, n, size=int(max_pairs * 1.05) + 16, dtype=np.int64)
    b = rng.integers(0, n, size=len(a), dtype=np.int64)
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    _, first = np.unique(lo * n + hi, return_index=True)
    first = np.sort(first)[:max_pairs]
    return lo[first], hi[first]


def pair_similarities(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows ``i`` and ``j`` of ``x`` (float (N, D)): float64 (len(i),)."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    out = np.empty(len(i), dtype=np.float64)
    step = 1 << 18  # bounded memory: 256 k pairs x D at a time
    for s in range(0, len(i), step):
        out[s : s + step] = np.einsum("nd,nd->n", x[i[s : s + step]], x[j[s : s + step]])
    return out


def split_pairs(
    x: np.ndarray, ids: np.ndarray, max_pairs: int = MAX_PAIRS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and same-identity labels of a split's pairs (:func:`sample_pairs`).

    Args:
        x: float (N, D) embeddings.
        ids: (N,) identities.

    Returns:
        ``(similarity float64 (P,), same bool (P,))``.
    """
    i, j = sample_pairs(len(x), max_pairs, seed)
    ids = np.asarray(ids)
    return pair_similarities(x, i, j), ids[i] == ids[j]


def calibrate_splits(
    fit: tuple[np.ndarray, np.ndarray],
    check: tuple[np.ndarray, np.ndarray],
    *,
    target_precision: float,
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
) -> tuple[Calibration, dict[str, Any]]:
    """Fit the "same building?" decision on one split's pairs and check it on another's.

    Args:
        fit: ``(embeddings (N, D), identities (N,))`` of the fitting split (val).
        check: the same for the held-out split (test).
        target_precision: precision the threshold is chosen for, on the fitting pairs.
        max_pairs, seed: see :func:`sample_pairs`.

    Returns:
        ``(calibration, summary)``; the summary has ``target_precision``, ``threshold``
        (probability), ``similarity_threshold`` (the cosine at which the probability reaches the
        threshold), ``fit`` and ``test`` (precision, recall, called, positives, pairs) and
        ``sampled`` (whether the pairs were a sample). Values that are not finite (no threshold
        reaches the target; precision of nothing called) are ``None``.

    Raises:
        SbeError: a split without both kinds of pairs (see :func:`fit_calibration`).
    """
    vs, vy = split_pairs(*fit, max_pairs=max_pairs, seed=seed)
    ts, ty = split_pairs(*check, max_pairs=max_pairs, seed=seed + 1)
    cal = fit_calibration(vs, vy, target_precision=target_precision)
    test = precision_recall(cal.same(ts), ty)
    n_fit, n_check = len(fit[0]), len(check[0])
    summary = {
        "method": cal.method,
        "target_precision": target_precision,
        # None (not inf/NaN) when no threshold reaches the target / nothing is called: plain JSON
        "threshold": cal.threshold if np.isfinite(cal.threshold) else None,
        "similarity_threshold": similarity_threshold(cal),
        "fit": finite_json(cal.fit),
        "test": finite_json(test),
        "sampled": {
            "fit": n_fit * (n_fit - 1) // 2 > max_pairs,
            "test": n_check * (n_check - 1) // 2 > max_pairs,
            "max_pairs": max_pairs,
            "seed": seed,
        },
    }
    return cal, summary


def similarity_threshold(cal: Calibration) -> float | None:
    """The cosine similarity above which a pair is called "same building" (similarity-only
    calibrations with a positive slope; ``None`` otherwise or when nothing is called)."""
    if cal.uses_matches or not np.isfinite(cal.threshold) or cal.coef[0] <= 0:
        return None
    if cal.method == "logistic":
        p = min(max(cal.threshold, 1e-12), 1 - 1e-12)
        return float((np.log(p / (1 - p)) - cal.intercept) / cal.coef[0])
    # isotonic: the smallest fitted score whose step reaches the threshold
    xs, ys = np.asarray(cal.iso_x), np.asarray(cal.iso_y)
    ok = np.nonzero(ys >= cal.threshold)[0]
    return None if len(ok) == 0 else float((xs[ok[0]] - cal.intercept) / cal.coef[0])


@dataclass
class RerankCounts:
    """What one :class:`ShortlistReranker` did (cost and fallbacks), for the results JSON."""

    queries: int = 0
    fallback_queries: int = 0
    failed_images: int = 0
    pairs_matched: int = 0
    images_extracted: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        per = max(self.queries, 1)
        return {
            "queries": self.queries,
            "fallback_queries": self.fallback_queries,
            "failed_images": self.failed_images,
            "pairs_matched": self.pairs_matched,
            "images_extracted": self.images_extracted,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "per_query_cpu_s": round(self.cpu_seconds / per, 3),
            "per_query_wall_s": round(self.wall_seconds / per, 3),
            "failure_examples": self.failures[:5],
        }


class ShortlistReranker:
    """Re-order shortlists of photos by verified matches, memoising features and pair counts.

    Args:
        matcher: the :class:`LocalMatcher`.
        read: key -> encoded image bytes (or a reason string when it cannot be read).
        combine, min_matches: the rule of :func:`~sbe.verify.rerank.combined_scores`.
    """

    def __init__(
        self,
        matcher: LocalMatcher,
        read: Callable[[Hashable], bytes | str],
        *,
        combine: Combine = "verified",
        min_matches: int = 15,
    ) -> None:
        self.matcher = matcher
        self.read = read
        self.combine: Combine = combine
        self.min_matches = min_matches
        self.counts = RerankCounts()
        self._features: dict[Hashable, LocalFeatures | None] = {}
        self._pairs: dict[tuple[Hashable, Hashable], int] = {}

    def features(self, key: Hashable) -> LocalFeatures | None:
        """The image's local features (``None``, counted, when it cannot be read or decoded)."""
        if key in self._features:
            return self._features[key]
        data = self.read(key)
        feats: LocalFeatures | None = None
        if isinstance(data, str):
            reason = data
        else:
            try:
                feats = self.matcher.extract(data)
                reason = ""
            # undecodable bytes (SbeError), images too small for DISK's layers (RuntimeError)
            except (SbeError, RuntimeError, ValueError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if feats is None:
            self.counts.failed_images += 1
            self.counts.failures.append(f"{key}: {reason}")
        else:
            self.counts.images_extracted += 1
        self._features[key] = feats
        return feats

    def verified(self, query: Hashable, candidate: Hashable) -> int:
        """Verified matches of two images (0 when either has no features)."""
        pair = (query, candidate)
        if pair not in self._pairs:
            q, c = self.features(query), self.features(candidate)
            if q is None or c is None or len(q) == 0 or len(c) == 0:
                self._pairs[pair] = 0
            else:
                # a degenerate RANSAC is a 0 inside count_inliers, not an error
                self._pairs[pair] = self.matcher.verified_matches(q, c)
                self.counts.pairs_matched += 1
        return self._pairs[pair]

    def order(
        self,
        query: Hashable,
        candidates: Sequence[Hashable],
        similarities: Sequence[float] | np.ndarray,
    ) -> np.ndarray:
        """The new order of one shortlist (indices into ``candidates``, best first).

        A query whose photo cannot be read keeps the global order (a counted fallback); so does
        a candidate whose photo cannot be read (the rule of :func:`~sbe.verify.rerank.rerank_groups`).
        """
        t0, c0 = time.perf_counter(), time.process_time()
        self.counts.queries += 1
        try:
            if self.features(query) is None:
                self.counts.fallback_queries += 1
                return np.arange(len(candidates))
            m = np.array([self.verified(query, c) for c in candidates], dtype=np.int64)
            # as in search and the service: a candidate without features keeps its global place
            missing = [not self.features(c) for c in candidates]
            order, _ = reranked_order(
                similarities, m, missing, combine=self.combine, min_matches=self.min_matches
            )
            return order
        finally:
            self.counts.wall_seconds += time.perf_counter() - t0
            self.counts.cpu_seconds += time.process_time() - c0


def shortlists(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of ``queries`` rows among all rows of ``x``, the query itself excluded.

    Returns:
        ``(rows int64 (Q, k), similarities float64 (Q, k))``, best first.
    """
    return top_k_excluding_self(x, queries, k, dtype=np.float64)


def rerank_top1(
    reranker: ShortlistReranker,
    keys: Sequence[Hashable],
    labels: np.ndarray,
    queries: np.ndarray,
    rows: np.ndarray,
    sims: np.ndarray,
) -> dict[str, Any]:
    """Top-1 correctness of global shortlists before and after re-ranking.

    Args:
        reranker: the :class:`ShortlistReranker` (its counters accumulate).
        keys: per row of the gallery, the key ``reranker.read`` takes.
        labels: (N,) identity per row.
        queries: (Q,) query rows; ``rows``/``sims``: their (Q, k) shortlists (:func:`shortlists`).

    Returns:
        ``{"queries", "k", "global_correct@1", "reranked_correct@1", "positive_in_top_k",
        "gained", "lost"}`` (counts of queries).
    """
    labels = np.asarray(labels)
    glob = labels[rows[:, 0]] == labels[queries]
    after = np.zeros(len(queries), dtype=bool)
    for n, q in enumerate(queries):
        order = reranker.order(keys[int(q)], [keys[int(r)] for r in rows[n]], sims[n])
        after[n] = labels[rows[n, int(order[0])]] == labels[q]
    in_k = (labels[rows] == labels[queries][:, None]).any(axis=1)
    return {
        "queries": len(queries),
        "k": int(rows.shape[1]),
        "global_correct@1": int(glob.sum()),
        "reranked_correct@1": int(after.sum()),
        "positive_in_top_k": int(in_k.sum()),
        "gained": int((after & ~glob).sum()),
        "lost": int((glob & ~after).sum()),
    }
