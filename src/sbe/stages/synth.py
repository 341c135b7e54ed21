"""``sbe synth``: write a synthetic street-view world in the raw 3D Street View format.

Output folder (``cfg.output``):

- ``NNNN.tar``: one per map region (DatasetID ``NNNN``), ``<stem>.jpg`` + ``<stem>.txt`` pairs;
- ``truth.parquet``: ground truth per image (building, facade, city, style, conditions), not part
  of the raw format;
- ``_truth/NNNN.parquet``: the same per tar, with the tar's key in the footer (resume bookkeeping);
- ``footprints.parquet``: every building's footprint (GeoParquet, OSM-style ``osm_id``) and
  ``mapillary.geojson``: Mapillary-style metadata of every view with GPS and compass noise
  (:mod:`sbe.synth.footprints`, :mod:`sbe.synth.mapillary`; off with ``--no-footprints``,
  ``--no-mapillary``);
- ``preview.png`` with ``--preview``; ``_manifest.json``.

With ``cfg.packaged`` it also writes ``packaged_images.parquet`` of *new* buildings (the input of
``sbe embed``). Everything is deterministic for a seed, independent of the number of workers; a
rerun skips every tar that is already current and redoes the rest.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import SbeConfig, SynthConfig, section_dict
from sbe.device import usable_cores
from sbe.errors import SbeError
from sbe.stages.base import Stage, StageContext, stage_function
from sbe.stages.summary import Summary
from sbe.storage import (
    Manifest,
    config_hash,
    part_is_current,
    read_part_meta,
    write_parquet_atomic,
    write_part,
)
from sbe.synth import RENDER_VERSION
from sbe.synth.difficulty import knobs_for
from sbe.synth.footprints import FOOTPRINTS_NAME, write_footprints
from sbe.synth.mapillary import MAPILLARY_NAME, MetadataNoise, write_mapillary
from sbe.synth.preview import contact_sheet, save_preview
from sbe.synth.scene import RenderSettings
from sbe.synth.world import plan_world
from sbe.synth.writers import (
    TRUTH_DIR,
    TRUTH_SCHEMA,
    DatasetTask,
    PackagedTask,
    assemble_packaged,
    dataset_is_current,
    nested_layout,
    render_packaged,
    tar_name,
    truth_path,
    write_dataset,
)

STAGE = "synth"
_TAR_RE = re.compile(r"^\d{4,}\.tar$")
#: fields that change the tars' bytes (output paths, workers and the preview flag do not)
WORLD_FIELDS = (
    "buildings",
    "seed",
    "image_size",
    "difficulty",
    "buildings_per_tar",
    "jpeg_quality",
)


def _workers(cfg: SynthConfig, n_tasks: int) -> int:
    n = cfg.workers or usable_cores()
    return max(1, min(n, n_tasks))


def _run_tasks(fn, tasks: list, workers: int, on_done) -> list:
    """Run ``fn`` over ``tasks`` in ``workers`` processes (in-process for one), in any order."""
    if workers <= 1 or len(tasks) <= 1:
        out = []
        for t in tasks:
            r = fn(t)
            on_done(t, r)
            out.append(r)
        return out
    results = []
    # spawn: the parent may hold threads (progress bar), which fork would copy mid-state
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(fn, t): t for t in tasks}
        for fut in cf.as_completed(futures):
            r = fut.result()
            on_done(futures[fut], r)
            results.append(r)
    return results


def _world_key(cfg: SynthConfig) -> dict[str, Any]:
    d = section_dict(cfg)
    key = {**{k: d[k] for k in WORLD_FIELDS}, "render_version": RENDER_VERSION}
    if cfg.places != "cities10":  # the ten-city world keeps the keys of its existing tars
        key.update(places=cfg.places, n_places=cfg.n_places)
    return key


def _remove_stale(out: Path, dataset_ids: set[int]) -> None:
    """Delete tars and truth parts of regions that are not in this world (a smaller rerun)."""
    for p in out.glob("*.tar"):
        if _TAR_RE.match(p.name) and int(p.name[:-4]) not in dataset_ids:
            p.unlink()
    for p in (out / TRUTH_DIR).glob("*.parquet") if (out / TRUTH_DIR).is_dir() else ():
        if p.stem.isdigit() and int(p.stem) not in dataset_ids:
            p.unlink()


def _packaged_meta(cfg: SynthConfig) -> dict[str, Any]:
    """The footer entry that makes the packaged parquet current for ``cfg``."""
    key = config_hash({**_world_key(cfg), "packaged_buildings": cfg.packaged_buildings})
    return {"synth_packaged_key": key}


def _write_packaged(
    cfg: SynthConfig, settings: RenderSettings, ctx: StageContext
) -> dict[str, Any]:
    """Write the packaged parquet of new buildings (skipped when current).

    Returns:
        What it holds (path, rows, buildings, invalid rows...), also stored in its footer.
    """
    if cfg.packaged is None:
        raise ValueError("_write_packaged needs cfg.packaged")
    path = Path(cfg.packaged)
    meta_key = _packaged_meta(cfg)
    if part_is_current(path, meta_key):
        return (read_part_meta(path) or {}).get("info", {})
    world = plan_world(
        cfg.packaged_buildings,
        cfg.seed,
        settings.knobs,
        cfg.buildings_per_tar,
        stream=1,
        first_dataset_id=9001,
        places=cfg.places,
        n_places=cfg.n_places,
    )
    tasks = [PackagedTask(p, settings) for p in world.datasets]
    results: dict[int, list] = {}
    with ctx.progress("packaged", len(tasks), unit="regions") as bar:

        def done(t: PackagedTask, r: list) -> None:
            results[t.plan.dataset_id] = r
            bar.advance(1)

        _run_tasks(render_packaged, tasks, _workers(cfg, len(tasks)), done)
    rows = [r for did in sorted(results) for r in results[did]]
    table, info = assemble_packaged(rows, cfg.seed)
    info = {
        "path": str(path),
        "rows": table.num_rows,
        "buildings": len(set(table.column("OSMID").to_pylist())),
        "invalid_rows": table.column("is_valid").to_pylist().count(False),
        "null_valid_rows": table.column("is_valid").null_count,
        **info,
    }
    write_part(table, path, {**meta_key, "info": info})
    return info


class SynthStage(Stage):
    """``sbe synth``: see the module docstring."""

    name = "synth"
    inputs = ()

    def disabled_reason(self, cfg: SbeConfig) -> str | None:
        return "source is raw tars" if cfg.pipeline.source != "synth" else None

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        pk = m.extra.get("packaged")
        if not pk:
            return []
        return [
            f"packaged: {pk['rows']:,} rows of {pk['buildings']:,} buildings -> {pk['path']} "
            f"(corrupt rows {pk['corrupt_rows']})"
        ]

    def run(self, cfg: SynthConfig, ctx: StageContext) -> Manifest:
        """Generate the synthetic world described by ``cfg``.

        Returns:
            The manifest (rows: images, targets, buildings, tars, and packaged_rows when a
            packaged parquet is written; extra: ``tars_written`` and ``tars_skipped`` by this run,
            the difficulty knobs, images per city, packaged info).
        """
        out = ctx.out_dir
        done = ctx.check([], render_version=RENDER_VERSION, packaged=cfg.packaged is not None)
        if done is not None:
            if cfg.packaged is None or part_is_current(cfg.packaged, _packaged_meta(cfg)):
                return done
            # the packaged parquet (it may lie outside the folder) is gone or not of these
            # settings: write it again
            ctx.begin()
        knobs = knobs_for(cfg.difficulty)
        world = plan_world(
            cfg.buildings,
            cfg.seed,
            knobs,
            cfg.buildings_per_tar,
            places=cfg.places,
            n_places=cfg.n_places,
        )
        if world.n_target_buildings != cfg.buildings:
            raise SbeError(
                f"synth: could only place {world.n_target_buildings} of {cfg.buildings} buildings; "
                "lower buildings_per_tar"
            )
        settings = RenderSettings(cfg.image_size, cfg.jpeg_quality, knobs)
        wkey = _world_key(cfg)
        keys = {
            p.dataset_id: config_hash({**wkey, "dataset_id": p.dataset_id}) for p in world.datasets
        }
        _remove_stale(out, set(keys))
        todo = [
            p
            for p in world.datasets
            if not dataset_is_current(out, p.dataset_id, keys[p.dataset_id])
        ]
        # A tar is trusted only through its truth part, written after it: drop the truth part
        # of every tar about to be rewritten, so a crash between the two never leaves a tar of
        # other settings vouched for by a truth part of these.
        for p in todo:
            truth_path(out, p.dataset_id).unlink(missing_ok=True)
        if not cfg.preview:  # a preview of another run is no output of this one
            (out / "preview.png").unlink(missing_ok=True)
        todo.sort(key=lambda p: -len(p.views))  # biggest first: better load balance
        tasks = [DatasetTask(p, settings, str(out), keys[p.dataset_id]) for p in todo]
        total_images = sum(len(p.views) for p in todo)
        with ctx.progress("synth", total_images, unit="images") as bar:
            _run_tasks(
                write_dataset,
                tasks,
                _workers(cfg, len(tasks)),
                lambda t, r: bar.advance(r["images"]),
            )
        truth = pa.concat_tables(
            [
                pq.read_table(truth_path(out, p.dataset_id), schema=TRUTH_SCHEMA)
                for p in world.datasets
            ]
        )
        write_parquet_atomic(truth, out / "truth.parquet")
        outputs = [tar_name(p.dataset_id) for p in world.datasets] + ["truth.parquet"]
        extra: dict[str, Any] = {
            "difficulty": cfg.difficulty,
            "knobs": knobs.to_dict(),
            "render_version": RENDER_VERSION,
            "cities": dict(sorted(Counter(truth.column("city").to_pylist()).items())),
            "nested_tars": [
                tar_name(p.dataset_id) for p in world.datasets if nested_layout(p.dataset_id)
            ],
            "txt_format": "line 1: d + 17 numbers; line 2: t YYYY-MM-DD (capture date, synthetic extension)",
        }
        rows = {
            "images": truth.num_rows,
            "targets": sum(len(p.targets) for p in world.datasets),
            "buildings": world.n_target_buildings,
            "tars": len(world.datasets),
        }
        # what this run did (not what the output is): beside the other per-run facts
        extra["tars_written"] = len(tasks)
        extra["tars_skipped"] = len(world.datasets) - len(tasks)
        # what a route from footprints + Mapillary-style metadata starts from (docs/footprints.md)
        for flag, name in ((cfg.footprints, FOOTPRINTS_NAME), (cfg.mapillary, MAPILLARY_NAME)):
            if not flag:
                (out / name).unlink(missing_ok=True)
        if cfg.footprints:
            rows["footprints"] = write_footprints(world, cfg.seed, out / FOOTPRINTS_NAME)
            outputs.append(FOOTPRINTS_NAME)
        if cfg.mapillary:
            noise = MetadataNoise(cfg.gps_noise_m, cfg.compass_noise_deg)
            write_mapillary(world, noise, cfg.seed, out / MAPILLARY_NAME)
            outputs.append(MAPILLARY_NAME)
            extra["mapillary"] = {
                "gps_noise_m": cfg.gps_noise_m,
                "compass_noise_deg": cfg.compass_noise_deg,
            }
        if cfg.packaged is not None:
            info = _write_packaged(cfg, settings, ctx)
            rows["packaged_rows"] = info["rows"]
            extra["packaged"] = info
        if cfg.preview:
            save_preview(
                contact_sheet(out, truth, tile=min(150, cfg.image_size)), out / "preview.png"
            )
            outputs.append("preview.png")
        return ctx.commit(outputs=outputs, rows=rows, extra=extra)


run = stage_function(SynthStage)
