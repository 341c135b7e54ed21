"""Neighbours stage: PCA, k-NN of other identities (exact and approximate), bands, output, reruns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_split_fixtures import generate
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import NeighborsConfig, SplitConfig
from sbe.errors import SbeError
from sbe.mining.bands import assign_bands, calibrate_band_edges, distance_ratios, local_scale
from sbe.mining.knn import VectorIndex, knn_other_identities, nprobe_ladder, recall_at_k
from sbe.mining.pca import CovarianceAccumulator, Pca
from sbe.stages import neighbors as neighbors_stage
from sbe.stages import split as split_stage
from sbe.storage import read_part_meta, to_numpy_matrix
from sbe.storage.schemas import neighbors_schema

# ---- PCA ----------------------------------------------------------------------------------------


def test_pca_matches_sklearn_and_roundtrips(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3000, 20)) * np.linspace(5, 0.1, 20)) @ rng.normal(size=(20, 20))
    x = x.astype(np.float32)
    pca = Pca.fit(x, 6)
    sk = SkPCA(n_components=6, svd_solver="full").fit(x)
    np.testing.assert_allclose(
        pca.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-4
    )
    # same subspace and same projections up to the sign of each component
    ours, theirs = pca.transform(x), sk.transform(x)
    signs = np.sign((ours * theirs).sum(axis=0))
    np.testing.assert_allclose(ours, theirs * signs, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(6), atol=1e-5)
    # streaming in uneven batches gives the same PCA (data far from the origin: shift matters)
    acc = CovarianceAccumulator(20)
    for a, b in [(0, 1), (1, 700), (700, 701), (701, 3000)]:
        acc.update(x[a:b] + 1000.0)
    streamed = acc.pca(6)
    np.testing.assert_allclose(streamed.components, pca.components, atol=1e-4)
    np.testing.assert_allclose(streamed.mean, pca.mean + 1000.0, rtol=1e-6)
    pca.save(tmp_path / "p.safetensors", {"stamp": "x"})
    back = Pca.load(tmp_path / "p.safetensors")
    np.testing.assert_array_equal(back.transform(x[:10]), ours[:10])


# ---- k-NN of other identities -----------------------------------------------------------------


def _brute_force(x: np.ndarray, ident: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d[ident[:, None] == ident[None]] = np.inf
    d = np.pad(d, ((0, 0), (0, max(0, k - len(x)))), constant_values=np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, order, axis=1)
    rows = np.where(np.isfinite(dist), order, -1)
    return rows, np.where(np.isfinite(dist), dist, np.nan)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 150),
    n_ident=st.integers(1, 40),
    k=st.integers(1, 30),
    big=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_exact_knn_excludes_own_identity(
    n: int, n_ident: int, k: int, big: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    ident = rng.integers(0, n_ident, n).astype(np.int64)
    if big:  # one identity holding most rows: more own images than k
        ident[: int(0.7 * n)] = 999
    index = VectorIndex(x)
    assert index.info.kind == "flat"
    got_rows, got_dist = [], []
    for a, rows, dist in knn_other_identities(index, x, ident, k, batch_rows=17):
        assert rows.dtype == np.int32 and rows.shape == (len(a), k)
        got_rows.append(rows)
        got_dist.append(dist)
    rows, dist = np.concatenate(got_rows), np.concatenate(got_dist)
    ref_rows, ref_dist = _brute_force(x, ident, k)
    valid = rows >= 0
    np.testing.assert_array_equal(valid, ref_rows >= 0)  # as many neighbours as exist, up to k
    assert (ident[rows[valid]] != np.broadcast_to(ident[:, None], rows.shape)[valid]).all()
    np.testing.assert_allclose(dist[valid], ref_dist[valid], rtol=1e-4, atol=1e-4)
    assert np.isnan(dist[~valid]).all()


def test_nprobe_ladder() -> None:
    for nlist in (1, 2, 5, 100, 4000):
        ladder = np.asarray(nprobe_ladder(nlist))
        assert ladder[0] == 1 and ladder[-1] == nlist
        assert (np.diff(ladder) > 0).all()
        # steps of at most 1.5x, so tuning never overshoots the needed nprobe by 2x
        assert (ladder[2:-1] <= 1.5 * ladder[1:-2]).all()


def test_recall_at_k_counts_by_distance() -> None:
    exact = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    found = np.array([[1.0, 3.0, 4.0], [1.0, 1.0, np.nan]])
    assert recall_at_k(found, exact) == pytest.approx(4 / 6)


def test_approximate_index_reaches_its_recall() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(200, 8)) * 4
    x = (centres[rng.integers(0, 200, 20_000)] + rng.normal(size=(20_000, 8))).astype(np.float32)
    ident = np.arange(len(x)) // 4
    index = VectorIndex(x, exact_max_rows=5_000, target_recall=0.95, tune_k=40, seed=0)
    info = index.info
    assert info.kind == "ivf_flat" and info.nlist > 1 and 1 <= info.nprobe <= info.nlist
    assert info.measured_recall >= 0.95
    # independent check on other queries: the excluded-identity lists vs brute force
    q = np.arange(0, len(x), 97)
    exact = VectorIndex(x)
    _, _, d_exact = next(knn_other_identities(exact, x, ident, 30, q, batch_rows=len(q)))
    _, rows, d_approx = next(knn_other_identities(index, x, ident, 30, q, batch_rows=len(q)))
    assert (rows >= 0).all()
    assert recall_at_k(d_approx, d_exact) >= 0.93


def test_structureless_data_falls_back_to_exact() -> None:
    # uniform noise in 32-d: no inverted file reaches 0.99 recall scanning a quarter of the lists
    x = np.random.default_rng(2).uniform(size=(4000, 32)).astype(np.float32)
    index = VectorIndex(x, exact_max_rows=1000, target_recall=0.99, tune_k=30, recall_queries=200)
    assert index.info.kind == "flat" and "recall" in index.info.fallback
    _, rows = index.search(x[:5], 3)
    np.testing.assert_array_equal(rows[:, 0], np.arange(5))  # exact: each row finds itself first


# ---- bands ----------------------------------------------------------------------------------


def test_local_scale_rules() -> None:
    nan = np.nan
    d = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],  # k0=3 -> 3
            [1.0, 2.0, nan, nan],  # fewer than k0 -> the last one
            [0.0, 0.0, 0.0, 5.0],  # k0-th is zero -> first positive
            [0.0, 0.0, nan, nan],  # nothing positive -> 1
            [nan, nan, nan, nan],  # no neighbours -> 1
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(local_scale(d, 3), [3.0, 2.0, 5.0, 1.0, 1.0])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_pad=st.integers(0, 5))
def test_band_edges_are_percentiles_and_bands_follow_them(seed: int, n_pad: int) -> None:
    rng = np.random.default_rng(seed)
    d = np.sort(rng.gamma(2.0, size=(400, 20)), axis=1).astype(np.float32)
    if n_pad:
        d[:, -n_pad:] = np.nan
    ratios = distance_ratios(d, local_scale(d, 5))
    pct = [5, 10, 20, 40, 60, 85]
    edges = calibrate_band_edges(ratios, pct)
    assert np.all(np.diff(edges) >= 0)
    bands = assign_bands(ratios, edges)
    assert bands.dtype == np.int8
    assert (bands[np.isnan(ratios)] == -1).all()
    real = bands[~np.isnan(ratios)]
    assert real.min() >= 0 and real.max() <= len(pct)
    # the share of ratios in each band matches the percentile gaps
    share = np.bincount(real, minlength=len(pct) + 1) / len(real)
    np.testing.assert_allclose(share, np.diff([0, *pct, 100]) / 100, atol=0.01)
    # bands are monotone in the ratio
    r = ratios[~np.isnan(ratios)]
    assert (np.diff(real[np.argsort(r, kind="stable")].astype(int)) >= 0).all()


# ---- the stage --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nb")
    g = generate(root / "backbone", 400, seed=11, spacing_m=40.0)
    split_stage.run(SplitConfig(input=g.folder, output=root / "split", cell_size_m=250))
    return root / "split"


def _cfg(split_dir: Path, out: Path, **kw) -> NeighborsConfig:
    base = {"k": 12, "k0_local_scale": 4, "calibration_min_anchors": 50, "pca_components": 8}
    base["threads"] = 1  # small data: one thread avoids OpenMP barrier spinning on a busy CPU
    return NeighborsConfig(input=split_dir, output=out, **{**base, **kw})


def _read(out: Path, split: str) -> dict[str, np.ndarray]:
    t = pq.read_table(out / f"{split}.parquet")
    return {c: to_numpy_matrix(t[c]) for c in t.column_names}


@pytest.mark.parametrize("space", ["fingerprint", "embedding"])
def test_neighbors_output_is_consistent(split_dir: Path, tmp_path: Path, space: str) -> None:
    out = tmp_path / "nb"
    m = neighbors_stage.run(_cfg(split_dir, out, space=space))
    edges = np.asarray(m.extra["band_edges"])
    assert len(edges) == 6 and np.all(np.diff(edges) > 0)
    for s in ("train", "val", "test"):
        split = pq.read_table(split_dir / f"{s}.parquet", columns=["building_id"])
        bid = split["building_id"].to_numpy()
        nb = _read(out, s)
        schema = pq.read_schema(out / f"{s}.parquet")
        assert schema.remove_metadata() == neighbors_schema(12)
        assert m.rows[s] == len(bid) == len(nb["neighbor_rows"])
        rows, dist, band = nb["neighbor_rows"], nb["visual_distance"], nb["band"]
        valid = rows >= 0
        assert (rows < len(bid)).all()
        # never the anchor's own building, never the anchor itself
        own = np.broadcast_to(bid[:, None], rows.shape)
        assert (bid[rows[valid]] != own[valid]).all()
        # padding is consistent and only at the end of a row; distances ascend
        assert ((band == -1) == ~valid).all() and np.isnan(dist[~valid]).all()
        assert (np.diff(valid.astype(int), axis=1) <= 0).all()
        d = np.where(valid, dist, np.inf).astype(np.float32)
        assert (np.diff(d, axis=1)[valid[:, 1:]] >= 0).all()
        # bands recomputed from the stored float16 distances and the train edges are identical
        meta = read_part_meta(out / f"{s}.parquet")
        np.testing.assert_array_equal(meta["band_edges"], edges)
        assert meta["space"] == space and meta["k"] == 12 and meta["pca_components"] == 8
        again = assign_bands(distance_ratios(dist, local_scale(dist, 4)), edges)
        np.testing.assert_array_equal(again, band)
        # the distances are the true PCA-space distances (checked on a few anchors)
        assert m.extra["splits"][s]["mean_neighbors"] == pytest.approx(
            valid.sum() / len(bid), abs=0.01
        )
    assert 0 < m.extra["pca_explained_variance"] <= 1
    assert m.extra["splits"]["train"]["index"]["kind"] == "flat"
    # train bands roughly follow the calibration percentiles (calibrated on a train sample)
    counts = np.asarray(m.extra["splits"]["train"]["band_counts"], dtype=float)
    share = counts / counts.sum()
    np.testing.assert_allclose(share, np.diff([0, 5, 10, 20, 40, 60, 85, 100]) / 100, atol=0.05)


def test_neighbors_are_the_exact_pca_neighbours(split_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "nb"
    neighbors_stage.run(_cfg(split_dir, out))
    pca = Pca.load(out / "pca.safetensors")
    t = pq.read_table(split_dir / "val.parquet", columns=["fingerprint", "building_id"])
    x = pca.transform(to_numpy_matrix(t["fingerprint"], np.float32) / 255.0)
    bid = t["building_id"].to_numpy()
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d[bid[:, None] == bid[None]] = np.inf
    ref = np.sort(d, axis=1)[:, :12]
    got = _read(out, "val")["visual_distance"].astype(np.float32)
    ref = np.where(np.isfinite(ref), ref, np.nan)
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3)


def test_neighbors_rerun_skips_and_resumes_per_split(split_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "nb"
    m1 = neighbors_stage.run(_cfg(split_dir, out))
    assert not m1.up_to_date
    m2 = neighbors_stage.run(_cfg(split_dir, out))
    assert m2.up_to_date
    # a lost manifest: every split file is still current, nothing is recomputed
    mtimes = {s: (out / f"{s}.parquet").stat().st_mtime_ns for s in ("train", "val", "test")}
    (out / "_manifest.json").unlink()
    m3 = neighbors_stage.run(_cfg(split_dir, out))
    assert all(m3.extra["splits"][s]["reused"] for s in ("train", "val", "test"))
    assert m3.extra["band_edges"] == m1.extra["band_edges"]
    # a damaged PCA file is refitted, not trusted
    (out / "pca.safetensors").write_bytes(b"garbage")
    (out / "_manifest.json").unlink()
    m3b = neighbors_stage.run(_cfg(split_dir, out))
    assert Pca.load(out / "pca.safetensors").out_dim == 8 and m3b.rows == m1.rows
    # a changed val input redoes val only
    val = split_dir / "val.parquet"
    st_ = val.stat()
    os.utime(val, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    try:
        m4 = neighbors_stage.run(_cfg(split_dir, out))
    finally:
        os.utime(val, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    assert m4.extra["splits"]["train"].get("reused") and "reused" not in m4.extra["splits"]["val"]
    assert (out / "train.parquet").stat().st_mtime_ns == mtimes["train"]
    assert (out / "val.parquet").stat().st_mtime_ns != mtimes["val"]
    # a config change redoes everything
    m5 = neighbors_stage.run(_cfg(split_dir, out, k=10))
    assert not any(s.get("reused") for s in m5.extra["splits"].values())
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    saved = json.loads((out / "_manifest.json").read_text())
    assert saved["extra"]["k"] == 10 and saved["extra"]["backbone"]["name"] == "test-backbone"


def test_neighbors_approximate_path_in_the_stage(split_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "nb"
    m = neighbors_stage.run(_cfg(split_dir, out, exact_max_rows=100, ann_target_recall=0.9))
    info = m.extra["splits"]["train"]["index"]
    assert info["kind"] == "ivf_flat" and info["measured_recall"] >= 0.9
    exact = neighbors_stage.run(_cfg(split_dir, tmp_path / "exact"))
    got, ref = _read(out, "train"), _read(tmp_path / "exact", "train")
    r = recall_at_k(
        got["visual_distance"].astype(np.float32), ref["visual_distance"].astype(np.float32)
    )
    assert r >= 0.85
    assert exact.extra["splits"]["train"]["index"]["kind"] == "flat"


def test_neighbors_errors_and_cli(split_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SbeError, match="split files not found"):
        neighbors_stage.run(_cfg(tmp_path / "nothing", tmp_path / "o"))
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "neighbors",
        "--in",
        str(split_dir),
        "--out",
        str(out),
        "--k",
        "8",
        "--space",
        "embedding",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    meta = read_part_meta(out / "test.parquet")
    assert meta["k"] == 8 and meta["space"] == "embedding"
    assert pq.read_schema(out / "test.parquet").field("band").type.list_size == 8
    assert "band edges" in res.output
    res = runner.invoke(app, ["neighbors", "--in", str(split_dir), "--out", str(out), "--k", "0"])
    assert res.exit_code != 0
