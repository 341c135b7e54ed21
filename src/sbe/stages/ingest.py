"""``sbe ingest``: raw 3D Street View tars -> ``<out>/<tar stem>.parquet`` (``IMAGES_SCHEMA``).

One streaming pass per tar (:func:`sbe.data.rawtar.read_raw_tar`), nothing extracted; tars run
in parallel, one process each. Every part is written atomically with its provenance (the source
tar's path, size and mtime, and the content settings) in the parquet footer, so a rerun skips
current parts and redoes exactly the tars that changed. ``_manifest.json`` sums the rows, skips
by reason, warnings and damaged archives of all tars.

The stage fails (:class:`~sbe.errors.SbeError`, after finishing every other tar) only when an
input is not an uncompressed tar or a tar yields no valid rows.

Example:
    >>> from sbe.config import load_config
    >>> cfg = load_config(overrides={"ingest": {"inputs": [Path("raw")]}}).section("ingest")
    >>> manifest = run(cfg)
    >>> manifest.rows["images"], manifest.skipped
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sbe.config import IngestConfig
from sbe.data.rawtar import ReadSettings, TarReport, read_raw_tar
from sbe.data.tarstream import NotATarError, probe_tar
from sbe.device import usable_cores
from sbe.errors import SbeError
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.storage import (
    Manifest,
    SkipLog,
    fingerprint_file,
    part_is_current,
    read_part_meta,
    remove_stale_parts,
    write_part,
)
from sbe.storage.schemas import uid_str

STAGE = "ingest"
#: Bump when an unchanged tar would now yield different rows (forces every part to be redone).
INGEST_FORMAT = 1
#: Names a folder input is searched for (compressed ones are found so they can be refused clearly).
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
ROW_GROUP_SIZE = 16_384


@dataclass(frozen=True)
class TarTask:
    """One tar to ingest: where it is, where its part goes, how to read it. Picklable."""

    tar: str
    part: str
    settings: ReadSettings


def tar_stem(path: str | os.PathLike[str]) -> str:
    """Output name stem: ``0088.tar`` -> ``0088``, ``a.tar.gz`` -> ``a``, ``x`` -> ``x``."""
    name = Path(path).name
    low = name.lower()
    for suffix in sorted(TAR_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def discover_tars(inputs: list[Path]) -> list[Path]:
    """Expand inputs (tar files, folders searched recursively) to a sorted list of files.

    Raises:
        SbeError: an input does not exist, or a folder holds no tars.
    """
    found: dict[Path, None] = {}
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            tars = [
                f
                for f in sorted(p.rglob("*"))
                if f.is_file()
                and not f.name.startswith((".", "_"))
                and f.name.lower().endswith(TAR_SUFFIXES)
            ]
            if not tars:
                raise SbeError(f"no tar files found under {p}")
            for f in tars:
                found[f.resolve()] = None
        elif p.exists():
            found[p.resolve()] = None
        else:
            raise SbeError(f"input not found: {p}")
    return sorted(found)


def part_meta(tar: str | os.PathLike[str], settings: ReadSettings) -> dict[str, Any]:
    """What a part must have been made from to be current: the tar as it is now + settings."""
    return {
        "stage": STAGE,
        "format": INGEST_FORMAT,
        "source": fingerprint_file(tar).model_dump(),
        "settings": settings.content(),
    }


def ingest_tar(
    tar: str | os.PathLike[str],
    part: str | os.PathLike[str],
    settings: ReadSettings = ReadSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> TarReport:
    """Read one tar and write its part atomically (pure and picklable: a Ray task can call it).

    No part is written when the tar yields no rows (and a stale one is removed).

    Args:
        tar: the uncompressed tar.
        part: the output parquet path.
        settings: how to read it (see :class:`~sbe.data.rawtar.ReadSettings`).
        progress: called with ``(bytes, members)`` read since the last call.

    Returns:
        The tar's :class:`~sbe.data.rawtar.TarReport`.
    """
    tar = Path(tar).resolve()
    part = Path(part)
    try:
        meta = part_meta(tar, settings)
    except FileNotFoundError:
        return TarReport(tar=str(tar), error=f"{tar}: no such file")
    table, report = read_raw_tar(tar, settings, tar_file=str(tar), progress=progress)
    if table.num_rows == 0:
        part.unlink(missing_ok=True)
        return report
    write_part(table, part, {**meta, "report": report.to_json()}, row_group_size=ROW_GROUP_SIZE)
    return report


# ---- process pool plumbing -------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


def _pool_ingest(task: TarTask) -> TarReport:
    q = _progress_queue
    cb = None if q is None else (lambda nbytes, members: q.put((nbytes, members)))
    return ingest_tar(task.tar, task.part, task.settings, cb)


def _run_on_ray(tasks: list[TarTask], advance_mb: Callable[[float], None]) -> list[TarReport]:
    """One Ray task per tar, each running the same pure per-tar function as the local engine."""
    from sbe.distributed import ray_map

    reports: list[TarReport] = []
    for _, report in ray_map(_pool_ingest, tasks):
        reports.append(report)
        advance_mb(Path(report.tar).stat().st_size / 1e6)
    return reports


def _run_tasks(
    tasks: list[TarTask], processes: int, advance: Callable[[int, int], None]
) -> list[TarReport]:
    """Run tasks in this process (one process) or a spawn pool, reporting progress."""
    if processes <= 1 or len(tasks) <= 1:
        return [ingest_tar(t.tar, t.part, t.settings, advance) for t in tasks]
    # spawn, not fork: the parent may hold threads (the progress bar), and fork + threads can
    # deadlock a child.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    reports: list[TarReport] = []
    with ProcessPoolExecutor(
        processes, mp_context=ctx, initializer=_init_worker, initargs=(q,)
    ) as pool:
        pending: set[Future] = {pool.submit(_pool_ingest, t) for t in tasks}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for f in done:
                reports.append(f.result())
            while True:
                try:
                    advance(*q.get_nowait())
                except queue.Empty:
                    break
    return reports


# ---- the stage ---------------------------------------------------------------------------------


def _check_inputs(tars: list[Path]) -> None:
    problems = []
    for t in tars:
        try:
            probe_tar(t)
        except NotATarError as e:
            problems.append(str(e))
    by_stem: dict[str, list[Path]] = {}
    for t in tars:
        by_stem.setdefault(tar_stem(t), []).append(t)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            problems.append(
                f"{len(paths)} inputs would write the same {stem}.parquet: "
                + ", ".join(str(p) for p in paths)
                + " (outputs are named by tar stem; rename one)"
            )
    if problems:
        raise SbeError("; ".join(problems))


def _cross_tar_duplicates(out: Path, parts: list[str]) -> tuple[int, list[str]]:
    """Count image_ids that occur in more than one part (each part is unique by construction)."""
    if len(parts) < 2:
        return 0, []
    ids = np.concatenate(
        [pq.read_table(out / p, columns=["image_id"])["image_id"].to_numpy() for p in parts]
    )
    values, counts = np.unique(ids, return_counts=True)
    dup = values[counts > 1]
    return int(counts[counts > 1].sum() - len(dup)), [uid_str(int(u)) for u in dup[:5]]


def _skip_summary(r: TarReport) -> str:
    if not r.skipped:
        return "the archive holds no image/metadata pairs"
    parts = [f"{k}: {v}" for k, v in r.skipped.items()]
    example = next(iter(r.skip_examples.values()), [])[:1]
    return ", ".join(parts) + (f"; e.g. {example[0]}" if example else "")


class IngestStage(Stage):
    """``sbe ingest``: see the module docstring."""

    name = "ingest"
    inputs = (Input("inputs", "synth"),)
    examples = ("sbe ingest --in work/raw --out work/images",)

    def run(self, cfg: IngestConfig, ctx: StageContext) -> Manifest:
        """Ingest every tar of ``cfg.inputs`` into ``cfg.output``; see the module docstring.

        Returns:
            The manifest (``rows``: images, tars; ``extra``: warnings, damaged tars, per-tar
            counts, tars reused, stale parts removed).

        Raises:
            SbeError: an input is missing, not an uncompressed tar, or yields no valid rows.
        """
        tars = discover_tars(cfg.inputs)
        _check_inputs(tars)
        cores = usable_cores()
        out = ctx.out_dir
        content = ReadSettings(normal_tolerance=cfg.normal_tolerance)  # threads do not matter
        inputs = [fingerprint_file(t) for t in tars]
        done = ctx.check(inputs, format=INGEST_FORMAT, content=content.content())
        if done is not None:
            return done

        # each part's footer names its tar and settings: one of other settings is redone
        reused: dict[str, TarReport] = {}
        todo: list[Path] = []
        for t in tars:
            part = out / f"{tar_stem(t)}.parquet"
            if part_is_current(part, part_meta(t, content)):
                meta = read_part_meta(part) or {}
                reused[str(t)] = TarReport.from_json(meta.get("report", {"tar": str(t)}))
            else:
                todo.append(t)
        processes = min(cfg.workers or cores, max(1, len(todo)))
        threads = cfg.decode_threads or max(1, cores // processes)
        settings = ReadSettings(normal_tolerance=cfg.normal_tolerance, decode_threads=threads)
        # Largest first: the long tars start early, so the pool drains evenly.
        todo.sort(key=lambda t: -t.stat().st_size)
        tasks = [TarTask(str(t), str(out / f"{tar_stem(t)}.parquet"), settings) for t in todo]
        total_mb = sum(t.stat().st_size for t in todo) / 1e6
        with ctx.progress("ingest", total_mb, unit="MB") as bar:

            def advance(nbytes: int, members: int) -> None:
                bar.advance(nbytes / 1e6)

            if cfg.engine == "ray":
                fresh = _run_on_ray(tasks, bar.advance)
            else:
                fresh = _run_tasks(tasks, processes, advance)

        reports = sorted([*reused.values(), *fresh], key=lambda r: r.tar)
        failures = [f"{r.error}" for r in reports if r.error]
        failures += [
            f"{r.tar}: no valid rows ({_skip_summary(r)})"
            for r in reports
            if not r.error and r.rows == 0
        ]
        if failures:
            raise SbeError("; ".join(failures))

        parts = [f"{tar_stem(r.tar)}.parquet" for r in reports]
        removed = remove_stale_parts(out, set(parts), STAGE)
        skips, warns = SkipLog(), SkipLog()
        malformed: dict[str, int] = {}
        for r in reports:
            skips.merge(r.skipped, r.skip_examples)
            warns.merge(r.warnings, r.warning_examples)
            for k, v in r.malformed_kinds.items():
                malformed[k] = malformed.get(k, 0) + v
        n_dup, dup_examples = _cross_tar_duplicates(out, parts)
        if n_dup:
            warns.add("duplicate_id_across_tars", n=n_dup)
            warns.merge({}, {"duplicate_id_across_tars": dup_examples})
        fresh_rows = sum(r.rows for r in fresh)
        seconds = ctx.timer.seconds
        return ctx.commit(
            outputs=parts,
            rows={"images": sum(r.rows for r in reports), "tars": len(reports)},
            skips=skips,
            extra={
                "warnings": dict(sorted(warns.counts.items())),
                "warning_examples": dict(sorted(warns.examples.items())),
                "malformed_d_line_kinds": dict(sorted(malformed.items())),
                "damaged_tars": {Path(r.tar).name: r.damage for r in reports if r.damage},
                "tars": {
                    Path(r.tar).name: {
                        "rows": r.rows,
                        "skipped": sum(r.skipped.values()),
                        "seconds": r.seconds,
                        "reused": str(Path(r.tar)) in reused,
                    }
                    for r in reports
                },
                "tars_reused": len(reused),
                "processes": processes if todo else 0,
                "decode_threads": threads if todo else 0,
                # rows ingested (not reused) in this run per second of wall time
                "images_per_second": round(fresh_rows / seconds, 1) if fresh_rows else None,
                "removed_stale_parts": removed,
            },
        )


def run(cfg: IngestConfig, **options: Any) -> Manifest:
    """Ingest every tar of ``cfg.inputs`` into ``cfg.output`` (the :class:`IngestStage` from Python).

    Args:
        cfg: the resolved ``[ingest]`` section (absolute paths).
        **options: :func:`~sbe.stages.base.run_stage` options: ``show_progress`` (progress bar on
            stderr; ``None`` = only when stderr is a terminal), ``restart``, ``log``.

    Returns:
        The stage manifest (``up_to_date=True`` when nothing needed redoing).

    Raises:
        SbeError: an input is missing, not an uncompressed tar, or yields no valid rows.
        LockedError: another run is writing ``cfg.output``.
    """
    return run_stage(IngestStage(), cfg, **options)[0]


__all__ = [
    "IngestStage",
    "TarTask",
    "discover_tars",
    "ingest_tar",
    "part_meta",
    "run",
    "tar_stem",
]
