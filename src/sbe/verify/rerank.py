"""Re-rank a global (embedding) shortlist by verified local-feature matches.

The global embedding finds a shortlist fast but confuses look-alike facades; local features with a
geometric check tell a true view of the same building (tens to hundreds of consistent matches)
from a look-alike (a handful). :func:`rerank` scores each of the top-k candidates of a query and
re-orders them.

Scores (``combine``), compared on landmarks-mini by ``benchmarks/rerank.py`` (docs/verify.md):

* ``matches``: sort by verified matches, ties by global similarity.
* ``verified``: candidates with at least ``min_matches`` verified matches first (by matches), the
  rest after them in global order: a query with no verified candidate keeps its global ranking.
* ``sum``: ``similarity + weight * log1p(matches)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

import numpy as np

from sbe.errors import SbeError
from sbe.verify.local import ImageInput, LocalFeatures, LocalMatcher

Combine = Literal["matches", "verified", "sum"]
#: default of ``combine="verified"``: fewer verified matches than this counts as "not verified".
MIN_MATCHES = 15
#: default of ``combine="sum"``.
SUM_WEIGHT = 0.05


class RerankRule(TypedDict, total=False):
    """The keyword arguments of the ordering rule (see :func:`combined_scores`)."""

    combine: Combine
    min_matches: int
    weight: float


@dataclass(frozen=True)
class Reranked:
    """One candidate after re-ranking.

    Attributes:
        index: position of the candidate in the input list.
        similarity: its global similarity (as given).
        matches: verified local matches with the query.
        score: the combined score it was sorted by (descending).
        missing: no local features of the candidate (no photo, or none that decodes): it was
            not checked and keeps its global place (:func:`rerank_groups`).
    """

    index: int
    similarity: float
    matches: int
    score: float
    missing: bool = False


def combined_scores(
    similarities: Sequence[float] | np.ndarray,
    matches: Sequence[int] | np.ndarray,
    combine: Combine = "verified",
    *,
    min_matches: int = MIN_MATCHES,
    weight: float = SUM_WEIGHT,
) -> np.ndarray:
    """One sortable score per candidate (higher = better).

    Args:
        similarities: float (k,), global cosine similarities.
        matches: int (k,), verified matches.
        combine: ``matches``, ``verified`` or ``sum`` (module docstring).
        min_matches: threshold of ``verified``.
        weight: weight of ``log1p(matches)`` in ``sum``.

    Returns:
        float64 (k,). Similarities are cosines in [-1, 1], so adding an integer (or 2 x the match
        count) puts every candidate of a higher tier above every one of a lower tier.
    """
    s = np.asarray(similarities, dtype=np.float64)
    m = np.asarray(matches, dtype=np.float64)
    if combine == "matches":
        return 4.0 * m + s
    if combine == "verified":
        return np.where(m >= min_matches, 4.0 * m + 4.0, 0.0) + s
    if combine == "sum":
        return s + weight * np.log1p(m)
    raise ValueError(f"unknown combine {combine!r}; choose matches, verified or sum")


def reranked_order(
    similarities: Sequence[float] | np.ndarray,
    matches: Sequence[int] | np.ndarray,
    missing: Sequence[bool] | np.ndarray | None = None,
    *,
    combine: Combine = "verified",
    min_matches: int = MIN_MATCHES,
    weight: float = SUM_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """The new order of one shortlist, from its similarities and verified match counts.

    Args:
        similarities: float (k,), global similarities, in global order.
        matches: int (k,), verified matches of each candidate with the query.
        missing: bool (k,), candidates that were not checked (no usable photo): they keep their
            global places and the others are re-ordered among the remaining places.
        combine, min_matches, weight: see :func:`combined_scores`.

    Returns:
        ``(order, scores)``: int64 (k,) indices into the shortlist, best first (a stable sort, so
        equal scores keep the global order), and float64 (k,) the combined scores.
    """
    scores = combined_scores(similarities, matches, combine, min_matches=min_matches, weight=weight)
    gone = np.zeros(len(scores), bool) if missing is None else np.asarray(missing, bool)
    present = np.flatnonzero(~gone)
    order = np.arange(len(scores), dtype=np.int64)
    order[present] = present[np.argsort(-scores[present], kind="stable")]
    return order, scores


def rerank(
    query: ImageInput | LocalFeatures,
    candidates: Sequence[ImageInput | LocalFeatures],
    similarities: Sequence[float] | np.ndarray,
    matcher: LocalMatcher,
    **rule: Unpack[RerankRule],
) -> list[Reranked]:
    """Re-order a shortlist by verified matches combined with the global similarity.

    Args:
        query: the query image, or its features.
        candidates: the shortlist (k images, or features from a
            :class:`~sbe.verify.store.LocalFeatureStore`), in global order.
        similarities: float (k,), their global similarities to the query.
        matcher: the :class:`LocalMatcher` (extraction + matching settings).
        rule: ``combine``, ``min_matches``, ``weight`` of :func:`reranked_order`.

    Returns:
        The k candidates, best first; a candidate that does not decode keeps its global place
        (``missing``), as in :func:`rerank_groups` (of which this is the one-photo case).
    """
    return rerank_groups([query], [[c] for c in candidates], similarities, matcher, **rule)


def rerank_groups(
    queries: Sequence[ImageInput | LocalFeatures],
    candidates: Sequence[Sequence[ImageInput | LocalFeatures | None]],
    similarities: Sequence[float] | np.ndarray,
    matcher: LocalMatcher,
    *,
    combine: Combine = "verified",
    min_matches: int = MIN_MATCHES,
    weight: float = SUM_WEIGHT,
) -> list[Reranked]:
    """:func:`rerank` where the query and each candidate are *several* photos (a building).

    A pair of buildings scores the most verified matches of any (query photo, candidate photo)
    pair. A candidate with no usable photo (an empty list, ``None`` entries, images that do not
    decode) is *missing*: it is not scored and keeps its place in the global order, the others
    are re-ordered among the remaining places.

    Args:
        queries: the query's photos (images or features); at least one.
        candidates: per candidate (global order), its photos; ``None`` = a photo not found.
        similarities: float (k,), global similarities.
        matcher, combine, min_matches, weight: see :func:`rerank`.

    Returns:
        The k candidates, best first (see :class:`Reranked`; ``missing`` marks the fallbacks).

    Raises:
        SbeError: no query photo, or a query photo that does not decode.
    """
    if len(candidates) != len(similarities):
        raise ValueError(f"{len(candidates)} candidates but {len(similarities)} similarities")
    if not queries:
        raise SbeError("re-ranking needs at least one query photo")
    qs = [q if isinstance(q, LocalFeatures) else matcher.extract(q) for q in queries]
    counts = np.zeros(len(candidates), dtype=np.int64)
    missing = np.zeros(len(candidates), dtype=bool)
    for i, photos in enumerate(candidates):
        feats = [f for p in photos if p is not None and (f := _features_or_none(p, matcher))]
        if not feats:
            missing[i] = True
            continue
        counts[i] = max(matcher.verified_matches(q, f) for q in qs for f in feats)
    sims = np.asarray(similarities, dtype=np.float64)
    order, scores = reranked_order(
        sims, counts, missing, combine=combine, min_matches=min_matches, weight=weight
    )
    return [
        Reranked(int(i), float(sims[i]), int(counts[i]), float(scores[i]), bool(missing[i]))
        for i in order
    ]


def _features_or_none(photo: ImageInput | LocalFeatures, matcher: LocalMatcher) -> LocalFeatures:
    """Features of a candidate photo; an undecodable one gives an empty (falsy) set."""
    if isinstance(photo, LocalFeatures):
        return photo if len(photo) else _EMPTY
    try:
        return matcher.extract(photo)
    except SbeError:
        return _EMPTY


_EMPTY = LocalFeatures(
    keypoints=np.zeros((0, 2), np.float32),
    descriptors=np.zeros((0, 128), np.float16),
    image_size=(0, 0),
)
