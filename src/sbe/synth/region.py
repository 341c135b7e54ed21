"""Layout of one map region: a grid of street blocks lined with buildings (see :mod:`sbe.synth.world`).

:func:`plan_region` places blocks, buildings (terraces of near-duplicates included), facades,
lines and street props, then the capture (:mod:`sbe.synth.views`).
"""

from __future__ import annotations

import math

import numpy as np

from sbe.synth.cities import City
from sbe.synth.difficulty import Knobs
from sbe.synth.genome import Genome, mutate, sample_genome, sample_theme
from sbe.synth.plan import Building, DatasetPlan, Facade, Line, Prop, Street
from sbe.synth.styles import STYLES, CityStyle, family_by_name
from sbe.synth.views import pick_targets, plan_drives, plan_views


def _unit(bearing_deg: float) -> np.ndarray:
    b = math.radians(bearing_deg)
    return np.array([math.sin(b), math.cos(b)])


class Ids:
    """Global running counters for building and facade indexes."""

    def __init__(self, building: int = 0, facade: int = 0) -> None:
        self.building = building
        self.facade = facade

    def next_building(self) -> int:
        self.building += 1
        return self.building - 1

    def next_facade(self) -> int:
        self.facade += 1
        return self.facade - 1


class _RegionBuilder:
    """Builds one map region's blocks, buildings and lines (see the module docstring)."""

    def __init__(
        self, city: City, rng: np.random.Generator, knobs: Knobs, ids: Ids, style: CityStyle
    ) -> None:
        self.city = city.key
        self.style = style
        self.rng = rng
        self.knobs = knobs
        self.ids = ids
        self.theme = sample_theme(city.key, rng, style)
        angle = city.grid_angle_deg + float(rng.normal(0.0, 5.0))
        self.a_hat = _unit(angle + 90.0)
        self.b_hat = _unit(angle)
        self.buildings: dict[int, Building] = {}
        self.facades: dict[int, Facade] = {}
        self.recent: list[int] = []  # recently placed buildings (duplicate sources)
        # per line key ((axis, street index, side)) the facades placed on it, in plane coords
        self.line_facades: dict[tuple[str, int, int], list[int]] = {}

    # -- buildings -------------------------------------------------------------------------------

    def _genome(self) -> tuple[Genome, int]:
        rng, k = self.rng, self.knobs
        if self.recent and rng.random() < 0.5 * k.duplicate_prob:
            # terraces: a copy of a recent neighbour's plan with a few details changed
            src = self.recent[-int(rng.integers(1, min(4, len(self.recent)) + 1))]
            root = self.buildings[src].duplicate_of
            src = root if root >= 0 else src
            n = max(1, int(rng.poisson(k.duplicate_mutations)))
            return mutate(self.buildings[src].genome, rng, n, self.style), src
        return sample_genome(self.city, rng, self.theme, k.theme_prob, style=self.style), -1

    def _new_building(self, genome: Genome, dup: int) -> int:
        idx = self.ids.next_building()
        self.buildings[idx] = Building(index=idx, genome=genome, facades=(), duplicate_of=dup)
        self.recent.append(idx)
        return idx

    def _add_facade(self, b: int, key: tuple[str, int, int], u0: float, u1: float, side: bool):
        f = self.ids.next_facade()
        self.facades[f] = Facade(index=f, building=b, line=-1, u0=u0, u1=u1, side=side)
        old = self.buildings[b]
        self.buildings[b] = Building(
            old.index, old.genome, (*old.facades, f), False, old.duplicate_of
        )
        self.line_facades.setdefault(key, []).append(f)

    def _width(self, genome: Genome) -> tuple[float, float]:
        fam = family_by_name(self.style, genome.family)
        w = float(self.rng.uniform(*fam.width))
        gap = 0.0 if self.rng.random() < fam.terrace_prob else float(self.rng.uniform(*fam.gap))
        return w, gap

    def fill_edge(self, key: tuple[str, int, int], u_start: float, u_end: float) -> None:
        """Fill ``u_start..u_end`` of a line with buildings (widths and gaps from their family)."""
        u = u_start
        while u_end - u > 4.0:
            genome, dup = self._genome()
            w, gap = self._width(genome)
            if u + w > u_end:
                w = u_end - u
                if w < 4.0:
                    break
            b = self._new_building(genome, dup)
            self._add_facade(b, key, u, u + w, side=False)
            u += w + gap

    def corner(self, front: tuple[tuple[str, int, int], float, float],
               side: tuple[tuple[str, int, int], float, float]) -> None:  # fmt: skip
        """A corner building with a front facade and a side facade (line key, u0, u1 each)."""
        genome, dup = self._genome()
        b = self._new_building(genome, dup)
        self._add_facade(b, front[0], front[1], front[2], side=False)
        self._add_facade(b, side[0], side[1], side[2], side=True)


