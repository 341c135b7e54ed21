"""Throughput of ``sbe synth``: full worlds (plan, render, JPEG, tars, truth) on this machine.

Rows:
- ``target``: about 1,000 images of 640x640 with ``--workers`` processes (default 2), to compare
  with the budget of 60 s;
- ``demo``: about 2,500 images of 224x224 (the size the demo uses), budget ~30 s;
- ``baseline``: the 640 px world again, first 300 images' worth of buildings, with one process
  (the parallel speed-up is measured against it in the same run).

Wall time includes process start-up and planning; CPU seconds are summed over the processes
(``os.times`` of the children), so the table also says how much the shared cores were busy with
other work.

``--places world`` times the gazetteer world (a few hundred towns and cities, ``[synth] places``)
instead of the ten cities.

Usage: python benchmarks/synth_speed.py [--workers 2] [--skip-demo] [--places cities10|world]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sbe.config import SynthConfig
from sbe.stages import synth as synth_stage


def timed(out: Path, **kw) -> tuple[int, float, float]:
    """Run the stage; returns (images, wall seconds, CPU seconds of this process and children)."""
    t0, c0 = time.perf_counter(), os.times()
    m = synth_stage.run(SynthConfig(output=out, **kw))
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user)
    cpu += c1.children_system - c0.children_system
    return m.rows["images"], time.perf_counter() - t0, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--places", default="cities10", choices=("cities10", "world"))
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sbe-synth-speed-"))
    runs = [("target", dict(buildings=130, image_size=640, workers=args.workers), 60.0)]
    if not args.skip_demo:
        runs.append(("demo", dict(buildings=330, image_size=224, workers=args.workers), 30.0))
    runs.append(("baseline", dict(buildings=40, image_size=640, workers=1), None))
    print(f"places: {args.places}; cores: {os.cpu_count()}; "
          f"load average before: {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'run':>9} {'px':>4} {'workers':>7} {'images':>7} {'wall s':>7} {'img/s':>7} "
          f"{'CPU s':>7} {'CPU ms/img':>10} {'budget s':>9}")  # fmt: skip
    res = {}
    for name, kw, budget in runs:
        n, wall, cpu = timed(root / name, seed=0, places=args.places, **kw)
        res[name] = (n, wall, cpu)
        b = f"{budget * n / 1000 if name == 'target' else budget:>9.1f}" if budget else f"{'-':>9}"
        print(f"{name:>9} {kw['image_size']:>4} {kw['workers']:>7} {n:>7} {wall:>7.1f} "
              f"{n / wall:>7.1f} {cpu:>7.1f} {1000 * cpu / n:>10.1f} {b}", flush=True)  # fmt: skip
    n_t, w_t, _ = res["target"]
    n_b, w_b, _ = res["baseline"]
    print(f"1,000 images of 640 px would take {1000 * w_t / n_t:.1f} s with {args.workers} workers "
          f"(budget 60 s); speed-up over one process: {(n_t / w_t) / (n_b / w_b):.2f}x")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
