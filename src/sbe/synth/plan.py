"""The plan of one map region: plain frozen records the renderers turn into pixels.

Coordinates are metres in the region's local east/north frame; see :mod:`sbe.synth.world` for the
geometry (lines, facades, drives, targets, views).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sbe.sphere import offset_latlon
from sbe.synth.cities import CITY_BY_KEY, City
from sbe.synth.genome import Genome
from sbe.synth.places import is_seasonal
from sbe.synth.season import Conditions
from sbe.synth.styles import STYLES, CityStyle


def latlon_at(lat0: float, lon0: float, east_m: float, north_m: float) -> tuple[float, float]:
    """Latitude/longitude (degrees) of a point ``east_m``/``north_m`` metres from ``(lat0, lon0)``."""
    lat, lon = offset_latlon(
        np.asarray(lat0), np.asarray(lon0), np.asarray(east_m), np.asarray(north_m)
    )
    return float(lat), float(lon)


@dataclass(frozen=True)
class Facade:
    """One wall of a building on one line, spanning ``u0..u1`` metres along the line."""

    index: int
    building: int
    line: int
    u0: float
    u1: float
    side: bool

    @property
    def width(self) -> float:
        return self.u1 - self.u0


@dataclass(frozen=True)
class Building:
    """A building: its plan, its facades, whether it carries targets, what it copies."""

    index: int
    genome: Genome
    facades: tuple[int, ...]
    is_target: bool = False
    duplicate_of: int = -1


@dataclass(frozen=True)
class Prop:
    """A fixed street object on a line's sidewalk: a tree, lamp post or sign pole."""

    kind: str
    u: float
    w: float
    height: float
    seed: int
    tree_kind: str = ""


@dataclass(frozen=True)
class Line:
    """One side of a street: the vertical plane ``origin + u * tangent + v * up``.

    Attributes:
        origin: (east, north) metres of u = 0 on the facade plane.
        tangent: unit (east, north) along increasing u.
        normal: unit (east, north) from the facades toward the street.
        street: the street this side belongs to.
        facades: facade indexes on this line, sorted by u0.
        sidewalk_m: sidewalk width.
        opposite_height_m: typical height of the buildings across the street (for shadows).
        props: trees and poles on this side's sidewalk.
    """

    id: int
    street: int
    origin: tuple[float, float]
    tangent: tuple[float, float]
    normal: tuple[float, float]
    facades: tuple[int, ...]
    sidewalk_m: float
    opposite_height_m: float
    props: tuple[Prop, ...]

    def point(self, u: float, v: float = 0.0, w: float = 0.0) -> np.ndarray:
        """World (east, north, up) of line coordinates (u along, v up, w toward the street)."""
        e = self.origin[0] + u * self.tangent[0] + w * self.normal[0]
        n = self.origin[1] + u * self.tangent[1] + w * self.normal[1]
        return np.array([e, n, v])


@dataclass(frozen=True)
class Street:
    """A street centreline from ``start`` along ``direction`` for ``length`` metres."""

    id: int
    start: tuple[float, float]
    direction: tuple[float, float]
    length: float
    width: float


@dataclass(frozen=True)
class Drive:
    """One capture run down a street: a date, its weather and light, parked cars, panoramas."""

    id: int
    street: int
    conditions: Conditions
    lane_offset_m: float
    spacing_m: float
    start_m: float
    car_seed: int


@dataclass(frozen=True)
class Panorama:
    """A camera position (StreetViewID) from one drive."""

    id: int
    drive: int
    position: tuple[float, float, float]


@dataclass(frozen=True)
class Target:
    """A point on a facade (TargetID), at ``u`` along its line and ``v`` metres up."""

    id: int
    building: int
    facade: int
    line: int
    u: float
    v: float


@dataclass(frozen=True)
class View:
    """One image (PatchID): a target seen from a panorama, with its camera nuisances."""

    patch_id: int
    target_id: int
    panorama_id: int
    fov_deg: float
    roll_deg: float
    shift: tuple[float, float]
    seed: int


@dataclass
class DatasetPlan:
    """Everything needed to render one map region into one tar."""

    dataset_id: int
    city: str
    lat0: float
    lon0: float
    streets: dict[int, Street] = field(default_factory=dict)
    lines: dict[int, Line] = field(default_factory=dict)
    buildings: dict[int, Building] = field(default_factory=dict)
    facades: dict[int, Facade] = field(default_factory=dict)
    drives: dict[int, Drive] = field(default_factory=dict)
    panoramas: dict[int, Panorama] = field(default_factory=dict)
    targets: dict[int, Target] = field(default_factory=dict)
    views: list[View] = field(default_factory=list)
    #: the place (a gazetteer :class:`~sbe.synth.places.Place`) when not one of the ten cities
    place: City | None = None
    #: its derived style (:func:`~sbe.synth.placestyle.place_style`) when not a city's own
    style: CityStyle | None = None

    @property
    def seasonal(self) -> bool:
        """A gazetteer place whose look follows the capture date (:func:`~sbe.synth.places.is_seasonal`)."""
        return self.place is not None and is_seasonal(self.place.koppen)

    @property
    def city_info(self) -> City:
        return self.place if self.place is not None else CITY_BY_KEY[self.city]

    @property
    def style_info(self) -> CityStyle:
        return self.style if self.style is not None else STYLES[self.city]

    def target_buildings(self) -> list[int]:
        return sorted({t.building for t in self.targets.values()})

    def latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Latitude/longitude (degrees) of a point in this region's local frame."""
        return latlon_at(self.lat0, self.lon0, east_m, north_m)
