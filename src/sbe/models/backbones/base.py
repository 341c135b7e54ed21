"""The ``Backbone`` interface: uint8 images in, one float vector per image out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from sbe.data.images import resize_center_crop


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes model input.

    Attributes:
        resize: short side after resizing, in pixels.
        crop: side of the centre crop fed to the model, in pixels.
        mean: per-channel mean subtracted, in 0-255 pixel units (RGB).
        std: per-channel divisor, in 0-255 pixel units (RGB).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backbone(ABC):
    """A frozen image encoder.

    Implementations take uint8 RGB batches already resized and cropped to
    ``preprocess.crop`` (shape (B, crop, crop, 3)) and do the normalisation themselves, so the
    same input works for every runtime (torch, ONNX Runtime).
    """

    name: str
    dim: int
    preprocess: Preprocess

    @abstractmethod
    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            images: uint8 array of shape (B, crop, crop, 3), RGB, HWC.

        Returns:
            float32 array of shape (B, dim); not normalised.
        """

    def embed_pil(self, images: list[Image.Image]) -> np.ndarray:
        """Embed decoded PIL images (any size): resize, centre-crop, then :meth:`embed`."""
        p = self.preprocess
        batch = np.stack([resize_center_crop(im.convert("RGB"), p.resize, p.crop) for im in images])
        return self.embed(batch)

    def identity(self) -> dict[str, Any]:
        """What a downstream stage must know to reproduce these embeddings."""
        return {"name": self.name, "dim": self.dim, "preprocess": self.preprocess.to_dict()}
