"""Re-ranking whole search answers: each index row's photos, from a feature store or on the fly.

An index over buildings has one vector per building and several photos per building. A
:class:`Gallery` answers "the local features (or image bytes) of row r's photos": from the index's
:class:`~sbe.verify.store.LocalFeatureStore` when it has one (``sbe index build
--local-features``), else by asking a callable for the photos' bytes (extracted at query time).
:func:`rerank_shortlists` re-orders the top-k of every query with
:func:`~sbe.verify.rerank.rerank_groups` and returns plain arrays, so the index's search result
(:mod:`sbe.index.search`) and the service share one code path without importing each other.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from sbe.errors import SbeError
from sbe.settings import Record
from sbe.verify.local import ImageInput, LocalFeatures, LocalMatcher, LocalSettings
from sbe.verify.rerank import MIN_MATCHES, SUM_WEIGHT, Combine, rerank_groups
from sbe.verify.store import LocalFeatureStore

__all__ = [
    "Gallery",
    "RerankSettings",
    "Reranking",
    "open_store",
    "rerank_shortlists",
]

#: a candidate photo: stored features, encoded bytes, or ``None`` (not found)
Photo = LocalFeatures | ImageInput | None
R = TypeVar("R", bound="Shortlisted")


@dataclass(frozen=True)
class RerankSettings(Record):
    """How a shortlist is re-ranked (the extraction/matching settings are
    :class:`~sbe.verify.local.LocalSettings`).

    Attributes:
        k: candidates re-ranked per query (the global top-k).
        combine, min_matches, weight: see :func:`sbe.verify.rerank.combined_scores`.
        per_row: photos per index row matched when they are extracted on the fly (a store keeps
            the number it was built with).
    """

    k: int = 10
    combine: Combine = "verified"
    min_matches: int = MIN_MATCHES
    weight: float = SUM_WEIGHT
    per_row: int = 3


def open_store(
    folder: str | os.PathLike[str], build_id: str | None = None
) -> LocalFeatureStore | None:
    """The index's local-feature store, or ``None`` when the index has none.

    Args:
        folder: ``INDEX/local_features``.
        build_id: the index's build id; a store written for another build is refused.

    Raises:
        SbeError: the store exists but is incomplete or belongs to another index build.
    """
    if not Path(folder).is_dir():
        return None
    store = LocalFeatureStore(folder)
    recorded = store.meta.get("index_build_id")
    if build_id is not None and recorded is not None and recorded != build_id:
        raise SbeError(
            f"{folder} was built for another index build ({recorded}, the index is {build_id}); "
            "rerun `sbe index build --local-features`"
        )
    return store


@dataclass
class Gallery:
    """Where the photos of each index row come from.

    Args:
        store: the index's feature store (rows = index rows), or ``None``.
        photos: ``(rows, limit) -> per row, its photo bytes`` (``None`` entries for photos
            that are not there), used when there is no store; one call reads every row asked;
            ``None`` = no photos at all (every candidate is missing).
        per_row: photos per row asked of ``photos``.
    """

    store: LocalFeatureStore | None = None
    photos: Callable[[Sequence[int], int], Sequence[Sequence[bytes | None]]] | None = None
    per_row: int = 3

    def __post_init__(self) -> None:
        if self.store is not None and self.store.rows is None:
            raise SbeError(f"{self.store.folder}: a store without rows.npy cannot serve an index")

    @property
    def source(self) -> str:
        """``store``, ``on the fly`` or ``none``."""
        if self.store is not None:
            return "store"
        return "on the fly" if self.photos is not None else "none"

    def rows_photos(self, rows: Sequence[int] | np.ndarray) -> list[list[Photo]]:
        """Each row's photos: stored features, or bytes (``None`` = missing), read in one go."""
        if self.store is not None:
            store = self.store
            return [list(store.row_features(r)) if 0 <= r < store.num_rows else [] for r in rows]
        if self.photos is None or not len(rows):
            return [[] for _ in rows]
        return [list(p) for p in self.photos([int(r) for r in rows], self.per_row)]

    def settings_of(self, settings: LocalSettings) -> LocalSettings:
        """The matcher settings to use: a store's extraction settings win (the query must be
        extracted as the gallery was), the rest come from ``settings``."""
        if self.store is None:
            return settings
        s = self.store.settings
        return dataclasses.replace(settings, max_keypoints=s.max_keypoints, max_side=s.max_side)


