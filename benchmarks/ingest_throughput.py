"""Ingest throughput (images/s) on a generated tar of 640x640 JPEGs, against the reference way.

Baseline (the reference system's ``process_tar``): extract the whole tar to a temp dir, find every
``.txt``, parse its ``d`` line, and fully decode the JPEG beside it with Pillow. It writes no
fingerprints (the reference computes those in a second pass that extracts and decodes again, shown
as a second, informational row).

Ours: ``sbe.stages.ingest.run`` on the same tar: one streaming pass, no extraction, one
reduced-scale decode per JPEG that also yields the fingerprint, parquet part + manifest written.
Timed once with automatic decode threads (one per core) and once single-threaded.

Usage:
    .venv/bin/python benchmarks/ingest_throughput.py [--images 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tarfactory import Record, make_dline, realistic_jpeg, write_tar

from sbe.config import IngestConfig
from sbe.data.streetview import format_metadata
from sbe.stages import ingest

TARGET_RATIO = 5.0


def build_tar(path: Path, n: int, size: int) -> Path:
    recs = []
    for i in range(n):
        d = make_dline(i, 88)
        stem = f"0088_{i:06d}_{i % 7}_{d.target_id:06d}"
        recs.append(Record(stem, realistic_jpeg(size, seed=i), format_metadata(d), meta=d))
    return write_tar(path, recs, layout="nested")


def baseline_extract_and_decode(tar: Path, fingerprints: bool = False) -> int:
    """The reference way: extract everything, then read each pair back from disk."""
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        with tarfile.open(tar) as tf:
            tf.extractall(tmp, filter="data")
        rows = 0
        for txt in sorted(Path(tmp).rglob("*.txt")):
            tokens = txt.read_text().splitlines()[0].split()
            if len(tokens) != 18 or tokens[0] != "d":
                continue
            values = [float(t) for t in tokens[1:]]
            img_path = txt.with_suffix(".jpg")
            if not img_path.exists():
                img_path = txt.with_suffix(".jpeg")
            with Image.open(img_path) as img:
                rgb = img.convert("RGB")  # full-resolution decode
            if fingerprints:
                thumb = rgb.resize((16, 16), Image.Resampling.BILINEAR)
                np.asarray(thumb, dtype=np.uint8)
            rows += int(values[0] >= 0)
        return rows


def baseline_two_passes(tar: Path) -> int:
    """Reference process_tar, then compute_fingerprints (extract + full decode again)."""
    baseline_extract_and_decode(tar)
    return baseline_extract_and_decode(tar, fingerprints=True)


def ours(tar: Path, decode_threads: int) -> Callable[[], int]:
    def go() -> int:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as out:
            cfg = IngestConfig(
                inputs=[tar], output=Path(out), workers=1, decode_threads=decode_threads
            )
            m = ingest.run(cfg, show_progress=False)
            return m.rows["images"]

    return go


def measure(methods: list[tuple[str, Callable[[], int]]], repeats: int, n: int) -> list[dict]:
    """Run the methods round-robin ``repeats`` times; keep each one's fastest wall and CPU time.

    Interleaving and taking the minimum make the comparison fair on a machine shared with other
    jobs: background load only ever adds time, and it hits every method alike.
    """
    best = {name: {"wall": float("inf"), "cpu": float("inf")} for name, _ in methods}
    for name, fn in methods:
        assert fn() == n, name  # warm-up: page cache, imports, thread pools
    for _ in range(repeats):
        for name, fn in methods:
            w0, c0 = time.perf_counter(), time.process_time()
            rows = fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            assert rows == n, (name, rows)
            best[name]["wall"] = min(best[name]["wall"], wall)
            best[name]["cpu"] = min(best[name]["cpu"], cpu)
    return [{"name": name, **best[name]} for name, _ in methods]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-data-"))
    try:
        t0 = time.perf_counter()
        tar = build_tar(work / "0088.tar", args.images, args.size)
        mb = tar.stat().st_size / 1e6
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0]
        print(
            f"{args.images} generated {args.size}x{args.size} JPEGs (q90, "
            f"{mb * 1e3 / args.images:.0f} KB each), tar {mb:.1f} MB, made in "
            f"{time.perf_counter() - t0:.1f} s; {cores} CPUs ({platform.machine()}), "
            f"load average {load:.1f}"
        )
        methods = [
            (
                "baseline: extract + full decode (reference process_tar)",
                lambda: baseline_extract_and_decode(tar),
            ),
            (
                "reference, both passes (+ extract + decode for fingerprints)",
                lambda: baseline_two_passes(tar),
            ),
            (f"sbe ingest, {cores} decode threads", ours(tar, 0)),
            ("sbe ingest, 1 decode thread", ours(tar, 1)),
        ]
        results = measure(methods, args.repeats, args.images)
        base = results[0]
        print(f"\nbest of {args.repeats} interleaved runs; CPU = process CPU time, all threads")
        print(
            f"{'method':<62} {'wall s':>7} {'images/s':>9} {'vs base':>8} "
            f"{'CPU ms/img':>10} {'vs base':>8}"
        )
        for r in results:
            print(
                f"{r['name']:<62} {r['wall']:>7.3f} {args.images / r['wall']:>9.1f} "
                f"{base['wall'] / r['wall']:>7.2f}x {r['cpu'] * 1e3 / args.images:>10.2f} "
                f"{base['cpu'] / r['cpu']:>7.2f}x"
            )
        fastest = min(results[2:], key=lambda r: r["wall"])
        ratio = base["wall"] / fastest["wall"]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(
            f"\nratio (fastest sbe ingest / baseline, images/s): {ratio:.2f}x "
            f"(target >= {TARGET_RATIO:.0f}x: {verdict})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
