"""Balconies of a facade: slabs, walkways and glass, iron railings, glazed loggias, lace verandahs."""

from __future__ import annotations

from sbe.synth.paint import FacadeCtx, shade


def draw_balcony(
    ctx: FacadeCtx, kind: str, u0: float, u1: float, base: float, floor_h: float
) -> None:
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
                p.rails(u0, u1, step, 0.03, base + 0.12, base + 1.0, rail)
            else:
                p.rect(u0, base + 0.12, u1, base + 1.0, fill=(*rail[:3], 120))
    elif kind == "iron":
        p.rect(u0, base - 0.05, u1, base + 0.1, fill=shade(g.trim, 0.85))
        p.rect(u0, base - 0.2, u1, base - 0.05, fill=shade(g.wall, 0.5, 140))
        p.ledge(u0, u1, base + 0.1)
        p.rect(u0, base + 0.95, u1, base + 1.02, fill=iron)
        if p.ppm * 0.11 >= 3:
            p.rails(u0, u1, 0.11, 0.025, base + 0.1, base + 0.95, iron)
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
        p.roof_poly([(u0, top + 0.35), (u1, top + 0.35), (u1, top + 0.05), (u0, top + 0.05)])
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
