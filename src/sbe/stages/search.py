"""``sbe search``: nearest neighbours from an index directory, by id, vector file or image.

Not a pipeline stage (it writes nothing, so it has no :class:`~sbe.stages.base.Stage` class and
is not in the stage registry); it turns the CLI's query flags into one
:class:`~sbe.index.search.SearchIndex` call and a JSON-friendly answer. Every problem with a
query file is an :class:`~sbe.errors.SbeError` naming the file.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import SbeConfig
from sbe.config.commands import SearchOptions
from sbe.errors import SbeError
from sbe.index.search import SearchIndex, SearchResult
from sbe.stages.summary import Summary, Table
from sbe.storage import to_numpy_matrix


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
) -> tuple[SearchIndex, list[str], SearchResult]:
    """Run exactly one kind of query.

    ``images`` may name files, folders and glob patterns (:func:`expand_images`); all of them are
    embedded in one call, so the model is loaded once.
    ``precision`` / ``calibration`` (image queries): ``int8`` embeds with the quantised backbone
    that ``sbe embed --precision int8`` calibrated (its manifest records the digest), so query
    and indexed vectors come from the same model.

    Returns:
        ``(index, labels, result)``: one label per query (``id=...``, ``vector i``, image path).
    """
    given = [x for x in (id_value, vector_file, images) if x]
    if len(given) != 1:
        raise SbeError("give exactly one of --id, --vector-file, --image")
    if k < 1:
        raise SbeError("--k must be at least 1")
    # named files are checked before the index is read: a typo costs no loading
    paths = [str(p) for p in expand_images(images)] if images else []
    index = SearchIndex.load(index_dir, ef_search=ef_search)
    if id_value is not None:
        return (
            index,
            [f"{index.info.id_column}={id_value}"],
            index.search_id(id_value, k, exclude_self=exclude_self),
        )
    if vector_file is not None:
        vectors = load_vectors(vector_file, index.info.embedding_column)
        if vectors.shape[1] != index.dim:
            raise SbeError(
                f"{vector_file}: vectors have dimension {vectors.shape[1]}, the index "
                f"{index_dir} holds {index.dim}-d ones"
            )
        return index, [f"vector {i}" for i in range(len(vectors))], index.search(vectors, k)
    options: dict[str, Any] = {}
    if precision != "fp32":  # int8 (issue 19): the cached model of the embed run's sample
        if not calibration:
            raise SbeError(
                f"--precision {precision} needs --calibration DIGEST: the 'calibration' that "
                "`sbe embed --precision int8` recorded in its _manifest.json"
            )
        options = {"precision": precision, "calibration": calibration, "device": "cpu"}
    result = index.search_images(paths, k, model_dir=model_dir, **options)
    return index, paths, result


def to_payload(
    index_dir: str | Path, index: SearchIndex, labels: list[str], result: SearchResult
) -> dict[str, Any]:
    """The ``--json`` answer: index summary and, per query, its hits."""
    return {
        "index": str(index_dir),
        "kind": index.info.kind,
        "count": index.info.count,
        "id_column": index.info.id_column,
        "queries": [{"query": label, "hits": result.hits(q)} for q, label in enumerate(labels)],
    }


def command(opts: SearchOptions, cfg: SbeConfig, **_: Any) -> tuple[dict[str, Any], Summary]:
    """``sbe search``: :func:`run_query` on ``--index`` (default: the index stage's output)."""
    index_dir = opts.index or cfg.resolved().index.output
    # the options are run_query's arguments, three of them spelled as on the command line
    renamed = {"id": "id_value", "image": "images", "model": "model_dir"}
    query = {renamed.get(k, k): v for k, v in opts if k not in ("index", "include_self")}
    idx, labels, result = run_query(index_dir, exclude_self=not opts.include_self, **query)
    payload = to_payload(index_dir, idx, labels, result)
    return payload, [hits_table(q, opts.k) for q in payload["queries"]]


def hits_table(query: dict[str, Any], k: int) -> Table:
    """One query's hits: rank, id, similarity, location, then any metadata columns."""
    fixed = ["rank", "id", "similarity", "lat", "lon"]
    hits = query["hits"]
    extra = [c for c in (hits[0] if hits else {}) if c not in (*fixed, "row")]
    table = Table(f"{query['query']}: top {k}", [*fixed, *extra])
    for h in hits:
        loc = [f"{h[c]:.6f}" if h[c] is not None else "-" for c in ("lat", "lon")]
        table.rows.append(
            [
                str(h["rank"]),
                str(h["id"]),
                f"{h['similarity']:.4f}",
                *loc,
                *(str(h[c]) for c in extra),
            ]
        )
    return table