def plan_region(
    dataset_id: int,
    city: City,
    lat0: float,
    lon0: float,
    n_targets: int,
    knobs: Knobs,
    rng: np.random.Generator,
    ids: Ids,
    style: CityStyle | None = None,
) -> DatasetPlan:
    """Lay out one map region with up to ``n_targets`` target buildings (see module docstring).

    ``style`` overrides ``STYLES[city.key]``; with it, ``city`` is a gazetteer place and the plan
    carries both (``plan.place``, ``plan.style``) to the renderers.
    """
    own = style is not None
    style = STYLES[city.key] if style is None else style
    rb = _RegionBuilder(city, rng, knobs, ids, style)
    # grid: a row of blocks (or two), enough edges for the requested targets
    nby = 1 if n_targets <= 6 or rng.random() < 0.5 else 2
    per_block = 5.5 if nby == 1 else 4.5
    nbx = int(min(10, max(1, math.ceil(n_targets / per_block * 1.15))))
    bx = [float(rng.uniform(60.0, 100.0)) for _ in range(nbx)]
    by = [float(rng.uniform(40.0, 70.0)) for _ in range(nby)]
    wv = [float(rng.uniform(*style.street_width)) for _ in range(nbx + 1)]
    wh = [float(rng.uniform(*style.street_width)) for _ in range(nby + 1)]
    a0 = [0.0]
    for i in range(1, nbx):
        a0.append(a0[-1] + bx[i - 1] + wv[i])
    b0 = [0.0]
    for j in range(1, nby):
        b0.append(b0[-1] + by[j - 1] + wh[j])
    # centre the grid on the region origin
    ca = (a0[-1] + bx[-1]) / 2
    cb = (b0[-1] + by[-1]) / 2
    a0 = [a - ca for a in a0]
    b0 = [b - cb for b in b0]

    # Facades are placed on the lines in *edge* coordinates first; a line key is
    # ("h", j, side) for horizontal street j or ("v", i, side) for vertical street i, side +1 when
    # the facades are on the +a/+b side of the centreline. Each key's u axis is defined below.
    def hkey(j: int, side: int) -> tuple[str, int, int]:
        return ("h", j, side)

    def vkey(i: int, side: int) -> tuple[str, int, int]:
        return ("v", i, side)

    # Line u axes: for a horizontal street the facades on side +1 (block bottoms) face -b and run
    # along +a; on side -1 (block tops) they face +b and run along -a. Likewise for vertical
    # streets: side +1 (block left edges) face -a and run along -b; side -1 face +a, run along +b.
    # u is measured from a = 0 (or b = 0) so that positions from different blocks line up.
    for i in range(nbx):
        for j in range(nby):
            a_lo, a_hi = a0[i], a0[i] + bx[i]
            b_lo, b_hi = b0[j], b0[j] + by[j]
            cl = [float(np.clip(rng.uniform(7.0, 16.0), 6.0, 18.0)) for _ in range(8)]
            # corners: bottom-left, bottom-right, top-right, top-left (counterclockwise)
            bottom, right = hkey(j, +1), vkey(i + 1, -1)
            top, left = hkey(j + 1, -1), vkey(i, +1)
            # u along each key: bottom u=a, right u=b, top u=-a, left u=-b
            rb.corner((bottom, a_lo, a_lo + cl[0]), (left, -b_lo - cl[1], -b_lo))
            rb.corner((right, b_lo, b_lo + cl[2]), (bottom, a_hi - cl[3], a_hi))
            rb.corner((top, -a_hi, -a_hi + cl[4]), (right, b_hi - cl[5], b_hi))
            rb.corner((left, -b_hi, -b_hi + cl[6]), (top, -a_lo - cl[7], -a_lo))
            rb.fill_edge(bottom, a_lo + cl[0], a_hi - cl[3])
            rb.fill_edge(right, b_lo + cl[2], b_hi - cl[5])
            rb.fill_edge(top, -a_hi + cl[4], -a_lo - cl[7])
            rb.fill_edge(left, -b_hi + cl[6], -b_lo - cl[1])

    plan = DatasetPlan(
        dataset_id=dataset_id,
        city=city.key,
        lat0=lat0,
        lon0=lon0,
        place=city if own else None,
        style=style if own else None,
    )
    a_hat, b_hat = rb.a_hat, rb.b_hat
    a_min, a_max = a0[0] - wv[0], a0[-1] + bx[-1] + wv[-1]
    b_min, b_max = b0[0] - wh[0], b0[-1] + by[-1] + wh[-1]
    # streets (centrelines)
    street_of: dict[tuple[str, int], int] = {}

    def add_street(
        key: tuple[str, int], start: np.ndarray, direction: np.ndarray, length: float, width: float
    ) -> None:
        sid = len(plan.streets)
        plan.streets[sid] = Street(sid, tuple(start), tuple(direction), length, width)
        street_of[key] = sid

    for j in range(nby + 1):
        b_c = (b0[j] - wh[j] / 2) if j < nby else (b0[-1] + by[-1] + wh[j] / 2)
        add_street(("h", j), a_min * a_hat + b_c * b_hat, a_hat, a_max - a_min, wh[j])
    for i in range(nbx + 1):
        a_c = (a0[i] - wv[i] / 2) if i < nbx else (a0[-1] + bx[-1] + wv[i] / 2)
        add_street(("v", i), a_c * a_hat + b_min * b_hat, b_hat, b_max - b_min, wv[i])

    # lines: plane origin / tangent / normal per key
    heights: dict[tuple[str, int, int], float] = {}
    for key, fids in rb.line_facades.items():
        hs = [rb.buildings[rb.facades[f].building].genome.wall_height for f in fids]
        heights[key] = float(np.median(hs))
    facades: dict[int, Facade] = {}
    for key in sorted(rb.line_facades):
        axis, idx, side = key
        st = plan.streets[street_of[(axis, idx)]]
        half = st.width / 2
        if axis == "h":
            b_line = b0[idx] if side > 0 else b0[idx - 1] + by[idx - 1]
            tangent = a_hat if side > 0 else -a_hat
            normal = -b_hat if side > 0 else b_hat
            origin = b_line * b_hat
        else:
            a_line = a0[idx] if side > 0 else a0[idx - 1] + bx[idx - 1]
            tangent = -b_hat if side > 0 else b_hat
            normal = -a_hat if side > 0 else a_hat
            origin = a_line * a_hat
        del half
        lid = len(plan.lines)
        fids = sorted(rb.line_facades[key], key=lambda f: rb.facades[f].u0)
        for f in fids:
            old = rb.facades[f]
            facades[f] = Facade(old.index, old.building, lid, old.u0, old.u1, old.side)
        opp = heights.get((axis, idx, -side), float(rng.uniform(8.0, 16.0)))
        props = _street_props(rng, style, knobs, [facades[f] for f in fids], rb, lid)
        plan.lines[lid] = Line(
            id=lid,
            street=street_of[(axis, idx)],
            origin=(float(origin[0]), float(origin[1])),
            tangent=(float(tangent[0]), float(tangent[1])),
            normal=(float(normal[0]), float(normal[1])),
            facades=tuple(fids),
            sidewalk_m=float(rng.uniform(*style.sidewalk)),
            opposite_height_m=opp,
            props=props,
        )
    plan.facades = facades
    plan.buildings = rb.buildings
    plan_drives(plan, city, rng, knobs)
    pick_targets(plan, n_targets, rng, knobs)
    plan_views(plan, rng, knobs)
    return plan


