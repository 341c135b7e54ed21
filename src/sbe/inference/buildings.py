"""Per-building vectors from per-image embeddings, building locations, and GeoParquet output.

Everything is vectorised: Arrow hashes the ids once (``unique`` + ``index_in``), numpy sums the
embeddings of each part with one sort and ``add.reduceat``; only one part's embeddings are in
memory at a time, plus the (buildings x D) float32 sums.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sbe.sphere import latlon_to_unit, unit_to_latlon
from sbe.storage import fixed_size_list, to_numpy_matrix
from sbe.storage.schemas import OSMID

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "lng", "longitude")
GEOPARQUET_VERSION = "1.1.0"


@dataclass
class BuildingVectors:
    """Mean embedding per id.

    Attributes:
        keys: sorted unique ids (the input's Arrow type, dictionaries decoded).
        counts: int64 (K,) images per id.
        vectors: float32 (K, D), unit rows (the mean re-normalised).
        null_ids: image rows skipped because their id was null.
        nonfinite_ids: image rows skipped because their (floating-point) id was NaN or infinite.
    """

    keys: pa.Array
    counts: np.ndarray
    vectors: np.ndarray
    null_ids: int
    nonfinite_ids: int = 0


def id_value_type(id_type: pa.DataType) -> pa.DataType:
    """The type ids are kept as: a dictionary-encoded id column is stored as its values."""
    return id_type.value_type if pa.types.is_dictionary(id_type) else id_type


def clean_ids(
    ids: pa.Array | pa.ChunkedArray, id_type: pa.DataType
) -> tuple[pa.Array | pa.ChunkedArray, int]:
    """Ids as ``id_value_type(id_type)`` with NaN and infinite ids made null.

    A float id that is NaN or infinite names no building (all NaN rows would otherwise merge into
    one "building"), so it is treated like a null id.

    Returns:
        ``(ids, nonfinite)``: the cleaned column and how many ids were NaN or infinite.
    """
    value_type = id_value_type(id_type)
    if pa.types.is_dictionary(ids.type):
        ids = pc.cast(ids, ids.type.value_type)
    if ids.type != value_type:
        ids = pc.cast(ids, value_type)
    if not pa.types.is_floating(value_type):
        return ids, 0
    finite = pc.is_finite(ids)
    nonfinite = int(pc.sum(pc.invert(finite)).as_py() or 0)
    if nonfinite:
        ids = pc.if_else(finite, ids, pa.scalar(None, value_type))
    return ids, nonfinite


def _sorted_unique(values: pa.ChunkedArray) -> pa.Array:
    keys = pc.unique(values).drop_null()
    return keys.take(pc.sort_indices(keys))


def mean_embeddings(parts: Sequence[Path], dim: int, id_type: pa.DataType) -> BuildingVectors:
    """Average the ``embedding`` column of ``parts`` per ``OSMID`` and re-normalise.

    Args:
        parts: parquet files with ``OSMID`` and ``embedding`` (fixed-size float32, width ``dim``).
        dim: embedding size.
        id_type: Arrow type of ``OSMID`` (a dictionary type means its value type).

    Returns:
        :class:`BuildingVectors`; rows with a null, NaN or infinite id are left out and counted.
    """
    value_type = id_value_type(id_type)
    ids: list[pa.ChunkedArray] = []
    null_ids = nonfinite_ids = 0
    for p in parts:
        raw = pq.read_table(p, columns=[OSMID]).column(0)
        null_ids += raw.null_count
        col, bad = clean_ids(raw, value_type)
        nonfinite_ids += bad
        ids.append(col)
    all_ids = pa.chunked_array([c for col in ids for c in col.chunks], type=value_type)
    keys = _sorted_unique(all_ids)
    # one hash table for all rows; per-part slices of it below
    index = pc.index_in(all_ids, value_set=keys).to_numpy(zero_copy_only=False)
    sums = np.zeros((len(keys), dim), dtype=np.float32)
    counts = np.zeros(len(keys), dtype=np.int64)
    offset = 0
    for p, col in zip(parts, ids, strict=True):
        n = len(col)
        idx = index[offset : offset + n]
        offset += n
        if n == 0:
            continue
        emb = to_numpy_matrix(pq.read_table(p, columns=["embedding"]).column(0), np.float32)
        ok = ~np.isnan(idx)
        idx_i = idx[ok].astype(np.int64)
        emb = emb[ok]
        order = np.argsort(idx_i, kind="stable")
        sidx = idx_i[order]
        starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]]) if len(sidx) else sidx
        if len(sidx):
            sums[sidx[starts]] += np.add.reduceat(emb[order], starts, axis=0)
            counts += np.bincount(idx_i, minlength=len(keys))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    vectors = sums / np.maximum(norms, 1e-12)
    return BuildingVectors(keys, counts, vectors.astype(np.float32), null_ids, nonfinite_ids)


def location_columns(schema: pa.Schema) -> tuple[str, str] | None:
    """Names of the latitude and longitude columns of ``schema`` (``lat``/``lon`` or long forms)."""
    names = {n.lower(): n for n in schema.names}
    lat = next((names[n] for n in LAT_NAMES if n in names), None)
    lon = next((names[n] for n in LON_NAMES if n in names), None)
    return (lat, lon) if lat and lon and OSMID in schema.names else None


def mean_locations(
    batches: Iterable[pa.RecordBatch], lat_col: str, lon_col: str, id_type: pa.DataType
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One location per id: the spherical mean of its rows' points.

    Rows with a null, NaN or infinite id, latitude or longitude are ignored. Partial sums of unit
    vectors are aggregated per batch with Arrow ``group_by``, then merged.

    Returns:
        ``(ids, lat, lon)``: ids of ``id_value_type(id_type)``, degrees as float64 arrays.

    Raises:
        ValueError: the ids do not convert to ``id_type`` or the coordinates are not numbers.
    """
    id_type = id_value_type(id_type)
    partials: list[pa.Table] = []
    for b in batches:
        t = pa.Table.from_batches([b])
        try:
            ids, _ = clean_ids(t[OSMID], id_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(
                f"location OSMID ({t[OSMID].type}) does not cast to {id_type}: {e}"
            ) from None
        try:
            lat = pc.cast(t[lat_col], pa.float64())
            lon = pc.cast(t[lon_col], pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(
                f"{lat_col}/{lon_col} must be numbers (got {t[lat_col].type}, "
                f"{t[lon_col].type}): {e}"
            ) from None
        ok = pc.and_(pc.and_(pc.is_finite(lat), pc.is_finite(lon)), pc.is_valid(ids))
        t = pa.table({OSMID: ids, "lat": lat, "lon": lon}).filter(pc.fill_null(ok, False))
        if t.num_rows == 0:
            continue
        xyz = latlon_to_unit(t["lat"].to_numpy(), t["lon"].to_numpy())
        part = pa.table({OSMID: t[OSMID], "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
        partials.append(part.group_by(OSMID).aggregate([("x", "sum"), ("y", "sum"), ("z", "sum")]))
    if not partials:
        return pa.array([], id_type), np.zeros(0), np.zeros(0)
    merged = pa.concat_tables(
        [
            p.select([OSMID, "x_sum", "y_sum", "z_sum"]).rename_columns([OSMID, "x", "y", "z"])
            for p in partials
        ]
    ).group_by(OSMID)
    agg = merged.aggregate([("x", "sum"), ("y", "sum"), ("z", "sum")])
    xyz = np.stack([agg[f"{c}_sum"].to_numpy() for c in "xyz"], axis=1)
    lat, lon = unit_to_latlon(xyz)
    return agg[OSMID].combine_chunks(), lat, lon


def buildings_table(
    vectors: BuildingVectors,
    schema: pa.Schema,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    located: np.ndarray | None = None,
) -> pa.Table:
    """The ``buildings.parquet`` table (optional ``lat``/``lon``, null where ``~located``)."""
    cols: dict[str, pa.Array] = {
        OSMID: vectors.keys,
        "image_count": pa.array(vectors.counts.astype(np.int32)),
        "embedding": fixed_size_list(vectors.vectors),
    }
    if lat is not None and lon is not None and located is not None:
        cols["lat"] = pa.array(lat, pa.float64(), mask=~located)
        cols["lon"] = pa.array(lon, pa.float64(), mask=~located)
    return pa.table(cols, schema=schema)


def geoparquet_table(table: pa.Table, lat: np.ndarray, lon: np.ndarray) -> pa.Table:
    """Add a WKB point ``geometry`` column and GeoParquet metadata (CRS EPSG:4326).

    Coordinates are stored (x, y) = (longitude, latitude), as GeoParquet requires.
    """
    import pyproj
    import shapely

    wkb = shapely.to_wkb(shapely.points(lon, lat), output_dimension=2)
    out = table.append_column("geometry", pa.array(wkb, pa.binary()))
    bbox = (
        [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())] if len(lat) else []
    )
    geo = {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Point"],
                "crs": pyproj.CRS.from_epsg(4326).to_json_dict(),
                **({"bbox": bbox} if bbox else {}),
            }
        },
    }
    meta = dict(out.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    return out.replace_schema_metadata(meta)
