"""Benchmark: the neighbours stage's k-NN against the reference system's method, same data, same run.

Data: clustered synthetic vectors (not PCA'd fingerprints of real images): ``--n`` vectors of
``--dim`` dimensions, a variance spectrum that decays like a PCA'd fingerprint space
(sigma_j ~ j^-0.5), "style" clusters of ``--per-style`` images on average (default 150, about k, so
an anchor's k neighbours spill over into neighbouring clusters as in a continuous image space;
with much larger clusters an inverted-file index gets an easy ride), buildings of 4 images around
a building centre. Every vector's identity is its building.

- stage: ``sbe.mining.knn`` (faiss on all cores; exact up to ``exact_max_rows``, above it an
  IVF-Flat index tuned to 0.97 recall), k nearest of *other* identities for every anchor, then local
  scale and bands (what ``sbe neighbors`` does per split, minus the parquet I/O).
- reference: scikit-learn ``BallTree`` (euclidean, default leaf size) queried with ``k + 50``,
  single-threaded, then a Python loop per anchor dropping the own identity and keeping ``k``. A full
  run at N = 1M would take about a day, so a seeded sample of ``--ref-queries`` anchors is timed and
  scaled to N (tree build time added once); the output says so.
- recall@k: the stage's neighbour lists vs exact lists (brute force with the same exclusion) on a
  seeded sample of ``--recall-queries`` anchors.
- peak RSS: ``ru_maxrss`` of a fresh subprocess that loads the data and runs the stage's method.

Run: ``.venv/bin/python benchmarks/neighbors.py`` (N = 1,000,000, k = 150) or ``--n 100000`` for a
quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(n: int, dim: int, seed: int, per_style: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Clustered float32 (n, dim) vectors and int64 (n,) identities (4 images per building)."""
    rng = np.random.default_rng(seed)
    sigma = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    n_build = (n + 3) // 4
    n_styles = max(1, n // per_style)
    styles = rng.normal(size=(n_styles, dim)).astype(np.float32) * sigma
    style_of = rng.integers(0, len(styles), n_build)
    buildings = styles[style_of] + 0.5 * sigma * rng.normal(size=(n_build, dim)).astype(np.float32)
    ident = np.arange(n, dtype=np.int64) // 4
    x = buildings[ident] + 0.25 * sigma * rng.normal(size=(n, dim)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), ident


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def worker_stage(data: Path, out: Path, k: int, threads: int, queries: np.ndarray) -> None:
    from sbe.mining.bands import assign_bands, distance_ratios, local_scale
    from sbe.mining.knn import VectorIndex, knn_other_identities, set_threads

    x = np.load(data / "x.npy")
    ident = np.load(data / "ident.npy")
    n_threads = set_threads(threads)
    t0, c0 = time.perf_counter(), time.process_time()
    index = VectorIndex(x, tune_k=k + 16)
    t_build, c_build = time.perf_counter() - t0, time.process_time() - c0
    edges = np.array([0.6, 0.7, 0.8, 0.9, 0.95, 1.05])  # fixed: calibration is timed separately
    keep_rows = np.full((len(queries), k), -1, dtype=np.int32)
    t0, c0 = time.perf_counter(), time.process_time()
    for a, rows, dist in knn_other_identities(index, x, ident, k):
        d16 = dist.astype(np.float16)
        assign_bands(distance_ratios(d16, local_scale(d16, 50)), edges)
        lo, hi = np.searchsorted(queries, [a[0], a[-1] + 1])
        keep_rows[lo:hi] = rows[queries[lo:hi] - a[0]]
    t_search, c_search = time.perf_counter() - t0, time.process_time() - c0
    np.save(out / "stage_rows.npy", keep_rows)
    result = {
        "build_s": t_build,
        "search_s": t_search,
        "build_cpu_s": c_build,
        "search_cpu_s": c_search,
        "threads": n_threads,
        "index": index.info.to_dict(),
        "peak_rss_gib": peak_rss_gib(),
    }
    (out / "stage.json").write_text(json.dumps(result))


def worker_reference(data: Path, out: Path, k: int, sample: np.ndarray) -> None:
    from sklearn.neighbors import BallTree

    x = np.load(data / "x.npy")
    ident = np.load(data / "ident.npy")
    t0, c0 = time.perf_counter(), time.process_time()
    tree = BallTree(x)
    t_build, c_build = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    dist, idx = tree.query(x[sample], k=k + 50)
    kept = []
    for i, a in enumerate(sample):  # the reference's per-anchor filtering loop
        other = [(j, d) for j, d in zip(idx[i], dist[i], strict=True) if ident[j] != ident[a]]
        kept.append(other[:k])
    t_query, c_query = time.perf_counter() - t0, time.process_time() - c0
    result = {
        "build_s": t_build,
        "query_s": t_query,
        "build_cpu_s": c_build,
        "query_cpu_s": c_query,
        "queries": len(sample),
    }
    (out / "reference.json").write_text(json.dumps(result))


def exact_rows(x: np.ndarray, ident: np.ndarray, k: int, queries: np.ndarray) -> np.ndarray:
    from sbe.mining.knn import VectorIndex, knn_other_identities

    exact = VectorIndex(x, exact_max_rows=len(x))
    _, rows, _ = next(knn_other_identities(exact, x, ident, k, queries, batch_rows=len(queries)))
    return rows


def _spawn(role: str, args: argparse.Namespace, tmp: Path) -> None:
    cmd = [sys.executable, __file__, "--role", role, "--tmp", str(tmp)]
    cmd += [
        "--n",
        str(args.n),
        "--k",
        str(args.k),
        "--dim",
        str(args.dim),
        "--seed",
        str(args.seed),
    ]
    cmd += ["--threads", str(args.threads), "--ref-queries", str(args.ref_queries)]
    cmd += ["--recall-queries", str(args.recall_queries), "--per-style", str(args.per_style)]
    env = dict(os.environ)
    if role == "reference":  # the reference method is single-threaded; keep BLAS out of the way
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env)


