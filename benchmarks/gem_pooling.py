"""Average vs GeM pooling of the raw EfficientNet-Lite backbones, at several input sizes.

Leave-one-out retrieval on the 26 real photos of ``landmarks-mini`` (cosine, the query excluded):
correct@1 out of 26 and mAP over the whole ranking, for each backbone x input size x pooling.
The input is resized (short side) and centre-cropped to the size; the weights are unchanged.

Usage:
    PYTHONPATH=src .venv/bin/python benchmarks/gem_pooling.py [--landmarks DIR] [--sizes 224,320,448]

The synthetic val split and a learned exponent are scored together with these by
``benchmarks/pooling_resolution.py`` (the measurement the defaults were chosen on).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from sbe.data.images import decode_rgb
from sbe.models.backbones.eager import TorchBackbone
from sbe.models.backbones.efficientnet import EfficientNetSpec, default_preprocess
from sbe.training.evaluation import default_landmarks_dir, read_landmarks
from sbe.training.metrics import retrieval_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--landmarks", default=None)
    ap.add_argument("--models", default="efficientnet-lite0,efficientnet-lite2")
    ap.add_argument("--sizes", default="224,320,448")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.landmarks or default_landmarks_dir()
    if folder is None:
        raise SystemExit("landmarks-mini not found: pass --landmarks or set SBE_LANDMARKS")
    paths, labels, _ = read_landmarks(folder)
    sizes = [int(s) for s in args.sizes.split(",")]
    photos = [decode_rgb(p.read_bytes(), min_side=max(sizes)) for p in paths]
    rows = []
    print(f"{'model':<20}{'size':>6}{'pooling':>9}{'correct@1':>11}{'mAP':>8}")
    for name in args.models.split(","):
        for size in sizes:
            pp = default_preprocess(name, size)  # what [backbone] image_size does
            crops = np.stack([pp.apply(p) for p in photos])
            for pooling in ("mean", "gem"):
                bb = TorchBackbone(EfficientNetSpec(name, pooling=pooling, image_size=size), "cpu")
                m = retrieval_metrics(bb.embed(crops), labels, ks=(1,), full_map=True)
                c = round(m["recall@1"] * len(paths))
                rows.append(
                    {
                        "model": name,
                        "size": size,
                        "pooling": pooling,
                        "correct@1": c,
                        "map": round(float(m["map"]), 4),
                    }
                )
                print(
                    f"{name:<20}{size:>6}{pooling:>9}{c:>8}/{len(paths)}{m['map']:>8.3f}",
                    flush=True,
                )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
