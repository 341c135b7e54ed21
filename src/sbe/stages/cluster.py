"""``sbe cluster``: k-means or HDBSCAN over building (or image) vectors.

Writes ``assignments.parquet`` (one row per vector: the id, metadata, ``cluster``, a score and
``rank_in_cluster``), ``clusters.parquet`` (one row per cluster: ``cluster``, ``size``,
``centroid``) and ``_manifest.json`` with the cluster sizes. Seeded: a rerun gives the same labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sbe.config import ClusterConfig
from sbe.errors import SbeError
from sbe.index.cluster import Clustering, hdbscan, kmeans
from sbe.index.source import open_source, read_source
from sbe.stages.base import Input, Stage, StageContext, stage_function
from sbe.stages.summary import Summary
from sbe.storage import (
    Manifest,
    SkipLog,
    fingerprint_paths,
    fixed_size_list,
    write_parquet_atomic,
)
from sbe.storage.artifacts import ClustersDir

STAGE = "cluster"

ASSIGNMENTS_FILE = ClustersDir.ASSIGNMENTS
CLUSTERS_FILE = ClustersDir.CLUSTERS


def cluster_vectors(vectors: np.ndarray, cfg: ClusterConfig) -> Clustering:
    """Run the configured method on unit vectors (N, D)."""
    if cfg.method == "kmeans":
        return kmeans(vectors, cfg.k, seed=cfg.seed, niter=cfg.niter, restarts=cfg.restarts)
    if len(vectors) > cfg.hdbscan_max_rows:
        raise SbeError(
            f"HDBSCAN on {len(vectors):,} vectors would be very slow (limit hdbscan_max_rows="
            f"{cfg.hdbscan_max_rows:,}); use --method kmeans or raise the limit in the config"
        )
    return hdbscan(
        vectors,
        min_cluster_size=cfg.min_cluster_size,
        min_samples=cfg.min_samples,
        pca_components=cfg.pca_components,
        seed=cfg.seed,
    )


def assignments_table(meta: pa.Table, result: Clustering) -> pa.Table:
    """The source's id and metadata columns + ``cluster``, the score and ``rank_in_cluster``."""
    return (
        meta.append_column("cluster", pa.array(result.labels, pa.int32()))
        .append_column(result.score_name, pa.array(result.score, pa.float32()))
        .append_column("rank_in_cluster", pa.array(result.rank_in_cluster(), pa.int32()))
    )


def clusters_table(result: Clustering) -> pa.Table:
    """One row per cluster (noise excluded): ``cluster``, ``size``, ``centroid``."""
    return pa.table(
        {
            "cluster": pa.array(np.arange(len(result.sizes), dtype=np.int32)),
            "size": pa.array(result.sizes, pa.int64()),
            "centroid": fixed_size_list(result.centroids.astype(np.float32)),
        }
    )


class ClusterStage(Stage):
    """``sbe cluster``: see the module docstring."""

    name = "cluster"
    inputs = (Input("input", "aggregate", follows=True),)

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        sizes = m.extra.get("sizes", [])
        shown = ", ".join(str(s) for s in sizes[:20]) + (" ..." if len(sizes) > 20 else "")
        return [f"cluster sizes: {shown} (noise {m.extra.get('noise', 0)})"]

    def run(self, cfg: ClusterConfig, ctx: StageContext) -> Manifest:
        """Cluster the vectors of ``cfg.input`` into ``cfg.output``.

        Returns:
            The manifest (``rows``: vectors, clusters, noise; ``extra["sizes"]``: size per cluster).
        """
        source = open_source(
            cfg.input,
            id_column=cfg.id_column,
            embedding_column=cfg.embedding_column,
            metadata_columns=cfg.metadata_columns,
        )
        if (done := ctx.check(fingerprint_paths(source.files))) is not None:
            return done
        skips = SkipLog()
        with ctx.progress("cluster: read", source.num_rows, unit="vectors") as bar:
            meta, vectors = read_source(source, skips=skips, on_rows=bar.advance)
        if len(vectors) == 0:
            raise SbeError(f"no vectors to cluster in {cfg.input} (skipped: {skips.counts})")
        result = cluster_vectors(vectors, cfg)
        write_parquet_atomic(assignments_table(meta, result), ctx.out_dir / ASSIGNMENTS_FILE)
        write_parquet_atomic(clusters_table(result), ctx.out_dir / CLUSTERS_FILE)
        return ctx.commit(
            outputs=[ASSIGNMENTS_FILE, CLUSTERS_FILE],
            rows={"vectors": len(vectors), "clusters": len(result.sizes), "noise": result.noise},
            skips=skips,
            extra={
                **result.params,
                "id_column": source.id_column,
                "score_column": result.score_name,
                "sizes": [int(s) for s in result.sizes],
                "noise": result.noise,
            },
        )


run = stage_function(ClusterStage)
