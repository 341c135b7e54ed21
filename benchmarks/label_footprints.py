"""Labelling photos with footprints: throughput against a million footprints, accuracy against noise.

Part 1 (throughput): a generated city of ``--footprints`` rectangular buildings (blocks of 4 x 4
houses between 12 m streets) written as GeoParquet, and ``--photos`` cameras on the street
centrelines looking at the facades (heading across the street, +-35 deg). Timed: reading + checking
+ indexing the footprints (the STRtree build included) and casting every ray, in this process (numpy
and GEOS use one core here). The same labels are computed for a subsample by a per-photo shapely
loop (one LineString, one tree query, one intersection per photo), the way one would write it
naively; its time is extrapolated to all photos and said so.

Part 2 (accuracy): a synthetic ``sbe synth`` world (planned, not rendered) labelled from its
Mapillary-style metadata at several GPS / compass noise levels, scored against the true building
of every view. The table printed is the one in docs/footprints.md.

Run: ``python benchmarks/label_footprints.py`` (defaults: 1,000,000 footprints, 200,000 photos).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import shapely

from sbe.data.footprints import (
    DEG_PER_M,
    RaySettings,
    cast_rays,
    geoparquet_table,
    read_footprints,
)
from sbe.sphere import offset_latlon

LAT0, LON0 = 48.8566, 2.3522
HOUSE_M, BLOCK_HOUSES, STREET_M = 14.0, 4, 12.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_city(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` house footprints (lon/lat polygons) and their ids, on a grid of blocks."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    i, j = np.divmod(np.arange(n), side)
    pitch = HOUSE_M + 1.0
    block = BLOCK_HOUSES * pitch + STREET_M

    def origin(k: np.ndarray) -> np.ndarray:
        return (k // BLOCK_HOUSES) * block + (k % BLOCK_HOUSES) * pitch

    e0, n0 = origin(i), origin(j)
    w = rng.uniform(9.0, HOUSE_M, n)
    d = rng.uniform(9.0, HOUSE_M, n)
    boxes = shapely.box(e0, n0, e0 + w, n0 + d)

    def to_lonlat(xy: np.ndarray) -> np.ndarray:
        lat, lon = offset_latlon(LAT0, LON0, xy[:, 0], xy[:, 1])
        return np.stack([lon, lat], axis=1)

    return shapely.transform(boxes, to_lonlat), np.array([f"w{k + 1}" for k in range(n)])


def make_photos(n_fp: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cameras on street centrelines (inside the city) looking across the street."""
    rng = np.random.default_rng(seed + 1)
    side = int(np.ceil(np.sqrt(n_fp)))
    pitch = HOUSE_M + 1.0
    block = BLOCK_HOUSES * pitch + STREET_M
    n_blocks = max(1, side // BLOCK_HOUSES)
    street = rng.integers(1, max(2, n_blocks), n) * block - STREET_M / 2  # centreline offset
    along = rng.uniform(0, n_blocks * block - STREET_M, n)
    vertical = rng.random(n) < 0.5  # a north-south street (east = street) or east-west
    east = np.where(vertical, street, along)
    north = np.where(vertical, along, street)
    across = np.where(vertical, 90.0, 0.0) + np.where(rng.random(n) < 0.5, 0.0, 180.0)
    heading = (across + rng.uniform(-35, 35, n)) % 360.0
    lat, lon = offset_latlon(LAT0, LON0, east, north)
    return lat, lon, heading


def loop_labels(fp, lat, lon, heading, max_m: float) -> np.ndarray:
    """The naive way: one ray, one query and one intersection per photo (no fan).

    Rays are straight in lon/lat over a street's length (as in the vectorised code); the order of
    points along one ray, hence its first hit, does not depend on the scale of each axis.
    """
    out = np.full(len(lat), -1, dtype=np.int64)
    for k in range(len(lat)):
        h = np.radians(heading[k])
        de = np.sin(h) * max_m * DEG_PER_M / np.cos(np.radians(lat[k]))
        dn = np.cos(h) * max_m * DEG_PER_M
        cam = shapely.Point(lon[k], lat[k])
        ray = shapely.LineString([(lon[k], lat[k]), (lon[k] + de, lat[k] + dn)])
        if len(fp.tree.query(cam, predicate="intersects")):
            continue
        best = np.inf
        for j in fp.tree.query(ray, predicate="intersects"):
            d = cam.distance(ray.intersection(fp.geoms[j]))
            if d < best:
                best, out[k] = d, j
    return out


def throughput(args: argparse.Namespace) -> None:
    print(f"== throughput: {args.footprints:,} footprints, {args.photos:,} photos ==")
    print(f"cores visible: {os.cpu_count()}, usable: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "city.parquet"
        t = time.perf_counter()
        # in a child process, so that this one's peak RSS is the labelling's alone
        cmd = [sys.executable, __file__, "--write-city", str(path)]
        subprocess.run([*cmd, "--footprints", str(args.footprints), "--seed", str(args.seed)],
                       check=True)  # fmt: skip
        print(f"generated and wrote the footprints in {time.perf_counter() - t:.1f} s (untimed)")
        lat, lon, heading = make_photos(args.footprints, args.photos, args.seed)
        rss0 = peak_rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        fp = read_footprints(path, "osm_id")
        t1, c1 = time.perf_counter(), time.process_time()
        settings = RaySettings(max_distance_m=60.0, fov_tolerance_deg=10.0)
        labels = cast_rays(fp, lat, lon, heading, settings)
        t2, c2 = time.perf_counter(), time.process_time()
    index_s, cast_s = t1 - t0, t2 - t1
    total = index_s + cast_s
    load = os.getloadavg()[0]
    print(f"load average while timing: {load:.1f} on {len(os.sched_getaffinity(0))} cores")
    print(
        f"CPU time (less sensitive to other load): index {c1 - c0:.2f} s, cast {c2 - c1:.2f} s "
        f"-> {args.photos / (c2 - c0):,.0f} photos per CPU-second, index included"
    )
    print(f"read + check + index {len(fp):,} footprints: {index_s:.2f} s")
    print(f"cast {args.photos:,} photos: {cast_s:.2f} s ({args.photos / cast_s:,.0f} photos/s)")
    print(
        f"vectorised, index build included: {args.photos / total:,.0f} photos/s "
        f"({total:.2f} s in all)"
    )
    print(f"labelled {labels.labelled.mean():.1%}; not labelled: {labels.reason_counts()}")
    print(
        f"peak RSS {peak_rss_mb():,.0f} MB (photos and imports before reading the footprints: "
        f"{rss0:,.0f} MB)"
    )
    k = min(args.loop_sample, args.photos)
    sub = np.random.default_rng(args.seed + 2).choice(args.photos, k, replace=False)
    t = time.perf_counter()
    naive = loop_labels(fp, lat[sub], lon[sub], heading[sub], 60.0)
    loop_s = time.perf_counter() - t
    per = loop_s / k
    # the vectorised code on the same subsample, timed the same way (same load)
    t = time.perf_counter()
    cast_rays(fp, lat[sub], lon[sub], heading[sub], settings)
    print(f"vectorised on the same subsample: {k / (time.perf_counter() - t):,.0f} photos/s")
    strict = cast_rays(fp, lat[sub], lon[sub], heading[sub], RaySettings(fov_tolerance_deg=0))
    agree = float((naive == strict.footprint).mean())
    print(
        f"per-photo shapely loop on a subsample of {k:,}: {1 / per:,.0f} photos/s; "
        f"extrapolated to {args.photos:,} photos: {per * args.photos:.1f} s + the same index "
        f"build = {args.photos / (per * args.photos + index_s):,.0f} photos/s (extrapolated)"
    )
    print(
        f"speed-up vectorised / loop (index included): {(per * args.photos + index_s) / total:.1f}x"
    )
    print(f"loop and vectorised (central ray only) agree on {agree:.2%} of the subsample")


def accuracy_curve(args: argparse.Namespace) -> None:
    from sbe.synth.difficulty import knobs_for
    from sbe.synth.footprints import write_footprints
    from sbe.synth.mapillary import MetadataNoise, view_features
    from sbe.synth.world import plan_world

    print(f"\n== accuracy against noise: synthetic world of {args.buildings} target buildings ==")
    world = plan_world(args.buildings, args.seed, knobs_for(0.5), 12)
    truth = {}
    for plan in world.datasets:
        for v in plan.views:
            truth[(plan.dataset_id << 32) | v.patch_id] = plan.targets[v.target_id].building
    with tempfile.TemporaryDirectory() as tmp:
        write_footprints(world, args.seed, Path(tmp) / "fp.parquet")
        fp = read_footprints(Path(tmp) / "fp.parquet")
    print(f"{len(fp):,} footprints, {len(truth):,} views; {args.repeats} noise draws per row")
    print("| GPS sd/axis (m) | compass sd (deg) | labelled | right building (of all) | "
          "right (of labelled) | inside a building | no hit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for gps, comp in [(0, 0), (1, 2), (1.5, 3), (2, 3), (2, 5), (3, 5), (5, 8), (8, 12)]:
        rows = []
        for r in range(args.repeats):
            feats = view_features(world, MetadataNoise(gps, comp), args.seed + 1000 * r)
            ids = np.array([int(f["properties"]["id"]) for f in feats])
            lon = np.array([f["geometry"]["coordinates"][0] for f in feats])
            lat = np.array([f["geometry"]["coordinates"][1] for f in feats])
            head = np.array([f["properties"]["compass_angle"] for f in feats])
            lab = cast_rays(fp, lat, lon, head)
            want = np.array([f"w{truth[i]}" for i in ids])
            got = np.where(lab.footprint >= 0, fp.ids[np.maximum(lab.footprint, 0)], "")
            right = got == want
            c = lab.reason_counts()
            rows.append(
                (
                    lab.labelled.mean(),
                    right.mean(),
                    right[lab.labelled].mean(),
                    c.get("camera_inside_building", 0) / len(ids),
                    c.get("no_footprint_hit", 0) / len(ids),
                )
            )
        m = np.mean(rows, axis=0)
        mark = " (default)" if (gps, comp) == (1.5, 3) else ""
        print(
            f"| {gps:g}{mark} | {comp:g} | {m[0]:.1%} | {m[1]:.1%} | {m[2]:.1%} | {m[3]:.1%} | "
            f"{m[4]:.1%} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--footprints", type=int, default=1_000_000)
    ap.add_argument("--photos", type=int, default=200_000)
    ap.add_argument("--loop-sample", type=int, default=2_000)
    ap.add_argument("--buildings", type=int, default=300, help="accuracy world size")
    ap.add_argument("--repeats", type=int, default=3, help="noise draws per accuracy row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-curve", action="store_true")
    ap.add_argument("--write-city", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_city:
        geoms, ids = make_city(args.footprints, args.seed)
        pq.write_table(geoparquet_table(geoms, {"osm_id": ids}), args.write_city)
        return
    throughput(args)
    if not args.skip_curve:
        accuracy_curve(args)


if __name__ == "__main__":
    main()
