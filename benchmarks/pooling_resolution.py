"""Input size x pooling of the raw EfficientNet-Lite backbone, on synthetic val and real photos.

For each input size (short-side resize and centre crop, the ``[backbone] image_size`` setting) the
last conv layer's feature maps are extracted once per image, then pooled three ways:

- ``mean``: global average (the default ``[backbone] pooling``);
- ``gem p=3``: generalised mean with the usual fixed exponent;
- ``gem p=2`` (``--also-p``): other fixed exponents, to see where the optimum lies;
- ``gem p=learned``: the exponent fitted by :func:`sbe.verify.gem.fit_gem_exponent` on a seeded
  sample of the *train* split's feature maps (whole buildings, at most ``--fit-images`` images);
  never on val, test or the real photos.

Scores:

- synthetic val: leave-one-out mAP@R and Recall@1 over every val image of a finished work folder
  (``--work``, e.g. the demo's; the split's ``building_id`` is the identity), as ``sbe train``
  reports for the raw backbone (``val_baseline`` in ``run.json``);
- landmarks-mini: leave-one-out correct@1 of 26 real photos and mAP over the whole ranking
  (``--landmarks``, default ``../shared/data/landmarks-mini`` or ``$SBE_LANDMARKS``).

Ratios are against the named baseline (``mean`` at 224 px, the shipped default).

Usage:
    PYTHONPATH=src .venv/bin/python benchmarks/pooling_resolution.py --work work/demo \\
        [--sizes 224,288,320] [--fit-images 800] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sbe.data.images import decode_rgb
from sbe.models.backbones.efficientnet import EfficientNetEncoder, EfficientNetSpec
from sbe.models.backbones.pooling import pool_feature_map
from sbe.training.evaluation import default_landmarks_dir, read_landmarks
from sbe.training.metrics import retrieval_metrics
from sbe.verify.gem import GemFitSettings, fit_gem_exponent

BASELINE = ("mean", 224)


def split_images(work: Path, split: str) -> tuple[pa.Table, np.ndarray]:
    """A split's rows (image_id, building_id) and where each image lies in the raw tars."""
    rows = pq.read_table(work / "split" / f"{split}.parquet", columns=["image_id", "building_id"])
    return rows, rows["building_id"].to_numpy()


def read_photos(work: Path, image_ids: np.ndarray, min_side: int) -> list[Any]:
    """Decode images of the work folder's image store (``images/*.parquet`` -> ``raw/*.tar``).

    The tar paths recorded at ingest may point where the folder was made; the tars are looked up
    by file name under ``<work>/raw`` (where the demo keeps them).
    """
    cols = ["image_id", "tar_file", "tar_offset", "tar_size"]
    store = pa.concat_tables(
        pq.read_table(p, columns=cols) for p in sorted((work / "images").glob("*.parquet"))
    )
    where = {int(i): k for k, i in enumerate(store["image_id"].to_numpy())}
    tars = store["tar_file"].to_pylist()
    offsets, sizes = store["tar_offset"].to_numpy(), store["tar_size"].to_numpy()
    handles: dict[str, Any] = {}
    photos = []
    try:
        for image_id in image_ids:
            k = where[int(image_id)]
            name = Path(tars[k]).name
            if name not in handles:
                handles[name] = open(work / "raw" / name, "rb")  # noqa: SIM115 (closed below)
            data = os.pread(handles[name].fileno(), int(sizes[k]), int(offsets[k]))
            photos.append(decode_rgb(data, min_side=min_side))
    finally:
        for fh in handles.values():
            fh.close()
    return photos


