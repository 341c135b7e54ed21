"""One raw 3D Street View tar -> an Arrow table of image rows (``IMAGES_SCHEMA``), in one pass.

The tar is read as a stream (:class:`~sbe.data.tarstream.TarStream`); nothing is extracted.
``<stem>.jpg``/``.jpeg`` and ``<stem>.txt`` are paired by their full path without extension, in
any folder layout and any member order. While a half waits for its partner only small things are
held: the parsed metadata, or the JPEG's offset, size and decode result, never its bytes.

Each JPEG is validated by one reduced-scale decode (:func:`~sbe.data.images.decode_rgb` in draft
mode, at most 1/8 scale for a 640 px crop), and the 16x16 fingerprint comes from that same decode.
Decodes run in a thread pool (Pillow releases the GIL) so they overlap with reading the stream.

A record is dropped for exactly one reason, checked in this order: unsafe member path or
unsupported member type; duplicate member name; missing half (``missing_image`` /
``missing_metadata``); ``malformed_d_line``; ``corrupt_jpeg``; ``duplicate_id`` (the first
image in archive order keeps the id). A damaged archive keeps every row completed before the
damage and is reported as ``truncated_archive``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from sbe.data.images import ImageDecodeError, decode_opened, fingerprint, open_image
from sbe.data.streetview import (
    NORMAL_TOLERANCE,
    DLine,
    ImageMetadata,
    MetadataError,
    parse_metadata,
)
from sbe.data.tarstream import NotATarError, TarDamageError, TarStream
from sbe.settings import Record
from sbe.storage import SkipLog, fixed_size_list
from sbe.storage.schemas import FINGERPRINT_DIM, FINGERPRINT_SIDE, IMAGES_SCHEMA, make_uid

IMAGE_EXTENSIONS = (".jpg", ".jpeg")
METADATA_EXTENSION = ".txt"
#: Members above these sizes are not read (a 640x640 crop is ~100 KB, its .txt < 1 KB).
MAX_IMAGE_BYTES = 64 << 20
MAX_METADATA_BYTES = 1 << 20

#: Every reason a record (or member, or archive) can be skipped for, for docs and tests.
SKIP_REASONS = (
    "unsafe_member_path",  # per member: absolute path or `..` component
    "unsupported_member",  # per member: link, device, FIFO or sparse file
    "duplicate_member",  # per member: the same image/metadata path seen again (first one wins)
    "missing_image",  # per record: a .txt without its .jpg
    "missing_metadata",  # per record: a .jpg without its .txt
    "malformed_d_line",  # per record: see streetview.MetadataError kinds
    "corrupt_jpeg",  # per record: the image does not decode, or is not a JPEG
    "duplicate_id",  # per record: an image_id seen earlier in the same tar
    "truncated_archive",  # per archive: it ends (truncated or corrupt) before its end marker
)
#: Counted and reported, but the row (if any) is kept.
WARNING_REASONS = (
    "dataset_id_differs_from_tar_name",  # the `d` line's DatasetID wins
    "bad_capture_date",  # a `t` line that is not a valid YYYY-MM-DD: capture_date is null
    "ignored_member",  # a regular file that is neither an image nor a .txt
)


@dataclass(frozen=True)
class ReadSettings:
    """What changes the rows a tar yields (part of the config hash), plus decode parallelism.

    Attributes:
        normal_tolerance: largest accepted ``| |normal| - 1 |`` in a ``d`` line.
        decode_threads: JPEG decode threads; 1 decodes inline in the reading thread.
        max_pending_decodes: JPEGs read ahead of the decoders (bounds memory to this many
            encoded images).
    """

    normal_tolerance: float = NORMAL_TOLERANCE
    decode_threads: int = 1
    max_pending_decodes: int = 64

    def content(self) -> dict[str, Any]:
        """The settings that change the output rows (decode threads do not)."""
        return {"normal_tolerance": self.normal_tolerance}


@dataclass
class TarReport(Record):
    """What reading one tar gave: counts by reason, examples, damage. JSON-serialisable."""

    tar: str
    rows: int = 0
    image_members: int = 0
    metadata_members: int = 0
    bytes_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    warning_examples: dict[str, list[str]] = field(default_factory=dict)
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    damage: str | None = None
    error: str | None = None
    seconds: float = 0.0


def inspect_jpeg(data: bytes) -> tuple[int, int, bytes]:
    """Validate a JPEG with one reduced-scale decode and take its fingerprint.

    Args:
        data: encoded image bytes.

    Returns:
        ``(width, height, fingerprint)``: the original size in pixels and the 16x16 RGB
        thumbnail as 768 bytes (HWC, uint8).

    Raises:
        ImageDecodeError: not a JPEG, or it does not decode.
    """
    header = open_image(data)  # parses headers only; no pixel data yet
    if header.format != "JPEG":
        raise ImageDecodeError(f"not a JPEG (format {header.format})")
    width, height = header.size
    img = decode_opened(header, min_side=FINGERPRINT_SIDE)
    return width, height, fingerprint(img).tobytes()


# ``(width, height, fingerprint)`` of a decodable JPEG, or why it was skipped.
_Inspected = tuple[int, int, bytes] | str


def _inspect_or_reason(data: bytes) -> _Inspected:
    try:
        return inspect_jpeg(data)
    except ImageDecodeError as e:
        return str(e)
    except Exception as e:  # untrusted bytes: no decoder surprise may end the whole tar
        return f"decoder failed: {type(e).__name__}: {e}"


@dataclass(slots=True)
class _Image:
    member: str
    offset: int
    size: int
    seq: int
    result: Future[_Inspected] | _Inspected | None = None

    def outcome(self) -> _Inspected:
        if isinstance(self.result, Future):
            self.result = self.result.result()
        assert self.result is not None
        return self.result


@dataclass(slots=True)
class _Meta:
    member: str
    meta: ImageMetadata | None
    error: MetadataError | None


def _role(path: str) -> tuple[str, str] | None:
    """``(stem path, "image" | "meta")`` for a record member, else ``None``."""
    low = path.lower()
    for ext in IMAGE_EXTENSIONS:
        if low.endswith(ext):
            return path[: -len(ext)], "image"
    if low.endswith(METADATA_EXTENSION):
        return path[: -len(METADATA_EXTENSION)], "meta"
    return None


def tar_dataset_id(tar_name: str) -> int | None:
    """The DatasetID a tar's name implies (``0088.tar`` -> 88), or ``None`` if not numeric."""
    stem = tar_name.split(".")[0]
    return int(stem) if stem.isdigit() else None


