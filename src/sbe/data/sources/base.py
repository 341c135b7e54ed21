"""What every input source shares: metadata rows normalised to one record shape, their checks,
image inspection, and the conversion to the images table (``IMAGES_SCHEMA``).

A source reader (image folder, Mapillary download, WebDataset shard) turns its metadata into
:data:`RECORD_SCHEMA` rows: one image file (or tar member) each with whatever metadata exists;
missing values are null, never invented. A bad value drops its row as a counted skip with an
example naming the file, row and column; good rows are never lost.

Skip reasons (:data:`SKIP_REASONS`) and warnings (:data:`WARNING_REASONS`) are listed for the
docs and tests.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from sbe.data.images import decode_opened, fingerprint, open_image
from sbe.data.tarstream import is_safe_member_path
from sbe.storage import SkipLog, fixed_size_list
from sbe.storage.schemas import FINGERPRINT_DIM, FINGERPRINT_SIDE, IMAGES_SCHEMA, make_uid

#: Image files a folder source reads (Pillow decodes each; the model needs RGB only).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: Columns tried, in order, for the building id when ``id_column`` is not given.
ID_CANDIDATES = ("building_id", "OSMID", "osm_id")
HEADING_COLUMNS = ("heading", "compass_angle")
TIME_COLUMNS = ("captured_at",)
#: Members or files above this size are not read (a street photo is well under 20 MB).
MAX_IMAGE_BYTES = 64 << 20

SKIP_REASONS = (
    "unsafe_path",  # a metadata row names a file outside the source folder (absolute or ..)
    "missing_image",  # a metadata row names a file that does not exist
    "missing_file_name",  # a metadata row without a file name
    "duplicate_image",  # the same file named by a second metadata row (first one wins)
    "bad_coordinate",  # lat/lon not a number, out of range, or only one of the two given
    "bad_heading",  # heading not a number or outside [0, 360)
    "bad_metadata_row",  # a JSON line / file that does not parse, or is not an object
    "corrupt_image",  # the file does not decode as an image
)
WARNING_REASONS = (
    "bad_capture_time",  # captured_at not an ISO date or epoch milliseconds: kept as null
    "metadata_encoding_latin1",  # the CSV is not UTF-8; read as Latin-1
    "image_without_metadata",  # an image file no metadata row names (not ingested)
    "no_metadata",  # a WebDataset sample without .json (kept: every metadata field null)
)

#: One image as a source describes it, before its bytes are inspected.
RECORD_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),  # path inside the container
        pa.field("image_key", pa.string()),
        pa.field("building_key", pa.string()),
        pa.field("lat", pa.float64()),  # camera position, degrees WGS84
        pa.field("lon", pa.float64()),
        pa.field("heading", pa.float32()),  # degrees clockwise from north, [0, 360)
        pa.field("captured_at", pa.timestamp("ms", tz="UTC")),
        pa.field("sequence", pa.string()),
        pa.field("camera_type", pa.string()),
        pa.field("is_pano", pa.bool_()),
        pa.field("position_source", pa.string()),
        pa.field("heading_source", pa.string()),
    ]
)
RECORD_COLUMNS = tuple(RECORD_SCHEMA.names)


class RowSkip(Exception):
    """A metadata row is dropped: ``reason`` (one of :data:`SKIP_REASONS`) and a detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_float(value: Any, column: str, reason: str) -> float | None:
    """A number from a metadata cell (str or number); blank -> ``None``.

    Raises:
        RowSkip: not a finite number.
    """
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise RowSkip(reason, f"{column} {value!r} is not a number")
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise RowSkip(reason, f"{column} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise RowSkip(reason, f"{column} {value!r} is not a finite number")
    return x


def parse_position(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    """``(lat, lon)`` in degrees, both ``None`` when both are blank.

    Raises:
        RowSkip: ``bad_coordinate`` (not a number, out of range, or only one given).
    """
    la = parse_float(lat, "lat", "bad_coordinate")
    lo = parse_float(lon, "lon", "bad_coordinate")
    if (la is None) != (lo is None):
        raise RowSkip("bad_coordinate", f"lat {lat!r} / lon {lon!r}: only one of the two given")
    if la is not None and lo is not None and (abs(la) > 90 or abs(lo) > 180):
        raise RowSkip("bad_coordinate", f"lat {la} / lon {lo} out of range")
    return la, lo


def parse_heading(value: Any, column: str = "heading") -> float | None:
    """Degrees clockwise from north in ``[0, 360)``; blank -> ``None``.

    Raises:
        RowSkip: ``bad_heading``.
    """
    h = parse_float(value, column, "bad_heading")
    if h is not None and not 0 <= h < 360:
        raise RowSkip("bad_heading", f"{column} {h} outside [0, 360)")
    return h


def parse_time(value: Any) -> int | None:
    """Milliseconds since the Unix epoch (UTC) from epoch milliseconds or an ISO date/time.

    A time without a zone is taken as UTC. Blank -> ``None``.

    Raises:
        ValueError: neither form.
    """
    if _blank(value) or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def id_string(value: Any) -> str | None:
    """A building id as text (``12.0`` from a float column -> ``"12"``); blank -> ``None``."""
    if _blank(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def building_uid(key: str) -> int:
    """The int64 ``target_uid`` of a building id given as text.

    A plain non-negative integer below 2**62 is kept as is (an OSM id stays readable); any other
    text maps to a 62-bit BLAKE2b hash with bit 62 set, so the two ranges never meet and the same
    id gets the same number in every shard and folder. The text itself is kept in
    ``building_key``.
    """
    if key.isascii() and key.isdigit() and int(key) < (1 << 62):
        return int(key)
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return (h & ((1 << 62) - 1)) | (1 << 62)


@dataclass(frozen=True)
class Columns:
    """Which metadata columns hold what (resolved once per metadata file)."""

    id: str | None = None
    heading: str | None = None
    time: str | None = None

    @classmethod
    def resolve(cls, names: Sequence[str], id_column: str | None) -> Columns:
        """Pick the columns of a metadata table.

        Raises:
            RowSkip: never; an unknown ``id_column`` is the caller's one clear error.
        """
        ids = (id_column,) if id_column else ID_CANDIDATES
        return cls(
            id=next((c for c in ids if c in names), None),
            heading=next((c for c in HEADING_COLUMNS if c in names), None),
            time=next((c for c in TIME_COLUMNS if c in names), None),
        )


def record_from_row(
    row: dict[str, Any], file: str, cols: Columns, warns: SkipLog, where: str
) -> dict[str, Any]:
    """A :data:`RECORD_SCHEMA` row from one metadata row of an image folder / WebDataset.

    Raises:
        RowSkip: a bad coordinate or heading.
    """
    lat, lon = parse_position(row.get("lat"), row.get("lon"))
    heading = (
        parse_heading(row.get(cols.heading), cols.heading or "heading") if cols.heading else None
    )
    captured = None
    if cols.time is not None:
        try:
            captured = parse_time(row.get(cols.time))
        except (ValueError, OverflowError):
            warns.add("bad_capture_time", f"{where}: {cols.time} {row.get(cols.time)!r}")
    return {
        "file": file,
        "image_key": os.path.splitext(file)[0],
        "building_key": id_string(row.get(cols.id)) if cols.id else None,
        "lat": lat,
        "lon": lon,
        "heading": heading,
        "captured_at": captured,
        "sequence": id_string(row.get("sequence")),
        "camera_type": None,
        "is_pano": None,
        "position_source": None if lat is None else "metadata",
        "heading_source": None if heading is None else cols.heading,
    }


def records_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with :data:`RECORD_COLUMNS`) -> a :data:`RECORD_SCHEMA` table."""
    rows = list(rows)
    return pa.table(
        {
            name: pa.array([r[name] for r in rows], type=RECORD_SCHEMA.field(name).type)
            for name in RECORD_COLUMNS
        },
        schema=RECORD_SCHEMA,
    )


def safe_relative(path: str) -> str | None:
    """A file name from metadata as a clean relative POSIX path, or ``None`` if it escapes."""
    p = path.replace("\\", "/").strip()
    if not is_safe_member_path(p):
        return None
    return os.path.normpath(p).replace(os.sep, "/")


# ---- image inspection ----------------------------------------------------------------------


def inspect_image(data: bytes) -> tuple[int, int, bytes]:
    """Validate an image with one reduced-scale decode and take its fingerprint.

    Returns:
        ``(width, height, fingerprint)``: original size in pixels, 16x16 RGB as 768 bytes.

    Raises:
        Exception: anything Pillow raises on bytes that are not a decodable image.
    """
    header = open_image(data)
    width, height = header.size
    img = decode_opened(header, min_side=FINGERPRINT_SIDE)
    return width, height, fingerprint(img).tobytes()


def inspect_or_reason(data: bytes) -> tuple[int, int, bytes] | str:
    """:func:`inspect_image`, or the reason it failed (untrusted bytes: never raises)."""
    if not data:
        return "empty file"
    try:
        return inspect_image(data)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _read_and_inspect(path: str) -> tuple[int, tuple[int, int, bytes] | str]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        return 0, f"cannot read: {e.strerror or e}"
    if len(data) > MAX_IMAGE_BYTES:
        return len(data), f"over the {MAX_IMAGE_BYTES:,}-byte limit"
    return len(data), inspect_or_reason(data)


def inspect_files(
    root: str,
    files: Sequence[str],
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, tuple[int, int, bytes] | str]]:
    """Read and inspect each file (in order), in ``threads`` threads (Pillow releases the GIL).

    Returns:
        Per file ``(bytes read, (width, height, fingerprint) | reason)``.
    """
    paths = [os.path.join(root, f) for f in files]
    out: list[tuple[int, tuple[int, int, bytes] | str]] = []
    step = 64
    if threads <= 1:
        it: Iterable = map(_read_and_inspect, paths)
        pool = None
    else:
        pool = ThreadPoolExecutor(threads, thread_name_prefix="image")
        it = pool.map(_read_and_inspect, paths, chunksize=16)
    try:
        done_bytes = 0
        for i, r in enumerate(it, 1):
            out.append(r)
            done_bytes += r[0]
            if progress is not None and i % step == 0:
                progress(done_bytes, step)
                done_bytes = 0
        if progress is not None and len(out) % step:
            progress(done_bytes, len(out) % step)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return out


# ---- records -> images table -----------------------------------------------------------------


@dataclass
class Located:
    """Inspected images of one part: records plus where their bytes are and what decoding gave."""

    records: pa.Table  # RECORD_SCHEMA
    patch_id: np.ndarray  # int64 (N,): position in the source, stable across runs
    offset: np.ndarray  # int64 (N,): byte offset in the container (0 for a plain file)
    size: np.ndarray  # int64 (N,): bytes
    inspected: list[tuple[int, int, bytes]] = field(default_factory=list)


def images_table(loc: Located, *, container: str, source_kind: str, dataset_id: int) -> pa.Table:
    """The ``IMAGES_SCHEMA`` rows of inspected images, sorted by ``image_id``.

    Args:
        loc: the records (every one decoded successfully) and their locations.
        container: the ``tar_file`` value (a tar, or the folder the files are in).
        source_kind: ``"tar"`` or ``"file"``.
        dataset_id: the source's dataset number (high bits of ``image_id``).
    """
    rec = loc.records
    n = rec.num_rows
    order = np.argsort(loc.patch_id, kind="stable")
    rec = rec.take(pa.array(order, pa.int64()))
    patch = loc.patch_id[order]
    keys = rec.column("building_key").to_pylist()
    uids = pa.array([None if k is None else building_uid(k) for k in keys], pa.int64())
    ms = rec.column("captured_at").cast(pa.int64()).to_pylist()
    dates = [_utc_date(t) for t in ms]
    fps = np.frombuffer(b"".join(loc.inspected[i][2] for i in order), dtype=np.uint8)
    data: dict[str, Any] = {
        "image_id": make_uid(dataset_id, patch),
        "target_uid": uids,
        "dataset_id": np.full(n, dataset_id, np.int32),
        "target_id": uids,
        "patch_id": patch,
        "camera_lat": rec.column("lat"),
        "camera_lon": rec.column("lon"),
        "heading": rec.column("heading"),
        "capture_date": pa.array(dates, pa.date32()),
        "tar_file": [container] * n,
        "member_name": rec.column("file"),
        "tar_offset": loc.offset[order],
        "tar_size": loc.size[order],
        "image_width": np.fromiter((loc.inspected[i][0] for i in order), np.int32, count=n),
        "image_height": np.fromiter((loc.inspected[i][1] for i in order), np.int32, count=n),
        "fingerprint": fixed_size_list(fps.reshape(n, FINGERPRINT_DIM)),
        "source_kind": [source_kind] * n,
    }
    for name in RECORD_COLUMNS:
        if name in IMAGES_SCHEMA.names and name not in data:
            data[name] = rec.column(name)
    arrays = []
    for f in IMAGES_SCHEMA:
        v = data.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
        elif isinstance(v, pa.ChunkedArray | pa.Array):
            arrays.append(v.cast(f.type))
        else:
            arrays.append(pa.array(v, type=f.type))
    return pa.Table.from_arrays(arrays, schema=IMAGES_SCHEMA)


def _utc_date(ms: int | None) -> date | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


def empty_located() -> Located:
    return Located(
        RECORD_SCHEMA.empty_table(),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
