"""Input sources of ``sbe ingest`` / ``sbe embed``: one reader per format, one images table.

Formats (:data:`FORMATS`):
- ``3dsv``: 3D Street View tars (:mod:`sbe.data.rawtar`);
- ``imagefolder``: a Hugging Face image folder (:mod:`.imagefolder`);
- ``webdataset``: img2dataset WebDataset shards (:mod:`.webdataset`);
- ``mapillary``: Mapillary API metadata next to images named by id (:mod:`.mapillary`).

:func:`detect_format` picks one from what the inputs hold; :func:`read_folder_part` inspects one
part (a row range) of a folder source and returns its ``IMAGES_SCHEMA`` rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from sbe.data.rawtar import TarReport
from sbe.data.sources.base import (
    SKIP_REASONS,
    WARNING_REASONS,
    Located,
    images_table,
    inspect_files,
)
from sbe.data.sources.imagefolder import (
    METADATA_NAMES,
    FolderPlan,
    list_images,
    plan_imagefolder,
    plan_list_file,
)
from sbe.data.sources.mapillary import plan_mapillary
from sbe.data.tarstream import NotATarError, TarStream
from sbe.errors import SbeError
from sbe.storage import SkipLog

FORMATS = ("auto", "3dsv", "imagefolder", "webdataset", "mapillary")
FOLDER_FORMATS = ("imagefolder", "mapillary")
#: A metadata / path-list file given as the input itself (paths relative to its folder).
LIST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


def tar_kind(path: str | os.PathLike[str], members: int = 64) -> str:
    """``webdataset`` when a tar's first members include a ``.json``, else ``3dsv``."""
    try:
        for i, m in enumerate(TarStream(path)):
            if m.path.lower().endswith(".json"):
                return "webdataset"
            if i >= members:
                break
    except NotATarError:
        pass  # ingest then refuses it with the clear not-a-tar message
    return "3dsv"


def _first_tar(folder: Path) -> Path | None:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for f in sorted(filenames):
            if not f.startswith((".", "_")) and f.lower().endswith((".tar", ".tar.gz", ".tgz")):
                return Path(dirpath) / f
    return None


def detect_one(path: str | os.PathLike[str]) -> str:
    """The format of one input (a file or folder); see the module docstring.

    Raises:
        SbeError: the input is missing or holds nothing ``sbe`` reads.
    """
    p = Path(path)
    if not p.exists():
        raise SbeError(f"input not found: {p}")
    if p.is_file():
        low = p.name.lower()
        if low in METADATA_NAMES or low.endswith(LIST_SUFFIXES):
            return "imagefolder"
        if low.endswith(".geojson"):
            return "mapillary"
        return tar_kind(p) if low.endswith(".tar") else "3dsv"
    tar = _first_tar(p)
    if tar is not None:
        return tar_kind(tar)
    if (
        any((p / n).is_file() for n in METADATA_NAMES)
        or any(p.rglob("metadata.csv"))
        or any(p.rglob("metadata.jsonl"))
    ):
        return "imagefolder"
    if any(p.rglob("*.geojson")) or any(p.rglob("*.json")):
        return "mapillary"
    if list_images(p):
        return "imagefolder"
    raise SbeError(
        f"no tar files found under {p}, nor images or metadata (formats: {', '.join(FORMATS[1:])})"
    )


def detect_format(inputs: list[Path]) -> str:
    """The one format of all inputs.

    Raises:
        SbeError: inputs of different formats (ingest them into separate outputs), or none.
    """
    found = {str(p): detect_one(p) for p in inputs}
    kinds = sorted(set(found.values()))
    if len(kinds) > 1:
        raise SbeError(
            "inputs of different formats: "
            + ", ".join(f"{p} ({k})" for p, k in found.items())
            + "; ingest each format into its own --out, or pass --format"
        )
    return kinds[0]


def plan_folder(fmt: str, root: str | os.PathLike[str], id_column: str | None) -> FolderPlan:
    """The :class:`FolderPlan` of a folder source (``imagefolder`` or ``mapillary``)."""
    p = Path(root)
    if fmt == "imagefolder" and p.is_file():
        return plan_list_file(p, id_column)
    if fmt == "imagefolder":
        return plan_imagefolder(p, id_column)
    if fmt == "mapillary":
        if p.is_file():
            p = p.parent
        return plan_mapillary(p, id_column)
    raise SbeError(f"{fmt} is not a folder format")


def read_folder_part(
    root: str,
    records: pa.Table,
    patch_start: int,
    *,
    container: str,
    dataset_id: int,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pa.Table, TarReport]:
    """Inspect the images of one part of a folder source.

    Args:
        root: the folder (``records.file`` is relative to it).
        records: the part's ``RECORD_SCHEMA`` rows; row i has ``patch_id = patch_start + i``.
        container: value of ``tar_file`` (the folder as stored, relative to the ingest output).
        dataset_id: the source's dataset number.
        threads: decode threads.
        progress: ``(bytes, images)`` since the last call.

    Returns:
        ``(IMAGES_SCHEMA table, report)``; an image that does not decode is a ``corrupt_image``
        skip.
    """
    t0 = time.perf_counter()
    files = records.column("file").to_pylist()
    got = inspect_files(root, files, threads, progress)
    skips = SkipLog()
    keep, inspected, sizes = [], [], []
    for i, (nbytes, outcome) in enumerate(got):
        if isinstance(outcome, str):
            skips.add("corrupt_image", f"{os.path.join(root, files[i])}: {outcome}")
            continue
        keep.append(i)
        inspected.append(outcome)
        sizes.append(nbytes)
    idx = np.asarray(keep, np.int64)
    loc = Located(
        records.take(pa.array(idx, pa.int64())),
        patch_start + idx,
        np.zeros(len(idx), np.int64),
        np.asarray(sizes, np.int64),
        inspected,
    )
    table = images_table(loc, container=container, source_kind="file", dataset_id=dataset_id)
    report = TarReport(tar=root, rows=table.num_rows, image_members=len(files))
    report.bytes_read = int(sum(n for n, _ in got))
    report.skipped = dict(sorted(skips.counts.items()))
    report.skip_examples = dict(sorted(skips.examples.items()))
    report.seconds = round(time.perf_counter() - t0, 3)
    return table, report


__all__ = [
    "FOLDER_FORMATS",
    "FORMATS",
    "SKIP_REASONS",
    "WARNING_REASONS",
    "FolderPlan",
    "detect_format",
    "detect_one",
    "plan_folder",
    "read_folder_part",
]
