"""The 3D Street View ``.txt`` metadata: parse, range-check and write the ``d`` line.

Every crop ``<stem>.jpg`` in a raw tar has a ``<stem>.txt`` beside it. Its first non-blank line is
the ``d`` line: the letter ``d`` and exactly 17 whitespace-separated numbers (see
``docs/ingest.md`` and ``/shared/docs/streetview-format.md``)::

    d DatasetID TargetID PatchID StreetViewID  tlat tlon theight  nx ny nz
      clat clon cheight  distance heading pitch roll

Further lines are optional: ``a ...`` (upstream alignment data, ignored) and ``t YYYY-MM-DD``
(this project's synthetic extension: the capture date). Any other line is ignored.

A malformed ``d`` line is reported as such (:class:`MetadataError` with a ``kind``), never guessed
at: some public loaders index the line as if it had 16 numbers, and a reader that tolerates a
missing field silently shifts every field after it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Literal

from sbe.storage.schemas import ID_MAX, make_uid

#: Field names of the 17 numbers, in file order (schema column names where one exists).
D_FIELDS: tuple[str, ...] = (
    "dataset_id",
    "target_id",
    "patch_id",
    "panorama_id",  # upstream "StreetViewID"
    "target_lat",
    "target_lon",
    "target_height",
    "normal_x",
    "normal_y",
    "normal_z",
    "camera_lat",
    "camera_lon",
    "camera_height",
    "camera_distance",
    "heading",
    "pitch",
    "roll",
)
N_D_VALUES = len(D_FIELDS)
_N_ID_FIELDS = 4

#: Default tolerance on ``| |normal| - 1 |``: the files print ~6 decimals, so a real unit vector
#: is off by ~1e-6; 1e-2 still rejects a zero or swapped field.
NORMAL_TOLERANCE = 1e-2

MetadataErrorKind = Literal[
    "not_text",  # bytes are not UTF-8 text
    "too_large",  # the file is implausibly large for a .txt (not read)
    "missing_d_line",  # empty file, or the first non-blank line is not a `d` line
    "multiple_d_lines",
    "token_count",  # not exactly `d` + 17 numbers
    "not_numeric",  # a token is not a finite decimal number
    "not_integer",  # an identifier is not an integer
    "out_of_range",  # a value outside its physical range
]

# A plain decimal number: no nan/inf, no hex, no underscores (all of which float() accepts).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class MetadataError(ValueError):
    """A ``.txt`` whose ``d`` line cannot be trusted.

    Attributes:
        kind: which check failed (one of :data:`MetadataErrorKind`).
    """

    def __init__(self, kind: MetadataErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: MetadataErrorKind = kind
        self.detail = message


@dataclass(frozen=True, slots=True)
class DLine:
    """The 17 values of one ``d`` line. Angles in degrees, lengths in metres.

    Attributes:
        dataset_id, target_id, patch_id, panorama_id: non-negative integers < 2**31.
        target_lat, target_lon, camera_lat, camera_lon: WGS84 degrees.
        target_height, camera_height: metres.
        normal_x, normal_y, normal_z: facade normal at the target, unit vector (WebMercator frame).
        camera_distance: camera-to-target distance, metres, >= 0.
        heading: degrees in [0, 360), 0 = north. pitch: degrees in [-90, 90], 0 = level.
        roll: degrees (always 0 upstream; kept for a lossless round trip, not stored by ingest).
    """

    dataset_id: int
    target_id: int
    patch_id: int
    panorama_id: int
    target_lat: float
    target_lon: float
    target_height: float
    normal_x: float
    normal_y: float
    normal_z: float
    camera_lat: float
    camera_lon: float
    camera_height: float
    camera_distance: float
    heading: float
    pitch: float
    roll: float = 0.0

    @property
    def image_id(self) -> int:
        """``make_uid(dataset_id, patch_id)``: one crop, unique across datasets."""
        return int(make_uid(self.dataset_id, self.patch_id))

    @property
    def target_uid(self) -> int:
        """``make_uid(dataset_id, target_id)``: one facade point, unique across datasets."""
        return int(make_uid(self.dataset_id, self.target_id))

    def values(self) -> tuple[float | int, ...]:
        """The 17 values in file order."""
        return dataclasses.astuple(self)


@dataclass(frozen=True, slots=True)
class ImageMetadata:
    """Everything ingest keeps from one ``.txt``.

    Attributes:
        d: the parsed ``d`` line.
        capture_date: from a ``t YYYY-MM-DD`` line, else ``None``.
        date_problem: why a present ``t`` line was not used (``None`` when fine or absent);
            a bad date is a warning, not a reason to drop an otherwise valid image.
    """

    d: DLine
    capture_date: dt.date | None = None
    date_problem: str | None = None


def _check_range(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise MetadataError("out_of_range", f"{name}={value!r} outside {rule}")


def parse_d_line(line: str, *, normal_tolerance: float = NORMAL_TOLERANCE) -> DLine:
    """Parse and range-check one ``d`` line.

    Args:
        line: the line, starting with the token ``d``.
        normal_tolerance: largest accepted ``| |normal| - 1 |``.

    Returns:
        The parsed :class:`DLine`.

    Raises:
        MetadataError: with ``kind`` ``missing_d_line``, ``token_count``, ``not_numeric``,
            ``not_integer`` or ``out_of_range``.
    """
    tokens = line.split()
    if not tokens or tokens[0] != "d":
        raise MetadataError("missing_d_line", f"line does not start with 'd': {line[:40]!r}")
    values = tokens[1:]
    if len(values) != N_D_VALUES:
        raise MetadataError(
            "token_count", f"expected 'd' + {N_D_VALUES} numbers, got {len(values)}"
        )
    for name, tok in zip(D_FIELDS, values, strict=True):
        if _NUMBER.fullmatch(tok) is None:
            raise MetadataError("not_numeric", f"{name}={tok[:30]!r} is not a number")
    ids: list[int] = []
    for name, tok in zip(D_FIELDS[:_N_ID_FIELDS], values, strict=False):
        if _INTEGER.fullmatch(tok) is None:
            raise MetadataError("not_integer", f"{name}={tok!r} is not an integer")
        n = int(tok)
        _check_range(name, n, 0 <= n <= ID_MAX, f"[0, {ID_MAX}]")
        ids.append(n)
    floats = [float(t) for t in values[_N_ID_FIELDS:]]
    for name, v in zip(D_FIELDS[_N_ID_FIELDS:], floats, strict=True):
        if not math.isfinite(v):  # e.g. 1e999
            raise MetadataError("not_numeric", f"{name}={v!r} is not finite")
    d = DLine(*ids, *floats)
    for name in ("target_lat", "camera_lat"):
        v = getattr(d, name)
        _check_range(name, v, -90.0 <= v <= 90.0, "[-90, 90]")
    for name in ("target_lon", "camera_lon"):
        v = getattr(d, name)
        _check_range(name, v, -180.0 <= v <= 180.0, "[-180, 180]")
    norm = math.sqrt(d.normal_x**2 + d.normal_y**2 + d.normal_z**2)
    if abs(norm - 1.0) > normal_tolerance:
        raise MetadataError(
            "out_of_range",
            f"surface normal has length {norm:.6g}, expected 1 ± {normal_tolerance:g}",
        )
    _check_range("camera_distance", d.camera_distance, d.camera_distance >= 0.0, "[0, inf)")
    _check_range("heading", d.heading, 0.0 <= d.heading < 360.0, "[0, 360)")
    _check_range("pitch", d.pitch, -90.0 <= d.pitch <= 90.0, "[-90, 90]")
    return d


def _parse_date(rest: list[str]) -> tuple[dt.date | None, str | None]:
    if len(rest) != 1 or _DATE.fullmatch(rest[0]) is None:
        return None, f"capture date {' '.join(rest)[:30]!r} is not YYYY-MM-DD"
    try:
        return dt.date.fromisoformat(rest[0]), None
    except ValueError as e:
        return None, f"capture date {rest[0]!r}: {e}"


def parse_metadata(
    data: bytes | str, *, normal_tolerance: float = NORMAL_TOLERANCE
) -> ImageMetadata:
    """Parse a whole ``.txt``: the ``d`` line (required) and an optional ``t`` date line.

    Args:
        data: file contents (bytes are decoded as UTF-8; a BOM is allowed).
        normal_tolerance: see :func:`parse_d_line`.

    Returns:
        The :class:`ImageMetadata`.

    Raises:
        MetadataError: the ``d`` line is missing, repeated or malformed.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise MetadataError(
                "not_text", f"not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
    lines = [ln.split() for ln in data.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise MetadataError("missing_d_line", "empty file")
    d = parse_d_line(" ".join(lines[0]), normal_tolerance=normal_tolerance)
    date: dt.date | None = None
    problem: str | None = None
    date_lines = 0
    for tokens in lines[1:]:
        if tokens[0] == "d":
            raise MetadataError("multiple_d_lines", "more than one 'd' line")
        if tokens[0] == "t":
            date_lines += 1
            if date_lines == 1:
                date, problem = _parse_date(tokens[1:])
    if date_lines > 1:
        date, problem = None, f"{date_lines} 't' lines, expected at most one"
    return ImageMetadata(d=d, capture_date=date, date_problem=problem)


def _fmt(v: float | int) -> str:
    # repr() of a float round-trips exactly; ints stay integers.
    return str(v) if isinstance(v, int) else repr(float(v))


def format_d_line(d: DLine) -> str:
    """The ``d`` line for ``d`` (no newline); :func:`parse_d_line` reads it back exactly."""
    return "d " + " ".join(_fmt(v) for v in d.values())


def format_metadata(d: DLine, capture_date: dt.date | None = None) -> str:
    """A whole ``.txt`` as this project writes it: the ``d`` line and an optional ``t`` line."""
    text = format_d_line(d) + "\n"
    if capture_date is not None:
        text += f"t {capture_date.isoformat()}\n"
    return text
