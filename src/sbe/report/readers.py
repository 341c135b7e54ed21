"""Reading the other stages' outputs for the report: where they are, and what counts as absent.

A missing or unreadable input (no folder, no file, no valid manifest, a file that is not JSON or
not parquet) raises :class:`Unavailable`, which the page shows as a "not available" note. A
present, readable output without what this version writes raises :class:`Malformed`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.storage import Manifest, load_manifest


class Unavailable(Exception):
    """A section's input is missing or unreadable; the message says why (shown on the page)."""


class Malformed(SbeError):
    """A stage output is present and readable but not what this version writes."""


@dataclass
class ReportInputs:
    """Where the report reads from (absolute paths; ``None`` = not available)."""

    raw: Path | None = None
    images: Path | None = None
    backbone: Path | None = None
    split: Path | None = None
    neighbors: Path | None = None
    run: Path | None = None
    geo: Path | None = None
    model: Path | None = None
    embeddings: Path | None = None
    buildings: Path | None = None
    clusters: Path | None = None
    index: Path | None = None
    landmarks: Path | None = None


@dataclass
class ThumbSettings:
    """Thumbnail size (longest side, pixels) and JPEG quality."""

    max_px: int = 112
    quality: int = 80


@dataclass
class ReportOptions:
    """How much the report shows (see ``[report]`` in the config)."""

    gallery_queries: int = 8
    gallery_k: int = 5
    cluster_samples: int = 4
    max_clusters: int = 24
    map_points: int = 600
    #: buildings of ``sbe aggregate`` drawn on the map at most (a seeded sample beyond)
    building_points: int = 5000
    thumb: ThumbSettings = field(default_factory=ThumbSettings)
    seed: int = 0
    title: str = "sbe report"
    subtitle: str = ""


def need_dir(path: Path | None, what: str) -> Path:
    """``path`` if it is an existing folder, else :class:`Unavailable` naming ``what``."""
    if path is None:
        raise Unavailable(f"no {what} folder configured")
    if not Path(path).is_dir():
        raise Unavailable(f"{what} not found at {path}")
    return Path(path)


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON, or :class:`Unavailable` when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise Unavailable(f"{what} not found ({path})") from None
    except (OSError, ValueError) as e:
        raise Unavailable(f"{what} unreadable ({path}: {e})") from None


def manifest_of(path: Path | None, what: str, stage: str | None = None) -> Manifest:
    """The ``_manifest.json`` of a stage output folder (optionally checking its stage name)."""
    folder = need_dir(path, what)
    m = load_manifest(folder)
    if m is None:
        raise Unavailable(
            f"{what} has no valid _manifest.json ({folder}): the stage did not finish"
        )
    if stage is not None and m.stage != stage:
        raise Unavailable(f"{folder} holds the output of stage {m.stage!r}, not {stage!r}")
    return m


def parquet_schema(path: Path, what: str) -> pa.Schema:
    """The schema of a parquet file; :class:`Unavailable` when it is missing or not parquet."""
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise Unavailable(f"{what} not found ({path})") from None
    except (OSError, pa.ArrowException) as e:
        raise Unavailable(f"{what} unreadable ({path}: {type(e).__name__}: {e})") from None


def require_columns(schema: pa.Schema, columns: Sequence[str], path: Path, stage: str) -> None:
    """:class:`Malformed` naming ``path`` when ``schema`` lacks one of ``columns``."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise Malformed(
            f"{path} has no column(s) {', '.join(missing)}: not what this version of "
            f"`sbe {stage}` writes; rerun `sbe {stage}`"
        )


def read_parquet(path: Path, what: str, stage: str, columns: Sequence[str]) -> pa.Table:
    """The given columns of a parquet file.

    Raises:
        Unavailable: the file is missing or is not readable parquet.
        Malformed: it lacks one of ``columns``.
    """
    require_columns(parquet_schema(path, what), columns, path, stage)
    try:
        return pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as e:  # a corrupt page past a valid footer
        raise Unavailable(f"{what} unreadable ({path}: {type(e).__name__}: {e})") from None


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (blank or broken lines are left out)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise Unavailable(f"{what} not found ({path})") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
