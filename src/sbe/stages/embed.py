"""Stage ``embed``: new images -> per-image embeddings from a published model.

The input is a packaged parquet (``image_bytes`` + ``OSMID``), or photos as ``sbe ingest`` reads
them: an image folder (with ``metadata.csv``/``metadata.jsonl``, or sub-folders named by building
id), a CSV/JSONL list of paths, WebDataset shards or a Mapillary download. Those are first listed
into ``sources.parquet`` (:mod:`sbe.inference.sources`: key, file reference, kept metadata); each
image is then read by its reference in the decode threads, never copied.

Output folder::

    state.json            input fingerprint, model identity, settings, counters (atomic)
    sources.parquet       (photo inputs) row_index, OSMID, file reference, metadata, kept columns
    parts/rows-<start>-<stop>.parquet      OSMID, row_index, embedding (fixed-size float32)
    failures/rows-<start>-<stop>.parquet   OSMID, row_index, reason (only for chunks with bad images)
    _manifest.json        written when the run completes

Exact resume: the plan (which input rows form which part) is a pure function of the input file
and the settings, parts are written atomically with their provenance in the footer, and the
folder is locked against a second writer. Any kill, then a rerun, yields exactly the rows of an
uninterrupted run. A resume against a changed input or a different model is refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sbe.config import EmbedConfig, SbeConfig
from sbe.errors import SbeError
from sbe.inference import ChunkResult, ChunkWriter, embed_chunks, inspect_input, make_plan
from sbe.inference.buildings import id_value_type
from sbe.inference.pipeline import FAILURES_DIR, PARTS_DIR, REFERENCE_COLUMNS
from sbe.inference.plan import IMAGE_BYTES, IS_VALID, Chunk, InputInfo, Plan, read_chunks
from sbe.inference.sources import SOURCES_NAME, SourceIndex, index_folder, index_shards
from sbe.models.published import load_embedder, model_identity
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.storage import (
    Manifest,
    SkipLog,
    config_hash,
    fingerprint_paths,
    read_part_meta,
    write_json_atomic,
    write_part,
)
from sbe.storage.artifacts import relpath
from sbe.storage.schemas import OSMID

STAGE = "embed"
STATE_NAME = "state.json"
STATE_FORMAT = 1


def input_key(info: InputInfo) -> str:
    """Identity of the input's content (not its location): moving the file keeps it."""
    fp = info.fingerprint()
    return config_hash({k: fp[k] for k in ("size", "mtime_ns", "schema", "num_rows")})


