"""The ground floor of a facade: plinth or stone base, shopfronts, arcades, motel rows, front doors."""

from __future__ import annotations

import numpy as np

from sbe.synth.openings import draw_door, draw_window
from sbe.synth.paint import FacadeCtx, shade


def draw_shopfront(ctx: FacadeCtx, u0: float, u1: float, word: str) -> None:
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
        p.roof_poly(
            [
                (u0 - 0.05, a_top),
                (u1 + 0.05, a_top),
                (u1 + 0.2, a_top - 0.15),
                (u0 - 0.2, a_top - 0.15),
            ]
        )


def draw_ground_floor(ctx: FacadeCtx, xs: np.ndarray, ww: float) -> None:
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
            draw_shopfront(
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
                draw_door(ctx, float(uc), 0.95, 2.15, False)
            else:
                draw_window(ctx, float(uc), 1.0, ww, min(g.window_h, gh - 1.4), ground=True)
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
            draw_door(ctx, float(uc), dw, dh, arched=grand or g.window == "arch")
            if not grand and gh - dh > 0.9:
                p.rect(uc - dw / 2, dh + 0.2, uc + dw / 2, dh + 0.6, fill=shade(g.glass, 0.9))
        else:
            h = min(g.window_h, gh - 1.4)
            draw_window(ctx, float(uc), 1.0, ww, h, ground=True)
