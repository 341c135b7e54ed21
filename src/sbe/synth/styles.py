"""Region-dependent building styles: the catalogue of ``styles.toml`` as dataclasses.

A city style is a mix of building families (an Amsterdam canal house, a Chicago brick walk-up, a
Singapore shophouse, ...), each with its own palettes, materials, storeys, roof lines, window
styles, balconies and ground floors, plus the look of the street (width, trees, paving). The
per-building draw from a family is :mod:`sbe.synth.genome`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RGB = tuple[int, int, int]

#: the style catalogue: palettes and, per city, the street look and the building families
STYLES_FILE = Path(__file__).with_name("styles.toml")


def hexrgb(code: str) -> RGB:
    """``"#a1b2c3"`` -> ``(161, 178, 195)``."""
    code = code.lstrip("#")
    return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))


def palette(*codes: str) -> tuple[RGB, ...]:
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
    glass: tuple[RGB, ...] = palette("#3a4550", "#2f3a42", "#45505a", "#2c3338", "#4a5560")


def _colours(codes: Sequence[str], palettes: Mapping[str, tuple[RGB, ...]]) -> tuple[RGB, ...]:
    """Hex codes to RGB; an entry ``"$name"`` stands for the whole shared palette ``name``."""
    out: list[RGB] = []
    for code in codes:
        out.extend(palettes[code[1:]] if code.startswith("$") else (hexrgb(code),))
    return tuple(out)


#: Family fields that are colour lists, ``(low, high)`` ranges, or lists of pairs in the TOML
_COLOUR_LISTS = ("walls", "trims", "accents", "roof_colors", "bases", "glass")
_PAIRS = ("floors", "floor_h", "ground_h", "width", "gap", "window_w", "window_h",
          "window_spacing", "street_width", "sidewalk")  # fmt: skip


def _fields(raw: Mapping[str, Any], palettes: Mapping[str, tuple[RGB, ...]]) -> dict[str, Any]:
    """TOML values as the dataclass fields want them (tuples, RGB colours)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _COLOUR_LISTS:
            value = _colours(value, palettes)
        elif key in ("paving", "asphalt", "kerb"):
            value = hexrgb(value)
        elif key in _PAIRS:
            value = (value[0], value[1])
        elif key == "panes":
            value = tuple((a, b) for a, b in value)
        elif key == "sign_words":
            value = tuple(value)
        out[key] = value
    return out


def load_styles(
    path: Path = STYLES_FILE,
) -> tuple[dict[str, CityStyle], dict[str, tuple[RGB, ...]]]:
    """The city styles of a styles TOML file (see ``styles.toml``) and its shared palettes.

    Returns:
        ``(styles by city key, palettes by name)``; weight tables keep the file's order, which
        the draws depend on.
    """
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    palettes = {name: _colours(codes, {}) for name, codes in data["palettes"].items()}
    styles = {}
    for city, raw in data["cities"].items():
        families = tuple(Family(**_fields(f, palettes)) for f in raw["families"])
        rest = {k: v for k, v in raw.items() if k != "families"}
        styles[city] = CityStyle(families=families, **_fields(rest, palettes))
    return styles, palettes


STYLES, _PALETTES = load_styles()
WHITE_TRIMS = _PALETTES["white_trims"]
DARK_ACCENTS = _PALETTES["dark_accents"]


def family_by_name(style: CityStyle, name: str) -> Family:
    for f in style.families:
        if f.name == name:
            return f
    raise KeyError(name)
