"""Stage ``aggregate``: per-image embeddings -> one vector per building (OSMID).

Output folder::

    buildings.parquet      OSMID, image_count, embedding (mean re-normalised, fixed-size float32)
                           [+ lat, lon when locations are known]
    buildings.geoparquet   the located buildings with a WKB point ``geometry`` (EPSG:4326), for
                           GeoPandas, DuckDB and QGIS; only when locations are known
    _manifest.json

Locations come from ``--locations`` (a parquet with OSMID, lat, lon) or, failing that, from the
camera positions in ``sources.parquet`` (a photo input) or the ``lat``/``lon`` columns of the
packaged input the embeddings were made from. Several embed
folders can be given: the shards of one sharded run (``sbe embed --shard K/N``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.config import AggregateConfig
from sbe.errors import SbeError
from sbe.inference.buildings import (
    buildings_table,
    geoparquet_table,
    id_value_type,
    location_columns,
    mean_embeddings,
    mean_locations,
)
from sbe.inference.sources import SOURCES_NAME
from sbe.stages.base import Input, Stage, StageContext, stage_function
from sbe.storage import Manifest, SkipLog, fingerprint_paths, write_parquet_atomic
from sbe.storage.artifacts import BuildingsDir, EmbedDir, relpath
from sbe.storage.schemas import OSMID, buildings_schema

STAGE = "aggregate"
BUILDINGS = BuildingsDir.BUILDINGS
GEOPARQUET = BuildingsDir.GEOPARQUET
STATE_NAME = EmbedDir.STATE  # written by the embed stage


def read_embed_state(folder: Path) -> dict[str, Any]:
    """A finished embed run's ``state.json`` (see :meth:`EmbedDir.state`)."""
    state = EmbedDir(folder).state()
    if state.get("status") != "complete":
        c = state.get("counters", {})
        raise SbeError(
            f"{folder}: the embedding run is not finished ({c.get('chunks_done')} of "
            f"{c.get('chunks_total')} parts); rerun `sbe embed` to complete it first"
        )
    return state


def check_shards(folders: list[Path], states: list[dict[str, Any]]) -> None:
    """Several folders must be the complete set of shards of one run (same input and model)."""
    if len(states) == 1:
        s = states[0]["settings"]
        if s.get("shard_count", 1) != 1:
            raise SbeError(
                f"{folders[0]} is shard {s['shard_index']} of {s['shard_count']}; pass all "
                "shard folders to aggregate"
            )
        return
    first = states[0]
    for f, s in zip(folders[1:], states[1:], strict=True):
        for key in ("size", "mtime_ns", "num_rows", "schema"):
            if s["input"].get(key) != first["input"].get(key):
                raise SbeError(f"{f} embeds a different input than {folders[0]}")
        if s["model"].get("fingerprint") != first["model"].get("fingerprint"):
            raise SbeError(f"{f} was embedded with a different model than {folders[0]}")
    counts = {s["settings"].get("shard_count", 1) for s in states}
    indices = sorted(s["settings"].get("shard_index", 0) for s in states)
    if len(counts) != 1 or indices != list(range(next(iter(counts)))):
        raise SbeError(
            f"the folders are not one complete set of shards (shard_count {sorted(counts)}, "
            f"shard indices {indices})"
        )


def _location_columns(path: Path, flag: str) -> tuple[Path, str, str] | None:
    """``(path, lat column, lon column)`` of a location table, ``None`` if it has no locations.

    Raises:
        SbeError: ``path`` is not a readable parquet file.
    """
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise SbeError(f"{flag}{path} is not a readable parquet file ({e})") from None
    cols = location_columns(schema)
    return None if cols is None else (path, *cols)


def _has_values(path: Path, column: str) -> bool:
    """Whether a parquet column holds any non-null value (footer statistics, else a read)."""
    pf = pq.ParquetFile(path)
    md = pf.metadata
    i = pf.schema_arrow.get_field_index(column)
    nulls = 0
    for g in range(md.num_row_groups):
        stats = md.row_group(g).column(i).statistics
        if stats is None or not stats.has_null_count:
            return pq.read_table(path, columns=[column]).column(0).null_count < md.num_rows
        nulls += stats.null_count
    return nulls < md.num_rows


def _location_source(
    cfg: AggregateConfig, embed: EmbedDir, state: dict[str, Any]
) -> tuple[Path, str, str] | None:
    """Where building locations come from: ``--locations``, else the photo index of a folder
    input (``sources.parquet``, when it has coordinates), else the packaged input, else none."""
    if cfg.locations is not None:
        path = Path(cfg.locations)
        if not path.is_file():
            raise SbeError(
                f"--locations {path} not found: give a parquet file with OSMID, lat, lon"
            )
        found = _location_columns(path, "--locations ")
        if found is None:
            raise SbeError(
                f"--locations {path} needs columns OSMID, lat and lon (has: "
                f"{', '.join(pq.read_schema(path).names)})"
            )
        return found
    sources = embed.root / SOURCES_NAME
    if sources.is_file():
        found = _location_columns(sources, "the photo index ")
        return found if found is not None and _has_values(sources, found[1]) else None
    if "listing" in state["input"]:  # a photo input's own list file
        return None
    packaged = embed.input_path(state)  # resolved: the work folder may have moved since
    if packaged is None or not packaged.is_file():
        return None
    return _location_columns(packaged, "the embedded input ")


