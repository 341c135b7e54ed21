"""INT8 against float32 for the offline backbone on the CPU: speed, agreement, retrieval.

Data: the demo world (``sbe/configs/demo.toml``: 800 buildings, 224 px JPEGs) made by the synth
and ingest stages in a temporary folder, and the real photos of ``landmarks-mini`` (26 images,
5 landmarks).

Rows (one run, on this machine's cores, fp32 and int8 interleaved so background load hits both):
  stage rate    ``sbe.stages.backbone.run`` on the demo world's JPEGs into a fresh folder, best of
                ``--repeats``: images / wall second of the whole stage (model load from the warm
                cache and, for int8, decoding the calibration sample included) and images per
                second of the embedding phase alone. The INT8 model is quantised once before the
                timed runs (a cache miss costs ~15 s once per input).
  cosine        mean and minimum cosine of int8 to fp32 per image (the stages' float16 parts).
  Recall@1      the split stage on each backbone output, then the raw backbone's Recall@1 on the
                test split (``sbe.training.metrics``, queries = images whose building has >= 2
                images in test, gallery = all of test).
  landmarks P@1 leave-one-out P@1 on landmarks-mini with the raw backbone, int8 calibrated on
                those same photos (the user's own images).

Targets: stage rate int8/fp32 >= 1.6, mean cosine >= 0.98, Recall@1 within 1 point, landmarks
P@1 not lower.

Usage:
    .venv/bin/python benchmarks/backbone_int8.py [--repeats 2] [--landmarks DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

TARGET_SPEED, TARGET_COS, TARGET_R1_POINTS = 1.6, 0.98, 1.0
LANDMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks-mini"


def load_avg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def build_world(work: Path):
    """The demo world's synth and ingest outputs under ``work``; returns the config."""
    from sbe.pipeline import demo_config
    from sbe.stages import ingest, synth

    cfg = demo_config(work)
    synth.run(cfg.section("synth"))
    ingest.run(cfg.section("ingest"))
    return cfg


def run_backbone(cfg, precision: str, out: Path) -> dict:
    from sbe.stages import backbone

    sec = cfg.section("backbone").model_copy(update={"precision": precision, "output": out})
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = backbone.run(sec, show_progress=False)
    wall = time.perf_counter() - t0
    n = m.rows["images"]
    return {
        "wall_rate": n / wall,
        "embed_rate": m.extra["images_per_second"],
        "load_s": m.extra["load_seconds"],
        "images": n,
        "calibration": m.extra.get("calibration"),
    }


def read_embeddings(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from sbe.storage import to_numpy_matrix

    parts = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(("_", ".")))
    tables = [pq.read_table(p, columns=["image_id", "embedding"]) for p in parts]
    ids = np.concatenate([t["image_id"].to_numpy() for t in tables])
    emb = np.concatenate([to_numpy_matrix(t["embedding"]) for t in tables]).astype(np.float32)
    order = np.argsort(ids, kind="stable")
    return ids[order], emb[order]


def split_recall1(cfg, backbone_dir: Path, out: Path) -> tuple[float, int]:
    from sbe.stages import split
    from sbe.training.data import load_split
    from sbe.training.metrics import eligible_queries, retrieval_metrics

    sec = cfg.section("split").model_copy(update={"input": backbone_dir, "output": out})
    split.run(sec)
    data = load_split(out, "test")
    q = eligible_queries(data.building_ids)
    r = retrieval_metrics(data.embeddings, data.building_ids, q, (1,))
    return float(r["recall@1"]), int(r["queries"])


