"""``sbe search``: nearest neighbours from an index directory, by id, vector file or image.

Not a pipeline stage (it writes nothing, so it has no :class:`~sbe.stages.base.Stage` class and
is not in the stage registry); it turns the CLI's query flags into one
:class:`~sbe.index.search.SearchIndex` call and a JSON-friendly answer. Every problem with a
query file is an :class:`~sbe.errors.SbeError` naming the file.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import SbeConfig, VerifyConfig
from sbe.config.commands import SearchOptions
from sbe.errors import SbeError
from sbe.index.search import SearchIndex, SearchResult
from sbe.settings import same_named
from sbe.stages.summary import Summary, Table
from sbe.storage import to_numpy_matrix

if TYPE_CHECKING:
    from sbe.verify.gallery import Gallery, RerankSettings
    from sbe.verify.local import LocalSettings


def local_settings(cfg: VerifyConfig) -> LocalSettings:
    """``[verify]`` -> the extraction/matching settings of :class:`~sbe.verify.local.LocalMatcher`
    (shared by ``index build --local-features``, ``search --rerank`` and ``evaluate --rerank``)."""
    from sbe.verify.local import LocalSettings

    return same_named(LocalSettings, cfg)  # the fields [verify] does not set keep their defaults


def rerank_settings(cfg: VerifyConfig, k: int | None = None) -> RerankSettings:
    """``[verify]`` -> :class:`~sbe.verify.gallery.RerankSettings` (``k`` overrides rerank_k)."""
    from sbe.verify.gallery import RerankSettings

    return same_named(RerankSettings, cfg, k=k or cfg.rerank_k)


def load_vectors(path: str | Path, embedding_column: str = "embedding") -> np.ndarray:
    """Query vectors from a file.

    Args:
        path: ``.npy`` (shape (D,) or (Q, D)), ``.json`` (a list of numbers or a list of
            lists) or ``.parquet`` (its ``embedding_column``, a fixed-size array column).
        embedding_column: the column read from a parquet file.

    Returns:
        float32 (Q, D).

    Raises:
        SbeError: one line naming the file and what is wrong with it.
    """
    p = Path(path)
    if not p.is_file():
        raise SbeError(f"vector file not found: {p}")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".json", ".parquet"):
        raise SbeError(f"{p}: vector files must be .npy, .json or .parquet")
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".json":
            arr = np.asarray(json.loads(p.read_text()), dtype=np.float32)
        else:
            names = pq.read_schema(p).names
            if embedding_column not in names:
                raise SbeError(f"{p}: no {embedding_column!r} column (columns: {', '.join(names)})")
            arr = to_numpy_matrix(pq.read_table(p, columns=[embedding_column])[embedding_column])
    except (ValueError, TypeError, KeyError, OSError, pa.ArrowException) as e:
        reason = " ".join(str(e).split())  # one line, whatever the library printed
        raise SbeError(f"{p}: cannot read query vectors: {reason}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise SbeError(f"{p}: expected a vector or a (Q, D) matrix, got shape {arr.shape}")
    return arr


#: the files a folder given to ``--image`` contributes (case-insensitive suffixes)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_GLOB_CHARS = frozenset("*?[")


def expand_images(specs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``--image`` values: files, folders and glob patterns.

    A folder contributes its image files (:data:`IMAGE_SUFFIXES`, not recursive), a pattern with
    ``*``, ``?`` or ``[`` its matches (``**`` recurses), each in sorted order; a file is itself.
    A file named twice is answered once (first place kept).

    Args:
        specs: the ``--image`` values, in order.

    Returns:
        Image paths in query order.

    Raises:
        SbeError: one line naming the first value that names nothing (a missing file or folder,
            a pattern without a match, a folder without images).
    """
    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
            )
            if not found:
                raise SbeError(
                    f"--image {p}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})"
                )
        elif p.is_file():
            found = [p]
        elif _GLOB_CHARS & set(str(spec)):
            found = [Path(f) for f in sorted(glob.glob(str(spec), recursive=True))]
            found = [f for f in found if f.is_file()]
            if not found:
                raise SbeError(f"--image {spec}: no file matches this pattern")
        else:
            raise SbeError(f"--image {p}: no such file or folder")
        out.extend(found)
    return list(dict.fromkeys(out))


