"""Region-dependent building styles and the per-building plan (:class:`Genome`).

A city style is a mix of building families (an Amsterdam canal house, a Chicago brick walk-up, a
Singapore shophouse, ...), each with its own palettes, materials, storeys, roof lines, window
styles, balconies and ground floors, plus the look of the street (width, trees, paving). A
:class:`Genome` fixes every stable property of one building; rendering is a pure function of it, so
every view of a building shows the same facade.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

RGB = tuple[int, int, int]


def hexrgb(code: str) -> RGB:
    """``"#a1b2c3"`` -> ``(161, 178, 195)``."""
    code = code.lstrip("#")
    return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))


def _pal(*codes: str) -> tuple[RGB, ...]:
    return tuple(hexrgb(c) for c in codes)


@dataclass(frozen=True)
class Family:
    """A building family: the distributions one style of building is drawn from.

    Ranges are ``(low, high)``; mappings are relative weights; metres everywhere.
    """

    name: str
    weight: float
    materials: Mapping[str, float]
    walls: tuple[RGB, ...]
    trims: tuple[RGB, ...]
    accents: tuple[RGB, ...]
    roofs: Mapping[str, float]
    roof_colors: tuple[RGB, ...]
    floors: tuple[int, int]
    floor_h: tuple[float, float]
    ground_h: tuple[float, float]
    width: tuple[float, float]
    terrace_prob: float
    gap: tuple[float, float]
    windows: Mapping[str, float]
    window_w: tuple[float, float]
    window_h: tuple[float, float]
    window_spacing: tuple[float, float]
    panes: tuple[tuple[int, int], ...]
    grounds: Mapping[str, float]
    balconies: Mapping[str, float] = field(default_factory=lambda: {"none": 1.0})
    shutter_prob: float = 0.0
    base_prob: float = 0.0
    bases: tuple[RGB, ...] = ()
    lintels: Mapping[str, float] = field(default_factory=lambda: {"none": 0.5, "flat": 0.5})
    string_course_prob: float = 0.3
    pilaster_prob: float = 0.0
    quoin_prob: float = 0.0
    extras: Mapping[str, float] = field(default_factory=dict)
    awning_prob: float = 0.3


@dataclass(frozen=True)
class CityStyle:
    """How a city's buildings and streets look.

    Attributes:
        families: building families of the city.
        street_width: facade-to-facade width of streets, metres.
        sidewalk: sidewalk width, metres.
        tree_density: street trees per 10 m of sidewalk (before the difficulty multiplier).
        tree_kinds: weights of ``deciduous``, ``evergreen``, ``palm``, ``conifer``.
        pole_density: lamp posts and sign poles per 10 m.
        paving, asphalt, kerb: ground colours.
        sign_words: shop-sign vocabulary.
        glass: window glass tints.
    """

    families: tuple[Family, ...]
    street_width: tuple[float, float]
    sidewalk: tuple[float, float]
    tree_density: float
    tree_kinds: Mapping[str, float]
    pole_density: float
    paving: RGB
    asphalt: RGB
    kerb: RGB
    sign_words: tuple[str, ...]
    glass: tuple[RGB, ...] = _pal("#3a4550", "#2f3a42", "#45505a", "#2c3338", "#4a5560")


WHITE_TRIMS = _pal("#f2f0ea", "#ebe6da", "#f5f5f0", "#e0dccf")
DARK_ACCENTS = _pal("#1f3d2b", "#2b2b2b", "#6b1f1f", "#1d3557", "#3a3a3a", "#4a3426")

STYLES: dict[str, CityStyle] = {
    "amsterdam": CityStyle(
        families=(
            Family(
                "canal_house", 0.75,
                materials={"brick": 0.72, "plaster": 0.28},
                walls=_pal("#5b3327", "#6e3b2c", "#4a2c24", "#7d4a36", "#8a5a44", "#3d2b26",
                           "#e8e4da", "#2e3a36", "#c9c5b8", "#6d7b7a"),
                trims=WHITE_TRIMS + _pal("#1e1e1e", "#2f4a3a"),
                accents=DARK_ACCENTS,
                roofs={"gable_step": 0.25, "gable_bell": 0.25, "gable_neck": 0.2, "cornice": 0.2,
                       "gable_spout": 0.1},
                roof_colors=_pal("#3b3535", "#4a3c36"),
                floors=(3, 5), floor_h=(2.9, 3.4), ground_h=(3.0, 3.6), width=(5.5, 9.0),
                terrace_prob=0.95, gap=(0.5, 2.0),
                windows={"rect": 0.85, "segment": 0.15}, window_w=(1.0, 1.35),
                window_h=(1.6, 2.1), window_spacing=(1.8, 2.5), panes=((2, 2), (1, 2), (3, 3)),
                grounds={"residential": 0.6, "shop": 0.4},
                balconies={"none": 0.9, "iron": 0.1},
                lintels={"none": 0.4, "flat": 0.4, "arch_key": 0.2},
                string_course_prob=0.4,
                extras={"hoist_beam": 0.7, "window_boxes": 0.25, "drainpipe": 0.5},
                awning_prob=0.3,
            ),
            Family(
                "modern_infill", 0.25,
                materials={"brick": 0.6, "panel": 0.4},
                walls=_pal("#6e4a3a", "#8a7b6a", "#a39a8c", "#4d4640", "#b8b0a0"),
                trims=_pal("#2b2b2b", "#5a5a5a", "#d0d0cc"),
                accents=_pal("#2b2b2b", "#c2452d", "#31566e"),
                roofs={"flat": 0.7, "parapet": 0.3}, roof_colors=_pal("#3a3a3a"),
                floors=(4, 6), floor_h=(2.8, 3.1), ground_h=(3.2, 4.0), width=(10.0, 20.0),
                terrace_prob=0.9, gap=(0.5, 2.0),
                windows={"ribbon": 0.5, "rect": 0.5}, window_w=(1.4, 2.4), window_h=(1.4, 1.8),
                window_spacing=(2.2, 3.2), panes=((1, 1), (2, 1)),
                grounds={"shop": 0.6, "residential": 0.4},
                balconies={"none": 0.5, "glass": 0.3, "slab": 0.2},
                lintels={"none": 1.0}, string_course_prob=0.1,
                extras={"drainpipe": 0.2},
            ),
        ),
        street_width=(14.0, 22.0), sidewalk=(2.0, 3.0), tree_density=0.8,
        tree_kinds={"deciduous": 1.0}, pole_density=0.3,
        paving=hexrgb("#8d8078"), asphalt=hexrgb("#4a4846"), kerb=hexrgb("#9a968f"),
        sign_words=("CAFE", "BAKKERIJ", "SLAGER", "BLOEMEN", "HOTEL", "APOTHEEK", "FIETSEN",
                    "KAAS", "BRUIN CAFE", "BOEKHANDEL", "GALERIE"),
    ),
    "chicago": CityStyle(
        families=(
            Family(
                "brick_walkup", 0.5,
                materials={"brick": 0.88, "stone": 0.12},
                walls=_pal("#b38b5d", "#8a3b2b", "#6b4432", "#c8a97e", "#4e3128", "#9c5a3c",
                           "#a9a49a"),
                trims=_pal("#d8d2c4", "#2b2b2b", "#c9c2b2", "#5a4a3a"),
                accents=DARK_ACCENTS + _pal("#7a2e2e"),
                roofs={"cornice": 0.6, "flat": 0.2, "parapet": 0.2},
                roof_colors=_pal("#3a3a3a", "#5b5b5b"),
                floors=(3, 4), floor_h=(3.1, 3.5), ground_h=(3.4, 4.2), width=(7.0, 14.0),
                terrace_prob=0.6, gap=(1.0, 4.0),
                windows={"rect": 0.6, "segment": 0.4}, window_w=(0.9, 1.2),
                window_h=(1.6, 2.0), window_spacing=(1.9, 2.6), panes=((1, 2), (1, 1)),
                grounds={"residential": 0.4, "shop": 0.6},
                balconies={"none": 0.85, "iron": 0.15},
                lintels={"flat": 0.6, "none": 0.2, "arch_key": 0.2}, string_course_prob=0.5,
                extras={"fire_escape": 0.35, "drainpipe": 0.4, "blade_sign": 0.3},
                awning_prob=0.4,
            ),
            Family(
                "commercial_loft", 0.3,
                materials={"brick": 0.8, "stone": 0.2},
                walls=_pal("#8a3b2b", "#6b4432", "#7a5a48", "#b38b5d", "#5e3a2c"),
                trims=_pal("#2b2b2b", "#d8d2c4", "#4a4a4a"),
                accents=_pal("#2b2b2b", "#1d3557"),
                roofs={"cornice": 0.5, "flat": 0.3, "parapet": 0.2},
                roof_colors=_pal("#3a3a3a"),
                floors=(5, 9), floor_h=(3.4, 4.0), ground_h=(4.0, 5.0), width=(15.0, 30.0),
                terrace_prob=0.7, gap=(2.0, 6.0),
                windows={"rect": 0.7, "segment": 0.3}, window_w=(1.6, 2.4),
                window_h=(1.8, 2.4), window_spacing=(2.6, 3.4), panes=((3, 1), (2, 2), (2, 1)),
                grounds={"shop": 0.85, "residential": 0.15},
                lintels={"flat": 0.7, "none": 0.3}, string_course_prob=0.5, pilaster_prob=0.3,
                extras={"fire_escape": 0.3, "drainpipe": 0.3, "blade_sign": 0.4},
                awning_prob=0.3,
            ),
            Family(
                "greystone", 0.2,
                materials={"stone": 1.0},
                walls=_pal("#a9a49a", "#8f8a80", "#b7b1a3", "#9c978b"),
                trims=_pal("#d8d2c4", "#2b2b2b"), accents=DARK_ACCENTS,
                roofs={"cornice": 0.5, "parapet": 0.5}, roof_colors=_pal("#3a3a3a"),
                floors=(2, 3), floor_h=(3.2, 3.6), ground_h=(3.2, 3.8), width=(6.5, 9.0),
                terrace_prob=0.4, gap=(1.0, 3.0),
                windows={"rect": 0.5, "arch": 0.5}, window_w=(0.9, 1.2), window_h=(1.7, 2.1),
                window_spacing=(1.7, 2.3), panes=((1, 2),),
                grounds={"residential": 1.0}, lintels={"flat": 0.5, "pediment": 0.5},
                string_course_prob=0.7, base_prob=0.6, bases=_pal("#7d786e", "#8a8478"),
                extras={"drainpipe": 0.2},
            ),
        ),
        street_width=(18.0, 24.0), sidewalk=(3.0, 4.0), tree_density=0.6,
        tree_kinds={"deciduous": 1.0}, pole_density=0.5,
        paving=hexrgb("#a8a49d"), asphalt=hexrgb("#3f3f41"), kerb=hexrgb("#b5b2ab"),
        sign_words=("DELI", "PIZZA", "LIQUORS", "BAR & GRILL", "PHARMACY", "LAUNDROMAT",
                    "TAQUERIA", "DINER", "BARBER", "HARDWARE", "TAVERN", "DRY CLEANERS"),
    ),
    "las_vegas": CityStyle(
        families=(
            Family(
                "stucco_strip", 0.6,
                materials={"stucco": 1.0},
                walls=_pal("#d8c3a0", "#e3d2b4", "#cdb28a", "#e6b99a", "#eeeae0", "#c98d6a",
                           "#d9c9b0", "#bfa98a"),
                trims=_pal("#8a6a4a", "#f2ede2", "#6a5a4a", "#b25b3a", "#3a6e8a"),
                accents=_pal("#b25b3a", "#3a6e8a", "#2b2b2b", "#c9a227", "#7a3a6a"),
                roofs={"flat": 0.5, "parapet": 0.4, "pitched": 0.1},
                roof_colors=_pal("#b5654a", "#9c5a3c"),
                floors=(1, 2), floor_h=(3.2, 4.0), ground_h=(3.6, 4.8), width=(12.0, 30.0),
                terrace_prob=0.2, gap=(4.0, 12.0),
                windows={"rect": 0.8, "square": 0.2}, window_w=(1.4, 2.6),
                window_h=(1.2, 1.6), window_spacing=(3.0, 4.5), panes=((2, 1), (1, 1)),
                grounds={"shop": 0.75, "residential": 0.25},
                lintels={"none": 1.0}, string_course_prob=0.15,
                extras={"ac_units": 0.5, "neon_sign": 0.5},
                awning_prob=0.5,
            ),
            Family(
                "motel", 0.4,
                materials={"stucco": 0.7, "panel": 0.3},
                walls=_pal("#eeeae0", "#e8d7b9", "#c8dcd6", "#f0c9a8", "#d9e3ea"),
                trims=_pal("#3a6e8a", "#b25b3a", "#2b2b2b", "#c9a227"),
                accents=_pal("#3a6e8a", "#b25b3a", "#c9a227", "#2f7a5a"),
                roofs={"flat": 0.6, "pitched": 0.4}, roof_colors=_pal("#b5654a", "#7a6a5a"),
                floors=(2, 2), floor_h=(2.9, 3.2), ground_h=(3.0, 3.3), width=(20.0, 40.0),
                terrace_prob=0.1, gap=(6.0, 14.0),
                windows={"rect": 1.0}, window_w=(1.2, 1.8), window_h=(1.1, 1.4),
                window_spacing=(3.5, 4.2), panes=((2, 1),),
                grounds={"motel": 1.0}, balconies={"walkway": 1.0},
                lintels={"none": 1.0}, string_course_prob=0.0,
                extras={"ac_units": 0.8, "neon_sign": 0.6},
                awning_prob=0.0,
            ),
        ),
        street_width=(24.0, 34.0), sidewalk=(2.5, 4.0), tree_density=0.35,
        tree_kinds={"palm": 0.8, "evergreen": 0.2}, pole_density=0.5,
        paving=hexrgb("#c7bfb2"), asphalt=hexrgb("#57554f"), kerb=hexrgb("#d6d0c4"),
        sign_words=("MOTEL", "CASINO", "WEDDING CHAPEL", "PAWN", "LIQUOR", "BUFFET", "SLOTS",
                    "TACOS", "VACANCY", "CHECK CASHING", "TATTOO", "SMOKE SHOP"),
    ),
    "florence": CityStyle(
        families=(
            Family(
                "palazzo", 1.0,
                materials={"plaster": 0.8, "stone": 0.2},
                walls=_pal("#d9a95b", "#e0b872", "#e8cf8e", "#eadfc4", "#c9835a", "#d9a490",
                           "#b9b79a", "#b59a73", "#8f8d84"),
                trims=_pal("#cfc6b4", "#8f8d84", "#e9e2d0", "#b5a88f"),
                accents=_pal("#3e5a3a", "#4a5e3a", "#5d4631", "#6d6d66", "#405548"),
                roofs={"eaves": 0.85, "cornice": 0.15}, roof_colors=_pal("#a4553a", "#b5654a"),
                floors=(3, 5), floor_h=(3.4, 4.2), ground_h=(3.8, 5.0), width=(9.0, 20.0),
                terrace_prob=0.9, gap=(1.0, 3.0),
                windows={"rect": 0.65, "arch": 0.35}, window_w=(1.0, 1.3), window_h=(1.9, 2.4),
                window_spacing=(2.6, 3.4), panes=((2, 3), (2, 2)),
                grounds={"shop": 0.45, "arcade": 0.1, "residential": 0.45},
                balconies={"none": 0.85, "iron": 0.15}, shutter_prob=0.85,
                base_prob=0.5, bases=_pal("#8f8d84", "#a39882", "#9a8e78"),
                lintels={"flat": 0.5, "pediment": 0.3, "none": 0.2}, string_course_prob=0.6,
                quoin_prob=0.2, extras={"window_boxes": 0.2, "plaque": 0.3, "drainpipe": 0.3},
                awning_prob=0.35,
            ),
        ),
        street_width=(9.0, 14.0), sidewalk=(1.0, 1.6), tree_density=0.05,
        tree_kinds={"evergreen": 0.5, "deciduous": 0.5}, pole_density=0.2,
        paving=hexrgb("#8e8982"), asphalt=hexrgb("#6a655f"), kerb=hexrgb("#a19b92"),
        sign_words=("TRATTORIA", "GELATERIA", "FARMACIA", "PELLETTERIA", "BAR", "ENOTECA",
                    "ALIMENTARI", "OSTERIA", "TABACCHI", "PANIFICIO", "ORAFO"),
    ),
    "singapore": CityStyle(
        families=(
            Family(
                "shophouse", 0.8,
                materials={"plaster": 1.0},
                walls=_pal("#a8d5ba", "#e7b8b8", "#f0d98c", "#a9cbe0", "#f2c6a0", "#c9b6d9",
                           "#f1efe8", "#9fd0c8"),
                trims=_pal("#f5f5f0", "#e8e2d0", "#d9d2c0"),
                accents=_pal("#2f6b4f", "#2b5d8a", "#6b4a2f", "#f5f5f0", "#8a2f2f"),
                roofs={"pitched": 0.7, "cornice": 0.3}, roof_colors=_pal("#b5563a", "#a4553a"),
                floors=(2, 3), floor_h=(3.2, 3.8), ground_h=(3.6, 4.2), width=(5.0, 7.0),
                terrace_prob=1.0, gap=(0.0, 0.5),
                windows={"french": 0.7, "arch": 0.3}, window_w=(0.9, 1.2),
                window_h=(2.0, 2.5), window_spacing=(1.6, 2.2), panes=((2, 3), (2, 2)),
                grounds={"arcade": 0.8, "shop": 0.2}, shutter_prob=0.8,
                lintels={"arch_key": 0.4, "flat": 0.3, "pediment": 0.3},
                string_course_prob=0.8, pilaster_prob=0.6,
                extras={"ac_units": 0.4, "blade_sign": 0.4, "plaque": 0.3},
                awning_prob=0.1,
            ),
            Family(
                "hdb_block", 0.2,
                materials={"panel": 0.6, "plaster": 0.4},
                walls=_pal("#f1efe8", "#e8e2d0", "#dfe7e2", "#efe3cf"),
                trims=_pal("#c2452d", "#2f6b9a", "#e0a030", "#3f8a5a"),
                accents=_pal("#c2452d", "#2f6b9a", "#e0a030", "#3f8a5a"),
                roofs={"flat": 1.0}, roof_colors=_pal("#8a8a8a"),
                floors=(8, 12), floor_h=(2.7, 2.9), ground_h=(3.0, 3.6), width=(20.0, 40.0),
                terrace_prob=0.0, gap=(10.0, 20.0),
                windows={"rect": 1.0}, window_w=(1.2, 1.6), window_h=(1.2, 1.5),
                window_spacing=(2.4, 3.0), panes=((2, 1), (3, 1)),
                grounds={"residential": 0.6, "shop": 0.4},
                balconies={"slab": 0.6, "none": 0.4}, lintels={"none": 1.0},
                string_course_prob=0.5, extras={"ac_units": 0.8},
            ),
        ),
        street_width=(12.0, 18.0), sidewalk=(1.5, 3.0), tree_density=0.8,
        tree_kinds={"evergreen": 0.7, "palm": 0.3}, pole_density=0.4,
        paving=hexrgb("#b3a89a"), asphalt=hexrgb("#3b3b3d"), kerb=hexrgb("#c4bdb0"),
        sign_words=("KOPITIAM", "TRADING CO", "MEDICAL HALL", "HAWKER", "LAKSA", "DIM SUM",
                    "GOLDSMITH", "PROVISION", "TEA HOUSE", "NASI LEMAK", "HARDWARE"),
    ),
    "moscow": CityStyle(
        families=(
            Family(
                "classical", 0.5,
                materials={"plaster": 1.0},
                walls=_pal("#e3c77a", "#d8a39a", "#b8c9a3", "#a9bfd3", "#d9b26a", "#eadfc4",
                           "#c98b7a"),
                trims=_pal("#f2f0ea", "#ebe6da", "#e0dccf"),
                accents=_pal("#4a3426", "#2b2b2b", "#5b3a2a"),
                roofs={"cornice": 0.7, "pitched": 0.3}, roof_colors=_pal("#5b7a5e", "#6c6f72"),
                floors=(4, 6), floor_h=(3.4, 4.2), ground_h=(3.8, 4.6), width=(18.0, 40.0),
                terrace_prob=0.7, gap=(2.0, 8.0),
                windows={"rect": 0.8, "arch": 0.2}, window_w=(1.1, 1.4), window_h=(1.9, 2.4),
                window_spacing=(2.4, 3.2), panes=((2, 3), (1, 2)),
                grounds={"shop": 0.5, "residential": 0.5},
                balconies={"none": 0.8, "iron": 0.2},
                lintels={"pediment": 0.4, "flat": 0.4, "arch_key": 0.2},
                string_course_prob=0.7, pilaster_prob=0.5, quoin_prob=0.2,
                extras={"drainpipe": 0.6}, awning_prob=0.2,
            ),
            Family(
                "panel_block", 0.5,
                materials={"panel": 1.0},
                walls=_pal("#b8b4aa", "#c9c2b0", "#a9a9a3", "#d2cbbd", "#bfc4c2"),
                trims=_pal("#8a8a86", "#c2452d", "#2f6b9a", "#d9d4c8"),
                accents=_pal("#5a5a5a", "#7a4a3a"),
                roofs={"flat": 1.0}, roof_colors=_pal("#5a5a5a"),
                floors=(5, 9), floor_h=(2.7, 2.9), ground_h=(2.8, 3.2), width=(30.0, 60.0),
                terrace_prob=0.0, gap=(12.0, 22.0),
                windows={"rect": 1.0}, window_w=(1.2, 1.5), window_h=(1.4, 1.6),
                window_spacing=(2.6, 3.2), panes=((2, 2), (2, 1), (3, 2)),
                grounds={"residential": 0.7, "shop": 0.3},
                balconies={"glazed": 0.6, "slab": 0.4}, lintels={"none": 1.0},
                string_course_prob=0.0, extras={"drainpipe": 0.3},
            ),
        ),
        street_width=(20.0, 30.0), sidewalk=(3.0, 5.0), tree_density=0.7,
        tree_kinds={"deciduous": 0.85, "conifer": 0.15}, pole_density=0.5,
        paving=hexrgb("#8f8d89"), asphalt=hexrgb("#505052"), kerb=hexrgb("#a5a39e"),
        sign_words=("APTEKA", "PRODUKTY", "KAFE", "BANK", "KNIGI", "OPTIKA", "RESTORAN",
                    "MAGAZIN", "PEKARNYA", "CVETY", "SALON"),
    ),
    "sydney": CityStyle(
        families=(
            Family(
                "victorian_terrace", 0.6,
                materials={"plaster": 0.6, "brick": 0.4},
                walls=_pal("#e8dcc2", "#b5654a", "#d7b98e", "#a8b4b8", "#f2efe6", "#c9a27a",
                           "#8c5a44"),
                trims=_pal("#f2f0ea", "#2b3a2f", "#5a2e2e", "#2b2b2b"),
                accents=_pal("#2b3a2f", "#5a2e2e", "#1d3557", "#2b2b2b", "#6b4a2f"),
                roofs={"parapet": 0.5, "pitched": 0.5}, roof_colors=_pal("#6a6e70", "#8a3a2a"),
                floors=(2, 2), floor_h=(3.2, 3.6), ground_h=(3.3, 3.7), width=(5.0, 7.0),
                terrace_prob=1.0, gap=(0.0, 0.5),
                windows={"rect": 0.7, "french": 0.3}, window_w=(1.0, 1.3),
                window_h=(1.9, 2.3), window_spacing=(1.8, 2.4), panes=((1, 2), (2, 2)),
                grounds={"residential": 0.8, "shop": 0.2},
                balconies={"lace": 0.8, "none": 0.2}, lintels={"flat": 0.6, "none": 0.4},
                string_course_prob=0.3, extras={"drainpipe": 0.3},
                awning_prob=0.2,
            ),
            Family(
                "sandstone_commercial", 0.4,
                materials={"stone": 0.8, "plaster": 0.2},
                walls=_pal("#cfa876", "#d9b98a", "#c49a6c", "#e0c49a"),
                trims=_pal("#e8d8b8", "#8a6a4a"), accents=_pal("#2b3a2f", "#5a2e2e", "#2b2b2b"),
                roofs={"cornice": 0.7, "parapet": 0.3}, roof_colors=_pal("#6a6e70"),
                floors=(3, 5), floor_h=(3.4, 3.9), ground_h=(4.0, 4.6), width=(10.0, 25.0),
                terrace_prob=0.8, gap=(1.0, 4.0),
                windows={"arch": 0.4, "rect": 0.6}, window_w=(1.1, 1.4), window_h=(1.9, 2.4),
                window_spacing=(2.4, 3.0), panes=((2, 2), (1, 2)),
                grounds={"shop": 0.85, "residential": 0.15},
                lintels={"pediment": 0.3, "flat": 0.5, "arch_key": 0.2},
                string_course_prob=0.7, pilaster_prob=0.3,
                extras={"blade_sign": 0.3, "drainpipe": 0.2}, awning_prob=0.7,
            ),
        ),
        street_width=(12.0, 20.0), sidewalk=(2.5, 3.5), tree_density=0.6,
        tree_kinds={"deciduous": 0.5, "evergreen": 0.5}, pole_density=0.5,
        paving=hexrgb("#b7b0a4"), asphalt=hexrgb("#404042"), kerb=hexrgb("#c2bdb2"),
        sign_words=("NEWSAGENCY", "CAFE", "BOTTLE SHOP", "HOTEL", "CHEMIST", "FISH & CHIPS",
                    "THAI", "BAKERY", "PUB", "MILK BAR", "BUTCHER"),
    ),
    "reykjavik": CityStyle(
        families=(
            Family(
                "tin_house", 0.75,
                materials={"corrugated": 0.8, "siding": 0.2},
                walls=_pal("#b23a2e", "#3c6e9e", "#e2c046", "#5d8a5a", "#eeeeea", "#2a2a2a",
                           "#8a9299", "#d9782f"),
                trims=_pal("#f5f5f0", "#ebe6da"), accents=_pal("#2b2b2b", "#b23a2e", "#3c6e9e"),
                roofs={"pitched": 0.9, "flat": 0.1},
                roof_colors=_pal("#8e2e26", "#3f6b4f", "#2b2b2b", "#6a6e70"),
                floors=(1, 3), floor_h=(2.7, 3.0), ground_h=(2.8, 3.2), width=(7.0, 12.0),
                terrace_prob=0.2, gap=(3.0, 8.0),
                windows={"rect": 0.8, "square": 0.2}, window_w=(0.9, 1.3),
                window_h=(1.1, 1.5), window_spacing=(1.8, 2.6), panes=((1, 1), (2, 1), (2, 2)),
                grounds={"residential": 0.85, "shop": 0.15},
                lintels={"none": 1.0}, string_course_prob=0.1,
                extras={"drainpipe": 0.3}, awning_prob=0.1,
            ),
            Family(
                "concrete_modern", 0.25,
                materials={"plaster": 0.6, "panel": 0.4},
                walls=_pal("#eeeeea", "#c9c9c4", "#a8aeb2", "#e0ddd4"),
                trims=_pal("#2b2b2b", "#8a9299"), accents=_pal("#2b2b2b", "#b23a2e"),
                roofs={"flat": 1.0}, roof_colors=_pal("#5a5a5a"),
                floors=(3, 5), floor_h=(2.8, 3.1), ground_h=(3.0, 3.6), width=(12.0, 24.0),
                terrace_prob=0.3, gap=(4.0, 10.0),
                windows={"rect": 0.6, "ribbon": 0.4}, window_w=(1.2, 2.0), window_h=(1.3, 1.6),
                window_spacing=(2.2, 3.0), panes=((1, 1), (2, 1)),
                grounds={"shop": 0.5, "residential": 0.5},
                balconies={"none": 0.6, "glass": 0.4}, lintels={"none": 1.0},
                string_course_prob=0.1,
            ),
        ),
        street_width=(10.0, 16.0), sidewalk=(1.5, 2.5), tree_density=0.15,
        tree_kinds={"deciduous": 0.6, "conifer": 0.4}, pole_density=0.3,
        paving=hexrgb("#9c9c98"), asphalt=hexrgb("#4a4a4c"), kerb=hexrgb("#b0afaa"),
        sign_words=("KAFFI", "BAKARI", "BAR", "APOTEK", "BOKABUD", "GISTIHUS", "PYLSUR",
                    "HONNUN", "FISKUR"),
    ),
    "cape_town": CityStyle(
        families=(
            Family(
                "bo_kaap", 0.55,
                materials={"plaster": 1.0},
                walls=_pal("#e86a92", "#b5d334", "#3fb5b0", "#7d5ba6", "#f2cd3a", "#3f7fd1",
                           "#f08a3c", "#d1433f", "#59c27a"),
                trims=_pal("#f5f5f0", "#ebe6da"), accents=_pal("#f5f5f0", "#2b2b2b", "#6b4a2f"),
                roofs={"parapet_fancy": 0.8, "flat": 0.2}, roof_colors=_pal("#6a6e70"),
                floors=(1, 2), floor_h=(3.0, 3.4), ground_h=(3.2, 3.6), width=(5.0, 8.0),
                terrace_prob=0.9, gap=(0.5, 2.0),
                windows={"rect": 1.0}, window_w=(1.0, 1.3), window_h=(1.5, 1.9),
                window_spacing=(1.8, 2.4), panes=((2, 2), (2, 3)),
                grounds={"residential": 0.85, "shop": 0.15},
                lintels={"none": 0.6, "flat": 0.4}, string_course_prob=0.3,
                extras={"plaque": 0.2}, awning_prob=0.1,
            ),
            Family(
                "victorian_commercial", 0.45,
                materials={"plaster": 0.7, "stone": 0.3},
                walls=_pal("#eae3d2", "#d9d2c0", "#b9b3a6", "#c8d3cf", "#e3cfb0"),
                trims=_pal("#f5f5f0", "#2b3a2f", "#6a4a3a"),
                accents=_pal("#2b3a2f", "#5a2e2e", "#2b2b2b"),
                roofs={"cornice": 0.5, "parapet": 0.5}, roof_colors=_pal("#6a6e70"),
                floors=(2, 4), floor_h=(3.3, 3.8), ground_h=(3.8, 4.4), width=(8.0, 16.0),
                terrace_prob=0.8, gap=(1.0, 3.0),
                windows={"rect": 0.6, "arch": 0.4}, window_w=(1.0, 1.3), window_h=(1.8, 2.3),
                window_spacing=(2.2, 2.8), panes=((1, 2), (2, 2)),
                grounds={"shop": 0.6, "residential": 0.4},
                balconies={"lace": 0.4, "none": 0.6},
                lintels={"flat": 0.5, "pediment": 0.3, "none": 0.2}, string_course_prob=0.6,
                extras={"blade_sign": 0.2}, awning_prob=0.5,
            ),
        ),
        street_width=(10.0, 16.0), sidewalk=(1.2, 2.0), tree_density=0.2,
        tree_kinds={"evergreen": 0.7, "palm": 0.3}, pole_density=0.3,
        paving=hexrgb("#8a8580"), asphalt=hexrgb("#47464a"), kerb=hexrgb("#a09b94"),
        sign_words=("CAFE", "SPAZA", "BUTCHERY", "SAMOOSAS", "TAILOR", "PHARMACY", "BAKERY",
                    "CURIOS", "TAKEAWAY", "GROCER"),
    ),
    "buenos_aires": CityStyle(
        families=(
            Family(
                "parisian", 0.5,
                materials={"stone": 0.5, "plaster": 0.5},
                walls=_pal("#e7dcc5", "#d8ccb2", "#b8b2a6", "#cdbfa5", "#e2d8c8"),
                trims=_pal("#efe8d8", "#cfc5b0", "#2b2b2b"),
                accents=_pal("#2b2b2b", "#4a3426", "#1f3d2b"),
                roofs={"mansard": 0.5, "cornice": 0.5}, roof_colors=_pal("#4f5358", "#3f4348"),
                floors=(5, 8), floor_h=(3.1, 3.5), ground_h=(4.0, 4.8), width=(12.0, 24.0),
                terrace_prob=0.95, gap=(0.5, 2.0),
                windows={"french": 0.8, "arch": 0.2}, window_w=(1.1, 1.4), window_h=(2.2, 2.6),
                window_spacing=(2.3, 2.9), panes=((2, 3),),
                grounds={"shop": 0.6, "residential": 0.4},
                balconies={"iron": 0.9, "none": 0.1}, shutter_prob=0.3,
                lintels={"pediment": 0.4, "flat": 0.4, "arch_key": 0.2},
                string_course_prob=0.8, quoin_prob=0.2, extras={"drainpipe": 0.2},
                awning_prob=0.3,
            ),
            Family(
                "casa_chorizo", 0.5,
                materials={"plaster": 1.0},
                walls=_pal("#d9cbb3", "#c7b8a0", "#e0b9a0", "#b9c4c0", "#e8e0d0", "#d4a86a",
                           "#a7b79a"),
                trims=_pal("#efe8d8", "#cfc5b0"), accents=_pal("#4a3426", "#2b3a2f", "#6b2f2f"),
                roofs={"parapet": 0.8, "flat": 0.2}, roof_colors=_pal("#6a6e70"),
                floors=(1, 2), floor_h=(3.6, 4.2), ground_h=(4.0, 4.6), width=(8.0, 10.0),
                terrace_prob=0.9, gap=(0.5, 2.0),
                windows={"french": 0.7, "rect": 0.3}, window_w=(1.1, 1.4), window_h=(2.3, 2.8),
                window_spacing=(2.4, 3.0), panes=((2, 3), (2, 2)),
                grounds={"residential": 0.8, "shop": 0.2}, shutter_prob=0.7,
                balconies={"none": 0.7, "iron": 0.3}, lintels={"flat": 0.5, "pediment": 0.5},
                string_course_prob=0.5, extras={"plaque": 0.2}, awning_prob=0.2,
            ),
        ),
        street_width=(12.0, 20.0), sidewalk=(2.0, 3.5), tree_density=0.7,
        tree_kinds={"deciduous": 0.8, "evergreen": 0.2}, pole_density=0.4,
        paving=hexrgb("#a59f94"), asphalt=hexrgb("#444346"), kerb=hexrgb("#b5afa4"),
        sign_words=("PARRILLA", "FARMACIA", "KIOSCO", "CONFITERIA", "ALMACEN", "PANADERIA",
                    "PIZZERIA", "LIBRERIA", "FERRETERIA", "CAFE", "BAR NOTABLE"),
    ),
}  # fmt: skip


# ---- the per-building plan --------------------------------------------------------------------


@dataclass(frozen=True)
class Genome:
    """Every stable property of one building (what makes it *that* building).

    Colours are RGB tuples; lengths are metres. ``detail_seed`` drives the small per-window and
    per-sign details (curtains, closed shutters, sign text, stains) so that a near-duplicate copy
    with another seed differs in details only.
    """

    city: str
    family: str
    material: str
    wall: RGB
    trim: RGB
    accent: RGB
    door: RGB
    glass: RGB
    roof: str
    roof_color: RGB
    floors: int
    floor_h: float
    ground_h: float
    window: str
    window_w: float
    window_h: float
    window_spacing: float
    panes: tuple[int, int]
    shutters: bool
    lintel: str
    balcony: str
    balcony_pattern: str
    ground: str
    base: RGB | None
    awning: RGB | None
    awning_stripes: bool
    sign: RGB
    sign_text: RGB
    sign_words: tuple[str, ...]
    string_courses: bool
    pilasters: bool
    quoins: bool
    extras: tuple[str, ...]
    grime: float
    detail_seed: int

    @property
    def wall_height(self) -> float:
        """Height of the wall top (cornice / eaves line) above the ground, metres."""
        return self.ground_h + (self.floors - 1) * self.floor_h + 0.7

    @property
    def roof_height(self) -> float:
        """Extra height of roof, gable or parapet above :attr:`wall_height`, metres."""
        return {
            "gable_step": 3.5, "gable_bell": 3.5, "gable_neck": 3.5, "gable_spout": 3.0,
            "pitched": 2.2, "eaves": 1.0, "mansard": 3.0, "parapet": 0.6,
            "parapet_fancy": 1.2, "cornice": 0.5, "flat": 0.2,
        }.get(self.roof, 0.3)  # fmt: skip

    @property
    def total_height(self) -> float:
        return self.wall_height + self.roof_height


@dataclass(frozen=True)
class Theme:
    """A neighbourhood's look: a preferred family and a narrow palette (the near-duplicate lever)."""

    family: str
    walls: tuple[RGB, ...]
    trim: RGB
    accent: RGB


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _weighted(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    """A key of ``weights`` drawn with probability proportional to its weight."""
    keys = list(weights)
    cum = np.cumsum([weights[k] for k in keys])
    return keys[min(len(keys) - 1, int(np.searchsorted(cum, rng.random() * cum[-1], side="right")))]


def _jitter(rgb: RGB, rng: np.random.Generator, amount: float) -> RGB:
    """Shift a colour by up to ``amount`` (0-255 units) per channel, mostly in brightness."""
    shift = rng.normal(0.0, amount)
    ch = rng.normal(0.0, amount * 0.35, 3)
    return tuple(int(np.clip(c + shift + d, 0, 255)) for c, d in zip(rgb, ch, strict=True))


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def family_by_name(style: CityStyle, name: str) -> Family:
    for f in style.families:
        if f.name == name:
            return f
    raise KeyError(name)


def sample_theme(city: str, rng: np.random.Generator) -> Theme:
    """A neighbourhood theme in ``city``: one family, two or three of its wall colours."""
    style = STYLES[city]
    fam = style.families[
        int(rng.choice(len(style.families), p=_norm([f.weight for f in style.families])))
    ]
    k = min(len(fam.walls), int(rng.integers(2, 4)))
    idx = rng.choice(len(fam.walls), size=k, replace=False)
    return Theme(
        family=fam.name,
        walls=tuple(fam.walls[i] for i in sorted(idx)),
        trim=_choice(rng, fam.trims),
        accent=_choice(rng, fam.accents),
    )


def _norm(w: Sequence[float]) -> np.ndarray:
    a = np.asarray(w, dtype=np.float64)
    return a / a.sum()


def sample_genome(
    city: str,
    rng: np.random.Generator,
    theme: Theme | None = None,
    theme_prob: float = 0.0,
    family: str | None = None,
) -> Genome:
    """Draw a building of ``city``.

    Args:
        city: style key.
        rng: random generator (consumed).
        theme: the neighbourhood theme; used with probability ``theme_prob``.
        theme_prob: probability of taking family and palette from ``theme``.
        family: force a family (e.g. to keep a row of one kind).
    """
    style = STYLES[city]
    use_theme = theme is not None and rng.random() < theme_prob
    if family is not None:
        fam = family_by_name(style, family)
    elif use_theme:
        fam = family_by_name(style, theme.family)
    else:
        fam = style.families[
            int(rng.choice(len(style.families), p=_norm([f.weight for f in style.families])))
        ]
    if use_theme and fam.name == theme.family:
        wall = _jitter(_choice(rng, theme.walls), rng, 6.0)
        trim, accent = theme.trim, theme.accent
    else:
        wall = _jitter(_choice(rng, fam.walls), rng, 10.0)
        trim, accent = _choice(rng, fam.trims), _choice(rng, fam.accents)
    material = _weighted(rng, fam.materials)
    ground = _weighted(rng, fam.grounds)
    has_awning = ground == "shop" and rng.random() < fam.awning_prob
    n_words = 2 if ground in ("shop", "arcade", "motel") else 1
    words = tuple(_choice(rng, style.sign_words) for _ in range(n_words))
    extras = tuple(sorted(k for k, p in fam.extras.items() if rng.random() < p))
    return Genome(
        city=city,
        family=fam.name,
        material=material,
        wall=wall,
        trim=trim,
        accent=accent,
        door=_choice(rng, fam.accents + DARK_ACCENTS),
        glass=_choice(rng, style.glass),
        roof=_weighted(rng, fam.roofs),
        roof_color=_jitter(_choice(rng, fam.roof_colors), rng, 8.0),
        floors=int(rng.integers(fam.floors[0], fam.floors[1] + 1)),
        floor_h=_uniform(rng, fam.floor_h),
        ground_h=_uniform(rng, fam.ground_h),
        window=_weighted(rng, fam.windows),
        window_w=_uniform(rng, fam.window_w),
        window_h=_uniform(rng, fam.window_h),
        window_spacing=_uniform(rng, fam.window_spacing),
        panes=_choice(rng, fam.panes),
        shutters=bool(rng.random() < fam.shutter_prob),
        lintel=_weighted(rng, fam.lintels),
        balcony=_weighted(rng, fam.balconies),
        balcony_pattern=_choice(rng, ("all", "all", "alternate", "first", "random")),
        ground=ground,
        base=_choice(rng, fam.bases) if fam.bases and rng.random() < fam.base_prob else None,
        awning=_jitter(_choice(rng, _AWNINGS), rng, 10.0) if has_awning else None,
        awning_stripes=bool(rng.random() < 0.4),
        sign=_choice(rng, _SIGNS),
        sign_text=(245, 240, 225) if rng.random() < 0.6 else (30, 30, 30),
        sign_words=words,
        string_courses=bool(rng.random() < fam.string_course_prob),
        pilasters=bool(rng.random() < fam.pilaster_prob),
        quoins=bool(rng.random() < fam.quoin_prob),
        extras=extras,
        grime=float(rng.uniform(0.0, 1.0)),
        detail_seed=int(rng.integers(2**31 - 1)),
    )


_AWNINGS = _pal("#8a1f1f", "#1f4a2f", "#1d3557", "#c9a227", "#6b2f4a", "#2b2b2b", "#b25b3a")
_SIGNS = _pal("#1d3557", "#8a1f1f", "#1f4a2f", "#2b2b2b", "#c9a227", "#f2efe6", "#6b2f4a",
              "#b25b3a", "#2f6b9a")  # fmt: skip

#: the traits a near-duplicate copy may change
MUTABLE_TRAITS: tuple[str, ...] = (
    "door", "sign", "wall", "balcony", "shutters", "panes", "extras", "ground", "accent",
    "window_spacing", "lintel",
)  # fmt: skip


def mutate(genome: Genome, rng: np.random.Generator, n_traits: int) -> Genome:
    """A near-duplicate of ``genome``: new small details plus ``n_traits`` changed traits.

    Models a row of houses built from one plan: same family, palette, storeys and window style,
    different door colour, sign, balcony or a slightly different paint.
    """
    style = STYLES[genome.city]
    fam = family_by_name(style, genome.family)
    changes: dict = {"detail_seed": int(rng.integers(2**31 - 1)), "grime": float(rng.random())}
    picks = rng.choice(len(MUTABLE_TRAITS), size=min(n_traits, len(MUTABLE_TRAITS)), replace=False)
    for i in picks:
        trait = MUTABLE_TRAITS[int(i)]
        if trait == "door":
            changes["door"] = _choice(rng, fam.accents + DARK_ACCENTS)
        elif trait == "sign":
            changes["sign"] = _choice(rng, _SIGNS)
            changes["sign_words"] = tuple(_choice(rng, style.sign_words) for _ in genome.sign_words)
        elif trait == "wall":
            changes["wall"] = _jitter(genome.wall, rng, 14.0)
        elif trait == "balcony":
            changes["balcony_pattern"] = _choice(rng, ("all", "alternate", "first", "random"))
        elif trait == "shutters":
            changes["shutters"] = not genome.shutters
        elif trait == "panes":
            changes["panes"] = _choice(rng, fam.panes)
        elif trait == "extras":
            changes["extras"] = tuple(sorted(k for k, p in fam.extras.items() if rng.random() < p))
        elif trait == "ground":
            changes["ground"] = _weighted(rng, fam.grounds)
        elif trait == "accent":
            changes["accent"] = _choice(rng, fam.accents)
        elif trait == "window_spacing":
            changes["window_spacing"] = genome.window_spacing * float(rng.uniform(0.85, 1.15))
        elif trait == "lintel":
            changes["lintel"] = _weighted(rng, fam.lintels)
    return dataclasses.replace(genome, **changes)
