"""Clustering: k-means and HDBSCAN on unit vectors, the cluster stage's files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import ClusterConfig
from sbe.errors import SbeError
from sbe.index import hdbscan, kmeans
from sbe.stages import cluster as cluster_stage
from sbe.storage import fixed_size_list, load_manifest, to_numpy_matrix


def blobs(n: int, d: int, clusters: int, noise: float = 0.15, seed: int = 0):
    """Unit vectors around well-separated centres: (vectors float32 (n, d), true labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    truth = rng.integers(0, clusters, n)
    x = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True)
    x = x + noise * rng.normal(size=(n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def test_kmeans_recovers_blobs_and_is_seeded() -> None:
    x, truth = blobs(1200, 32, 6)
    a = kmeans(x, 6, seed=3)
    assert a.labels.dtype == np.int32 and set(np.unique(a.labels)) == set(range(6))
    assert a.sizes.sum() == len(x) and a.noise == 0
    np.testing.assert_array_equal(a.sizes, np.bincount(a.labels, minlength=6))
    assert adjusted_rand_score(truth, a.labels) > 0.95
    # score is the cosine similarity to the (unit) centroid of the assigned cluster
    np.testing.assert_allclose(np.linalg.norm(a.centroids, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a.score, np.sum(x * a.centroids[a.labels], axis=1), atol=1e-3)
    b = kmeans(x, 6, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    with pytest.raises(SbeError, match="k <= number of vectors"):
        kmeans(x[:5], 6)


def test_hdbscan_labels_scattered_points_as_noise() -> None:
    x, truth = blobs(600, 32, 4, noise=0.2)
    rng = np.random.default_rng(9)
    scattered = rng.normal(size=(40, 32))
    scattered = (scattered / np.linalg.norm(scattered, axis=1, keepdims=True)).astype(np.float32)
    data = np.vstack([x, scattered])
    c = hdbscan(data, min_cluster_size=10, pca_components=0)
    assert c.params["pca_components"] == 0
    assert len(c.sizes) == 4 and c.sizes.sum() + c.noise == len(data)
    assert (c.labels[600:] == -1).mean() > 0.9 and (c.labels[:600] == -1).mean() < 0.05
    assert adjusted_rand_score(truth, c.labels[:600]) > 0.95
    assert (c.score[c.labels == -1] == 0).all() and (c.score[c.labels >= 0] > 0).all()
    # with PCA first (the default, for speed) the groups are still found
    reduced = hdbscan(data, min_cluster_size=10, pca_components=8)
    assert reduced.params["pca_components"] == 8 and len(reduced.sizes) == 4
    assert adjusted_rand_score(truth, reduced.labels[:600]) > 0.95


def test_rank_in_cluster() -> None:
    x, _ = blobs(300, 16, 3)
    c = kmeans(x, 3, seed=0)
    ranks = c.rank_in_cluster()
    for k in range(3):
        members = np.flatnonzero(c.labels == k)
        assert sorted(ranks[members]) == list(range(len(members)))
        assert ranks[members[np.argmax(c.score[members])]] == 0
    noisy = hdbscan(np.vstack([x, -x[:3]]), min_cluster_size=20, pca_components=0)
    assert (noisy.rank_in_cluster()[noisy.labels == -1] == -1).all()


def _buildings(path: Path, n: int = 400, ids: pa.Array | None = None) -> np.ndarray:
    x, _ = blobs(n, 24, 5)
    t = pa.table(
        {
            "OSMID": ids if ids is not None else pa.array(np.arange(n, dtype=np.int64) * 3),
            "image_count": pa.array(np.full(n, 2, np.int32)),
            "embedding": fixed_size_list(x),
            "lat": pa.array(np.linspace(0, 1, n)),
            "lon": pa.array(np.linspace(5, 6, n)),
        }
    )
    pq.write_table(t, path)
    return x


@pytest.mark.parametrize("method", ["kmeans", "hdbscan"])
def test_stage_writes_assignments_clusters_and_sizes(tmp_path: Path, method: str) -> None:
    _buildings(tmp_path / "b.parquet", ids=pa.array([f"n{i}" for i in range(400)]))
    cfg = ClusterConfig(
        input=tmp_path / "b.parquet", output=tmp_path / "c", method=method, k=5, min_cluster_size=15
    )
    m = cluster_stage.run(cfg)
    a = pq.read_table(tmp_path / "c" / "assignments.parquet")
    c = pq.read_table(tmp_path / "c" / "clusters.parquet")
    score = "centroid_similarity" if method == "kmeans" else "probability"
    assert a.column_names == ["OSMID", "lat", "lon", "image_count", "cluster", score, "rank_in_cluster"]  # fmt: skip
    assert a.column("OSMID").to_pylist() == [f"n{i}" for i in range(400)]
    assert a.schema.field("cluster").type == pa.int32()
    labels = a.column("cluster").to_numpy()
    assert c.column("size").to_pylist() == [int((labels == k).sum()) for k in range(c.num_rows)]
    assert sum(m.extra["sizes"]) + m.extra["noise"] == 400 == m.rows["vectors"]
    assert m.extra["sizes"] == c.column("size").to_pylist()
    assert pa.types.is_fixed_size_list(c.schema.field("centroid").type)
    assert to_numpy_matrix(c.column("centroid")).shape == (c.num_rows, 24)
    assert load_manifest(tmp_path / "c").extra["score_column"] == score
    assert cluster_stage.run(cfg).up_to_date


def test_hdbscan_row_limit(tmp_path: Path) -> None:
    _buildings(tmp_path / "b.parquet", n=50)
    cfg = ClusterConfig(
        input=tmp_path / "b.parquet", output=tmp_path / "c", method="hdbscan", hdbscan_max_rows=40
    )
    with pytest.raises(SbeError, match="--method kmeans"):
        cluster_stage.run(cfg)


def test_cli_cluster_json(tmp_path: Path) -> None:
    _buildings(tmp_path / "b.parquet")
    args = ["cluster", "--in", str(tmp_path / "b.parquet"), "--out", str(tmp_path / "c")]
    r = CliRunner().invoke(app, [*args, "--k", "4", "--seed", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (
        out["stage"] == "cluster" and out["extra"]["method"] == "kmeans" and out["extra"]["k"] == 4
    )
    assert len(out["extra"]["sizes"]) == 4 and sum(out["extra"]["sizes"]) == 400
    r = CliRunner().invoke(app, [*args, "--method", "hdbscan", "--min-cluster-size", "20"])
    assert r.exit_code == 0 and "cluster sizes" in r.stdout
