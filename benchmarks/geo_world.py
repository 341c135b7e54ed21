"""Geolocation on the gazetteer world: the geo heads against both baselines, by distance.

Runs the real pipeline on a synthetic world of many places (``[synth] places = "world"``: a few
hundred towns and cities at 10-200 km, 200-750 km and continental distances) and prints, for the
geography-held-out test split, the share of photos located within 1 / 25 / 200 / 750 / 2500 km by
the geo heads, the most-common-place baseline and the nearest-neighbour baseline, then the
climate accuracy, the season error (seasonal climates apart from the others) and the calibration
of the predicted spread (share of true places inside the 50 % / 90 % highest-density regions).

Pipeline: ``synth -> ingest -> backbone (EfficientNet-Lite0) -> split (500 m cells) -> geo``,
each stage skipped when its outputs are current (so a rerun with ``--keep`` is cheap). With
``--curriculum`` it also runs ``neighbors`` and ``train`` twice (``curriculum = "bands"`` and
``"none"``) and prints the validation mAP@R of both.

Usage:
    python benchmarks/geo_world.py [--buildings 800] [--places world|cities10] [--n-places 300]
        [--image-size 224] [--seed 0] [--centres-per-sample 10] [--keep DIR] [--curriculum]
        [--epochs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sbe.config import (
    BackboneConfig,
    GeoConfig,
    IngestConfig,
    NeighborsConfig,
    SplitConfig,
    SynthConfig,
    TrainConfig,
)
from sbe.stages import backbone, geo, ingest, neighbors, split, synth, train

THRESHOLDS = (1, 25, 200, 750, 2500)


def run_world(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run the pipeline up to the geo heads in ``work``; return the test report and timings."""
    times: dict[str, float] = {}

    def step(name: str, fn, cfg) -> Any:
        t = time.perf_counter()
        m = fn(cfg, show_progress=False)
        times[name] = round(time.perf_counter() - t, 1)
        return m

    step(
        "synth",
        synth.run,
        SynthConfig(
            output=work / "raw",
            buildings=args.buildings,
            image_size=args.image_size,
            seed=args.seed,
            places=args.places,
            n_places=args.n_places,
            workers=args.workers,
        ),
    )
    step("ingest", ingest.run, IngestConfig(inputs=[work / "raw"], output=work / "images"))
    step("backbone", backbone.run, BackboneConfig(input=work / "images", output=work / "backbone"))
    step("split", split.run, SplitConfig(input=work / "backbone", output=work / "split"))
    step(
        "geo",
        geo.run,
        GeoConfig(
            input=work / "split",
            output=work / "geo",
            seed=args.seed,
            centres_per_sample=args.centres_per_sample,
        ),
    )
    report = json.loads((work / "geo" / "metrics.json").read_text())["test"]
    return {"test": report, "seconds": times}


def run_curriculum(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Validation mAP@R of the projector trained with the bands curriculum and without."""
    neighbors.run(
        NeighborsConfig(input=work / "split", output=work / "neighbors"), show_progress=False
    )
    out: dict[str, Any] = {}
    for cur in ("bands", "none"):
        t = time.perf_counter()
        m = train.run(
            TrainConfig(
                input=work / "split",
                neighbors=work / "neighbors",
                output=work / f"run_{cur}",
                curriculum=cur,
                epochs=args.epochs,
                seed=args.seed,
            ),
            show_progress=False,
        )
        out[cur] = {
            **_val_map(work / f"run_{cur}", m),
            "seconds": round(time.perf_counter() - t, 1),
        }
    return out


def _val_map(run_dir: Path, manifest: Any) -> dict[str, Any]:
    """Best validation mAP@R of a training run, and its test mAP@R (projector and backbone)."""
    extra = manifest.extra or {}
    test = extra.get("test") or {}
    return {
        "best_val_map@r": extra.get("best_val_map@r"),
        "test_map@r": (test.get("projector") or {}).get("map@r"),
        "test_backbone_map@r": (test.get("backbone") or {}).get("map@r"),
    }


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:5.1f}%"


def _days(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:6.1f}"


def print_report(result: dict[str, Any]) -> None:
    test = result["test"]
    preds = {
        "geo heads": test["model"],
        "most common": test["baselines"]["most_common"],
        "nearest neighbour": test["baselines"]["nearest_neighbour"],
    }
    print(f"test split: {test['n']:,} photos in held-out 500 m cells")
    print(f"{'':28s}" + "".join(f"{name:>20s}" for name in preds))
    for t in THRESHOLDS:
        row = "".join(f"{_pct(p['location'][f'acc_{t}km']):>20s}" for p in preds.values())
        print(f"{'within ' + str(t) + ' km':28s}{row}")
    row = "".join(f"{p['location']['median_km']:>20,.1f}" for p in preds.values())
    print(f"{'median error (km)':28s}{row}")
    for key, label in (("fine_acc", "climate fine acc"), ("coarse_acc", "climate coarse acc")):
        print(f"{label:28s}" + "".join(f"{_pct(p['climate'][key]):>20s}" for p in preds.values()))
    for group, label in (
        ("season", "season error (days)"),
        ("season_seasonal", "  seasonal climates"),
        ("season_flat", "  climates without seasons"),
    ):
        row = "".join(
            f"{_days(p.get(group, {}).get('mean_error_days')):>20s}" for p in preds.values()
        )
        print(f"{label:28s}{row}")
    cal = test["model"].get("calibration") or {}
    if cal:
        print(
            f"calibration: true place inside the 90% region {_pct(cal['hpd90_coverage'])}, "
            f"50% region {_pct(cal['hpd50_coverage'])}; top mode 90% radius: median "
            f"{cal['median_radius90_km']:,.0f} km (true place inside: "
            f"{_pct(cal['disk90_coverage'])})"
        )
    if "curriculum" in result:
        for cur, r in result["curriculum"].items():
            print(
                f"train curriculum={cur}: val mAP@R {r['best_val_map@r']}, test mAP@R "
                f"{r['test_map@r']} (backbone {r['test_backbone_map@r']}; {r['seconds']} s)"
            )
    print("seconds:", result["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--buildings", type=int, default=800)
    p.add_argument("--places", default="world", choices=("world", "cities10"))
    p.add_argument("--n-places", type=int, default=300)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument(
        "--centres-per-sample", type=int, default=10, help="geo: K_data = unique locations / this"
    )
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (and reuse)")
    p.add_argument("--curriculum", action="store_true", help="also compare bands vs none")
    p.add_argument("--epochs", type=int, default=10, help="training epochs for --curriculum")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        result = run_world(work, args)
        if args.curriculum:
            result["curriculum"] = run_curriculum(work, args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
