"""Ingest rate per image of the same JPEGs packed three ways, in one run: 3D Street View tar,
image folder (+ metadata.csv), WebDataset shard (+ .json per image). Target: folder and
WebDataset at >= 0.9 of the 3D Street View rate.

Usage:
    .venv/bin/python benchmarks/ingest_sources.py [--images 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tarfactory import Record, make_dline, realistic_jpeg, write_tar

from sbe.config import IngestConfig
from sbe.data.streetview import format_metadata
from sbe.stages import ingest

TARGET = 0.9


def build(root: Path, n: int, size: int) -> dict[str, Path]:
    jpegs = [realistic_jpeg(size, seed=i) for i in range(n)]
    recs, lines = [], ["file_name,building_id,lat,lon,heading"]
    folder, shards = root / "photos", root / "shards"
    folder.mkdir()
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tf:
        for i, data in enumerate(jpegs):
            d = make_dline(i, 88)
            recs.append(
                Record(f"0088_{i:06d}_{i % 7}_{d.target_id:06d}", data, format_metadata(d), meta=d)
            )
            (folder / f"{i:06d}.jpg").write_bytes(data)
            lines.append(
                f"{i:06d}.jpg,{d.target_id},{d.camera_lat},{d.camera_lon},{d.heading % 360}"
            )
            meta = {
                "key": f"{i:09d}",
                "building_id": d.target_id,
                "lat": d.camera_lat,
                "lon": d.camera_lon,
            }
            for name, blob in (
                (f"{i:09d}.jpg", data),
                (f"{i:09d}.json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    raw = root / "raw"
    raw.mkdir()
    write_tar(raw / "0088.tar", recs, layout="nested")
    return {"3dsv": raw, "imagefolder": folder, "webdataset": shards}


def rate(inp: Path, out: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)  # parts of a previous repeat would be reused
        t0 = time.perf_counter()
        m = ingest.run(IngestConfig(inputs=[inp], output=out, workers=1))
        best = min(best, time.perf_counter() - t0)
    return m.rows["images"] / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        inputs = build(Path(tmp), a.images, a.size)
        rates = {k: rate(v, Path(tmp) / f"out-{k}", a.repeats) for k, v in inputs.items()}
    base = rates["3dsv"]
    print(f"{a.images} JPEGs of {a.size}px, best of {a.repeats}, workers=1")
    for k, r in rates.items():
        ok = "" if k == "3dsv" else ("  ok" if r / base >= TARGET else f"  BELOW {TARGET}")
        print(f"{k:12s} {r:8.1f} images/s  ratio {r / base:.2f}{ok}")


if __name__ == "__main__":
    main()
