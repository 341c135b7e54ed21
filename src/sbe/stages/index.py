"""``sbe index build``: a faiss index + side table over any embeddings dataset.

Reads the source (buildings, image embeddings or a split file) into one float32 matrix, builds an
exact or HNSW inner-product index, and writes ``index.faiss``, ``ids.parquet``, ``index.json`` and
``_manifest.json``. A rerun with the same inputs and settings returns at once. Paths recorded in
``index.json`` (the source, the model) are relative to the index folder, so a work folder can be
moved or copied whole.

``--local-features`` then stores DISK features of up to ``local_features_per_row`` photos of
each row (the photos are found through the source's provenance,
:func:`sbe.index.photos.find_photo_parquet`) in ``local_features/``, for ``sbe search
--rerank``. Extraction runs in chunks of :data:`FEATURE_CHUNK_ROWS` rows, each a part file in
``local_features.parts/`` whose footer says what it was made from, so a killed build resumes at
the first missing chunk; the parts are assembled into the memory-mapped store (``meta.json``
last) and removed after the commit. Rows without a photo are counted (``skips``) and fall back
to their global rank at query time. A ``calibration.json`` in the model folder is copied in.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.config import IndexConfig, VerifyConfig
from sbe.errors import SbeError
from sbe.index.directory import IDS_FILE, INDEX_FILE, INFO_FILE, IndexInfo, save_index_dir
from sbe.index.faiss_index import IndexParams, build_index, index_nbytes
from sbe.index.photos import PhotoTable, find_photo_parquet
from sbe.index.source import open_source, read_source, source_provenance
from sbe.stages.base import Input, Stage, StageContext, settings_from, stage_function
from sbe.stages.search import local_settings
from sbe.stages.summary import Summary
from sbe.storage import (
    Manifest,
    SkipLog,
    StageTimer,
    atomic_path,
    config_hash,
    fingerprint_paths,
)
from sbe.storage.artifacts import IndexDir, ModelDir, relpath, source_dir
from sbe.storage.parts import part_is_current, read_part_meta, write_part

STAGE = "index"
#: index rows per resumable part of the local-feature extraction
FEATURE_CHUNK_ROWS = 256
PARTS_DIR = IndexDir.LOCAL_FEATURES + ".parts"
PART_STAGE = "index-local-features"


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
        model = str(Path(cfg.model).resolve()) if cfg.model else None
        provenance = source_provenance(cfg.input)
        model_dir = model or provenance["model_dir"]
        calibration = Path(model_dir) / ModelDir.CALIBRATION if model_dir else None
        if calibration is not None and calibration.is_file():
            read.append(calibration)
        else:
            calibration = None
        verify = ctx.full_config.verify if ctx.full_config is not None else VerifyConfig()
        extra: dict[str, Any] = {"model": model}
        photos: Path | None = None
        if cfg.local_features:
            photos = find_photo_parquet(cfg.input, source.id_column)
            if photos is None:
                raise SbeError(
                    f"--local-features: no photo parquet (image_bytes + {source.id_column!r}) "
                    f"found behind {cfg.input}; index an `sbe aggregate` or `sbe embed` output "
                    "of packaged images"
                )
            read.append(photos)
            extra["local_features"] = _extraction_key(verify)
        inputs = fingerprint_paths(read)
        if (done := ctx.check(inputs, **extra)) is not None:
            # a run stopped between its commit and the parts' removal left them: only a cache
            shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
            return done
        # files of an earlier build that this one may not rewrite must not outlive it
        for stale in (IndexDir.CALIBRATION, IndexDir.LOCAL_FEATURES):
            _remove(out_dir / stale)

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
        outputs = [INDEX_FILE, IDS_FILE, INFO_FILE]
        rows = {"input_rows": source.num_rows, "vectors": info.count, "unique_ids": info.unique_ids}
        manifest_extra: dict[str, Any] = {"index": info.model_dump(mode="json")}
        if calibration is not None:
            with atomic_path(out_dir / IndexDir.CALIBRATION) as tmp:
                shutil.copyfile(calibration, tmp)
            outputs.append(IndexDir.CALIBRATION)
        if photos is not None:
            ids = table.column(source.id_column).to_pylist()
            meta = build_local_features(
                out_dir,
                ids,
                source.id_column,
                photos,
                verify,
                cfg.local_features_per_row,
                info.build_id,
                ctx,
                skips,
            )
            outputs.append(IndexDir.LOCAL_FEATURES)
            rows["local_feature_images"] = int(meta["images"])  # type: ignore[call-overload]
            rows["rows_without_photos"] = int(meta["rows_without_photos"])  # type: ignore[call-overload]
            manifest_extra["local_features"] = meta
        manifest = ctx.commit(outputs=outputs, rows=rows, skips=skips, extra=manifest_extra)
        # the parts are only a resume point; the store holds everything now
        shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
        return manifest


def _remove(path: Path) -> None:
    if path.is_dir():
        (path / "meta.json").unlink(missing_ok=True)  # first: never a store that looks complete
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _extraction_key(verify: VerifyConfig) -> dict[str, Any]:
    """What decides the stored features (the stage hash includes it with --local-features)."""
    return {"max_keypoints": verify.max_keypoints, "max_side": verify.max_side}


def build_local_features(
    out_dir: Path,
    ids: list[Any],
    id_column: str,
    photos: Path,
    verify: VerifyConfig,
    per_row: int,
    build_id: str,
    ctx: StageContext,
    skips: SkipLog,
) -> dict[str, object]:
    """Extract DISK features of up to ``per_row`` photos of every index row into
    ``out_dir/local_features`` (resumable chunks, then one memory-mapped store).

    Args:
        out_dir: the index folder.
        ids: the id of each index row (row order).
        id_column: their column in the photo parquet.
        photos: the photo parquet (``image_bytes`` + the id column).
        verify: ``[verify]`` (extraction settings).
        per_row: photos per row.
        build_id: the index build the store belongs to (recorded; search checks it).
        ctx: the stage context (progress).
        skips: receives the missing / undecodable photo counts.

    Returns:
        The store's ``meta.json``.
    """
    from sbe.verify.local import LocalMatcher
    from sbe.verify.store import write_local_features

    settings = local_settings(verify)
    table = PhotoTable(photos, id_column)
    photo_rows = table.rows_of_many(ids, per_row)
    parts_dir = out_dir / PARTS_DIR
    parts_dir.mkdir(parents=True, exist_ok=True)
    key = {
        "stage": PART_STAGE,
        "format": 1,
        "settings": _extraction_key(verify),
        "per_row": per_row,
        "photos": str(photos.stat().st_size) + ":" + str(photos.stat().st_mtime_ns),
    }
    n_chunks = (len(ids) + FEATURE_CHUNK_ROWS - 1) // FEATURE_CHUNK_ROWS
    parts: list[Path] = []
    matcher: LocalMatcher | None = None
    with ctx.progress("index: local features", len(ids), unit="rows") as bar:
        for c in range(n_chunks):
            lo, hi = c * FEATURE_CHUNK_ROWS, min(len(ids), (c + 1) * FEATURE_CHUNK_ROWS)
            expected = {**key, "rows": [lo, hi], "ids": _digest(ids[lo:hi], photo_rows[lo:hi])}
            path = parts_dir / f"part-{c:05d}.parquet"
            parts.append(path)
            if not part_is_current(path, expected):
                matcher = matcher or LocalMatcher(settings)
                chunk, counts = _extract_chunk(matcher, table, photo_rows, lo, hi)
                write_part(chunk, path, {**expected, "counts": counts})
            bar.advance(hi - lo)
    # assemble: sizes first (from the footers), then stream the features into the store
    metas = [read_part_meta(p) or {} for p in parts]
    n_images = sum(int(m["counts"]["images"]) for m in metas)
    n_keypoints = sum(int(m["counts"]["keypoints"]) for m in metas)
    row_counts = np.zeros(len(ids), dtype=np.int64)
    for m in metas:
        for reason in ("empty photo", "photo does not decode"):
            if m["counts"].get(reason):
                skips.add(f"local features: {reason}", n=int(m["counts"][reason]))
    for p in parts:
        r = pq.read_table(p, columns=["row"]).column("row").to_numpy()
        np.add.at(row_counts, r, 1)
    without = int((row_counts == 0).sum())
    if without:
        skips.add("local features: row without a stored photo (global order at search)", n=without)
    meta = write_local_features(
        out_dir / IndexDir.LOCAL_FEATURES,
        _read_parts(parts),
        settings=settings,
        n_images=n_images,
        n_keypoints=n_keypoints,
        rows=np.concatenate([[0], np.cumsum(row_counts)]),
        extra={
            "index_build_id": build_id,
            "per_row": per_row,
            "rows_without_photos": without,
            "photos": relpath(photos, out_dir / IndexDir.LOCAL_FEATURES),
        },
    )
    return meta


def _digest(ids: list[Any], photo_rows: list[list[int]]) -> str:
    """What a chunk is made from: its rows' ids and their photo rows."""
    h = hashlib.sha256(repr((ids, photo_rows)).encode())
    return h.hexdigest()[:16]


