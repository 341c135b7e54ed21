"""How a published sbe model turns an image into model input: decode, orient, convert, resize, crop.

This file is copied verbatim into every published model folder next to ``modeling_sbe.py`` (which
imports it) and is also the one implementation the ``sbe`` library uses, so a published model and
the training pipeline preprocess every image identically. It needs only numpy and Pillow (no
torch): decoder worker processes import it.

Steps, in order:

1. Decode (JPEGs in draft mode: libjpeg's reduced-scale DCT decode at the smallest 1/2, 1/4 or
   1/8 scale that keeps both sides >= the resize target, so a 4000 px photo is never decoded at
   full size).
2. Orient: apply the EXIF ``Orientation`` tag (a phone photo stored sideways is turned upright),
   after the draft decode so the speed-up is kept.
3. Convert to 8-bit RGB, whatever the mode (:func:`to_rgb`): 16-bit and float images are scaled
   (never clipped), transparent images are composited over white, CMYK/YCbCr/LAB/HSV go through
   their colour conversions. An image that cannot be converted raises :class:`ImageDecodeError`.
4. Resize (short side to ``resize``, aspect kept; or ``squash`` both sides) and centre-crop.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

RESAMPLE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE_MODES = ("short_side", "squash")

#: EXIF tag number of ``Orientation``
ORIENTATION_TAG = 0x0112
#: what transparent pixels are composited over
BACKGROUND = (255, 255, 255)
#: 16-bit integer modes (values 0..65535)
_UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: modes that carry an alpha channel (``La`` and ``RGBa`` are premultiplied)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: tolerance of float images' 0..1 range (float rounding of exported files)
_FLOAT_SLACK = 1e-3


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image (corrupt, truncated, not an image, unconvertible)."""


class ImageModeError(ImageDecodeError):
    """The pixels decoded, but their mode has no meaningful 8-bit RGB conversion."""


def draft(img: Image.Image, min_side: int | None) -> None:
    """Ask a not-yet-loaded JPEG for the smallest DCT scale whose sides stay >= ``min_side``.

    Args:
        img: an opened, not yet loaded image (other formats are left alone).
        min_side: the smallest side, in pixels, the caller needs; ``None`` = full size.
    """
    if min_side is not None and img.format == "JPEG":
        w, h = img.size
        # draft() keeps both sides >= the requested size; ask with the aspect ratio preserved.
        scale = min_side / min(w, h)
        img.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))


def orient(img: Image.Image) -> Image.Image:
    """Turn a loaded image upright as its EXIF ``Orientation`` tag says.

    Returns:
        ``img`` itself when it has no orientation to apply (no copy), else a transposed copy
        whose EXIF no longer carries the tag (so orienting twice is harmless).
    """
    try:
        orientation = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block must not lose the picture; it is just not rotated
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


@lru_cache(maxsize=1)
def _lab_to_srgb() -> Any:
    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )


def _gray_u8(values: np.ndarray) -> Image.Image:
    """uint8 (H, W) gray -> RGB image."""
    return Image.fromarray(np.ascontiguousarray(np.repeat(values[:, :, None], 3, axis=2)), "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit RGB.

    - ``I;16*`` (16-bit) and ``I`` (32-bit integer, as 16-bit PNG/TIFF decode): values 0..65535
      scaled to 0..255 (``round(v / 257)``); ``I`` values outside 0..65535 are an error.
    - ``F`` (float): intensities 0..1 scaled to 0..255; values outside 0..1 or non-finite are an
      error (there is no agreed range to map them from).
    - alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, and ``P``/``L``/``RGB``
      with a ``transparency`` key): composited over white.
    - ``LAB``: through an ICC LAB -> sRGB transform (Pillow's plain convert copies the channels).
    - everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX``): Pillow's
      conversion (JPEG CMYK arrives already un-inverted from Pillow's Adobe handling).

    Returns:
        An RGB image (``img`` itself when it already is one).

    Raises:
        ImageDecodeError: the mode cannot be converted meaningfully.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    try:
        if mode in _UINT16_MODES or mode == "I":
            a = np.asarray(img)
            if mode == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
                raise ImageModeError(
                    f"32-bit integer image with values {int(a.min())}..{int(a.max())} "
                    "outside the 16-bit range 0..65535"
                )
            a = (a.astype(np.uint32) + 128) // 257
            return _gray_u8(a.astype(np.uint8))
        if mode == "F":
            a = np.asarray(img, dtype=np.float32)
            if a.size and not (
                np.isfinite(a).all() and a.min() >= -_FLOAT_SLACK and a.max() <= 1 + _FLOAT_SLACK
            ):
                raise ImageModeError("float image with values outside 0..1 (or not finite)")
            return _gray_u8(np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8))
        if mode == "LAB":
            lab = ImageCms.applyTransform(img, _lab_to_srgb())
            if lab is None:  # only when transforming in place, which this does not ask for
                raise ImageModeError("LAB image could not be converted to RGB")
            return lab
        if mode in _ALPHA_MODES or "transparency" in img.info:
            if mode == "La":
                img = img.convert("RGBa")
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")
    except ImageDecodeError:
        raise
    except (ValueError, OSError) as e:  # Pillow: "conversion from X to RGB not supported"
        raise ImageModeError(f"cannot convert a {mode!r} image to RGB: {e}") from None


