"""``sbe split``: merge backbone parts into ``train``/``val``/``test`` by building and by geography.

Pass 1 reads only the small identity and geometry columns of every part, groups targets into
identities (buildings or raw targets), puts each identity in the grid cell of its centroid and each
cell in a split by a salted hash. Pass 2 streams record batches (embeddings included) from the parts
in a fixed order into one writer per split, so memory stays bounded by a batch and the row order is
deterministic (part name, then row).

Identities with a single image cannot give an anchor/positive pair: they are dropped from train and
val; in test they are kept as gallery distractors (``singletons_in_test``, counted either way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import SplitConfig
from sbe.data.geosplit import assign_splits, cell_ids, nearest_distance_m
from sbe.data.identity import (
    Identities,
    group_targets,
    identities_from_labels,
    identity_extent_m,
    unit_normals,
)
from sbe.data.parquet_stream import StreamingPart
from sbe.errors import SbeError
from sbe.sphere import latlon_to_unit, unit_to_latlon
from sbe.stages.base import Input, Stage, StageContext, stage_function
from sbe.stages.summary import Summary
from sbe.storage import Manifest, SkipLog, fingerprint_paths
from sbe.storage.artifacts import BackboneDir, SplitDir
from sbe.storage.schemas import CARRIED_FIELDS, SPLITS, split_schema, uid_str

STAGE = "split"
PASS1_COLUMNS = [
    "image_id",
    "target_uid",
    "target_lat",
    "target_lon",
    "normal_x",
    "normal_y",
    "normal_z",
]
READ_BATCH_ROWS = 4_096  # smaller batches measured 30% lower peak RSS at 1280-d float16
DROPPED = -1


def _embedding_type(parts: list[Path]) -> pa.DataType:
    """The embedding column type shared by every part (a mixed input is an error)."""
    seen: pa.DataType | None = None
    needed = [f.name for f in CARRIED_FIELDS] + ["embedding"]
    for p in parts:
        schema = pq.read_schema(p)
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise SbeError(f"{p.name}: missing columns {missing} (is this a backbone output?)")
        t = schema.field("embedding").type
        if not pa.types.is_fixed_size_list(t):
            raise SbeError(f"{p.name}: embedding must be a fixed-size array, got {t}")
        if seen is not None and t != seen:
            raise SbeError(f"{p.name}: embedding type {t} differs from the other parts' {seen}")
        seen = t
    assert seen is not None
    return seen


@dataclass
class Plan:
    """Pass-1 result: what to keep and where every target goes."""

    n_rows: int
    rows_per_part: list[int]
    keep_row: np.ndarray  # bool (n_rows,), global row order
    target_uid: np.ndarray  # int64 (T,) sorted
    target_split: np.ndarray  # int8 (T,), -1 = dropped
    target_building: np.ndarray  # int64 (T,)
    target_cell: np.ndarray  # int64 (T,)
    stats: dict[str, Any]
    expected_rows: dict[str, int]


def _read_identity_columns(parts: list[Path]) -> tuple[dict[str, np.ndarray], list[int]]:
    cols: dict[str, list[np.ndarray]] = {c: [] for c in PASS1_COLUMNS}
    rows_per_part = []
    for p in parts:
        table = pq.read_table(p, columns=PASS1_COLUMNS)
        rows_per_part.append(table.num_rows)
        for c in PASS1_COLUMNS:
            cols[c].append(table.column(c).to_numpy())
    return {c: np.concatenate(v) for c, v in cols.items()}, rows_per_part


def identity_rule(cfg: SplitConfig, in_dir: BackboneDir) -> str:
    """``building`` or ``target``: ``auto`` is ``target`` when the input went through ``sbe label``.

    A labelled photo's target is its footprint, already one building: grouping nearby targets
    would merge neighbouring houses into one identity.
    """
    if cfg.identity != "auto":
        return cfg.identity
    return "target" if "label" in in_dir.lineage().stages else "building"


def plan_split(parts: list[Path], cfg: SplitConfig, skips: SkipLog) -> Plan:
    """Pass 1: decide identity, cell and split of every target from the small columns only.

    Targets without any position (NaN or null target lat/lon in every image, e.g. photos with a
    building id but no coordinates) stay their own identity and are split by a salted hash of
    their id, since no geographic cell exists for them (``unlocated`` in the manifest). When the
    configured cell size leaves val or test without images (a small area), cells are halved until
    every split gets some, and the manifest and the log say so.
    """
    cols, rows_per_part = _read_identity_columns(parts)
    n = len(cols["image_id"])
    lat, lon = cols["target_lat"].astype(np.float64), cols["target_lon"].astype(np.float64)
    missing = ~np.isfinite(lat) | ~np.isfinite(lon)
    valid = ~missing & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    bad = ~missing & ~valid
    if bad.any():
        skips.add(
            "bad_target_position",
            uid_str(cols["image_id"][np.flatnonzero(bad)[0]]),
            n=int(bad.sum()),
        )
    usable = valid | missing
    # duplicate image ids: the first occurrence (part order, then row order) wins
    keep = usable.copy()
    ids = cols["image_id"]
    _, first = np.unique(np.where(usable, ids, np.iinfo(np.int64).min), return_index=True)
    is_first = np.zeros(n, dtype=bool)
    is_first[first] = True
    dup = usable & ~is_first
    if dup.any():
        skips.add("duplicate_image_id", uid_str(ids[np.flatnonzero(dup)[0]]), n=int(dup.sum()))
        keep &= ~dup

    # one record per target: mean position (of the images that have one) and mean normal
    uids, inv = np.unique(cols["target_uid"][keep], return_inverse=True)
    n_targets = len(uids)
    images_per_target = np.bincount(inv, minlength=n_targets)
    located_row = valid[keep]
    unit = latlon_to_unit(lat[keep], lon[keep])
    raw_normals = np.stack([cols[c][keep] for c in ("normal_x", "normal_y", "normal_z")], 1)
    # an image with a bad normal contributes nothing; a target with no good one gets NaN below
    normals = np.nan_to_num(unit_normals(raw_normals), nan=0.0)
    usum = np.zeros((n_targets, 3))
    nsum = np.zeros((n_targets, 3))
    for a in range(3):
        usum[:, a] = np.bincount(
            inv, weights=np.where(located_row, unit[:, a], 0.0), minlength=n_targets
        )
        nsum[:, a] = np.bincount(inv, weights=normals[:, a], minlength=n_targets)
    located = np.bincount(inv, weights=located_row, minlength=n_targets) > 0
    with np.errstate(invalid="ignore"):  # targets without a position sum to zero: NaN
        t_lat, t_lon = unit_to_latlon(usum) if n_targets else (np.zeros(0), np.zeros(0))
    t_lat = np.where(located, t_lat, np.nan)
    t_lon = np.where(located, t_lon, np.nan)
    no_normal = int(np.isnan(unit_normals(nsum)[:, 0]).sum()) if n_targets else 0

    loc = np.flatnonzero(located)
    group = cfg.identity in ("building", "auto")  # auto without a lineage: group
    if group and len(loc) == n_targets:
        labels = group_targets(t_lat, t_lon, nsum, cfg.group_radius_m, cfg.normal_max_angle_deg)
    elif group:  # only located targets can be grouped
        labels = np.empty(n_targets, dtype=np.int64)
        sub = group_targets(
            t_lat[loc], t_lon[loc], nsum[loc], cfg.group_radius_m, cfg.normal_max_angle_deg
        )
        labels[loc] = sub
        unloc = np.flatnonzero(~located)
        labels[unloc] = (int(sub.max()) + 1 if len(sub) else 0) + np.arange(len(unloc))
    else:
        labels = np.arange(n_targets, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        ident = identities_from_labels(uids, labels, t_lat, t_lon)

    g = len(ident)
    images_per_identity = np.bincount(
        ident.target_identity, weights=images_per_target, minlength=g
    ).astype(np.int64)
    ident_located = np.zeros(g, dtype=bool)
    ident_located[ident.target_identity[located]] = True
    singleton = images_per_identity == 1
    ratios = [cfg.train_ratio, cfg.val_ratio, cfg.test_ratio]
    cell_size, cell, split, cell_note = _choose_cells(
        ident, ident_located, images_per_identity, singleton, ratios, cfg
    )
    test = SPLITS.index("test")
    drop = singleton & ((split != test) | (not cfg.singletons_in_test))
    if drop.any():
        first_dropped = ident.building_id[np.flatnonzero(drop)[0]]
        skips.add(
            "singleton_identity", uid_str(first_dropped), n=int(images_per_identity[drop].sum())
        )
    ident_split = np.where(drop, DROPPED, split).astype(np.int8)

    stats, expected = _split_stats(
        ident, ident_split, cell, images_per_identity, singleton, t_lat, t_lon, cfg
    )
    with np.errstate(invalid="ignore"):
        extent = identity_extent_m(ident, t_lat, t_lon) if g else np.zeros(0)
    extent = extent[np.isfinite(extent)]
    stats["grouping"] = {
        "identity": cfg.identity,
        "targets": n_targets,
        "identities": g,
        "targets_without_normal": no_normal,
        "largest_identity_targets": int(ident.n_targets.max()) if g else 0,
        "largest_identity_extent_m": round(float(extent.max()), 1) if len(extent) else 0.0,
        "mean_images_per_identity": round(float(images_per_identity.mean()), 3) if g else 0.0,
        "singleton_identities": int(singleton.sum()),
        "dropped_singleton_images": int(images_per_identity[drop].sum()),
    }
    if (~ident_located).any() or missing.any():
        stats["unlocated"] = {
            "images_without_position": int((missing & keep).sum()),
            "identities": int((~ident_located).sum()),
            "assignment": "whole identities by a salted hash of the building id "
            f"(salt {cfg.salt!r}/identity): no geographic cell without a position",
        }
    stats["cell_size_m"] = {"configured": cfg.cell_size_m, "used": cell_size}
    if cell_note:
        stats["warnings"] = {cell_note: 1}
    return Plan(
        n_rows=n,
        rows_per_part=rows_per_part,
        keep_row=keep,
        target_uid=uids,
        target_split=ident_split[ident.target_identity],
        target_building=ident.building_id[ident.target_identity],
        target_cell=cell[ident.target_identity],
        stats=stats,
        expected_rows=expected,
    )


#: smallest cell side tried when shrinking cells for a small area, in group radii
MIN_CELL_RADII = 4.0


def _assign(
    ident: Identities, located: np.ndarray, cell_size_m: float, ratios: list[float], salt: str
) -> tuple[np.ndarray, np.ndarray]:
    """Cell (-1 = none) and split of every identity: by cell when located, else by id hash."""
    cell = np.full(len(ident), -1, dtype=np.int64)
    split = np.zeros(len(ident), dtype=np.int8)
    if located.all():
        cell = cell_ids(ident.lat_deg, ident.lon_deg, cell_size_m)
        return cell, assign_splits(cell, ratios, salt)
    loc = np.flatnonzero(located)
    cell[loc] = cell_ids(ident.lat_deg[loc], ident.lon_deg[loc], cell_size_m)
    split[loc] = assign_splits(cell[loc], ratios, salt)
    unloc = np.flatnonzero(~located)
    split[unloc] = assign_splits(ident.building_id[unloc], ratios, f"{salt}/identity")
    return cell, split


def _choose_cells(
    ident: Identities,
    located: np.ndarray,
    images: np.ndarray,
    singleton: np.ndarray,
    ratios: list[float],
    cfg: SplitConfig,
) -> tuple[float, np.ndarray, np.ndarray, str]:
    """The configured cell size, or a smaller one when it leaves a split without images.

    A split "gets images" when it has a non-singleton identity (singletons only survive in test).

    Returns:
        ``(cell size used, cell per identity, split per identity, warning or "")``.
    """

    def empty_splits(split: np.ndarray) -> list[str]:
        return [
            name
            for s, name in enumerate(SPLITS)
            if ratios[s] > 0 and not (images[(split == s) & ~singleton] > 0).any()
        ]

    size = cfg.cell_size_m
    cell, split = _assign(ident, located, size, ratios, cfg.salt)
    empty = empty_splits(split)
    if not empty or not located.any():
        return size, cell, split, ""
    floor = max(MIN_CELL_RADII * cfg.group_radius_m, 1.0)
    trial = size / 2
    while trial >= floor:
        c, s = _assign(ident, located, trial, ratios, cfg.salt)
        if not empty_splits(s):
            note = (
                f"{' and '.join(empty)} had no images with {size:g} m cells (a small area): "
                f"used {trial:g} m cells; pass --cell-size-m {trial:g} to make it explicit"
            )
            return trial, c, s, note
        trial /= 2
    note = (
        f"{' and '.join(empty)} have no images even with cells down to {floor:g} m: the area "
        "is too small for a geographic split (add data, or set --val-ratio/--test-ratio)"
    )
    return size, cell, split, note


def _split_stats(
    ident: Identities,
    ident_split: np.ndarray,
    cell: np.ndarray,
    images_per_identity: np.ndarray,
    singleton: np.ndarray,
    t_lat: np.ndarray,
    t_lon: np.ndarray,
    cfg: SplitConfig,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Per-split counts and the leakage check (nearest train target to each val/test identity)."""
    per_split: dict[str, Any] = {}
    expected: dict[str, int] = {}
    target_split = ident_split[ident.target_identity]
    for s, name in enumerate(SPLITS):
        sel = ident_split == s
        expected[name] = int(images_per_identity[sel].sum())
        per_split[name] = {
            "images": expected[name],
            "identities": int(sel.sum()),
            "targets": int((target_split == s).sum()),
            "cells": len(np.unique(cell[sel & (cell >= 0)])),
            "singleton_identities": int((sel & singleton).sum()),
        }
    located = np.isfinite(t_lat)
    train = (target_split == SPLITS.index("train")) & located
    leakage: dict[str, Any] = {}
    for name in ("val", "test"):
        s = SPLITS.index(name)
        own = (target_split == s) & located
        d_target = nearest_distance_m(t_lat[own], t_lon[own], t_lat[train], t_lon[train])
        # per identity: its closest target to any train target
        d_ident = np.full(len(ident), np.inf)
        np.minimum.at(d_ident, ident.target_identity[own], d_target)
        d_ident = d_ident[ident_split == s]
        finite = d_ident[np.isfinite(d_ident)]
        leakage[f"{name}_train"] = {
            "min_distance_m": round(float(finite.min()), 2) if len(finite) else None,
            "median_distance_m": round(float(np.median(finite)), 2) if len(finite) else None,
            "identities_within_group_radius": int((finite <= cfg.group_radius_m).sum()),
            "identities": len(d_ident),
        }
    return {"splits": per_split, "leakage": leakage}, expected