def _samples(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed + 1)
    recall_q = np.sort(rng.choice(args.n, size=min(args.n, args.recall_queries), replace=False))
    ref_q = np.sort(rng.choice(args.n, size=min(args.n, args.ref_queries), replace=False))
    return recall_q, ref_q


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--k", type=int, default=150)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="stage threads; 0 = all cores")
    p.add_argument("--ref-queries", type=int, default=200, help="BallTree anchors timed")
    p.add_argument("--recall-queries", type=int, default=1000)
    p.add_argument("--per-style", type=int, default=150, help="mean images per style cluster")
    p.add_argument("--role", choices=["main", "stage", "reference"], default="main")
    p.add_argument("--tmp", type=Path, default=None)
    args = p.parse_args()
    recall_q, ref_q = _samples(args)
    if args.role == "stage":
        worker_stage(args.tmp, args.tmp, args.k, args.threads, recall_q)
        return
    if args.role == "reference":
        worker_reference(args.tmp, args.tmp, args.k, ref_q)
        return

    with tempfile.TemporaryDirectory(prefix="sbe-bench-") as d:
        tmp = Path(d)
        x, ident = make_data(args.n, args.dim, args.seed, args.per_style)
        np.save(tmp / "x.npy", x)
        np.save(tmp / "ident.npy", ident)
        print(
            f"data: clustered synthetic, N={args.n:,} x {args.dim}-d float32, "
            f"{args.per_style} images per style cluster, k={args.k}"
        )
        _spawn("stage", args, tmp)
        _spawn("reference", args, tmp)
        stage = json.loads((tmp / "stage.json").read_text())
        ref = json.loads((tmp / "reference.json").read_text())
        truth = exact_rows(x, ident, args.k, recall_q)
        got = np.load(tmp / "stage_rows.npy")
    hits = [len(np.intersect1d(g[g >= 0], t[t >= 0])) for g, t in zip(got, truth, strict=True)]
    recall = float(np.sum(hits) / max(1, (truth >= 0).sum()))

    stage_s = stage["build_s"] + stage["search_s"]
    stage_cpu = stage["build_cpu_s"] + stage["search_cpu_s"]
    per_query = ref["query_s"] / ref["queries"]
    per_query_cpu = ref["query_cpu_s"] / ref["queries"]
    ref_s = ref["build_s"] + per_query * args.n
    ref_cpu = ref["build_cpu_s"] + per_query_cpu * args.n
    info = stage["index"]
    how = info["kind"]
    if how == "ivf_flat":
        how += f" nlist={info['nlist']} nprobe={info['nprobe']}"
    threads = stage["threads"]
    rows = [
        ("stage: index build + tune", stage["build_s"], stage["build_cpu_s"]),
        ("stage: k-NN of other identities + bands", stage["search_s"], stage["search_cpu_s"]),
        ("stage: total", stage_s, stage_cpu),
        ("reference: BallTree build", ref["build_s"], ref["build_cpu_s"]),
        (f"reference: {ref['queries']} anchors timed", ref["query_s"], ref["query_cpu_s"]),
        (f"reference: total scaled to {args.n:,} anchors", ref_s, ref_cpu),
    ]
    print(f"stage index: {how}; stage threads: {threads}; reference: 1 thread")
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'wall s':>10}  {'CPU s':>10}")
    for name, wall, cpu in rows:
        print(f"{name:<{width}}  {wall:>10,.1f}  {cpu:>10,.1f}")
    print(
        f"reference per anchor: {per_query * 1000:.1f} ms wall, {per_query_cpu * 1000:.1f} ms CPU"
    )
    print(f"speed-up, wall clock (reference / stage): {ref_s / stage_s:,.0f}x  (target >= 100)")
    print(
        f"speed-up on an idle {threads}-core machine (reference CPU / (stage CPU / {threads})): "
        f"{ref_cpu / (stage_cpu / threads):,.0f}x"
    )
    print(f"recall@{args.k} vs exact, {len(recall_q)} anchors: {recall:.4f}  (target >= 0.95)")
    print(f"stage peak RSS: {stage['peak_rss_gib']:.2f} GiB  (target <= 3)")


if __name__ == "__main__":
    main()
