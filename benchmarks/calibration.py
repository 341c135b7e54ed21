"""Does a "same building?" threshold fitted on val keep its precision on test? (synthetic world)

Runs the pipeline on a small synthetic world (or reads an existing workdir), takes the projector
(trained head; ``--raw``: the backbone) embeddings of the val and test splits, forms every pair within a split (label: same building),
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


def split_pairs(
    split_dir: Path, split: str, projector: Projector | None
) -> tuple[np.ndarray, np.ndarray]:
    data = load_split(split_dir, split)
    x = data.embeddings.float().numpy()
    if projector is not None:
        x = projector.project(x)
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    iu = np.triu_indices(len(x), k=1)
    sims = (x @ x.T)[iu]
    same = data.building_ids[iu[0]] == data.building_ids[iu[1]]
    return sims, same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--buildings", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=None, help="an existing pipeline workdir")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--raw", action="store_true", help="raw backbone embeddings, not the projector")
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
    vs, vy = split_pairs(split_dir, "val", projector)
    ts, ty = split_pairs(split_dir, "test", projector)
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
