"""JPEG decoding at the size a consumer needs (Pillow draft mode), fingerprints, model-input crops.

Draft mode asks libjpeg for a reduced-scale DCT decode (1/2, 1/4, 1/8), so a 640x640 crop needed
at 224 px or 16 px is never decoded at full resolution. The decode maths (draft, EXIF orientation,
any-mode -> RGB conversion, resize and crop) lives in
:mod:`sbe.modelcode.processing_sbe`, the copy shipped with published models, so both
decode identically; this module adds the strict Pillow settings and the error wrapping.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile

from sbe.modelcode.processing_sbe import (  # noqa: F401  (re-exported)
    ImageDecodeError,
    ImageModeError,
    load_rgb,
    orient,
    resize_crop,
    to_rgb,
)
from sbe.storage.schemas import FINGERPRINT_SIDE

# A truncated JPEG must fail loudly, never decode as a half-grey picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Refuse decompression bombs outright instead of warning.
warnings.simplefilter("error", Image.DecompressionBombWarning)


#: what Pillow raises on bytes that are not a decodable image
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def open_image(data: bytes) -> Image.Image:
    """Parse an image's headers (no pixel data yet): format and original size are known.

    Raises:
        ImageDecodeError: the bytes are not an image Pillow recognises.
    """
    try:
        return Image.open(io.BytesIO(data))
    except DECODE_ERRORS as e:
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None


def decode_opened(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """Decode an image from :func:`open_image`: at the smallest JPEG scale >= ``min_side``, turned
    upright by its EXIF orientation, converted to RGB from any mode
    (:func:`sbe.modelcode.processing_sbe.load_rgb`).

    Raises:
        ImageDecodeError: the pixel data does not decode (corrupt, truncated);
            :class:`ImageModeError` (a subclass) when it decodes to pixels that have no
            meaningful RGB conversion.
    """
    try:
        return load_rgb(img, min_side)
    except ImageDecodeError:
        raise
    except DECODE_ERRORS as e:
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None


def decode_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode image bytes to RGB, at the smallest JPEG scale whose sides stay >= ``min_side``.

    Args:
        data: encoded image (JPEG gets reduced-scale decoding; other formats decode fully).
        min_side: smallest side length, in pixels, the caller needs; ``None`` = full size.

    Returns:
        A loaded RGB ``PIL.Image``.

    Raises:
        ImageDecodeError: the bytes do not decode.
    """
    return decode_opened(open_image(data), min_side)


def fingerprint(img: Image.Image, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    """The visual fingerprint: a ``side`` x ``side`` RGB thumbnail, uint8, flattened HWC.

    Returns:
        Array of shape (side * side * 3,), dtype uint8.
    """
    thumb = img.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(thumb, dtype=np.uint8).reshape(-1)


def resize_center_crop(img: Image.Image, resize: int, crop: int) -> np.ndarray:
    """Resize the short side to ``resize`` px (bilinear, antialiased), then centre-crop ``crop``.

    Returns:
        Array of shape (crop, crop, 3), dtype uint8 (HWC).
    """
    return resize_crop(img, resize, crop)
