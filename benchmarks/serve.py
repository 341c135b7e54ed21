"""The search service (``sbe serve``) against the in-process Python API, measured side by side.

Setup (synthetic, seeded): a published model (``--model``, or a tiny pipeline is run into a
temporary folder to make one: synthetic world, 3 training epochs), an index of ``--n`` synthetic
clustered unit vectors of the model's dimension (``IndexParams()`` defaults: exact up to 100,000
vectors, HNSW above), and ``--images`` seeded synthetic JPEG photos (320 x 240, smooth colour
fields + noise) as image queries. The server is a real ``python -m sbe.service`` process (uvicorn,
one worker) on 127.0.0.1; clients are threads with their own ``httpx.Client`` (keep-alive).

Measured:
1. Image query (embed + search, k=10, no re-ranking), each query one photo:
   - in-process Python API (``load_embedder`` once, ``embed_images([photo])`` +
     ``SearchIndex.search`` + ``hits()``), 1 client, then ``--clients`` threads at once;
   - the server, ``--clients`` concurrent HTTP clients posting the same photos;
   - the server at saturation: ``4 x --clients`` clients; queries/s.
   Ratios: server p50 / in-process p50 and server p99 / in-process p99 at the same concurrency
   (targets: <= 2 and <= 4).
2. Id query (``GET /search?id=...``, k=10), one client: p50/p99 against the raw faiss search of
   the same query vector (``index.search(q, k + 1)``, the building's vector) in-process.
   Target: server p99 < 10 x raw faiss p99.
3. Server memory (RSS, psutil) over ``--memory-queries`` requests from ``--clients`` clients:
   9 in 10 id queries, 1 in 20 photo queries, 1 in 20 bad requests (a 20000 x 20000 JPEG
   header); RSS at the end against RSS after a warm-up. Target: within 10 %.

The machine's load is printed: other processes compete for the same cores, so read the ratios,
which compare runs made minutes apart on the same machine.

Usage:
    .venv/bin/python benchmarks/serve.py                       # a few minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --model work/model    # skip building a model
    .venv/bin/python benchmarks/serve.py --quick               # smoke test (tests use it)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import httpx
import numpy as np
import psutil
import pyarrow as pa
from PIL import Image

from sbe.index import IndexInfo, IndexParams, SearchIndex, build_index, save_index_dir
from sbe.index.faiss_index import index_kind
from sbe.models.published import load_embedder, model_identity
from sbe.service.process import ServerProcess

K = 10
TARGETS = {"p50_ratio": 2.0, "p99_ratio": 4.0, "id_ratio": 10.0, "rss_growth": 0.10}

TINY_CONFIG = """
workdir = "w"
[synth]
buildings = 40
image_size = 96
[split]
cell_size_m = 150
[train]
epochs = 3
[geo]
epochs = 3
"""


def make_model(root: Path) -> Path:
    """Run the tiny pipeline up to a published model; returns the model folder."""
    from sbe.config import load_config
    from sbe.pipeline import run_pipeline

    (root / "tiny.toml").write_text(TINY_CONFIG)
    cfg = load_config(root / "tiny.toml")
    run_pipeline(cfg, show_progress=False)
    return Path(cfg.workdir) / "model"


def synthetic_photos(n: int, seed: int = 0) -> list[bytes]:
    """Seeded 320 x 240 JPEGs: smooth colour fields plus noise (decode like real photos)."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:240, 0:320] / 240.0
    for _ in range(n):
        a, b, c = rng.uniform(0, 6, 3)
        img = np.stack(
            [np.sin(a * xx + b * yy), np.cos(b * xx - c * yy), np.sin(c * xx * yy + a)], axis=-1
        )
        img = (127 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def bomb_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 20000, 20000)
    return bytes(data)


def make_index(out: Path, n: int, dim: int, model_dir: Path, seed: int = 0) -> Path:
    """An index of ``n`` clustered unit vectors with int64 ids and a location."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 50), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim))
    x = x.astype(np.float32)
    faiss.normalize_L2(x)
    params = IndexParams()
    index = build_index(x, params)
    kind = index_kind(index)
    table = pa.table(
        {
            "OSMID": pa.array(np.arange(1_000_000, 1_000_000 + n, dtype=np.int64)),
            "lat": pa.array(rng.uniform(-60, 70, n)),
            "lon": pa.array(rng.uniform(-180, 180, n)),
        }
    )
    info = IndexInfo(
        build_id=uuid.uuid4().hex,
        kind=kind,
        faiss_class=type(faiss.downcast_index(index)).__name__,
        dim=dim,
        count=n,
        id_column="OSMID",
        id_type="int64",
        unique_ids=n,
        metadata_columns=["lat", "lon"],
        location_columns=["lat", "lon"],
        parameters=params.recorded(kind),
        model_dir=str(model_dir),
    )
    save_index_dir(out, index, table, info)
    return out


def pct(ms: list[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(ms, dtype=np.float64)
    return {
        "n": len(x),
        "p50": float(np.percentile(x, 50)),
        "p99": float(np.percentile(x, 99)),
        "mean": float(x.mean()),
    }


def client(state: dict, url: str, timeout: float) -> httpx.Client:
    """This worker's keep-alive client (made once: making one costs an SSL context)."""
    if "c" not in state:
        state["c"] = httpx.Client(base_url=url, timeout=timeout)
    return state["c"]


