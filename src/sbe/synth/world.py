"""The synthetic world: cities -> map regions (datasets) -> street blocks -> buildings, targets, views.

Planning is cheap and deterministic; it happens once, in the parent process, and yields plain
frozen dataclasses that the renderers (one process per tar) turn into pixels.

Geometry of one map region (all metres, in a local east/north frame around the region centre):

- A grid of rectangular blocks, axis ``a`` along the grid angle's cross direction and ``b`` along it,
  separated by streets. Every block edge is a row of building facades facing the street.
- A *line* is one side of one street: a vertical plane holding the facades of every block along
  that side. ``u`` runs along the line (to the right when facing the facades from the street), ``v``
  is height, ``w`` is the distance from the facade plane toward the street.
- Corner buildings own the ends of two edges, so they have a front and a side facade.
- Panoramas are taken along street centrelines by several *drives* (one date and weather each).
- A target is a point on a facade; each target is seen by 2-7 panoramas within a limited angle of
  the facade normal. Targets of one facade lie within about 10 m of each other, targets of
  different buildings are at least :data:`MIN_TARGET_SEPARATION_M` apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sbe.sphere import offset_latlon
from sbe.synth.cities import CITY_BY_KEY, City
from sbe.synth.difficulty import Knobs
from sbe.synth.season import Conditions, random_date, sample_conditions
from sbe.synth.styles import (
    STYLES,
    Genome,
    family_by_name,
    mutate,
    sample_genome,
    sample_theme,
)

#: targets of different buildings are at least this far apart (horizontal metres)
MIN_TARGET_SEPARATION_M = 20.0
#: targets of one facade lie within this horizontal radius of the facade's target centre
TARGET_RADIUS_M = 4.0
#: camera height above the street, metres
CAMERA_HEIGHT_M = 2.5
#: views per target
MIN_VIEWS, MAX_VIEWS = 2, 7
_VIEW_COUNT_P = (0.16, 0.24, 0.22, 0.16, 0.12, 0.10)  # for 2..7 views
_TARGET_COUNT_P = (0.45, 0.30, 0.15, 0.10)  # for 1..4 targets per building

#: city order: the first few already span both hemispheres and several climates
CITY_ORDER: tuple[str, ...] = (
    "amsterdam", "sydney", "singapore", "chicago", "cape_town", "florence", "moscow",
    "buenos_aires", "las_vegas", "reykjavik",
)  # fmt: skip


@dataclass(frozen=True)
class Facade:
    """One wall of a building on one line, spanning ``u0..u1`` metres along the line."""

    index: int
    building: int
    line: int
    u0: float
    u1: float
    side: bool

    @property
    def width(self) -> float:
        return self.u1 - self.u0


@dataclass(frozen=True)
class Building:
    """A building: its plan, its facades, whether it carries targets, what it copies."""

    index: int
    genome: Genome
    facades: tuple[int, ...]
    is_target: bool = False
    duplicate_of: int = -1


@dataclass(frozen=True)
class Prop:
    """A fixed street object on a line's sidewalk: a tree, lamp post or sign pole."""

    kind: str
    u: float
    w: float
    height: float
    seed: int
    tree_kind: str = ""


@dataclass(frozen=True)
class Line:
    """One side of a street: the vertical plane ``origin + u * tangent + v * up``.

    Attributes:
        origin: (east, north) metres of u = 0 on the facade plane.
        tangent: unit (east, north) along increasing u.
        normal: unit (east, north) from the facades toward the street.
        street: the street this side belongs to.
        facades: facade indexes on this line, sorted by u0.
        sidewalk_m: sidewalk width.
        opposite_height_m: typical height of the buildings across the street (for shadows).
        props: trees and poles on this side's sidewalk.
    """

    id: int
    street: int
    origin: tuple[float, float]
    tangent: tuple[float, float]
    normal: tuple[float, float]
    facades: tuple[int, ...]
    sidewalk_m: float
    opposite_height_m: float
    props: tuple[Prop, ...]

    def point(self, u: float, v: float = 0.0, w: float = 0.0) -> np.ndarray:
        """World (east, north, up) of line coordinates (u along, v up, w toward the street)."""
        e = self.origin[0] + u * self.tangent[0] + w * self.normal[0]
        n = self.origin[1] + u * self.tangent[1] + w * self.normal[1]
        return np.array([e, n, v])


@dataclass(frozen=True)
class Street:
    """A street centreline from ``start`` along ``direction`` for ``length`` metres."""

    id: int
    start: tuple[float, float]
    direction: tuple[float, float]
    length: float
    width: float