def read_state(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise SbeError(f"{path} is not valid JSON; delete {out_dir} to start over") from None


def check_resume(
    out_dir: Path,
    old: dict[str, Any],
    info: InputInfo | dict[str, Any],
    model: dict[str, Any],
) -> None:
    """Refuse to continue an output made from another input or another model.

    Args:
        info: the input (its ``fingerprint()``), or a photo input's identity dict.

    Raises:
        SbeError: naming what differs and how to proceed.
    """
    hint = f"use a new --output, or delete {out_dir} to start over"
    prev = old.get("input", {})
    now = info if isinstance(info, dict) else info.fingerprint()
    diffs = [
        f"{k} {prev.get(k)!r} -> {now[k]!r}"
        for k in ("format", "size", "mtime_ns", "num_rows", "schema", "listing")
        if k in now and prev.get(k) != now[k]
    ]
    if diffs:
        raise SbeError(
            f"{out_dir} holds embeddings of a different input ({prev.get('path')}): the input "
            f"changed ({'; '.join(d.replace(chr(10), ' ') for d in diffs)}); {hint}"
        )
    prev_model = old.get("model", {})
    if prev_model.get("fingerprint") != model["fingerprint"]:
        raise SbeError(
            f"{out_dir} holds embeddings from another model ({prev_model.get('model_dir')}, "
            f"fingerprint {prev_model.get('fingerprint')}); --model {model['model_dir']} has "
            f"fingerprint {model['fingerprint']}; {hint}"
        )


def shard_chunks(plan: Plan, index: int, count: int) -> list[Chunk]:
    """The chunks of shard ``index`` of ``count`` (round-robin, so shards get similar work)."""
    return [c for i, c in enumerate(plan.chunks) if i % count == index]


def remove_stale(out_dir: Path, keep: set[str]) -> int:
    """Delete parts and failure files not in the current plan (e.g. after ``--limit`` changed)."""
    removed = 0
    for sub in (PARTS_DIR, FAILURES_DIR):
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for p in folder.glob("rows-*.parquet"):
            if p.stem not in keep:
                p.unlink()
                removed += 1
    return removed


class _Counters:
    """Totals derived only from finished parts, so they are never inflated by a kill."""

    def __init__(self, chunks_total: int) -> None:
        self.chunks_total = chunks_total
        self.chunks_done = 0
        self.embedded = 0
        self.failed = 0
        self.skips = SkipLog()

    def add(self, r: ChunkResult) -> None:
        self.chunks_done += 1
        self.embedded += r.embedded
        self.failed += r.failed
        self.skips.merge(r.reasons, r.examples)


#: the settings that decide which rows a run embeds and how they are chunked (a resume must match)
STATE_SETTINGS = (
    "format",
    "id_column",
    "keep_columns",
    "filter_valid",
    "limit",
    "chunk_rows",
    "shard_index",
    "shard_count",
)


def _state(
    status: str,
    info: dict[str, Any],
    model: dict[str, Any],
    cfg: EmbedConfig,
    plan: Plan,
    selected: int,
    counters: _Counters,
) -> dict[str, Any]:
    """The ``state.json`` record: input (its fingerprint) and model identity, settings,
    counters."""
    return {
        "format": STATE_FORMAT,
        "stage": STAGE,
        "status": status,
        "input": info,
        "model": model,
        "settings": cfg.model_dump(mode="json", include=set(STATE_SETTINGS)),
        "counters": {
            "input_rows": info["num_rows"],
            "filtered_out": plan.filtered_out,
            "selected": selected,
            "chunks_total": counters.chunks_total,
            "chunks_done": counters.chunks_done,
            "embedded": counters.embedded,
            "failed": counters.failed,
            "remaining": selected - counters.embedded - counters.failed,
        },
    }


PHOTO_FORMATS = ("imagefolder", "webdataset", "mapillary")


def input_format(cfg: EmbedConfig) -> str:
    """``packaged`` for a parquet input, else the photo format (named or detected).

    Raises:
        SbeError: the input is missing, or holds 3D Street View tars (ingest those).
    """
    if cfg.format != "auto":
        return cfg.format
    p = Path(cfg.input)
    if p.is_file() and p.suffix.lower() == ".parquet":
        return "packaged"
    from sbe.data.sources import detect_one

    fmt = detect_one(p)
    if fmt == "3dsv":
        raise SbeError(
            f"{p}: 3D Street View tars are read by `sbe ingest`; embed takes a packaged parquet, "
            "an image folder, a CSV/JSONL list, WebDataset shards or a Mapillary download "
            "(or pass --format)"
        )
    return fmt


def build_index(cfg: EmbedConfig, fmt: str) -> SourceIndex:
    """The :class:`SourceIndex` of a photo input (see :mod:`sbe.inference.sources`)."""
    if fmt == "webdataset":
        from sbe.stages.ingest import discover_tars

        return index_shards(discover_tars([Path(cfg.input)]), cfg.id_column, cfg.keep_columns)
    return index_folder(fmt, cfg.input, cfg.id_column, cfg.keep_columns)


def index_identity(cfg: EmbedConfig, fmt: str, index: SourceIndex) -> dict[str, Any]:
    """A photo input's identity in ``state.json`` (same keys as a packaged input's, plus the
    listing hash): a resume against a changed folder is refused like a changed parquet."""
    sizes = [f.stat() for f in index.files]
    return {
        "path": str(Path(cfg.input).expanduser().resolve()),
        "format": fmt,
        "size": int(sum(st.st_size for st in sizes)),
        "mtime_ns": int(max((st.st_mtime_ns for st in sizes), default=0)),
        # the files, not the settings: --id-column / --keep-columns change the table, not the input
        "schema": f"{fmt} photos",
        "num_rows": index.table.num_rows,
        "listing": index.listing,
    }


def write_index(out_dir: Path, index: SourceIndex) -> InputInfo:
    """Write ``sources.parquet`` (only when its content changed, so a rerun keeps the file) and
    describe it as the embedding input (one row group: chunks are cut by ``chunk_rows`` only)."""
    path = out_dir / SOURCES_NAME
    digest = index.digest()
    meta = read_part_meta(path) if path.is_file() else None
    if meta is None or meta.get("digest") != digest:
        write_part(
            index.table, path, {"digest": digest}, row_group_size=max(1, index.table.num_rows)
        )
    st = path.stat()
    table = index.table
    return InputInfo(
        path=path.resolve(),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        schema=table.schema.to_string(show_schema_metadata=False),
        num_rows=table.num_rows,
        row_group_rows=(table.num_rows,),
        osmid_type=table.schema.field(OSMID).type,
        has_valid=False,
    )


class EmbedStage(Stage):
    """``sbe embed``: see the module docstring."""

    name = "embed"
    inputs = (Input("input", "synth", "packaged"), Input("model", "publish"))

    def skip_reason(self, cfg: SbeConfig) -> str | None:
        path = cfg.resolved().embed.input
        return None if Path(path).exists() else f"no images to embed at {path}"

    def run(self, cfg: EmbedConfig, ctx: StageContext) -> Manifest:
        """Embed the images of ``cfg.input`` with the model in ``cfg.model`` into ``cfg.output``.

        Finished parts are kept across runs when their own footer proves they were made from the
        same input, model, rows and settings (see :class:`~sbe.inference.ChunkWriter`), so a
        killed run resumes chunk by chunk and a larger ``--limit`` only embeds the new rows.

        Returns:
            The manifest (``rows``: input rows, selected, embedded, failed, parts; ``extra``:
            the model identity under ``"model"``, which later stages read, and timings).

        Raises:
            SbeError: bad input, a mismatched resume, or a missing model.
        """
        fmt = input_format(cfg)
        if fmt in PHOTO_FORMATS:
            return self.run_photos(cfg, ctx, fmt)
        if cfg.id_column or cfg.keep_columns:
            raise SbeError(
                f"{cfg.input}: --id-column and --keep-columns apply to photo inputs (a folder, a "
                "CSV/JSONL list, WebDataset shards); a packaged parquet is keyed by its OSMID"
            )
        out_dir = ctx.out_dir
        info = inspect_input(cfg.input)
        model = model_identity(cfg.model)
        old = None if ctx.restart else read_state(out_dir)
        if old is not None:
            check_resume(out_dir, old, info, model)
        # the model folder's content fingerprint decides the output as much as the settings do
        done = ctx.check(fingerprint_paths([info.path]), model=model["fingerprint"])
        if done is not None:
            return done
        if ctx.restart:
            remove_stale(out_dir, set())
        (out_dir / SOURCES_NAME).unlink(missing_ok=True)
        columns = [IMAGE_BYTES, OSMID] + ([IS_VALID] if cfg.filter_valid and info.has_valid else [])
        return self.embed(cfg, ctx, info, info, model, input_key(info), columns)

    def run_photos(self, cfg: EmbedConfig, ctx: StageContext, fmt: str) -> Manifest:
        """Embed a photo input: list it into ``sources.parquet``, then embed by reference."""
        if cfg.engine == "ray":
            raise SbeError(
                f"{cfg.input}: --engine ray embeds packaged parquet inputs; use --engine local "
                "for a folder, list or WebDataset input"
            )
        out_dir = ctx.out_dir
        index = build_index(cfg, fmt)
        if index.table.num_rows == 0:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(index.skips.counts.items()))
            raise SbeError(f"{cfg.input}: no images to embed ({summary or 'none listed'})")
        ident = index_identity(cfg, fmt, index)
        model = model_identity(cfg.model)
        old = None if ctx.restart else read_state(out_dir)
        if old is not None:
            check_resume(out_dir, old, ident, model)
        done = ctx.check(
            fingerprint_paths(index.files), model=model["fingerprint"], input_format=fmt
        )
        if done is not None:
            return done
        if ctx.restart:
            remove_stale(out_dir, set())
        info = write_index(out_dir, index)
        return self.embed(
            cfg,
            ctx,
            info,
            ident,
            model,
            index.reference_digest(),
            [OSMID, *REFERENCE_COLUMNS],
            index=index,
        )

    def embed(
        self,
        cfg: EmbedConfig,
        ctx: StageContext,
        info: InputInfo,
        ident: InputInfo | dict[str, Any],
        model: dict[str, Any],
        key: str,
        columns: list[str],
        index: SourceIndex | None = None,
    ) -> Manifest:
        """Plan chunks of ``info``, embed the unfinished ones, and commit.

        Args:
            info: the table embedded (the packaged parquet, or ``sources.parquet``).
            ident: the input's identity recorded in ``state.json``.
            key: the input's content key in every part footer.
            columns: the columns of ``info`` each chunk table needs.
            index: a photo input's index (its skips and warnings go to the manifest).
        """
        out_dir = ctx.out_dir
        plan = make_plan(info, cfg.chunk_rows, cfg.filter_valid, cfg.limit)
        chunks = shard_chunks(plan, cfg.shard_index, cfg.shard_count)
        writer = ChunkWriter(
            out_dir,
            id_value_type(info.osmid_type),
            int(model["dim"]),
            {
                "stage": STAGE,
                "input": key,
                "model": model["fingerprint"],
                "filter_valid": cfg.filter_valid,
                "runtime": cfg.runtime,
                **_precision_meta(cfg),
            },
        )
        remove_stale(out_dir, {c.name for c in chunks})
        counters = _Counters(len(chunks))
        todo: list[Chunk] = []
        for c in chunks:
            finished = writer.finished(c)
            if finished is None:
                todo.append(c)
            else:
                counters.add(finished)
        if todo or ctx.resuming:
            ctx.log(f"embed: {len(chunks) - len(todo)} of {len(chunks)} parts already done")
        selected = sum(c.selected for c in chunks)

        # paths recorded relative to the output folder, so a moved work folder keeps working
        recorded_model = {**model, "model_dir": relpath(model["model_dir"], out_dir)}

        fp = ident if isinstance(ident, dict) else ident.fingerprint()
        recorded_input = {**fp, "path": relpath(fp["path"], out_dir)} if fp.get("path") else fp

        def save_state(status: str) -> None:
            state = _state(status, recorded_input, recorded_model, cfg, plan, selected, counters)
            write_json_atomic(out_dir / STATE_NAME, state)

        save_state("running" if todo else "complete")
        calibration: dict[str, Any] = {}  # int8: the calibration sample's digest, when made
        load_s = embed_s = 0.0
        images_this_run = 0
        if todo:
            t0 = time.perf_counter()
            results = _run_engine(cfg, info, todo, writer, columns, calibration)
            load_s = time.perf_counter() - t0
            total = sum(c.selected for c in todo)
            with ctx.progress("embed", total, unit="images") as bar:
                for r in results:
                    counters.add(r)
                    images_this_run += r.embedded + r.failed
                    save_state("running")
                    bar.advance(r.embedded + r.failed)
            embed_s = time.perf_counter() - t0 - load_s
            if counters.chunks_done != counters.chunks_total:
                raise SbeError(
                    f"embedding stopped early: {counters.chunks_done} of "
                    f"{counters.chunks_total} parts written; rerun to finish"
                )
            save_state("complete")
        skips = SkipLog()
        if index is not None:
            skips.merge(index.skips.counts, index.skips.examples)
        skips.merge(counters.skips.counts, counters.skips.examples)
        if plan.filtered_out and cfg.shard_count == 1:
            skips.add("is_valid is False", n=plan.filtered_out)
        outputs = [STATE_NAME, PARTS_DIR]
        if index is not None:
            outputs.insert(1, SOURCES_NAME)
        if (out_dir / FAILURES_DIR).is_dir():
            outputs.append(FAILURES_DIR)
        extra: dict[str, Any] = {}
        if index is not None:
            extra = {
                "input_format": ident["format"] if isinstance(ident, dict) else "packaged",
                "id_source": index.id_source,
                "sources": SOURCES_NAME,
                "warnings": dict(sorted(index.warns.counts.items())),
                "warning_examples": dict(sorted(index.warns.examples.items())),
            }
        return ctx.commit(
            outputs=outputs,
            rows={
                "input rows": info.num_rows,
                "selected": selected,
                "embedded": counters.embedded,
                "failed": counters.failed,
                "parts": counters.chunks_total,
            },
            skips=skips,
            extra={
                "model": recorded_model,
                "engine": cfg.engine,
                "state": STATE_NAME,
                **extra,
                "images_this_run": images_this_run,
                "load_seconds": round(load_s, 3),
                "embed_seconds": round(embed_s, 3),
                "images_per_second": round(images_this_run / embed_s, 1) if embed_s else None,
                "precision": cfg.precision,
                **calibration,
            },
        )


