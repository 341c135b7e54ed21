"""``sbe ingest``: photos (3D Street View tars, image folders, WebDataset, Mapillary) -> an images table.

Other sources (``--format``, detected when ``auto``; see :mod:`sbe.data.sources`) give the same
table: WebDataset shards are streamed like the tars (one part per shard); an image folder or a
Mapillary download is planned from its metadata in this process, then its images are inspected in
parts of :data:`FOLDER_PART_ROWS` (``<folder name>-<first row>.parquet``), in parallel like tars.
A folder part's ``tar_file`` is the folder relative to the output folder and ``source_kind`` is
``file``.

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

import hashlib
import multiprocessing as mp
import os
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import IngestConfig
from sbe.data.rawtar import ReadSettings, TarReport, read_raw_tar
from sbe.data.sources import (
    FOLDER_FORMATS,
    FolderPlan,
    detect_format,
    plan_folder,
    read_folder_part,
)
from sbe.data.sources.webdataset import read_shard, shard_dataset_id
from sbe.data.tarstream import NotATarError, probe_tar
from sbe.device import usable_cores
from sbe.errors import SbeError
from sbe.stages.base import Input, Stage, StageContext, stage_function
from sbe.stages.summary import Summary
from sbe.storage import (
    Manifest,
    SkipLog,
    fingerprint_file,
    fingerprint_paths,
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
#: Images per part of a folder source (a part is the unit of reuse and of parallel work).
FOLDER_PART_ROWS = 16_384


@dataclass(frozen=True)
class TarTask:
    """One tar to ingest: where it is, where its part goes, how to read it. Picklable.

    ``fmt`` is ``3dsv`` or ``webdataset`` (then ``dataset_id`` and ``id_column`` apply).
    """

    tar: str
    part: str
    settings: ReadSettings
    fmt: str = "3dsv"
    dataset_id: int = 0
    id_column: str | None = None


@dataclass(frozen=True)
class FolderTask:
    """One part of a folder source: its records and where its part goes. Picklable."""

    root: str
    records: pa.Table
    start: int
    part: str
    meta: dict[str, Any]
    container: str
    dataset_id: int
    threads: int = 1


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


def part_meta(
    tar: str | os.PathLike[str],
    settings: ReadSettings,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a part must have been made from to be current: the tar as it is now + settings.

    ``source`` adds what else decides a non-3D-Street-View part (format, id column, dataset id).
    """
    meta = {
        "stage": STAGE,
        "format": INGEST_FORMAT,
        "source": fingerprint_file(tar).model_dump(),
        "settings": settings.content(),
    }
    if source:
        meta["input_format"] = source
    return meta


