"""Resumable part files: each part carries, in its parquet footer, what it was made from.

A rerun reads only the footer to decide whether the part is still current, so a killed run resumes
where it stopped and a changed input (or config) redoes exactly the parts it affects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sbe.errors import SbeError
from sbe.storage.atomic import write_parquet_atomic

META_KEY = b"sbe"
#: footer key of what a streamed part learnt once written (see ``StreamingPart.set_result``)
RESULT_KEY = b"sbe_result"


def write_part(
    table: pa.Table,
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    *,
    row_group_size: int | None = None,
) -> None:
    """Write ``table`` atomically to ``path`` with ``meta`` (JSON) stored in the schema metadata."""
    existing = dict(table.schema.metadata or {})
    existing[META_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
    write_parquet_atomic(
        table.replace_schema_metadata(existing), path, row_group_size=row_group_size
    )


def read_part_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meta`` a part was written with, or ``None`` if missing/unreadable.

    A result added at close (``StreamingPart.set_result``) is returned under ``"result"``.
    """
    try:
        md = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = md.get(META_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        result = json.loads(md[RESULT_KEY]) if RESULT_KEY in md else None
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    if result is not None:
        meta["result"] = result
    return meta


def part_is_current(path: str | os.PathLike[str], expected: dict[str, Any]) -> bool:
    """True if ``path`` exists and was written with metadata equal to ``expected`` on every key."""
    if not Path(path).is_file():
        return False
    meta = read_part_meta(path)
    if meta is None:
        return False
    expected_json = json.loads(json.dumps(expected, sort_keys=True, default=str))
    return all(meta.get(k) == v for k, v in expected_json.items())


def remove_stale_parts(folder: str | os.PathLike[str], keep: set[str], stage: str) -> list[str]:
    """Delete ``stage``'s parts in ``folder`` that are not in ``keep`` (file names).

    Only parts whose footer says ``stage`` wrote them are touched, so a user's other files in the
    folder survive; this is how an output folder keeps mirroring its inputs when inputs go away.

    Returns:
        The names of the removed parts.
    """
    removed = []
    for p in sorted(Path(folder).glob("*.parquet")):
        if p.name in keep:
            continue
        meta = read_part_meta(p)
        if meta is not None and meta.get("stage") == stage:
            p.unlink()
            removed.append(p.name)
    return removed


def list_parts(
    folder: str | os.PathLike[str], *, what: str = "parts", hint: str = ""
) -> list[Path]:
    """The ``*.parquet`` parts of a stage output folder, sorted by name.

    Temps and bookkeeping files (names starting with ``.`` or ``_``) are not parts.

    Args:
        folder: the folder to list.
        what: what the parts are, for the error message (e.g. ``"ingest parts"``).
        hint: appended to the error message, e.g. ``" (run `sbe ingest` first)"``.

    Returns:
        The part paths, sorted by file name.

    Raises:
        SbeError: the folder does not exist or holds no part.
    """
    root = Path(folder)
    if not root.is_dir():
        raise SbeError(f"input folder not found: {root}{hint}")
    parts = sorted(
        p for p in root.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
    )
    if not parts:
        raise SbeError(f"no {what} (*.parquet) in {root}{hint}")
    return parts
