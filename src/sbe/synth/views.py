"""Capture of one map region: drives down its streets, targets on its facades, the views of each.

Targets of one facade lie within :data:`TARGET_RADIUS_M` of each other, targets of different
buildings at least :data:`MIN_TARGET_SEPARATION_M` apart; each target is seen by
:data:`MIN_VIEWS` to :data:`MAX_VIEWS` panoramas, preferring different drives (dates).
"""

from __future__ import annotations

import math

import numpy as np

from sbe.synth.cities import City
from sbe.synth.difficulty import Knobs
from sbe.synth.genome import mutate
from sbe.synth.plan import Building, DatasetPlan, Drive, Panorama, Street, Target, View
from sbe.synth.season import random_date, sample_conditions

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


def plan_drives(plan: DatasetPlan, city: City, rng: np.random.Generator, knobs: Knobs) -> None:
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


def pick_targets(plan: DatasetPlan, n_targets: int, rng: np.random.Generator, knobs: Knobs) -> None:
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
                plan.buildings[src].genome,
                rng,
                max(1, int(rng.poisson(knobs.duplicate_mutations))),
                plan.style_info,
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


def plan_views(plan: DatasetPlan, rng: np.random.Generator, knobs: Knobs) -> None:
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
