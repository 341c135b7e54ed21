"""A tiny generated world for developing and testing the geo heads without the image pipeline.

Buildings are scattered around real cities of different climates; each image's embedding weakly
encodes its city and the *visual* season (northern-hemisphere day of year, shifted by half a year in
the south) plus noise. Rows are assigned to train/val/test by hashing ~500 m cells, as the split
stage does, so the test geography is held out. Output files follow ``split_schema``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from sbe.geo.season import doy_to_angle
from sbe.sphere import offset_latlon
from sbe.storage import Manifest, fixed_size_list, write_manifest, write_part
from sbe.storage.schemas import FINGERPRINT_DIM, SPLITS, split_schema

#: (name, lat, lon): spread over the Köppen groups and both hemispheres
TOY_CITIES: tuple[tuple[str, float, float], ...] = (
    ("Amsterdam", 52.37, 4.90),
    ("Madrid", 40.42, -3.70),
    ("Cairo", 30.04, 31.24),
    ("Singapore", 1.35, 103.82),
    ("Moscow", 55.76, 37.62),
    ("Sydney", -33.87, 151.21),
    ("Hong Kong", 22.32, 114.17),
    ("Reykjavik", 64.15, -21.94),
    ("Mumbai", 19.08, 72.88),
    ("Rio de Janeiro", -22.91, -43.17),
    ("Chicago", 41.88, -87.63),
    ("Cape Town", -33.93, 18.42),
)
TOY_BACKBONE = {"name": "toy", "dim": 0, "preprocess": None}


def toy_tables(
    *,
    cities: int = 8,
    buildings_per_city: int = 60,
    images_per_building: int = 3,
    dim: int = 64,
    city_spread_km: float = 4.0,
    city_signal: float = 1.0,
    season_signal: float = 0.8,
    noise: float = 1.0,
    date_fraction: float = 0.9,
    cell_size_m: float = 500.0,
    seed: int = 0,
) -> dict[str, pa.Table]:
    """Generate ``{"train", "val", "test"}`` tables (``split_schema(dim)``), ~70/15/15 by cell.

    Args:
        cities: how many of :data:`TOY_CITIES` to use.
        city_signal, season_signal, noise: strengths of the city direction, the season direction
            and the isotropic noise in the embedding (before L2 normalisation).
        date_fraction: share of rows with a ``capture_date`` (the others are null).
    """
    rng = np.random.default_rng(seed)
    chosen = TOY_CITIES[: max(1, min(cities, len(TOY_CITIES)))]
    city_dirs = rng.standard_normal((len(chosen), dim))
    season_basis = rng.standard_normal((2, dim))
    n_b = len(chosen) * buildings_per_city
    city_of_b = np.repeat(np.arange(len(chosen)), buildings_per_city)
    c_lat = np.array([c[1] for c in chosen])[city_of_b]
    c_lon = np.array([c[2] for c in chosen])[city_of_b]
    off = rng.standard_normal((n_b, 2)) * city_spread_km * 1000.0
    b_lat, b_lon = offset_latlon(c_lat, c_lon, off[:, 0], off[:, 1])
    n = n_b * images_per_building
    b_of_row = np.repeat(np.arange(n_b), images_per_building)
    lat = b_lat[b_of_row] + rng.normal(0, 5e-5, n)
    lon = b_lon[b_of_row] + rng.normal(0, 5e-5, n)
    doy = rng.integers(0, 365, n)
    visual = np.where(lat >= 0, doy, (doy + 182) % 365)
    theta = doy_to_angle(visual.astype(np.float64))
    emb = (
        city_signal * city_dirs[city_of_b[b_of_row]]
        + season_signal
        * (np.cos(theta)[:, None] * season_basis[0] + np.sin(theta)[:, None] * season_basis[1])
        + noise * rng.standard_normal((n, dim))
    )
    dates = [dt.date(2023, 1, 1) + dt.timedelta(days=int(d)) for d in doy]
    has_date = rng.random(n) < date_fraction
    b_cell = _cells(b_lat, b_lon, cell_size_m)  # a building's images share its cell and split
    h = (b_cell * np.uint64(0x9E3779B97F4A7C15) >> np.uint64(40)).astype(np.float64) / 2**24
    split = np.where(h < 0.7, 0, np.where(h < 0.85, 1, 2))[b_of_row]
    cell = b_cell[b_of_row]
    out: dict[str, pa.Table] = {}
    for i, name in enumerate(SPLITS):
        idx = np.flatnonzero(split == i)
        out[name] = _table(
            idx, b_of_row, cell, lat, lon, [dates[j] if has_date[j] else None for j in idx], emb
        )
    return out


def _cells(lat: np.ndarray, lon: np.ndarray, size_m: float) -> np.ndarray:
    deg = size_m / 111_195.0
    row = np.floor((lat + 90.0) / deg).astype(np.int64)
    col = np.floor((lon + 180.0) * np.cos(np.radians(lat)) / deg).astype(np.int64)
    return ((row << 32) | col).astype(np.uint64)


def _table(
    idx: np.ndarray,
    b_of_row: np.ndarray,
    cell: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    dates: list[dt.date | None],
    emb: np.ndarray,
) -> pa.Table:
    m = len(idx)
    dim = emb.shape[1]
    schema = split_schema(dim)
    zeros32 = np.zeros(m, np.float32)
    cols = {
        "building_id": b_of_row[idx].astype(np.int64),
        "cell_id": cell[idx].astype(np.int64),
        "image_id": idx.astype(np.int64),
        "target_uid": b_of_row[idx].astype(np.int64),
        "dataset_id": np.zeros(m, np.int32),
        "target_id": b_of_row[idx].astype(np.int64),
        "patch_id": idx.astype(np.int64),
        "panorama_id": idx.astype(np.int64),
        "target_lat": lat[idx],
        "target_lon": lon[idx],
        "target_height": zeros32,
        "normal_x": zeros32,
        "normal_y": zeros32,
        "normal_z": zeros32,
        "camera_lat": lat[idx],
        "camera_lon": lon[idx],
        "camera_height": zeros32,
        "camera_distance": zeros32,
        "heading": zeros32,
        "pitch": zeros32,
        "capture_date": pa.array(dates, pa.date32()),
        "tar_file": pa.array(["toy.tar"] * m),
        "fingerprint": fixed_size_list(np.zeros((m, FINGERPRINT_DIM), np.uint8)),
        "embedding": fixed_size_list(emb[idx].astype(np.float16)),
    }
    arrays = [
        pa.array(cols[f.name], f.type) if isinstance(cols[f.name], np.ndarray) else cols[f.name]
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_toy_split(out_dir: str | Path, **kwargs: object) -> dict[str, int]:
    """Write ``train/val/test.parquet`` and ``_manifest.json`` (stage ``split``) of a toy world.

    Keyword arguments go to :func:`toy_tables`. Returns rows per split.
    """
    out_dir = Path(out_dir)
    tables = toy_tables(**kwargs)  # type: ignore[arg-type]
    dim = tables["train"].schema.field("embedding").type.list_size
    identity = {**TOY_BACKBONE, "dim": dim}
    for name, table in tables.items():
        write_part(table, out_dir / f"{name}.parquet", {"backbone": identity})
    rows = {name: t.num_rows for name, t in tables.items()}
    write_manifest(
        out_dir,
        Manifest(
            stage="split",
            outputs=[f"{s}.parquet" for s in SPLITS],
            rows=rows,
            extra={"backbone": identity, "toy": {k: str(v) for k, v in kwargs.items()}},
        ),
    )
    return rows
