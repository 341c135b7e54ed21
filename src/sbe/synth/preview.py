"""A contact sheet of the synthetic world: one row per target, its views side by side.

Rows are chosen from different cities (targets with the most views first), each tile is labelled
with the city, the capture date and the weather, so a person can judge at a glance whether the
views look like street-level facades and whether the views of one target agree.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw

from sbe.synth.paint import font

_SHORT = {"partly_cloudy": "cloudy", "snowfall": "snowing"}


def _read_members(tar_path: Path, names: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.name in names:
                fh = tf.extractfile(m)
                if fh is not None:
                    out[m.name] = fh.read()
    return out


def contact_sheet(
    out_dir: Path,
    truth: pa.Table,
    rows: int = 8,
    cols: int = 6,
    tile: int = 150,
) -> Image.Image:
    """Build the contact sheet from the tars in ``out_dir`` and the ground truth table.

    Args:
        out_dir: folder holding the tars.
        truth: the ``truth.parquet`` table.
        rows: targets shown (one per row, cities in turn).
        cols: views per row at most.
        tile: tile side in pixels.

    Returns:
        An RGB image.
    """
    t = truth.select(["tar_file", "member_name", "dataset_id", "target_id", "city", "capture_date", "weather",
                      "snow_cover", "building_index"]).to_pylist()  # fmt: skip
    by_target: dict[tuple[int, int], list[dict]] = {}
    for r in t:
        by_target.setdefault((r["dataset_id"], r["target_id"]), []).append(r)
    ranked = sorted(by_target.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    chosen: list[list[dict]] = []
    seen_cities: dict[str, int] = {}
    for _round in range(3):
        for _key, views in ranked:
            city = views[0]["city"]
            if len(chosen) >= rows:
                break
            if seen_cities.get(city, 0) > _round or views in chosen:
                continue
            seen_cities[city] = seen_cities.get(city, 0) + 1
            chosen.append(views)
    label_h = max(12, tile // 10)
    head_w = tile // 2 + 30
    sheet = Image.new(
        "RGB", (head_w + cols * (tile + 4), len(chosen) * (tile + label_h + 6) + 4), (250, 250, 248)
    )
    d = ImageDraw.Draw(sheet)
    f_small = font(max(8, label_h - 3))
    f_head = font(max(9, tile // 12))
    for i, views in enumerate(chosen):
        views = sorted(views, key=lambda r: r["capture_date"])[:cols]
        by_tar: dict[str, set[str]] = {}
        for r in views:
            by_tar.setdefault(r["tar_file"], set()).add(r["member_name"])
        data: dict[str, bytes] = {}
        for tar, names in by_tar.items():
            data.update(_read_members(out_dir / tar, names))
        y = 4 + i * (tile + label_h + 6)
        v0 = views[0]
        d.text((6, y + tile // 2 - 16), v0["city"], fill=(20, 20, 20), font=f_head)
        d.text(
            (6, y + tile // 2 + 2),
            f"building {v0['building_index']}",
            fill=(90, 90, 90),
            font=f_small,
        )
        d.text(
            (6, y + tile // 2 + 16),
            f"target {v0['dataset_id']:04d}/{v0['target_id']}",
            fill=(90, 90, 90),
            font=f_small,
        )
        for j, r in enumerate(views):
            x = head_w + j * (tile + 4)
            img = (
                Image.open(io.BytesIO(data[r["member_name"]]))
                .convert("RGB")
                .resize((tile, tile), Image.Resampling.LANCZOS)
            )
            sheet.paste(img, (x, y))
            weather = _SHORT.get(r["weather"], r["weather"]) + (", snow" if r["snow_cover"] else "")
            d.text(
                (x + 2, y + tile + 1),
                f"{r['capture_date']} {weather}",
                fill=(40, 40, 40),
                font=f_small,
            )
    return sheet


def save_preview(sheet: Image.Image, path: Path) -> None:
    """Save as a palette PNG (keeps a photo contact sheet well under 1 MB)."""
    from sbe.storage import atomic_path

    small = sheet.quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
    )
    with atomic_path(path) as tmp:
        small.save(tmp, format="PNG", optimize=True)