def _extract_chunk(
    matcher: Any, table: PhotoTable, photo_rows: list[list[int]], lo: int, hi: int
) -> tuple[pa.Table, dict[str, int]]:
    """Features of the photos of rows ``lo:hi``: one table row per stored photo."""
    wanted = [r for rows in photo_rows[lo:hi] for r in rows]
    data = table.read(wanted)
    out: dict[str, list[Any]] = {k: [] for k in ("row", "width", "height", "n", "kp", "desc")}
    counts = {"images": 0, "keypoints": 0, "empty photo": 0, "photo does not decode": 0}
    for row in range(lo, hi):
        for pr in photo_rows[row]:
            blob = data.get(pr)
            if blob is None:
                counts["empty photo"] += 1
                continue
            try:
                f = matcher.extract(blob)
            except SbeError:
                counts["photo does not decode"] += 1
                continue
            out["row"].append(row)
            out["width"].append(f.image_size[0])
            out["height"].append(f.image_size[1])
            out["n"].append(len(f))
            out["kp"].append(f.keypoints.astype(np.float16).tobytes())
            out["desc"].append(f.descriptors.astype(np.float16).tobytes())
            counts["images"] += 1
            counts["keypoints"] += len(f)
    chunk = pa.table(
        {
            "row": pa.array(out["row"], pa.int64()),
            "width": pa.array(out["width"], pa.int32()),
            "height": pa.array(out["height"], pa.int32()),
            "n": pa.array(out["n"], pa.int32()),
            "keypoints": pa.array(out["kp"], pa.binary()),
            "descriptors": pa.array(out["desc"], pa.binary()),
        }
    )
    return chunk, counts


def _read_parts(parts: list[Path]) -> Iterator[Any]:
    """The stored photos' features, part by part, in row order."""
    from sbe.verify.local import LocalFeatures

    for p in parts:
        t = pq.read_table(p).to_pydict()
        for w, h, n, kp, desc in zip(
            t["width"], t["height"], t["n"], t["keypoints"], t["descriptors"], strict=True
        ):
            yield LocalFeatures(
                keypoints=np.frombuffer(kp, dtype=np.float16).reshape(n, 2),
                descriptors=np.frombuffer(desc, dtype=np.float16).reshape(n, 128),
                image_size=(int(w), int(h)),
            )


run = stage_function(IndexStage)
