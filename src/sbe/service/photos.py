"""Photos of indexed buildings, for thumbnails: a parquet with encoded images and the id column.

The photo parquet is found through the index's provenance
(:func:`sbe.index.photos.find_photo_parquet`); pass ``photos=`` to name one directly.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sbe.data.images import ImageDecodeError
from sbe.index.photos import IMAGE_COLUMN, PhotoTable, find_photo_parquet
from sbe.report.thumbs import thumbnail
from sbe.storage.parquet import read_parquet_rows

__all__ = ["IMAGE_COLUMN", "PhotoSource", "find_photo_parquet"]


class PhotoSource(PhotoTable):
    """:class:`~sbe.index.photos.PhotoTable` with cached JPEG thumbnails (for the service).

    Args:
        path: the parquet file.
        id_column: the column matching the index's id column.
        image_column: the binary column of encoded images.
        cache_size: thumbnails kept in memory (least recently used are dropped).
        thumb_px: longest side of a thumbnail, in pixels.
    """

    def __init__(
        self,
        path: str | Path,
        id_column: str,
        image_column: str = IMAGE_COLUMN,
        cache_size: int = 512,
        thumb_px: int = 256,
    ) -> None:
        super().__init__(path, id_column, image_column)
        self._cache: OrderedDict[tuple[int, int], bytes | None] = OrderedDict()
        self._cache_size = cache_size
        self._good: OrderedDict[tuple[str, int], list[int]] = OrderedDict()
        self.thumb_px = thumb_px
        self._lock = threading.Lock()  # requests run in worker threads

    def good_rows(self, id_value: Any, limit: int) -> list[int]:
        """Up to ``limit`` rows of ``id_value`` whose photo decodes (a page never shows a broken
        image); their thumbnails are made, and cached, on the way."""
        key = (str(id_value), int(limit))
        with self._lock:
            if key in self._good:
                self._good.move_to_end(key)
                return self._good[key]
        rows: list[int] = []
        for r in self.rows_of(id_value):
            if len(rows) >= limit:
                break
            if self.thumbnail_jpeg(r, self.thumb_px) is not None:
                rows.append(r)
        with self._lock:
            self._good[key] = rows
            if len(self._good) > self._cache_size:
                self._good.popitem(last=False)
        return rows

    def thumbnail_jpeg(self, row: int, max_px: int = 256, quality: int = 80) -> bytes | None:
        """A JPEG thumbnail of row ``row`` (longest side ``max_px``), or ``None`` if unreadable."""
        key = (int(row), int(max_px))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        blob = (
            read_parquet_rows(self.path, [row], [self.image_column])
            .get(int(row), {})
            .get(self.image_column)
        )
        out: bytes | None = None
        if isinstance(blob, bytes) and blob:
            try:
                buf = io.BytesIO()
                thumbnail(blob, max_px, square=False).save(buf, format="JPEG", quality=quality)
                out = buf.getvalue()
            except ImageDecodeError:
                out = None
        with self._lock:
            self._cache[key] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out
