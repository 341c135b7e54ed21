"""The clusters section: cluster sizes and pictures of each cluster's most central members."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.dataset as ds

from sbe.inference.sources import SOURCES_NAME
from sbe.report import readers
from sbe.report.gallery import Tile, image_bytes_by_id
from sbe.report.places import Places
from sbe.report.thumbs import ImageReadError, read_located, thumbnail_uri
from sbe.storage.artifacts import EmbedDir
from sbe.storage.parquet import read_parquet_rows


@dataclass
class ClusterSample:
    cluster: int
    size: int
    tiles: list[Tile]


@dataclass
class Clusters:
    method: str
    sizes: list[int]
    noise: int
    id_column: str
    samples: list[ClusterSample]
    images_note: str = ""


def _osmid_images(
    embeddings_dir: Path | None, osmids: Sequence[Any]
) -> tuple[dict[Any, bytes | None], str]:
    """One packaged image per OSMID, found through the embed output (``row_index``)."""
    try:
        folder = readers.need_dir(embeddings_dir, "embed output")
        embed = EmbedDir(folder)
        state = readers.read_json(embed.state_path, "embed state.json")
    except readers.Unavailable as e:
        return {}, str(e)
    # a photo input (folder, list, WebDataset): images by reference from sources.parquet
    photos = embed.path(SOURCES_NAME)
    source = photos if photos.is_file() else embed.input_path(state)  # moved-folder safe
    if source is None or not source.is_file():
        return {}, f"the embed input {source} is gone"
    parts = sorted(embed.path(EmbedDir.PARTS).glob("*.parquet"))
    if not parts:
        return {}, f"no embed parts in {folder}"
    columns = ["tar_file", "member_name", "tar_offset", "tar_size"] if photos.is_file() else []
    try:
        for f in parts:
            readers.require_columns(
                readers.parquet_schema(f, "embed part"), ["OSMID", "row_index"], f, "embed"
            )
        readers.require_columns(
            readers.parquet_schema(source, "embed input"),
            columns or ["image_bytes"],
            source,
            "embed",
        )
    except readers.Unavailable as e:
        return {}, str(e)
    table = ds.dataset([str(f) for f in parts], format="parquet").to_table(
        columns=["OSMID", "row_index"]
    )
    first: dict[Any, int] = {}
    for osmid, row in zip(
        table.column("OSMID").to_pylist(), table.column("row_index").to_pylist(), strict=True
    ):
        if osmid not in first or row < first[osmid]:
            first[osmid] = row
    wanted = {o: first[o] for o in osmids if o in first}
    got = read_parquet_rows(source, list(wanted.values()), columns or ["image_bytes"])
    if not columns:
        # image_bytes is a binary column: its values are bytes (or None when null)
        return {
            o: cast("bytes | None", got.get(r, {}).get("image_bytes")) for o, r in wanted.items()
        }, ""
    out: dict[Any, bytes | None] = {}
    for o, r in wanted.items():
        try:
            ref = got[r]
            out[o] = read_located(
                None,
                str(ref["tar_file"]),
                str(ref["member_name"]),
                int(ref["tar_offset"]),
                int(ref["tar_size"]),
            )
        except (ImageReadError, KeyError):
            out[o] = None
    return out, ""


def cluster_samples(
    clusters_dir: Path | None,
    embeddings_dir: Path | None,
    images_dir: Path | None,
    options: readers.ReportOptions | None = None,
    places: Places | None = None,
) -> Clusters:
    """Cluster sizes and the images of each cluster's most central members (rank_in_cluster).

    Args:
        options: ``max_clusters`` largest clusters, ``cluster_samples`` members each, thumbnails
            of ``thumb``.
        places: names the members' places in captions (with ``lat``/``lon`` in the
            assignments); ``None``: coordinates only.
    """
    o = options or readers.ReportOptions()
    places = places or Places()
    m = readers.manifest_of(clusters_dir, "cluster output", "cluster")
    assert clusters_dir is not None
    path = Path(clusters_dir) / "assignments.parquet"
    schema = readers.parquet_schema(path, "cluster assignments")
    id_col = m.extra.get("id_column") or schema.names[0]
    table = readers.read_parquet(
        path, "cluster assignments", "cluster", [id_col, "cluster", "rank_in_cluster"]
    )
    n = table.num_rows
    lat = lon = np.full(n, np.nan)
    if {"lat", "lon"} <= set(schema.names):
        loc = readers.read_parquet(path, "cluster assignments", "cluster", ["lat", "lon"])
        lat = loc.column("lat").to_numpy(zero_copy_only=False).astype(np.float64)
        lon = loc.column("lon").to_numpy(zero_copy_only=False).astype(np.float64)
    labels = table.column("cluster").to_numpy()
    ranks = table.column("rank_in_cluster").to_numpy()
    ids = table.column(id_col).to_pylist()
    sizes = [int(s) for s in m.extra.get("sizes") or np.bincount(labels[labels >= 0]).tolist()]
    order = np.argsort(-np.asarray(sizes), kind="stable")[: o.max_clusters]
    picked: dict[int, list[int]] = {}
    for c in order:
        members = np.flatnonzero((labels == c) & (ranks >= 0) & (ranks < o.cluster_samples))
        picked[int(c)] = members[np.argsort(ranks[members], kind="stable")].tolist()
    chosen = [ids[r] for rows in picked.values() for r in rows]
    note = ""
    blobs: dict[Any, bytes | str | None]
    if id_col == "OSMID":
        osm, note = _osmid_images(embeddings_dir, chosen)
        blobs = dict(osm)
    elif id_col == "image_id":
        blobs = dict(image_bytes_by_id(images_dir, [int(i) for i in chosen]))
    else:
        blobs, note = {}, f"no images for clusters of {id_col!r} ids"
    samples = []
    for c in order:
        tiles = []
        for r in picked[int(c)]:
            blob = blobs.get(ids[r])
            uri = (
                thumbnail_uri(blob, o.thumb.max_px, o.thumb.quality)
                if isinstance(blob, bytes)
                else None
            )
            located = bool(np.isfinite(lat[r]) and np.isfinite(lon[r]))
            tiles.append(
                Tile(
                    image_id=int(r),
                    building_id=ids[r] if isinstance(ids[r], int) else 0,
                    uri=uri,
                    rank=int(ranks[r]) + 1,
                    note=str(ids[r]),
                    place=(
                        places.caption(float(lat[r]), float(lon[r]))
                        if located
                        else f"{id_col} {ids[r]}, no location"
                    ),
                )
            )
        samples.append(ClusterSample(int(c), sizes[int(c)], tiles))
    return Clusters(
        method=str(m.extra.get("method", "")),
        sizes=sizes,
        noise=int(m.extra.get("noise", 0)),
        id_column=id_col,
        samples=samples,
        images_note=note,
    )
