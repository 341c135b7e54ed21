"""The gazetteer world (``places = "world"``): distance scales, climate, styles, season, bytes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sbe.config import SynthConfig
from sbe.geo.koppen import FINE_CODES, climate_classes
from sbe.sphere import haversine_km
from sbe.stages import synth as synth_stage
from sbe.synth.difficulty import knobs_for
from sbe.synth.places import CONTINENTS, build_places, is_seasonal
from sbe.synth.placestyle import place_style
from sbe.synth.scene import RenderSettings, SceneRenderer
from sbe.synth.season import foliage_by_latitude, greenness, sample_conditions
from sbe.synth.world import plan_world


@pytest.fixture(scope="module")
def places():
    return build_places(300, 0)


def test_places_span_continents_sizes_and_all_three_distance_scales(places) -> None:
    assert 280 <= len(places) <= 300
    assert {p.continent for p in places} == set(CONTINENTS)
    assert {p.hemisphere for p in places} == {"N", "S"}
    pops = np.array([p.population for p in places])
    assert pops.min() < 30_000 and pops.max() > 1_000_000  # towns and cities of every size
    lat = np.array([p.lat for p in places])
    lon = np.array([p.lon for p in places])
    d = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 10.0 - 1e-6  # no two places closer than 10 km
    cluster = np.array([p.cluster for p in places])
    region = np.array([p.region for p in places])
    same_cluster = cluster[:, None] == cluster[None]
    same_region = (region[:, None] == region[None]) & ~same_cluster
    near = d[same_cluster & np.isfinite(d)]
    assert near.size > 400 and np.all(near <= 400.0)  # neighbours: 10-200 km from a centre
    assert np.mean((near >= 10) & (near <= 200)) > 0.7
    regional = d[same_region]
    assert regional.size > 400 and np.median(regional) > 200 and np.median(regional) < 900
    assert np.mean(d[np.isfinite(d)] > 2500) > 0.5  # continents beyond


def test_place_climate_is_the_raster_class_and_varies(places) -> None:
    lat = np.array([p.lat for p in places])
    lon = np.array([p.lon for p in places])
    fine = climate_classes(lat, lon, fallback_px=11)
    assert [FINE_CODES[f] for f in fine] == [p.koppen for p in places]
    groups = {p.koppen[0] for p in places}
    assert {"A", "B", "C", "D"} <= groups
    assert sum(p.seasonal for p in places) > 60
    assert sum(not p.seasonal for p in places) > 60


def test_places_are_deterministic_and_seeded(places) -> None:
    assert build_places(300, 0) == places
    assert build_places(300, 1) != places


def _wall_mean(style) -> np.ndarray:
    return np.mean([np.mean(f.walls, axis=0) for f in style.families], axis=0)


def test_neighbouring_towns_look_alike_but_not_identical(places) -> None:
    by_base: dict[str, list] = {}
    for p in places:
        by_base.setdefault(p.base_style, []).append(p)
    within, between = [], []
    for group in by_base.values():
        cols = {p.key: _wall_mean(place_style(p, 0)) for p in group}
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                dist = float(np.linalg.norm(cols[a.key] - cols[b.key]))
                if a.cluster == b.cluster:
                    within.append(dist)
                elif a.region != b.region:
                    between.append(dist)
    assert len(within) > 100 and len(between) > 100
    assert min(within) > 0.0  # not identical
    assert np.median(within) < 0.6 * np.median(between)  # but alike
    # climate decides the trees: no deciduous street trees in the tropics
    for p in places:
        kinds = place_style(p, 0).tree_kinds
        if p.koppen[0] == "A":
            assert "deciduous" not in kinds


def test_foliage_and_grass_follow_latitude_hemisphere_and_climate() -> None:
    jul, jan, apr = dt.date(2015, 7, 15), dt.date(2015, 1, 15), dt.date(2015, 4, 25)
    assert foliage_by_latitude("deciduous", jul, 50.0) in ("green", "summer")
    assert foliage_by_latitude("deciduous", jan, 50.0) == "bare"
    assert foliage_by_latitude("deciduous", jan, -35.0) in ("green", "summer")
    assert foliage_by_latitude("deciduous", jul, -35.0) == "bare"
    # spring comes later further north
    assert foliage_by_latitude("deciduous", apr, 35.0) != "bare"
    assert foliage_by_latitude("deciduous", apr, 60.0) == "bare"
    assert foliage_by_latitude("deciduous", dt.date(2015, 10, 10), 50.0).startswith("autumn")
    assert foliage_by_latitude("evergreen", jan, 50.0) == "green"
    days = [dt.date(2015, 1, 1) + dt.timedelta(days=k) for k in range(0, 365, 7)]
    for code, lat in (("Af", 1.3), ("Aw", 12.0), ("BWh", 25.0)):
        assert len({greenness(code, d, lat) for d in days}) == 1  # flat without seasons
        assert not is_seasonal(code)
    g = [greenness("Dfb", d, 55.0) for d in days]
    assert max(g) == 1.0 and min(g) == 0.0
    assert greenness("Csa", jul, 38.0) < 0.2 < 0.8 < greenness("Csa", jan, 38.0)


def test_season_cues_blossom_and_ground_cover_tell_spring_from_autumn() -> None:
    from sbe.synth.season import phenology, verge_colour

    lat = 48.0
    leaf_out, colour = phenology(lat)
    day = dt.date(2015, 1, 1)
    at = [day + dt.timedelta(days=k) for k in range(365)]
    states = [foliage_by_latitude("deciduous", d, lat) for d in at]
    # blossom from a fortnight before leaf-out to a week after, never in autumn
    blossom = [k for k, s in enumerate(states) if s == "blossom"]
    assert blossom and min(blossom) >= leaf_out - 14 and max(blossom) < leaf_out + 7
    assert "fresh" in states and states.index("fresh") > max(blossom)
    assert (
        foliage_by_latitude("deciduous", day + dt.timedelta(days=int(leaf_out) - 5), -lat)
        != "blossom"
    )
    spring = verge_colour("Cfb", day + dt.timedelta(days=int(leaf_out) + 20), lat)
    autumn = verge_colour("Cfb", day + dt.timedelta(days=int(colour) + 27), lat)
    summer = verge_colour("Cfb", dt.date(2015, 7, 20), lat)
    winter = verge_colour("Cfb", dt.date(2015, 1, 20), lat)
    assert spring[1] > summer[1] + 40 and summer[1] > summer[0] + 30  # fresh, then lush green
    assert autumn[0] > autumn[1] > autumn[2] and autumn[0] > spring[0] + 30  # leaf litter
    assert winter[0] > winter[1] > winter[2]  # dormant grey-brown
    # no seasons, no change
    assert len({verge_colour("Af", d, 1.3) for d in at}) == 1
    assert len({verge_colour("BWh", d, 25.0) for d in at}) == 1


def _render_at(plan, view, date: dt.date) -> np.ndarray:
    pano = plan.panoramas[view.panorama_id]
    d = plan.drives[pano.drive]
    cond = sample_conditions(plan.place, date, np.random.default_rng(1), 1.0)
    cond = dataclasses.replace(cond, weather="overcast", snow_cover=False)
    plan.drives[pano.drive] = dataclasses.replace(d, conditions=cond)
    try:
        r = SceneRenderer(plan, RenderSettings(128, 90, knobs_for(0.5)))
        img = Image.open(io.BytesIO(r.render(view).jpeg)).convert("RGB")
    finally:
        plan.drives[pano.drive] = d
    return np.asarray(img, dtype=np.float64)


def test_season_look_changes_with_the_date_only_where_the_climate_has_seasons() -> None:
    world = plan_world(40, 0, knobs_for(0.5), 12, places="world", n_places=300)
    seasonal = next(p for p in world.datasets if p.place.koppen[0] in "D")
    flat = next(p for p in world.datasets if p.place.koppen[0] == "A")
    dates = [dt.date(2016, m, 15) for m in (1, 4, 7, 10)]

    def stat(plan) -> list[float]:
        # green minus red of the lower half (verge, trees, light)
        out = []
        for d in dates:
            a = _render_at(plan, plan.views[0], d)[64:]
            out.append(float((a[..., 1] - a[..., 0]).mean()) + float(a.mean()))
        return out

    s, f = stat(seasonal), stat(flat)
    assert max(s) - min(s) > 4.0
    assert max(f) - min(f) < 0.5


def _tar_hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_world_same_seed_same_bytes(tmp_path: Path) -> None:
    def cfg(out: Path, seed: int, workers: int = 1) -> SynthConfig:
        return SynthConfig(
            output=out, buildings=5, image_size=96, seed=seed, workers=workers, places="world"
        )

    a = synth_stage.run(cfg(tmp_path / "a", 3), show_progress=False)
    synth_stage.run(cfg(tmp_path / "b", 3, workers=2), show_progress=False)  # any worker count
    synth_stage.run(cfg(tmp_path / "c", 4), show_progress=False)
    ha, hb, hc = (_tar_hashes(tmp_path / x) for x in "abc")
    assert ha == hb and len(ha) == 5
    assert ha != hc
    cities = a.extra["cities"]
    assert len(cities) == 5  # five buildings, five places on several continents
