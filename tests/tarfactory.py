"""Write small tars in the 3D Street View raw format (JPEG + ``.txt`` pairs), whole or damaged.

Used by the ingest tests and ``benchmarks/ingest_throughput.py``. Everything is generated: small
JPEGs (flat colour + a shape, or realistic gradient + noise + shapes), ``d`` lines from
:func:`sbe.data.streetview.format_metadata`, and members laid out flat or nested.
"""

from __future__ import annotations

import datetime as dt
import io
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from sbe.data.streetview import DLine, format_metadata

Layout = Literal["flat", "nested"]


def make_jpeg(
    width: int = 48, height: int = 48, seed: int = 0, quality: int = 90, fmt: str = "JPEG"
) -> bytes:
    """A small image: a seed-dependent background with one rectangle (distinct fingerprints)."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (width, height), bg)
    d = ImageDraw.Draw(img)
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    d.rectangle(
        [x0, y0, x0 + width // 3, y0 + height // 3],
        fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
    )
    buf = io.BytesIO()
    img.save(buf, fmt, quality=quality) if fmt == "JPEG" else img.save(buf, fmt)
    return buf.getvalue()


def realistic_jpeg(size: int = 640, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like ``size`` x ``size`` JPEG: smooth gradients, sensor-like noise, 30 shapes.

    At 640 px and quality 90 this is ~90 KB, in the range of real Street View crops, so decode
    cost is realistic (a flat image would flatter reduced-scale decoding).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 1, 3)
    base = np.stack([x + phase[0], y + phase[1], (x + y) / 2 + phase[2]], -1) % 1.0 * 255.0
    base += rng.normal(0.0, 12.0, base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x0, y0 = (int(v) for v in rng.integers(0, size - 10, 2))
        w, h = (int(v) for v in rng.integers(10, size // 3, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_dline(i: int, dataset_id: int = 88, targets: int = 3, **overrides: float | int) -> DLine:
    """A valid ``d`` line for image ``i``: patch ``i``, target ``i // targets``, plausible geometry."""
    rng = np.random.default_rng(i)
    nx, ny = float(np.cos(i)), float(np.sin(i))
    values: dict[str, float | int] = dict(
        dataset_id=dataset_id,
        target_id=i // targets,
        patch_id=i,
        panorama_id=1000 + i,
        target_lat=40.7 + float(rng.uniform(-0.01, 0.01)),
        target_lon=-74.0 + float(rng.uniform(-0.01, 0.01)),
        target_height=float(rng.uniform(0, 30)),
        normal_x=nx,
        normal_y=ny,
        normal_z=0.0,
        camera_lat=40.7 + float(rng.uniform(-0.01, 0.01)),
        camera_lon=-74.0 + float(rng.uniform(-0.01, 0.01)),
        camera_height=2.5,
        camera_distance=float(rng.uniform(5, 40)),
        heading=float(rng.uniform(0, 360)) % 360.0,
        pitch=float(rng.uniform(-10, 30)),
        roll=0.0,
    )
    values.update(overrides)
    return DLine(**values)  # type: ignore[arg-type]


@dataclass
class Record:
    """One image of a raw tar: the ``.jpg`` and ``.txt`` halves (``None`` leaves a half out)."""

    stem: str
    jpeg: bytes | None
    txt: bytes | str | None
    image_ext: str = ".jpg"
    meta: DLine | None = None
    folder: str | None = None  # overrides the layout's folder for this record


def records(
    n: int,
    dataset_id: int = 88,
    *,
    start: int = 0,
    size: int = 48,
    capture_date: dt.date | None = None,
    targets: int = 3,
) -> list[Record]:
    """``n`` valid records named upstream-style ``<DatasetID>_<ImageID>_<ViewID>_<TargetID>``."""
    out = []
    for i in range(start, start + n):
        d = make_dline(i, dataset_id, targets)
        stem = f"{dataset_id:04d}_{i:06d}_{i % 7}_{d.target_id:06d}"
        out.append(
            Record(stem, make_jpeg(size, size, seed=i), format_metadata(d, capture_date), meta=d)
        )
    return out


@dataclass
class Extra:
    """An arbitrary member: a regular file, a directory, a symlink, a FIFO..."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def _add(tf: tarfile.TarFile, name: str, data: bytes, type_: bytes = tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = link
    info.mtime = 1_700_000_000
    if type_ in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def member_names(rec: Record, layout: Layout, dataset: str) -> tuple[str, str]:
    folder = (
        rec.folder
        if rec.folder is not None
        else (f"{dataset}/{dataset}/" if layout == "nested" else "")
    )
    return folder + rec.stem + rec.image_ext, folder + rec.stem + ".txt"


def write_tar(
    path: str | Path,
    recs: Iterable[Record],
    *,
    layout: Layout = "nested",
    order: Literal["pairs", "txt_first", "images_first"] = "pairs",
    extras: Sequence[Extra] = (),
    fmt: int = tarfile.GNU_FORMAT,
) -> Path:
    """Write a raw tar. Nested layout = ``<stem of tar>/<stem of tar>/<stem>.jpg`` (as upstream).

    Args:
        order: ``pairs`` = jpg then txt per record; ``txt_first`` = txt then jpg per record;
            ``images_first`` = all JPEGs, then all ``.txt`` (worst case for pairing memory).
        extras: additional members written first (directories, links, unsafe names...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = path.name.split(".")[0]
    recs = list(recs)
    members: list[tuple[str, bytes]] = []
    jpgs, txts = [], []
    for r in recs:
        jname, tname = member_names(r, layout, dataset)
        j = (jname, r.jpeg) if r.jpeg is not None else None
        t = None
        if r.txt is not None:
            t = (tname, r.txt.encode() if isinstance(r.txt, str) else r.txt)
        jpgs.append(j)
        txts.append(t)
        pair = [j, t] if order != "txt_first" else [t, j]
        if order in ("pairs", "txt_first"):
            members.extend(m for m in pair if m is not None)
    if order == "images_first":
        members = [m for m in jpgs + txts if m is not None]
    with tarfile.open(path, "w", format=fmt) as tf:
        for e in extras:
            _add(tf, e.name, e.data, e.type, e.linkname)
        for name, data in members:
            _add(tf, name, data)
    return path


def truncate(path: str | Path, keep: int) -> Path:
    """Cut the file to its first ``keep`` bytes (``keep`` < 0 removes ``-keep`` bytes)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


def member_offset(path: str | Path, name: str) -> tuple[int, int]:
    """``(offset_data, size)`` of a member, read with tarfile's random-access mode."""
    with tarfile.open(path, "r:") as tf:
        info = tf.getmember(name)
        return info.offset_data, info.size
