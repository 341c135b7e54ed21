"""``sbe index build``: a faiss index + side table over any embeddings dataset.

Reads the source (buildings, image embeddings or a split file) into one float32 matrix, builds an
exact or HNSW inner-product index, and writes ``index.faiss``, ``ids.parquet``, ``index.json`` and
``_manifest.json``. A rerun with the same inputs and settings returns at once. Paths recorded in
``index.json`` (the source, the model) are relative to the index folder, so a work folder can be
moved or copied whole.
"""

from __future__ import annotations

import resource
import uuid
from pathlib import Path
from typing import Any

import faiss
import pyarrow.compute as pc

from sbe.config import IndexConfig
from sbe.errors import SbeError
from sbe.index.directory import IDS_FILE, INDEX_FILE, INFO_FILE, IndexInfo, save_index_dir
from sbe.index.faiss_index import IndexParams, build_index, index_nbytes
from sbe.index.source import open_source, read_source, source_provenance
from sbe.stages.base import Input, Stage, StageContext, settings_from, stage_function
from sbe.stages.summary import Summary
from sbe.storage import Manifest, SkipLog, StageTimer, config_hash, fingerprint_paths
from sbe.storage.artifacts import relpath, source_dir

STAGE = "index"


def params_from_config(cfg: IndexConfig) -> IndexParams:
    return settings_from(IndexParams, cfg)


def relative_to(path: str | Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (see :func:`sbe.storage.artifacts.relpath`)."""
    return relpath(path, folder)


class IndexStage(Stage):
    """``sbe index``: see the module docstring."""

    name = "index"
    inputs = (Input("input", "aggregate", follows=True),)

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        info = m.extra.get("index", {})
        p = info.get("parameters", {})
        detail = f"{info.get('kind')} {info.get('faiss_class')}, dim {info.get('dim')}"
        if info.get("kind") == "hnsw":
            detail += f", M {p.get('hnsw_m')}, efConstruction {p.get('ef_construction')}, efSearch {p.get('ef_search')}"
        return [f"index: {detail}; built in {info.get('build_seconds', 0):.1f} s"]

    def run(self, cfg: IndexConfig, ctx: StageContext) -> Manifest:
        """Build the index directory ``cfg.output`` from ``cfg.input``.

        The published model that made the vectors is ``cfg.model``, else the one the source's
        stage recorded (see :func:`~sbe.index.source.source_provenance`); ``index.json`` stores it
        and the source relative to the index folder.

        Returns:
            The manifest (``up_to_date`` when nothing changed); ``extra["index"]`` is the
            ``index.json`` record.
        """
        out_dir = ctx.out_dir
        source = open_source(
            cfg.input,
            id_column=cfg.id_column,
            embedding_column=cfg.embedding_column,
            metadata_columns=cfg.metadata_columns,
        )
        record = source_dir(cfg.input).manifest_path
        read = [*source.files, *([record] if record.is_file() else [])]
        inputs = fingerprint_paths(read)
        model = str(Path(cfg.model).resolve()) if cfg.model else None
        if (done := ctx.check(inputs, model=model)) is not None:
            return done

        skips = SkipLog()
        for f in source.skipped_files:
            skips.add(f"file without {source.embedding_column!r}", f.name)
        read_timer = StageTimer()
        with ctx.progress("index: read", source.num_rows, unit="vectors") as bar:
            table, vectors = read_source(
                source, skips=skips, batch_rows=cfg.batch_rows, on_rows=bar.advance
            )
        read_seconds = read_timer.seconds
        if len(vectors) == 0:
            raise SbeError(f"no indexable vectors in {cfg.input} (skipped: {skips.counts})")

        params = params_from_config(cfg)
        kind = params.resolve(len(vectors))
        build_timer = StageTimer()
        with ctx.progress(f"index: {kind}", len(vectors), unit="vectors") as bar:
            index = build_index(vectors, params, on_added=bar.advance)
        build_seconds = build_timer.seconds
        del vectors

        provenance = source_provenance(cfg.input)
        model_dir = model or provenance["model_dir"]
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
                "path": relative_to(cfg.input, out_dir),
                "files": len(source.files),
                "fingerprint": config_hash({"inputs": [i.model_dump() for i in inputs]}),
                "embedding_dtype": source.dtype,
            },
            model_dir=relative_to(model_dir, out_dir) if model_dir else None,
            backbone=provenance["backbone"],
        )
        info = save_index_dir(out_dir, index, table, info)
        return ctx.commit(
            outputs=[INDEX_FILE, IDS_FILE, INFO_FILE],
            rows={
                "input_rows": source.num_rows,
                "vectors": info.count,
                "unique_ids": info.unique_ids,
            },
            skips=skips,
            extra={"index": info.model_dump(mode="json")},
        )


run = stage_function(IndexStage)
