"""``sbe index build``: a faiss index + side table over any embeddings dataset.

Reads the source (buildings, image embeddings or a split file) into one float32 matrix, builds an
exact or HNSW inner-product index, and writes ``index.faiss``, ``ids.parquet``, ``index.json`` and
``_manifest.json``. A rerun with the same inputs and settings returns at once.
"""

from __future__ import annotations

import resource
import uuid
from pathlib import Path
from typing import Any

import faiss
import pyarrow.compute as pc

from sbe.config import IndexConfig, section_dict
from sbe.errors import SbeError
from sbe.index.directory import IDS_FILE, INDEX_FILE, INFO_FILE, IndexInfo, save_index_dir
from sbe.index.faiss_index import IndexParams, build_index, index_nbytes
from sbe.index.source import open_source, read_source, source_provenance
from sbe.progress import progress_bar
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
)

STAGE = "index"


def params_from_config(cfg: IndexConfig) -> IndexParams:
    return IndexParams(
        kind=cfg.kind,
        exact_max_rows=cfg.exact_max_rows,
        hnsw_m=cfg.hnsw_m,
        ef_construction=cfg.ef_construction,
        ef_search=cfg.ef_search,
    )


def run(cfg: IndexConfig) -> Manifest:
    """Build the index directory ``cfg.output`` from ``cfg.input``.

    Args:
        cfg: the resolved ``index`` config section.

    Returns:
        The manifest written to ``cfg.output/_manifest.json`` (``up_to_date`` when nothing
        changed); ``extra["index"]`` is the ``index.json`` record.
    """
    timer = StageTimer()
    out_dir = Path(cfg.output)
    source = open_source(
        cfg.input,
        id_column=cfg.id_column,
        embedding_column=cfg.embedding_column,
        metadata_columns=cfg.metadata_columns,
    )
    settings = section_dict(cfg)
    h = config_hash({k: v for k, v in settings.items() if k not in ("input", "output")})
    inputs = fingerprint_paths(source.files)
    with DirLock(out_dir):
        clean_stale_temps(out_dir)
        current = manifest_is_current(out_dir, STAGE, h, inputs)
        if current is not None:
            return current

        skips = SkipLog()
        for f in source.skipped_files:
            skips.add(f"file without {source.embedding_column!r}", f.name)
        read_timer = StageTimer()
        with progress_bar("index: read", source.num_rows, unit="vectors") as bar:
            table, vectors = read_source(
                source, skips=skips, batch_rows=cfg.batch_rows, on_rows=bar.advance
            )
        read_seconds = read_timer.seconds
        if len(vectors) == 0:
            raise SbeError(f"no indexable vectors in {cfg.input} (skipped: {skips.counts})")

        params = params_from_config(cfg)
        kind = params.resolve(len(vectors))
        build_timer = StageTimer()
        with progress_bar(f"index: {kind}", len(vectors), unit="vectors") as bar:
            index = build_index(vectors, params, on_added=bar.advance)
        build_seconds = build_timer.seconds
        del vectors

        provenance = source_provenance(cfg.input)
        info = IndexInfo(
            build_id=uuid.uuid4().hex,
            kind=kind,
            faiss_class=type(index).__name__,
            dim=index.d,
            count=index.ntotal,
            id_column=source.id_column,
            id_type=str(source.id_type),
            unique_ids=int(pc.count_distinct(table.column(source.id_column)).as_py()),
            embedding_column=source.embedding_column,
            metadata_columns=source.metadata_columns,
            location_columns=list(source.location_columns) if source.location_columns else None,
            parameters={**params.recorded(kind), "omp_threads": faiss.omp_get_max_threads()},
            build_seconds=build_seconds,
            read_seconds=read_seconds,
            memory={
                **index_nbytes(index),
                # ru_maxrss is in KiB on Linux
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            },
            source={
                "path": str(Path(cfg.input).resolve()),
                "files": len(source.files),
                "fingerprint": config_hash({"inputs": [i.model_dump() for i in inputs]}),
                "embedding_dtype": source.dtype,
            },
            model_dir=str(cfg.model) if cfg.model else provenance["model_dir"],
            backbone=provenance["backbone"],
        )
        info = save_index_dir(out_dir, index, table, info)
        manifest = Manifest(
            stage=STAGE,
            config=settings,
            config_hash=h,
            inputs=inputs,
            outputs=[INDEX_FILE, IDS_FILE, INFO_FILE],
            rows={
                "input_rows": source.num_rows,
                "vectors": info.count,
                "unique_ids": info.unique_ids,
            },
            wall_seconds=timer.seconds,
            extra={"index": info.model_dump(mode="json")},
        ).with_skips(skips)
        write_manifest(out_dir, manifest)
        return manifest


class IndexStage(Stage):
    """``sbe index``: see the module docstring."""

    name = "index"
    inputs = (Input("input", "aggregate", follows=True),)
    examples = ("sbe index build --in work/buildings --out work/index",)
    legacy = True  # not yet on StageContext: locks and commits by itself

    def run(self, cfg: Any, ctx: StageContext) -> Manifest:
        return run(cfg)
