"""The retrieval gallery: seeded test queries with their top-k by the trained projector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbe.mining.topk import top_k_excluding_self
from sbe.report.places import Places
from sbe.report.readers import (
    ReportOptions,
    Unavailable,
    need_dir,
    parquet_schema,
    read_parquet,
    require_columns,
)
from sbe.report.thumbs import (
    LOCATION_COLUMNS,
    MEMBER_COLUMN,
    ImageReadError,
    image_locations,
    read_located,
    thumbnail_uri,
)
from sbe.storage import to_numpy_matrix


def pick_queries(building_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` seeded query rows among the rows whose building has another row (sorted draw order).

    Returns:
        int64 row indices, at most ``n`` (fewer when fewer rows qualify).
    """
    building_ids = np.asarray(building_ids)
    _, inverse, counts = np.unique(building_ids, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(counts[inverse] >= 2)
    if len(eligible) == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(n, len(eligible)), replace=False)).astype(np.int64)


@dataclass
class Tile:
    """One picture of the gallery: an image with its building and, for results, whether it is right."""

    image_id: int
    building_id: int
    uri: str | None
    rank: int = 0
    similarity: float | None = None
    correct: bool | None = None
    note: str = ""
    #: where it is, for people: city and coordinates, or coordinates (see :mod:`.places`)
    place: str = ""


@dataclass
class GalleryQuery:
    """A query image with its top-k by the projector (and the backbone's top-1 for comparison)."""

    query: Tile
    results: list[Tile]
    backbone_top1_correct: bool | None = None
    #: what the page's place filter groups by: the query's city, else its 1° cell
    group: str = ""

    @property
    def first_right_rank(self) -> int | None:
        """Rank of the first result of the query's building (``None``: none in the top k)."""
        return next((t.rank for t in self.results if t.correct), None)


@dataclass
class Gallery:
    queries: list[GalleryQuery]
    test_images: int
    missing_images: int


def ingest_parts(folder: Path) -> list[Path]:
    """The ingest parts of ``folder`` after checking each is readable parquet with the location columns.

    Raises:
        Unavailable: no parts, or a part is not readable parquet.
        Malformed: a part lacks a location column.
    """
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise Unavailable(f"no ingest parts (*.parquet) in {folder}")
    for f in files:
        require_columns(parquet_schema(f, "ingest part"), LOCATION_COLUMNS, f, "ingest")
    return files


def image_bytes_by_id(images_dir: Path | None, image_ids: Sequence[int]) -> dict[int, bytes | str]:
    """Image bytes by id (a tar member by one positional read, or a file of an image-folder
    source), or a reason string when not readable."""
    out: dict[int, bytes | str] = {}
    ids = [int(i) for i in image_ids]
    try:
        folder = need_dir(images_dir, "ingest output")
        parts = ingest_parts(folder)
    except Unavailable as e:
        return dict.fromkeys(ids, str(e))
    loc = image_locations(folder, ids, files=parts)
    tars = loc.column("tar_file").to_pylist()
    names = loc.column_names
    members = loc.column(MEMBER_COLUMN).to_pylist() if MEMBER_COLUMN in names else [""] * len(tars)
    offs = loc.column("tar_offset").to_numpy()
    sizes = loc.column("tar_size").to_numpy()
    for i, image_id in enumerate(loc.column("image_id").to_numpy()):
        try:
            out[int(image_id)] = read_located(
                folder, tars[i], members[i], int(offs[i]), int(sizes[i])
            )
        except ImageReadError as e:
            out[int(image_id)] = str(e)
    for i in ids:
        out.setdefault(i, "not in the ingest output")
    return out


def retrieval_gallery(
    split_dir: Path | None,
    run_dir: Path | None,
    images_dir: Path | None,
    options: ReportOptions | None = None,
    places: Places | None = None,
) -> Gallery:
    """Seeded test queries with their top-k by the trained projector (cosine, query excluded).

    Args:
        options: ``gallery_queries`` queries drawn with ``seed``, ``gallery_k`` results each,
            thumbnails of ``thumb``.
        places: names places in captions (a synthetic world's cities); ``None``: coordinates.
    """
    o = options or ReportOptions()
    places = places or Places()
    folder = need_dir(split_dir, "split output")
    test = folder / "test.parquet"
    best = need_dir(run_dir, "training run") / "best"
    if not (best / "config.json").is_file():
        raise Unavailable(f"no trained projector in {best}")
    from sbe.models.projector import Projector

    table = read_parquet(test, "test split", "split", ["building_id", "image_id", "embedding"])
    located = {"target_lat", "target_lon"} <= set(parquet_schema(test, "test split").names)
    lat = lon = np.full(table.num_rows, np.nan)
    if located:
        loc = read_parquet(test, "test split", "split", ["target_lat", "target_lon"])
        lat = loc.column("target_lat").to_numpy(zero_copy_only=False).astype(np.float64)
        lon = loc.column("target_lon").to_numpy(zero_copy_only=False).astype(np.float64)
    if table.num_rows < 2:
        raise Unavailable(f"{test} has fewer than two images")
    building = table.column("building_id").to_numpy()
    image_ids = table.column("image_id").to_numpy()
    backbone = to_numpy_matrix(table.column("embedding"), np.float32)
    projector = Projector.from_pretrained(best)
    if backbone.shape[1] != projector.config.input_dim:
        raise Unavailable(
            f"the test embeddings are {backbone.shape[1]}-d; the projector expects "
            f"{projector.config.input_dim}-d"
        )
    q = pick_queries(building, o.gallery_queries, o.seed)
    if len(q) == 0:
        raise Unavailable("no test building has two images: nothing to retrieve")
    rows, sims = top_k_excluding_self(projector.project(backbone), q, o.gallery_k)
    b_rows, _ = top_k_excluding_self(backbone, q, 1)
    wanted = np.unique(np.concatenate([image_ids[q], image_ids[rows.reshape(-1)]]))
    data = image_bytes_by_id(images_dir, wanted.tolist())
    uris: dict[int, str | None] = {}
    notes: dict[int, str] = {}
    for image_id, blob in data.items():
        if isinstance(blob, bytes):
            uris[image_id] = thumbnail_uri(blob, o.thumb.max_px, o.thumb.quality)
            if uris[image_id] is None:
                notes[image_id] = "does not decode"
        else:
            uris[image_id], notes[image_id] = None, blob

    def tile(row: int, **kw: Any) -> Tile:
        iid = int(image_ids[row])
        place = places.caption(float(lat[row]), float(lon[row]))
        return Tile(
            iid, int(building[row]), uris.get(iid), note=notes.get(iid, ""), place=place, **kw
        )

    out = []
    for i, qr in enumerate(q):
        results = [
            tile(
                int(r),
                rank=j + 1,
                similarity=float(sims[i, j]),
                correct=bool(building[r] == building[qr]),
            )
            for j, r in enumerate(rows[i])
        ]
        out.append(
            GalleryQuery(
                query=tile(int(qr)),
                results=results,
                backbone_top1_correct=bool(building[b_rows[i, 0]] == building[qr]),
                group=places.group(float(lat[qr]), float(lon[qr])),
            )
        )
    return Gallery(
        queries=out,
        test_images=table.num_rows,
        missing_images=sum(1 for u in uris.values() if u is None),
    )