@dataclass(frozen=True)
class Drive:
    """One capture run down a street: a date, its weather and light, parked cars, panoramas."""

    id: int
    street: int
    conditions: Conditions
    lane_offset_m: float
    spacing_m: float
    start_m: float
    car_seed: int


@dataclass(frozen=True)
class Panorama:
    """A camera position (StreetViewID) from one drive."""

    id: int
    drive: int
    position: tuple[float, float, float]


@dataclass(frozen=True)
class Target:
    """A point on a facade (TargetID), at ``u`` along its line and ``v`` metres up."""

    id: int
    building: int
    facade: int
    line: int
    u: float
    v: float


@dataclass(frozen=True)
class View:
    """One image (PatchID): a target seen from a panorama, with its camera nuisances."""

    patch_id: int
    target_id: int
    panorama_id: int
    fov_deg: float
    roll_deg: float
    shift: tuple[float, float]
    seed: int


@dataclass
class DatasetPlan:
    """Everything needed to render one map region into one tar."""

    dataset_id: int
    city: str
    lat0: float
    lon0: float
    streets: dict[int, Street] = field(default_factory=dict)
    lines: dict[int, Line] = field(default_factory=dict)
    buildings: dict[int, Building] = field(default_factory=dict)
    facades: dict[int, Facade] = field(default_factory=dict)
    drives: dict[int, Drive] = field(default_factory=dict)
    panoramas: dict[int, Panorama] = field(default_factory=dict)
    targets: dict[int, Target] = field(default_factory=dict)
    views: list[View] = field(default_factory=list)

    @property
    def city_info(self) -> City:
        return CITY_BY_KEY[self.city]

    def target_buildings(self) -> list[int]:
        return sorted({t.building for t in self.targets.values()})

    def latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Latitude/longitude (degrees) of a point in this region's local frame."""
        lat, lon = offset_latlon(self.lat0, self.lon0, east_m, north_m)
        return float(lat), float(lon)


def _unit(bearing_deg: float) -> np.ndarray:
    b = math.radians(bearing_deg)
    return np.array([math.sin(b), math.cos(b)])


class _Ids:
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

    def __init__(self, city: str, rng: np.random.Generator, knobs: Knobs, ids: _Ids) -> None:
        self.city = city
        self.style = STYLES[city]
        self.rng = rng
        self.knobs = knobs
        self.ids = ids
        self.theme = sample_theme(city, rng)
        angle = CITY_BY_KEY[city].grid_angle_deg + float(rng.normal(0.0, 5.0))
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
            return mutate(self.buildings[src].genome, rng, n), src
        return sample_genome(self.city, rng, self.theme, k.theme_prob), -1

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


def _plan_region(
    dataset_id: int,
    city: City,
    lat0: float,
    lon0: float,
    n_targets: int,
    knobs: Knobs,
    rng: np.random.Generator,
    ids: _Ids,
) -> DatasetPlan:
    """Lay out one map region with up to ``n_targets`` target buildings (see module docstring)."""
    style = STYLES[city.key]
    rb = _RegionBuilder(city.key, rng, knobs, ids)
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

    plan = DatasetPlan(dataset_id=dataset_id, city=city.key, lat0=lat0, lon0=lon0)
    a_hat, b_hat = rb.a_hat, rb.b_hat
    a_min, a_max = a0[0] - wv[0], a0[-1] + bx[-1] + wv[-1]
    b_min, b_max = b0[0] - wh[0], b0[-1] + by[-1] + wh[-1]
    # streets (centrelines)
    street_of: dict[tuple[str, int], int] = {}
    for j in range(nby + 1):
        b_c = (b0[j] - wh[j] / 2) if j < nby else (b0[-1] + by[-1] + wh[j] / 2)
        sid = len(plan.streets)
        start = a_min * a_hat + b_c * b_hat
        plan.streets[sid] = Street(sid, tuple(start), tuple(a_hat), a_max - a_min, wh[j])
        street_of[("h", j)] = sid
    for i in range(nbx + 1):
        a_c = (a0[i] - wv[i] / 2) if i < nbx else (a0[-1] + bx[-1] + wv[i] / 2)
        sid = len(plan.streets)
        start = a_c * a_hat + b_min * b_hat
        plan.streets[sid] = Street(sid, tuple(start), tuple(b_hat), b_max - b_min, wv[i])
        street_of[("v", i)] = sid

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
    _plan_drives(plan, city, rng, knobs)
    _pick_targets(plan, n_targets, rng, knobs)
    _plan_views(plan, rng, knobs)
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