class _Reader:
    """State of one pass over one tar (pending halves, pairs, skips)."""

    def __init__(self, stream: TarStream, settings: ReadSettings, report: TarReport) -> None:
        self.stream = stream
        self.settings = settings
        self.report = report
        self.tar_name = stream.path.name
        self.skips = SkipLog()
        self.warns = SkipLog()
        self.pending_images: dict[str, _Image] = {}
        self.pending_meta: dict[str, _Meta] = {}
        self.seen: set[tuple[str, str]] = set()
        self.pairs: list[tuple[_Image, _Meta]] = []
        self.inflight: deque[Future[_Inspected]] = deque()
        self.pool: ThreadPoolExecutor | None = None

    def where(self, member: str) -> str:
        return f"{self.tar_name}:{member}"

    def decode(self, data: bytes) -> Future[_Inspected] | _Inspected:
        if self.pool is None:
            return _inspect_or_reason(data)
        while len(self.inflight) >= self.settings.max_pending_decodes:
            self.inflight.popleft().result()
        fut = self.pool.submit(_inspect_or_reason, data)
        self.inflight.append(fut)
        return fut

    def add(self, stem: str, half: _Image | _Meta) -> None:
        if isinstance(half, _Image):
            other = self.pending_meta.pop(stem, None)
            if other is None:
                self.pending_images[stem] = half
            else:
                self.pairs.append((half, other))
        else:
            img = self.pending_images.pop(stem, None)
            if img is None:
                self.pending_meta[stem] = half
            else:
                self.pairs.append((img, half))

    def read(self, progress: Callable[[int, int], None] | None) -> None:
        last_bytes = 0
        n = 0
        for m in self.stream:
            if m.problem is not None:
                self.skips.add(m.problem, self.where(m.name))
                continue
            role = _role(m.path)
            if role is None:
                self.warns.add("ignored_member", self.where(m.name))
                continue
            stem, kind = role
            if (stem, kind) in self.seen:
                self.skips.add("duplicate_member", self.where(m.name))
                continue
            limit = MAX_IMAGE_BYTES if kind == "image" else MAX_METADATA_BYTES
            data = b""
            if m.size <= limit:  # a larger member is never read into memory
                try:
                    data = m.read()
                except TarDamageError:
                    break
            self.seen.add((stem, kind))
            too_large = f"member is {m.size:,} bytes, over the {limit:,}-byte limit"
            if kind == "image":
                self.report.image_members += 1
                outcome = self.decode(data) if m.size <= limit else too_large
                self.add(stem, _Image(m.name, m.offset, m.size, n, outcome))
            else:
                self.report.metadata_members += 1
                try:
                    if m.size > limit:
                        raise MetadataError("too_large", too_large)
                    meta = parse_metadata(data, normal_tolerance=self.settings.normal_tolerance)
                    self.add(stem, _Meta(m.name, meta, None))
                except MetadataError as e:
                    self.add(stem, _Meta(m.name, None, e))
            n += 1
            if progress is not None and n % 64 == 0:
                progress(self.stream.bytes_read - last_bytes, 64)
                last_bytes = self.stream.bytes_read
        if progress is not None:
            progress(self.stream.bytes_read - last_bytes, n % 64)
        self.report.bytes_read = self.stream.bytes_read
        if self.stream.damage is not None:
            self.report.damage = self.stream.damage
            self.skips.add("truncated_archive", f"{self.tar_name}: {self.stream.damage}")

    def rows(self) -> list[tuple[DLine, ImageMetadata, _Image, tuple[int, int, bytes]]]:
        suffix = " (archive damaged)" if self.report.damage else ""
        for img in self.pending_images.values():
            self.skips.add("missing_metadata", self.where(img.member) + suffix)
        for meta in self.pending_meta.values():
            self.skips.add("missing_image", self.where(meta.member) + suffix)
        expected_ds = tar_dataset_id(self.tar_name)
        kept = []
        ids: set[int] = set()
        for img, meta in sorted(self.pairs, key=lambda p: p[0].seq):
            if meta.error is not None:
                kind = meta.error.kind
                self.report.malformed_kinds[kind] = self.report.malformed_kinds.get(kind, 0) + 1
                self.skips.add("malformed_d_line", f"{self.where(meta.member)}: {meta.error}")
                continue
            outcome = img.outcome()
            if isinstance(outcome, str):
                self.skips.add("corrupt_jpeg", f"{self.where(img.member)}: {outcome}")
                continue
            assert meta.meta is not None
            d = meta.meta.d
            if d.image_id in ids:
                self.skips.add(
                    "duplicate_id",
                    f"{self.where(img.member)}: dataset {d.dataset_id} patch {d.patch_id}",
                )
                continue
            ids.add(d.image_id)
            if expected_ds is not None and d.dataset_id != expected_ds:
                self.warns.add(
                    "dataset_id_differs_from_tar_name",
                    f"{self.where(meta.member)}: d line says {d.dataset_id}",
                )
            if meta.meta.date_problem is not None:
                self.warns.add(
                    "bad_capture_date", f"{self.where(meta.member)}: {meta.meta.date_problem}"
                )
            kept.append((d, meta.meta, img, outcome))
        return kept


