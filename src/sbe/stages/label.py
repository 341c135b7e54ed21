"""``sbe label``: give photos a building identity from footprints (see docs/footprints.md).

Input: an ingest output folder (parts with ``camera_lat``, ``camera_lon``, ``heading``), a file of
building footprints (GeoParquet or GeoJSON, WGS84) and optionally a Mapillary-style GeoJSON whose
positions and compass angles replace the table's. Each photo is labelled with the first footprint
hit by the ray from its camera along its heading (:mod:`sbe.data.footprints`).

Output folder (``cfg.output``), usable by ``sbe backbone`` like an ingest folder:

- ``<ingest part name>.parquet``: the labelled photos, every ingest column kept, with the target
  columns filled: ``target_uid``/``target_id`` = the footprint's integer id, ``target_lat``/
  ``target_lon`` = the hit point on the facade, ``normal_*`` = the facade normal (toward the
  camera), ``camera_distance`` = the hit distance; plus ``footprint_id`` (the id as written in
  the footprint file), ``label_incidence_deg`` and ``label_ray_offset_deg``;
- ``_unlabelled.parquet``: ``image_id`` and ``reason`` of every photo left out;
- ``_buildings.parquet``: one row per labelled building (``target_uid``, ``footprint_id``,
  ``photos``, centroid lat/lon);
- ``_manifest.json``: counts by reason, the footprint file's checks, where the data came from.

Footprint identity is the building itself, so split with ``--identity target`` (grouping facade
points into buildings would merge neighbouring footprints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import LabelConfig
from sbe.data.camera_metadata import read_camera_metadata
from sbe.data.footprints import REASONS, Footprints, Labels, RaySettings, cast_rays
from sbe.data.footprints import read_footprints as _read_footprints
from sbe.errors import SbeError
from sbe.stages.base import Input, Stage, StageContext, stage_function
from sbe.storage import (
    Manifest,
    SkipLog,
    fingerprint_paths,
    list_parts,
    load_manifest,
    read_part_meta,
    write_parquet_atomic,
    write_part,
)
from sbe.storage.schemas import uid_str

STAGE = "label"
LABEL_FORMAT = 1
UNLABELLED = "_unlabelled.parquet"
BUILDINGS = "_buildings.parquet"
NEEDED = ("image_id", "camera_lat", "camera_lon", "heading")
NO_METADATA = "not_in_metadata"
PANORAMA = "panorama"
EXTRA_FIELDS = [
    pa.field("footprint_id", pa.string(), nullable=False),
    pa.field("label_incidence_deg", pa.float32(), nullable=False),
    pa.field("label_ray_offset_deg", pa.float32(), nullable=False),
]


def footprint_licence(fp: Footprints, given: str | None) -> str:
    """The data source key of the footprints for the model card (``sbe.models.published.card``)."""
    if given:
        return given
    ids = [str(i) for i in fp.ids[:1000]]
    column = fp.source.get("id_column", "").lower()
    osm_like = column.startswith("osm") or (
        ids and all(i[:1] in "wrn" and i[1:].isdigit() for i in ids)
    )
    if osm_like:
        return "osm_footprints"
    if ids and all(len(i) >= 32 and all(c in "0123456789abcdef-" for c in i.lower()) for i in ids):
        return "overture_footprints"
    return "footprints"


def _apply_metadata(
    table: pa.Table, meta: Any, status: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera lat, lon, heading from the metadata, matched by image id; marks misses/panoramas."""
    ids = table.column("image_id").to_numpy()
    order = np.argsort(meta.image_id, kind="stable")
    sorted_ids = meta.image_id[order]
    pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
    found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
    j = order[pos]
    lat = np.where(found, meta.lat[j] if len(j) else np.nan, np.nan)
    lon = np.where(found, meta.lon[j] if len(j) else np.nan, np.nan)
    head = np.where(found, meta.heading[j] if len(j) else np.nan, np.nan)
    status[~found] = 0
    pano = found & (meta.is_pano[j] if len(j) else False)
    status[pano] = 1
    return lat, lon, head


def _column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    arr = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(arr, dtype=np.float64)  # nulls are NaN


