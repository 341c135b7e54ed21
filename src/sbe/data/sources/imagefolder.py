"""Hugging Face ``imagefolder`` sources: images (in sub-folders or not) plus ``metadata.csv`` or
``metadata.jsonl``, or sub-folders named by building id when there is no metadata file.

``file_name`` in a metadata file is relative to that file's folder (a metadata file may sit at the
root or in a split folder). Other columns: the building id (``id_column``, default the first of
``building_id``, ``OSMID``, ``osm_id``), ``lat``, ``lon``, ``heading`` or ``compass_angle``,
``captured_at`` (ISO date/time or epoch milliseconds) and ``sequence``; any further column is kept
as text for ``sbe embed --keep-columns``.

CSV files are read with :mod:`pyarrow.csv`, every column as text; the delimiter is found by
:class:`csv.Sniffer` and the encoding is UTF-8 (with or without BOM), else Latin-1 (warned).
JSON lines are parsed one by one so a broken line costs only its row.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from sbe.data.sources.base import (
    IMAGE_SUFFIXES,
    Columns,
    RowSkip,
    record_from_row,
    records_table,
    safe_relative,
)
from sbe.errors import SbeError
from sbe.storage import SkipLog

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
FILE_NAME = "file_name"
#: Columns accepted instead of ``file_name`` in a plain CSV/JSONL list of paths (``sbe embed``).
PATH_COLUMNS = (FILE_NAME, "path", "file", "image", "image_path")


@dataclass
class FolderPlan:
    """Every image of a folder source with its metadata, before any image is decoded.

    Attributes:
        root: the folder ``records.file`` is relative to.
        records: ``RECORD_SCHEMA`` rows sorted by ``file``; row i has ``patch_id`` i.
        size, mtime_ns: int64 (N,) per file, from ``stat`` (part provenance).
        extra: every metadata column as text, row-aligned with ``records`` (``--keep-columns``).
        metadata_files: the metadata files read.
        skips, warns: counted problems with examples.
    """

    root: Path
    records: pa.Table
    size: np.ndarray
    mtime_ns: np.ndarray
    extra: dict[str, list[str | None]] = field(default_factory=dict)
    metadata_files: list[Path] = field(default_factory=list)
    named: set[str] = field(default_factory=set)  # every file a metadata row names, kept or not
    skips: SkipLog = field(default_factory=SkipLog)
    warns: SkipLog = field(default_factory=SkipLog)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under ``root`` (hidden and ``_`` names left out)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.startswith((".", "_")) or not f.lower().endswith(IMAGE_SUFFIXES):
                continue
            out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(out)


def find_metadata(root: Path) -> list[Path]:
    """``metadata.csv`` / ``metadata.jsonl`` files under ``root`` (sorted)."""
    found = [
        p for name in METADATA_NAMES for p in root.rglob(name) if p.is_file() and _visible(p, root)
    ]
    return sorted(found)


def read_csv_rows(
    path: Path, warns: SkipLog, skips: SkipLog
) -> tuple[list[str], list[dict[str, Any]]]:
    """A CSV's header and rows (every value text), whatever its delimiter and encoding.

    Raises:
        SbeError: the file cannot be read or parsed at all.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SbeError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        warns.add("metadata_encoding_latin1", f"{path.name}: not UTF-8, read as Latin-1")
    if not text.strip():
        return [], []
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter))
    names = [h.strip() for h in header]

    def bad_row(row: Any) -> str:
        skips.add(
            "bad_metadata_row",
            f"{path.name} line {row.number}: {row.text[:80]!r} ({row.actual_columns} fields, expected {row.expected_columns})",
        )
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=bad_row),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
    except pa.ArrowInvalid as e:
        raise SbeError(f"{path}: not a readable CSV ({e})") from None
    return names, table.to_pylist()


def read_jsonl_rows(path: Path, skips: SkipLog) -> tuple[list[str], list[dict[str, Any]]]:
    """A JSON-lines file's rows; a line that is not a JSON object is a counted skip."""
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    try:
        raw = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as e:
        raise SbeError(f"{path}: cannot read ({e.strerror or e})") from None
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            skips.add("bad_metadata_row", f"{path.name} line {i}: {e}")
            continue
        if not isinstance(obj, dict):
            skips.add("bad_metadata_row", f"{path.name} line {i}: not a JSON object")
            continue
        rows.append(obj)
        names.update(dict.fromkeys(obj))
    return list(names), rows