def _mean_locations(
    path: Path, lat_col: str, lon_col: str, id_type: pa.DataType
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """:func:`mean_locations` over a parquet file; any problem is one line naming the file."""
    try:
        batches = pq.ParquetFile(path).iter_batches(
            batch_size=65536, columns=[OSMID, lat_col, lon_col]
        )
        return mean_locations(batches, lat_col, lon_col, id_type)
    except (ValueError, OSError, pa.ArrowException) as e:
        raise SbeError(f"{path}: cannot read building locations: {e}") from None


class AggregateStage(Stage):
    """``sbe aggregate``: see the module docstring."""

    name = "aggregate"
    inputs = (Input("input", "embed", follows=True),)

    def run(self, cfg: AggregateConfig, ctx: StageContext) -> Manifest:
        """Average the embeddings per OSMID and write ``buildings.parquet`` (+ GeoParquet).

        Returns:
            The manifest (``rows``: images, buildings, located buildings; ``extra["model"]``:
            the model identity the embed stage recorded, which later stages read).

        Raises:
            SbeError: an input folder is not a finished embed output, shards do not match, or
                the location table is unreadable.
        """
        folders = [Path(p) for p in cfg.input]
        embed = EmbedDir(folders[0])
        states = [read_embed_state(f) for f in folders]
        check_shards(folders, states)
        parts = sorted(
            (p for f in folders for p in (f / EmbedDir.PARTS).glob("rows-*.parquet")),
            key=lambda p: p.name,
        )
        dim = int(states[0]["model"]["dim"])
        loc = _location_source(cfg, embed, states[0])
        read = [EmbedDir(f).state_path for f in folders] + parts + ([loc[0]] if loc else [])
        if (done := ctx.check(fingerprint_paths(read))) is not None:
            return done
        out = ctx.out_dir
        id_type = pq.read_schema(parts[0]).field(OSMID).type if parts else pa.int64()
        id_type = id_value_type(id_type)
        vectors = mean_embeddings(parts, dim, id_type)
        skips = SkipLog()
        if vectors.null_ids:
            skips.add("null OSMID", n=vectors.null_ids)
        if vectors.nonfinite_ids:
            skips.add("NaN or infinite OSMID", n=vectors.nonfinite_ids)
        outputs = [BUILDINGS]
        located_n = 0
        if loc is None:
            table = buildings_table(vectors, buildings_schema(id_type, dim, with_location=False))
            write_parquet_atomic(table, out / BUILDINGS)
            (out / GEOPARQUET).unlink(missing_ok=True)
        else:
            path, lat_col, lon_col = loc
            loc_ids, lat_all, lon_all = _mean_locations(path, lat_col, lon_col, id_type)
            pos = pc.index_in(vectors.keys, value_set=loc_ids).to_numpy(zero_copy_only=False)
            located = ~np.isnan(pos.astype(np.float64))
            take = np.where(located, pos, 0).astype(np.int64)
            lat = lat_all[take] if len(lat_all) else np.zeros(len(take))
            lon = lon_all[take] if len(lon_all) else np.zeros(len(take))
            table = buildings_table(
                vectors, buildings_schema(id_type, dim, with_location=True), lat, lon, located
            )
            write_parquet_atomic(table, out / BUILDINGS)
            keep = np.flatnonzero(located)
            geo = geoparquet_table(table.take(pa.array(keep)), lat[keep], lon[keep])
            write_parquet_atomic(geo, out / GEOPARQUET)
            outputs.append(GEOPARQUET)
            located_n = len(keep)
            if len(keep) < len(located):
                skips.add("no location (not in the GeoParquet)", n=int(len(located) - len(keep)))
        return ctx.commit(
            outputs=outputs,
            rows={
                "images": int(vectors.counts.sum()),
                "buildings": len(vectors.keys),
                "located buildings": located_n,
            },
            skips=skips,
            # paths relative to this folder (BuildingsDir resolves them): the folder may move
            extra={
                "model": _relative_model(states[0]["model"], embed, out),
                "embed_dirs": [relpath(f, out) for f in folders],
                "locations": relpath(loc[0], out) if loc else None,
            },
        )


def _relative_model(model: dict[str, Any], embed: EmbedDir, out: Path) -> dict[str, Any]:
    """The embed run's model identity with its folder relative to ``out`` (when it exists)."""
    model_dir = embed.model_dir()
    if model_dir is None or not model_dir.exists():
        return model
    return {**model, "model_dir": relpath(model_dir, out)}


run = stage_function(AggregateStage)
