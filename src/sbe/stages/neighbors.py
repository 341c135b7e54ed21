"""``sbe neighbors``: visual neighbours of other identities and their difficulty bands, per split.

For every image of a split: its ``k`` nearest images of *other* identities in the same split
(``neighbor_rows``, row indices into that split file), their distances (``visual_distance``) in a
PCA space of the thumbnail fingerprints (or of the L2-normalised backbone embeddings with
``space = "embedding"``), and a difficulty band per neighbour from train-calibrated percentiles of
distance / local scale. The PCA is fitted on a seeded sample of train and saved as
``pca.safetensors``; val and test reuse it and the train band edges.

Resumable: each split file is written atomically with its provenance and its statistics in the
footer, and skipped on a rerun when still current (same settings, same input file); val and test are
current only against the same train input and band edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.config import NeighborsConfig
from sbe.data.parquet_stream import StreamingPart
from sbe.errors import SbeError
from sbe.mining.bands import assign_bands, calibrate_band_edges, distance_ratios, local_scale
from sbe.mining.knn import VectorIndex, faiss_threads, knn_other_identities
from sbe.mining.pca import CovarianceAccumulator, Pca, safetensors_metadata
from sbe.stages.base import Input, Stage, StageContext, stage_function
from sbe.stages.summary import Summary
from sbe.storage import (
    Manifest,
    config_hash,
    fingerprint_file,
    fixed_size_list,
    load_manifest,
    part_is_current,
    read_part_meta,
    to_numpy_matrix,
)
from sbe.storage.artifacts import NeighborsDir, SplitDir
from sbe.storage.schemas import SPLITS, neighbors_schema

STAGE = "neighbors"
PCA_NAME = NeighborsDir.PCA
READ_BATCH_ROWS = 16_384
ANCHOR_BATCH_ROWS = 16_384
ROW_GROUP_ROWS = 32_768


def _feature_column(space: str) -> str:
    return "fingerprint" if space == "fingerprint" else "embedding"


def _prepare(raw: np.ndarray, space: str) -> np.ndarray:
    """Raw column values -> float32 features: fingerprints scaled to [0, 1], embeddings unit-norm."""
    x = raw.astype(np.float32)
    if space == "fingerprint":
        return x / np.float32(255.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.float32(1e-12))


def _load_features(path: Path, space: str, pca: Pca | None) -> tuple[np.ndarray, np.ndarray]:
    """All rows of a split: (float32 (N, d) features, int64 (N,) building_id)."""
    pf = pq.ParquetFile(path)
    n = pf.metadata.num_rows
    col = _feature_column(space)
    feats: np.ndarray | None = None
    ident = np.empty(n, dtype=np.int64)
    offset = 0
    for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=[col, "building_id"]):
        m = batch.num_rows
        x = _prepare(to_numpy_matrix(batch.column(col)), space)
        if pca is not None:
            x = pca.transform(x)
        if feats is None:
            feats = np.empty((n, x.shape[1]), dtype=np.float32)
        feats[offset : offset + m] = x
        ident[offset : offset + m] = batch.column("building_id").to_numpy()
        offset += m
    if feats is None:
        feats = np.empty((0, pca.out_dim if pca else 0), dtype=np.float32)
    return feats, ident


def _fit_or_load_pca(cfg: NeighborsConfig, train: Path, out_dir: Path, stamp: str) -> Pca | None:
    if cfg.pca_components == 0:
        return None
    path = out_dir / PCA_NAME
    if path.is_file() and safetensors_metadata(path).get("stamp") == stamp:
        return Pca.load(path)
    n = pq.ParquetFile(train).metadata.num_rows
    if n < 2:
        raise SbeError(f"{train}: needs at least 2 rows to fit the PCA")
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n, size=min(n, cfg.pca_fit_sample), replace=False))
    # stream the train file once, adding only the sampled rows: memory stays O(D^2)
    col = _feature_column(cfg.space)
    acc: CovarianceAccumulator | None = None
    offset = 0
    for batch in pq.ParquetFile(train).iter_batches(batch_size=READ_BATCH_ROWS, columns=[col]):
        m = batch.num_rows
        lo, hi = np.searchsorted(rows, [offset, offset + m])
        if hi > lo:
            raw = to_numpy_matrix(batch.column(col))[rows[lo:hi] - offset]
            x = _prepare(raw, cfg.space)
            acc = acc or CovarianceAccumulator(x.shape[1])
            acc.update(x)
        offset += m
    assert acc is not None
    pca = acc.pca(cfg.pca_components)
    pca.save(path, {"stamp": stamp, "space": cfg.space, "fit_rows": str(len(rows))})
    return pca


def _bands_for(
    distance: np.ndarray, k0: int, edges: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Round distances to their stored float16, then scale, ratios and bands from those values,
    so anyone reading the file recomputes exactly the same bands."""
    d16 = distance.astype(np.float16)
    scale = local_scale(d16, k0)
    ratios = distance_ratios(d16, scale)
    bands = assign_bands(ratios, edges) if edges is not None else None
    return d16, ratios, bands


