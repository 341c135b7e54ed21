"""Re-ranking wired into the index, search and service (issue 16): ``sbe index build
--local-features`` stores each row's photos' DISK features, ``sbe search --rerank`` re-orders the
global top-k by verified matches (from the store or extracted on the fly), candidates without
photos keep their global place (counted), a ``calibration.json`` answers "same building?", and
the service's ``rerank=true`` takes the same path.

Small settings (64 keypoints, 128 px) keep DISK/LightGlue fast on the tiny world's 96 px photos.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sbe.config import IndexConfig, SbeConfig, VerifyConfig
from sbe.errors import SbeError
from sbe.index import SearchIndex
from sbe.stages import index as index_stage
from sbe.stages import search as search_stage
from sbe.storage.artifacts import IndexDir, ModelDir
from sbe.verify.calibration import fit_calibration
from sbe.verify.gallery import Gallery
from sbe.verify.store import LocalFeatureStore

VERIFY = VerifyConfig(max_keypoints=64, max_side=128, min_matches=8)


@pytest.fixture(scope="module")
def world(tiny_pipeline, tmp_path_factory) -> dict:
    """The tiny pipeline's buildings indexed again with local features (2 photos per row), with
    a copy of its model that carries a similarity+matches calibration."""
    cfg, _ = tiny_pipeline
    w = Path(cfg.workdir)
    root = tmp_path_factory.mktemp("rerank")
    model = root / "model"
    shutil.copytree(w / "model", model)
    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.3
    sims = np.where(same, 0.8, 0.4) + rng.normal(0, 0.1, 400)
    matches = np.where(same, 60, 5) + rng.integers(0, 10, 400)
    fit_calibration(sims, same, matches=matches).save(model / ModelDir.CALIBRATION)
    full = SbeConfig(verify=VERIFY)
    icfg = IndexConfig(
        input=w / "buildings",
        output=root / "index",
        model=model,
        local_features=True,
        local_features_per_row=2,
    )
    manifest = index_stage.run(icfg, full_config=full, show_progress=False)
    photos = pq.read_table(w / "packaged_images.parquet")
    return {"cfg": icfg, "full": full, "index": root / "index", "manifest": manifest,
            "photos": photos, "plain": w / "index", "model": model, "root": root}  # fmt: skip


def photo_of(world: dict, osmid: object) -> bytes:
    """The first photo of ``osmid`` that decodes (the tiny world packages corrupt ones too)."""
    t = world["photos"]
    for i, v in enumerate(t.column("OSMID").to_pylist()):
        data = t.column("image_bytes")[i].as_py()
        if v == osmid and data:
            try:
                Image.open(io.BytesIO(data)).load()
            except OSError:
                continue
            return data
    raise AssertionError(f"no decodable photo of {osmid}")


def test_index_build_stores_each_rows_photos_and_the_calibration(world) -> None:
    index = SearchIndex.load(world["index"])
    store = LocalFeatureStore(world["index"] / IndexDir.LOCAL_FEATURES)
    m = world["manifest"]
    assert (
        store.num_rows == index.info.count and store.meta["index_build_id"] == index.info.build_id
    )
    photos = world["photos"].column("OSMID").to_pylist()
    ids = index.table.column("OSMID").to_pylist()
    # every row stores its first 2 photos; a photo that does not decode (the tiny world packages
    # one on purpose) or a row without any is counted in the manifest, not a failure
    stored = [len(store.images_of(r)) for r in range(len(ids))]
    expected = [min(2, photos.count(i)) for i in ids]
    broken = m.skipped.get("local features: photo does not decode", 0)
    assert broken >= 1 and sum(stored) == sum(expected) - broken
    assert all(0 <= s <= e for s, e in zip(stored, expected, strict=True))
    assert m.rows["rows_without_photos"] == stored.count(0)
    assert m.rows["local_feature_images"] == sum(stored) == len(store)
    assert max(len(f) for f in store.row_features(stored.index(2))) <= 64
    assert IndexDir.LOCAL_FEATURES in m.outputs and IndexDir.CALIBRATION in m.outputs
    assert (world["index"] / IndexDir.CALIBRATION).read_bytes() == (
        world["model"] / ModelDir.CALIBRATION
    ).read_bytes()
    assert not (world["index"] / index_stage.PARTS_DIR).exists()  # parts removed after commit
    # the same settings: up to date; other extraction settings: rebuilt
    again = index_stage.run(world["cfg"], full_config=world["full"], show_progress=False)
    assert again.up_to_date


def test_image_query_reranks_its_own_building_first_with_the_most_matches(world) -> None:
    index = SearchIndex.load(world["index"])
    store = LocalFeatureStore(world["index"] / IndexDir.LOCAL_FEATURES)
    ids = index.table.column("OSMID").to_pylist()
    row = next(r for r in range(len(ids)) if len(store.images_of(r)) == 2)
    query = world["root"] / "q.jpg"
    query.write_bytes(photo_of(world, ids[row]))
    _, labels, plain = search_stage.run_query(world["index"], images=[query], k=5)
    _, _, rr = search_stage.run_query(
        world["index"], images=[query], k=5, rerank=True, rerank_k=8, verify=VERIFY
    )
    hits = rr.hits(0)
    assert rr.notes["rerank"]["gallery"] == "store" and rr.notes["rerank"]["k"] == 8
    # the stored photo itself is among the candidate's photos: it verifies with many matches
    assert hits[0]["id"] == ids[row] and hits[0]["matches"] >= 8
    checked = [h["matches"] for h in hits if h["matches"] is not None]
    assert hits[0]["matches"] == max(checked)
    # re-ranking re-orders the global top 8 (one search of k=8), it finds nothing new
    _, _, top8 = search_stage.run_query(world["index"], images=[query], k=8)
    assert {h["id"] for h in hits} <= set(top8.ids(0))
    assert len(plain.hits(0)) == len(hits) == 5
    # calibration fitted with matches: every checked hit gets an answer, the unchecked None
    for h in hits:
        assert (h["same_building"] is None) == (h["matches"] is None)
    assert hits[0]["same_building"] is True and 0.5 < hits[0]["same_building_probability"] <= 1
    # without re-ranking a match-based calibration cannot answer
    assert all(h["same_building"] is None for h in plain.hits(0))
    payload = search_stage.to_payload(world["index"], index, labels, rr)
    json.dumps(payload, allow_nan=False)  # no NaN leaks into --json
    assert payload["rerank"]["missing"] >= 0


def test_on_the_fly_photos_give_the_same_top_hit_and_missing_ones_are_counted(
    world, tmp_path: Path
) -> None:
    index = SearchIndex.load(world["plain"])
    query = tmp_path / "q2.jpg"
    first = index.table.column("OSMID")[0].as_py()
    query.write_bytes(photo_of(world, first))
    _, _, plain = search_stage.run_query(world["plain"], images=[query], k=10)
    glob = plain.ids(0)
    # the plain index (no store) of the same pipeline: photos come from the packaged parquet
    _, _, rr = search_stage.run_query(
        world["plain"], images=[query], k=10, rerank=True, verify=VERIFY
    )
    note = rr.notes["rerank"]
    assert note["gallery"] == "on the fly" and note["missing"] == 0
    assert rr.hits(0)[0]["id"] == first and rr.hits(0)[0]["matches"] >= 8
    # a photo parquet without the global rank-3 building: it is not checked, counted, kept there
    gone = glob[2]
    t = world["photos"]
    keep = [i for i, v in enumerate(t.column("OSMID").to_pylist()) if v != gone]
    photos = tmp_path / "photos.parquet"
    pq.write_table(t.take(keep), photos)
    _, _, rr = search_stage.run_query(
        world["plain"], images=[query], k=10, rerank=True, verify=VERIFY, photos=photos
    )
    note = rr.notes["rerank"]
    assert note["missing"] == 1 and note["checked"] == len(glob) - 1
    assert rr.ids(0)[2] == gone and rr.hits(0)[2]["matches"] is None
    assert rr.hits(0)[0]["id"] == first
    # an id query whose building has no photo at all: a clear error
    with pytest.raises(SbeError, match="has no photo to match"):
        search_stage.run_query(
            world["plain"], id_value=str(gone), k=4, rerank=True, verify=VERIFY, photos=photos
        )


def test_no_photos_at_all_keeps_the_global_order(world) -> None:
    index = SearchIndex.load(world["plain"])
    result = index.search_id(index.table.column("OSMID")[0].as_py(), 5)
    out = search_stage.rerank_result(
        result,
        [[photo_of(world, world["photos"].column("OSMID")[0].as_py())]],
        Gallery(photos=None),
        search_stage.local_settings(VERIFY),
        search_stage.rerank_settings(VERIFY),
    )
    assert out.ids(0) == result.ids(0)
    assert out.notes["rerank"]["missing"] == 5 and out.notes["rerank"]["checked"] == 0


def test_id_query_uses_the_buildings_stored_photos(world) -> None:
    index = SearchIndex.load(world["index"])
    store = LocalFeatureStore(world["index"] / IndexDir.LOCAL_FEATURES)
    ids = index.table.column("OSMID").to_pylist()
    row = next(r for r in range(len(ids)) if len(store.images_of(r)) == 2)
    _, _, rr = search_stage.run_query(
        world["index"], id_value=str(ids[row]), k=4, rerank=True, verify=VERIFY
    )
    assert ids[row] not in rr.ids(0) and len(rr.ids(0)) == 4
    assert "matches" in rr.columns
    with pytest.raises(SbeError, match="--rerank needs photos"):
        search_stage.run_query(world["index"], vector_file="x.npy", rerank=True)


def test_a_store_of_another_build_is_refused(world, tmp_path: Path) -> None:
    d = tmp_path / "index"
    shutil.copytree(world["index"], d)
    first = SearchIndex.load(d).table.column("OSMID")[0].as_py()
    meta = json.loads((d / IndexDir.LOCAL_FEATURES / "meta.json").read_text())
    meta["index_build_id"] = "another"
    (d / IndexDir.LOCAL_FEATURES / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SbeError, match="another index build"):
        search_stage.run_query(d, id_value=str(first), rerank=True, verify=VERIFY)


def test_a_bad_calibration_file_is_one_line_naming_it(world, tmp_path: Path) -> None:
    d = tmp_path / "index"
    shutil.copytree(world["plain"], d)
    (d / IndexDir.CALIBRATION).write_text('{"threshold": 0.3}')
    index = SearchIndex.load(d)
    with pytest.raises(SbeError, match=r"calibration\.json"):
        search_stage.calibrate_result(index, index.search_rows([0], 3))


def test_service_rerank_takes_the_same_path(world) -> None:
    from sbe.service import create_app
    from sbe.service.engine import ServiceSettings
    from sbe.verify.gallery import RerankSettings

    index = SearchIndex.load(world["index"])
    store = LocalFeatureStore(world["index"] / IndexDir.LOCAL_FEATURES)
    ids = index.table.column("OSMID").to_pylist()
    row = next(r for r in range(len(ids)) if len(store.images_of(r)) == 2)
    photo = photo_of(world, ids[row])
    query = world["root"] / "q3.jpg"
    query.write_bytes(photo)
    _, _, cli = search_stage.run_query(
        world["index"], images=[query], k=5, rerank=True, rerank_k=10, verify=VERIFY
    )
    settings = ServiceSettings(
        local=search_stage.local_settings(VERIFY),
        rerank=RerankSettings(k=10, combine="verified", min_matches=VERIFY.min_matches),
    )
    app = create_app(world["index"], world["model"], settings=settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post(
            "/search", data={"k": "5", "rerank": "true"},
            files=[("images", ("q.jpg", photo, "image/jpeg"))],
        )  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        hits = body["queries"][0]["hits"]
        assert [h["id"] for h in hits] == cli.ids(0)
        assert [h["matches"] for h in hits] == [h["matches"] for h in cli.hits(0)]
        assert body["rerank"]["gallery"] == "store" and "rerank" in body["timing_ms"]
        assert hits[0]["same_building"] is True
        r = c.get(f"/search?id={ids[row]}&k=3&rerank=true")
        assert r.status_code == 200 and len(r.json()["hits"]) == 3
        assert all("matches" in h for h in r.json()["hits"])
        r = c.get("/search?row=0&k=3&rerank=true")
        assert r.status_code == 422 and "needs id=" in r.json()["error"]
        stats = c.get("/stats").json()
        assert stats["rerank"]["gallery"] == "store" and stats["rerank"]["queries"] == 2
