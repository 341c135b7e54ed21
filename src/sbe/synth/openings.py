"""Windows and doors of a facade: reveals, frames, glass, glazing bars, sills, lintels, shutters."""

from __future__ import annotations

from sbe.synth.paint import FacadeCtx, Painter, mix, shade


def glass_pane(ctx: FacadeCtx, u0: float, v0: float, u1: float, v1: float, arch: str) -> None:
    """Window glass with a sky reflection, curtains or blinds (varies per window, fixed per building)."""
    g, p, rng = ctx.g, ctx.p, ctx.rng
    glass = shade(g.glass, float(rng.uniform(0.8, 1.15)))
    opening_shape(p, u0, v0, u1, v1, arch, glass)
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


def opening_shape(p: Painter, u0: float, v0: float, u1: float, v1: float, arch: str, fill) -> None:
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


def draw_window(
    ctx: FacadeCtx, uc: float, v_sill: float, w: float, h: float, ground: bool = False
) -> None:
    """One window with reveal, frame, glass, glazing bars, sill, lintel and shutters."""
    g, p, rng = ctx.g, ctx.p, ctx.rng
    style = g.window if g.window in ("arch", "segment") else "rect"
    u0, u1, v0, v1 = uc - w / 2, uc + w / 2, v_sill, v_sill + h
    # reveal: the wall's depth in shadow around the opening
    opening_shape(p, u0 - 0.06, v0 - 0.03, u1 + 0.06, v1 + 0.06, style, shade(g.wall, 0.5))
    frame = g.trim
    t = 0.075
    opening_shape(p, u0, v0, u1, v1, style, frame)
    closed = g.shutters and rng.random() < 0.3
    glass_pane(ctx, u0 + t, v0 + t, u1 - t, v1 - t, style)
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


def draw_door(ctx: FacadeCtx, uc: float, w: float, h: float, arched: bool) -> None:
    g, p, rng = ctx.g, ctx.p, ctx.rng
    p.rect(uc - w / 2 - 0.25, -0.05, uc + w / 2 + 0.25, 0.18, fill=(150, 146, 138))  # step
    shape = "arch" if arched else "rect"
    opening_shape(
        p, uc - w / 2 - 0.12, 0.15, uc + w / 2 + 0.12, h + 0.12, shape, shade(g.trim, 0.9)
    )
    opening_shape(p, uc - w / 2, 0.18, uc + w / 2, h, shape, g.door)
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
