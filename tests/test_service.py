"""The search service (``sbe serve``): answers equal the Python API's, bad input gets a clear 4xx,
the server survives it without growing, concurrent requests share model calls, and a real uvicorn
process on 127.0.0.1 serves and stops cleanly.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sbe.errors import SbeError
from sbe.index import SearchIndex
from sbe.service import create_app
from sbe.service.batching import MicroBatcher
from sbe.service.engine import ServiceSettings
from sbe.service.process import ServerProcess
from sbe.service.uploads import UploadLimits


def jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def declared_size_jpeg(width: int, height: int) -> bytes:
    """A tiny valid JPEG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def tiny(tiny_pipeline) -> dict:
    cfg, _ = tiny_pipeline
    w = Path(cfg.workdir)
    photos = pq.read_table(w / "packaged_images.parquet")
    return {"index": w / "index", "model": w / "model", "photos": photos}


@pytest.fixture(scope="module")
def client(tiny):
    app = create_app(tiny["index"], tiny["model"])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def no_model_index(tiny, tmp_path: Path) -> Path:
    """A copy of the index whose ``index.json`` names no model (no model is loaded: fast)."""
    d = tmp_path / "index"
    shutil.copytree(tiny["index"], d)
    info = json.loads((d / "index.json").read_text())
    info["model_dir"] = None
    (d / "index.json").write_text(json.dumps(info))
    return d


def photo_of(tiny, osmid: int, n: int = 0) -> bytes:
    t = tiny["photos"]
    rows = np.flatnonzero(t.column("OSMID").to_numpy() == osmid)
    return t.column("image_bytes")[int(rows[n])].as_py()


# ---- answers ----------------------------------------------------------------------------------


