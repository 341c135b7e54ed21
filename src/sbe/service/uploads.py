"""Checks on uploaded images before any pixel is decoded: size, type, dimensions.

A decompression bomb is a small file declaring a huge picture (a 20000 x 20000 JPEG of a few
kilobytes); only its header is parsed here, so it is refused before any memory is spent on it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from sbe.data.images import DECODE_ERRORS


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be.

    Attributes:
        max_image_bytes: largest encoded image, in bytes.
        max_pixels: largest picture, width x height in pixels (checked from the header).
        max_images: most images in one request.
        max_request_bytes: largest request body, in bytes (checked while it streams in).
    """

    max_image_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images: int = 16
    max_request_bytes: int = 64 * 1024 * 1024


class UploadError(Exception):
    """An upload the server refuses; ``status`` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: content types accepted for an image part (browsers send image/*; curl may send octet-stream)
ACCEPTED_TYPES = ("image/", "application/octet-stream")


def check_image(name: str, content_type: str | None, data: bytes, limits: UploadLimits) -> None:
    """Refuse an uploaded image that is empty, too large, not an image or a decompression bomb.

    Args:
        name: the file name sent by the client (for messages).
        content_type: the part's declared content type, if any.
        data: the encoded bytes.
        limits: the :class:`UploadLimits`.

    Raises:
        UploadError: 400 (empty), 413 (too large in bytes or pixels), 415 (not an image).
    """
    if not data:
        raise UploadError(400, f"{name}: the upload is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise UploadError(
            413,
            f"{name}: {len(data):,} bytes; images may be at most {limits.max_image_bytes:,} bytes",
        )
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith(ACCEPTED_TYPES):
        raise UploadError(415, f"{name}: content type {ctype!r} is not an image (send image/jpeg)")
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(
            413,
            f"{name}: refused as a decompression bomb ({e}); the limit is "
            f"{limits.max_pixels:,} pixels",
        ) from None
    except DECODE_ERRORS:
        raise UploadError(
            415, f"{name}: not an image Pillow can read (send a JPEG or PNG)"
        ) from None
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"{name}: {width} x {height} = {width * height:,} pixels: refused as a decompression "
            f"bomb; images may have at most {limits.max_pixels:,} pixels",
        )