def run_query(
    index_dir: str | Path,
    *,
    id_value: str | None = None,
    vector_file: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    k: int = 10,
    model_dir: str | Path | None = None,
    ef_search: int | None = None,
    exclude_self: bool = True,
    precision: str = "fp32",
    calibration: str | None = None,
    rerank: bool = False,
    rerank_k: int | None = None,
    verify: VerifyConfig | None = None,
    photos: str | Path | None = None,
) -> tuple[SearchIndex, list[str], SearchResult]:
    """Run exactly one kind of query.

    ``images`` may name files, folders and glob patterns (:func:`expand_images`); all of them are
    embedded in one call, so the model is loaded once.
    ``precision`` / ``calibration`` (image queries): ``int8`` embeds with the quantised backbone
    that ``sbe embed --precision int8`` calibrated (its manifest records the digest), so query
    and indexed vectors come from the same model.
    ``rerank`` (image and id queries): the global top ``rerank_k`` (default ``[verify]
    rerank_k``) are re-ordered by verified local matches (:func:`rerank_result`); each hit then
    has ``matches`` and ``score``. An index folder holding ``calibration.json`` adds
    ``same_building`` and ``same_building_probability`` to every hit (:func:`calibrate_result`).

    Returns:
        ``(index, labels, result)``: one label per query (``id=...``, ``vector i``, image path).
    """
    given = [x for x in (id_value, vector_file, images) if x]
    if len(given) != 1:
        raise SbeError("give exactly one of --id, --vector-file, --image")
    if k < 1:
        raise SbeError("--k must be at least 1")
    if rerank and vector_file is not None:
        raise SbeError("--rerank needs photos: query with --image or --id, not --vector-file")
    if rerank_k is not None and rerank_k < 1:
        raise SbeError("--rerank-k must be at least 1")
    verify = verify or VerifyConfig()
    kk = max(k, rerank_k or verify.rerank_k) if rerank else k
    # named files are checked before the index is read: a typo costs no loading
    paths = [str(p) for p in expand_images(images)] if images else []
    index = SearchIndex.load(index_dir, ef_search=ef_search)
    if id_value is not None:
        labels = [f"{index.info.id_column}={id_value}"]
        result = index.search_id(id_value, kk, exclude_self=exclude_self)
    elif vector_file is not None:
        vectors = load_vectors(vector_file, index.info.embedding_column)
        if vectors.shape[1] != index.dim:
            raise SbeError(
                f"{vector_file}: vectors have dimension {vectors.shape[1]}, the index "
                f"{index_dir} holds {index.dim}-d ones"
            )
        labels = [f"vector {i}" for i in range(len(vectors))]
        result = index.search(vectors, k)
    else:
        options: dict[str, Any] = {}
        if precision != "fp32":  # int8 (issue 19): the cached model of the embed run's sample
            if not calibration:
                raise SbeError(
                    f"--precision {precision} needs --calibration DIGEST: the 'calibration' that "
                    "`sbe embed --precision int8` recorded in its _manifest.json"
                )
            options = {"precision": precision, "calibration": calibration, "device": "cpu"}
        labels = paths
        result = index.search_images(paths, kk, model_dir=model_dir, **options)
    if rerank:
        gallery = open_gallery(index, photos=photos)
        if id_value is not None:
            rows = index.rows_of(id_value)
            queries: list[list[Any]] = [[p for ps in gallery.rows_photos(rows) for p in ps]]
            if not [p for p in queries[0] if p is not None]:
                raise SbeError(
                    f"--rerank: {labels[0]} has no photo to match (photos: {gallery.source}); "
                    "pass --photos FILE or build the index with --local-features"
                )
        else:
            queries = [[Path(p).read_bytes()] for p in paths]
        result = rerank_result(
            result,
            queries,
            gallery,
            local_settings(verify),
            rerank_settings(verify, rerank_k),
            labels=labels,
        ).head(k)
    return index, labels, calibrate_result(index, result)


def open_gallery(index: SearchIndex, *, photos: str | Path | None = None) -> Gallery:
    """Where re-ranking finds each row's photos: the index's ``local_features/`` store, else the
    photo parquet behind the index (features extracted at query time), else nothing (every
    candidate then keeps its global place, counted).

    Raises:
        SbeError: a store that is incomplete or of another build.
    """
    from sbe.index.photos import row_photo_reader
    from sbe.storage.artifacts import IndexDir
    from sbe.verify.gallery import Gallery, open_store

    root = index.root or Path.cwd()
    store = open_store(root / IndexDir.LOCAL_FEATURES, index.info.build_id)
    if store is not None:
        return Gallery(store=store)
    reader, _ = row_photo_reader(
        root,
        index.info.source.get("path"),
        index.info.id_column,
        index.table.column(index.info.id_column),
        photos,
    )
    return Gallery(photos=reader)


