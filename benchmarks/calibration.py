"""Does a "same building?" threshold fitted on val keep its precision on test? (synthetic world)

Runs the pipeline on a small synthetic world (or reads an existing workdir), takes the projector
(trained head; ``--raw``: the backbone) embeddings of the val and test splits, forms every pair
within a split (label: same building; a seeded uniform sample beyond ``--max-pairs``),
fits :func:`sbe.verify.calibration.fit_calibration` on val at the target precision and reports
precision and recall of its threshold on test, for both methods.

Usage:
    PYTHONPATH=src .venv/bin/python benchmarks/calibration.py [--buildings 200] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from sbe.models.projector import Projector
from sbe.training.data import load_split
from sbe.verify.calibration import fit_calibration, precision_recall
from sbe.verify.evaluation import MAX_PAIRS, split_pairs

CONFIG = """
workdir = "{workdir}"
[synth]
buildings = {buildings}
image_size = 96
packaged = "packaged_images.parquet"
packaged_buildings = 6
[split]
cell_size_m = 150
[train]
epochs = 3
[geo]
epochs = 3
[cluster]
k = 3
"""


def pairs_of(
    split_dir: Path, split: str, projector: Projector | None, max_pairs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and labels of a split's pairs (all of them up to ``max_pairs``), as
    ``sbe evaluate --calibrate`` forms them (:func:`sbe.verify.evaluation.split_pairs`)."""
    data = load_split(split_dir, split)
    x = data.embeddings.float().numpy()
    if projector is not None:
        x = projector.project(x)
    return split_pairs(x, data.building_ids, max_pairs=max_pairs, seed=0 if split == "val" else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--buildings", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=None, help="an existing pipeline workdir")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--raw", action="store_true", help="raw backbone embeddings, not the projector")
    ap.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="pairs per split at most")
    args = ap.parse_args()
    if args.workdir is None:
        from sbe.config import load_config
        from sbe.pipeline import run_pipeline

        tmp = Path(tempfile.mkdtemp(prefix="sbe-calib-"))
        cfg_path = tmp / "c.toml"
        cfg_path.write_text(CONFIG.format(workdir=tmp / "w", buildings=args.buildings))
        run_pipeline(load_config(cfg_path), show_progress=False)
        args.workdir = tmp / "w"
    split_dir = Path(args.workdir) / "split"
    projector = None if args.raw else Projector.from_pretrained(Path(args.workdir) / "run" / "best")
    vs, vy = pairs_of(split_dir, "val", projector, args.max_pairs)
    ts, ty = pairs_of(split_dir, "test", projector, args.max_pairs)
    out = {
        "embedding": "backbone" if args.raw else "projector",
        "val_pairs": len(vy),
        "val_positive": int(vy.sum()),
        "test_pairs": len(ty),
        "test_positive": int(ty.sum()),
        "target": args.target,
    }
    for method in ("logistic", "isotonic"):
        cal = fit_calibration(vs, vy, method=method, target_precision=args.target)
        test = precision_recall(cal.same(ts), ty)
        out[method] = {
            "threshold": cal.threshold,
            "val": cal.fit,
            "test": test,
            "within_0.03": bool(abs(test["precision"] - args.target) <= 0.03),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