def _street_props(
    rng: np.random.Generator,
    style,
    knobs: Knobs,
    facades: list[Facade],
    rb: _RegionBuilder,
    lid: int,
) -> tuple[Prop, ...]:
    """Trees and poles along a line's sidewalk, only in front of its buildings."""
    if not facades:
        return ()
    u_lo, u_hi = facades[0].u0, facades[-1].u1
    props: list[Prop] = []
    kinds = list(style.tree_kinds)
    p_kind = np.asarray([style.tree_kinds[k] for k in kinds])
    tree_rate = style.tree_density * knobs.tree_density / 10.0
    if tree_rate > 0:
        u = u_lo + float(rng.exponential(1.0 / tree_rate))
        kind = kinds[int(rng.choice(len(kinds), p=p_kind / p_kind.sum()))]  # one species per street
        while u < u_hi:
            if rng.random() < 0.15:
                kind = kinds[int(rng.choice(len(kinds), p=p_kind / p_kind.sum()))]
            h = {"palm": (7.0, 12.0), "conifer": (5.0, 9.0)}.get(kind, (6.0, 11.0))
            props.append(
                Prop("tree", u, -1.0, float(rng.uniform(*h)), int(rng.integers(2**31)), kind)
            )
            u += max(6.0, float(rng.exponential(1.0 / tree_rate)))
    pole_rate = style.pole_density / 10.0
    u = u_lo + float(rng.exponential(1.0 / pole_rate))
    while u < u_hi:
        kind = "lamp" if rng.random() < 0.6 else "sign_pole"
        props.append(Prop(kind, u, -1.0, 6.5 if kind == "lamp" else 2.8, int(rng.integers(2**31))))
        u += max(5.0, float(rng.exponential(1.0 / pole_rate)))
    return tuple(props)