def read_raw_tar(
    path: str | os.PathLike[str],
    settings: ReadSettings = ReadSettings(),
    *,
    tar_file: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pa.Table, TarReport]:
    """Read one raw tar into image rows, in one streaming pass.

    Args:
        path: the tar (uncompressed).
        settings: see :class:`ReadSettings`.
        tar_file: value of the ``tar_file`` column (default: ``path`` as given).
        progress: called now and then with ``(bytes read since last call, members since last
            call)``.

    Returns:
        ``(table, report)``: the rows with ``IMAGES_SCHEMA``, sorted by ``image_id``; and
        the per-tar report (``report.error`` is set, and the table empty, when ``path`` is not
        a tar).
    """
    t0 = time.perf_counter()
    stream = TarStream(path)
    report = TarReport(tar=str(path))
    reader = _Reader(stream, settings, report)
    if settings.decode_threads > 1:
        reader.pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="jpeg")
    try:
        reader.read(progress)
        rows = reader.rows()
    except NotATarError as e:
        report.error = str(e)
        rows = []
    finally:
        if reader.pool is not None:
            reader.pool.shutdown(wait=True, cancel_futures=True)
    table = _to_table(rows, tar_file if tar_file is not None else str(path))
    report.rows = table.num_rows
    report.skipped = dict(sorted(reader.skips.counts.items()))
    report.skip_examples = dict(sorted(reader.skips.examples.items()))
    report.warnings = dict(sorted(reader.warns.counts.items()))
    report.warning_examples = dict(sorted(reader.warns.examples.items()))
    report.seconds = round(time.perf_counter() - t0, 3)
    return table, report


