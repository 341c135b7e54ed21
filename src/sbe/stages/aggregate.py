"""Stage ``aggregate``: per-image embeddings -> one vector per building (OSMID).

Output folder::

    buildings.parquet      OSMID, image_count, embedding (mean re-normalised, fixed-size float32)
                           [+ lat, lon when locations are known]
    buildings.geoparquet   the located buildings with a WKB point ``geometry`` (EPSG:4326), for
                           GeoPandas, DuckDB and QGIS; only when locations are known
    _manifest.json

Locations come from ``--locations`` (a parquet with OSMID, lat, lon) or, failing that, from
``lat``/``lon`` columns of the packaged input the embeddings were made from. Several embed
folders can be given: the shards of one sharded run (``sbe embed --shard K/N``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.config import AggregateConfig, section_dict
from sbe.errors import SbeError
from sbe.inference.buildings import (
    buildings_table,
    geoparquet_table,
    location_columns,
    mean_embeddings,
    mean_locations,
)
from sbe.inference.pipeline import PARTS_DIR
from sbe.stages.base import Input, Stage, StageContext
from sbe.storage import (
    DirLock,
    Manifest,
    SkipLog,
    StageTimer,
    clean_stale_temps,
    config_hash,
    fingerprint_paths,
    manifest_is_current,
    write_manifest,
    write_parquet_atomic,
)
from sbe.storage.schemas import OSMID, buildings_schema

STAGE = "aggregate"
BUILDINGS = "buildings.parquet"
GEOPARQUET = "buildings.geoparquet"
STATE_NAME = "state.json"  # written by the embed stage


def read_embed_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_NAME
    if not path.is_file():
        raise SbeError(f"{folder} is not an `sbe embed` output (no {STATE_NAME})")
    state = json.loads(path.read_text())
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


def _location_source(cfg: AggregateConfig, state: dict[str, Any]) -> tuple[Path, str, str] | None:
    if cfg.locations is not None:
        path = Path(cfg.locations)
        if not path.is_file():
            raise SbeError(f"--locations {path} not found")
        cols = location_columns(pq.read_schema(path))
        if cols is None:
            raise SbeError(f"--locations {path} needs columns OSMID, lat and lon")
        return path, *cols
    path = Path(state["input"]["path"])
    if path.is_file():
        cols = location_columns(pq.read_schema(path))
        if cols is not None:
            return path, *cols
    return None


def run(cfg: AggregateConfig) -> Manifest:
    """Average the embeddings per OSMID and write ``buildings.parquet`` (+ GeoParquet).

    Raises:
        SbeError: an input folder is not a finished embed output, or shards do not match.
    """
    timer = StageTimer()
    folders = [Path(p) for p in cfg.input]
    states = [read_embed_state(f) for f in folders]
    check_shards(folders, states)
    parts = sorted(
        (p for f in folders for p in (f / PARTS_DIR).glob("rows-*.parquet")),
        key=lambda p: p.name,
    )
    dim = int(states[0]["model"]["dim"])
    loc = _location_source(cfg, states[0])
    inputs = fingerprint_paths(parts + ([loc[0]] if loc else []))
    settings = section_dict(cfg)
    h = config_hash(settings)
    out = Path(cfg.output)
    with DirLock(out):
        clean_stale_temps(out)
        current = manifest_is_current(out, STAGE, h, inputs)
        if current is not None:
            return current
        id_type = pq.read_schema(parts[0]).field(OSMID).type if parts else pa.int64()
        vectors = mean_embeddings(parts, dim, id_type)
        skips = SkipLog()
        if vectors.null_ids:
            skips.add("null OSMID", n=vectors.null_ids)
        outputs = [BUILDINGS]
        located_n = 0
        if loc is None:
            table = buildings_table(vectors, buildings_schema(id_type, dim, with_location=False))
            write_parquet_atomic(table, out / BUILDINGS)
            (out / GEOPARQUET).unlink(missing_ok=True)
        else:
            path, lat_col, lon_col = loc
            batches = pq.ParquetFile(path).iter_batches(
                batch_size=65536, columns=[OSMID, lat_col, lon_col]
            )
            try:
                loc_ids, lat_all, lon_all = mean_locations(batches, lat_col, lon_col, id_type)
            except ValueError as e:
                raise SbeError(f"{path}: {e}") from None
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
        manifest = Manifest(
            stage=STAGE,
            config=settings,
            config_hash=h,
            inputs=inputs,
            outputs=outputs,
            rows={
                "images": int(vectors.counts.sum()),
                "buildings": len(vectors.keys),
                "located buildings": located_n,
            },
            wall_seconds=timer.seconds,
            extra={
                "model": states[0]["model"],
                "embed_dirs": [str(f) for f in folders],
                "locations": str(loc[0]) if loc else None,
            },
        ).with_skips(skips)
        write_manifest(out, manifest)
        return manifest


class AggregateStage(Stage):
    """``sbe aggregate``: see the module docstring."""

    name = "aggregate"
    inputs = (Input("input", "embed", follows=True),)
    examples = ("sbe aggregate --in work/embeddings --out work/buildings",)
    legacy = True  # not yet on StageContext: locks and commits by itself

    def run(self, cfg: Any, ctx: StageContext) -> Manifest:
        return run(cfg)