def test_photo_search_equals_the_python_api(client, tiny) -> None:
    index = SearchIndex.load(tiny["index"])
    embedder = client.app.state.engine.embedder
    osmids = index.table.column("OSMID").to_pylist()[:3]
    files = [("images", (f"{o}.jpg", photo_of(tiny, o), "image/jpeg")) for o in osmids]
    r = client.post("/search", files=files, data={"k": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [q["query"] for q in body["queries"]] == [f"{o}.jpg" for o in osmids]
    expected = index.search(embedder.embed_images([photo_of(tiny, o) for o in osmids]), 4)
    for q, query in enumerate(body["queries"]):
        assert [h["id"] for h in query["hits"]] == expected.ids(q)
        np.testing.assert_allclose(
            [h["similarity"] for h in query["hits"]], expected.similarity[q], atol=1e-5
        )
        assert [h["rank"] for h in query["hits"]] == [1, 2, 3, 4]
        assert all(
            h["photos"][0].startswith(f"/buildings/{h['id']}/photos/") for h in query["hits"]
        )
        # the pipeline calibrates (evaluate), publish and index carry it: every hit answers
        assert all(isinstance(h["same_building"], bool) for h in query["hits"])


def test_a_building_photo_finds_its_building_first(client, tiny) -> None:
    index = SearchIndex.load(tiny["index"])
    found = 0
    osmids = index.table.column("OSMID").to_pylist()
    for o in osmids:
        r = client.post("/search", files=[("images", ("p.jpg", photo_of(tiny, o), "image/jpeg"))])
        found += r.json()["queries"][0]["hits"][0]["id"] == o
    assert found >= len(osmids) - 1, f"only {found} of {len(osmids)} photos found their building"


def test_embed_equals_the_embedder(client, tiny) -> None:
    engine = client.app.state.engine
    o = SearchIndex.load(tiny["index"]).table.column("OSMID")[0].as_py()
    imgs = [photo_of(tiny, o, 0), photo_of(tiny, o, 1)]
    r = client.post(
        "/embed", files=[("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(imgs)]
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dim"] == 256 and body["names"] == ["0.jpg", "1.jpg"]
    assert body["model"] == engine.model_identity["fingerprint"]
    np.testing.assert_allclose(
        np.array(body["vectors"]), engine.embedder.embed_images(imgs), atol=1e-5
    )


def test_id_search_and_building_record(client, tiny) -> None:
    index = SearchIndex.load(tiny["index"])
    o = index.table.column("OSMID")[2].as_py()
    r = client.get(f"/search?id={o}&k=3")
    assert r.status_code == 200, r.text
    expected = index.search_id(o, 3)
    assert [h["id"] for h in r.json()["hits"]] == expected.ids()
    assert o not in expected.ids()
    r = client.get("/search?row=2&k=3")
    assert [h["id"] for h in r.json()["hits"]] == index.search_rows([2], 3).ids()

    b = client.get(f"/buildings/{o}").json()
    row = index.table.slice(2, 1).to_pylist()[0]
    assert b["id"] == o and b["rows"] == [2]
    assert b["lat"] == pytest.approx(row["lat"]) and b["lon"] == pytest.approx(row["lon"])
    assert b["image_count"] == row["image_count"]
    n_photos = int((tiny["photos"].column("OSMID").to_numpy() == o).sum())
    assert b["photos_total"] == n_photos and 1 <= len(b["photos"]) <= min(n_photos, 6)
    img = client.get(b["photos"][0])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(img.content)).size) <= 256


def decodes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def test_buildings_list_only_photos_that_decode(client, tiny) -> None:
    t = tiny["photos"]
    ids = t.column("OSMID").to_numpy()
    blobs = t.column("image_bytes").to_pylist()
    broken = 0
    for o in SearchIndex.load(tiny["index"]).table.column("OSMID").to_pylist():
        good = sum(decodes(blobs[r]) for r in np.flatnonzero(ids == o))
        broken += int((ids == o).sum()) - good
        urls = client.get(f"/buildings/{o}").json()["photos"]
        assert len(urls) == min(good, 6), o
        assert all(client.get(u).status_code == 200 for u in urls)
    assert broken >= 1  # the packaged toy data carries corrupt photos on purpose


def test_points_health_stats_docs(client, tiny) -> None:
    index = SearchIndex.load(tiny["index"])
    pts = client.get("/points").json()
    assert pts["count"] == pts["shown"] == 6
    assert pts["ids"] == index.table.column("OSMID").to_pylist()
    np.testing.assert_allclose(pts["lat"], index.table.column("lat").to_numpy(), atol=1e-5)
    assert client.get("/healthz").json() == {"status": "ok", "index": 6, "model": True}
    stats = client.get("/stats").json()
    assert stats["index"]["count"] == 6 and stats["index"]["build_id"] == index.info.build_id
    assert stats["model"]["dim"] == 256 and stats["requests"] >= 1
    assert "GET /points" in stats["latency_ms"]
    assert {"p50", "p90", "p99"} <= set(stats["latency_ms"]["GET /points"])
    schema = client.get("/openapi.json").json()
    for path in ("/search", "/buildings/{id}", "/embed", "/healthz", "/stats", "/search/vectors"):
        assert path in schema["paths"], path
    assert "multipart/form-data" in schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert (
        page.status_code == 200
        and 'id="map"' in page.text
        and "http" not in page.text.split("<body", 1)[1].replace('href="/docs"', "")
    )
    assert client.get("/map/background.png").content[:8] == b"\x89PNG\r\n\x1a\n"


def test_vector_search_normalises_and_matches(client, tiny) -> None:
    index = SearchIndex.load(tiny["index"])
    v = index.vectors([1])[0] * 3.0
    r = client.post("/search/vectors", json={"vectors": [v.tolist()], "k": 2})
    assert r.status_code == 200, r.text
    hits = r.json()["queries"][0]["hits"]
    assert hits[0]["row"] == 1 and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)


# ---- bad input --------------------------------------------------------------------------------

BAD = [
    ("json to an upload route", dict(method="POST", url="/search", json={"k": 3}), 415, "multipart/form-data"),
    ("no file", dict(method="POST", url="/search", data={"k": "3"}, files=[("other", ("a", b"", "text/plain"))]), 400, "unexpected file field"),
    ("empty upload", dict(method="POST", url="/search", files=[("images", ("e.jpg", b"", "image/jpeg"))]), 400, "empty"),
    ("wrong content type", dict(method="POST", url="/search", files=[("images", ("a.txt", b"hello", "text/plain"))]), 415, "not an image"),
    ("not an image", dict(method="POST", url="/embed", files=[("images", ("a.jpg", b"GIF89a-no", "image/jpeg"))]), 415, "not an image"),
    ("truncated jpeg", dict(method="POST", url="/search", files=[("images", ("t.jpg", jpeg(128, 96)[:2000], "image/jpeg"))]), 415, "does not decode"),
    ("20000 x 20000 jpeg", dict(method="POST", url="/search", files=[("images", ("bomb.jpg", declared_size_jpeg(20000, 20000), "image/jpeg"))]), 413, "decompression bomb"),
    ("7000 x 7000 jpeg", dict(method="POST", url="/embed", files=[("images", ("big.jpg", declared_size_jpeg(7000, 7000), "image/jpeg"))]), 413, "40,000,000 pixels"),
    ("unknown id", dict(method="GET", url="/search?id=123"), 404, "not in the index"),
    ("id of the wrong type", dict(method="GET", url="/buildings/abc"), 404, "not a valid id"),
    ("unknown building", dict(method="GET", url="/buildings/123"), 404, "not in the index"),
    ("unknown photo", dict(method="GET", url="/buildings/123/photos/0"), 404, "photo"),
    ("unknown row", dict(method="GET", url="/search?row=99"), 404, "row 99"),
    ("k = 0", dict(method="GET", url="/search?row=0&k=0"), 422, "k must be between 1 and 100"),
    ("k too large", dict(method="POST", url="/search", data={"k": "101"}, files=[("images", ("a.jpg", jpeg(), "image/jpeg"))]), 422, "k must be between 1 and 100"),
    ("k not a number", dict(method="GET", url="/search?row=0&k=many"), 422, "k:"),
    ("k not a number in a photo query", dict(method="POST", url="/search?k=ten", files=[("images", ("a.jpg", jpeg(), "image/jpeg"))]), 422, "k must be an integer"),
    ("neither id nor row", dict(method="GET", url="/search"), 422, "exactly one of id= or row="),
    ("malformed json", dict(method="POST", url="/search/vectors", content=b'{"vectors": [[1, 2', headers={"content-type": "application/json"}), 400, "malformed JSON"),
    ("wrong vector size", dict(method="POST", url="/search/vectors", json={"vectors": [[1.0, 2.0]]}), 422, "dimension 256"),
    ("json missing field", dict(method="POST", url="/search/vectors", json={"k": 3}), 422, "vectors"),
    ("rerank of a row", dict(method="GET", url="/search?row=0&rerank=true"), 422, "rerank=true needs id="),
    ("unknown route", dict(method="GET", url="/nope"), 404, "Not Found"),
    ("malformed multipart", dict(method="POST", url="/search", content=b"--x\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a\"\r\n\r\nabc", headers={"content-type": "multipart/form-data; boundary=x"}), 400, "multipart"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "request_", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(
    client, what: str, request_: dict, status: int, message: str
) -> None:
    r = client.request(**request_)
    assert r.status_code == status, (what, r.text)
    body = r.json()
    assert body["status"] == status and message in body["error"], body
    assert client.get("/healthz").status_code == 200


def test_upload_limits_body_size_and_count(tiny, no_model_index) -> None:
    limits = UploadLimits(max_image_bytes=2000, max_images=2, max_request_bytes=50_000)
    app = create_app(tiny["index"], tiny["model"], settings=ServiceSettings(limits=limits))
    with TestClient(app) as c:
        big = jpeg(200, 200, seed=3)
        assert len(big) > 2000
        r = c.post("/search", files=[("images", ("b.jpg", big, "image/jpeg"))])
        assert r.status_code == 413 and "at most 2,000 bytes" in r.json()["error"]
        many = [("images", (f"{i}.jpg", jpeg(8, 8), "image/jpeg")) for i in range(3)]
        r = c.post("/search", files=many)
        assert r.status_code == 413 and "the limit is 2" in r.json()["error"], r.text
        r = c.post("/search", files=[("images", ("h.jpg", b"\xff" * 60_000, "image/jpeg"))])
        assert r.status_code == 413 and "limit is 50,000 bytes" in r.json()["error"]
        assert c.get("/healthz").status_code == 200


def test_no_model_means_503_for_photos_but_ids_work(no_model_index) -> None:
    with TestClient(create_app(no_model_index)) as c:
        assert c.get("/healthz").json()["model"] is False
        r = c.post("/search", files=[("images", ("a.jpg", jpeg(), "image/jpeg"))])
        assert r.status_code == 503 and "--model" in r.json()["error"]
        assert c.get("/search?row=0&k=2").status_code == 200
        assert "--model" in c.get("/").text


def test_calibration_answers_same_building(no_model_index) -> None:
    from sbe.verify.calibration import Calibration

    # P(same) = sigmoid(20 s - 5) >= 0.5  <=>  similarity >= 0.25
    cal = Calibration("logistic", ["similarity"], [20.0], -5.0, threshold=0.5, target_precision=0.9)
    cal.save(no_model_index / "calibration.json")
    with TestClient(create_app(no_model_index)) as c:
        hits = c.get("/search?row=0&k=5").json()["hits"]
        assert [h["same_building"] for h in hits] == [h["similarity"] >= 0.25 for h in hits]
        assert any(h["same_building"] for h in hits) and not all(h["same_building"] for h in hits)
        for h in hits:
            p = 1 / (1 + np.exp(-(20 * h["similarity"] - 5)))
            assert h["same_building_probability"] == pytest.approx(p, abs=1e-6)
        assert 'data-calibrated="yes"' in c.get("/").text
        assert c.get("/stats").json()["index"]["calibration"]["threshold"] == 0.5
    # the old {"threshold": cosine} file, or garbage: one line naming the file
    for text in ('{"threshold": 0.25}', "not json"):
        (no_model_index / "calibration.json").write_text(text)
        with pytest.raises(SbeError, match=r"calibration\.json"):
            create_app(no_model_index)


def test_bad_folders_fail_at_start_with_one_line(tmp_path: Path, no_model_index) -> None:
    with pytest.raises(SbeError, match="not an index directory"):
        create_app(tmp_path)
    with pytest.raises(SbeError, match="model folder not found"):
        create_app(no_model_index, tmp_path / "missing")


def test_bad_requests_do_not_grow_memory(client) -> None:
    bomb = declared_size_jpeg(20000, 20000)
    junk = b"\x00" * 200_000

    def burst(n: int) -> None:
        for i in range(n):
            client.post("/search", files=[("images", ("b.jpg", bomb, "image/jpeg"))])
            client.post("/embed", files=[("images", ("j.jpg", junk, "image/jpeg"))])
            client.post(
                "/search/vectors", content=b"{oops", headers={"content-type": "application/json"}
            )
            client.get(f"/search?id=x{i}")
            client.get(f"/buildings/{i}/photos/9")

    proc = psutil.Process()
    burst(150)  # warm-up: allocator pools, caches, route tables
    before = proc.memory_info().rss
    burst(600)
    grown = proc.memory_info().rss - before
    assert grown < 8 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over 3000 bad requests"
    stats = client.get("/stats").json()
    assert set(stats["by_status"]) >= {"404", "400", "413", "415"}
    assert all(v["window"] <= 4096 for v in stats["latency_ms"].values())


# ---- batching ---------------------------------------------------------------------------------


def test_batcher_groups_concurrent_requests_and_keeps_rows_apart() -> None:
    calls: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        time.sleep(0.02)
        return x.reshape(len(x), -1)[:, :2].astype(np.float32)

    async def main() -> list[np.ndarray]:
        b = MicroBatcher(model, max_batch=8, max_wait_s=0.01)
        await b.start()
        try:
            jobs = [np.full((1 + i % 2, 2, 2, 3), i, dtype=np.uint8) for i in range(10)]
            return await asyncio.gather(*(b.submit(j) for j in jobs))
        finally:
            await b.stop()

    out = asyncio.run(main())
    for i, o in enumerate(out):
        assert o.shape == (1 + i % 2, 2) and (o == i).all()
    assert sum(calls) == 15 and max(calls) <= 8 and len(calls) <= 4, calls


def test_batcher_passes_model_errors_to_every_request_of_the_batch() -> None:
    def model(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    async def main() -> list[object]:
        b = MicroBatcher(model, max_batch=4, max_wait_s=0.01)
        await b.start()
        try:
            jobs = [np.zeros((1, 2, 2, 3), np.uint8) for _ in range(3)]
            return await asyncio.gather(*(b.submit(j) for j in jobs), return_exceptions=True)
        finally:
            await b.stop()

    assert all(isinstance(e, RuntimeError) for e in asyncio.run(main()))


# ---- a real server process --------------------------------------------------------------------


def test_real_uvicorn_process_serves_batches_and_stops(tiny) -> None:
    with ServerProcess(tiny["index"], tiny["model"], start_timeout=240, lifetime=600) as server:
        assert server.url.startswith("http://127.0.0.1:")
        conns = {c.laddr.ip for c in psutil.Process(server.server_pid()).net_connections("tcp")}
        assert conns == {"127.0.0.1"}, conns
        o = SearchIndex.load(tiny["index"]).table.column("OSMID")[1].as_py()
        img = photo_of(tiny, o)

        def query(_: int) -> int:
            r = httpx.post(
                server.url + "/search",
                files=[("images", ("q.jpg", img, "image/jpeg"))],
                data={"k": "3"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            return r.json()["queries"][0]["hits"][0]["id"]

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(query, range(12))) == [o] * 12
        bad = httpx.post(
            server.url + "/search",
            files=[("images", ("bomb.jpg", declared_size_jpeg(20000, 20000), "image/jpeg"))],
            timeout=30,
        )
        assert bad.status_code == 413
        stats = httpx.get(server.url + "/stats", timeout=10).json()
        assert stats["batching"]["images"] == 12
        assert stats["batching"]["largest_batch"] >= 2, stats["batching"]
        assert httpx.get(server.url + f"/search?id={o}", timeout=10).status_code == 200
        code = server.stop()
    assert code == 0, server.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=2)


def test_serve_benchmark_quick_runs(tiny) -> None:
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "serve.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--quick", "--model", str(tiny["model"])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "id p99 server / raw faiss p99" in proc.stdout, proc.stdout[-3000:]
    assert "server exit code 0" in proc.stdout


def test_serve_passes_the_verify_section_to_every_worker(monkeypatch, tmp_path: Path) -> None:
    """`sbe serve` re-ranks with [verify] (as `sbe search --rerank`), also in worker processes."""
    from typer.testing import CliRunner

    import sbe.service.command as command
    from sbe.cli import app

    seen: dict = {}
    monkeypatch.setattr(command, "serve", lambda *a, **k: seen.update(args=a, **k))
    r = CliRunner().invoke(
        app,
        ["serve", "--index", str(tmp_path), "--set", "verify.max_keypoints=128", "--set", "verify.rerank_k=4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    settings = seen["settings"]
    assert settings.local.max_keypoints == 128 and settings.local.max_side == 320
    assert settings.rerank.k == 4 and settings.rerank.min_matches == 15
    # several workers learn them through the environment
    back = command.verify_settings_from_json(command.verify_settings_to_json(settings))
    assert back is not None and (back.local, back.rerank) == (settings.local, settings.rerank)
    assert command.verify_settings_from_json("") is None
    # a worker of another version ignores keys it does not know
    newer = '{"local": {"max_keypoints": 64, "added_later": 1}, "rerank": {"k": 3, "x": 0}}'
    back = command.verify_settings_from_json(newer)
    assert back is not None and back.local.max_keypoints == 64 and back.rerank.k == 3
