"""Street objects drawn as flat sprites (billboards parallel to the facade): trees, cars, poles, people.

A sprite is an RGBA image of a known size in metres whose bottom centre stands on the ground. The
scene places it at a distance from the facade and warps it with the same camera, so the same tree
appears with the right parallax in every view of a street, while its foliage follows the season.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from sbe.synth.paint import SNOW, shade

SPRITE_PPM = 24.0  # sprite resolution, pixels per metre (sprites are small, detail is cheap)


@dataclass
class Sprite:
    """An RGBA image ``width_m`` x ``height_m`` metres whose bottom centre stands on the ground."""

    image: Image.Image
    width_m: float
    height_m: float


def _rect(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], fill) -> None:
    """A rectangle between two corner points given in any order."""
    d.rectangle((min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])), fill=fill)


def _canvas(width_m: float, height_m: float, ppm: float) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new(
        "RGBA", (max(2, round(width_m * ppm)), max(2, round(height_m * ppm))), (0, 0, 0, 0)
    )
    return img, ImageDraw.Draw(img)


_FOLIAGE = {
    "green": [(46, 84, 38), (66, 104, 46), (88, 128, 58), (38, 66, 32)],
    "bud": [(128, 168, 84), (156, 190, 104), (110, 150, 70), (176, 204, 130)],
    "autumn": [(178, 104, 38), (204, 150, 52), (150, 72, 34), (190, 168, 70)],
    "tropical": [(34, 78, 36), (52, 98, 44), (70, 118, 54), (28, 60, 30)],
    # gazetteer places only (sbe.synth.season.foliage_by_latitude)
    "summer": [(34, 66, 30), (48, 84, 36), (64, 100, 44), (28, 52, 26)],
    "autumn_late": [(138, 66, 30), (160, 94, 40), (116, 54, 28), (148, 108, 52)],
    "fresh": [(112, 162, 48), (142, 188, 70), (92, 138, 42), (164, 204, 92)],
}
#: flowers of the "blossom" state (gazetteer places)
_BLOSSOM = [(246, 240, 242), (240, 196, 212), (252, 226, 234), (228, 170, 194)]


def tree_sprite(
    kind: str, state: str, height_m: float, seed: int, snow: bool, ppm: float = SPRITE_PPM
) -> Sprite:
    """A street tree.

    Args:
        kind: ``deciduous``, ``evergreen``, ``palm`` or ``conifer``.
        state: foliage state from :func:`sbe.synth.season.foliage_state`.
        height_m: total height, metres.
        seed: the individual tree (shape); the same seed gives the same tree in every season.
        snow: snow on the branches / canopy.
    """
    rng = np.random.default_rng([seed, 11])
    crown_w = height_m * (0.62 if kind != "palm" else 0.7) * float(rng.uniform(0.85, 1.15))
    w_m = max(crown_w, 1.0)
    img, d = _canvas(w_m, height_m, ppm)
    W, H = img.size

    def X(u: float) -> float:  # u: metres from the centre
        return W / 2 + u * ppm

    def Y(v: float) -> float:  # v: metres above ground
        return H - v * ppm

    bark = (74, 62, 52) if kind != "palm" else (120, 104, 84)
    trunk_w = max(0.18, height_m * 0.03)
    if kind == "palm":
        lean = float(rng.uniform(-0.6, 0.6))
        pts = [(X(lean * (v / height_m) ** 2), Y(v)) for v in np.linspace(0, height_m * 0.88, 12)]
        d.line(pts, fill=bark, width=max(2, round(0.3 * ppm)))
        top = pts[-1]
        cols = _FOLIAGE["tropical"]
        for k in range(13):
            # fronds rise from the crown and arch over, drooping at the tips
            ang = math.pi * (0.02 + 0.96 * k / 12) + float(rng.normal(0, 0.06))
            length = float(rng.uniform(0.42, 0.52)) * crown_w * ppm
            rise = math.sin(ang)
            pts = []
            for f in np.linspace(0.0, 1.0, 6):
                x = top[0] + math.cos(ang) * length * f
                y = top[1] - length * (0.55 * rise * f - (0.45 + 0.3 * (1 - rise)) * f * f)
                pts.append((x, y))
            col = cols[k % len(cols)]
            for (a, b), wdt in zip(
                itertools.pairwise(pts), (0.34, 0.3, 0.25, 0.18, 0.1), strict=True
            ):
                d.line([a, b], fill=col, width=max(1, round(wdt * ppm)))
            if snow:
                d.line(pts[:3], fill=SNOW, width=max(1, round(0.06 * ppm)))
        d.ellipse(
            (top[0] - 0.25 * ppm, top[1] - 0.2 * ppm, top[0] + 0.25 * ppm, top[1] + 0.3 * ppm),
            fill=(96, 84, 60),
        )
        return Sprite(img, W / ppm, H / ppm)
    if kind == "conifer":
        d.rectangle((X(-trunk_w / 2), Y(1.2), X(trunk_w / 2), Y(0)), fill=bark)
        cols = [(30, 60, 38), (40, 74, 46), (24, 50, 32)]
        n = 5
        for k in range(n):
            v0 = 0.8 + (height_m - 1.0) * k / n
            v1 = min(height_m, v0 + (height_m - 1.0) * 0.45)
            half = crown_w / 2 * (1.0 - k / (n + 0.5))
            d.polygon([(X(-half), Y(v0)), (X(half), Y(v0)), (X(0), Y(v1))], fill=cols[k % 3])
            if snow:
                d.polygon([(X(-half * 0.5), Y(v0 + (v1 - v0) * 0.45)), (X(half * 0.5), Y(v0 + (v1 - v0) * 0.45)),
                           (X(0), Y(v1))], fill=(*SNOW, 210))  # fmt: skip
        return Sprite(img, W / ppm, H / ppm)
    # broadleaf: trunk, branches, a crown of leaf clusters (unless bare)
    crown_base = height_m * float(rng.uniform(0.32, 0.45))
    d.polygon([(X(-trunk_w * 0.6), Y(0)), (X(trunk_w * 0.6), Y(0)), (X(trunk_w * 0.35), Y(crown_base + 0.8)),
               (X(-trunk_w * 0.35), Y(crown_base + 0.8))], fill=bark)  # fmt: skip
    branch_rng = np.random.default_rng([seed, 12])
    segs: list[tuple[tuple[float, float], tuple[float, float], float]] = []

    def grow(x: float, y: float, ang: float, length: float, width: float, depth: int) -> None:
        if depth == 0 or length < 0.25:
            return
        x2 = x + math.cos(ang) * length
        y2 = y + math.sin(ang) * length
        segs.append(((x, y), (x2, y2), width))
        for da in (-0.45, 0.4):
            grow(
                x2,
                y2,
                ang + da + float(branch_rng.normal(0, 0.2)),
                length * 0.72,
                width * 0.65,
                depth - 1,
            )

    for ang0 in (math.pi / 2 - 0.5, math.pi / 2, math.pi / 2 + 0.5):
        grow(
            0.0,
            crown_base,
            ang0 + float(branch_rng.normal(0, 0.1)),
            (height_m - crown_base) * 0.36,
            trunk_w * 0.7,
            4,
        )
    bare = state in ("bare", "blossom")
    for (x1, y1), (x2, y2), wdt in segs:
        d.line(
            [(X(x1), Y(y1)), (X(x2), Y(y2))],
            fill=bark if not snow else shade(bark, 1.4),
            width=max(1, round(wdt * ppm)),
        )
    if snow and bare:
        for (x1, y1), (x2, y2), _ in segs[::2]:
            d.line([(X(x1), Y(y1) - 1), (X(x2), Y(y2) - 1)], fill=(*SNOW, 220), width=1)
    if state == "blossom":  # gazetteer places: white and pink flowers on the bare twigs
        cy, ry, rx = (height_m + crown_base) / 2 + 0.4, (height_m - crown_base) / 2, crown_w / 2
        for k in range(90):
            t = float(rng.uniform(0, 2 * math.pi))
            r = math.sqrt(float(rng.uniform(0, 1)))
            cx, cyy = rx * 0.8 * r * math.cos(t), cy + ry * 0.8 * r * math.sin(t)
            s = float(rng.uniform(0.12, 0.3)) * rx * 0.5
            col = _BLOSSOM[k % len(_BLOSSOM)]
            d.ellipse((X(cx - s), Y(cyy + s), X(cx + s), Y(cyy - s)), fill=(*col, 255))
    if not bare:
        cols = _FOLIAGE[
            "tropical" if kind == "evergreen" else state if state in _FOLIAGE else "green"
        ]
        density = {"bud": 0.35, "autumn": 0.8, "autumn_late": 0.45}.get(state, 1.0)
        cy, ry = (height_m + crown_base) / 2 + 0.4, (height_m - crown_base) / 2
        rx = crown_w / 2
        n = int(70 * density) if density >= 0.8 else 45
        # young leaves: many small clusters with the branches showing through
        size_k = 1.0 if density >= 0.8 else 0.45
        for _ in range(n):
            t = float(rng.uniform(0, 2 * math.pi))
            r = math.sqrt(float(rng.uniform(0, 1)))
            cx = rx * 0.78 * r * math.cos(t)
            cyy = cy + ry * 0.78 * r * math.sin(t)
            s = float(rng.uniform(0.35, 0.75)) * (rx * 0.55) * size_k
            # lighter clusters on the upper side (sky light), darker below
            shade_k = (
                0
                if cyy > cy + ry * 0.2
                else (3 if cyy < cy - ry * 0.3 else int(rng.integers(1, 3)))
            )
            col = (
                cols[min(len(cols) - 1, shade_k)]
                if density >= 0.8
                else cols[int(rng.integers(len(cols)))]
            )
            d.ellipse(
                (X(cx - s), Y(cyy + s * 0.85), X(cx + s), Y(cyy - s * 0.85)),
                fill=(*col, 255),
            )
        if snow:
            for _ in range(12):
                cx = float(rng.uniform(-rx * 0.6, rx * 0.6))
                cyy = cy + ry * float(rng.uniform(0.2, 0.7))
                s = rx * 0.18
                d.ellipse(
                    (X(cx - s), Y(cyy + s * 0.4), X(cx + s), Y(cyy - s * 0.4)), fill=(*SNOW, 220)
                )
    return Sprite(img, W / ppm, H / ppm)


_CAR_COLOURS = [(235, 235, 232), (25, 25, 28), (150, 152, 156), (95, 98, 104), (150, 30, 30),
                (30, 55, 110), (35, 70, 50), (200, 190, 165), (210, 170, 40), (110, 40, 30)]  # fmt: skip


def car_sprite(seed: int, snow: bool, ppm: float = SPRITE_PPM) -> Sprite:
    """A parked car seen from the side (sedan, hatchback, SUV or van), bottom centre on the ground."""
    rng = np.random.default_rng([seed, 21])
    kind = ["sedan", "hatch", "suv", "van"][int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))]
    length = {"sedan": 4.6, "hatch": 4.0, "suv": 4.7, "van": 5.0}[kind] * float(
        rng.uniform(0.95, 1.05)
    )
    height = {"sedan": 1.45, "hatch": 1.5, "suv": 1.75, "van": 2.1}[kind]
    body = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
    img, d = _canvas(length, height + 0.1, ppm)
    W, H = img.size

    def P(u: float, v: float) -> tuple[float, float]:
        return (W / 2 + u * ppm, H - v * ppm)

    L = length / 2
    sill, belt = 0.3, 0.85 if kind != "van" else 1.0
    # lower body
    d.polygon(
        [
            P(-L, sill),
            P(-L, belt - 0.1),
            P(-L + 0.25, belt),
            P(L - 0.2, belt),
            P(L, belt - 0.15),
            P(L, sill),
        ],
        fill=body,
    )
    # cabin
    if kind == "van":
        cab = [P(-L + 0.1, belt), P(-L + 0.15, height), P(L - 0.9, height), P(L - 0.1, belt + 0.15)]
    elif kind == "suv":
        cab = [P(-L + 0.2, belt), P(-L + 0.35, height), P(L - 1.1, height), P(L - 0.5, belt)]
    elif kind == "hatch":
        cab = [P(-L + 0.15, belt), P(-L + 0.4, height), P(L - 1.4, height), P(L - 0.7, belt)]
    else:
        cab = [P(-L + 0.8, belt), P(-L + 1.4, height), P(L - 1.6, height), P(L - 0.9, belt)]
    d.polygon(cab, fill=body)
    glass = (45, 55, 65)
    inset = [(x + (W / 2 - x) * 0.08, y + (H - y) * 0.0 + 0.07 * ppm) for x, y in cab]
    d.polygon(inset, fill=glass)
    mid = (inset[0][0] + inset[3][0]) / 2
    d.line([(mid, inset[1][1]), (mid, inset[0][1])], fill=body, width=max(1, round(0.08 * ppm)))
    # wheels, lights, handle line
    for u in (-L + 0.85, L - 0.85):
        cx, cy = P(u, 0.33)
        r = 0.33 * ppm
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(20, 20, 20))
        d.ellipse(
            (cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=(150, 150, 150)
        )
    _rect(d, P(-L, belt - 0.3), P(-L + 0.12, belt - 0.12), (190, 30, 30))
    _rect(d, P(L - 0.12, belt - 0.3), P(L, belt - 0.12), (230, 220, 180))
    d.line([P(-L + 0.3, belt - 0.15), P(L - 0.3, belt - 0.15)], fill=shade(body, 0.75), width=1)
    if snow:
        top = [(x, y - 0.12 * ppm) for x, y in cab[1:3]]
        d.polygon([cab[1], cab[2], top[1], top[0]], fill=SNOW)
    return Sprite(img, W / ppm, H / ppm)


def pole_sprite(kind: str, seed: int, ppm: float = SPRITE_PPM) -> Sprite:
    """A lamp post or a sign pole."""
    rng = np.random.default_rng([seed, 31])
    grey = (58, 60, 62) if rng.random() < 0.7 else (40, 60, 48)
    if kind == "lamp":
        h = float(rng.uniform(5.5, 7.5))
        img, d = _canvas(1.6, h, ppm)
        W, H = img.size
        d.rectangle((W / 2 - 0.06 * ppm, 0, W / 2 + 0.06 * ppm, H), fill=grey)
        d.rectangle((W / 2 - 0.1 * ppm, H - 1.2 * ppm, W / 2 + 0.1 * ppm, H), fill=shade(grey, 0.9))
        d.line(
            [(W / 2, 0.15 * ppm), (W / 2 + 0.7 * ppm, 0.15 * ppm)],
            fill=grey,
            width=max(1, round(0.07 * ppm)),
        )
        d.rectangle(
            (W / 2 + 0.45 * ppm, 0.1 * ppm, W / 2 + 0.8 * ppm, 0.32 * ppm), fill=(220, 220, 200)
        )
        return Sprite(img, W / ppm, H / ppm)
    h = float(rng.uniform(2.4, 3.0))
    img, d = _canvas(0.8, h, ppm)
    W, H = img.size
    d.rectangle((W / 2 - 0.04 * ppm, 0.3 * ppm, W / 2 + 0.04 * ppm, H), fill=(120, 122, 125))
    kind_sign = int(rng.integers(4))
    top = 0.0
    if kind_sign == 0:  # round prohibition sign
        d.ellipse((0.1 * ppm, top, 0.7 * ppm, top + 0.6 * ppm), fill=(200, 30, 30))
        d.ellipse(
            (0.18 * ppm, top + 0.08 * ppm, 0.62 * ppm, top + 0.52 * ppm), fill=(240, 240, 240)
        )
    elif kind_sign == 1:  # blue square (parking)
        d.rectangle((0.1 * ppm, top, 0.7 * ppm, top + 0.6 * ppm), fill=(30, 70, 160))
    elif kind_sign == 2:  # street-name plate
        d.rectangle(
            (0.0, top + 0.1 * ppm, 0.8 * ppm, top + 0.35 * ppm),
            fill=(30, 100, 60) if rng.random() < 0.5 else (30, 60, 140),
        )
    else:  # triangle warning sign
        d.polygon(
            [(0.4 * ppm, top), (0.75 * ppm, top + 0.6 * ppm), (0.05 * ppm, top + 0.6 * ppm)],
            fill=(200, 30, 30),
        )
        d.polygon(
            [
                (0.4 * ppm, top + 0.12 * ppm),
                (0.62 * ppm, top + 0.52 * ppm),
                (0.18 * ppm, top + 0.52 * ppm),
            ],
            fill=(240, 240, 240),
        )
    return Sprite(img, W / ppm, H / ppm)


_SKIN = [(236, 200, 170), (210, 160, 120), (170, 120, 85), (120, 80, 55), (90, 60, 45)]
_CLOTHES_WARM = [
    (200, 60, 50),
    (240, 240, 235),
    (90, 140, 200),
    (230, 200, 80),
    (60, 150, 90),
    (240, 150, 160),
]
_CLOTHES_COLD = [
    (30, 30, 35),
    (60, 60, 70),
    (90, 70, 55),
    (40, 50, 80),
    (110, 30, 30),
    (70, 80, 70),
]


def pedestrian_sprite(seed: int, cold: bool, umbrella: bool, ppm: float = SPRITE_PPM) -> Sprite:
    """A walking person (coat colours follow the season; an umbrella in the rain)."""
    rng = np.random.default_rng([seed, 41])
    h = float(rng.uniform(1.55, 1.9))
    width = 0.7 if not umbrella else 1.1
    img, d = _canvas(width, h + (0.35 if umbrella else 0.0), ppm)
    W, H = img.size

    def P(u: float, v: float) -> tuple[float, float]:
        return (W / 2 + u * ppm, H - v * ppm)

    pal = _CLOTHES_COLD if cold else _CLOTHES_WARM
    top = pal[int(rng.integers(len(pal)))]
    legs = [(40, 45, 60), (30, 30, 30), (90, 80, 70), (60, 70, 100)][int(rng.integers(4))]
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    stride = float(rng.uniform(0.05, 0.18))
    d.polygon(
        [P(-0.14, h * 0.5), P(-0.02, h * 0.5), P(-0.06 - stride, 0.0), P(-0.17 - stride, 0.0)],
        fill=legs,
    )
    d.polygon(
        [P(0.02, h * 0.5), P(0.14, h * 0.5), P(0.17 + stride, 0.0), P(0.06 + stride, 0.0)],
        fill=legs,
    )
    coat_bottom = h * (0.35 if cold else 0.48)
    d.polygon(
        [P(-0.2, h * 0.82), P(0.2, h * 0.82), P(0.23, coat_bottom), P(-0.23, coat_bottom)], fill=top
    )
    d.line([P(-0.2, h * 0.8), P(-0.26, h * 0.5)], fill=top, width=max(1, round(0.09 * ppm)))
    d.line([P(0.2, h * 0.8), P(0.26, h * 0.5)], fill=top, width=max(1, round(0.09 * ppm)))
    d.ellipse((*P(-0.1, h), *P(0.1, h * 0.85)), fill=skin)
    d.chord(
        (*P(-0.1, h + 0.01), *P(0.1, h * 0.87)),
        180,
        360,
        fill=[(30, 25, 20), (90, 60, 30), (200, 180, 120)][int(rng.integers(3))],
    )
    if umbrella:
        col = [(20, 20, 25), (30, 60, 130), (160, 30, 40), (40, 110, 60)][int(rng.integers(4))]
        d.chord((*P(-0.55, h + 0.35), *P(0.55, h - 0.1)), 180, 360, fill=col)
        d.line([P(0.0, h + 0.1), P(0.0, h * 0.7)], fill=(40, 40, 40), width=1)
    return Sprite(img, W / ppm, H / ppm)
