"""The synthetic world: cities -> map regions (datasets) -> street blocks -> buildings, targets, views.

Planning is cheap and deterministic; it happens once, in the parent process, and yields plain
frozen dataclasses that the renderers (one process per tar) turn into pixels.

Geometry of one map region (all metres, in a local east/north frame around the region centre):

- A grid of rectangular blocks, axis ``a`` along the grid angle's cross direction and ``b`` along it,
  separated by streets. Every block edge is a row of building facades facing the street.
- A *line* is one side of one street: a vertical plane holding the facades of every block along
  that side. ``u`` runs along the line (to the right when facing the facades from the street), ``v``
  is height, ``w`` is the distance from the facade plane toward the street.
- Corner buildings own the ends of two edges, so they have a front and a side facade.
- Panoramas are taken along street centrelines by several *drives* (one date and weather each).
- A target is a point on a facade; each target is seen by 2-7 panoramas within a limited angle of
  the facade normal. Targets of one facade lie within about 10 m of each other, targets of
  different buildings are at least :data:`~sbe.synth.views.MIN_TARGET_SEPARATION_M` apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sbe.synth.cities import CITY_BY_KEY, City
from sbe.synth.difficulty import Knobs
from sbe.synth.places import Place, build_places
from sbe.synth.placestyle import place_style
from sbe.synth.plan import DatasetPlan, latlon_at
from sbe.synth.region import Ids, plan_region
from sbe.synth.styles import CityStyle

#: city order: the first few already span both hemispheres and several climates
CITY_ORDER: tuple[str, ...] = (
    "amsterdam", "sydney", "singapore", "chicago", "cape_town", "florence", "moscow",
    "buenos_aires", "las_vegas", "reykjavik",
)  # fmt: skip


#: map regions a gazetteer place is spread over at least (when it has that many buildings)
PLACE_REGIONS = 3


def _region_centres(city: City, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """``n`` region centres (lat, lon) within the city radius, at least 700 m apart."""
    out: list[np.ndarray] = []
    for _ in range(n):
        best = np.zeros(2)  # replaced on the first attempt
        for _attempt in range(60):
            r = 1000.0 * city.radius_km * math.sqrt(float(rng.uniform(0.02, 1.0)))
            th = float(rng.uniform(0, 2 * math.pi))
            best = np.array([r * math.cos(th), r * math.sin(th)])
            if not out or float(np.min(np.linalg.norm(np.asarray(out) - best, axis=1))) >= 700.0:
                break
        out.append(best)
    return [latlon_at(city.lat, city.lon, float(p[0]), float(p[1])) for p in out]


def _share_by_population(n_buildings: int, places: tuple[Place, ...]) -> list[int]:
    """Target buildings per place: one each first, the rest in proportion to population^0.5
    (largest remainders), so that big cities hold several map regions."""
    n = len(places)
    base = [1 if i < n_buildings else 0 for i in range(n)]
    rest = n_buildings - sum(base)
    if rest <= 0:
        return base
    w = np.sqrt(np.array([p.population for p in places], dtype=np.float64))
    ideal = rest * w / w.sum()
    extra = np.floor(ideal).astype(int)
    order = np.argsort(-(ideal - extra), kind="stable")
    extra[order[: rest - int(extra.sum())]] += 1
    return [b + int(e) for b, e in zip(base, extra, strict=True)]


@dataclass
class WorldPlan:
    """All map regions of one synthetic world."""

    datasets: list[DatasetPlan]
    knobs: Knobs

    @property
    def n_target_buildings(self) -> int:
        return sum(len(d.target_buildings()) for d in self.datasets)


def plan_world(
    n_buildings: int,
    seed: int,
    knobs: Knobs,
    buildings_per_tar: int,
    stream: int = 0,
    first_dataset_id: int = 1,
    places: str = "cities10",
    n_places: int = 300,
) -> WorldPlan:
    """Plan a world with exactly ``n_buildings`` target buildings.

    Args:
        n_buildings: buildings that carry targets (filler buildings between them come on top).
        seed: world seed.
        knobs: difficulty knobs.
        buildings_per_tar: target buildings per map region (one tar each), at most.
        stream: independent random stream (0 = the tars, 1 = the packaged parquet).
        first_dataset_id: DatasetID of the first region.
        places: ``"cities10"`` (the ten hand-made cities) or ``"world"`` (``n_places`` towns and
            cities of the gazetteer, :mod:`sbe.synth.places`).
        n_places: places of the ``"world"`` world (a world with fewer buildings uses a prefix
            that still spans the continents).

    Returns:
        The :class:`WorldPlan`; regions are ordered by DatasetID.
    """
    rng = np.random.default_rng([seed, stream, 7919])
    styles: list[CityStyle | None]
    if places == "world":
        world_places = build_places(n_places, seed)[: max(1, n_buildings)]
        cities: list[City] = list(world_places)
        styles = [place_style(p, seed) for p in world_places]
        per_city = _share_by_population(n_buildings, world_places)
    elif places == "cities10":
        cities = [CITY_BY_KEY[k] for k in CITY_ORDER[: max(1, min(len(CITY_ORDER), n_buildings))]]
        styles = [None] * len(cities)
        per_city = [
            n_buildings // len(cities) + (1 if i < n_buildings % len(cities) else 0)
            for i in range(len(cities))
        ]
    else:
        raise ValueError(f"places must be 'cities10' or 'world', not {places!r}")
    ids = Ids(building=stream * 10_000_000, facade=stream * 10_000_000)
    datasets: list[DatasetPlan] = []
    next_id = first_dataset_id
    for city, style, want in zip(cities, styles, per_city, strict=True):
        if want <= 0:
            continue
        n_regions = max(1, math.ceil(want / buildings_per_tar))
        if style is not None:
            # gazetteer places: spread even a small place over a few map regions (up to
            # PLACE_REGIONS), so that a held-out region leaves its place's others in training
            n_regions = max(n_regions, min(want, PLACE_REGIONS))
        centres = _region_centres(city, n_regions + 12, rng)
        remaining, r = want, 0
        while remaining > 0 and r < 50 * (n_regions + 12):
            if r == len(centres):  # regions came out smaller than planned: open more
                centres += _region_centres(city, n_regions + 12, rng)
            quota = math.ceil(remaining / max(1, n_regions - r)) if r < n_regions else remaining
            quota = min(quota, buildings_per_tar)
            drng = np.random.default_rng([seed, stream, next_id])
            lat0, lon0 = centres[r]
            plan = plan_region(next_id, city, lat0, lon0, quota, knobs, drng, ids, style)
            got = len(plan.target_buildings())
            if got:
                datasets.append(plan)
                next_id += 1
                remaining -= got
            r += 1
    return WorldPlan(datasets=datasets, knobs=knobs)