def read_rows(path: Path, warns: SkipLog, skips: SkipLog) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of a metadata/list file: ``.csv`` (or other delimited text) or ``.jsonl``/``.json``."""
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return read_jsonl_rows(path, skips)
    return read_csv_rows(path, warns, skips)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v)


def plan_from_rows(
    root: Path,
    table_files: list[tuple[Path, list[str], list[dict[str, Any]]]],
    id_column: str | None,
    *,
    path_columns: tuple[str, ...] = (FILE_NAME,),
    existing: set[str] | None = None,
    skips: SkipLog | None = None,
    warns: SkipLog | None = None,
) -> FolderPlan:
    """Records from metadata rows whose path column names an image relative to the file's folder.

    Args:
        root: the folder every record's ``file`` is made relative to.
        table_files: per metadata file, ``(path, column names, rows)``.
        id_column: the building id column (``None``: the first of ``ID_CANDIDATES`` present).
        path_columns: accepted names of the file column (first present wins).
        existing: the image files under ``root`` (relative); ``None`` = check each with ``stat``.

    Raises:
        SbeError: a metadata file has none of ``path_columns``, or lacks ``id_column``.
    """
    skips = skips or SkipLog()
    warns = warns or SkipLog()
    recs: list[dict[str, Any]] = []
    extra_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    named: set[str] = set()
    for mpath, names, rows in table_files:
        path_col = next((c for c in path_columns if c in names), None)
        if path_col is None and rows:
            raise SbeError(
                f"{mpath}: no {' or '.join(path_columns)} column (found {names}); name the image file of each row there"
            )
        if id_column and rows and id_column not in names:
            raise SbeError(f"{mpath}: no column {id_column!r} for --id-column (found {names})")
        cols = Columns.resolve(names, id_column)
        base = os.path.relpath(mpath.parent, root).replace(os.sep, "/")
        for i, row in enumerate(rows, 1):
            where = f"{mpath.name} row {i}"
            name = row.get(path_col) if path_col else None
            if name is None or not str(name).strip():
                skips.add("missing_file_name", f"{where}: empty {path_col}")
                continue
            rel = safe_relative(str(name) if base == "." else f"{base}/{name}")
            if rel is None:
                skips.add("unsafe_path", f"{where}: {name!r} leaves the folder")
                continue
            named.add(rel)
            found = rel in existing if existing is not None else (root / rel).is_file()
            if not found:
                skips.add("missing_image", f"{where}: {root / rel} does not exist ({path_col})")
                continue
            if rel in seen:
                skips.add("duplicate_image", f"{where}: {rel} named again")
                continue
            try:
                rec = record_from_row(row, rel, cols, warns, f"{where} ({rel})")
            except RowSkip as e:
                skips.add(e.reason, f"{where} ({rel}): {e.detail}")
                continue
            seen.add(rel)
            recs.append(rec)
            extra_rows.append(row)
    order = sorted(range(len(recs)), key=lambda i: recs[i]["file"])
    recs = [recs[i] for i in order]
    extra_rows = [extra_rows[i] for i in order]
    keys: dict[str, None] = {}
    for r in extra_rows:
        keys.update(dict.fromkeys(r))
    extra = {k: [_text(r.get(k)) for r in extra_rows] for k in keys}
    plan = FolderPlan(
        root, records_table(recs), *_stat(root, [r["file"] for r in recs]), extra=extra
    )
    plan.metadata_files = [m for m, _, _ in table_files]
    plan.named = named
    plan.skips, plan.warns = skips, warns
    return plan


def _stat(root: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    size = np.empty(len(files), np.int64)
    mtime = np.empty(len(files), np.int64)
    for i, f in enumerate(files):
        st = os.stat(root / f)
        size[i], mtime[i] = st.st_size, st.st_mtime_ns
    return size, mtime


def plan_imagefolder(root: str | os.PathLike[str], id_column: str | None = None) -> FolderPlan:
    """Every image of an ``imagefolder`` with its metadata (see the module docstring).

    Images no metadata row names are not ingested (counted as ``image_without_metadata``).
    Without a metadata file, an image's first sub-folder is its building id (none at the root).

    Raises:
        SbeError: no images; a metadata file without ``file_name`` or ``id_column``.
    """
    root = Path(root)
    images = list_images(root)
    if not images:
        raise SbeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    metas = find_metadata(root)
    skips, warns = SkipLog(), SkipLog()
    if metas:
        tables = []
        for m in metas:
            names, rows = read_rows(m, warns, skips)
            tables.append((m, names, rows))
        plan = plan_from_rows(
            root, tables, id_column, existing=set(images), skips=skips, warns=warns
        )
        for f in images:
            if f not in plan.named:
                warns.add("image_without_metadata", str(root / f))
        return plan
    if id_column:
        raise SbeError(
            f"{root}: --id-column {id_column!r} given but the folder has no metadata.csv or metadata.jsonl"
        )
    recs = []
    for f in images:
        parts = f.split("/")
        recs.append(
            {
                "file": f,
                "image_key": os.path.splitext(f)[0],
                "building_key": parts[0] if len(parts) > 1 else None,
                **dict.fromkeys(
                    (
                        "lat",
                        "lon",
                        "heading",
                        "captured_at",
                        "sequence",
                        "camera_type",
                        "is_pano",
                        "position_source",
                        "heading_source",
                    )
                ),
            }
        )
    label = [r["building_key"] for r in recs]
    return FolderPlan(
        root,
        records_table(recs),
        *_stat(root, images),
        extra={"label": label},
        skips=skips,
        warns=warns,
    )


def plan_list_file(path: str | os.PathLike[str], id_column: str | None = None) -> FolderPlan:
    """Records from one CSV / JSONL file whose path column (``file_name``, ``path``, ``file``,
    ``image`` or ``image_path``) names images relative to the file's folder.

    Raises:
        SbeError: the file has no path column, or lacks ``id_column``.
    """
    path = Path(path)
    skips, warns = SkipLog(), SkipLog()
    names, rows = read_rows(path, warns, skips)
    return plan_from_rows(
        path.parent,
        [(path, names, rows)],
        id_column,
        path_columns=PATH_COLUMNS,
        skips=skips,
        warns=warns,
    )