def _calibrate(
    cfg: NeighborsConfig, index: VectorIndex, x: np.ndarray, ident: np.ndarray
) -> tuple[np.ndarray, int]:
    n = len(x)
    n_cal = min(n, max(math.ceil(cfg.calibration_fraction * n), cfg.calibration_min_anchors))
    rng = np.random.default_rng(cfg.seed + 1)
    anchors = np.sort(rng.choice(n, size=n_cal, replace=False))
    pooled = []
    for _a, _rows, dist in knn_other_identities(
        index, x, ident, cfg.k, anchors, batch_rows=ANCHOR_BATCH_ROWS
    ):
        _, ratios, _ = _bands_for(dist, min(cfg.k0_local_scale, cfg.k), None)
        pooled.append(ratios[np.isfinite(ratios)])
    ratios = np.concatenate(pooled) if pooled else np.zeros(0)
    if len(ratios) == 0:
        raise SbeError("train has no neighbours of another identity: cannot calibrate bands")
    return calibrate_band_edges(ratios, cfg.band_percentiles), n_cal


def _neighbors_for_split(
    cfg: NeighborsConfig,
    split: str,
    x: np.ndarray,
    ident: np.ndarray,
    edges: np.ndarray | None,
    out_path: Path,
    meta: dict[str, Any],
    on_rows: Callable[[int], None],
) -> tuple[dict[str, Any], np.ndarray]:
    """Search, band and stream one split's output; returns (stats, band edges used).

    The statistics are also stored in the file's footer (``read_part_meta(...)["result"]``), so a
    rerun that reuses the file reports them unchanged.
    """
    n = len(x)
    k = cfg.k
    index = VectorIndex(
        x,
        exact_max_rows=cfg.exact_max_rows,
        target_recall=cfg.ann_target_recall,
        tune_k=k + 16,
        nlist=cfg.ann_nlist,
        seed=cfg.seed,
    )
    stats: dict[str, Any] = {"rows": n, "index": index.info.to_dict()}
    if edges is None:
        edges, n_cal = _calibrate(cfg, index, x, ident)
        stats["calibration_anchors"] = n_cal
    schema = neighbors_schema(k)
    band_counts = np.zeros(len(edges) + 2, dtype=np.int64)  # index 0 = padding
    kept_total, short = 0, 0
    full_meta = {**meta, "band_edges": [float(e) for e in edges], "index": index.info.to_dict()}
    with StreamingPart(out_path, schema, full_meta, row_group_rows=ROW_GROUP_ROWS) as part:
        if n:
            for _a, rows, dist in knn_other_identities(
                index, x, ident, k, batch_rows=ANCHOR_BATCH_ROWS
            ):
                d16, _ratios, bands = _bands_for(dist, min(cfg.k0_local_scale, cfg.k), edges)
                assert bands is not None
                kept = (rows >= 0).sum(axis=1)
                kept_total += int(kept.sum())
                short += int((kept < k).sum())
                band_counts += np.bincount(
                    bands.ravel().astype(np.int64) + 1, minlength=len(band_counts)
                )
                part.write(
                    pa.table(
                        {
                            "neighbor_rows": fixed_size_list(rows),
                            "visual_distance": fixed_size_list(d16),
                            "band": fixed_size_list(bands),
                        },
                        schema=schema,
                    )
                )
                on_rows(len(rows))
        stats.update(
            {
                "mean_neighbors": round(kept_total / n, 2) if n else 0.0,
                "anchors_with_fewer_than_k": short,
                "band_counts": [int(c) for c in band_counts[1:]],
                "padding": int(band_counts[0]),
            }
        )
        part.set_result(stats)
    return stats, edges


