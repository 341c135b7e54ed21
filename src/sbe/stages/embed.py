"""Stage ``embed``: a packaged parquet of new images -> per-image embeddings from a published model.

Output folder::

    state.json            input fingerprint, model identity, settings, counters (atomic)
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

from sbe.config import EmbedConfig, SbeConfig, section_dict
from sbe.errors import SbeError
from sbe.inference import ChunkResult, ChunkWriter, embed_chunks, inspect_input, make_plan
from sbe.inference.pipeline import FAILURES_DIR, PARTS_DIR
from sbe.inference.plan import IMAGE_BYTES, IS_VALID, Chunk, InputInfo, Plan, read_chunks
from sbe.models.published import load_embedder, model_identity
from sbe.progress import progress_bar
from sbe.stages.base import Input, Stage, StageContext
from sbe.storage import (
    DirLock,
    Manifest,
    SkipLog,
    StageTimer,
    clean_stale_temps,
    config_hash,
    fingerprint_file,
    load_manifest,
    write_json_atomic,
    write_manifest,
)
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
    out_dir: Path, old: dict[str, Any], info: InputInfo, model: dict[str, Any]
) -> None:
    """Refuse to continue an output made from another input or another model.

    Raises:
        SbeError: naming what differs and how to proceed.
    """
    hint = f"use a new --output, or delete {out_dir} to start over"
    prev = old.get("input", {})
    now = info.fingerprint()
    diffs = [
        f"{k} {prev.get(k)!r} -> {now[k]!r}"
        for k in ("size", "mtime_ns", "num_rows", "schema")
        if prev.get(k) != now[k]
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


def run(cfg: EmbedConfig, *, progress: bool | None = None) -> Manifest:
    """Embed the rows of ``cfg.input`` with the model in ``cfg.model`` into ``cfg.output``.

    Args:
        cfg: the ``embed`` config section (paths resolved).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        The stage manifest (also written to ``<output>/_manifest.json``).

    Raises:
        SbeError: bad input, a mismatched resume, or a missing model.
        LockedError: another run is writing the same output folder.
    """
    timer = StageTimer()
    out_dir = Path(cfg.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise SbeError(f"--output {out_dir} is a file; the output is a folder")
    info = inspect_input(cfg.input)
    model = model_identity(cfg.model)
    settings = {
        "filter_valid": cfg.filter_valid,
        "limit": cfg.limit,
        "chunk_rows": cfg.chunk_rows,
        "shard_index": cfg.shard_index,
        "shard_count": cfg.shard_count,
    }
    with DirLock(out_dir):
        clean_stale_temps(out_dir)
        old = read_state(out_dir)
        if old is not None:
            check_resume(out_dir, old, info, model)
        plan = make_plan(info, cfg.chunk_rows, cfg.filter_valid, cfg.limit)
        chunks = shard_chunks(plan, cfg.shard_index, cfg.shard_count)
        writer = ChunkWriter(
            out_dir,
            info.osmid_type,
            int(model["dim"]),
            {
                "stage": STAGE,
                "input": input_key(info),
                "model": model["fingerprint"],
                "filter_valid": cfg.filter_valid,
                **_precision_meta(cfg),
            },
        )
        removed = remove_stale(out_dir, {c.name for c in chunks})
        counters = _Counters(len(chunks))
        todo: list[Chunk] = []
        for c in chunks:
            done = writer.finished(c)
            if done is None:
                todo.append(c)
            else:
                counters.add(done)
        selected = sum(c.selected for c in chunks)
        chash = config_hash(section_dict(cfg))
        previous = load_manifest(out_dir)
        if not todo and not removed and previous is not None and previous.config_hash == chash:
            # Nothing to do: leave state.json and the manifest untouched (their mtimes are
            # what downstream stages fingerprint).
            previous.up_to_date = True
            return previous

        def save_state(status: str) -> None:
            write_json_atomic(
                out_dir / STATE_NAME,
                {
                    "format": STATE_FORMAT,
                    "stage": STAGE,
                    "status": status,
                    "input": info.fingerprint(),
                    "model": model,
                    "settings": settings,
                    "counters": {
                        "input_rows": info.num_rows,
                        "filtered_out": plan.filtered_out,
                        "selected": selected,
                        "chunks_total": counters.chunks_total,
                        "chunks_done": counters.chunks_done,
                        "embedded": counters.embedded,
                        "failed": counters.failed,
                        "remaining": selected - counters.embedded - counters.failed,
                    },
                },
            )

        save_state("running" if todo else "complete")
        calibration: dict[str, Any] = {}  # int8: the calibration sample's digest, when made
        load_s = embed_s = 0.0
        images_this_run = 0
        if todo:
            t0 = time.perf_counter()
            results = _run_engine(cfg, info, todo, writer, calibration)
            load_s = time.perf_counter() - t0
            total = sum(c.selected for c in todo)
            with progress_bar("embed", total=total, unit="images", enabled=progress) as bar:
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
        skips.merge(counters.skips.counts, counters.skips.examples)
        if plan.filtered_out and cfg.shard_count == 1:
            skips.add("is_valid is False", n=plan.filtered_out)
        manifest = Manifest(
            stage=STAGE,
            config=section_dict(cfg),
            config_hash=chash,
            inputs=[fingerprint_file(info.path)],
            outputs=[STATE_NAME, PARTS_DIR],
            rows={
                "input rows": info.num_rows,
                "selected": selected,
                "embedded": counters.embedded,
                "failed": counters.failed,
                "parts": counters.chunks_total,
            },
            wall_seconds=timer.seconds,
            extra={
                "model": model,
                "engine": cfg.engine,
                "state": STATE_NAME,
                "images_this_run": images_this_run,
                "load_seconds": round(load_s, 3),
                "embed_seconds": round(embed_s, 3),
                "images_per_second": round(images_this_run / embed_s, 1) if embed_s else None,
                "precision": cfg.precision,
                **calibration,
            },
        ).with_skips(skips)
        manifest.up_to_date = not todo
        write_manifest(out_dir, manifest)
        return manifest


def _run_engine(
    cfg: EmbedConfig,
    info: InputInfo,
    todo: list[Chunk],
    writer: ChunkWriter,
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
    columns = [IMAGE_BYTES, OSMID] + ([IS_VALID] if cfg.filter_valid and info.has_valid else [])
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

    make = parquet_calibration(info.path, IMAGE_BYTES, size=cfg.calibration_images)

    def sample(preprocess: Any) -> Any:
        images = make(preprocess)
        record["calibration"] = calibration_digest(images)
        return images

    return {"precision": cfg.precision, "calibration": sample}


class EmbedStage(Stage):
    """``sbe embed``: see the module docstring."""

    name = "embed"
    inputs = (Input("input", "synth", "packaged"), Input("model", "publish"))
    examples = ("sbe embed --in packaged_images.parquet --model work/model --out work/embeddings",)
    legacy = True  # not yet on StageContext: locks and commits by itself

    def skip_reason(self, cfg: SbeConfig) -> str | None:
        path = cfg.section("embed").input
        return None if Path(path).is_file() else f"no packaged images at {path}"

    def run(self, cfg: Any, ctx: StageContext) -> Manifest:
        return run(cfg, progress=ctx.show_progress)
