"""Re-ranking a global shortlist by verified local matches (DISK + LightGlue + RANSAC).

On the 26 real photos of 6 landmarks (``landmarks-mini``), leave-one-out: every photo queries the
other 25. The global ranking is cosine similarity of backbone embeddings; re-ranking re-orders its
top-k by verified matches (:mod:`sbe.verify.rerank`). For each local-feature setting it reports:

* P@1 of the global ranking and of every combination rule (``matches``, ``verified`` with a
  threshold, ``sum`` with a weight) and RANSAC mode (none, fundamental, homography);
* the per-query cost for k candidates: query extraction + k matches against stored gallery
  features, wall seconds and process CPU seconds (torch on ``--threads`` threads), and the cost of
  extracting the k candidates on the fly instead;
* the size of the gallery store per image.

At the end a summary line per setting: correct@1 global vs re-ranked with the defaults
(fundamental RANSAC, ``verified``, 15 matches), the per-query wall and CPU seconds with the
gallery in the store, store bytes per image, and the load average before/after (the CPU is
shared: CPU seconds are the comparable number).

Usage:
    PYTHONPATH=src .venv/bin/python benchmarks/rerank.py [--landmarks DIR] [--k 10]
        [--settings 512x480,256x320,256x256,128x320] [--threads 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sbe.data.images import decode_rgb
from sbe.models.backbones.base import Preprocess
from sbe.models.backbones.eager import TorchBackbone
from sbe.models.backbones.efficientnet import EfficientNetSpec, default_preprocess
from sbe.training.evaluation import default_landmarks_dir, read_landmarks
from sbe.verify.local import LocalMatcher, LocalSettings, count_inliers
from sbe.verify.rerank import combined_scores
from sbe.verify.store import LocalFeatureStore, extract_local_features

RULES: list[tuple[str, dict[str, float]]] = [
    ("matches", {}),
    *[("verified", {"min_matches": t}) for t in (10, 15, 25, 40)],
    *[("sum", {"weight": w}) for w in (0.01, 0.02, 0.05, 0.1)],
]


def global_embeddings(paths: list[Path], name: str, pooling: str, size: int | None) -> np.ndarray:
    base = default_preprocess(name)
    pp = base if size is None else Preprocess(size, size, base.mean, base.std)
    bb = TorchBackbone(EfficientNetSpec(name, pooling=pooling, preprocess=pp), device="cpu")
    crops = np.stack([pp.apply(decode_rgb(p.read_bytes(), min_side=pp.resize)) for p in paths])
    x = bb.embed(crops).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def p_at_1(top: np.ndarray, labels: np.ndarray) -> int:
    return int((labels[top] == labels).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--landmarks", type=Path, default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--settings",
        default="512x480,256x320,256x256,128x320",
        help="max_keypoints x max_side, ...",
    )
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--size", type=int, default=None, help="global input size (default: native)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-queries", type=int, default=4)
    ap.add_argument(
        "--timing-only",
        action="store_true",
        help="skip the correct@1 part (all pairs): time --timed-queries queries only",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.landmarks or default_landmarks_dir()
    if folder is None or not Path(folder).is_dir():
        print("skipped: landmarks-mini not found (pass --landmarks DIR or set SBE_LANDMARKS)")
        return
    load_before = os.getloadavg()
    paths, labels, _ = read_landmarks(folder)
    n, k = len(paths), args.k
    x = global_embeddings(paths, args.backbone, args.pooling, args.size)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    shortlist = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (n, k)
    glob_top = shortlist[:, 0]
    in_k = int(sum(labels[i] in labels[shortlist[i]] for i in range(n)))
    result: dict[str, object] = {
        "images": n,
        "k": k,
        "global": {"backbone": args.backbone, "pooling": args.pooling, "size": args.size},
        "global_correct@1": p_at_1(glob_top, labels),
        "queries_with_a_positive_in_top_k": in_k,
        "settings": {},
    }
    print(
        f"{n} photos; global P@1 {result['global_correct@1']}/{n}; positive in top-{k}: {in_k}/{n}"
    )
    bytes_of = {}
    for spec in args.settings.split(","):
        kp, side = (int(v) for v in spec.split("x"))
        matcher = LocalMatcher(LocalSettings(max_keypoints=kp, max_side=side, ransac="none"))
        data = [p.read_bytes() for p in paths]
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            meta = extract_local_features(data, tmp, matcher=matcher)
            ext_wall = (time.perf_counter() - t0) / n
            ext_cpu = (time.process_time() - c0) / n
            store = LocalFeatureStore(tmp)
            bytes_of[spec] = store.bytes_per_image()
            feats = [store[i] for i in range(n)]
        pairs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0 if args.timing_only else n):
            for j in shortlist[i]:
                m = matcher.match(feats[i], feats[int(j)])
                pairs[(i, int(j))] = (feats[i].keypoints[m[:, 0]], feats[int(j)].keypoints[m[:, 1]])
        match_wall = (time.perf_counter() - t0) / max(1, len(pairs))
        match_cpu = (time.process_time() - c0) / max(1, len(pairs))
        # Timed end to end as the library runs it: query extraction + k matches + RANSAC.
        timed = []
        for i in range(min(args.timed_queries, n)):
            t0, c0 = time.perf_counter(), time.process_time()
            q = matcher.extract(data[i])
            for j in shortlist[i]:
                mm = matcher.match(q, feats[int(j)])
                count_inliers(
                    q.keypoints[mm[:, 0]], feats[int(j)].keypoints[mm[:, 1]], "fundamental"
                )
            timed.append((time.perf_counter() - t0, time.process_time() - c0))
        per_query_wall = float(np.mean([t[0] for t in timed]))
        per_query_cpu = float(np.mean([t[1] for t in timed]))
        rows: dict[str, object] = {}
        for ransac in () if args.timing_only else ("none", "fundamental", "homography"):
            counts = np.zeros((n, k), dtype=np.int64)
            for i in range(n):
                for r, j in enumerate(shortlist[i]):
                    p0, p1 = pairs[(i, int(j))]
                    counts[i, r] = count_inliers(p0, p1, ransac)  # type: ignore[arg-type]
            pos = [
                counts[i, r]
                for i in range(n)
                for r in range(k)
                if labels[shortlist[i, r]] == labels[i]
            ]
            neg = [
                counts[i, r]
                for i in range(n)
                for r in range(k)
                if labels[shortlist[i, r]] != labels[i]
            ]
            for rule, kw in RULES:
                top = np.array(
                    [
                        shortlist[i][
                            int(
                                np.argmax(
                                    combined_scores(sims[i, shortlist[i]], counts[i], rule, **kw)
                                )
                            )  # type: ignore[arg-type]
                        ]
                        for i in range(n)
                    ]
                )
                label = f"{ransac}/{rule}" + "".join(f"/{v:g}" for v in kw.values())
                rows[label] = p_at_1(top, labels)
            rows[f"{ransac}/match counts pos median,min / neg median,max"] = [
                int(np.median(pos)),
                int(np.min(pos)),
                int(np.median(neg)),
                int(np.max(neg)),
            ]
        entry = {
            "max_keypoints": kp,
            "max_side": side,
            "keypoints_per_image": meta["keypoints"] / n,
            "store_bytes_per_image": bytes_of[spec],
            "extract_s_per_image": {"wall": ext_wall, "cpu": ext_cpu},
            "match_s_per_pair": {"wall": match_wall, "cpu": match_cpu},
            "per_query_stored_gallery_s": {"wall": per_query_wall, "cpu": per_query_cpu},
            "per_query_on_the_fly_s": {
                "wall": per_query_wall + k * ext_wall,
                "cpu": per_query_cpu + k * ext_cpu,
            },
            "correct@1": rows,
        }
        entry["load_average"] = os.getloadavg()
        result["settings"][spec] = entry  # type: ignore[index]
        print(json.dumps({spec: entry}, indent=1), flush=True)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(
        f"\nsummary ({n} queries, k = {k}, {args.threads} torch threads, load average "
        f"{load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after):"
    )
    print("setting   global  re-ranked  per-query wall s  CPU s   store kB/image")
    for spec, e in result["settings"].items():  # type: ignore[attr-defined]
        pq_ = e["per_query_stored_gallery_s"]
        print(
            f"{spec:<9} {result['global_correct@1']:>4}/{n}  "
            f"{e['correct@1'].get('fundamental/verified/15', '-'):>6}/{n}  {pq_['wall']:>14.2f}  "
            f"{pq_['cpu']:>6.2f}  {e['store_bytes_per_image'] / 1e3:>10.0f}"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
