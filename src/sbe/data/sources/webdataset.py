"""WebDataset shards as img2dataset writes them: ``NNNNN.tar`` holding ``<key>.jpg`` (or
``.png``/``.webp``) + ``<key>.json`` (+ ``<key>.txt``), and ``NNNNN.parquet`` beside it.

A shard is read as a stream (:class:`~sbe.data.tarstream.TarStream`, nothing extracted); each
image keeps its byte offset in the shard, exactly like a 3D Street View tar. A sample's metadata is
its ``.json`` member, else its row (by ``key``) in the parquet beside the shard; a sample without
either keeps every metadata field null (warned ``no_metadata``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sbe.data.rawtar import TarReport
from sbe.data.sources.base import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_BYTES,
    Columns,
    Located,
    RowSkip,
    images_table,
    inspect_or_reason,
    record_from_row,
    records_table,
)
from sbe.data.tarstream import NotATarError, TarDamageError, TarStream
from sbe.storage import SkipLog


@dataclass(slots=True)
class Sample:
    """One sample of a shard as met in the stream (image location and its JSON, if any)."""

    key: str
    member: str | None = None
    offset: int = 0
    size: int = 0
    data: bytes | None = None
    meta: dict[str, Any] | None = None
    seq: int = 0


def _split(path: str) -> tuple[str, str]:
    base, ext = os.path.splitext(path)
    return base, ext.lower()


def iter_samples(
    stream: TarStream, skips: SkipLog, *, read_images: bool = True
) -> Iterator[Sample]:
    """Samples of a shard in archive order, each yielded once all its members have passed.

    img2dataset writes a sample's members next to each other, so a sample is complete when the
    next key starts; samples split across the shard are still joined (held until the end).
    """
    pending: dict[str, Sample] = {}
    n = 0
    for m in stream:
        if m.problem is not None:
            skips.add(m.problem, f"{stream.path.name}:{m.name}")
            continue
        key, ext = _split(m.path)
        s = pending.get(key)
        if s is None:
            s = pending[key] = Sample(key, seq=n)
            n += 1
        try:
            if ext in IMAGE_SUFFIXES and s.member is None:
                s.member, s.offset, s.size = m.name, m.offset, m.size
                if read_images and m.size <= MAX_IMAGE_BYTES:
                    s.data = m.read()
            elif ext == ".json":
                try:
                    obj = json.loads(m.read())
                    s.meta = obj if isinstance(obj, dict) else None
                    if s.meta is None:
                        skips.add(
                            "bad_metadata_row", f"{stream.path.name}:{m.name}: not a JSON object"
                        )
                except ValueError as e:
                    skips.add("bad_metadata_row", f"{stream.path.name}:{m.name}: {e}")
        except TarDamageError:
            break
        # the previous keys are complete once a new key appears (img2dataset order)
        if len(pending) > 1:
            for k in [k for k in pending if k != key]:
                yield pending.pop(k)
    yield from pending.values()


def sample_columns(
    s: Sample,
    side: dict[str, dict[str, Any]],
    cols_cache: dict[tuple[str, ...], Columns],
    id_column: str | None,
    warns: SkipLog,
    where: str,
) -> tuple[dict[str, Any], Columns]:
    """A sample's metadata (its JSON, else its :func:`sidecar` row, else empty with a
    ``no_metadata`` warning) and the columns resolved for that set of names (cached by names)."""
    meta = s.meta if s.meta is not None else side.get(s.key.rsplit("/", 1)[-1])
    if meta is None:
        warns.add("no_metadata", where)
        meta = {}
    names = tuple(meta)
    cols = cols_cache.get(names)
    if cols is None:
        cols = cols_cache[names] = Columns.resolve(names, id_column)
    return meta, cols


def sidecar(shard: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The parquet beside a shard (``00000.parquet``) as ``key -> row``; empty when absent."""
    p = Path(shard).with_suffix(".parquet")
    if not p.is_file():
        return {}
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowInvalid):
        return {}
    if "key" not in table.column_names:
        return {}
    return {str(r["key"]): r for r in table.to_pylist()}


