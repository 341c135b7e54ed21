"""How a decoded image becomes model input, and decoding a batch of encoded images.

Deliberately free of torch: decoder worker processes import only this (and Pillow, numpy).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from sbe.data.images import ImageDecodeError, ImageModeError, decode_rgb
from sbe.modelcode.processing_sbe import RESAMPLE_FILTERS, resize_crop

ResizeMode = Literal["short_side", "squash"]
Resample = Literal["nearest", "bilinear", "bicubic", "lanczos"]

_PIL_FILTERS = RESAMPLE_FILTERS


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes model input.

    Attributes:
        resize: ``short_side``: the short side after resizing, in pixels (aspect kept), then a
            centre crop of ``crop``; ``squash``: both sides are resized to ``resize`` (aspect not
            kept, as Hugging Face processors with ``size={"height", "width"}`` do), then the
            centre crop (a no-op when ``crop == resize``).
        crop: side of the square crop fed to the model, in pixels.
        mean: per-channel mean subtracted, in 0-255 pixel units (RGB).
        std: per-channel divisor, in 0-255 pixel units (RGB).
        resize_mode: ``"short_side"`` or ``"squash"`` (see ``resize``).
        resample: Pillow filter used for the resize.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: ResizeMode = "short_side"
    resample: Resample = "bilinear"

    def __post_init__(self) -> None:
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")
        if self.resize_mode not in ("short_side", "squash"):
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}")
        if self.resample not in _PIL_FILTERS:
            raise ValueError(f"unknown resample filter {self.resample!r}")
        # JSON round trips turn tuples into lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def decode_side(self) -> int:
        """The smallest image side the decoder must deliver (for JPEG draft-mode decoding)."""
        return self.resize

    def apply(self, img: Image.Image) -> np.ndarray:
        """Resize and centre-crop one decoded image.

        Args:
            img: any size, any mode (converted to RGB by
                :func:`~sbe.modelcode.processing_sbe.to_rgb`).

        Returns:
            uint8 array of shape (crop, crop, 3), RGB, HWC.
        """
        return resize_crop(img, self.resize, self.crop, self.resize_mode, self.resample)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            resize=int(d["resize"]),
            crop=int(d["crop"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            resize_mode=d.get("resize_mode", "short_side"),
            resample=d.get("resample", "bilinear"),
        )


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _clean(message: str) -> str:
    """Drop object addresses (``<... at 0x7f..>``) so skip records are identical across runs."""
    return _ADDRESS.sub("", message)


@dataclass(frozen=True)
class Failure:
    """One image that produced no embedding.

    Attributes:
        index: its position in the input sequence.
        reason: ``unreadable_bytes``, ``corrupt_jpeg``, ``unsupported_mode`` (decoded, but the
            pixels have no meaningful RGB conversion, e.g. a float image outside 0..1) or
            ``non_finite_embedding``.
        detail: a short human-readable explanation.
    """

    index: int
    reason: str
    detail: str


def decode_image(pp: Preprocess, data: bytes) -> np.ndarray:
    """Decode one encoded image into model input: the one per-image decode every engine path uses.

    Args:
        pp: the preprocessing (JPEGs decode in draft mode at ``pp.decode_side``).
        data: the encoded image.

    Returns:
        uint8 (crop, crop, 3), RGB.

    Raises:
        ImageDecodeError: the bytes do not decode (:class:`ImageModeError` when they decode to
            pixels without a meaningful RGB conversion).
    """
    return pp.apply(decode_rgb(data, min_side=pp.decode_side))


def decode_batch(
    pp: Preprocess, read: Callable[[int], bytes], start: int, stop: int
) -> tuple[np.ndarray, list[int], list[Failure]]:
    """Read and decode images ``start .. stop-1`` into one uint8 batch (picklable: runs in
    worker processes too).

    Returns:
        (uint8 (k, crop, crop, 3) batch of the k decodable images, their indices, failures).
    """
    batch = np.empty((stop - start, pp.crop, pp.crop, 3), dtype=np.uint8)
    ok: list[int] = []
    failures: list[Failure] = []
    for i in range(start, stop):
        try:
            data = read(i)
        except OSError as e:
            failures.append(Failure(i, "unreadable_bytes", _clean(f"{type(e).__name__}: {e}")))
            continue
        try:
            batch[len(ok)] = decode_image(pp, data)
        except ImageModeError as e:
            failures.append(Failure(i, "unsupported_mode", _clean(str(e))))
            continue
        except ImageDecodeError as e:
            failures.append(Failure(i, "corrupt_jpeg", _clean(str(e))))
            continue
        ok.append(i)
    return batch[: len(ok)], ok, failures