def load_rgb(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """Decode an opened image (draft first), orient it, convert it to RGB.

    Args:
        img: from ``Image.open`` (headers parsed, pixels not yet decoded), or already loaded.
        min_side: smallest side the caller needs, for JPEG draft decoding; ``None`` = full size.

    Returns:
        An upright RGB image.

    Raises:
        ImageDecodeError: the mode cannot be converted. Pillow's own decode errors (``OSError``
        and friends on corrupt data) propagate; callers wrap them.
    """
    draft(img, min_side)
    img.load()
    return to_rgb(orient(img))


def open_image(
    source: str | os.PathLike[str] | bytes | Image.Image, min_side: int | None = None
) -> Image.Image:
    """Open an image file, encoded bytes or a PIL image as an upright RGB image.

    JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >=
    ``min_side``, as the training pipeline decodes them. A PIL image is oriented and converted
    (never modified in place).

    Raises:
        ImageDecodeError: see :func:`load_rgb`; Pillow's errors on corrupt data propagate.
    """
    if isinstance(source, Image.Image):
        return to_rgb(orient(source))
    if isinstance(source, bytes | bytearray | memoryview):
        return load_rgb(Image.open(io.BytesIO(bytes(source))), min_side)
    with Image.open(source) as f:
        img = load_rgb(f, min_side)
        # closing the file also drops the pixels of the image it opened: keep our own copy
        return img.copy() if img is f else img


def resize_crop(
    img: Image.Image,
    resize: int,
    crop: int,
    resize_mode: str = "short_side",
    resample: str = "bilinear",
) -> np.ndarray:
    """Resize and centre-crop one image.

    Args:
        img: any size, any mode (converted by :func:`to_rgb`).
        resize: ``short_side``: the short side after resizing, in pixels (aspect kept);
            ``squash``: both sides are resized to ``resize``.
        crop: side of the square centre crop, in pixels (<= ``resize``).
        resize_mode: ``short_side`` or ``squash``.
        resample: Pillow filter name (``nearest``, ``bilinear``, ``bicubic``, ``lanczos``).

    Returns:
        uint8 array (crop, crop, 3), RGB, HWC.
    """
    img = to_rgb(img)
    w, h = img.size
    if resize_mode == "squash":
        nw = nh = resize
    else:
        scale = resize / min(w, h)
        nw, nh = max(resize, round(w * scale)), max(resize, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), RESAMPLE_FILTERS[resample])
    left, top = (nw - crop) // 2, (nh - crop) // 2
    if (nw, nh) != (crop, crop):
        img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8)


def apply_preprocess(img: Image.Image, prep: dict[str, Any]) -> np.ndarray:
    """Resize and centre-crop one image as a backbone identity's ``preprocess`` dict says.

    Args:
        img: any size, any mode.
        prep: ``resize``, ``crop`` and optionally ``resize_mode`` (default ``short_side``) and
            ``resample`` (default ``bilinear``).

    Returns:
        uint8 array (crop, crop, 3), RGB.
    """
    return resize_crop(
        img,
        int(prep["resize"]),
        int(prep["crop"]),
        prep.get("resize_mode", "short_side"),
        prep.get("resample", "bilinear"),
    )