def run_clients(clients: int, jobs: list, fn) -> tuple[list[float], float]:
    """Run ``fn(job)`` for every job from ``clients`` threads; per-call ms and wall seconds."""
    lat: list[float] = []
    lock = threading.Lock()
    it = iter(jobs)

    def worker() -> None:
        state: dict = {}
        try:
            while True:
                with lock:
                    job = next(it, None)
                if job is None:
                    return
                t0 = time.perf_counter()
                fn(job, state)
                ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    lat.append(ms)
        finally:
            if "c" in state:
                state["c"].close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    return lat, time.perf_counter() - t0


def inproc_worker(index_dir: str, model_dir: str, photo_dir: str, clients: int) -> int:
    """The in-process Python API on the benchmark's photos; prints one JSON line."""
    embedder = load_embedder(model_dir)
    index = SearchIndex.load(index_dir)
    jobs = [p.read_bytes() for p in sorted(Path(photo_dir).glob("*.jpg"))]

    def local(photo: bytes, _: dict) -> None:
        index.search(embedder.embed_images([photo]), K).hits()

    run_clients(1, jobs[:4], local)  # warm-up
    lat1, _ = run_clients(1, jobs, local)
    latc, wallc = run_clients(clients, jobs, local)
    out = {"inproc_1": pct(lat1), f"inproc_{clients}": {**pct(latc), "qps": len(latc) / wallc}}
    print(json.dumps(out))
    return 0


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--inproc-worker":
        return inproc_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="published model (default: build one)")
    ap.add_argument("--n", type=int, default=100_000, help="indexed vectors")
    ap.add_argument("--images", type=int, default=200, help="image queries per measurement")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--id-queries", type=int, default=2000)
    ap.add_argument("--memory-queries", type=int, default=10_000)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    a = ap.parse_args()
    if a.quick:
        a.n, a.images, a.id_queries, a.memory_queries = 2000, 12, 60, 200
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    print(
        f"# serve benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    results: dict = {"cpus": os.cpu_count(), "load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="sbe-serve-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model_dir = a.model or make_model(root)
        dim = int(model_identity(model_dir)["dim"])  # no weights loaded in this process
        index_dir = make_index(root / "index", a.n, dim, model_dir)
        index = SearchIndex.load(index_dir)
        print(
            f"# setup {time.perf_counter() - t0:.0f} s: model {model_dir}, index {index.info.kind} "
            f"{a.n:,} x {index.dim}"
        )
        photos = synthetic_photos(max(a.images, 16))
        image_jobs = [photos[i % len(photos)] for i in range(a.images)]
        rng = np.random.default_rng(1)
        id_rows = rng.integers(0, a.n, a.id_queries)
        ids = index.table.column("OSMID").to_numpy()[id_rows]

        with ServerProcess(index_dir, model_dir, start_timeout=600, lifetime=3000) as server:
            url = server.url
            proc = psutil.Process(server.server_pid())

            def remote_image(photo: bytes, state: dict) -> None:
                c = client(state, url, 120)
                r = c.post("/search", files=[("images", ("q.jpg", photo, "image/jpeg"))])
                assert r.status_code == 200, r.text

            def remote_id(osmid: int, state: dict) -> None:
                c = client(state, url, 60)
                r = c.get("/search", params={"id": int(osmid), "k": K})
                assert r.status_code == 200, r.text

            run_clients(a.clients, image_jobs[: 2 * a.clients], remote_image)  # warm-up
            lat_s, wall_s = run_clients(a.clients, image_jobs, remote_image)
            results[f"server_{a.clients}"] = {**pct(lat_s), "qps": len(lat_s) / wall_s}
            sat = 4 * a.clients
            lat_sat, wall_sat = run_clients(sat, image_jobs, remote_image)
            results[f"server_{sat}"] = {**pct(lat_sat), "qps": len(lat_sat) / wall_sat}
            run_clients(1, list(ids[:50]), remote_id)  # warm-up
            lat_id, _ = run_clients(1, list(ids), remote_id)
            results["server_id"] = pct(lat_id)
            st = httpx.get(url + "/stats", timeout=30).json()
            results["batching"] = st["batching"]
            # the server's own view (request in to response out, inside the process)
            results["server_side_ms"] = {
                k: v for k, v in st["latency_ms"].items() if k in ("POST /search", "GET /search")
            }

            # 3. memory over many requests (good and bad)
            bomb = bomb_jpeg()

            def mixed(i: int, state: dict) -> None:
                c = client(state, url, 120)
                if i % 20 == 7:
                    r = c.post(
                        "/search", files=[("images", ("q.jpg", photos[i % 16], "image/jpeg"))]
                    )
                    assert r.status_code == 200, r.text
                elif i % 20 == 13:
                    r = c.post("/search", files=[("images", ("b.jpg", bomb, "image/jpeg"))])
                    assert r.status_code == 413, r.text
                else:
                    r = c.get("/search", params={"id": int(ids[i % len(ids)]), "k": K})
                    assert r.status_code == 200, r.text

            warm = max(200, a.memory_queries // 20)
            run_clients(a.clients, list(range(warm)), mixed)
            rss0 = proc.memory_info().rss
            _, wall_m = run_clients(a.clients, list(range(a.memory_queries)), mixed)
            rss1 = proc.memory_info().rss
            results["memory"] = {
                "queries": a.memory_queries,
                "seconds": wall_m,
                "rss_after_warmup_mb": rss0 / 2**20,
                "rss_end_mb": rss1 / 2**20,
                "growth": (rss1 - rss0) / rss0,
            }
            code = server.stop()
            results["server_exit_code"] = code

        # 1. the in-process Python API, in its own process (as a client is: this one stays
        # light, with no model threads of its own competing with the server above)
        photo_file = root / "photos"
        photo_file.mkdir()
        for i, photo in enumerate(image_jobs):
            (photo_file / f"{i:06d}.jpg").write_bytes(photo)
        proc_out = subprocess.run(
            [sys.executable, __file__, "--inproc-worker", str(index_dir), str(model_dir),
             str(photo_file), str(a.clients)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc_out.returncode != 0:
            print(proc_out.stderr[-3000:], file=sys.stderr)
            return 1
        results.update(json.loads(proc_out.stdout.strip().splitlines()[-1]))

        # 2. raw faiss search of the id queries' vectors (the building's vector, k + 1)
        qv = index.vectors(id_rows)
        for i in range(min(50, len(qv))):
            index.index.search(qv[i : i + 1], K + 1)
        raw = []
        for i in range(len(qv)):
            t = time.perf_counter()
            index.index.search(qv[i : i + 1], K + 1)
            raw.append((time.perf_counter() - t) * 1e3)
        results["faiss_id_raw"] = pct(raw)
    results["load_end"] = os.getloadavg()[0]

    c = a.clients
    ip, sv = results[f"inproc_{c}"], results[f"server_{c}"]
    ratios = {
        "p50_ratio": sv["p50"] / ip["p50"],
        "p99_ratio": sv["p99"] / ip["p99"],
        "p50_ratio_vs_1_client": sv["p50"] / results["inproc_1"]["p50"],
        "id_ratio": results["server_id"]["p99"] / results["faiss_id_raw"]["p99"],
        "rss_growth": results["memory"]["growth"],
    }
    results["ratios"] = ratios
    print()
    print(f"{'measurement':<44}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'q/s':>9}")
    rows = [
        ("image, in-process API, 1 client", results["inproc_1"]),
        (f"image, in-process API, {c} clients", ip),
        (f"image, server, {c} clients", sv),
        (f"image, server, {4 * c} clients (saturation)", results[f"server_{4 * c}"]),
        ("id, raw faiss search (same query)", results["faiss_id_raw"]),
        ("id, server GET /search?id=, 1 client", results["server_id"]),
    ]
    for name, r in rows:
        qps = f"{r['qps']:.1f}" if "qps" in r else ""
        print(f"{name:<44}{r['n']:>7}{r['p50']:>10.2f}{r['p99']:>10.2f}{qps:>9}")
    m = results["memory"]
    print(
        f"\nmemory over {m['queries']:,} requests ({m['seconds']:.0f} s): RSS "
        f"{m['rss_after_warmup_mb']:.1f} MiB after warm-up -> {m['rss_end_mb']:.1f} MiB "
        f"({100 * m['growth']:+.2f} %)"
    )
    for route, v in results["server_side_ms"].items():
        print(
            f"server-side {route}: p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms (last {v['window']})"
        )
    b = results["batching"]
    print(
        f"batching: {b['batches']} model calls for {b['images']} images, largest {b['largest_batch']}"
    )
    print("\nratios (target):")
    print(f"  image p50 server / in-process, {c} clients: {ratios['p50_ratio']:.2f} (<= 2)")
    print(f"  image p99 server / in-process, {c} clients: {ratios['p99_ratio']:.2f} (<= 4)")
    print(
        f"  image p50 server {c} clients / in-process 1 client: {ratios['p50_ratio_vs_1_client']:.2f}"
    )
    print(f"  id p99 server / raw faiss p99: {ratios['id_ratio']:.2f} (< 10)")
    print(
        f"  RSS growth over {m['queries']:,} requests: {100 * ratios['rss_growth']:+.2f} % (within 10 %)"
    )
    print(f"# load average {results['load_end']:.1f} at the end; server exit code {code}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