_D_COLUMNS: tuple[tuple[str, type], ...] = (
    ("dataset_id", np.int32),
    ("target_id", np.int64),
    ("patch_id", np.int64),
    ("panorama_id", np.int64),
    ("target_lat", np.float64),
    ("target_lon", np.float64),
    ("target_height", np.float32),
    ("normal_x", np.float32),
    ("normal_y", np.float32),
    ("normal_z", np.float32),
    ("camera_lat", np.float64),
    ("camera_lon", np.float64),
    ("camera_height", np.float32),
    ("camera_distance", np.float32),
    ("heading", np.float32),
    ("pitch", np.float32),
)


def _to_table(
    rows: list[tuple[DLine, ImageMetadata, _Image, tuple[int, int, bytes]]], tar_file: str
) -> pa.Table:
    n = len(rows)
    cols: dict[str, Any] = {
        name: np.fromiter((getattr(r[0], name) for r in rows), dtype=dtype, count=n)
        for name, dtype in _D_COLUMNS
    }
    cols["image_id"] = make_uid(cols["dataset_id"], cols["patch_id"])
    cols["target_uid"] = make_uid(cols["dataset_id"], cols["target_id"])
    order = np.argsort(cols["image_id"], kind="stable")
    data: dict[str, Any] = {k: v[order] for k, v in cols.items()}
    data["capture_date"] = [rows[i][1].capture_date for i in order]
    data["tar_file"] = [tar_file] * n
    data["member_name"] = [rows[i][2].member for i in order]
    data["tar_offset"] = np.fromiter((rows[i][2].offset for i in order), np.int64, count=n)
    data["tar_size"] = np.fromiter((rows[i][2].size for i in order), np.int64, count=n)
    data["image_width"] = np.fromiter((rows[i][3][0] for i in order), np.int32, count=n)
    data["image_height"] = np.fromiter((rows[i][3][1] for i in order), np.int32, count=n)
    fps = np.frombuffer(b"".join(rows[i][3][2] for i in order), dtype=np.uint8)
    data["fingerprint"] = fixed_size_list(fps.reshape(n, FINGERPRINT_DIM))
    data["source_kind"] = ["tar"] * n
    arrays = [
        data[f.name]
        if f.name == "fingerprint"
        else pa.array(data[f.name], type=f.type)
        if f.name in data
        else pa.nulls(n, f.type)  # the other sources' metadata: a 3D Street View tar has none
        for f in IMAGES_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=IMAGES_SCHEMA)