def _plan_drives(plan: DatasetPlan, city: City, rng: np.random.Generator, knobs: Knobs) -> None:
    for sid, st in plan.streets.items():
        for _ in range(int(rng.integers(3, 7))):
            did = len(plan.drives)
            date = random_date(rng)
            cond = sample_conditions(city, date, rng, knobs.weather_severity)
            plan.drives[did] = Drive(
                id=did,
                street=sid,
                conditions=cond,
                lane_offset_m=float(rng.uniform(-0.18, 0.18)) * st.width,
                spacing_m=float(rng.uniform(6.0, 10.0)),
                start_m=float(rng.uniform(0.0, 10.0)),
                car_seed=int(rng.integers(2**31)),
            )


def _pick_targets(
    plan: DatasetPlan, n_targets: int, rng: np.random.Generator, knobs: Knobs
) -> None:
    """Choose target buildings greedily, keeping other buildings' targets 20 m away."""
    accepted: list[np.ndarray] = []  # (east, north) of accepted targets
    order = rng.permutation(sorted(plan.buildings))
    tid = 0
    targets: list[Target] = []
    chosen: set[int] = set()
    chosen_order: list[int] = []
    for b in order:
        if len(chosen) >= n_targets:
            break
        b = int(b)
        bld = plan.buildings[b]
        n = 1 + int(rng.choice(len(_TARGET_COUNT_P), p=_TARGET_COUNT_P))
        fac_ids = list(bld.facades)
        front = [f for f in fac_ids if not plan.facades[f].side]
        side = [f for f in fac_ids if plan.facades[f].side]
        plan_f: list[int] = []
        for k in range(n):
            if side and k > 0 and rng.random() < 0.4:
                plan_f.append(side[0])
            else:
                plan_f.append(front[0] if front else fac_ids[0])
        cand: list[Target] = []
        centres: dict[int, float] = {}
        for f in plan_f:
            fac = plan.facades[f]
            line = plan.lines[fac.line]
            street = plan.streets[line.street]
            if fac.width < 3.0:
                continue
            if f not in centres:
                centres[f] = (fac.u0 + fac.u1) / 2 + float(rng.uniform(-0.15, 0.15)) * fac.width
            r = min(TARGET_RADIUS_M, fac.width / 2 - 1.0)
            d_min = max(3.0, street.width * 0.32)  # nearest camera to the facade, roughly
            v_hi = min(
                bld.genome.wall_height - 0.8, CAMERA_HEIGHT_M + d_min * math.tan(math.radians(38))
            )
            v_lo = 1.5
            for _ in range(12):
                u = centres[f] + float(rng.uniform(-r, r))
                v = float(rng.uniform(v_lo, max(v_lo + 0.5, v_hi)))
                if all(c.facade != f or math.hypot(c.u - u, c.v - v) >= 2.5 for c in cand):
                    cand.append(Target(-1, b, f, fac.line, u, v))
                    break
        if not cand:
            continue
        pts = [plan.lines[c.line].point(c.u)[:2] for c in cand]
        if accepted:
            acc = np.asarray(accepted)
            if any(np.min(np.linalg.norm(acc - p, axis=1)) < MIN_TARGET_SEPARATION_M for p in pts):
                continue
        accepted.extend(pts)
        chosen.add(b)
        chosen_order.append(b)
        for c in cand:
            targets.append(Target(tid, c.building, c.facade, c.line, c.u, c.v))
            tid += 1
    # TargetIDs: a random permutation so that ids carry no order information
    ids = rng.permutation(len(targets)) + 1
    plan.targets = {
        int(i): Target(int(i), t.building, t.facade, t.line, t.u, t.v)
        for i, t in zip(ids, targets, strict=True)
    }
    # near-duplicate target buildings: some targets are variants of another target building's
    # plan in the same region (a development built from one design), the retrieval distractors
    # the difficulty dial is about
    done: list[int] = []
    for b in chosen_order:
        old = plan.buildings[b]
        genome, dup = old.genome, old.duplicate_of
        if done and rng.random() < knobs.duplicate_prob:
            src = done[int(rng.integers(len(done)))]
            root = plan.buildings[src].duplicate_of
            src = root if root >= 0 else src
            genome = mutate(
                plan.buildings[src].genome, rng, max(1, int(rng.poisson(knobs.duplicate_mutations)))
            )
            dup = src
        plan.buildings[b] = Building(old.index, genome, old.facades, True, dup)
        done.append(b)


