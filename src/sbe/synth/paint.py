"""Drawing a facade in metres: colour helpers, the facade texture record, the painter and its context.

Facade coordinates: ``u`` metres to the right from the facade's left end, ``v`` metres up from the
ground; the painter maps them to pixels at ``ppm`` pixels per metre (see :mod:`sbe.synth.facade`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sbe.synth.genome import Genome
from sbe.synth.styles import RGB

SNOW: RGB = (236, 240, 247)


def shade(rgb: Sequence[int], f: float, alpha: int | None = None) -> tuple[int, ...]:
    """``rgb`` scaled by ``f`` (clipped), optionally with an alpha channel."""
    c = tuple(int(max(0, min(255, round(v * f)))) for v in rgb[:3])
    return (*c, alpha) if alpha is not None else c


def mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    """Linear blend ``(1 - t) * a + t * b``."""
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a[:3], b[:3], strict=True))
    return (r, g, bl)


@functools.lru_cache(maxsize=64)
def font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size_px`` (no system fonts needed)."""
    return ImageFont.load_default(size=max(6, int(size_px)))


@dataclass
class FacadeTexture:
    """A rendered facade.

    Attributes:
        image: RGBA, (round(width_m * ppm), round(height_m * ppm)) pixels; alpha 0 = sky.
        ppm: pixels per metre.
        width_m: facade width, metres.
        height_m: texture height (top of roof / gable), metres.
        ledges: pixel boxes (x0, y0, x1, y1) of horizontal surfaces where snow settles.
        roof_polys: pixel polygons of roof surfaces visible from the street (snow-covered in winter).
    """

    image: Image.Image
    ppm: float
    width_m: float
    height_m: float
    ledges: list[tuple[int, int, int, int]] = field(default_factory=list)
    roof_polys: list[list[tuple[float, float]]] = field(default_factory=list)


class Painter:
    """Metre-space drawing on a pixel image: u to the right, v up from the ground."""

    def __init__(self, img: Image.Image, ppm: float, height_m: float) -> None:
        self.img = img
        self.d = ImageDraw.Draw(img, "RGBA")
        self.ppm = ppm
        self.h_px = img.size[1]
        self.height_m = height_m
        self.ledges: list[tuple[int, int, int, int]] = []
        self.roof_polys: list[list[tuple[float, float]]] = []

    def x(self, u: float) -> float:
        return u * self.ppm

    def y(self, v: float) -> float:
        return self.h_px - v * self.ppm

    def px(self, m: float) -> int:
        """A length in metres as whole pixels, at least 1."""
        return max(1, round(m * self.ppm))

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        x0, x1 = sorted((self.x(u0), self.x(u1)))
        y0, y1 = sorted((self.y(v0), self.y(v1)))
        return (x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))

    def rect(self, u0: float, v0: float, u1: float, v1: float, fill, outline=None, width=1):
        self.d.rectangle(self.box(u0, v0, u1, v1), fill=fill, outline=outline, width=width)

    def poly(self, pts: Sequence[tuple[float, float]], fill, outline=None, width=1):
        p = [(self.x(u), self.y(v)) for u, v in pts]
        self.d.polygon(p, fill=fill, outline=outline, width=width)

    def line(self, pts: Sequence[tuple[float, float]], fill, width_m: float = 0.05):
        p = [(self.x(u), self.y(v)) for u, v in pts]
        self.d.line(p, fill=fill, width=self.px(width_m))

    def ellipse(self, u0: float, v0: float, u1: float, v1: float, fill, outline=None):
        self.d.ellipse(self.box(u0, v0, u1, v1), fill=fill, outline=outline)

    def chord_top(self, u0: float, v0: float, u1: float, v1: float, fill):
        """The upper half of the ellipse inscribed in the box (an arch head)."""
        self.d.chord(self.box(u0, v0, u1, v1), 180, 360, fill=fill)

    def roof_poly(self, pts: Sequence[tuple[float, float]]) -> None:
        """Remember a roof surface (metre polygon) for the snow variant."""
        self.roof_polys.append([(self.x(u), self.y(v)) for u, v in pts])

    def vbars(self, us: Iterable[float], bar_w: float, v0: float, v1: float, fill) -> None:
        """Vertical bars ``bar_w`` wide from ``v0`` to ``v1``, their left edges at ``us``."""
        for u in us:
            self.rect(float(u), v0, float(u) + bar_w, v1, fill=fill)

    def hbars(self, vs: Iterable[float], bar_h: float, u0: float, u1: float, fill) -> None:
        """Horizontal bars ``bar_h`` high from ``u0`` to ``u1``, their bottom edges at ``vs``."""
        for v in vs:
            self.rect(u0, float(v), u1, float(v) + bar_h, fill=fill)

    def rails(self, u0: float, u1: float, step: float, bar_w: float, v0: float, v1: float, fill):
        """Railing balusters every ``step`` metres from ``u0`` while left of ``u1``."""
        u = u0
        while u < u1:
            self.rect(u, v0, u + bar_w, v1, fill=fill)
            u += step

    def ledge(self, u0: float, u1: float, v: float):
        """Remember a horizontal surface at height ``v`` (metres) for the snow variant."""
        x0, x1 = sorted((self.x(u0), self.x(u1)))
        y = self.y(v)
        t = max(1, round(0.07 * self.ppm))
        self.ledges.append((int(x0), int(y - t), int(x1), int(y)))

    def text(self, u: float, v: float, s: str, size_m: float, fill, max_w_m: float):
        """Centred text at (u, v), shrunk to fit ``max_w_m``."""
        size = max(6, round(size_m * self.ppm))
        if size < 7:
            # too small to be legible: a row of glyph-like dashes keeps the texture cue
            w = min(max_w_m, 0.55 * size_m * len(s))
            self.rect(
                u - w / 2,
                v - size_m * 0.25,
                u + w / 2,
                v + size_m * 0.2,
                fill=shade(fill, 1.0, 170),
            )
            return
        f = font(size)
        width = f.getlength(s)
        if width > max_w_m * self.ppm and width > 0:
            size = max(6, int(size * max_w_m * self.ppm / width))
            f = font(size)
        self.d.text((self.x(u), self.y(v)), s, fill=fill, font=f, anchor="mm")


def window_columns(width: float, spacing: float, win_w: float) -> tuple[np.ndarray, float]:
    """Window column centres (metres from the left edge) and the window width that fits."""
    margin = max(0.55, 0.3 * spacing)
    usable = width - 2 * margin
    n = max(1, int(usable // spacing) + 1) if usable > 0 else 1
    step = min(spacing, usable / (n - 1)) if n > 1 else 0.0
    xs = width / 2 + (np.arange(n) - (n - 1) / 2) * step
    ww = min(win_w, (step - 0.35) if n > 1 else width - 0.8)
    return xs, max(0.5, ww)


@dataclass
class FacadeCtx:
    g: Genome
    p: Painter
    rng: np.random.Generator
    width: float
    side: bool