def _labelled_table(
    table: pa.Table, keep: np.ndarray, labels: Labels, fp: Footprints, cam: dict[str, np.ndarray]
) -> pa.Table:
    """The kept rows with the target columns filled (types of the input schema kept)."""
    idx = np.flatnonzero(keep)
    sub = table.take(pa.array(idx))
    f = labels.footprint[idx]
    uid = fp.uids(f)
    values: dict[str, Any] = {
        "target_uid": uid,
        "target_id": uid,
        "target_lat": labels.hit_lat[idx],
        "target_lon": labels.hit_lon[idx],
        "normal_x": labels.normal_e[idx],
        "normal_y": labels.normal_n[idx],
        "normal_z": np.zeros(len(idx)),
        "camera_distance": labels.distance_m[idx],
        "camera_lat": cam["lat"][idx],
        "camera_lon": cam["lon"][idx],
        "heading": cam["heading"][idx],
    }
    if "target_height" in sub.column_names:
        values["target_height"] = np.nan_to_num(_column(sub, "camera_height"), nan=0.0)
    for name, v in values.items():
        if name not in sub.column_names:
            continue
        i = sub.schema.get_field_index(name)
        field = sub.schema.field(i)
        sub = sub.set_column(i, field, pa.array(v).cast(field.type))
    extra = {
        "footprint_id": pa.array(fp.ids[f].astype(str), pa.string()),
        "label_incidence_deg": pa.array(labels.incidence_deg[idx], pa.float32()),
        "label_ray_offset_deg": pa.array(labels.offset_deg[idx], pa.float32()),
    }
    for field in EXTRA_FIELDS:
        if field.name in sub.column_names:
            sub = sub.drop_columns([field.name])
        sub = sub.append_column(field, extra[field.name])
    return sub


class LabelStage(Stage):
    """``sbe label``: see the module docstring."""

    name = "label"
    inputs = (Input("input", "ingest"),)

    def run(self, cfg: LabelConfig, ctx: StageContext) -> Manifest:
        """Label every photo of the ingest folder ``cfg.input`` with a footprint.

        Returns:
            The manifest (``rows``: photos in, labelled, buildings; ``skipped``: photos not
            labelled and footprints not used, by reason; ``extra``: the footprint file's checks,
            distance and incidence statistics, ``data_sources`` for the model card).

        Raises:
            SbeError: no ingest parts, a part without position/heading columns, an unreadable or
                non-WGS84 footprint file, no id column, or no photo labelled at all.
        """
        in_dir = Path(cfg.input)
        parts = list_parts(in_dir, what="ingest parts", hint=" (run `sbe ingest` first)")
        for p in parts:
            missing = [c for c in NEEDED if c not in pq.read_schema(p).names]
            if missing:
                raise SbeError(f"{p}: not an ingest part, it lacks columns {missing}")
        extra_inputs = [Path(cfg.footprints)] + ([Path(cfg.metadata)] if cfg.metadata else [])
        for f in extra_inputs:
            if not f.is_file():
                raise SbeError(f"{f}: file not found")
        done = ctx.check(fingerprint_paths([*parts, *extra_inputs]), format=LABEL_FORMAT)
        if done is not None:
            return done
        out = ctx.out_dir
        fp = _read_footprints(cfg.footprints, cfg.footprint_id_column)
        ctx.log(f"label: {len(fp):,} usable footprints of {fp.source['footprints']:,}")
        meta = read_camera_metadata(cfg.metadata, cfg.prefer_computed) if cfg.metadata else None
        settings = RaySettings(
            max_distance_m=cfg.max_distance_m,
            fov_tolerance_deg=cfg.fov_tolerance_deg,
            fov_step_deg=cfg.fov_step_deg,
            chunk=cfg.chunk_rows,
        )
        skips = SkipLog()
        reasons = (NO_METADATA, PANORAMA, *REASONS)
        unl_ids: list[np.ndarray] = []
        unl_reason: list[np.ndarray] = []
        n_in = n_out = 0
        dist: list[np.ndarray] = []
        inc: list[np.ndarray] = []
        fps: list[np.ndarray] = []
        lats: list[np.ndarray] = []
        lons: list[np.ndarray] = []
        written: list[str] = []
        with ctx.progress("label", len(parts), unit="parts") as bar:
            for p in parts:
                table = pq.read_table(p)
                n = table.num_rows
                n_in += n
                pre = np.full(n, -1, dtype=np.int8)  # index into (NO_METADATA, PANORAMA)
                if meta is not None:
                    lat, lon, head = _apply_metadata(table, meta, pre)
                    lat = np.where(pre < 0, lat, np.nan)  # rows without metadata are not cast
                else:
                    lat, lon = _column(table, "camera_lat"), _column(table, "camera_lon")
                    head = _column(table, "heading")
                labels = cast_rays(fp, lat, lon, head, settings)
                code = np.where(
                    pre >= 0,
                    pre,
                    np.where(labels.status < 0, -1, labels.status.astype(np.int16) + 2),
                ).astype(np.int16)
                keep = code < 0
                ids = table.column("image_id").to_numpy()
                for r in np.unique(code[~keep]):
                    sel = np.flatnonzero(code == r)
                    skips.add(reasons[r], uid_str(int(ids[sel[0]])), n=len(sel))
                unl_ids.append(ids[~keep])
                unl_reason.append(code[~keep])
                if keep.any():
                    cam = {"lat": lat, "lon": lon, "heading": head}
                    labelled = _labelled_table(table, keep, labels, fp, cam)
                    src = read_part_meta(p) or {}
                    part_meta = {
                        **{k: v for k, v in src.items() if k not in ("stage", "config_hash")},
                        "stage": STAGE,
                        "format": LABEL_FORMAT,
                        "config_hash": ctx.hash,
                        "ingest_stage": src.get("stage"),
                    }
                    write_part(labelled, out / p.name, part_meta)
                    written.append(p.name)
                    n_out += labelled.num_rows
                    dist.append(labels.distance_m[keep])
                    inc.append(labels.incidence_deg[keep])
                    fps.append(labels.footprint[keep])
                    lats.append(labels.hit_lat[keep])
                    lons.append(labels.hit_lon[keep])
                else:
                    (out / p.name).unlink(missing_ok=True)
                bar.advance(1)
        # parts of an earlier run on other inputs never survive
        for stale in out.glob("*.parquet"):
            if not stale.name.startswith(("_", ".")) and stale.name not in written:
                stale.unlink()
        if n_out == 0:
            raise SbeError(
                f"label: no photo of {in_dir} hit a footprint of {cfg.footprints} ("
                + ", ".join(f"{k}: {v:,}" for k, v in skips.counts.items())
                + "); check that both cover the same area and that headings are compass bearings"
            )
        all_ids = np.concatenate(unl_ids)
        all_reason = np.concatenate(unl_reason)
        write_parquet_atomic(
            pa.table(
                {
                    "image_id": pa.array(all_ids, pa.int64()),
                    "reason": pa.array([reasons[r] for r in all_reason], pa.string()),
                }
            ),
            out / UNLABELLED,
        )
        buildings = _building_table(
            np.concatenate(fps), np.concatenate(lats), np.concatenate(lons), fp
        )
        write_parquet_atomic(buildings, out / BUILDINGS)
        d, a = np.concatenate(dist), np.concatenate(inc)
        sources = [_source_of(Path(cfg.footprints), footprint_licence(fp, cfg.footprint_licence))]
        if cfg.metadata is not None:
            sources.append(_source_of(Path(cfg.metadata), "mapillary"))
        ingest = load_manifest(in_dir)
        extra: dict[str, Any] = {
            "footprints": {**fp.source, "skipped": fp.skips.counts, "examples": fp.skips.examples},
            "metadata": (
                {"path": str(cfg.metadata), "fields_used": meta.used} if meta is not None else None
            ),
            "distance_m": _quantiles(d),
            "incidence_deg": _quantiles(a),
            "unlabelled_by_reason": dict(sorted(skips.counts.items())),
            "data_sources": sorted(
                {*sources, *(ingest.extra.get("data_sources", []) if ingest else [])}
            ),
            "split_hint": "footprint ids are building identities: split with --identity target",
        }
        ctx.results.update({"labelled": n_out, "photos": n_in, **extra["unlabelled_by_reason"]})
        ctx.log(
            f"label: {n_out:,} of {n_in:,} photos labelled ({n_out / max(n_in, 1):.1%}); "
            + ", ".join(f"{k}: {v:,}" for k, v in sorted(skips.counts.items()))
        )
        return ctx.commit(
            outputs=[*written, UNLABELLED, BUILDINGS],
            rows={"photos": n_in, "labelled": n_out, "buildings": buildings.num_rows},
            skips=skips,
            extra=extra,
        )


