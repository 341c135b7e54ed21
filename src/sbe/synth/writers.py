"""Writing the synthetic world: one deterministic tar per map region, its ground truth, packaged images.

Tars are byte-identical for the same plan: members are sorted by PatchID, every header has a fixed
mtime, uid/gid 0, empty owner names and mode 0644, and the format is plain ustar. Half the tars
(even DatasetIDs) nest their members as ``NNNN/NNNN/<stem>.jpg`` (with directory entries), the
others keep them at the top level, as both layouts occur in the real data.

Each tar has a ground-truth part ``_truth/NNNN.parquet`` written *after* the tar; its footer holds
the tar's key and size, so a rerun skips a tar exactly when both are present and current.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sbe.storage import atomic_path, part_is_current, read_part_meta, write_part
from sbe.storage.schemas import required_fields
from sbe.synth.capture import camera_model_for
from sbe.synth.metadata import metadata_text
from sbe.synth.plan import DatasetPlan, View
from sbe.synth.scene import RenderSettings, SceneRenderer

#: fixed member mtime (2016-01-01T00:00:00Z): tars do not depend on when they were written
MEMBER_MTIME = 1_451_606_400
TRUTH_DIR = "_truth"

TRUTH_SCHEMA = pa.schema(
    required_fields(
        stem=pa.string(),
        tar_file=pa.string(),
        member_name=pa.string(),
        dataset_id=pa.int32(),
        patch_id=pa.int64(),
        target_id=pa.int64(),
        panorama_id=pa.int64(),
        building_index=pa.int64(),
        facade_index=pa.int64(),
        side_facade=pa.bool_(),
        duplicate_of=pa.int64(),
        city=pa.string(),
        koppen=pa.string(),
        hemisphere=pa.string(),
        style_family=pa.string(),
        material=pa.string(),
        roof=pa.string(),
        floors=pa.int16(),
        building_lat=pa.float64(),
        building_lon=pa.float64(),
        capture_date=pa.date32(),
        season=pa.string(),
        weather=pa.string(),
        camera_model=pa.string(),
        snow_cover=pa.bool_(),
        sun_on_facade=pa.bool_(),
        sun_elevation=pa.float32(),
        view_angle=pa.float32(),  # degrees off the facade normal
        camera_distance=pa.float32(),  # metres, 3-D
        fov=pa.float32(),  # degrees, horizontal
        occlusion=pa.float32(),  # share of the central box covered
    )
)


def tar_name(dataset_id: int) -> str:
    return f"{dataset_id:04d}.tar"


def member_stem(dataset_id: int, view: View) -> str:
    """``<DatasetID:04d>_<PatchID>_<StreetViewID>_<TargetID>`` (ImageID = PatchID)."""
    return f"{dataset_id:04d}_{view.patch_id}_{view.panorama_id}_{view.target_id}"


def nested_layout(dataset_id: int) -> bool:
    """Even DatasetIDs nest members under ``NNNN/NNNN/``; odd ones keep them at the top level."""
    return dataset_id % 2 == 0


def member_prefix(dataset_id: int) -> str:
    return f"{dataset_id:04d}/{dataset_id:04d}/" if nested_layout(dataset_id) else ""


def _info(name: str, size: int, is_dir: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = 0 if is_dir else size
    ti.mtime = MEMBER_MTIME
    ti.mode = 0o755 if is_dir else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    return ti


def write_tar(path: Path, members: list[tuple[str, bytes]], dirs: list[str]) -> int:
    """Write a deterministic ustar archive atomically; returns its size in bytes."""
    with atomic_path(path) as tmp:
        with (
            open(tmp, "wb") as fh,
            tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tf,
        ):
            for d in dirs:
                tf.addfile(_info(d, 0, is_dir=True))
            for name, data in members:
                tf.addfile(_info(name, len(data)), io.BytesIO(data))
        size = tmp.stat().st_size
    return size


@dataclass(frozen=True)
class DatasetTask:
    """Everything a worker needs to write one tar (picklable)."""

    plan: DatasetPlan
    settings: RenderSettings
    out_dir: str
    key: str


def truth_path(out_dir: Path, dataset_id: int) -> Path:
    return Path(out_dir) / TRUTH_DIR / f"{dataset_id:04d}.parquet"


def dataset_is_current(out_dir: Path, dataset_id: int, key: str) -> bool:
    """True if the tar and its truth part exist and were written for ``key``."""
    tp = truth_path(out_dir, dataset_id)
    if not part_is_current(tp, {"synth_key": key}):
        return False
    meta = read_part_meta(tp) or {}
    tar = Path(out_dir) / tar_name(dataset_id)
    return tar.is_file() and tar.stat().st_size == meta.get("tar_size")


def render_views(
    plan: DatasetPlan, settings: RenderSettings
) -> tuple[dict[int, bytes], list[dict[str, Any]]]:
    """Render every view of a region; returns ``({patch_id: jpeg}, truth rows)``.

    Views are rendered grouped by street side (texture cache locality); the result does not
    depend on that order.
    """
    renderer = SceneRenderer(plan, settings)
    jpegs: dict[int, bytes] = {}
    rows: list[dict[str, Any]] = []
    city = plan.city_info
    order = sorted(plan.views, key=lambda v: (plan.targets[v.target_id].line, v.patch_id))
    current_line = None
    for view in order:
        target = plan.targets[view.target_id]
        if target.line != current_line:
            renderer.drop_line_cache({target.line})
            current_line = target.line
        rv = renderer.render(view)
        jpegs[view.patch_id] = rv.jpeg
        bld = plan.buildings[target.building]
        fac = plan.facades[target.facade]
        # the building's location: the middle of its front facade
        fronts = [plan.facades[f] for f in bld.facades if not plan.facades[f].side]
        front = fronts[0] if fronts else fac
        line = plan.lines[front.line]
        centre = line.point((front.u0 + front.u1) / 2)
        blat, blon = plan.latlon(float(centre[0]), float(centre[1]))
        cond = plan.drives[plan.panoramas[view.panorama_id].drive].conditions
        stem = member_stem(plan.dataset_id, view)
        rows.append(
            {
                "stem": stem,
                "tar_file": tar_name(plan.dataset_id),
                "member_name": member_prefix(plan.dataset_id) + stem + ".jpg",
                "dataset_id": plan.dataset_id,
                "patch_id": view.patch_id,
                "target_id": view.target_id,
                "panorama_id": view.panorama_id,
                "building_index": bld.index,
                "facade_index": fac.index,
                "side_facade": fac.side,
                "duplicate_of": bld.duplicate_of,
                "city": city.name,
                "koppen": city.koppen,
                "hemisphere": city.hemisphere,
                "style_family": bld.genome.family,
                "material": bld.genome.material,
                "roof": bld.genome.roof,
                "floors": bld.genome.floors,
                "building_lat": blat,
                "building_lon": blon,
                "capture_date": cond.date,
                "season": cond.season,
                "weather": cond.weather,
                "camera_model": camera_model_for(cond.date.year).name,
                "snow_cover": cond.snow_cover,
                "sun_on_facade": rv.sun_on_facade,
                "sun_elevation": cond.sun_elevation_deg,
                "view_angle": rv.geometry.view_angle_deg,
                "camera_distance": rv.geometry.distance_m,
                "fov": view.fov_deg,
                "occlusion": rv.occlusion,
            }
        )
    rows.sort(key=lambda r: r["patch_id"])
    return jpegs, rows


def write_dataset(task: DatasetTask) -> dict[str, Any]:
    """Render one region and write ``NNNN.tar`` plus its truth part (atomic, in that order).

    Returns:
        A summary: dataset_id, images, targets, buildings, tar_size.
    """
    from sbe.synth.metadata import view_geometry

    plan, out = task.plan, Path(task.out_dir)
    jpegs, rows = render_views(plan, task.settings)
    prefix = member_prefix(plan.dataset_id)
    dirs = [f"{plan.dataset_id:04d}/", prefix] if prefix else []
    members: list[tuple[str, bytes]] = []
    for view in plan.views:  # sorted by PatchID
        stem = member_stem(plan.dataset_id, view)
        text = metadata_text(plan, view, view_geometry(plan, view)).encode("ascii")
        members.append((f"{prefix}{stem}.jpg", jpegs[view.patch_id]))
        members.append((f"{prefix}{stem}.txt", text))
    size = write_tar(out / tar_name(plan.dataset_id), members, dirs)
    table = pa.Table.from_pylist(rows, schema=TRUTH_SCHEMA)
    write_part(table, truth_path(out, plan.dataset_id), {"synth_key": task.key, "tar_size": size})
    return {
        "dataset_id": plan.dataset_id,
        "images": len(rows),
        "targets": len(plan.targets),
        "buildings": len(plan.target_buildings()),
        "tar_size": size,
    }


# ---- packaged images (input of the embedding stage) -------------------------------------------

PACKAGED_SCHEMA = pa.schema(
    [
        pa.field("image_bytes", pa.binary(), nullable=False),
        pa.field("OSMID", pa.int64(), nullable=False),
        pa.field("is_valid", pa.bool_(), nullable=True),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class PackagedTask:
    """Render the images of the packaged buildings of one region (picklable)."""

    plan: DatasetPlan
    settings: RenderSettings
    max_images_per_building: int = 5


def render_packaged(task: PackagedTask) -> list[dict[str, Any]]:
    """Render up to ``max_images_per_building`` views of each target building of a region.

    Returns:
        Rows ``{building_index, jpeg, lat, lon}``, ordered by building then PatchID.
    """
    plan = task.plan
    keep: list[View] = []
    per_building: dict[int, int] = {}
    for view in plan.views:
        b = plan.targets[view.target_id].building
        if per_building.get(b, 0) < task.max_images_per_building:
            per_building[b] = per_building.get(b, 0) + 1
            keep.append(view)
    sub = DatasetPlan(**{**plan.__dict__, "views": keep})
    jpegs, rows = render_views(sub, task.settings)
    return [
        {
            "building_index": r["building_index"],
            "jpeg": jpegs[r["patch_id"]],
            "lat": r["building_lat"],
            "lon": r["building_lon"],
        }
        for r in sorted(rows, key=lambda r: (r["building_index"], r["patch_id"]))
    ]


def assemble_packaged(rows: list[dict[str, Any]], seed: int) -> tuple[pa.Table, dict[str, Any]]:
    """Build ``packaged_images.parquet``: OSMIDs, some invalid and null flags, two corrupt rows.

    Two extra rows carry corrupt bytes with ``is_valid = True`` (so a validity filter does not hide
    them): a truncated JPEG (its first 40 %) and bytes that are no image at all. Both reuse the
    OSMID of a building that also has good images.

    Returns:
        ``(table, info)``; ``info`` lists the corrupt rows' indexes and OSMIDs.
    """
    rng = np.random.default_rng([seed, 1, 4242])
    buildings = sorted({r["building_index"] for r in rows})
    osmid_of: dict[int, int] = {}
    used: set[int] = set()
    for b in buildings:  # OSM-like way ids, unique
        o = int(rng.integers(100_000_000, 1_200_000_000))
        while o in used:
            o = int(rng.integers(100_000_000, 1_200_000_000))
        used.add(o)
        osmid_of[b] = o
    records: list[dict[str, Any]] = []
    for r in rows:
        u = rng.random()
        valid = False if u < 0.08 else (None if u < 0.14 else True)
        records.append({"image_bytes": r["jpeg"], "OSMID": osmid_of[r["building_index"]],
                        "is_valid": valid, "lat": r["lat"], "lon": r["lon"]})  # fmt: skip
    order = [int(i) for i in rng.permutation(len(records))]
    records = [records[i] for i in order]
    info: dict[str, Any] = {"corrupt_rows": [], "corrupt_osmids": []}
    if records:
        good = records[0]
        truncated = dict(
            good,
            image_bytes=good["image_bytes"][: max(16, len(good["image_bytes"]) * 2 // 5)],
            is_valid=True,
        )
        other = records[len(records) // 2]
        garbage = dict(
            other, image_bytes=b"this is not an image\x00" + bytes(range(64)), is_valid=True
        )
        for pos, rec in sorted(
            ((min(len(records), 3), truncated), (min(len(records) + 1, 11), garbage))
        ):
            records.insert(pos, rec)
            info["corrupt_rows"].append(pos)
            info["corrupt_osmids"].append(rec["OSMID"])
    return pa.Table.from_pylist(records, schema=PACKAGED_SCHEMA), info