def run(cfg: EmbedConfig, *, progress: bool | None = None, **options: Any) -> Manifest:
    """Embed ``cfg.input`` into ``cfg.output`` (the :class:`EmbedStage` from Python).

    Args:
        cfg: the ``embed`` config section (paths resolved).
        progress: show a progress bar (default: when stderr is a terminal).
        **options: passed to :func:`~sbe.stages.base.run_stage` (``log``, ``restart``, ...).
    """
    options.setdefault("show_progress", progress)
    return run_stage(EmbedStage(), cfg, **options)[0]


def _run_engine(
    cfg: EmbedConfig,
    info: InputInfo,
    todo: list[Chunk],
    writer: ChunkWriter,
    columns: list[str],
    calibration: dict[str, Any] | None = None,
) -> Any:
    """An iterator of :class:`ChunkResult` from the configured engine."""
    if cfg.engine == "ray" and cfg.precision != "fp32":
        raise SbeError(f"--precision {cfg.precision} runs with --engine local; or use fp32")
    if cfg.engine == "ray":
        from sbe.distributed.embed import ray_embed_chunks

        return ray_embed_chunks(
            model_dir=Path(cfg.model),
            info=info,
            chunks=todo,
            writer=writer,
            filter_valid=cfg.filter_valid,
            batch_size=cfg.batch_size,
            decode_workers=cfg.decode_workers,
            device=cfg.device,
            runtime=cfg.runtime,
            workers=cfg.ray_workers,
            gpus_per_worker=cfg.ray_gpus_per_worker,
        )
    embedder = load_embedder(
        cfg.model,
        cfg.device,
        runtime=cfg.runtime,
        batch_size=cfg.batch_size,
        decode_workers=cfg.decode_workers,
        **_precision_load(cfg, info, calibration if calibration is not None else {}),
    )
    tables = read_chunks(pq.ParquetFile(info.path), info, todo, columns)
    return embed_chunks(embedder, tables, writer, filter_valid=cfg.filter_valid)


