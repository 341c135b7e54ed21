"""Generated backbone outputs for the split and neighbours tests: buildings on facades in a few cities.

Each building is a wall with 1-3 targets 4 m apart, all facing the same way, on a jittered grid
(``spacing_m`` apart, so two buildings never join); each target has 1-4 images. Fingerprints and
embeddings are a per-building pattern plus per-image noise, so images of one building look alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.sphere import offset_latlon
from sbe.storage import Manifest, fixed_size_list, write_manifest, write_part
from sbe.storage.schemas import FINGERPRINT_DIM, backbone_schema, make_uid

CITIES = [(45.5017, -73.5673), (48.8566, 2.3522), (-33.8688, 151.2093), (64.1466, -21.9426)]
BACKBONE_IDENTITY = {"name": "test-backbone", "dim": 16, "preprocess": {"crop": 32}}


@dataclass
class Generated:
    """What was generated: the table (all rows) and the true building of every image."""

    table: pa.Table
    building: np.ndarray  # int64 (N,), the generator's building index
    folder: Path


def make_images(
    n_buildings: int = 120,
    *,
    seed: int = 0,
    dim: int = 16,
    dtype: type = np.float16,
    spacing_m: float = 60.0,
    cities: list[tuple[float, float]] = CITIES,
    dataset_offset: int = 0,
) -> tuple[pa.Table, np.ndarray]:
    """A backbone-schema table of images of ``n_buildings`` buildings, and their true building."""
    rng = np.random.default_rng(seed)
    per_city = int(np.ceil(n_buildings / len(cities)))
    side = int(np.ceil(np.sqrt(per_city)))
    names = ["image_id", "target_uid", "dataset_id", "target_id", "patch_id", "panorama_id"]
    names += ["target_lat", "target_lon", "normal_x", "normal_y", "normal_z", "building"]
    cols: dict[str, list] = {k: [] for k in names}
    fps, embs = [], []
    patch = 0
    for b in range(n_buildings):
        city = b % len(cities)
        slot = b // len(cities)
        gx, gy = slot % side, slot // side
        east = gx * spacing_m + rng.uniform(-5, 5)
        north = gy * spacing_m + rng.uniform(-5, 5)
        facing = rng.uniform(0, 2 * np.pi)  # the normal's direction, radians from east
        along = np.array([-np.sin(facing), np.cos(facing)])  # the wall direction
        fp_base = rng.integers(0, 256, FINGERPRINT_DIM)
        emb_base = rng.normal(size=dim)
        dataset = dataset_offset + city
        for t in range(int(rng.integers(1, 4))):
            target_id = b * 10 + t
            e, nn = east + along[0] * 4 * t, north + along[1] * 4 * t
            lat, lon = offset_latlon(
                np.array([cities[city][0]]),
                np.array([cities[city][1]]),
                np.array([e]),
                np.array([nn]),
            )
            for _ in range(int(rng.integers(1, 5))):
                patch += 1
                cols["image_id"].append(make_uid(dataset, patch))
                cols["target_uid"].append(make_uid(dataset, target_id))
                cols["dataset_id"].append(dataset)
                cols["target_id"].append(target_id)
                cols["patch_id"].append(patch)
                cols["panorama_id"].append(int(rng.integers(0, 1000)))
                cols["target_lat"].append(float(lat[0]))
                cols["target_lon"].append(float(lon[0]))
                cols["normal_x"].append(np.cos(facing))
                cols["normal_y"].append(np.sin(facing))
                cols["normal_z"].append(0.0)
                cols["building"].append(b)
                fps.append(np.clip(fp_base + rng.normal(0, 12, FINGERPRINT_DIM), 0, 255))
                embs.append(emb_base + rng.normal(0, 0.3, dim))
    n = len(cols["image_id"])
    schema = backbone_schema(dim, pa.from_numpy_dtype(dtype))
    data = {
        "image_id": pa.array(cols["image_id"], pa.int64()),
        "target_uid": pa.array(cols["target_uid"], pa.int64()),
        "dataset_id": pa.array(cols["dataset_id"], pa.int32()),
        "target_id": pa.array(cols["target_id"], pa.int64()),
        "patch_id": pa.array(cols["patch_id"], pa.int64()),
        "panorama_id": pa.array(cols["panorama_id"], pa.int64()),
        "target_lat": pa.array(cols["target_lat"], pa.float64()),
        "target_lon": pa.array(cols["target_lon"], pa.float64()),
        "target_height": pa.array(np.full(n, 10.0, np.float32)),
        "normal_x": pa.array(np.asarray(cols["normal_x"], np.float32)),
        "normal_y": pa.array(np.asarray(cols["normal_y"], np.float32)),
        "normal_z": pa.array(np.asarray(cols["normal_z"], np.float32)),
        "camera_lat": pa.array(cols["target_lat"], pa.float64()),
        "camera_lon": pa.array(cols["target_lon"], pa.float64()),
        "camera_height": pa.array(np.full(n, 2.5, np.float32)),
        "camera_distance": pa.array(np.full(n, 20.0, np.float32)),
        "heading": pa.array(np.zeros(n, np.float32)),
        "pitch": pa.array(np.zeros(n, np.float32)),
        "capture_date": pa.array([None] * n, pa.date32()),
        "tar_file": pa.array([f"{d:04d}.tar" for d in cols["dataset_id"]], pa.string()),
        "fingerprint": fixed_size_list(np.asarray(fps).astype(np.uint8)),
        "embedding": fixed_size_list(np.asarray(embs).astype(dtype)),
    }
    table = pa.table(data, schema=schema)
    return table, np.asarray(cols["building"], np.int64)


def write_backbone_dir(
    folder: Path, table: pa.Table, n_parts: int = 3, identity: dict | None = None
) -> list[Path]:
    """Write ``table`` as ``n_parts`` backbone parts plus a backbone ``_manifest.json``."""
    identity = BACKBONE_IDENTITY if identity is None else identity
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, n_parts + 1).astype(int)
    paths = []
    for i in range(n_parts):
        p = folder / f"part-{i:03d}.parquet"
        write_part(table.slice(bounds[i], bounds[i + 1] - bounds[i]), p, {"backbone": identity})
        paths.append(p)
    write_manifest(folder, Manifest(stage="backbone", extra={"backbone": identity}))
    return paths


def generate(folder: Path, n_buildings: int = 120, **kwargs) -> Generated:
    n_parts = kwargs.pop("n_parts", 3)
    table, building = make_images(n_buildings, **kwargs)
    write_backbone_dir(folder, table, n_parts=n_parts)
    return Generated(table=table, building=building, folder=folder)


def read_splits(folder: Path) -> dict[str, pa.Table]:
    return {s: pq.read_table(folder / f"{s}.parquet") for s in ("train", "val", "test")}


def test_generator_layout(tmp_path: Path) -> None:
    g = generate(tmp_path / "bb", 40, seed=1)
    assert g.table.num_rows == len(g.building) > 40
    parts = sorted((tmp_path / "bb").glob("*.parquet"))
    assert len(parts) == 3
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in parts) == g.table.num_rows
    # targets of one building share the normal; images of one target share the position
    t = g.table.to_pandas()
    assert (t.groupby("target_uid")["target_lat"].nunique() == 1).all()
