"""Roof lines of a facade: flat, parapets, cornices, eaves, pitched and hipped roofs, mansards and
Dutch gables; what stays opaque above the wall top is drawn into the sky mask."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from PIL import ImageDraw

from sbe.synth.openings import draw_window
from sbe.synth.paint import FacadeCtx, shade


def gable_outline(kind: str, width: float, top: float, h: float) -> list[tuple[float, float]]:
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


def draw_roof(ctx: FacadeCtx, xs: np.ndarray, ww: float, mask: ImageDraw.ImageDraw) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    width, top, rh = ctx.width, g.wall_height, g.roof_height
    roof = g.roof
    if ctx.side and roof.startswith("gable"):
        roof = "pitched"

    def keep(pts: Sequence[tuple[float, float]]) -> None:
        mask.polygon([(p.x(u), p.y(v)) for u, v in pts], fill=255)

    def keep_box(u0: float, v0: float, u1: float, v1: float) -> None:
        keep([(u0, v0), (u1, v0), (u1, v1), (u0, v1)])

    if roof == "flat":
        p.rect(0, top - 0.05, width, top + 0.2, fill=(110, 108, 104))
        keep_box(0, top, width, top + 0.2)
        p.ledge(0, width, top + 0.2)
    elif roof in ("parapet", "parapet_fancy"):
        ph = 0.6
        keep_box(0, top, width, top + ph)
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
        keep_box(0, top, width, top + 0.5)
        p.rect(0, top - 0.45, width, top - 0.12, fill=shade(g.wall, 0.45, 200))
        p.rect(-0.1, top - 0.12, width + 0.1, top + 0.5, fill=g.trim)
        p.rect(0, top + 0.05, width, top + 0.12, fill=shade(g.trim, 0.75))
        if p.ppm * 0.15 >= 3:
            p.vbars(
                np.arange(0.1, width - 0.1, 0.3), 0.15, top - 0.12, top + 0.02, shade(g.trim, 0.85)
            )
        p.ledge(0, width, top + 0.5)
    elif roof == "eaves":
        keep_box(0, top - 0.1, width, top + rh)
        p.rect(0, top - 0.65, width, top + 0.35, fill=shade(g.wall, 0.32))
        p.vbars(np.arange(0.2, width, 0.55), 0.12, top - 0.25, top + 0.3, (110, 78, 55))
        p.rect(0, top + 0.35, width, top + 0.6, fill=g.roof_color)
        if p.ppm * 0.15 >= 3:
            p.vbars(
                np.arange(0.0, width, 0.18), 0.04, top + 0.35, top + 0.6, shade(g.roof_color, 0.75)
            )
        p.rect(0, top + 0.6, width, top + rh, fill=shade(g.roof_color, 0.9))
        p.roof_poly([(0, top + rh), (width, top + rh), (width, top + 0.6), (0, top + 0.6)])
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
            draw_window(ctx, width / 2, top + 0.25, aw, min(1.0, rh * 0.45))
            p.roof_poly(
                [(0, top), (width / 2, top + rh), (width, top), (width / 2, top + rh - 0.15)]
            )
        else:
            hip = rng.random() < 0.5
            inset = rh * 0.9 if hip else 0.0
            pts = [(-0.2, top), (width + 0.2, top), (width - inset, top + rh), (inset, top + rh)]
            keep(pts)
            p.poly(pts, fill=g.roof_color)
            metal = g.city in ("reykjavik", "sydney") or g.material == "corrugated"
            if metal and p.ppm * 0.25 >= 3:
                p.vbars(np.arange(0.0, width, 0.25), 0.03, top, top + rh, shade(g.roof_color, 0.8))
            elif p.ppm * 0.22 >= 3:
                p.hbars(
                    np.arange(top + 0.2, top + rh, 0.22), 0.035, 0, width, shade(g.roof_color, 0.75)
                )
            p.rect(-0.2, top - 0.12, width + 0.2, top + 0.05, fill=shade(g.trim, 0.9))
            p.roof_poly(pts)
            if rng.random() < 0.4:
                cu = float(rng.uniform(0.2, 0.8)) * width
                keep_box(cu - 0.3, top + rh * 0.5, cu + 0.3, top + rh + 0.5)
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
            p.hbars(
                np.arange(top + 0.5, top + rh, 0.25),
                0.03,
                0.2,
                width - 0.2,
                shade(g.roof_color, 0.75),
            )
        p.roof_poly(pts)
        for uc in xs:  # dormers: a trim frame with an arched head around the glass
            dw = ww * 0.8
            lo, hi = float(uc) - dw / 2, float(uc) + dw / 2
            p.rect(lo - 0.15, top + 0.4, hi + 0.15, top + 1.9, fill=g.trim)
            p.chord_top(lo - 0.15, top + 1.6, hi + 0.15, top + 2.3, fill=g.trim)
            p.rect(lo, top + 0.5, hi, top + 1.8, fill=shade(g.glass, 0.9))
            p.ledge(lo - 0.15, hi + 0.15, top + 2.0)
        p.rect(0.4, top + rh - 0.1, width - 0.4, top + rh, fill=(150, 155, 160))
    else:  # Dutch gables
        pts = gable_outline(roof, width, top, rh)
        keep(pts)
        p.line([*pts, pts[0]], fill=shade(g.trim, 0.97), width_m=0.12)
        p.rect(0, top - 0.15, width, top + 0.05, fill=shade(g.trim, 0.95))
        # attic window(s) in the gable
        aw = min(0.9, width * 0.16)
        n = 1 if width < 7 else 2
        for i in range(n):
            uc = width / 2 if n == 1 else width / 2 + (i - 0.5) * width * 0.28
            draw_window(ctx, uc, top + 0.35, aw, min(1.3, rh * 0.4))
        for (u0, v0), (u1, v1) in itertools.pairwise(pts):
            if abs(v1 - v0) < 1e-6 and v0 > top + 0.1:
                p.ledge(min(u0, u1), max(u0, u1), v0)
