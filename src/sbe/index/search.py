"""Query an index directory from Python: by vector, by id, by row, or by image.

Example:
    >>> from sbe.index import SearchIndex
    >>> index = SearchIndex.load("work/index")
    >>> result = index.search_id(123456, k=5)  # buildings most like building 123456
    >>> for hit in result.hits():
    ...     print(hit["rank"], hit["id"], round(hit["similarity"], 3), hit["lat"], hit["lon"])

Searching by id or row excludes the query itself by default (``exclude_self=True``): it would
always be the first hit with similarity 1, which says nothing. Pass ``exclude_self=False`` to keep
it (useful as a sanity check: its rank is then 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
import pyarrow as pa

from sbe.errors import SbeError
from sbe.index.directory import IndexInfo, load_index_dir
from sbe.index.faiss_index import set_ef_search
from sbe.index.table import rows_of_id


@dataclass(frozen=True)
class SearchResult:
    """The k nearest neighbours of Q queries.

    Attributes:
        rows: int64 (Q, k) rows of the side table (= faiss ids), best first; -1 where fewer
            than k results exist.
        similarity: float32 (Q, k) cosine similarity in [-1, 1]; NaN where ``rows`` is -1.
        table: the index's side table (id + metadata columns).
        id_column: name of the id column in ``table``.
        location_columns: ``(lat, lon)`` column names in ``table``, or ``None``.
        columns: more per-hit values, each a (Q, k) array aligned with ``rows`` (re-ranking adds
            ``matches`` and ``score``; a calibration ``same_building`` and its probability).
        notes: facts about how the answer was made (``rerank``: k, gallery, checked and missing
            candidates, seconds).
    """

    rows: np.ndarray
    similarity: np.ndarray
    table: pa.Table
    id_column: str
    location_columns: tuple[str, str] | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def ids(self, q: int = 0) -> list[Any]:
        """Ids of query ``q``'s hits, best first (Python values of the id's type)."""
        valid = self.rows[q][self.rows[q] >= 0]
        return self.table.column(self.id_column).take(pa.array(valid)).to_pylist()

    def hits(self, q: int = 0) -> list[dict[str, Any]]:
        """Query ``q``'s hits as dicts, best first.

        Each has ``rank`` (1 = nearest), ``id``, ``similarity``, ``row``, ``lat`` and ``lon``
        (``None`` when the index has no location), the :attr:`columns` (re-ranking's
        ``matches``, ``score``, ...) and every other metadata column by name.
        """
        valid = np.flatnonzero(self.rows[q] >= 0)
        rows = self.rows[q][valid]
        meta = self.table.take(pa.array(rows)).to_pylist()
        lat_col, lon_col = self.location_columns or (None, None)
        out = []
        for rank, (i, m) in enumerate(zip(valid, meta, strict=True), start=1):
            hit: dict[str, Any] = {
                "rank": rank,
                "id": m.pop(self.id_column),
                "similarity": float(self.similarity[q, i]),
                "row": int(self.rows[q, i]),
                "lat": m.pop(lat_col) if lat_col else None,
                "lon": m.pop(lon_col) if lon_col else None,
            }
            for name, values in self.columns.items():
                v = values[q, i]
                hit[name] = v.item() if isinstance(v, np.generic) else v
            hit.update(m)
            out.append(hit)
        return out

    def to_records(self) -> list[list[dict[str, Any]]]:
        """:meth:`hits` of every query."""
        return [self.hits(q) for q in range(len(self))]

    def to_table(self) -> pa.Table:
        """Long format, one row per hit: ``query``, ``rank``, ``row``, ``similarity``, then the
        side-table columns (id and metadata) of the hit."""
        q_idx, r_idx = np.nonzero(self.rows >= 0)
        rows = self.rows[q_idx, r_idx]
        hits = self.table.take(pa.array(rows))
        head = pa.table(
            {
                "query": pa.array(q_idx.astype(np.int32)),
                "rank": pa.array((r_idx + 1).astype(np.int32)),
                "row": pa.array(rows.astype(np.int64)),
                "similarity": pa.array(self.similarity[q_idx, r_idx].astype(np.float32)),
            }
        )
        for name, values in self.columns.items():
            head = head.append_column(name, pa.array(values[q_idx, r_idx]))
        for name in hits.column_names:
            head = head.append_column(hits.schema.field(name), hits.column(name))
        return head

    def reordered(self, order: np.ndarray, **columns: np.ndarray) -> SearchResult:
        """The same hits in a new order per query, with more per-hit columns.

        Args:
            order: int (Q, k): for each new rank, the old position (-1 = no hit there).
            **columns: (Q, k) arrays already in the new order (e.g. ``matches``).

        Returns:
            A new :class:`SearchResult`; existing :attr:`columns` follow the new order.
        """
        order = np.asarray(order, dtype=np.int64)
        if order.shape != self.rows.shape:
            raise ValueError(f"order has shape {order.shape}, the result {self.rows.shape}")
        take = np.where(order >= 0, order, 0)
        rows = np.where(order >= 0, np.take_along_axis(self.rows, take, axis=1), -1)
        sims = np.where(order >= 0, np.take_along_axis(self.similarity, take, axis=1), np.nan)
        moved = {n: np.take_along_axis(v, take, axis=1) for n, v in self.columns.items()}
        for name, values in columns.items():
            if np.shape(values) != self.rows.shape:
                raise ValueError(f"column {name!r} has shape {np.shape(values)}")
        return replace(
            self,
            rows=rows,
            similarity=sims.astype(np.float32),
            columns={**moved, **{n: np.asarray(v) for n, v in columns.items()}},
        )

    def reranked(self, rr: Any, notes: dict[str, Any] | None = None) -> SearchResult:
        """Re-order each query's first ``k`` hits by a re-ranking of them; the hits after them
        keep their order.

        Args:
            rr: the re-ranking of the first ``k`` columns (``k = rr.order.shape[1]``): ``order``
                (int (Q, k), old position per new rank, -1 = no hit), ``matches`` (int (Q, k),
                -1 = not checked) and ``score`` (float (Q, k)), as
                :func:`sbe.verify.gallery.rerank_shortlists` answers.
            notes: recorded under ``notes["rerank"]`` (beside ``k``).

        Returns:
            A new result with ``matches`` (``None`` where not checked) and ``score`` (NaN there)
            columns.
        """
        q_n, k_all = self.rows.shape
        kr = rr.order.shape[1]
        order = np.tile(np.arange(k_all, dtype=np.int64), (q_n, 1))
        order[:, :kr] = rr.order
        order[self.rows < 0] = -1
        checked = (rr.order >= 0) & (rr.matches >= 0)
        matches = np.full((q_n, k_all), None, dtype=object)
        matches[:, :kr] = np.where(checked, rr.matches.astype(object), None)  # Python ints
        score = np.full((q_n, k_all), np.nan)
        score[:, :kr] = np.where(checked, rr.score, np.nan)
        out = self.reordered(order, matches=matches, score=score)
        return replace(out, notes={**self.notes, "rerank": {"k": kr, **(notes or {})}})

    def match_counts(self) -> np.ndarray | None:
        """int64 (Q, k) verified matches after :meth:`reranked` (-1 = not checked), else None."""
        m = self.columns.get("matches")
        if m is None:
            return None
        return np.array([[-1 if v is None else v for v in row] for row in m], dtype=np.int64)

    def head(self, k: int) -> SearchResult:
        """The first ``k`` hits of every query."""
        return replace(
            self,
            rows=self.rows[:, :k],
            similarity=self.similarity[:, :k],
            columns={n: v[:, :k] for n, v in self.columns.items()},
        )

    def with_columns(self, **columns: np.ndarray) -> SearchResult:
        """The same hits with more per-hit (Q, k) columns."""
        for name, values in columns.items():
            if np.shape(values) != self.rows.shape:
                raise ValueError(f"column {name!r} has shape {np.shape(values)}")
        return replace(self, columns={**self.columns, **columns})


class SearchIndex:
    """A loaded index directory: faiss index + side table + ``index.json``.

    Args:
        index: faiss index over L2-normalised vectors (id i <-> row i of ``table``).
        table: side table with ``info.id_column`` and metadata columns.
        info: the index record.
    """

    def __init__(
        self, index: faiss.Index, table: pa.Table, info: IndexInfo, root: Path | None = None
    ) -> None:
        self.index = index
        self.table = table
        self.info = info
        self.root = root
        """The index folder (``None`` when not loaded from disk); recorded paths are under it."""
        self._ids = table.column(info.id_column)
        # index.json records the location as its [lat, lon] column pair.
        self._location = (
            cast("tuple[str, str]", tuple(info.location_columns)) if info.location_columns else None
        )

    @classmethod
    def load(cls, index_dir: str | Path, *, ef_search: int | None = None) -> SearchIndex:
        """Load an index directory written by ``sbe index build``.

        Args:
            index_dir: the directory.
            ef_search: HNSW search breadth; ``None`` keeps the value recorded at build time.
        """
        index, table, info = load_index_dir(index_dir)
        set_ef_search(index, ef_search or info.parameters.get("ef_search", 64))
        return cls(index, table, info, Path(index_dir))

    @property
    def dim(self) -> int:
        return self.info.dim

    def __len__(self) -> int:
        return self.index.ntotal

    def set_ef_search(self, ef_search: int) -> None:
        """Change HNSW's search breadth (higher: better recall, slower). No-op when exact."""
        set_ef_search(self.index, ef_search)

    # ---- queries ---------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int = 10) -> SearchResult:
        """Nearest neighbours of query vectors.

        Args:
            vectors: (Q, D) or (D,) array of any float dtype; normalised here.
            k: neighbours per query.

        Returns:
            :class:`SearchResult` with Q rows.
        """
        q = self._prepare(vectors)
        sims, rows = self.index.search(q, int(k))
        return self._result(rows, sims)

    def search_id(self, id_value: Any, k: int = 10, *, exclude_self: bool = True) -> SearchResult:
        """Nearest neighbours of the item with id ``id_value``.

        When several rows share the id (an image-level index keyed by building), the query is
        their mean vector, re-normalised: the building's vector, as ``sbe aggregate`` makes it.

        Args:
            id_value: an id (a string is converted to the id column's type, so ``"42"`` works
                for integer ids).
            k: neighbours returned.
            exclude_self: leave out every row carrying ``id_value``.

        Returns:
            :class:`SearchResult` with one query.

        Raises:
            SbeError: the id is not in the index.
        """
        rows = rows_of_id(self._ids, id_value)
        if len(rows) == 0:
            raise SbeError(f"id {id_value!r} is not in the index ({self.info.id_column})")
        query = self.vectors(rows).mean(axis=0, keepdims=True)
        return self._search_excluding(query, [rows] if exclude_self else [rows[:0]], k)

    def search_rows(
        self, rows: Sequence[int] | np.ndarray, k: int = 10, *, exclude_self: bool = True
    ) -> SearchResult:
        """Nearest neighbours of indexed rows (e.g. the test images of a retrieval gallery).

        Args:
            rows: side-table rows used as queries.
            k: neighbours per query.
            exclude_self: leave out each query's own row (other rows with the same id stay, so
                the other images of the same building can be found).

        Returns:
            :class:`SearchResult` with ``len(rows)`` queries.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must be in [0, {len(self)})")
        excl = [rows[i : i + 1] if exclude_self else rows[:0] for i in range(len(rows))]
        return self._search_excluding(self.vectors(rows), excl, k)

    def search_images(
        self,
        images: Sequence[Any],
        k: int = 10,
        *,
        model_dir: str | Path | None = None,
        **embedder_options: Any,
    ) -> SearchResult:
        """Embed images with the published model, then search.

        Args:
            images: paths, bytes or PIL images (whatever the published embedder accepts).
            k: neighbours per image.
            model_dir: the published model folder; ``None`` uses the one recorded in
                ``index.json``.

        Raises:
            SbeError: no model is known or found, or an image does not decode (named).
        """
        if model_dir is None and self.info.model_dir is not None:
            model_dir = self.info.model_path(self.root or Path.cwd())
            assert model_dir is not None  # info.model_dir is set (checked above)
            if not model_dir.is_dir():
                raise SbeError(
                    f"the model recorded in the index ({model_dir}) is not there any more; pass "
                    "--model DIR (the folder `sbe publish` wrote)"
                )
        vectors = embed_images(images, model_dir, **embedder_options)
        if vectors.shape[1] != self.dim:
            raise SbeError(
                f"the model makes {vectors.shape[1]}-d vectors but the index holds {self.dim}-d "
                "ones: query with the model that made the index"
            )
        return self.search(vectors, k)

    def rows_of(self, id_value: Any) -> np.ndarray:
        """Side-table rows whose id is ``id_value`` (int64, ascending, maybe empty)."""
        return rows_of_id(self._ids, id_value)

    def vectors(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of ``rows``: float32 (len(rows), D)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        return self.index.reconstruct_batch(rows)

    # ---- helpers ---------------------------------------------------------------------------

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        q = np.array(vectors, dtype=np.float32, order="C", ndmin=2, copy=True)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise SbeError(f"query vectors must have dimension {self.dim}, got shape {q.shape}")
        if not np.isfinite(q).all():
            raise SbeError("query vectors contain NaN or infinity")
        faiss.normalize_L2(q)
        return q

    def _result(self, rows: np.ndarray, sims: np.ndarray) -> SearchResult:
        rows = rows.astype(np.int64, copy=False)
        sims = np.where(rows >= 0, sims, np.nan).astype(np.float32)
        return SearchResult(rows, sims, self.table, self.info.id_column, self._location)

    def _search_excluding(
        self, queries: np.ndarray, exclude: list[np.ndarray], k: int
    ) -> SearchResult:
        """Search k + (rows to exclude) and drop the excluded rows, keeping the best k."""
        q = self._prepare(queries)
        extra = max((len(e) for e in exclude), default=0)
        sims, rows = self.index.search(q, min(int(k) + extra, max(len(self), 1)))
        out_rows = np.full((len(q), k), -1, dtype=np.int64)
        out_sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        for i in range(len(q)):
            keep = rows[i] >= 0
            if len(exclude[i]):
                keep &= ~np.isin(rows[i], exclude[i])
            kept = np.flatnonzero(keep)[:k]
            out_rows[i, : len(kept)] = rows[i, kept]
            out_sims[i, : len(kept)] = sims[i, kept]
        return self._result(out_rows, out_sims)


def embed_images(
    images: Sequence[Any], model_dir: str | Path | None, **embedder_options: Any
) -> np.ndarray:
    """Embed images with a published model (``sbe publish`` output).

    Args:
        images: paths, bytes or PIL images.
        model_dir: the model folder.

    Returns:
        float32 (len(images), D).

    Raises:
        SbeError: no model folder is given or found, or an image does not decode (the image is
            named).
    """
    if model_dir is None:
        raise SbeError(
            "this index does not record the model that made its vectors; pass --model DIR "
            "(a folder written by `sbe publish`)"
        )
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SbeError(
            f"model folder not found: {model_dir}; pass --model DIR, a folder written by "
            "`sbe publish`"
        )
    # imported here: loading torch and the backbones is only needed for image queries
    from sbe.data.images import ImageDecodeError
    from sbe.models.published import load_embedder

    embedder = load_embedder(model_dir, **embedder_options)
    try:
        vectors = np.asarray(embedder.embed_images(list(images)), dtype=np.float32)
    except ImageDecodeError as e:
        raise SbeError(_image_error(str(e), images)) from None
    if vectors.ndim != 2 or vectors.shape[0] != len(images):
        raise SbeError(
            f"the published model returned shape {vectors.shape} for {len(images)} images"
        )
    return vectors


def _image_error(message: str, images: Sequence[Any]) -> str:
    """``image 3: reason`` -> ``<path of image 3>: not a readable image (reason)``, one line."""
    head, _, reason = message.partition(": ")
    pos = head.removeprefix("image ")
    name = f"image {pos}"
    if pos.isdigit() and int(pos) < len(images) and isinstance(images[int(pos)], str | Path):
        name = str(images[int(pos)])
    reason = " ".join(reason.split()) or "undecodable"
    return f"{name}: not a readable image ({reason})"
