"""Mapillary downloads: API v4 image entities as one JSON per image, a GeoJSON FeatureCollection,
or an API response (``{"data": [...]}``), next to image files named by the image id.

Per image: ``id``, ``computed_geometry`` / ``geometry`` (GeoJSON Point, lon/lat),
``computed_compass_angle`` / ``compass_angle`` (degrees from north), ``captured_at`` (epoch ms),
``sequence``, ``camera_type``, ``is_pano``. The computed position and angle are preferred when
present; ``position_source`` / ``heading_source`` say which was used (``computed`` or ``gps`` /
``camera``). Imagery licence: CC BY-SA 4.0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sbe.data.sources.base import (
    Columns,
    RowSkip,
    id_string,
    parse_heading,
    parse_position,
    parse_time,
    records_table,
)
from sbe.data.sources.imagefolder import FolderPlan, _stat, list_images
from sbe.errors import SbeError
from sbe.storage import SkipLog

METADATA_SUFFIXES = (".json", ".geojson")


def find_metadata(root: Path) -> list[Path]:
    """The JSON / GeoJSON files under ``root`` (sorted; hidden and ``_`` names left out)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        for f in filenames:
            if not f.startswith((".", "_")) and f.lower().endswith(METADATA_SUFFIXES):
                out.append(Path(dirpath) / f)
    return sorted(out)


def entities(doc: Any) -> list[tuple[dict[str, Any], Any]]:
    """``(properties, geometry)`` per image entity of one parsed JSON document."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return [
            (f.get("properties") or {}, f.get("geometry"))
            for f in doc.get("features") or []
            if isinstance(f, dict)
        ]
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [(doc.get("properties") or {}, doc.get("geometry"))]
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return [(e, e.get("geometry")) for e in doc["data"] if isinstance(e, dict)]
    if isinstance(doc, dict) and "id" in doc:
        return [(doc, doc.get("geometry"))]
    if isinstance(doc, list):
        return [(e, e.get("geometry")) for e in doc if isinstance(e, dict)]
    return []


def _point(geom: Any, column: str) -> tuple[float | None, float | None]:
    if geom is None:
        return None, None
    coords = geom.get("coordinates") if isinstance(geom, dict) else None
    if not isinstance(coords, list) or len(coords) < 2:
        raise RowSkip("bad_coordinate", f"{column} is not a GeoJSON Point: {str(geom)[:60]}")
    lat, lon = parse_position(coords[1], coords[0])
    return lat, lon


def record(
    props: dict[str, Any], geometry: Any, file: str, cols: Columns, warns: SkipLog, where: str
) -> dict[str, Any]:
    """One ``RECORD_SCHEMA`` row from a Mapillary image entity.

    Raises:
        RowSkip: a bad position or angle.
    """
    lat, lon = _point(props.get("computed_geometry"), "computed_geometry")
    pos_src = "computed" if lat is not None else None
    if lat is None:
        lat, lon = _point(geometry if geometry is not None else props.get("geometry"), "geometry")
        pos_src = "gps" if lat is not None else None
    heading = parse_heading(props.get("computed_compass_angle"), "computed_compass_angle")
    head_src = "computed" if heading is not None else None
    if heading is None:
        heading = parse_heading(props.get("compass_angle"), "compass_angle")
        head_src = "camera" if heading is not None else None
    captured = None
    try:
        captured = parse_time(props.get("captured_at"))
    except (ValueError, OverflowError):
        warns.add("bad_capture_time", f"{where}: captured_at {props.get('captured_at')!r}")
    seq = props.get("sequence")
    if isinstance(seq, dict):  # the API may expand it to {"id": ...}
        seq = seq.get("id")
    pano = props.get("is_pano")
    return {
        "file": file,
        "image_key": id_string(props.get("id")),
        "building_key": id_string(props.get(cols.id)) if cols.id else None,
        "lat": lat,
        "lon": lon,
        "heading": heading,
        "captured_at": captured,
        "sequence": id_string(seq),
        "camera_type": id_string(props.get("camera_type")),
        "is_pano": pano if isinstance(pano, bool) else None,
        "position_source": pos_src,
        "heading_source": head_src,
    }


def plan_mapillary(root: str | os.PathLike[str], id_column: str | None = None) -> FolderPlan:
    """Every image of a Mapillary download with its metadata (see the module docstring).

    Raises:
        SbeError: no images or no metadata under ``root``.
    """
    root = Path(root)
    images = list_images(root)
    if not images:
        raise SbeError(f"no images under {root}")
    by_stem: dict[str, str] = {}
    for f in images:
        by_stem.setdefault(os.path.splitext(os.path.basename(f))[0], f)
    metas = find_metadata(root)
    if not metas:
        raise SbeError(f"{root}: no Mapillary metadata (.json or .geojson) found")
    skips, warns = SkipLog(), SkipLog()
    recs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for m in metas:
        try:
            doc = json.loads(m.read_bytes())
        except (OSError, ValueError) as e:
            skips.add("bad_metadata_row", f"{m.name}: {e}")
            continue
        ents = entities(doc)
        if not ents:
            skips.add("bad_metadata_row", f"{m.name}: no Mapillary image entity (id) in it")
            continue
        for i, (props, geom) in enumerate(ents, 1):
            where = f"{m.name}" + (f" feature {i}" if len(ents) > 1 else "")
            key = id_string(props.get("id"))
            if key is None:
                skips.add("missing_file_name", f"{where}: no id")
                continue
            file = by_stem.get(key) or (by_stem.get(m.stem) if len(ents) == 1 else None)
            if file is None:
                skips.add("missing_image", f"{where}: no image file named {key}.jpg under {root}")
                continue
            if file in seen:
                skips.add("duplicate_image", f"{where}: {file} described again")
                continue
            cols = Columns.resolve(list(props), id_column)
            try:
                rec = record(props, geom, file, cols, warns, where)
            except RowSkip as e:
                skips.add(e.reason, f"{where} ({file}): {e.detail}")
                continue
            seen.add(file)
            recs.append(rec)
    for f in images:
        if f not in seen:
            warns.add("image_without_metadata", str(root / f))
    recs.sort(key=lambda r: r["file"])
    size, mtime = _stat(root, [r["file"] for r in recs])
    extra = {"id": [r["image_key"] for r in recs]}
    return FolderPlan(
        root,
        records_table(recs),
        size,
        mtime,
        extra=extra,
        metadata_files=metas,
        skips=skips,
        warns=warns,
    )
