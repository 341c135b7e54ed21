"""Facade textures: one building's front (or side) wall drawn flat, in metres, once per building.

The texture is an RGBA image at ``ppm`` pixels per metre whose bottom edge is the ground (v = 0)
and whose left edge is the facade's left end (u = 0) as seen from the street. Transparent pixels are
sky (above roof lines and around gables). Views warp this texture with a perspective transform, so
everything that identifies the building (layout, window grid, colours, materials, signs, details)
lives here, while light, weather, season and occlusion are added per view.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sbe.synth.genome import Genome
from sbe.synth.styles import RGB
from sbe.synth.textures import grime_field, material_field

SNOW: RGB = (236, 240, 247)


def shade(rgb: Sequence[int], f: float, alpha: int | None = None) -> tuple[int, ...]:
    """``rgb`` scaled by ``f`` (clipped), optionally with an alpha channel."""
    c = tuple(int(max(0, min(255, round(v * f)))) for v in rgb[:3])
    return (*c, alpha) if alpha is not None else c


def mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    """Linear blend ``(1 - t) * a + t * b``."""
    return tuple(round(x + (y - x) * t) for x, y in zip(a[:3], b[:3], strict=True))


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


class _Painter:
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


def _columns(width: float, spacing: float, win_w: float) -> tuple[np.ndarray, float]:
    """Window column centres (metres from the left edge) and the window width that fits."""
    margin = max(0.55, 0.3 * spacing)
    usable = width - 2 * margin
    n = max(1, int(usable // spacing) + 1) if usable > 0 else 1
    step = min(spacing, usable / (n - 1)) if n > 1 else 0.0
    xs = width / 2 + (np.arange(n) - (n - 1) / 2) * step
    ww = min(win_w, (step - 0.35) if n > 1 else width - 0.8)
    return xs, max(0.5, ww)


@dataclass
class _Ctx:
    g: Genome
    p: _Painter
    rng: np.random.Generator
    width: float
    side: bool


def _glass(ctx: _Ctx, u0: float, v0: float, u1: float, v1: float, arch: str) -> None:
    """Window glass with a sky reflection, curtains or blinds (varies per window, fixed per building)."""
    g, p, rng = ctx.g, ctx.p, ctx.rng
    glass = shade(g.glass, float(rng.uniform(0.8, 1.15)))
    _shape(p, u0, v0, u1, v1, arch, glass)
    w, h = u1 - u0, v1 - v0
    # reflection: a lighter diagonal band (the sky seen in the pane)
    k = float(rng.uniform(0.15, 0.6))
    p.poly(
        [
            (u0, v0 + h * k),
            (u0, v0 + h * (k + 0.35)),
            (u1, v0 + h * (k + 0.6)),
            (u1, v0 + h * (k + 0.25)),
        ],
        fill=(200, 215, 230, int(rng.integers(25, 70))),
    )
    kind = rng.choice(4, p=[0.35, 0.3, 0.2, 0.15])
    cur = mix((238, 232, 215), (200, 190, 170), float(rng.random()))
    top = v1 - (w / 2 if arch == "arch" else 0.0)
    if kind == 1:  # curtains on both sides
        cw = w * float(rng.uniform(0.15, 0.35))
        p.rect(u0, v0, u0 + cw, top, fill=(*cur, 215))
        p.rect(u1 - cw, v0, u1, top, fill=(*cur, 215))
    elif kind == 2:  # blind pulled part-way down
        p.rect(u0, top - h * float(rng.uniform(0.2, 0.7)), u1, top, fill=(*cur, 225))
    elif kind == 3:  # net curtain on the lower half
        p.rect(u0, v0, u1, v0 + h * 0.45, fill=(235, 235, 230, 150))


def _shape(p: _Painter, u0: float, v0: float, u1: float, v1: float, arch: str, fill) -> None:
    """A window-shaped area: rectangle, round arch or segmental arch head."""
    w = u1 - u0
    if arch == "arch":
        r = w / 2
        p.rect(u0, v0, u1, v1 - r, fill=fill)
        p.chord_top(u0, v1 - 2 * r, u1, v1, fill=fill)
    elif arch == "segment":
        rise = min(0.3, w * 0.25)
        p.rect(u0, v0, u1, v1 - rise, fill=fill)
        p.chord_top(u0 - w * 0.15, v1 - 2 * rise, u1 + w * 0.15, v1, fill=fill)
    else:
        p.rect(u0, v0, u1, v1, fill=fill)


def _window(ctx: _Ctx, uc: float, v_sill: float, w: float, h: float, ground: bool = False) -> None:
    """One window with reveal, frame, glass, glazing bars, sill, lintel and shutters."""
    g, p, rng = ctx.g, ctx.p, ctx.rng
    style = g.window if g.window in ("arch", "segment") else "rect"
    u0, u1, v0, v1 = uc - w / 2, uc + w / 2, v_sill, v_sill + h
    # reveal: the wall's depth in shadow around the opening
    _shape(p, u0 - 0.06, v0 - 0.03, u1 + 0.06, v1 + 0.06, style, shade(g.wall, 0.5))
    frame = g.trim
    t = 0.075
    _shape(p, u0, v0, u1, v1, style, frame)
    closed = g.shutters and rng.random() < 0.3
    _glass(ctx, u0 + t, v0 + t, u1 - t, v1 - t, style)
    cols, rows = g.panes
    if g.window == "ribbon":
        cols = max(1, round(w / 1.2))
    bar = 0.045
    for i in range(1, cols):
        u = u0 + t + (w - 2 * t) * i / cols
        p.rect(u - bar / 2, v0 + t, u + bar / 2, v1 - t, fill=frame)
    straight_top = v1 - t - (w / 2 if style == "arch" else 0.0)
    for j in range(1, rows):
        v = v0 + t + (straight_top - v0 - t) * j / rows
        p.rect(u0 + t, v - bar / 2, u1 - t, v + bar / 2, fill=frame)
    if style == "arch":
        p.rect(u0 + t, straight_top - bar / 2, u1 - t, straight_top + bar / 2, fill=frame)
    # sill (a ledge for snow)
    if ground or g.window != "french":
        p.rect(u0 - 0.09, v0 - 0.1, u1 + 0.09, v0 + 0.01, fill=shade(g.trim, 0.95))
        p.rect(u0 - 0.09, v0 - 0.13, u1 + 0.09, v0 - 0.1, fill=shade(g.wall, 0.6, 160))
        p.ledge(u0 - 0.09, u1 + 0.09, v0 + 0.01)
    # lintel / pediment / keystone
    if g.lintel == "flat":
        p.rect(u0 - 0.12, v1 + 0.04, u1 + 0.12, v1 + 0.24, fill=shade(g.trim, 0.92))
        p.ledge(u0 - 0.12, u1 + 0.12, v1 + 0.24)
    elif g.lintel == "pediment" and not ground:
        p.rect(u0 - 0.15, v1 + 0.05, u1 + 0.15, v1 + 0.15, fill=shade(g.trim, 0.9))
        p.poly(
            [(u0 - 0.2, v1 + 0.15), (u1 + 0.2, v1 + 0.15), (uc, v1 + 0.5)], fill=shade(g.trim, 0.97)
        )
        p.rect(u0 - 0.2, v1 + 0.12, u1 + 0.2, v1 + 0.15, fill=shade(g.trim, 0.6, 200))
        p.ledge(u0 - 0.2, uc, v1 + 0.3)
    elif g.lintel == "arch_key":
        p.poly([(uc - 0.12, v1 - 0.02), (uc + 0.12, v1 - 0.02), (uc + 0.17, v1 + 0.28), (uc - 0.17, v1 + 0.28)],
               fill=shade(g.trim, 0.95))  # fmt: skip
    # shutters, open beside the window or closed over it
    if g.shutters:
        sc = shade(g.accent, float(rng.uniform(0.9, 1.08)))
        slat = shade(sc, 0.7)
        boxes = (
            [(u0 + t * 0.5, uc), (uc, u1 - t * 0.5)]
            if closed
            else [(u0 - w / 2 - 0.02, u0 - 0.02), (u1 + 0.02, u1 + w / 2 + 0.02)]
        )
        top = v1 - (w / 2 if style == "arch" else 0.0)
        for a, b in boxes:
            p.rect(a, v0, b, top, fill=sc)
            n = int((top - v0) / 0.09)
            if p.ppm * 0.09 >= 3:
                for k in range(1, n):
                    vv = v0 + k * 0.09
                    p.rect(a + 0.03, vv - 0.012, b - 0.03, vv + 0.012, fill=slat)
            else:
                p.rect(a + 0.03, v0 + 0.05, b - 0.03, top - 0.05, fill=(*slat, 90))
    if "window_boxes" in g.extras and not ground and rng.random() < 0.45:
        p.rect(u0, v0 - 0.35, u1, v0 - 0.1, fill=(120, 70, 45))
        for _ in range(int(w * 6)):
            fu = u0 + float(rng.random()) * w
            fv = v0 - 0.12 + float(rng.random()) * 0.25
            col = [(200, 40, 60), (230, 120, 160), (245, 240, 235), (60, 120, 50), (70, 140, 60)][
                int(rng.integers(5))
            ]
            p.ellipse(fu - 0.06, fv - 0.06, fu + 0.06, fv + 0.06, fill=col)
    if "ac_units" in g.extras and not ground and rng.random() < 0.35:
        side = 1 if rng.random() < 0.5 else -1
        au = uc + side * (w / 2 + 0.45)
        p.rect(
            au - 0.4, v0 - 0.05, au + 0.4, v0 + 0.5, fill=(205, 205, 200), outline=(150, 150, 145)
        )
        for k in range(4):
            vv = v0 + 0.05 + k * 0.1
            p.rect(au - 0.33, vv, au + 0.33, vv + 0.03, fill=(160, 160, 155))
        p.ledge(au - 0.4, au + 0.4, v0 + 0.5)


def _door(ctx: _Ctx, uc: float, w: float, h: float, arched: bool) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    p.rect(uc - w / 2 - 0.25, -0.05, uc + w / 2 + 0.25, 0.18, fill=(150, 146, 138))  # step
    shape = "arch" if arched else "rect"
    _shape(p, uc - w / 2 - 0.12, 0.15, uc + w / 2 + 0.12, h + 0.12, shape, shade(g.trim, 0.9))
    _shape(p, uc - w / 2, 0.18, uc + w / 2, h, shape, g.door)
    # raised panels
    leaves = 2 if w > 1.4 else 1
    lw = w / leaves
    for i in range(leaves):
        a = uc - w / 2 + i * lw
        p.rect(a + 0.12, 0.4, a + lw - 0.12, 0.4 + (h - 0.6) * 0.4, fill=shade(g.door, 0.8))
        p.rect(
            a + 0.12,
            0.5 + (h - 0.6) * 0.45,
            a + lw - 0.12,
            h - 0.25 - (w / 2 if arched else 0),
            fill=shade(g.door, 0.85),
        )
    p.ellipse(uc + w / 2 - 0.18, 1.0, uc + w / 2 - 0.1, 1.08, fill=(200, 170, 80))
    if "plaque" in g.extras:
        p.rect(
            uc + w / 2 + 0.3,
            1.5,
            uc + w / 2 + 0.65,
            1.75,
            fill=(180, 150, 70) if rng.random() < 0.5 else (40, 40, 40),
        )


def _shopfront(ctx: _Ctx, u0: float, u1: float, word: str) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    gh = g.ground_h
    frame = shade(g.accent, 0.7) if rng.random() < 0.5 else (35, 35, 35)
    sign_top, sign_bot = gh - 0.2, gh - 0.95
    p.rect(u0, sign_bot, u1, sign_top, fill=g.sign)
    p.rect(u0, sign_bot - 0.05, u1, sign_bot, fill=shade(g.sign, 0.6))
    p.ledge(u0, u1, sign_top)
    p.text((u0 + u1) / 2, (sign_top + sign_bot) / 2, word, 0.48, g.sign_text, (u1 - u0) * 0.9)
    glass_top = sign_bot - 0.1
    p.rect(u0, 0.0, u1, glass_top, fill=frame)
    p.rect(u0 + 0.08, 0.5, u1 - 0.08, glass_top - 0.08, fill=shade(g.glass, 0.75))
    # interior displays: stable coloured blobs behind the glass
    for _ in range(int((u1 - u0) * 2.5)):
        a = u0 + 0.15 + float(rng.random()) * (u1 - u0 - 0.5)
        b = 0.55 + float(rng.random()) * 0.9
        col = tuple(int(c) for c in rng.integers(60, 230, 3))
        p.rect(
            a,
            b,
            a + float(rng.uniform(0.1, 0.4)),
            b + float(rng.uniform(0.1, 0.5)),
            fill=(*col, 150),
        )
    p.poly([(u0 + 0.1, 0.6), (u0 + 0.1, 1.3), (u1 - 0.1, glass_top - 0.2), (u1 - 0.1, glass_top - 0.9)],
           fill=(210, 220, 235, 45))  # fmt: skip
    # door inside the shopfront
    dl = u1 - 1.15 if rng.random() < 0.5 else u0 + 0.15
    p.rect(dl, 0.0, dl + 1.0, min(2.3, glass_top - 0.1), fill=frame)
    p.rect(dl + 0.08, 0.08, dl + 0.92, min(2.3, glass_top - 0.1) - 0.08, fill=shade(g.glass, 0.6))
    p.rect(u0, 0.0, u1, 0.5, fill=shade(frame, 1.1))
    if g.awning is not None:
        a_top, a_bot = glass_top - 0.05, glass_top - 0.85
        col2 = (240, 236, 226)
        p.poly(
            [(u0 - 0.05, a_top), (u1 + 0.05, a_top), (u1 + 0.2, a_bot), (u0 - 0.2, a_bot)],
            fill=g.awning,
        )
        if g.awning_stripes:
            n = max(2, int((u1 - u0) / 0.3))
            for k in range(0, n, 2):
                a = u0 + (u1 - u0) * k / n
                b = u0 + (u1 - u0) * (k + 1) / n
                p.poly([(a, a_top), (b, a_top), (b + 0.0, a_bot), (a, a_bot)], fill=col2)
        p.rect(u0 - 0.2, a_bot - 0.18, u1 + 0.2, a_bot, fill=shade(g.awning, 0.85))
        p.rect(u0 - 0.1, a_bot - 0.55, u1 + 0.1, a_bot - 0.18, fill=(0, 0, 0, 60))  # its shadow
        p.roof_polys.append([(p.x(u0 - 0.05), p.y(a_top)), (p.x(u1 + 0.05), p.y(a_top)),
                             (p.x(u1 + 0.2), p.y(a_top - 0.15)), (p.x(u0 - 0.2), p.y(a_top - 0.15))])  # fmt: skip


def _ground_floor(ctx: _Ctx, xs: np.ndarray, ww: float) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    gh, width = g.ground_h, ctx.width
    ground = "residential" if ctx.side and g.ground != "arcade" else g.ground
    if g.base is not None:
        p.rect(0, 0, width, gh - 0.1, fill=g.base)
        n_courses = int(gh / 0.45)
        for k in range(1, n_courses + 1):
            p.rect(
                0,
                k * gh / (n_courses + 1) - 0.02,
                width,
                k * gh / (n_courses + 1) + 0.02,
                fill=shade(g.base, 0.7),
            )
        p.rect(0, gh - 0.15, width, gh - 0.05, fill=shade(g.base, 1.15))
        p.ledge(0, width, gh - 0.05)
    else:
        p.rect(0, 0, width, 0.35, fill=shade(g.wall, 0.7))  # plinth
    if ground == "shop":
        n_units = 1 if width < 9 else (2 if width < 18 else 3)
        bounds = np.linspace(0.3, width - 0.3, n_units + 1)
        for i in range(n_units):
            _shopfront(
                ctx,
                float(bounds[i]) + 0.2,
                float(bounds[i + 1]) - 0.2,
                g.sign_words[i % len(g.sign_words)],
            )
        return
    if ground == "arcade":
        bay = max(2.6, min(4.0, width / max(1, round(width / 3.2))))
        n = max(1, round(width / bay))
        bay = width / n
        inside = shade(g.wall, 0.28)
        p.rect(0, 0, width, gh - 0.35, fill=inside)
        for i in range(n):
            a, b = i * bay + 0.3, (i + 1) * bay - 0.3
            # the back wall of the covered walkway: doors and windows in deep shade
            p.rect(a + 0.4, 0.0, b - 0.4, 2.4, fill=shade(g.door, 0.45))
            p.rect(a + 0.6, 0.2, b - 0.6, 2.1, fill=shade(g.glass, 0.5))
            if rng.random() < 0.6:
                p.rect(a + 0.5, 2.5, b - 0.5, 2.9, fill=shade(g.sign, 0.55))
        spandrel = gh - 0.35
        for i in range(n + 1):
            u = i * bay
            p.rect(u - 0.3, 0, u + 0.3, spandrel, fill=g.wall)
            p.rect(u - 0.36, 0, u + 0.36, 0.3, fill=shade(g.wall, 0.85))
        for i in range(n):
            a, b = i * bay + 0.3, (i + 1) * bay - 0.3
            r = (b - a) / 2
            spring = spandrel - r * 0.8
            # wall above the arch: draw the wall band and cut the arch back out in shadow
            p.rect(a, spring, b, spandrel, fill=g.wall)
            p.chord_top(a, spring - r * 0.6, b, spring + r * 0.6, fill=inside)
        p.rect(0, gh - 0.9, width, gh - 0.1, fill=g.sign)
        p.text(width / 2, gh - 0.5, g.sign_words[0], 0.45, g.sign_text, width * 0.8)
        p.ledge(0, width, gh - 0.1)
        return
    if ground == "motel":
        for i, uc in enumerate(xs):
            if i % 2 == 0:
                _door(ctx, float(uc), 0.95, 2.15, False)
            else:
                _window(ctx, float(uc), 1.0, ww, min(g.window_h, gh - 1.4), ground=True)
        return
    # residential: a door in one column, windows in the others
    n = len(xs)
    door_i = (
        int(rng.integers(n)) if n <= 2 else (n // 2 if rng.random() < 0.5 else int(rng.integers(n)))
    )
    grand = g.family in ("palazzo", "parisian", "classical") and width > 8
    for i, uc in enumerate(xs):
        if i == door_i:
            dw = 1.8 if grand else 1.1
            dh = min(gh - 0.5, 3.2 if grand else 2.3)
            _door(ctx, float(uc), dw, dh, arched=grand or g.window == "arch")
            if not grand and gh - dh > 0.9:
                p.rect(uc - dw / 2, dh + 0.2, uc + dw / 2, dh + 0.6, fill=shade(g.glass, 0.9))
        else:
            h = min(g.window_h, gh - 1.4)
            _window(ctx, float(uc), 1.0, ww, h, ground=True)


def _balcony(ctx: _Ctx, kind: str, u0: float, u1: float, base: float, floor_h: float) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    iron = (28, 28, 30)
    if kind in ("slab", "walkway", "glass"):
        p.rect(
            u0,
            base - 0.08,
            u1,
            base + 0.12,
            fill=shade(g.wall, 0.85) if g.material != "panel" else (195, 195, 190),
        )
        p.rect(u0, base - 0.25, u1, base - 0.08, fill=shade(g.wall, 0.5, 150))
        p.ledge(u0, u1, base + 0.12)
        rail = shade(g.trim, 0.8) if kind != "glass" else (180, 200, 210, 110)
        if kind == "glass":
            p.rect(u0, base + 0.12, u1, base + 1.05, fill=rail)
            p.rect(u0, base + 1.0, u1, base + 1.07, fill=(120, 125, 130))
        else:
            p.rect(u0, base + 0.98, u1, base + 1.05, fill=rail)
            step = 0.14 if p.ppm * 0.14 >= 3 else 0.0
            if step:
                u = u0
                while u < u1:
                    p.rect(u, base + 0.12, u + 0.03, base + 1.0, fill=rail)
                    u += step
            else:
                p.rect(u0, base + 0.12, u1, base + 1.0, fill=(*rail[:3], 120))
    elif kind == "iron":
        p.rect(u0, base - 0.05, u1, base + 0.1, fill=shade(g.trim, 0.85))
        p.rect(u0, base - 0.2, u1, base - 0.05, fill=shade(g.wall, 0.5, 140))
        p.ledge(u0, u1, base + 0.1)
        p.rect(u0, base + 0.95, u1, base + 1.02, fill=iron)
        if p.ppm * 0.11 >= 3:
            u = u0
            while u < u1:
                p.rect(u, base + 0.1, u + 0.025, base + 0.95, fill=iron)
                u += 0.11
            n = max(1, int((u1 - u0) / 0.35))
            for k in range(n):
                c = u0 + (k + 0.5) * (u1 - u0) / n
                p.d.ellipse(
                    p.box(c - 0.12, base + 0.35, c + 0.12, base + 0.65),
                    outline=iron,
                    width=max(1, p.px(0.02)),
                )
        else:
            p.rect(u0, base + 0.1, u1, base + 0.95, fill=(*iron, 130))
    elif kind == "glazed":
        panel = [
            shade(g.wall, 1.08),
            (225, 222, 215),
            (170, 190, 170),
            (150, 90, 70),
            (190, 170, 140),
        ][int(rng.integers(5))]
        p.rect(u0, base - 0.1, u1, base + 1.0, fill=panel)
        p.ledge(u0, u1, base + 1.0)
        if rng.random() < 0.75:
            top = base + floor_h - 0.25
            p.rect(u0, base + 1.0, u1, top, fill=(235, 235, 230))
            n = int(rng.integers(3, 6))
            for k in range(n):
                a = u0 + (u1 - u0) * k / n + 0.05
                b = u0 + (u1 - u0) * (k + 1) / n - 0.05
                p.rect(
                    a, base + 1.05, b, top - 0.05, fill=shade(g.glass, float(rng.uniform(0.8, 1.5)))
                )
            p.ledge(u0, u1, top)
        else:
            p.rect(u0, base + 1.0, u1, base + 1.05, fill=(120, 120, 115))
    elif kind == "lace":
        lace = (245, 245, 240) if rng.random() < 0.5 else (40, 60, 45)
        top = base + floor_h - 0.1
        # verandah: floor, posts, lace frieze and railing, a small roof over it
        p.rect(u0, base - 0.1, u1, base + 0.1, fill=shade(g.trim, 0.8))
        p.rect(u0, top - 0.1, u1, top + 0.35, fill=g.roof_color)
        for k in range(int((u1 - u0) / 0.12)):
            a = u0 + k * 0.12
            p.rect(a, top - 0.1, a + 0.02, top + 0.35, fill=shade(g.roof_color, 0.75))
        p.roof_polys.append(
            [
                (p.x(u0), p.y(top + 0.35)),
                (p.x(u1), p.y(top + 0.35)),
                (p.x(u1), p.y(top + 0.05)),
                (p.x(u0), p.y(top + 0.05)),
            ]
        )
        n_posts = max(2, int((u1 - u0) / 2.5) + 1)
        for k in range(n_posts):
            u = u0 + (u1 - u0) * k / (n_posts - 1)
            p.rect(u - 0.05, base + 0.1, u + 0.05, top - 0.1, fill=lace)
        for v_a, v_b in ((top - 0.5, top - 0.1), (base + 0.1, base + 0.95)):
            p.rect(u0, v_a, u1, v_a + 0.04, fill=lace)
            p.rect(u0, v_b - 0.04, u1, v_b, fill=lace)
            if p.ppm * 0.2 >= 4:
                u = u0
                while u < u1 - 0.2:
                    p.d.ellipse(
                        p.box(u + 0.02, v_a + 0.05, u + 0.2, v_b - 0.05),
                        outline=lace,
                        width=max(1, p.px(0.025)),
                    )
                    u += 0.2
            else:
                p.rect(u0, v_a, u1, v_b, fill=(*lace, 140))


def _upper_floors(ctx: _Ctx, xs: np.ndarray, ww: float) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    width = ctx.width
    for k in range(1, g.floors):
        base = g.ground_h + (k - 1) * g.floor_h
        french = g.window == "french"
        sill_off = 0.12 if french else 0.9
        h = min(g.window_h, g.floor_h - sill_off - 0.35)
        if g.string_courses:
            p.rect(0, base - 0.12, width, base + 0.08, fill=shade(g.trim, 0.93))
            p.rect(0, base - 0.18, width, base - 0.12, fill=shade(g.wall, 0.55, 150))
            p.ledge(0, width, base + 0.08)
        if g.window == "ribbon":
            p.rect(
                0.5,
                base + sill_off - 0.05,
                width - 0.5,
                base + sill_off + h + 0.05,
                fill=shade(g.wall, 0.55),
            )
            _window(ctx, width / 2, base + sill_off, width - 1.0, h)
        else:
            for uc in xs:
                _window(ctx, float(uc), base + sill_off, ww, h)
        has_balc = {
            "all": True,
            "alternate": k % 2 == 1,
            "first": k == 1,
            "random": rng.random() < 0.5,
        }[g.balcony_pattern]
        if g.balcony in ("lace", "walkway"):
            if k == 1:
                _balcony(ctx, g.balcony, 0.0, width, base, g.floor_h)
        elif g.balcony != "none" and has_balc and not ctx.side:
            if g.balcony == "glazed" or g.family == "panel_block":
                cols = [i for i in range(len(xs)) if (i + k * 0) % 3 == 1]
            else:
                cols = list(range(len(xs)))
            for i in cols:
                uc = float(xs[i])
                _balcony(ctx, g.balcony, uc - ww / 2 - 0.35, uc + ww / 2 + 0.35, base, g.floor_h)


def _pilasters_quoins(ctx: _Ctx, xs: np.ndarray, ww: float) -> None:
    g, p = ctx.g, ctx.p
    top = g.wall_height
    if g.pilasters and len(xs) > 1:
        col = shade(g.trim, 0.97)
        for a, b in itertools.pairwise(xs):
            u = float(a + b) / 2
            pw = min(0.45, float(b - a - ww) * 0.6)
            if pw > 0.12:
                p.rect(u - pw / 2, g.ground_h, u + pw / 2, top - 0.5, fill=col)
                p.rect(
                    u - pw / 2 - 0.06,
                    top - 0.75,
                    u + pw / 2 + 0.06,
                    top - 0.5,
                    fill=shade(col, 0.95),
                )
    if g.quoins:
        col = shade(g.trim, 0.9)
        v, k = 0.0, 0
        while v < top - 0.3:
            qw = 0.6 if k % 2 == 0 else 0.35
            for u0, u1 in ((0.0, qw), (ctx.width - qw, ctx.width)):
                p.rect(u0, v + 0.02, u1, v + 0.3, fill=col)
            v += 0.32
            k += 1


def _extras(ctx: _Ctx, xs: np.ndarray, ww: float) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    width, top = ctx.width, g.wall_height
    dark = (32, 32, 34)
    if "drainpipe" in g.extras:
        u = 0.18 if rng.random() < 0.5 else width - 0.18
        pipe = (70, 72, 74) if rng.random() < 0.6 else shade(g.wall, 0.7)
        p.rect(u - 0.05, 0.0, u + 0.05, top, fill=pipe)
        for k in range(int(top / 1.8)):
            p.rect(u - 0.08, 1.0 + k * 1.8, u + 0.08, 1.06 + k * 1.8, fill=shade(pipe, 0.8))
    if "fire_escape" in g.extras and g.floors >= 3 and len(xs) >= 2 and not ctx.side:
        i = int(rng.integers(len(xs) - 1))
        a, b = float(xs[i]) - ww / 2 - 0.3, float(xs[i + 1]) + ww / 2 + 0.3
        col = dark if rng.random() < 0.7 else (62, 48, 40)
        for k in range(1, g.floors):
            base = g.ground_h + (k - 1) * g.floor_h
            p.rect(a, base - 0.05, b, base + 0.05, fill=col)
            p.rect(a, base + 0.9, b, base + 0.95, fill=col)
            for u in np.arange(a, b, 0.3):
                p.rect(float(u), base, float(u) + 0.025, base + 0.9, fill=col)
            if k < g.floors - 1:
                nb = base + g.floor_h
                p.line([(a + 0.2, base + 0.05), (b - 0.2, nb)], fill=col, width_m=0.06)
                p.line([(a + 0.5, base + 0.05), (b + 0.1, nb)], fill=col, width_m=0.03)
        p.line([(b - 0.4, g.ground_h), (b - 0.4, g.ground_h - 1.4)], fill=col, width_m=0.05)
    if "blade_sign" in g.extras and not ctx.side:
        u = 0.5 if rng.random() < 0.5 else width - 0.5
        v0 = g.ground_h + 0.3
        sc = g.sign if rng.random() < 0.5 else shade(g.accent, 1.2)
        p.rect(u - 0.3, v0, u + 0.3, v0 + 1.6, fill=sc, outline=shade(sc, 0.6))
        word = g.sign_words[-1][:4]
        for j, ch in enumerate(word):
            p.text(u, v0 + 1.4 - j * 0.36, ch, 0.3, g.sign_text, 0.5)
    if "neon_sign" in g.extras and not ctx.side:
        neon = [(255, 60, 150), (60, 230, 255), (255, 220, 60), (120, 255, 120)][
            int(rng.integers(4))
        ]
        sw = min(width * 0.7, 9.0)
        v0 = g.ground_h + 0.15 if g.floors > 1 else top - 1.3
        uc = width / 2 + float(rng.uniform(-0.15, 0.15)) * width
        p.rect(
            uc - sw / 2,
            v0,
            uc + sw / 2,
            v0 + 1.1,
            fill=(25, 20, 30),
            outline=neon,
            width=p.px(0.06),
        )
        p.text(uc, v0 + 0.55, g.sign_words[-1], 0.7, neon, sw * 0.9)
    if "hoist_beam" in g.extras:
        v = top + min(2.6, g.roof_height - 0.6) if g.roof.startswith("gable") else top - 0.3
        p.rect(width / 2 - 0.1, v - 0.15, width / 2 + 0.1, v + 0.15, fill=(40, 30, 25))
        p.line([(width / 2, v - 0.15), (width / 2, v - 0.7)], fill=(30, 30, 30), width_m=0.025)


def _gable_outline(kind: str, width: float, top: float, h: float) -> list[tuple[float, float]]:
    """Polygon (metres) of a Dutch gable above the wall top, left to right."""
    w = width
    if kind == "gable_step":
        n = 3
        tw = max(1.2, w * 0.3)
        pts = [(0.0, top)]
        for i in range(n):
            u = (w - tw) / 2 * i / n
            pts += [(u, top + h * i / (n + 1)), (u, top + h * (i + 1) / (n + 1))]
            pts += [((w - tw) / 2 * (i + 1) / n, top + h * (i + 1) / (n + 1))]
        pts += [((w - tw) / 2, top + h), ((w + tw) / 2, top + h)]
        right = [(w - u, v) for u, v in reversed(pts)]
        return pts + right
    if kind == "gable_bell":
        tw = max(1.0, w * 0.28)
        left = []
        for t in np.linspace(0.0, 1.0, 12):
            u = (w - tw) / 2 * (0.5 - 0.5 * np.cos(np.pi * t))
            left.append((float(u), top + h * 0.85 * float(t)))
        apex = [((w - tw) / 2, top + h * 0.85), (w / 2, top + h), ((w + tw) / 2, top + h * 0.85)]
        right = [(w - u, v) for u, v in reversed(left)]
        return left + apex + right
    if kind == "gable_neck":
        nw = max(1.2, w * 0.45)
        s = (w - nw) / 2
        left = [(0.0, top), (0.0, top + 0.3)]
        for t in np.linspace(0.0, 1.0, 8):
            left.append((float(s * t), top + 0.3 + h * 0.25 * float(np.sin(np.pi / 2 * t))))
        left += [(s, top + h * 0.85)]
        apex = [(w / 2, top + h)]
        right = [(w - u, v) for u, v in reversed(left)]
        return left + apex + right
    # spout gable: a plain triangle with a small flat top
    return [(0.0, top), (w / 2 - 0.4, top + h), (w / 2 + 0.4, top + h), (w, top)]


def _roof(ctx: _Ctx, xs: np.ndarray, ww: float, mask: ImageDraw.ImageDraw) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    width, top, rh = ctx.width, g.wall_height, g.roof_height
    roof = g.roof
    if ctx.side and roof.startswith("gable"):
        roof = "pitched"

    def keep(pts: Sequence[tuple[float, float]]) -> None:
        mask.polygon([(p.x(u), p.y(v)) for u, v in pts], fill=255)

    if roof == "flat":
        p.rect(0, top - 0.05, width, top + 0.2, fill=(110, 108, 104))
        keep([(0, top), (width, top), (width, top + 0.2), (0, top + 0.2)])
        p.ledge(0, width, top + 0.2)
    elif roof in ("parapet", "parapet_fancy"):
        ph = 0.6
        keep([(0, top), (width, top), (width, top + ph), (0, top + ph)])
        p.rect(0, top - 0.3, width, top - 0.18, fill=shade(g.trim, 0.95))
        p.rect(0, top + ph - 0.12, width, top + ph, fill=shade(g.trim, 0.9))
        p.ledge(0, width, top + ph)
        if roof == "parapet_fancy":
            cw = min(width * 0.5, 3.0)
            pts = [(width / 2 - cw / 2, top + ph)]
            for t in np.linspace(0.0, 1.0, 10):
                pts.append(
                    (width / 2 - cw / 2 + cw * float(t), top + ph + 0.6 * float(np.sin(np.pi * t)))
                )
            keep(pts)
            p.line(pts, fill=shade(g.trim, 0.95), width_m=0.08)
    elif roof == "cornice":
        keep([(0, top), (width, top), (width, top + 0.5), (0, top + 0.5)])
        p.rect(0, top - 0.45, width, top - 0.12, fill=shade(g.wall, 0.45, 200))
        p.rect(-0.1, top - 0.12, width + 0.1, top + 0.5, fill=g.trim)
        p.rect(0, top + 0.05, width, top + 0.12, fill=shade(g.trim, 0.75))
        if p.ppm * 0.15 >= 3:
            for u in np.arange(0.1, width - 0.1, 0.3):
                p.rect(float(u), top - 0.12, float(u) + 0.15, top + 0.02, fill=shade(g.trim, 0.85))
        p.ledge(0, width, top + 0.5)
    elif roof == "eaves":
        keep([(0, top - 0.1), (width, top - 0.1), (width, top + rh), (0, top + rh)])
        p.rect(0, top - 0.65, width, top + 0.35, fill=shade(g.wall, 0.32))
        for u in np.arange(0.2, width, 0.55):
            p.rect(float(u), top - 0.25, float(u) + 0.12, top + 0.3, fill=(110, 78, 55))
        p.rect(0, top + 0.35, width, top + 0.6, fill=g.roof_color)
        if p.ppm * 0.15 >= 3:
            for u in np.arange(0.0, width, 0.18):
                p.rect(
                    float(u), top + 0.35, float(u) + 0.04, top + 0.6, fill=shade(g.roof_color, 0.75)
                )
        p.rect(0, top + 0.6, width, top + rh, fill=shade(g.roof_color, 0.9))
        p.roof_polys.append(
            [
                (p.x(0), p.y(top + rh)),
                (p.x(width), p.y(top + rh)),
                (p.x(width), p.y(top + 0.6)),
                (p.x(0), p.y(top + 0.6)),
            ]
        )
    elif roof == "pitched":
        gable_front = rng.random() < 0.45 and width < 14
        if gable_front:
            pts = [(0, top - 0.05), (width, top - 0.05), (width / 2, top + rh)]
            keep(pts)
            p.line(
                [(-0.1, top - 0.1), (width / 2, top + rh), (width + 0.1, top - 0.1)],
                fill=g.trim,
                width_m=0.22,
            )
            aw = min(1.0, width * 0.2)
            _window(ctx, width / 2, top + 0.25, aw, min(1.0, rh * 0.45))
            p.roof_polys.append([(p.x(0), p.y(top)), (p.x(width / 2), p.y(top + rh)), (p.x(width), p.y(top)),
                                 (p.x(width / 2), p.y(top + rh - 0.15))])  # fmt: skip
        else:
            hip = rng.random() < 0.5
            inset = rh * 0.9 if hip else 0.0
            pts = [(-0.2, top), (width + 0.2, top), (width - inset, top + rh), (inset, top + rh)]
            keep(pts)
            p.poly(pts, fill=g.roof_color)
            metal = g.city in ("reykjavik", "sydney") or g.material == "corrugated"
            if metal and p.ppm * 0.25 >= 3:
                for u in np.arange(0.0, width, 0.25):
                    p.rect(float(u), top, float(u) + 0.03, top + rh, fill=shade(g.roof_color, 0.8))
            elif p.ppm * 0.22 >= 3:
                for v in np.arange(top + 0.2, top + rh, 0.22):
                    p.rect(0, float(v), width, float(v) + 0.035, fill=shade(g.roof_color, 0.75))
            p.rect(-0.2, top - 0.12, width + 0.2, top + 0.05, fill=shade(g.trim, 0.9))
            p.roof_polys.append([(p.x(u), p.y(v)) for u, v in pts])
            if rng.random() < 0.4:
                cu = float(rng.uniform(0.2, 0.8)) * width
                keep(
                    [
                        (cu - 0.3, top + rh * 0.5),
                        (cu + 0.3, top + rh * 0.5),
                        (cu + 0.3, top + rh + 0.5),
                        (cu - 0.3, top + rh + 0.5),
                    ]
                )
                p.rect(
                    cu - 0.3,
                    top + rh * 0.5,
                    cu + 0.3,
                    top + rh + 0.5,
                    fill=shade(g.wall, 0.8) if g.material != "corrugated" else (150, 80, 60),
                )
                p.rect(cu - 0.35, top + rh + 0.4, cu + 0.35, top + rh + 0.5, fill=(90, 90, 90))
    elif roof == "mansard":
        keep([(0, top), (width, top), (width - 0.4, top + rh), (0.4, top + rh)])
        p.rect(-0.1, top - 0.12, width + 0.1, top + 0.3, fill=g.trim)
        pts = [(0, top + 0.3), (width, top + 0.3), (width - 0.4, top + rh), (0.4, top + rh)]
        p.poly(pts, fill=g.roof_color)
        if p.ppm * 0.25 >= 3:
            for v in np.arange(top + 0.5, top + rh, 0.25):
                p.rect(0.2, float(v), width - 0.2, float(v) + 0.03, fill=shade(g.roof_color, 0.75))
        p.roof_polys.append([(p.x(u), p.y(v)) for u, v in pts])
        for uc in xs:
            dw = ww * 0.8
            p.rect(
                float(uc) - dw / 2 - 0.15,
                top + 0.4,
                float(uc) + dw / 2 + 0.15,
                top + 1.9,
                fill=g.trim,
            )
            p.chord_top(
                float(uc) - dw / 2 - 0.15,
                top + 1.6,
                float(uc) + dw / 2 + 0.15,
                top + 2.3,
                fill=g.trim,
            )
            p.rect(
                float(uc) - dw / 2,
                top + 0.5,
                float(uc) + dw / 2,
                top + 1.8,
                fill=shade(g.glass, 0.9),
            )
            p.ledge(float(uc) - dw / 2 - 0.15, float(uc) + dw / 2 + 0.15, top + 2.0)
        p.rect(0.4, top + rh - 0.1, width - 0.4, top + rh, fill=(150, 155, 160))
    else:  # Dutch gables
        pts = _gable_outline(roof, width, top, rh)
        keep(pts)
        p.line([*pts, pts[0]], fill=shade(g.trim, 0.97), width_m=0.12)
        p.rect(0, top - 0.15, width, top + 0.05, fill=shade(g.trim, 0.95))
        # attic window(s) in the gable
        aw = min(0.9, width * 0.16)
        n = 1 if width < 7 else 2
        for i in range(n):
            uc = width / 2 if n == 1 else width / 2 + (i - 0.5) * width * 0.28
            _window(ctx, uc, top + 0.35, aw, min(1.3, rh * 0.4))
        for (u0, v0), (u1, v1) in itertools.pairwise(pts):
            if abs(v1 - v0) < 1e-6 and v0 > top + 0.1:
                p.ledge(min(u0, u1), max(u0, u1), v0)


def render_facade(genome: Genome, width_m: float, ppm: float, side: bool = False) -> FacadeTexture:
    """Draw a building's facade.

    Args:
        genome: the building.
        width_m: facade width, metres.
        ppm: resolution, pixels per metre.
        side: draw the side facade of a corner building (no shopfronts or balconies, fewer
            windows) instead of the front.

    Returns:
        The :class:`FacadeTexture` (RGBA, transparent where there is sky).
    """
    rng = np.random.default_rng([genome.detail_seed, 1 if side else 0])
    g = genome
    height_m = g.total_height + 0.6
    w_px = max(4, round(width_m * ppm))
    h_px = max(4, round(height_m * ppm))
    field_ = material_field(g.material, h_px, w_px, ppm, rng)
    grime = grime_field(h_px, w_px, ppm, g.grime, rng)
    rgb = np.asarray(g.wall, dtype=np.float32) * field_ * grime[..., None]
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    mask = Image.new("L", img.size, 0)
    mdraw = ImageDraw.Draw(mask)
    painter = _Painter(img, ppm, height_m)
    mdraw.rectangle(painter.box(0, 0, width_m, g.wall_height), fill=255)
    ctx = _Ctx(g=g, p=painter, rng=rng, width=width_m, side=side)
    spacing = g.window_spacing * (1.35 if side else 1.0)
    xs, ww = _columns(width_m, spacing, g.window_w)
    if side and rng.random() < 0.35:
        xs = xs[:0]  # a blank side wall
    _pilasters_quoins(ctx, xs, ww)
    _ground_floor(ctx, xs if len(xs) else np.array([width_m / 2]), ww)
    _upper_floors(ctx, xs, ww)
    _extras(ctx, xs, ww)
    _roof(ctx, xs, ww, mdraw)
    out = img.convert("RGBA")
    out.putalpha(mask)
    return FacadeTexture(
        image=out,
        ppm=ppm,
        width_m=width_m,
        height_m=height_m,
        ledges=painter.ledges,
        roof_polys=painter.roof_polys,
    )


def with_snow(tex: FacadeTexture, rng: np.random.Generator) -> Image.Image:
    """The facade after snowfall: white on sills, cornices, balconies and roof surfaces."""
    img = tex.image.copy()
    d = ImageDraw.Draw(img, "RGBA")
    for x0, y0, x1, y1 in tex.ledges:
        d.rectangle((x0, y0, x1, y1), fill=(*SNOW, 245))
    for poly in tex.roof_polys:
        d.polygon(poly, fill=(*SNOW, int(rng.integers(215, 250))))
    return img