@dataclass(frozen=True)
class Reranking:
    """Re-ranked shortlists of Q queries (arrays aligned with the new order).

    Attributes:
        order: int64 (Q, k): position in the global top-k of each new rank (-1 = no hit).
        matches: int64 (Q, k): verified matches of each hit (-1 = missing, not checked).
        score: float64 (Q, k): the combined score.
        missing: candidates without photos (kept in their global place), over all queries.
        checked: candidates matched, over all queries.
        seconds: wall seconds spent re-ranking.
    """

    order: np.ndarray
    matches: np.ndarray
    score: np.ndarray
    missing: int
    checked: int
    seconds: float


class Shortlisted(Protocol):
    """A search answer that can re-order its shortlists (``sbe.index.search.SearchResult``)."""

    @property
    def rows(self) -> np.ndarray: ...  # int64 (Q, k), -1 = no hit

    @property
    def similarity(self) -> np.ndarray: ...  # float (Q, k)

    def reranked(self, rr: Any, notes: dict[str, Any] | None = None) -> Any: ...


def rerank_answer(
    result: R,
    queries: Sequence[Sequence[Photo]],
    gallery: Gallery,
    matcher: LocalMatcher,
    settings: RerankSettings,
) -> tuple[R, Reranking]:
    """Re-order each query's global top ``settings.k`` of ``result`` by verified local matches.

    The one path of ``sbe search --rerank`` and the service's ``rerank=true``.

    Returns:
        The re-ranked answer (its ``notes["rerank"]`` gains the gallery, the counts, the time and
        the extraction settings) and the :class:`Reranking` behind it.

    Raises:
        SbeError: a query photo that does not decode (``query i: ...``).
    """
    k = min(settings.k, result.rows.shape[1])
    rr = rerank_shortlists(
        queries, result.rows[:, :k], result.similarity[:, :k], gallery, matcher, settings
    )
    notes = {
        "gallery": gallery.source,
        "checked": rr.checked,
        "missing": rr.missing,
        "seconds": round(rr.seconds, 3),
        "max_keypoints": matcher.settings.max_keypoints,
        "max_side": matcher.settings.max_side,
    }
    return result.reranked(rr, notes), rr


def rerank_shortlists(
    queries: Sequence[Sequence[Photo]],
    rows: np.ndarray,
    similarities: np.ndarray,
    gallery: Gallery,
    matcher: LocalMatcher,
    settings: RerankSettings | None = None,
) -> Reranking:
    """Re-rank the global top-k of each query by verified local matches.

    Args:
        queries: per query, its photos (one uploaded image, or a building's photos).
        rows: int64 (Q, k) index rows of the global answer (-1 = no hit), best first.
        similarities: float (Q, k) their global similarities.
        gallery: where candidate photos come from.
        matcher: the :class:`LocalMatcher`.
        settings: ``combine`` etc.; ``k`` is not applied here (the caller searched k).

    Returns:
        :class:`Reranking`.

    Raises:
        SbeError: a query without any photo, or one that does not decode (the caller names it).
    """
    import time

    settings = settings or RerankSettings()
    t0 = time.perf_counter()
    q_n, k = rows.shape
    order = np.full((q_n, k), -1, dtype=np.int64)
    matches = np.full((q_n, k), -1, dtype=np.int64)
    score = np.full((q_n, k), np.nan, dtype=np.float64)
    missing = checked = 0
    # every candidate's photos in one read (a photo parquet is read per call, not per row)
    wanted = np.unique(rows[rows >= 0]).tolist()
    photos_of = dict(zip(wanted, gallery.rows_photos(wanted), strict=True))
    for q in range(q_n):
        valid = np.flatnonzero(rows[q] >= 0)
        if len(valid) == 0:
            continue
        photos = [p for p in queries[q] if p is not None]
        if not photos:
            raise SbeError(f"query {q}: no photo to re-rank with")
        try:
            ranked = rerank_groups(
                photos,
                [photos_of[int(rows[q, i])] for i in valid],
                similarities[q, valid],
                matcher,
                combine=settings.combine,
                min_matches=settings.min_matches,
                weight=settings.weight,
            )
        except SbeError as e:  # only a query photo fails here; the caller names query q
            raise SbeError(f"query {q}: {e}") from None
        for new, r in enumerate(ranked):
            order[q, new] = valid[r.index]
            matches[q, new] = -1 if r.missing else r.matches
            score[q, new] = r.score
            missing += int(r.missing)
            checked += int(not r.missing)
    return Reranking(order, matches, score, missing, checked, time.perf_counter() - t0)
