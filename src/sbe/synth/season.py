"""Dates, seasons, the sun, and the weather a panorama was captured in.

Everything here is a pure function of a date, a latitude and a random generator, so the same
panorama always gets the same light and weather.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from sbe.synth.cities import WEATHERS, City

SEASONS: tuple[str, ...] = ("winter", "spring", "summer", "autumn")

#: meteorological seasons of the northern hemisphere by month (1-12)
_NORTH_SEASON = {12: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2, 9: 3, 10: 3, 11: 3}


def day_of_year(date: dt.date) -> int:
    """0-based day of the year (1 January = 0)."""
    return date.timetuple().tm_yday - 1


def season_of(date: dt.date, lat_deg: float) -> str:
    """Meteorological season at ``date`` in the hemisphere of ``lat_deg`` (south is shifted 6 months)."""
    idx = _NORTH_SEASON[date.month]
    if lat_deg < 0:
        idx = (idx + 2) % 4
    return SEASONS[idx]


def winterness(date: dt.date, lat_deg: float) -> float:
    """1 at mid-winter, 0 at mid-summer, smooth in between (hemisphere-aware).

    Mid-winter is taken as 15 January in the north and 15 July in the south.
    """
    mid_winter = 14 if lat_deg >= 0 else 195
    phase = 2.0 * math.pi * (day_of_year(date) - mid_winter) / 365.25
    return 0.5 + 0.5 * math.cos(phase)


def sun_position(lat_deg: float, doy: int, solar_hour: float) -> tuple[float, float]:
    """Solar elevation and azimuth (simple declination model, accurate to about a degree).

    Args:
        lat_deg: latitude, degrees.
        doy: 0-based day of the year.
        solar_hour: local solar time in hours (12 = solar noon).

    Returns:
        ``(elevation_deg, azimuth_deg)``; azimuth clockwise from north in [0, 360).
    """
    decl = math.radians(23.44) * math.sin(2.0 * math.pi * (284 + doy + 1) / 365.0)
    phi = math.radians(lat_deg)
    hour_angle = math.radians(15.0 * (solar_hour - 12.0))
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    el = math.asin(max(-1.0, min(1.0, sin_el)))
    # azimuth measured from south, positive westward; +180 turns it into a bearing from north
    az_south = math.atan2(
        math.sin(hour_angle),
        math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi),
    )
    return math.degrees(el), (math.degrees(az_south) + 180.0) % 360.0


@dataclass(frozen=True)
class Conditions:
    """Light and weather of one capture (one drive down a street on one day).

    Attributes:
        date: capture date.
        season: meteorological season in the city's hemisphere.
        weather: one of :data:`sbe.synth.cities.WEATHERS`, or ``"snowfall"``.
        snow_cover: the ground (and ledges) are snow-covered.
        solar_hour: local solar time, hours.
        sun_elevation_deg: degrees above the horizon.
        sun_azimuth_deg: bearing of the sun, degrees clockwise from north.
        winterness: 1 at mid-winter, 0 at mid-summer.
    """

    date: dt.date
    season: str
    weather: str
    snow_cover: bool
    solar_hour: float
    sun_elevation_deg: float
    sun_azimuth_deg: float
    winterness: float

    @property
    def sunny(self) -> bool:
        """Direct sunlight reaches the scene (clear or partly cloudy, sun above the horizon)."""
        return self.weather in ("clear", "partly_cloudy") and self.sun_elevation_deg > 2.0


def random_date(rng: np.random.Generator, first_year: int = 2009, last_year: int = 2023) -> dt.date:
    """A uniformly random day between 1 January ``first_year`` and 31 December ``last_year``."""
    start = dt.date(first_year, 1, 1).toordinal()
    end = dt.date(last_year, 12, 31).toordinal()
    return dt.date.fromordinal(int(rng.integers(start, end + 1)))


def sample_conditions(
    city: City, date: dt.date, rng: np.random.Generator, severity: float = 1.0
) -> Conditions:
    """Draw the weather and time of day of a capture in ``city`` on ``date``.

    Args:
        city: where.
        date: when.
        rng: random generator (consumed).
        severity: scales the odds of rain, fog and snow (1 = the city's climate).

    Returns:
        The capture's :class:`Conditions`.
    """
    w = winterness(date, city.lat)
    odds = (1.0 - w) * np.asarray(city.weather_summer) + w * np.asarray(city.weather_winter)
    odds = odds * np.array([1.0, 1.0, 1.0, severity, severity])
    weather = WEATHERS[int(rng.choice(len(WEATHERS), p=odds / odds.sum()))]
    # snow lies only in the colder half of the year, most often near mid-winter
    p_snow = city.snow_winter * max(0.0, (w - 0.45) / 0.55) ** 1.5
    snow_cover = bool(rng.random() < min(1.0, p_snow * (0.5 + 0.5 * severity)))
    if snow_cover and weather in ("overcast", "fog") and rng.random() < 0.35:
        weather = "snowfall"
    if snow_cover and weather == "rain":
        weather = "overcast"
    if getattr(city, "geonameid", 0):  # a gazetteer place: captures happen in daylight
        rise, set_ = daylight_hours(city.lat, day_of_year(date))
        lo, hi = max(8.0, rise + 0.75), min(17.5, set_ - 0.75)
        solar_hour = float(rng.uniform(lo, hi)) if hi > lo else 12.0
    else:
        solar_hour = float(rng.uniform(8.5, 17.0))
    el, az = sun_position(city.lat, day_of_year(date), solar_hour)
    return Conditions(
        date=date,
        season=season_of(date, city.lat),
        weather=weather,
        snow_cover=snow_cover,
        solar_hour=solar_hour,
        sun_elevation_deg=el,
        sun_azimuth_deg=az,
        winterness=w,
    )


def daylight_hours(lat_deg: float, doy: int) -> tuple[float, float]:
    """Local solar hours of sunrise and sunset (0 and 24 in polar day, 12 and 12 in polar night)."""
    decl = math.radians(23.44) * math.sin(2.0 * math.pi * (284 + doy + 1) / 365.0)
    x = -math.tan(math.radians(lat_deg)) * math.tan(decl)
    if x <= -1.0:
        return 0.0, 24.0
    if x >= 1.0:
        return 12.0, 12.0
    half = math.degrees(math.acos(x)) / 15.0
    return 12.0 - half, 12.0 + half


def local_day(date: dt.date, lat_deg: float) -> float:
    """Day of the *local* seasonal year: the 0-based day of year, shifted half a year south."""
    d = float(day_of_year(date))
    return d if lat_deg >= 0 else (d + 182.625) % 365.25


def phenology(lat_deg: float) -> tuple[float, float]:
    """Leaf-out and autumn-colour days of deciduous trees in the local seasonal year.

    Spring comes later and autumn earlier away from the equator: leaf-out on about day 75
    (mid-March) at 30 degrees and day 115 (late April) at 50; colouring starts about day 290
    (mid-October) at 30 degrees and day 250 (early September) at 50.
    """
    a = abs(lat_deg)
    leaf_out = float(min(160.0, max(45.0, 75.0 + 2.0 * (a - 30.0))))
    colour = float(min(320.0, max(225.0, 290.0 - 2.0 * (a - 30.0))))
    return leaf_out, colour


def foliage_by_latitude(kind: str, date: dt.date, lat_deg: float) -> str:
    """What a tree of ``kind`` looks like on ``date`` at ``lat_deg`` (gazetteer places).

    Unlike :func:`foliage_state` the timing follows the latitude (:func:`phenology`) and there
    are four more states: ``"blossom"`` (white and pink flowers, from a fortnight before
    leaf-out to a week after), ``"fresh"`` (the light yellow-green of young leaves, the two
    months after the buds), ``"summer"`` (the darker green of high summer) and ``"autumn_late"``
    (thinning brown-red leaves). Evergreens, palms and conifers are always ``"green"``.
    """
    if kind != "deciduous":
        return "green"
    d = local_day(date, lat_deg)
    leaf_out, colour = phenology(lat_deg)
    if leaf_out - 14.0 <= d < leaf_out + 7.0:
        return "blossom"
    if d < leaf_out or d >= colour + 42.0:
        return "bare"
    if d < leaf_out + 21.0:
        return "bud"
    if d < leaf_out + 75.0:
        return "fresh"
    if d < colour:
        return "summer"
    return "autumn" if d < colour + 21.0 else "autumn_late"


def _ramp(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def greenness(koppen: str, date: dt.date, lat_deg: float) -> float:
    """How green the grass is on ``date``: 1 lush, 0 dormant or dry (pure function).

    Flat where the climate has no seasons (tropics: 1, hot steppes and deserts: 0.15); where it
    has, the grass greens up with the leaves and browns in autumn (:func:`phenology`); under a
    dry summer (``Cs*``) it is green in winter and spring and straw-coloured in summer.
    """
    if koppen[0] == "A":
        return 1.0
    if koppen in ("BWh", "BSh"):
        return 0.15
    d = local_day(date, lat_deg)
    if koppen.startswith("Cs"):
        return 1.0 - _ramp(d, 140.0, 185.0) * (1.0 - _ramp(d, 275.0, 320.0))
    leaf_out, colour = phenology(lat_deg)
    return _ramp(d, leaf_out - 15.0, leaf_out + 25.0) * (1.0 - _ramp(d, colour, colour + 40.0))


#: ground-cover colours of the planting strip (gazetteer places)
_DORMANT, _FRESH, _LUSH, _LITTER = (128, 116, 88), (124, 182, 56), (58, 106, 40), (176, 104, 38)


def _bump(x: float, lo: float, hi: float) -> float:
    """0 outside ``[lo, hi]``, rising to 1 in the middle (half a sine)."""
    return math.sin(math.pi * _ramp(x, lo, hi)) if lo < x < hi else 0.0


def verge_colour(koppen: str, date: dt.date, lat_deg: float) -> tuple[int, int, int]:
    """Colour of the grass strip along the kerb on ``date`` (pure function; snow apart).

    Dormant grey-brown to lush green by :func:`greenness`; where the climate has seasons also a
    fresh yellow-green flush in the weeks after leaf-out and orange-brown leaf litter while the
    trees drop their leaves (:func:`phenology`), so that spring and autumn, which have the same
    light, look different. Constant where the climate has no seasons.
    """
    g = greenness(koppen, date, lat_deg)
    col = tuple(a + (b - a) * g for a, b in zip(_DORMANT, _LUSH, strict=True))
    if koppen[0] in "CDE" or koppen in ("BSk", "BWk"):
        d = local_day(date, lat_deg)
        leaf_out, colour = phenology(lat_deg)
        spring = _bump(d, leaf_out - 10.0, leaf_out + 50.0)
        litter = _bump(d, colour, colour + 55.0)
        col = tuple(a + (b - a) * 0.8 * spring for a, b in zip(col, _FRESH, strict=True))
        col = tuple(a + (b - a) * 0.85 * litter for a, b in zip(col, _LITTER, strict=True))
    r, gg, b = (round(c) for c in col)
    return r, gg, b


def season_grade(koppen: str, date: dt.date, lat_deg: float) -> tuple[float, float]:
    """The light and colour of the season where the climate has one: ``(summer, autumn)``.

    ``summer`` is +1 at mid-summer and -1 at mid-winter (a cosine of the local day, peak on
    15 July north / 15 January south), scaled by how strong the seasons are (weaker toward the
    tropics); ``autumn`` is a bump from the start of leaf colouring to bare trees
    (:func:`phenology`), 0 elsewhere. Both are 0 where the climate has no seasons.
    """
    if not (koppen[0] in "CDE" or koppen in ("BSk", "BWk")):
        return 0.0, 0.0
    amp = min(1.0, max(0.35, (abs(lat_deg) - 20.0) / 25.0))
    d = local_day(date, lat_deg)
    summer = amp * math.cos(2.0 * math.pi * (d - 195.0) / 365.25)
    _, colour = phenology(lat_deg)
    autumn = amp * max(0.0, math.sin(math.pi * _ramp(d, colour - 5.0, colour + 45.0)))
    return summer, autumn


def foliage_state(kind: str, date: dt.date, lat_deg: float) -> str:
    """What a tree of ``kind`` looks like on ``date``.

    Args:
        kind: ``"deciduous"``, ``"evergreen"``, ``"palm"`` or ``"conifer"``.

    Returns:
        ``"bare"``, ``"bud"``, ``"green"``, ``"autumn"`` (deciduous), else ``"green"``.
    """
    if kind != "deciduous":
        return "green"
    month = date.month if lat_deg >= 0 else (date.month + 5) % 12 + 1
    if month in (12, 1, 2, 3):
        return "bare"
    if month == 4:
        return "bud"
    if month in (10, 11):
        return "autumn" if month == 10 or date.day < 15 else "bare"
    return "green"