def _shard_source(task: TarTask) -> dict[str, Any] | None:
    if task.fmt == "3dsv":
        return None
    sidecar = Path(task.tar).with_suffix(".parquet")
    side = fingerprint_file(sidecar).model_dump() if sidecar.is_file() else None
    return {
        "format": task.fmt,
        "dataset_id": task.dataset_id,
        "id_column": task.id_column,
        "sidecar": side,
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
    return _ingest_tar(TarTask(str(tar), str(part), settings), progress)


def _ingest_tar(task: TarTask, progress: Callable[[int, int], None] | None) -> TarReport:
    tar = Path(task.tar).resolve()
    part = Path(task.part)
    settings = task.settings
    try:
        meta = part_meta(tar, settings, _shard_source(task))
    except FileNotFoundError:
        return TarReport(tar=str(tar), error=f"{tar}: no such file")
    if task.fmt == "webdataset":
        table, report = read_shard(
            tar,
            dataset_id=task.dataset_id,
            id_column=task.id_column,
            tar_file=str(tar),
            threads=settings.decode_threads,
            progress=progress,
        )
    else:
        table, report = read_raw_tar(tar, settings, tar_file=str(tar), progress=progress)
    if table.num_rows == 0:
        part.unlink(missing_ok=True)
        return report
    write_part(table, part, {**meta, "report": report.to_dict()}, row_group_size=ROW_GROUP_SIZE)
    return report


def ingest_folder_part(
    task: FolderTask, progress: Callable[[int, int], None] | None = None
) -> TarReport:
    """Inspect one part of a folder source and write it atomically (pure and picklable)."""
    table, report = read_folder_part(
        task.root,
        task.records,
        task.start,
        container=task.container,
        dataset_id=task.dataset_id,
        threads=task.threads,
        progress=progress,
    )
    report.tar = task.part
    part = Path(task.part)
    if table.num_rows == 0:
        part.unlink(missing_ok=True)
        return report
    write_part(
        table, part, {**task.meta, "report": report.to_dict()}, row_group_size=ROW_GROUP_SIZE
    )
    return report


def _do(task: TarTask | FolderTask, progress: Callable[[int, int], None] | None) -> TarReport:
    if isinstance(task, FolderTask):
        return ingest_folder_part(task, progress)
    return _ingest_tar(task, progress)


# ---- process pool plumbing -------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


def _pool_ingest(task: TarTask | FolderTask) -> TarReport:
    q = _progress_queue
    cb = None if q is None else (lambda nbytes, members: q.put((nbytes, members)))
    return _do(task, cb)


def _run_on_ray(
    tasks: list[TarTask] | list[FolderTask], advance_mb: Callable[[float], None]
) -> list[TarReport]:
    """One Ray task per tar, each running the same pure per-tar function as the local engine."""
    from sbe.distributed import ray_map

    reports: list[TarReport] = []
    for _, report in ray_map(_pool_ingest, tasks):
        reports.append(report)
        advance_mb(report.bytes_read / 1e6)
    return reports


def _run_tasks(
    tasks: list[TarTask] | list[FolderTask], processes: int, advance: Callable[[int, int], None]
) -> list[TarReport]:
    """Run tasks in this process (one process) or a spawn pool, reporting progress."""
    if processes <= 1 or len(tasks) <= 1:
        return [_do(t, advance) for t in tasks]
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


def _run_stats(
    todo: list[Any],
    processes: int,
    threads: int,
    fresh_rows: int,
    seconds: float,
    removed: list[str],
) -> dict[str, Any]:
    """The manifest's throughput entries, shared by the tar and the folder paths.

    Args:
        todo: the tasks decoded in this run (empty: all reused, so no processes ran).
        processes, threads: decode processes and threads per process.
        fresh_rows: rows ingested (not reused) in this run; ``seconds``: its wall time.
        removed: the stale part files removed (names).
    """
    return {
        "processes": processes if todo else 0,
        "decode_threads": threads if todo else 0,
        # rows ingested (not reused) in this run per second of wall time
        "images_per_second": round(fresh_rows / seconds, 1) if fresh_rows else None,
        "removed_stale_parts": removed,
    }


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

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        warnings = m.extra.get("warnings") or {}
        lines: Summary = (
            ["warnings: " + ", ".join(f"{k}: {v:,}" for k, v in warnings.items())]
            if warnings
            else []
        )
        damaged = (m.extra.get("damaged_tars") or {}).items()
        return lines + [f"damaged: {t}: {d} (rows before the damage kept)" for t, d in damaged]

    def run(self, cfg: IngestConfig, ctx: StageContext) -> Manifest:
        """Ingest every tar of ``cfg.inputs`` into ``cfg.output``; see the module docstring.

        Returns:
            The manifest (``rows``: images, tars; ``extra``: warnings, damaged tars, per-tar
            counts, tars reused, stale parts removed).

        Raises:
            SbeError: an input is missing, not an uncompressed tar, or yields no valid rows.
        """
        fmt = cfg.format if cfg.format != "auto" else detect_format(cfg.inputs)
        if fmt in FOLDER_FORMATS:
            return self.run_folders(cfg, ctx, fmt)
        tars = discover_tars(cfg.inputs)
        _check_inputs(tars)
        cores = usable_cores()
        out = ctx.out_dir
        content = ReadSettings(normal_tolerance=cfg.normal_tolerance)  # threads do not matter
        inputs = [fingerprint_file(t) for t in tars]
        if fmt == "webdataset":
            inputs += [
                fingerprint_file(t.with_suffix(".parquet"))
                for t in tars
                if t.with_suffix(".parquet").is_file()
            ]
        done = ctx.check(inputs, format=INGEST_FORMAT, content=content.content())
        if done is not None:
            return done
        shard_ids = {t: shard_dataset_id(t, i) for i, t in enumerate(tars)}

        def task(t: Path, settings: ReadSettings) -> TarTask:
            return TarTask(
                str(t),
                str(out / f"{tar_stem(t)}.parquet"),
                settings,
                fmt,
                shard_ids[t],
                cfg.id_column,
            )

        # each part's footer names its tar and settings: one of other settings is redone
        reused: dict[str, TarReport] = {}
        todo: list[Path] = []
        for t in tars:
            part = out / f"{tar_stem(t)}.parquet"
            if part_is_current(part, part_meta(t, content, _shard_source(task(t, content)))):
                meta = read_part_meta(part) or {}
                reused[str(t)] = TarReport.from_dict(meta.get("report", {"tar": str(t)}))
            else:
                todo.append(t)
        processes = min(cfg.workers or cores, max(1, len(todo)))
        threads = cfg.decode_threads or max(1, cores // processes)
        settings = ReadSettings(normal_tolerance=cfg.normal_tolerance, decode_threads=threads)
        # Largest first: the long tars start early, so the pool drains evenly.
        todo.sort(key=lambda t: -t.stat().st_size)
        tasks = [task(t, settings) for t in todo]
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
                "input_format": fmt,
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
                **_run_stats(todo, processes, threads, fresh_rows, seconds, removed),
            },
        )

    def run_folders(self, cfg: IngestConfig, ctx: StageContext, fmt: str) -> Manifest:
        """Ingest image folders / Mapillary downloads (one source per input) into parts.

        Raises:
            SbeError: an input is not a folder of that format, two inputs share a name, or a
                source yields no valid rows.
        """
        out = ctx.out_dir
        plans = [plan_folder(fmt, p, cfg.id_column) for p in cfg.inputs]
        names = [p.root.resolve().name or "images" for p in plans]
        if len(set(names)) != len(names):
            raise SbeError(
                "two inputs share a folder name (parts are named by it): "
                + ", ".join(str(p.root) for p in plans)
            )
        inputs = fingerprint_paths([p.root for p in plans])
        done = ctx.check(inputs, format=INGEST_FORMAT, input_format=fmt)
        if done is not None:
            return done
        cores = usable_cores()
        tasks: list[FolderTask] = []
        for k, (plan, name) in enumerate(zip(plans, names, strict=True)):
            container = os.path.relpath(plan.root.resolve(), out.resolve())
            for start in range(0, plan.records.num_rows, FOLDER_PART_ROWS):
                stop = min(start + FOLDER_PART_ROWS, plan.records.num_rows)
                meta = {
                    "stage": STAGE,
                    "format": INGEST_FORMAT,
                    "input_format": fmt,
                    "root": str(plan.root.resolve()),
                    "container": container,
                    "dataset_id": k,
                    "rows": [start, stop],
                    "records": _records_digest(plan, start, stop),
                }
                tasks.append(
                    FolderTask(
                        str(plan.root.resolve()),
                        plan.records.slice(start, stop - start),
                        start,
                        str(out / f"{name}-{start:09d}.parquet"),
                        meta,
                        container,
                        k,
                    )
                )
        reused: list[TarReport] = []
        todo: list[FolderTask] = []
        for t in tasks:
            if part_is_current(t.part, t.meta):
                found = (read_part_meta(t.part) or {}).get("report", {"tar": t.part})
                reused.append(TarReport.from_dict(found))
            else:
                todo.append(t)
        processes = min(cfg.workers or cores, max(1, len(todo)))
        threads = cfg.decode_threads or max(1, cores // processes)
        todo = [FolderTask(**{**t.__dict__, "threads": threads}) for t in todo]
        with ctx.progress("ingest", sum(t.records.num_rows for t in todo), unit="images") as bar:

            def advance(nbytes: int, images: int) -> None:
                bar.advance(images)

            if cfg.engine == "ray":
                fresh = _run_on_ray(todo, lambda mb: None)
            else:
                fresh = _run_tasks(todo, processes, advance)
        reports = sorted([*reused, *fresh], key=lambda r: r.tar)
        skips, warns = SkipLog(), SkipLog()
        for plan in plans:
            skips.merge(plan.skips.counts, plan.skips.examples)
            warns.merge(plan.warns.counts, plan.warns.examples)
        for r in reports:
            skips.merge(r.skipped, r.skip_examples)
            warns.merge(r.warnings, r.warning_examples)
        rows = sum(r.rows for r in reports)
        if rows == 0:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(skips.counts.items()))
            example = next(iter(skips.examples.values()), [""])[0]
            raise SbeError(
                f"{', '.join(str(p.root) for p in plans)}: no valid rows"
                + (f" ({summary}; e.g. {example})" if summary else " (no images)")
            )
        parts = sorted(Path(r.tar).name for r in reports if r.rows)
        removed = remove_stale_parts(out, set(parts), STAGE)
        fresh_rows = sum(r.rows for r in fresh)
        seconds = ctx.timer.seconds
        return ctx.commit(
            outputs=parts,
            rows={"images": rows, "parts": len(parts)},
            skips=skips,
            extra={
                "input_format": fmt,
                "warnings": dict(sorted(warns.counts.items())),
                "warning_examples": dict(sorted(warns.examples.items())),
                "sources": {
                    str(p.root): {
                        "rows": int(p.records.num_rows),
                        "metadata_files": [str(m) for m in p.metadata_files],
                    }
                    for p in plans
                },
                "parts_reused": len(reused),
                **_run_stats(todo, processes, threads, fresh_rows, seconds, removed),
            },
        )


def _records_digest(plan: FolderPlan, start: int, stop: int) -> str:
    """Content hash of a folder part's records and its files' sizes and mtimes."""
    h = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, plan.records.schema) as w:
        w.write_table(plan.records.slice(start, stop - start))
    h.update(sink.getvalue().to_pybytes())
    h.update(plan.size[start:stop].tobytes())
    h.update(plan.mtime_ns[start:stop].tobytes())
    return h.hexdigest()[:32]


run = stage_function(IngestStage)


__all__ = [
    "FolderTask",
    "IngestStage",
    "TarTask",
    "discover_tars",
    "ingest_tar",
    "part_meta",
    "run",
    "tar_stem",
]