def rerank_result(
    result: SearchResult,
    queries: Sequence[Sequence[Any]],
    gallery: Gallery,
    settings: LocalSettings,
    rerank: RerankSettings,
    *,
    labels: Sequence[str] | None = None,
) -> SearchResult:
    """Re-order each query's global top ``rerank.k`` by verified local matches.

    Hits beyond ``rerank.k`` keep their global order after the re-ranked ones.

    Args:
        result: the global answer (k >= rerank.k columns, or fewer).
        queries: per query, its photos (bytes or stored features).
        gallery: :func:`open_gallery`.
        settings: extraction/matching settings (a store's extraction settings win).
        rerank: :class:`~sbe.verify.gallery.RerankSettings`.
        labels: query names for error messages.

    Returns:
        The result with ``matches`` (``None``: the candidate had no photo, global place kept;
        past ``rerank.k``: not checked) and ``score`` columns.

    Raises:
        SbeError: a query photo that does not decode (named by its label).
    """
    from sbe.verify.gallery import rerank_answer
    from sbe.verify.local import LocalMatcher

    matcher = LocalMatcher(gallery.settings_of(settings))
    try:
        return rerank_answer(result, queries, gallery, matcher, rerank)[0]
    except SbeError as e:
        raise SbeError(_name_query(str(e), labels)) from None


def _name_query(message: str, labels: Sequence[str] | None) -> str:
    """``query 2: ...`` -> ``<label of query 2>: ...``."""
    head, sep, rest = message.partition(":")
    q = head.removeprefix("query ")
    if (
        sep
        and labels is not None
        and head.startswith("query ")
        and q.isdigit()
        and int(q) < len(labels)
    ):
        return f"{labels[int(q)]}:{rest}"
    return message


def calibrate_result(index: SearchIndex, result: SearchResult) -> SearchResult:
    """Add ``same_building`` / ``same_building_probability`` when the index folder holds a
    ``calibration.json`` (matches are used when the calibration was fitted with them and the
    result was re-ranked; otherwise a match-based calibration answers ``None``).

    Raises:
        SbeError: the calibration file is not one.
    """
    from sbe.storage.artifacts import IndexDir
    from sbe.verify.same_building import load_calibration, with_same_building

    path = (index.root or Path.cwd()) / IndexDir.CALIBRATION
    return with_same_building(result, load_calibration(path))


def to_payload(
    index_dir: str | Path, index: SearchIndex, labels: list[str], result: SearchResult
) -> dict[str, Any]:
    """The ``--json`` answer: index summary, how it was made (``rerank``) and, per query, its
    hits (non-finite numbers as ``null``)."""

    def finite(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {
        "index": str(index_dir),
        "kind": index.info.kind,
        "count": index.info.count,
        "id_column": index.info.id_column,
        **result.notes,
        "queries": [
            {"query": label, "hits": [{k: finite(v) for k, v in h.items()} for h in result.hits(q)]}
            for q, label in enumerate(labels)
        ],
    }


def command(opts: SearchOptions, cfg: SbeConfig, **_: Any) -> tuple[dict[str, Any], Summary]:
    """``sbe search``: :func:`run_query` on ``--index`` (default: the index stage's output)."""
    index_dir = opts.index or cfg.resolved().index.output
    # the options are run_query's arguments, three of them spelled as on the command line
    renamed = {"id": "id_value", "image": "images", "model": "model_dir"}
    query = {renamed.get(k, k): v for k, v in opts if k not in ("index", "include_self")}
    idx, labels, result = run_query(
        index_dir, exclude_self=not opts.include_self, verify=cfg.verify, **query
    )
    payload = to_payload(index_dir, idx, labels, result)
    summary: Summary = [hits_table(q, opts.k) for q in payload["queries"]]
    if rr := payload.get("rerank"):
        summary.append(
            f"re-ranked the top {rr['k']} by verified matches ({rr['max_keypoints']} keypoints, "
            f"{rr['max_side']} px; photos: {rr['gallery']}) in {rr['seconds']:.2f} s; "
            f"{rr['missing']} candidate(s) without photos kept their global place"
        )
    return payload, summary


#: columns re-ranking and a calibration add, shown after the similarity (and their headings)
VERIFY_COLUMNS = {"matches": "matches", "score": "score", "same_building": "same"}
VERIFY_COLUMNS["same_building_probability"] = "p(same)"


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "same_building":
        return "yes" if value else "no"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def hits_table(query: dict[str, Any], k: int) -> Table:
    """One query's hits: rank, id, similarity, the verification columns, location, metadata."""
    hits = query["hits"]
    first = hits[0] if hits else {}
    verify = [c for c in VERIFY_COLUMNS if c in first]
    extra = [
        c for c in first if c not in ("rank", "id", "similarity", "lat", "lon", "row", *verify)
    ]
    columns = ["rank", "id", "similarity", *(VERIFY_COLUMNS[c] for c in verify), "lat", "lon"]
    table = Table(f"{query['query']}: top {k}", columns + extra)
    for h in hits:
        loc = [f"{h[c]:.6f}" if h[c] is not None else "-" for c in ("lat", "lon")]
        cells = [str(h["rank"]), str(h["id"]), f"{h['similarity']:.4f}"]
        table.rows.append(
            cells + [_cell(c, h[c]) for c in verify] + loc + [str(h[c]) for c in extra]
        )
    return table