def _write_splits(
    parts: list[Path],
    plan: Plan,
    out_dir: Path,
    schema: pa.Schema,
    meta: dict[str, Any],
    on_rows: Callable[[int], None] = lambda _n: None,
) -> dict[str, int]:
    """Pass 2: stream every part once, routing each kept row to its split's writer.

    Args:
        parts: the backbone parts, in the order pass 1 read them.
        plan: pass 1's decisions.
        out_dir: where ``{train,val,test}.parquet`` go (each written atomically).
        schema: the split schema.
        meta: footer provenance (the split name is added per file).
        on_rows: called with the number of input rows routed, after each batch.

    Returns:
        Rows written per split.
    """
    names = [f.name for f in schema]
    carried = [f.name for f in CARRIED_FIELDS] + ["embedding"]
    offset = 0
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(
                StreamingPart(SplitDir(out_dir).split_path(name), schema, {**meta, "split": name})
            )
            for name in SPLITS
        }
        for part, n_part in zip(parts, plan.rows_per_part, strict=True):
            pf = pq.ParquetFile(part)
            if pf.metadata.num_rows != n_part:
                raise SbeError(f"{part.name} changed while the split was running; rerun")
            for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=carried):
                m = batch.num_rows
                keep = plan.keep_row[offset : offset + m]
                offset += m
                uids = batch.column("target_uid").to_numpy()
                if len(plan.target_uid):
                    t = np.minimum(np.searchsorted(plan.target_uid, uids), len(plan.target_uid) - 1)
                    row_split = np.where(keep, plan.target_split[t], DROPPED)
                else:
                    t = row_split = np.full(m, DROPPED, dtype=np.int64)
                if batch.column("embedding").null_count:
                    raise SbeError(f"{part.name}: null embeddings; rerun the backbone stage")
                for s, name in enumerate(SPLITS):
                    idx = np.flatnonzero(row_split == s)
                    if len(idx) == 0:
                        continue
                    sub = batch.take(pa.array(idx))
                    cols = {
                        "building_id": pa.array(plan.target_building[t[idx]]),
                        "cell_id": pa.array(plan.target_cell[t[idx]]),
                    }
                    arrays = [cols[c] if c in cols else sub.column(c) for c in names]
                    writers[name].write(pa.Table.from_arrays(arrays, names=names))
                on_rows(m)
        written = {name: w.rows for name, w in writers.items()}
    return written