def _reusable(
    out_path: Path, expected: dict[str, Any], edges: np.ndarray | None
) -> dict[str, Any] | None:
    """The footer of a finished split file that is still current (``None``: redo it).

    Current: same settings and inputs (``expected``) and, for val and test, the band edges of
    the train file this run uses.
    """
    if not part_is_current(out_path, expected):
        return None
    meta = read_part_meta(out_path) or {}
    if edges is not None and meta.get("band_edges") != [float(e) for e in edges]:
        return None
    return meta


class NeighborsStage(Stage):
    """``sbe neighbors``: see the module docstring."""

    name = "neighbors"
    inputs = (Input("input", "split"),)

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        edges = ", ".join(f"{e:.3g}" for e in m.extra.get("band_edges", []))
        lines: Summary = [f"band edges (distance / local scale): {edges}"]
        for name, s in (m.extra.get("splits") or {}).items():
            idx = s.get("index") or {}
            how = idx.get("kind", "?")
            if how == "ivf_flat":
                how += f" (nlist {idx['nlist']}, nprobe {idx['nprobe']}, recall {idx['measured_recall']})"
            if idx.get("fallback"):
                how += f" (exact: {idx['fallback']})"
            lines.append(f"{name}: {s['rows']:,} rows, {how}")
        return lines

    def run(self, cfg: NeighborsConfig, ctx: StageContext) -> Manifest:
        """Compute ``{train,val,test}.parquet`` of ``cfg.output`` from the split folder.

        Returns:
            The manifest (``rows`` per split; ``extra``: parameters, band edges, per-split
            statistics, reused ones marked ``reused``).
        """
        in_dir, out_dir = Path(cfg.input), ctx.out_dir
        files = {s: SplitDir(in_dir).split_path(s) for s in SPLITS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise SbeError(f"split files not found: {', '.join(missing)} (run `sbe split` first)")
        inputs = [fingerprint_file(files[s]) for s in SPLITS]
        if (done := ctx.check(inputs)) is not None:
            return done
        h = ctx.hash
        k0 = min(cfg.k0_local_scale, cfg.k)
        fp = {s: inp.model_dump() for s, inp in zip(SPLITS, inputs, strict=True)}
        with faiss_threads(cfg.threads) as threads:
            if cfg.pca_components == 0:  # a PCA of other settings is no output of this run
                (out_dir / PCA_NAME).unlink(missing_ok=True)
            stamp = config_hash({"config_hash": h, "train": fp["train"]})
            pca = _fit_or_load_pca(cfg, files["train"], out_dir, stamp)
            params: dict[str, Any] = {
                "space": cfg.space,
                "k": cfg.k,
                "k0_local_scale": k0,
                "band_percentiles": list(cfg.band_percentiles),
                "pca_components": pca.out_dim if pca else 0,
                "pca_explained_variance": round(float(pca.explained_variance_ratio.sum()), 4)
                if pca
                else None,
                "distance": "euclidean",
            }
            edges: np.ndarray | None = None
            per_split: dict[str, Any] = {}
            rows: dict[str, int] = {}
            for s in SPLITS:  # train first: it sets the band edges
                out_path = NeighborsDir(out_dir).split_path(s)
                expected = {
                    "stage": STAGE,
                    "config_hash": h,
                    "input": fp[s],
                    "train_input": fp["train"],
                }
                meta = _reusable(out_path, expected, edges)
                if meta is not None:
                    if s == "train":
                        edges = np.asarray(meta["band_edges"], dtype=np.float64)
                    rows[s] = pq.ParquetFile(out_path).metadata.num_rows
                    stats = meta.get("result") or {"rows": rows[s], "index": meta.get("index")}
                    per_split[s] = {**stats, "reused": True}
                    continue
                x, ident = _load_features(files[s], cfg.space, pca)
                with ctx.progress(f"neighbors: {s}", len(x), unit="images") as bar:
                    stats, edges_used = _neighbors_for_split(
                        cfg,
                        s,
                        x,
                        ident,
                        edges,
                        out_path,
                        {**expected, "split": s, **params},
                        bar.advance,
                    )
                edges = edges_used if s == "train" else edges
                per_split[s] = stats
                rows[s] = len(x)
                del x, ident
        assert edges is not None
        split_manifest = load_manifest(in_dir)
        return ctx.commit(
            outputs=[NeighborsDir.file_name(s) for s in SPLITS] + ([PCA_NAME] if pca else []),
            rows=rows,
            extra={
                **params,
                "band_edges": [float(e) for e in edges],
                "threads": threads,
                "splits": per_split,
                "backbone": split_manifest.extra.get("backbone") if split_manifest else None,
            },
        )


run = stage_function(NeighborsStage)
