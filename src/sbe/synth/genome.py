"""The per-building plan (:class:`Genome`): every stable property of one building.

A genome is drawn from a family of the city's style (:mod:`sbe.synth.styles`); rendering is a
pure function of it, so every view of a building shows the same facade. Near-duplicates
(:func:`mutate`) change a few traits of a genome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sbe.synth.styles import DARK_ACCENTS, RGB, STYLES, CityStyle, family_by_name, palette


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
    r, g, b = (int(np.clip(c + shift + d, 0, 255)) for c, d in zip(rgb, ch, strict=True))
    return (r, g, b)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def sample_theme(city: str, rng: np.random.Generator, style: CityStyle | None = None) -> Theme:
    """A neighbourhood theme in ``city``: one family, two or three of its wall colours.

    ``style`` overrides ``STYLES[city]`` (places of the gazetteer world carry their own).
    """
    style = STYLES[city] if style is None else style
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
    style: CityStyle | None = None,
) -> Genome:
    """Draw a building of ``city``.

    Args:
        city: style key.
        rng: random generator (consumed).
        theme: the neighbourhood theme; used with probability ``theme_prob``.
        theme_prob: probability of taking family and palette from ``theme``.
        family: force a family (e.g. to keep a row of one kind).
        style: overrides ``STYLES[city]`` (places of the gazetteer world carry their own).
    """
    style = STYLES[city] if style is None else style
    # the theme in use (None when not drawn); one draw whether or not a family is forced
    used = theme if theme is not None and rng.random() < theme_prob else None
    if family is not None:
        fam = family_by_name(style, family)
    elif used is not None:
        fam = family_by_name(style, used.family)
    else:
        fam = style.families[
            int(rng.choice(len(style.families), p=_norm([f.weight for f in style.families])))
        ]
    if used is not None and fam.name == used.family:
        wall = _jitter(_choice(rng, used.walls), rng, 6.0)
        trim, accent = used.trim, used.accent
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


_AWNINGS = palette("#8a1f1f", "#1f4a2f", "#1d3557", "#c9a227", "#6b2f4a", "#2b2b2b", "#b25b3a")
_SIGNS = palette("#1d3557", "#8a1f1f", "#1f4a2f", "#2b2b2b", "#c9a227", "#f2efe6", "#6b2f4a",
              "#b25b3a", "#2f6b9a")  # fmt: skip

#: the traits a near-duplicate copy may change
MUTABLE_TRAITS: tuple[str, ...] = (
    "door", "sign", "wall", "balcony", "shutters", "panes", "extras", "ground", "accent",
    "window_spacing", "lintel",
)  # fmt: skip


def mutate(
    genome: Genome, rng: np.random.Generator, n_traits: int, style: CityStyle | None = None
) -> Genome:
    """A near-duplicate of ``genome``: new small details plus ``n_traits`` changed traits.

    Models a row of houses built from one plan: same family, palette, storeys and window style,
    different door colour, sign, balcony or a slightly different paint.
    """
    style = STYLES[genome.city] if style is None else style
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
