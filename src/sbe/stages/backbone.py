"""``sbe backbone``: ingest parts + their tars -> ``<out>/<tar stem>-<first row>.parquet`` embeddings.

Each ingest row locates its JPEG inside the raw tar (``tar_file``, ``tar_offset``, ``tar_size``);
the image is read with one positional read (``os.pread``: no extraction, one open descriptor per
tar), decoded once at the size the model needs, and embedded while the next batches decode in
worker threads (:func:`sbe.models.backbones.pipeline.embed_stream`).

Output parts cover fixed row ranges of one ingest part (``part_rows`` rows; names are
deterministic), carry the ingest columns of :data:`~sbe.storage.schemas.CARRIED_FIELDS` plus
``embedding`` (``fixed_size_list<float16 | float32, dim>``), and are written atomically with their
provenance in the footer: the source ingest part and tar fingerprints, the row range, the backbone
identity (key ``"backbone"``), the dtype and a config hash. A kill at any moment loses at most the
part being written; a rerun skips current parts, redoes the rest, and removes parts that no longer
belong (a changed ``part_rows``, a removed tar), so rows are never duplicated or missing.

Unreadable or corrupt images and non-finite embeddings are skipped and counted by reason (in each
part's footer and in ``_manifest.json``), never fatal.

Example:
    >>> from sbe.config import load_config
    >>> cfg = load_config(overrides={"backbone": {"input": Path("images")}}).section("backbone")
    >>> manifest = run(cfg)
    >>> manifest.extra["backbone"]["name"], manifest.rows["embedded"]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.config import BackboneConfig
from sbe.data.tarstream import TarReader
from sbe.errors import SbeError
from sbe.models.backbones import Backbone, load_backbone, resolve_spec
from sbe.models.backbones.onnx import available_cores
from sbe.models.backbones.pipeline import embed_stream
from sbe.settings import same_named
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.stages.summary import Summary
from sbe.storage import (
    Manifest,
    SkipLog,
    fingerprint_file,
    fixed_size_list,
    list_parts,
    part_is_current,
    read_part_meta,
    remove_stale_parts,
    write_part,
)
from sbe.storage.artifacts import ImagesDir
from sbe.storage.manifest import MAX_SKIP_EXAMPLES
from sbe.storage.schemas import CARRIED_FIELDS, backbone_schema, uid_str

STAGE = "backbone"
#: Bump when unchanged inputs and settings would now give different rows (redoes every part).
BACKBONE_FORMAT = 1
SOURCE_COLUMNS = ("tar_file", "tar_offset", "tar_size")
CARRIED_NAMES = tuple(f.name for f in CARRIED_FIELDS)
DTYPES = {"float16": (np.float16, pa.float16()), "float32": (np.float32, pa.float32())}


@dataclass(frozen=True)
class PartTask:
    """One output part: a row range of one ingest part. Plain data, picklable (Ray can ship it).

    Attributes:
        source: the ingest part (``images/<stem>.parquet``).
        start, stop: its row range ``[start, stop)``.
        tars: ``tar_file`` value -> resolved path of that tar on this machine.
        output: the part to write.
        meta: the footer metadata that makes the part current (see :func:`part_meta`).
        backbone: the backbone identity.
        runtime, device: where to run it (``load_backbone`` arguments).
        batch_size: images per model call (0 = the backbone's default).
        decode_workers: decoders, threads or (with ``decode_processes``) processes (0 = auto).
        dtype: ``float16`` or ``float32``.
        threads: ONNX Runtime intra-op threads per model call (0 = every core).
        lanes: model calls run at once, each decoding its own batches (see ``embed_stream``).
        decode_processes: decode in this many worker processes instead of threads (GPU).
        precision, calibration: ``fp32``, or ``int8`` and the calibration sample's digest.
    """

    source: str
    start: int
    stop: int
    tars: dict[str, str]
    output: str
    meta: dict[str, Any]
    backbone: dict[str, Any]
    runtime: str = "auto"
    device: str = "auto"
    batch_size: int = 0
    decode_workers: int = 0
    dtype: str = "float16"
    threads: int = 0
    lanes: int = 1
    decode_processes: int = 0
    # int8 (issue 19): the quantised graph, found in the cache by its calibration sample's digest
    precision: str = "fp32"
    calibration: str | None = None


def cpu_plan(threads: int, cores: int) -> tuple[int, int]:
    """ONNX Runtime on CPU: (intra-op threads per call, concurrent calls) for ``[backbone] threads``.

    0 (automatic) runs one single-threaded call per core. On 2 cores with the JPEG decoding
    sharing them, that measured 7-9% faster than one two-threaded call on 640 px JPEGs and level
    on 224 px ones (docs/backbone.md). An explicit ``threads`` gives one call of that many.
    """
    return (threads, 1) if threads else (1, cores)


@dataclass
class PartResult:
    """What one part did: rows in, rows embedded, skips by reason (with a few examples)."""

    output: str
    rows_in: int
    rows_out: int
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False


# ---- backbones are loaded once per process and reused by every part ---------------------------

_BACKBONES: dict[str, Backbone] = {}


def _backbone_key(
    identity: dict[str, Any],
    runtime: str,
    device: str,
    threads: int,
    precision: str = "fp32",
    calibration: str | None = None,
) -> str:
    return json.dumps([identity, runtime, device, threads, precision, calibration], sort_keys=True)


def get_backbone(
    identity: dict[str, Any],
    runtime: str = "auto",
    device: str = "auto",
    threads: int = 0,
    precision: str = "fp32",
    calibration: str | None = None,
) -> Backbone:
    """The backbone for ``identity`` on this runtime and device, loaded once per process."""
    key = _backbone_key(identity, runtime, device, threads, precision, calibration)
    bb = _BACKBONES.get(key)
    if bb is None:
        bb = load_backbone(
            identity,
            runtime=runtime,
            device=device,
            threads=threads or None,
            precision=precision,
            calibration=calibration,
        )
        _BACKBONES.clear()  # one model at a time: they can be large
        _BACKBONES[key] = bb
    return bb


def auto_decode_workers(backbone: Backbone) -> int:
    """Decoding threads: on CPU they share the cores with the model, on GPU they feed it."""
    cores = available_cores()
    if backbone.device.startswith("cuda"):
        return max(2, min(cores, 16))
    return max(1, min(cores, 4))


# ---- reading ------------------------------------------------------------------------------------


def read_rows(path: str | os.PathLike[str], start: int, stop: int) -> pa.Table:
    """Rows ``[start, stop)`` of a parquet file, reading only the row groups that hold them."""
    pf = pq.ParquetFile(path)
    groups, first, offset = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table()
    assert first is not None  # set with the first group kept
    table = pf.read_row_groups(groups)
    return table.slice(start - first, stop - start)


# ---- one part (pure: inputs in the task, output the part file) ----------------------------------


def embed_part(task: PartTask, progress: Callable[[int], None] | None = None) -> PartResult:
    """Embed one row range and write its part atomically.

    Pure and picklable: everything it needs is in ``task``; the backbone is loaded once per
    process (:func:`get_backbone`). An empty part (every image skipped) is still written, so a
    rerun knows the range is done.

    Args:
        task: see :class:`PartTask`.
        progress: called with the number of input rows finished, after each batch.

    Returns:
        The part's :class:`PartResult`.
    """
    t0 = time.perf_counter()
    bb = get_backbone(
        task.backbone, task.runtime, task.device, task.threads, task.precision, task.calibration
    )
    np_dtype, pa_dtype = DTYPES[task.dtype]
    rows = read_rows(task.source, task.start, task.stop)
    n = rows.num_rows
    reader = TarReader(
        rows["tar_file"].to_pylist(),
        rows["tar_offset"].to_numpy(),
        rows["tar_size"].to_numpy(),
        task.tars,
        members=rows["member_name"].to_pylist(),
    )
    batch_size = task.batch_size or bb.default_batch_size
    workers = task.decode_workers or auto_decode_workers(bb)
    kept: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    skips = SkipLog()
    image_ids = rows["image_id"].to_numpy()
    try:
        stream = embed_stream(
            bb,
            n,
            reader,
            batch_size=batch_size,
            workers=workers,
            lanes=task.lanes,
            processes=task.decode_processes,
        )
        for batch in stream:
            kept.append(batch.indices)
            vectors.append(batch.embeddings.astype(np_dtype))
            for f in batch.failures:
                where = f"{Path(reader.tar_file[f.index]).name} image {uid_str(int(image_ids[f.index]))}"
                skips.add(f.reason, f"{where}: {f.detail}")
            if progress is not None:
                progress(batch.stop - batch.start)
    finally:
        reader.close()
    idx = np.concatenate(kept) if kept else np.empty(0, np.int64)
    emb = np.concatenate(vectors) if vectors else np.empty((0, bb.dim), np_dtype)
    # float16 overflows past 65504: such rows are skipped rather than stored as inf.
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        for j in np.flatnonzero(~finite):
            skips.add(
                "non_finite_embedding",
                f"image {uid_str(int(image_ids[idx[j]]))}: {task.dtype} overflow",
            )
        idx, emb = idx[finite], emb[finite]
    carried = rows.select(list(CARRIED_NAMES)).take(pa.array(idx, pa.int64()))
    schema = backbone_schema(bb.dim, pa_dtype)
    columns = [carried[name].cast(schema.field(name).type) for name in CARRIED_NAMES]
    emb_col = fixed_size_list(emb) if len(emb) else pa.array([], schema.field("embedding").type)
    table = pa.Table.from_arrays([*columns, emb_col], schema=schema)
    result = {
        "rows_in": n,
        "rows_out": table.num_rows,
        "skipped": dict(sorted(skips.counts.items())),
        "skip_examples": dict(sorted(skips.examples.items())),
    }
    write_part(table, task.output, {**task.meta, "result": result})
    return PartResult(
        output=task.output,
        rows_in=n,
        rows_out=table.num_rows,
        skipped=result["skipped"],
        skip_examples=result["skip_examples"],
        seconds=time.perf_counter() - t0,
    )


# ---- planning -----------------------------------------------------------------------------------


def part_name(stem: str, start: int) -> str:
    """Deterministic part name: ``<ingest stem>-<first row, 9 digits>.parquet``."""
    return f"{stem}-{start:09d}.parquet"


def part_meta(
    source: Path,
    tars: dict[str, str],
    start: int,
    stop: int,
    identity: dict[str, Any],
    dtype: str,
    chash: str,
) -> dict[str, Any]:
    """What a part must have been made from to be current."""
    return {
        "stage": STAGE,
        "format": BACKBONE_FORMAT,
        "source": fingerprint_file(source).model_dump(),
        "tars": {k: fingerprint_file(v).model_dump() for k, v in sorted(tars.items())},
        "rows": [start, stop],
        "backbone": identity,
        "dtype": dtype,
        "config_hash": chash,
    }


def resolve_tars(part: Path, names: list[str], ingest_dir: Path) -> dict[str, str]:
    """Map each ``tar_file`` value of an ingest part to a tar that exists here.

    Tried in order: the value rebased by the ingest folder's move since its manifest was written
    (:meth:`~sbe.storage.artifacts.ArtifactDir.resolve`), the value itself (ingest records the
    absolute path), the tar recorded in the part's footer (``source.path``), the ingest
    manifest's inputs with the same file name, and the file name next to or one level above the
    ingest folder (a moved data folder).

    Raises:
        SbeError: a tar cannot be found.
    """
    meta = read_part_meta(part) or {}
    images = ImagesDir(ingest_dir)
    manifest = images.manifest()
    known = [str((meta.get("source") or {}).get("path", ""))]
    if manifest is not None:
        # recorded relative to the ingest folder (absolute in older manifests)
        known += [str(ingest_dir / i.path) for i in manifest.inputs]
    out: dict[str, str] = {}
    for name in names:
        base = Path(name).name
        # rebased first when the work folder moved or was copied (ingest records absolute paths)
        candidates = [rebased] if (rebased := images.resolve(name)) is not None else []
        candidates += [Path(name)] if Path(name).is_absolute() else []
        candidates += [Path(k) for k in known if k and Path(k).name == base]
        candidates += [ingest_dir / name, ingest_dir / base, ingest_dir.parent / base]
        found = next((c for c in candidates if c.exists()), None)  # a tar, or an image folder
        if found is None:
            raise SbeError(
                f"{part.name}: its tar {name!r} was not found (looked at "
                f"{', '.join(dict.fromkeys(str(c) for c in candidates))})"
            )
        out[name] = str(found.resolve())
    return out


def _check_columns(part: Path) -> int:
    schema = pq.read_schema(part)
    missing = [c for c in (*CARRIED_NAMES, *SOURCE_COLUMNS) if c not in schema.names]
    if missing:
        raise SbeError(f"{part}: not an ingest part, it lacks columns {missing}")
    return pq.ParquetFile(part).metadata.num_rows


def _run_on_ray(todo: list[PartTask], threads: int) -> Iterator[PartResult]:
    """One Ray task per part (a GPU each when the cluster has them); results as they finish.

    Each worker process loads the backbone once (``embed_part`` caches it) and writes its part
    atomically, exactly as the local engine does.
    """
    from sbe.distributed import cluster_gpus, ray_map, ray_session

    with ray_session():
        gpus = cluster_gpus()
        for _, result in ray_map(
            embed_part, todo, num_cpus=max(1, threads), num_gpus=1 if gpus else 0
        ):
            yield result


def _sum_results(metas: list[dict[str, Any]]) -> tuple[int, int, SkipLog]:
    rows_in = rows_out = 0
    skips = SkipLog()
    for m in metas:
        r = m.get("result") or {}
        rows_in += int(r.get("rows_in", 0))
        rows_out += int(r.get("rows_out", 0))
        ex = {k: v[:MAX_SKIP_EXAMPLES] for k, v in (r.get("skip_examples") or {}).items()}
        skips.merge(r.get("skipped") or {}, ex)
    return rows_in, rows_out, skips


# ---- the stage ----------------------------------------------------------------------------------


class BackboneStage(Stage):
    """``sbe backbone``: see the module docstring.

    Args:
        on_part: called after each part is written (tests use it to interrupt a run).
    """

    name = "backbone"
    inputs = (Input("input", "ingest"),)

    def __init__(self, on_part: Callable[[PartResult], None] | None = None) -> None:
        self.on_part = on_part

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        i, x = m.extra.get("backbone") or {}, m.extra
        line = f"backbone {i.get('name')} ({i.get('dim')}-d, {i.get('pooling')} pooling)"
        if x.get("images_per_second") and not m.up_to_date:
            line += f", {x['runtime']} on {x['device']}: {x['images_per_second']:,.1f} images/s"
        return [line]

    def run(self, cfg: BackboneConfig, ctx: StageContext) -> Manifest:
        """Embed every image of the ingest output ``cfg.input`` into ``cfg.output``.

        Returns:
            The manifest (``rows``: images, embedded, parts; ``extra``: the backbone identity,
            runtime, throughput, parts reused and stale parts removed).

        Raises:
            SbeError: no ingest output, a tar missing, an unknown backbone, a GPU requested but
                absent.
        """
        ingest_dir = Path(cfg.input)
        out = ctx.out_dir
        parts = list_parts(ingest_dir, what="ingest parts", hint=" (run `sbe ingest` first)")
        plan: list[tuple[Path, int, dict[str, str]]] = []
        for p in parts:
            n = _check_columns(p)
            names = pc.unique(pq.read_table(p, columns=["tar_file"])["tar_file"]).to_pylist()
            plan.append((p, n, resolve_tars(p, [str(x) for x in names], ingest_dir)))
        spec = resolve_spec(cfg.model, cfg.pooling, image_size=cfg.image_size, gem_p=cfg.gem_p)
        identity = spec.identity()
        inputs = [fingerprint_file(p) for p in parts]
        inputs += [
            fingerprint_file(t) for t in sorted({t for _, _, ts in plan for t in ts.values()})
        ]
        done = ctx.check(
            inputs,
            format=BACKBONE_FORMAT,
            backbone=identity,
            weights=spec.weights_fingerprint(),
        )
        if done is not None:
            return done
        chash = ctx.hash

        tasks: list[PartTask] = []
        for p, n, tars in plan:
            for start in range(0, n, cfg.part_rows):
                stop = min(start + cfg.part_rows, n)
                # how it runs (runtime, device, batch size...): the section's fields of those names
                tasks.append(
                    same_named(
                        PartTask,
                        cfg,
                        source=str(p),
                        start=start,
                        stop=stop,
                        tars=tars,
                        output=str(out / part_name(p.stem, start)),
                        meta=part_meta(p, tars, start, stop, identity, cfg.dtype, chash),
                        backbone=identity,
                    )
                )
        # parts of other settings or other inputs never survive into this run's output
        removed = remove_stale_parts(out, {Path(t.output).name for t in tasks}, STAGE)
        todo = [t for t in tasks if not part_is_current(t.output, t.meta)]

        load_s = embed_s = 0.0
        bb: Backbone | None = None
        fresh_rows = 0
        total = sum(t.stop - t.start for t in todo)
        if todo and cfg.engine == "ray":
            t_embed = time.perf_counter()
            with ctx.progress("backbone", total, unit="images") as bar:
                for r in _run_on_ray(todo, cfg.threads):
                    fresh_rows += r.rows_in
                    bar.advance(r.rows_in)
                    if self.on_part is not None:
                        self.on_part(r)
            embed_s = time.perf_counter() - t_embed
        elif todo:
            t_load = time.perf_counter()
            threads, lanes = cpu_plan(cfg.threads, available_cores())
            bb = load_backbone(
                spec,
                runtime=cfg.runtime,
                device=cfg.device,
                threads=threads,
                **_precision_load(cfg, plan, spec),
            )
            if bb.runtime != "onnx":  # torch uses its own thread pool (or the GPU): one call
                threads, lanes = cfg.threads, 1
            _BACKBONES.clear()
            key = _backbone_key(
                identity, cfg.runtime, cfg.device, threads, bb.precision, bb.calibration
            )
            _BACKBONES[key] = bb
            # a GPU outruns decoder threads sharing one interpreter: decode in processes
            processes = (cfg.decode_workers or auto_decode_workers(bb)) if bb.device != "cpu" else 0
            todo = [
                replace(
                    t,
                    threads=threads,
                    lanes=lanes,
                    decode_processes=processes,
                    calibration=bb.calibration,
                )
                for t in todo
            ]
            load_s = time.perf_counter() - t_load
            t_embed = time.perf_counter()
            with ctx.progress("backbone", total, unit="images") as bar:
                for t in todo:
                    r = embed_part(t, progress=bar.advance)
                    fresh_rows += r.rows_in
                    if self.on_part is not None:
                        self.on_part(r)
            embed_s = time.perf_counter() - t_embed

        metas = [read_part_meta(t.output) or {} for t in tasks]
        rows_in, rows_out, skips = _sum_results(metas)
        return ctx.commit(
            outputs=[Path(t.output).name for t in tasks],
            rows={"images": rows_in, "embedded": rows_out, "parts": len(tasks)},
            skips=skips,
            backbone=identity,
            backbone_weights=spec.weights_fingerprint(),
            extra={
                "backbone": identity,
                "dim": spec.dim,
                "dtype": cfg.dtype,
                "precision": cfg.precision,
                "calibration": bb.calibration if bb else None,
                "runtime": bb.runtime if bb else None,
                "device": bb.device if bb else None,
                "batch_size": (cfg.batch_size or bb.default_batch_size) if bb else None,
                "decode_workers": (cfg.decode_workers or auto_decode_workers(bb)) if bb else None,
                "model_lanes": todo[0].lanes if bb and todo else None,
                "decode_processes": todo[0].decode_processes if bb and todo else None,
                "parts_reused": len(tasks) - len(todo),
                "images_this_run": fresh_rows,
                "load_seconds": round(load_s, 3),
                "embed_seconds": round(embed_s, 3),
                # input images processed in this run per second of embedding time
                "images_per_second": round(fresh_rows / embed_s, 1) if fresh_rows else None,
                "removed_stale_parts": removed,
            },
        )


def run(
    cfg: BackboneConfig,
    *,
    on_part: Callable[[PartResult], None] | None = None,
    **options: Any,
) -> Manifest:
    """Embed every image of the ingest output ``cfg.input`` into ``cfg.output`` (from Python).

    Args:
        cfg: the resolved ``[backbone]`` section (absolute paths).
        on_part: called after each part is written (tests use it to interrupt a run).
        **options: :func:`~sbe.stages.base.run_stage` options (``show_progress``, ``restart``...).

    Returns:
        The stage manifest (``up_to_date=True`` when nothing needed redoing).

    Raises:
        SbeError: see :meth:`BackboneStage.run`.
        LockedError: another run is writing ``cfg.output``.
    """
    return run_stage(BackboneStage(on_part), cfg, **options)[0]


# ---- int8 (issue 19): the calibration sample is drawn from the stage's own input ----------------


def _precision_load(
    cfg: BackboneConfig, plan: list[tuple[Path, int, dict[str, str]]], spec: Any
) -> dict[str, Any]:
    """``load_backbone`` arguments for the precision; int8 draws its seeded calibration sample
    from every ingest row (in part order), decoded as for the model."""
    if cfg.precision == "fp32":
        return {}
    from sbe.models.backbones.int8 import calibration_sample

    tables = []
    for p, _, _ in plan:
        names = pq.read_schema(p).names
        cols = [*SOURCE_COLUMNS, *(["member_name"] if "member_name" in names else [])]
        tables.append(pq.read_table(p, columns=cols))
    table = pa.concat_tables(tables, promote_options="default")
    tars = {k: v for _, _, ts in plan for k, v in ts.items()}
    reader = TarReader(
        table["tar_file"].to_pylist(),
        table["tar_offset"].to_numpy(),
        table["tar_size"].to_numpy(),
        tars,
        members=table["member_name"].to_pylist() if "member_name" in table.column_names else None,
    )
    try:
        sample = calibration_sample(
            table.num_rows, reader, spec.preprocess, size=cfg.calibration_images
        )
    finally:
        reader.close()
    return {"precision": cfg.precision, "calibration": sample}


__all__ = [
    "BackboneStage",
    "PartResult",
    "PartTask",
    "embed_part",
    "get_backbone",
    "part_meta",
    "part_name",
    "read_rows",
    "resolve_tars",
    "run",
]
