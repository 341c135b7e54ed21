"""Facade textures: one building's front (or side) wall drawn flat, in metres, once per building.

The texture is an RGBA image at ``ppm`` pixels per metre whose bottom edge is the ground (v = 0)
and whose left edge is the facade's left end (u = 0) as seen from the street. Transparent pixels are
sky (above roof lines and around gables). Views warp this texture with a perspective transform, so
everything that identifies the building (layout, window grid, colours, materials, signs, details)
lives here, while light, weather, season and occlusion are added per view.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

from sbe.synth.balconies import draw_balcony
from sbe.synth.genome import Genome
from sbe.synth.groundfloor import draw_ground_floor
from sbe.synth.openings import draw_window
from sbe.synth.paint import SNOW, FacadeCtx, FacadeTexture, Painter, shade, window_columns
from sbe.synth.roofs import draw_roof
from sbe.synth.textures import grime_field, material_field


def draw_upper_floors(ctx: FacadeCtx, xs: np.ndarray, ww: float) -> None:
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
            draw_window(ctx, width / 2, base + sill_off, width - 1.0, h)
        else:
            for uc in xs:
                draw_window(ctx, float(uc), base + sill_off, ww, h)
        has_balc = {
            "all": True,
            "alternate": k % 2 == 1,
            "first": k == 1,
            "random": rng.random() < 0.5,
        }[g.balcony_pattern]
        if g.balcony in ("lace", "walkway"):
            if k == 1:
                draw_balcony(ctx, g.balcony, 0.0, width, base, g.floor_h)
        elif g.balcony != "none" and has_balc and not ctx.side:
            if g.balcony == "glazed" or g.family == "panel_block":
                cols = [i for i in range(len(xs)) if (i + k * 0) % 3 == 1]
            else:
                cols = list(range(len(xs)))
            for i in cols:
                uc = float(xs[i])
                draw_balcony(
                    ctx, g.balcony, uc - ww / 2 - 0.35, uc + ww / 2 + 0.35, base, g.floor_h
                )


def draw_pilasters_quoins(ctx: FacadeCtx, xs: np.ndarray, ww: float) -> None:
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


def draw_extras(ctx: FacadeCtx, xs: np.ndarray, ww: float) -> None:
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
            p.vbars(np.arange(a, b, 0.3), 0.025, base, base + 0.9, col)
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
    painter = Painter(img, ppm, height_m)
    mdraw.rectangle(painter.box(0, 0, width_m, g.wall_height), fill=255)
    ctx = FacadeCtx(g=g, p=painter, rng=rng, width=width_m, side=side)
    spacing = g.window_spacing * (1.35 if side else 1.0)
    xs, ww = window_columns(width_m, spacing, g.window_w)
    if side and rng.random() < 0.35:
        xs = xs[:0]  # a blank side wall
    draw_pilasters_quoins(ctx, xs, ww)
    draw_ground_floor(ctx, xs if len(xs) else np.array([width_m / 2]), ww)
    draw_upper_floors(ctx, xs, ww)
    draw_extras(ctx, xs, ww)
    draw_roof(ctx, xs, ww, mdraw)
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