def drive_positions(drive: Drive, street: Street) -> tuple[np.ndarray, np.ndarray]:
    """Every panorama position a drive could have taken along its street.

    Returns:
        ``(east_north (K, 2), height (K,))`` in metres; panorama k is at ``start + k * spacing``
        along the centreline, offset to the drive's lane with a little wobble.
    """
    k = np.arange(int((street.length - drive.start_m) / drive.spacing_m) + 1)
    wobble = np.random.default_rng([drive.car_seed, 1]).normal(0.0, 0.3, (len(k), 2))
    d_dir = np.asarray(street.direction)
    lateral = np.array([-d_dir[1], d_dir[0]])
    s = drive.start_m + k * drive.spacing_m
    pos = (
        np.asarray(street.start)[None, :]
        + s[:, None] * d_dir[None, :]
        + (drive.lane_offset_m + wobble[:, 0:1]) * lateral[None, :]
    )
    return pos, CAMERA_HEIGHT_M + 0.08 * wobble[:, 1]


def _plan_views(plan: DatasetPlan, rng: np.random.Generator, knobs: Knobs) -> None:
    """Choose 2-7 panoramas per target, preferring different drives (dates)."""
    pano_ids: dict[tuple[int, int], int] = {}
    pano_pos: dict[tuple[int, int], tuple[float, float, float]] = {}
    used_by_building: dict[int, set[tuple[int, int]]] = {}
    raw_views: list[tuple[int, tuple[int, int]]] = []
    drives_by_street: dict[int, list[Drive]] = {}
    for d in plan.drives.values():
        drives_by_street.setdefault(d.street, []).append(d)
    max_angle = math.radians(knobs.max_view_angle_deg)
    for tid in sorted(plan.targets):
        t = plan.targets[tid]
        line = plan.lines[t.line]
        st = plan.streets[line.street]
        p_t = line.point(t.u, t.v)
        n = np.asarray(line.normal)
        # candidate panoramas within the view-angle limit; narrow streets may need a wider one
        by_drive: dict[int, list[tuple[int, int]]] = {}
        for widen in (0.0, 10.0, 20.0, 30.0):
            limit = max_angle + math.radians(widen)
            by_drive = {}
            for d in drives_by_street[line.street]:
                pos_all, height_all = drive_positions(d, st)
                rel = pos_all - p_t[:2]
                dist = np.linalg.norm(rel, axis=1)
                front = rel @ n
                ang = np.arccos(np.clip(front / np.maximum(dist, 1e-9), -1.0, 1.0))
                ok = np.flatnonzero((dist >= 4.0) & (front > 1.0) & (ang <= limit))
                for k in ok:
                    key = (d.id, int(k))
                    pano_pos[key] = (
                        float(pos_all[k, 0]),
                        float(pos_all[k, 1]),
                        float(height_all[k]),
                    )
                    by_drive.setdefault(d.id, []).append(key)
            if sum(len(v) for v in by_drive.values()) >= MIN_VIEWS + 1:
                break
        avoid = used_by_building.get(t.building, set())
        n_views = MIN_VIEWS + int(rng.choice(len(_VIEW_COUNT_P), p=_VIEW_COUNT_P))
        total = sum(len(v) for v in by_drive.values())
        if total < MIN_VIEWS:
            continue
        chosen: list[tuple[int, int]] = []
        drive_order = [int(x) for x in rng.permutation(sorted(by_drive))]
        for prefer_new in (True, False):
            rounds = 0
            while len(chosen) < min(n_views, total) and rounds < MAX_VIEWS:
                rounds += 1
                for did in drive_order:
                    opts = [
                        k
                        for k in by_drive[did]
                        if k not in chosen and (not prefer_new or k not in avoid)
                    ]
                    if not opts or len(chosen) >= n_views:
                        continue
                    chosen.append(opts[int(rng.integers(len(opts)))])
            if len(chosen) >= min(n_views, total):
                break
        used_by_building.setdefault(t.building, set()).update(chosen)
        for key in chosen:
            raw_views.append((tid, key))
    # drop targets that ended up with a single view (never happens with >= 2 candidates)
    count: dict[int, int] = {}
    for tid, _ in raw_views:
        count[tid] = count.get(tid, 0) + 1
    raw_views = [(tid, key) for tid, key in raw_views if count[tid] >= MIN_VIEWS]
    plan.targets = {tid: t for tid, t in plan.targets.items() if count.get(tid, 0) >= MIN_VIEWS}
    for b in list(plan.buildings):
        old = plan.buildings[b]
        if old.is_target and not any(t.building == b for t in plan.targets.values()):
            plan.buildings[b] = Building(
                old.index, old.genome, old.facades, False, old.duplicate_of
            )
    for _, key in raw_views:
        if key not in pano_ids:
            pano_ids[key] = len(pano_ids) + 1
            plan.panoramas[pano_ids[key]] = Panorama(pano_ids[key], key[0], pano_pos[key])
    patch_ids = rng.permutation(len(raw_views)) + 1
    lo, hi = knobs.fov_range_deg
    views = []
    for pid, (tid, key) in zip(patch_ids, raw_views, strict=True):
        jitter = knobs.crop_jitter
        views.append(
            View(
                patch_id=int(pid),
                target_id=tid,
                panorama_id=pano_ids[key],
                fov_deg=float(rng.uniform(lo, hi)),
                roll_deg=float(rng.normal(0.0, 0.8)),
                shift=(float(rng.uniform(-jitter, jitter)), float(rng.uniform(-jitter, jitter))),
                seed=int(rng.integers(2**31)),
            )
        )
    plan.views = sorted(views, key=lambda v: v.patch_id)