def _source_of(path: Path, otherwise: str) -> str:
    """``synthetic`` for a file that ``sbe synth`` wrote (its folder's manifest), else ``otherwise``."""
    m = load_manifest(path.parent)
    return "synthetic" if m is not None and m.stage == "synth" else otherwise


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    q = np.quantile(x, [0.1, 0.5, 0.9])
    return {
        "p10": round(float(q[0]), 2),
        "median": round(float(q[1]), 2),
        "p90": round(float(q[2]), 2),
    }


def _building_table(
    footprint: np.ndarray, lat: np.ndarray, lon: np.ndarray, fp: Footprints
) -> pa.Table:
    """One row per labelled building: id, photos, mean hit position (degrees)."""
    uid = fp.uids(footprint)
    u, first, inv, counts = np.unique(
        uid, return_index=True, return_inverse=True, return_counts=True
    )
    mlat = np.bincount(inv, weights=lat) / counts
    mlon = np.bincount(inv, weights=lon) / counts  # one building is metres wide: no seam issue
    return pa.table(
        {
            "target_uid": pa.array(u, pa.int64()),
            "footprint_id": pa.array(fp.ids[footprint[first]].astype(str), pa.string()),
            "photos": pa.array(counts, pa.int32()),
            "lat": pa.array(mlat, pa.float64()),
            "lon": pa.array(mlon, pa.float64()),
        }
    )


run = stage_function(LabelStage)
