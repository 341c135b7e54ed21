"""The building style of a gazetteer place: a regional base style, perturbed per region, cluster
and place, with street vegetation from the climate.

A place's style starts from the hand-made city style of its continent and climate
(:func:`sbe.synth.places.base_style_of`, ``styles.toml``). Three nested perturbations follow, each
smaller than the one before: one per region (200-750 km), one per cluster (10-200 km) and one per
place. Each moves the palettes (a common colour shift), the mix of building families, materials
and roof lines, the storeys, the window proportions and the street width. Places of one cluster
share the first two, so neighbouring towns look alike but not identical; regions differ more.
Trees follow the climate (palms and evergreens in the tropics, deciduous trees and conifers where
winters are cold), so the season shows where the climate has one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from sbe.synth.places import Place
from sbe.synth.styles import RGB, STYLES, CityStyle

#: (spread of the colour shift in 0-255 units, spread of log-weights, storey shift) per level
_LEVELS = {"region": (16.0, 0.55, 0.8), "cluster": (9.0, 0.3, 0.4), "place": (7.0, 0.3, 0.3)}


def tree_kinds_of(koppen: str, lat: float) -> tuple[dict[str, float], float]:
    """Street-tree species weights and density (trees per 10 m) of a climate."""
    g = koppen[0]
    if g == "A":
        return {"evergreen": 0.7, "palm": 0.3}, 0.7
    if koppen in ("BSk", "BWk"):
        return {"deciduous": 0.6, "evergreen": 0.2, "conifer": 0.2}, 0.35
    if g == "B":
        return {"palm": 0.6, "evergreen": 0.4}, 0.3
    # dense, mostly deciduous street trees where they show the season (leaves, colour, bare
    # twigs, blossom)
    if koppen.startswith("Cs"):
        return {"evergreen": 0.3, "deciduous": 0.65, "palm": 0.05}, 1.2
    if g == "C" and abs(lat) < 30.0:
        return {"deciduous": 0.7, "evergreen": 0.25, "palm": 0.05}, 1.2
    if g == "C":
        return {"deciduous": 0.92, "conifer": 0.08}, 1.7
    if g == "D":
        return {"deciduous": 0.85, "conifer": 0.15}, 1.7
    return {"conifer": 0.6, "deciduous": 0.4}, 0.3


def _shift(colours: tuple[RGB, ...], offset: np.ndarray) -> tuple[RGB, ...]:
    out: list[RGB] = []
    for rgb in colours:
        r, g, b = (int(np.clip(round(c + o), 0, 255)) for c, o in zip(rgb, offset, strict=True))
        out.append((r, g, b))
    return tuple(out)


def _reweight(weights: Mapping[str, float], noise: np.ndarray) -> dict[str, float]:
    """Weights times exp(noise), in the same key order (the draws depend on it)."""
    return {k: float(w * np.exp(n)) for (k, w), n in zip(weights.items(), noise, strict=True)}


@dataclasses.dataclass(frozen=True)
class _Delta:
    colour: np.ndarray  # (3,) RGB offset
    family: np.ndarray  # log-weight noise per family (up to 8)
    mix: np.ndarray  # log-weight noise for material / roof / window tables (up to 8 each)
    storeys: float
    scale: np.ndarray  # (3,) log-scales of window width, window height, street width


def _delta(rng: np.random.Generator, level: str) -> _Delta:
    c, w, s = _LEVELS[level]
    return _Delta(
        colour=rng.normal(0.0, c) + rng.normal(0.0, 0.6 * c, 3),
        family=rng.normal(0.0, w, 8),
        mix=rng.normal(0.0, w, (3, 8)),
        storeys=float(rng.normal(0.0, s)) if s > 0 else 0.0,
        scale=rng.normal(0.0, (0.05, 0.05, 0.08)) * (c / 16.0),
    )


def place_style(place: Place, seed: int) -> CityStyle:
    """The :class:`CityStyle` of ``place`` in the world of ``seed`` (pure function of both)."""
    base = STYLES[place.base_style]
    deltas = [
        _delta(np.random.default_rng([seed, 5101, place.region]), "region"),
        _delta(np.random.default_rng([seed, 5102, place.cluster]), "cluster"),
        _delta(np.random.default_rng([seed, 5103, place.geonameid]), "place"),
    ]
    colour = np.sum([d.colour for d in deltas], axis=0)
    fam_noise = np.sum([d.family for d in deltas], axis=0)
    mix = np.sum([d.mix for d in deltas], axis=0)
    storeys = float(sum(d.storeys for d in deltas))
    scale = np.exp(np.sum([d.scale for d in deltas], axis=0))
    families = []
    for i, fam in enumerate(base.families):
        lo = max(1, fam.floors[0] + round(storeys))
        hi = max(lo, fam.floors[1] + round(storeys))
        families.append(
            dataclasses.replace(
                fam,
                weight=float(fam.weight * np.exp(fam_noise[i % 8])),
                walls=_shift(fam.walls, colour),
                trims=_shift(fam.trims, 0.5 * colour),
                roof_colors=_shift(fam.roof_colors, 0.5 * colour),
                materials=_reweight(fam.materials, mix[0, : len(fam.materials)]),
                roofs=_reweight(fam.roofs, mix[1, : len(fam.roofs)]),
                windows=_reweight(fam.windows, mix[2, : len(fam.windows)]),
                floors=(lo, hi),
                window_w=(fam.window_w[0] * scale[0], fam.window_w[1] * scale[0]),
                window_h=(fam.window_h[0] * scale[1], fam.window_h[1] * scale[1]),
            )
        )
    kinds, density = tree_kinds_of(place.koppen, place.lat)
    return dataclasses.replace(
        base,
        families=tuple(families),
        street_width=(base.street_width[0] * scale[2], base.street_width[1] * scale[2]),
        tree_kinds=kinds,
        tree_density=float(density * np.exp(0.5 * fam_noise[7] / 0.7)),
        paving=_shift((base.paving,), 0.4 * colour)[0],
    )


def family_weights(style: CityStyle) -> dict[str, float]:
    """Family name -> weight (for tests and summaries)."""
    return {f.name: f.weight for f in style.families}
