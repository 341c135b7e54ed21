"""Small JPEG thumbnails as ``data:`` URIs, read straight from raw tars, image folders or a packaged
parquet.

A report embeds every picture in the page, so each one is decoded at reduced JPEG scale, shrunk
to a thumbnail and re-encoded at a modest quality: a few kilobytes each.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import Image, ImageOps

from sbe.data.images import ImageDecodeError, decode_rgb
from sbe.data.tarstream import ImageReadError, read_image

#: columns of the ingest parts that locate an image's bytes in its tar
LOCATION_COLUMNS = ["image_id", "tar_file", "tar_offset", "tar_size"]
#: and, for an image-folder source, the file's path inside the folder ``tar_file`` names (read
#: when the parts have it; every part ``sbe ingest`` writes does)
MEMBER_COLUMN = "member_name"


def read_located(
    base: str | os.PathLike[str] | None, container: str, member: str, offset: int, size: int
) -> bytes:
    """An image by its ingest reference (:func:`sbe.data.tarstream.read_image`).

    Args:
        base: the folder a relative ``container`` is relative to (ingest stores an image folder
            relative to its output folder); ``None`` = as given.
        container, member, offset, size: ``tar_file``, ``member_name``, ``tar_offset``,
            ``tar_size`` of the row.

    Raises:
        ImageReadError: the tar or file is missing, or the location is invalid.
    """
    path = container
    if base is not None and not os.path.isabs(container):
        path = os.path.join(base, container)
    try:
        return read_image(path, member, offset, size)
    except ImageReadError as e:
        raise ImageReadError(f"{path}: {e}") from None


def image_locations(
    ingest_dir: str | os.PathLike[str],
    image_ids: Iterable[int],
    files: Sequence[str | os.PathLike[str]] | None = None,
) -> pa.Table:
    """Where the images of ``image_ids`` sit: the parts' ``LOCATION_COLUMNS`` (+ ``member_name``).

    Args:
        ingest_dir: the ingest output folder (``*.parquet`` with ``IMAGES_SCHEMA`` columns).
        image_ids: the wanted ids.
        files: the parts to read (already listed and checked); default every part of the folder.

    Returns:
        One row per found id (the first part in name order wins a repeated id); ids not found are
        absent.

    Raises:
        FileNotFoundError: no ingest parts in the folder.
    """
    if files is None:
        files = sorted(
            p for p in Path(ingest_dir).glob("*.parquet") if not p.name.startswith((".", "_"))
        )
    if not files:
        raise FileNotFoundError(f"no ingest parts (*.parquet) in {ingest_dir}")
    wanted = pa.array(np.unique(np.asarray(list(image_ids), dtype=np.int64)), pa.int64())
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    columns = LOCATION_COLUMNS + ([MEMBER_COLUMN] if MEMBER_COLUMN in dataset.schema.names else [])
    table = dataset.to_table(columns=columns, filter=pc.field("image_id").isin(wanted))
    if table.num_rows == 0:
        return table
    ids = table.column("image_id").to_numpy()
    _, first = np.unique(ids, return_index=True)
    return table.take(pa.array(np.sort(first)))


def thumbnail(data: bytes, max_px: int, square: bool = True) -> Image.Image:
    """Decode image bytes at reduced scale and shrink them to a thumbnail.

    Args:
        data: encoded image.
        max_px: side of the square thumbnail, or the longest side when ``square`` is false.
        square: centre-crop to a ``max_px`` square (gallery tiles) instead of keeping the aspect.

    Raises:
        ImageDecodeError: the bytes are not a decodable image.
    """
    img = decode_rgb(data, min_side=max_px)
    if square:
        return ImageOps.fit(img, (max_px, max_px), Image.Resampling.LANCZOS)
    img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    return img


def jpeg_data_uri(img: Image.Image, quality: int = 80) -> str:
    """``data:image/jpeg;base64,...`` of an image."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_uri(img: Image.Image) -> str:
    """``data:image/png;base64,...`` of an image (palette images stay small)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(
    data: bytes | None, max_px: int, quality: int = 80, square: bool = True
) -> str | None:
    """A JPEG thumbnail ``data:`` URI of encoded image bytes, or ``None`` when they do not decode."""
    if not data:
        return None
    try:
        return jpeg_data_uri(thumbnail(data, max_px, square), quality)
    except ImageDecodeError:
        return None


def file_thumbnail_uri(
    path: str | os.PathLike[str], max_px: int, quality: int = 80, square: bool = True
) -> str | None:
    """A thumbnail ``data:`` URI of an image file, or ``None`` when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return thumbnail_uri(data, max_px, quality, square)