def landmarks_p1(folder: Path) -> dict[str, float]:
    """Leave-one-out P@1 of fp32 and int8 (calibrated on the same photos) on a landmarks folder."""
    from sbe.data.preprocess import decode_image
    from sbe.models.backbones import load_backbone, resolve_spec
    from sbe.models.backbones.int8 import calibration_sample, mean_cosine
    from sbe.training.metrics import retrieval_metrics

    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    data = [(folder / r["path"]).read_bytes() for r in rows]
    labels = np.unique([r["landmark"] for r in rows], return_inverse=True)[1]
    spec = resolve_spec("efficientnet-lite0")
    x = np.stack([decode_image(spec.preprocess, d) for d in data])
    sample = calibration_sample(len(data), data.__getitem__, spec.preprocess)
    out = {}
    embs = {}
    for precision in ("fp32", "int8"):
        bb = load_backbone(
            spec, runtime="onnx", device="cpu", precision=precision, calibration=sample
        )
        embs[precision] = bb.embed(x)
        out[precision] = float(retrieval_metrics(embs[precision], labels, None, (1,))["recall@1"])
    out["cosine"] = mean_cosine(embs["fp32"], embs["int8"])
    out["images"] = len(data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--landmarks", type=Path, default=LANDMARKS)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = ap.parse_args()
    from sbe.device import usable_cores

    work = args.keep or Path(tempfile.mkdtemp(prefix="sbe-int8-bench-"))
    print(f"cores {usable_cores()}  cpu {platform.processor() or platform.machine()}")
    print(f"load average at start: {load_avg()}")
    t0 = time.perf_counter()
    cfg = build_world(work)
    print(f"demo world built in {time.perf_counter() - t0:.0f} s")

    # warm both caches (fp32 export, int8 quantisation) outside the timed runs
    for precision in ("fp32", "int8"):
        run_backbone(cfg, precision, work / f"bb-{precision}")
    best: dict[str, dict] = {}
    for rep in range(args.repeats):
        order = ("fp32", "int8") if rep % 2 == 0 else ("int8", "fp32")
        for precision in order:
            r = run_backbone(cfg, precision, work / f"bb-{precision}")
            print(
                f"  run {rep} {precision}: {r['wall_rate']:.1f} img/s stage, "
                f"{r['embed_rate']:.1f} img/s embedding, load {r['load_s']:.2f} s "
                f"(load avg {load_avg()})"
            )
            if precision not in best or r["wall_rate"] > best[precision]["wall_rate"]:
                best[precision] = r

    ids32, e32 = read_embeddings(work / "bb-fp32")
    ids8, e8 = read_embeddings(work / "bb-int8")
    assert np.array_equal(ids32, ids8)
    from sbe.models.backbones.int8 import mean_cosine

    a = e32 / np.linalg.norm(e32, axis=1, keepdims=True)
    b = e8 / np.linalg.norm(e8, axis=1, keepdims=True)
    cos_rows = (a * b).sum(1)
    r1 = {p: split_recall1(cfg, work / f"bb-{p}", work / f"split-{p}") for p in ("fp32", "int8")}
    lm = landmarks_p1(args.landmarks) if (args.landmarks / "labels.csv").is_file() else None

    speed = best["int8"]["wall_rate"] / best["fp32"]["wall_rate"]
    speed_embed = best["int8"]["embed_rate"] / best["fp32"]["embed_rate"]
    mean_cos = mean_cosine(e32, e8)
    d_r1 = 100 * (r1["int8"][0] - r1["fp32"][0])
    print()
    print(f"{'':28s} {'fp32':>10s} {'int8':>10s} {'int8/fp32':>10s}  target")
    print(
        f"{'stage rate (img/s, wall)':28s} {best['fp32']['wall_rate']:10.1f} "
        f"{best['int8']['wall_rate']:10.1f} {speed:10.2f}  >= {TARGET_SPEED}"
    )
    print(
        f"{'embedding phase (img/s)':28s} {best['fp32']['embed_rate']:10.1f} "
        f"{best['int8']['embed_rate']:10.1f} {speed_embed:10.2f}"
    )
    print(
        f"{'cosine to fp32 mean / min':28s} {'':10s} {mean_cos:10.4f} "
        f"{float(cos_rows.min()):10.4f}  mean >= {TARGET_COS}"
    )
    print(
        f"{'demo test Recall@1 (raw)':28s} {100 * r1['fp32'][0]:10.2f} {100 * r1['int8'][0]:10.2f} "
        f"{d_r1:+10.2f}  within {TARGET_R1_POINTS} point ({r1['fp32'][1]} queries)"
    )
    ok = speed >= TARGET_SPEED and mean_cos >= TARGET_COS and abs(d_r1) <= TARGET_R1_POINTS
    if lm is not None:
        print(
            f"{'landmarks-mini P@1 (LOO)':28s} {100 * lm['fp32']:10.2f} {100 * lm['int8']:10.2f} "
            f"{100 * (lm['int8'] - lm['fp32']):+10.2f}  not lower ({lm['images']} images, "
            f"cosine {lm['cosine']:.4f})"
        )
        ok = ok and lm["int8"] >= lm["fp32"]
    print(f"images {best['fp32']['images']}, calibration sample {best['int8']['calibration']}")
    print(f"load average at end: {load_avg()}")
    print(f"every target met: {ok}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