# ---- int8 (issue 19): calibrated on a seeded sample of the input's own images ------------------


def _precision_meta(cfg: EmbedConfig) -> dict[str, Any]:
    """Part provenance for the precision: none for fp32 (older parts stay current)."""
    if cfg.precision == "fp32":
        return {}
    return {"precision": cfg.precision, "calibration_images": cfg.calibration_images}


def _precision_load(cfg: EmbedConfig, info: InputInfo, record: dict[str, Any]) -> dict[str, Any]:
    """``load_embedder`` arguments; int8 records its sample's digest in ``record``
    (``sbe search --precision int8 --calibration DIGEST`` reloads the same model)."""
    if cfg.precision == "fp32":
        return {}
    from sbe.models.backbones.int8 import calibration_digest, parquet_calibration

    if IMAGE_BYTES not in pq.read_schema(info.path).names:
        raise SbeError(
            f"{cfg.input}: --precision int8 calibrates on a packaged parquet's images; embed this "
            "photo input with --precision fp32"
        )
    make = parquet_calibration(info.path, IMAGE_BYTES, size=cfg.calibration_images)

    def sample(preprocess: Any) -> Any:
        images = make(preprocess)
        record["calibration"] = calibration_digest(images)
        return images

    return {"precision": cfg.precision, "calibration": sample}