def _region_centres(city: City, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """``n`` region centres (lat, lon) within the city radius, at least 700 m apart."""
    out: list[np.ndarray] = []
    for _ in range(n):
        best = None
        for _attempt in range(60):
            r = 1000.0 * city.radius_km * math.sqrt(float(rng.uniform(0.02, 1.0)))
            th = float(rng.uniform(0, 2 * math.pi))
            best = np.array([r * math.cos(th), r * math.sin(th)])
            if not out or float(np.min(np.linalg.norm(np.asarray(out) - best, axis=1))) >= 700.0:
                break
        out.append(best)
    res = []
    for p in out:
        lat, lon = offset_latlon(city.lat, city.lon, float(p[0]), float(p[1]))
        res.append((float(lat), float(lon)))
    return res


@dataclass
class WorldPlan:
    """All map regions of one synthetic world."""

    datasets: list[DatasetPlan]
    knobs: Knobs

    @property
    def n_target_buildings(self) -> int:
        return sum(len(d.target_buildings()) for d in self.datasets)


def plan_world(
    n_buildings: int,
    seed: int,
    knobs: Knobs,
    buildings_per_tar: int,
    stream: int = 0,
    first_dataset_id: int = 1,
) -> WorldPlan:
    """Plan a world with exactly ``n_buildings`` target buildings.

    Args:
        n_buildings: buildings that carry targets (filler buildings between them come on top).
        seed: world seed.
        knobs: difficulty knobs.
        buildings_per_tar: target buildings per map region (one tar each), at most.
        stream: independent random stream (0 = the tars, 1 = the packaged parquet).
        first_dataset_id: DatasetID of the first region.

    Returns:
        The :class:`WorldPlan`; regions are ordered by DatasetID.
    """
    rng = np.random.default_rng([seed, stream, 7919])
    cities = [CITY_BY_KEY[k] for k in CITY_ORDER[: max(1, min(len(CITY_ORDER), n_buildings))]]
    per_city = [
        n_buildings // len(cities) + (1 if i < n_buildings % len(cities) else 0)
        for i in range(len(cities))
    ]
    ids = _Ids(building=stream * 10_000_000, facade=stream * 10_000_000)
    datasets: list[DatasetPlan] = []
    next_id = first_dataset_id
    for city, want in zip(cities, per_city, strict=True):
        n_regions = max(1, math.ceil(want / buildings_per_tar))
        centres = _region_centres(city, n_regions + 12, rng)
        remaining, r = want, 0
        while remaining > 0 and r < 50 * (n_regions + 12):
            if r == len(centres):  # regions came out smaller than planned: open more
                centres += _region_centres(city, n_regions + 12, rng)
            quota = math.ceil(remaining / max(1, n_regions - r)) if r < n_regions else remaining
            quota = min(quota, buildings_per_tar)
            drng = np.random.default_rng([seed, stream, next_id])
            lat0, lon0 = centres[r]
            plan = _plan_region(next_id, city, lat0, lon0, quota, knobs, drng, ids)
            got = len(plan.target_buildings())
            if got:
                datasets.append(plan)
                next_id += 1
                remaining -= got
            r += 1
    return WorldPlan(datasets=datasets, knobs=knobs)
