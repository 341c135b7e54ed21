"""One vocabulary for every column, and the Arrow schemas of each stage's output.

Identifiers say what they identify:
- ``image_id``: one crop, ``(dataset_id << 32) | patch_id``.
- ``target_uid``: one facade point, ``(dataset_id << 32) | target_id`` (TargetID is unique only
  within a dataset).
- ``building_id``: one physical building, assigned by the split stage (targets grouped by
  proximity and facade normal; equals ``target_uid`` with ``identity = "target"``).
- ``panorama_id``: the Street View panorama (the ``d`` line's StreetViewID), per dataset.

Distances say their unit or space: ``camera_distance`` is metres, ``visual_distance`` is a unitless
distance in PCA-fingerprint (or embedding) space.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FINGERPRINT_SIDE = 16
FINGERPRINT_DIM = FINGERPRINT_SIDE * FINGERPRINT_SIDE * 3  # 16x16 RGB, HWC order, uint8

ID_BITS = 32
ID_MAX = (1 << 31) - 1


def make_uid(dataset_id: np.ndarray | int, local_id: np.ndarray | int) -> np.ndarray | int:
    """Pack a per-dataset id into one int64 that is unique across datasets."""
    if isinstance(dataset_id, np.ndarray) or isinstance(local_id, np.ndarray):
        return (np.asarray(dataset_id, np.int64) << ID_BITS) | np.asarray(local_id, np.int64)
    return (int(dataset_id) << ID_BITS) | int(local_id)


def split_uid(uid: np.ndarray | int) -> tuple[np.ndarray | int, np.ndarray | int]:
    """Inverse of :func:`make_uid`: ``(dataset_id, local_id)``."""
    mask = (1 << ID_BITS) - 1
    if isinstance(uid, np.ndarray):
        return uid >> ID_BITS, uid & mask
    return int(uid) >> ID_BITS, int(uid) & mask


def uid_str(uid: int) -> str:
    """Human-readable form, e.g. ``0088_000123``."""
    d, local = split_uid(int(uid))
    return f"{d:04d}_{local:06d}"


def required_fields(**types: pa.DataType) -> list[pa.Field]:
    """Non-nullable fields, in the order given (``name=type``)."""
    return [pa.field(name, t, nullable=False) for name, t in types.items()]


def optional_fields(**types: pa.DataType) -> list[pa.Field]:
    """Nullable fields, in the order given (``name=type``)."""
    return [pa.field(name, t, nullable=True) for name, t in types.items()]


# Fields of the `d` line, kept by ingest (identity + geometry + camera).
IDENTITY_FIELDS: list[pa.Field] = [
    pa.field("image_id", pa.int64(), nullable=False),
    pa.field("target_uid", pa.int64(), nullable=True),
    pa.field("dataset_id", pa.int32(), nullable=False),
    pa.field("target_id", pa.int64(), nullable=True),
    pa.field("patch_id", pa.int64(), nullable=False),
    pa.field("panorama_id", pa.int64(), nullable=True),
]
GEOMETRY_FIELDS: list[pa.Field] = optional_fields(
    target_lat=pa.float64(),
    target_lon=pa.float64(),
    target_height=pa.float32(),
    normal_x=pa.float32(),
    normal_y=pa.float32(),
    normal_z=pa.float32(),
    camera_lat=pa.float64(),
    camera_lon=pa.float64(),
    camera_height=pa.float32(),
    camera_distance=pa.float32(),  # metres
    heading=pa.float32(),  # degrees, 0 = north
    pitch=pa.float32(),  # degrees, 0 = level
    capture_date=pa.date32(),  # only where the source has a date
)
SOURCE_FIELDS: list[pa.Field] = required_fields(
    tar_file=pa.string(),
    member_name=pa.string(),
    tar_offset=pa.int64(),  # byte offset of the JPEG data in the tar
    tar_size=pa.int64(),  # JPEG size in bytes
    image_width=pa.int32(),
    image_height=pa.int32(),
)
FINGERPRINT_FIELD = pa.field("fingerprint", pa.list_(pa.uint8(), FINGERPRINT_DIM), nullable=False)
# Where the bytes live and what other sources (image folders, WebDataset shards, Mapillary
# downloads) say about an image. A 3D Street View row has source_kind "tar" and nulls elsewhere;
# a folder row has source_kind "file": ``tar_file`` is then the folder (relative to the ingest
# output folder), ``member_name`` the file's path inside it and ``tar_offset`` 0.
SOURCE_META_FIELDS: list[pa.Field] = [
    pa.field("source_kind", pa.string(), nullable=True),  # "tar" | "file"
    pa.field("image_key", pa.string(), nullable=True),  # the source's own name for the image
    pa.field("building_key", pa.string(), nullable=True),  # building id as given (target_uid's)
    pa.field("captured_at", pa.timestamp("ms", tz="UTC"), nullable=True),
    pa.field("sequence", pa.string(), nullable=True),
    pa.field("camera_type", pa.string(), nullable=True),
    pa.field("is_pano", pa.bool_(), nullable=True),
    pa.field("position_source", pa.string(), nullable=True),  # e.g. "computed" | "gps"
    pa.field("heading_source", pa.string(), nullable=True),
]

#: ingest output: ``images/<tar stem>.parquet``. Identity and geometry columns are null where a
#: source does not know them (a folder of photos has no facade point or normal); never invented.
IMAGES_SCHEMA = pa.schema(
    [*IDENTITY_FIELDS, *GEOMETRY_FIELDS, *SOURCE_FIELDS, FINGERPRINT_FIELD, *SOURCE_META_FIELDS]
)

#: columns the backbone stage carries forward from ingest (everything but where the bytes live)
CARRIED_FIELDS: list[pa.Field] = [
    *IDENTITY_FIELDS,
    *GEOMETRY_FIELDS,
    pa.field("tar_file", pa.string(), nullable=False),
    FINGERPRINT_FIELD,
]


def embedding_field(
    dim: int, dtype: pa.DataType = pa.float16(), name: str = "embedding"
) -> pa.Field:
    return pa.field(name, pa.list_(dtype, dim), nullable=False)


def backbone_schema(dim: int, dtype: pa.DataType = pa.float16()) -> pa.Schema:
    """backbone output: ``backbone/<tar stem>.parquet``"""
    return pa.schema([*CARRIED_FIELDS, embedding_field(dim, dtype)])


SPLIT_EXTRA_FIELDS: list[pa.Field] = [
    pa.field("building_id", pa.int64(), nullable=False),
    pa.field("cell_id", pa.int64(), nullable=False),
]


def split_schema(dim: int, dtype: pa.DataType = pa.float16()) -> pa.Schema:
    """split output: ``split/{train,val,test}.parquet``"""
    return pa.schema([*SPLIT_EXTRA_FIELDS, *CARRIED_FIELDS, embedding_field(dim, dtype)])


SPLITS = ("train", "val", "test")


def neighbors_schema(k: int) -> pa.Schema:
    """neighbors output: ``neighbors/<split>.parquet``, row i = row i of the split file.

    ``neighbor_rows`` are row indices into the same split (-1 = padding when fewer than k exist).
    """
    return pa.schema(
        [
            pa.field("neighbor_rows", pa.list_(pa.int32(), k), nullable=False),
            pa.field("visual_distance", pa.list_(pa.float16(), k), nullable=False),
            pa.field("band", pa.list_(pa.int8(), k), nullable=False),
        ]
    )


# ---- new data: embed / aggregate (keyed by the user's OSMID, of whatever scalar type it has) ----

OSMID = "OSMID"
ROW_INDEX_FIELD = pa.field("row_index", pa.int64(), nullable=False)  # row of the input parquet


def embed_schema(osmid_type: pa.DataType, dim: int) -> pa.Schema:
    """embed output: ``<out>/parts/rows-<start>-<stop>.parquet``, one row per embedded image."""
    return pa.schema(
        [pa.field(OSMID, osmid_type), ROW_INDEX_FIELD, embedding_field(dim, pa.float32())]
    )


def embed_failures_schema(osmid_type: pa.DataType) -> pa.Schema:
    """embed failures: ``<out>/failures/rows-<start>-<stop>.parquet``, one row per bad image."""
    return pa.schema(
        [
            pa.field(OSMID, osmid_type),
            ROW_INDEX_FIELD,
            pa.field("reason", pa.string(), nullable=False),
        ]
    )


def buildings_schema(osmid_type: pa.DataType, dim: int, with_location: bool) -> pa.Schema:
    """aggregate output: ``buildings.parquet``, one row per OSMID (mean embedding, re-normalised).

    ``lat``/``lon`` (degrees, WGS84) are present when locations are known, null for buildings
    without one.
    """
    fields = [
        pa.field(OSMID, osmid_type, nullable=False),
        pa.field("image_count", pa.int32(), nullable=False),
        embedding_field(dim, pa.float32()),
    ]
    if with_location:
        fields += [pa.field("lat", pa.float64()), pa.field("lon", pa.float64())]
    return pa.schema(fields)