def fit_sample(labels: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """Rows of whole buildings drawn (seeded) until ``max_images`` would be exceeded."""
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for b in rng.permutation(np.unique(labels)):
        members = np.flatnonzero(labels == b)
        if len(members) < 2:
            continue
        if len(rows) + len(members) > max_images:
            break
        rows.extend(members.tolist())
    return np.sort(np.asarray(rows, dtype=np.int64))


@torch.inference_mode()
def feature_maps(enc: EfficientNetEncoder, photos: list[Any], batch: int = 32) -> torch.Tensor:
    """(N, 1280, h, w) float16 last-conv feature maps of ``photos`` at the encoder's input size."""
    pp = enc.preprocess
    out = []
    for s in range(0, len(photos), batch):
        crops = np.stack([pp.apply(p) for p in photos[s : s + batch]])
        x = enc.normalize(torch.from_numpy(crops)).contiguous(memory_format=torch.channels_last)
        out.append(enc.features(x).to(torch.float16))
    maps = torch.cat(out)
    if float(maps.min()) < 0:
        raise SystemExit("negative activations: GeM assumes non-negative feature maps")
    return maps


def pooled(maps: torch.Tensor, pooling: str, p: float) -> torch.Tensor:
    """Pool in chunks (float32 copies of the maps stay small)."""
    return torch.cat(
        [pool_feature_map(maps[s : s + 256].float(), pooling, p) for s in range(0, len(maps), 256)]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a finished work folder (split/)")
    ap.add_argument("--landmarks", default=None)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--sizes", default="224,288,320")
    ap.add_argument("--fit-images", type=int, default=800, help="train images for the fit")
    ap.add_argument("--fit-steps", type=int, default=300)
    ap.add_argument("--val-images", type=int, default=0, help="0 = every val image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--also-p", default="2", help="more fixed GeM exponents to score ('' = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    t_wall, t_cpu = time.perf_counter(), time.process_time()

    train_rows, train_labels = split_images(args.work, "train")
    fit_rows = fit_sample(train_labels, args.fit_images, args.seed)
    val_rows, val_labels = split_images(args.work, "val")
    if args.val_images:
        val_rows, val_labels = val_rows.slice(0, args.val_images), val_labels[: args.val_images]
    side = max(sizes)
    fit_photos = read_photos(args.work, train_rows["image_id"].to_numpy()[fit_rows], side)
    val_photos = read_photos(args.work, val_rows["image_id"].to_numpy(), side)
    folder = args.landmarks or default_landmarks_dir()
    if folder is None:
        raise SystemExit("landmarks-mini not found: pass --landmarks or set SBE_LANDMARKS")
    paths, lm_labels, _ = read_landmarks(folder)
    lm_photos = [decode_rgb(p.read_bytes(), min_side=side) for p in paths]
    print(
        f"fit: {len(fit_rows)} train images of {len(np.unique(train_labels[fit_rows]))} buildings; "
        f"val: {len(val_labels)} images of {len(np.unique(val_labels))} buildings; "
        f"landmarks: {len(paths)} photos",
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    for size in sizes:
        t0, c0 = time.perf_counter(), time.process_time()
        spec = EfficientNetSpec(args.model, "mean", image_size=size)
        enc = spec.build(torch.device("cpu")).to(memory_format=torch.channels_last)
        fit_maps = feature_maps(enc, fit_photos)
        val_maps = feature_maps(enc, val_photos)
        lm_maps = feature_maps(enc, lm_photos)
        t1, c1 = time.perf_counter(), time.process_time()
        fit = GemFitSettings(steps=args.fit_steps, seed=args.seed)
        p_fit = fit_gem_exponent(fit_maps, train_labels[fit_rows], fit)
        t2, c2 = time.perf_counter(), time.process_time()
        print(
            f"{size} px: maps {tuple(val_maps.shape[1:])}, extraction {t1 - t0:.0f} s "
            f"(cpu {c1 - c0:.0f} s), fit p = {p_fit:.3f} in {t2 - t1:.0f} s (cpu {c2 - c1:.0f} s)",
            flush=True,
        )
        del fit_maps
        extra = [("gem", float(q), f"gem p={q}") for q in args.also_p.split(",") if q]
        for pooling, p, label in (
            ("mean", 1.0, "mean"),
            ("gem", 3.0, "gem p=3"),
            *extra,
            ("gem", p_fit, "gem p=learned"),
        ):
            val = retrieval_metrics(pooled(val_maps, pooling, p), val_labels, ks=(1,))
            lm = retrieval_metrics(pooled(lm_maps, pooling, p), lm_labels, ks=(1,), full_map=True)
            rows.append(
                {
                    "size": size,
                    "pooling": label,
                    "p": round(p, 3) if pooling == "gem" else None,
                    "val_map@r": round(float(val["map@r"]), 4),
                    "val_recall@1": round(float(val["recall@1"]), 4),
                    "val_queries": int(val["queries"]),
                    "landmarks_correct@1": round(float(lm["recall@1"]) * len(paths)),
                    "landmarks_map": round(float(lm["map"]), 4),
                }
            )
        del val_maps, lm_maps

    base = next(r for r in rows if (r["pooling"], r["size"]) == BASELINE)
    print()
    print(
        f"{'size':>5} {'pooling':<14}{'p':>6}  {'val mAP@R':>9} {'R@1':>6} {'x base':>7}  "
        f"{'landmarks @1':>12} {'mAP':>6} {'x base':>7}"
    )
    for r in rows:
        r["val_ratio"] = round(r["val_map@r"] / base["val_map@r"], 3)
        r["landmarks_ratio"] = round(r["landmarks_map"] / base["landmarks_map"], 3)
        p = f"{r['p']:.2f}" if r["p"] is not None else "-"
        print(
            f"{r['size']:>5} {r['pooling']:<14}{p:>6}  {r['val_map@r']:>9.4f} "
            f"{r['val_recall@1']:>6.3f} {r['val_ratio']:>7.3f}  "
            f"{r['landmarks_correct@1']:>9}/{len(paths)} {r['landmarks_map']:>6.3f} "
            f"{r['landmarks_ratio']:>7.3f}"
        )
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    load = os.getloadavg()
    print(
        f"\nbaseline: {BASELINE[0]} at {BASELINE[1]} px; {wall:.0f} s wall, {cpu:.0f} s CPU, "
        f"{args.threads} torch threads, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "wall_s": wall, "cpu_s": cpu}, indent=1))


if __name__ == "__main__":
    main()