def shard_dataset_id(shard: str | os.PathLike[str], fallback: int) -> int:
    """``00012.tar`` -> 12; a non-numeric name -> ``fallback``."""
    stem = Path(shard).name.split(".")[0]
    return int(stem) if stem.isdigit() and int(stem) < (1 << 31) else fallback


def read_shard(
    path: str | os.PathLike[str],
    *,
    dataset_id: int,
    id_column: str | None = None,
    tar_file: str | None = None,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pa.Table, TarReport]:
    """Read one shard into ``IMAGES_SCHEMA`` rows, in one streaming pass.

    Args:
        path: the uncompressed shard.
        dataset_id: high bits of every ``image_id``; ``patch_id`` is the sample's position.
        id_column: the building id key in the sample JSON (default: the first of the candidates).
        tar_file: value of the ``tar_file`` column (default: ``path`` as given).
        threads: image decode threads.
        progress: called with ``(bytes, samples)`` since the last call.

    Returns:
        ``(table, report)``; ``report.error`` is set (and the table empty) when ``path`` is not a
        tar.
    """
    t0 = time.perf_counter()
    stream = TarStream(path)
    report = TarReport(tar=str(path))
    skips, warns = SkipLog(), SkipLog()
    side = sidecar(path)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="image") if threads > 1 else None
    got: list[tuple[Sample, Future | tuple[int, int, bytes] | str]] = []
    last = 0
    try:
        for i, s in enumerate(iter_samples(stream, skips), 1):
            if s.member is None:
                continue  # a .json/.txt without image: img2dataset's failed downloads
            report.image_members += 1
            data, s.data = s.data, None
            if data is None:
                outcome: Any = f"member is {s.size:,} bytes, over the limit"
            elif pool is not None:
                outcome = pool.submit(inspect_or_reason, data)
            else:
                outcome = inspect_or_reason(data)
            got.append((s, outcome))
            if progress is not None and i % 64 == 0:
                progress(stream.bytes_read - last, 64)
                last = stream.bytes_read
    except NotATarError as e:
        report.error = str(e)
        got = []
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if progress is not None:
        progress(stream.bytes_read - last, 0)
    if stream.damage is not None:
        report.damage = stream.damage
        skips.add("truncated_archive", f"{Path(path).name}: {stream.damage}")
    recs, patch, offset, size, inspected = [], [], [], [], []
    cols_cache: dict[tuple[str, ...], Columns] = {}
    name = Path(path).name
    for s, outcome in sorted(got, key=lambda t: t[0].seq):
        where = f"{name}:{s.member}"
        if isinstance(outcome, Future):
            outcome = outcome.result()
        if isinstance(outcome, str):
            skips.add("corrupt_image", f"{where}: {outcome}")
            continue
        meta, cols = sample_columns(s, side, cols_cache, id_column, warns, where)
        try:
            rec = record_from_row(meta, s.member or "", cols, warns, where)
        except RowSkip as e:
            skips.add(e.reason, f"{where}: {e.detail}")
            continue
        rec["image_key"] = str(meta.get("key") or s.key.rsplit("/", 1)[-1])
        recs.append(rec)
        patch.append(s.seq)
        offset.append(s.offset)
        size.append(s.size)
        inspected.append(outcome)
    loc = Located(
        records_table(recs),
        np.asarray(patch, np.int64),
        np.asarray(offset, np.int64),
        np.asarray(size, np.int64),
        inspected,
    )
    table = images_table(
        loc, container=tar_file or str(path), source_kind="tar", dataset_id=dataset_id
    )
    report.rows = table.num_rows
    report.bytes_read = stream.bytes_read
    report.skipped = dict(sorted(skips.counts.items()))
    report.skip_examples = dict(sorted(skips.examples.items()))
    report.warnings = dict(sorted(warns.counts.items()))
    report.warning_examples = dict(sorted(warns.examples.items()))
    report.seconds = round(time.perf_counter() - t0, 3)
    return table, report