class SplitStage(Stage):
    """``sbe split``: see the module docstring."""

    name = "split"
    inputs = (Input("input", "backbone"),)

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        lines: Summary = [
            f"{name}: {s['images']:,} images, {s['identities']:,} identities, {s['cells']:,} cells"
            for name, s in (m.extra.get("splits") or {}).items()
        ]
        return lines + [
            f"leakage {pair}: nearest {v['min_distance_m']} m, "
            f"{v['identities_within_group_radius']:,} identities within the grouping radius"
            for pair, v in (m.extra.get("leakage") or {}).items()
        ]

    def run(self, cfg: SplitConfig, ctx: StageContext) -> Manifest:
        """Split the backbone output folder ``cfg.input`` into ``train``/``val``/``test`` files.

        Returns:
            The manifest (``rows``: input images and rows per split; ``extra``: the backbone
            identity, per-split counts, grouping statistics and the leakage check).
        """
        in_dir = BackboneDir(cfg.input)
        parts = in_dir.parts()
        if (done := ctx.check(fingerprint_paths(parts))) is not None:
            return done
        emb_type = _embedding_type(parts)
        identity = in_dir.backbone(parts)
        backbone = identity.to_dict() if identity is not None else None
        skips = SkipLog()
        plan = plan_split(
            parts, cfg.model_copy(update={"identity": identity_rule(cfg, in_dir)}), skips
        )
        schema = split_schema(emb_type.list_size, emb_type.value_type)
        meta = {"stage": STAGE, "config_hash": ctx.hash, "backbone": backbone}
        with ctx.progress("split: writing", plan.n_rows, unit="images") as bar:
            written = _write_splits(parts, plan, ctx.out_dir, schema, meta, bar.advance)
        if written != plan.expected_rows:
            raise SbeError(
                f"rows written {written} differ from the plan {plan.expected_rows}; rerun"
            )
        for warning in plan.stats.get("warnings", {}):
            ctx.log(f"split: warning: {warning}")
        ctx.results["warnings"] = list(plan.stats.get("warnings", {}))
        return ctx.commit(
            outputs=[SplitDir.file_name(s) for s in SPLITS],
            rows={"input_images": plan.n_rows, **written},
            skips=skips,
            backbone=identity,
            extra={"backbone": backbone, "embedding_type": str(emb_type), **plan.stats},
        )


run = stage_function(SplitStage)
