"""The ``Backbone`` interface: uint8 images in, one float vector per image out.

Three pieces, each small:

- :class:`Preprocess`: how a decoded image becomes a square uint8 crop (resize rule, crop side,
  resampling filter) and the per-channel normalisation the model expects.
- :class:`Encoder`: a ``torch.nn.Module`` from uint8 NHWC crops to (B, dim) float features with the
  normalisation *inside* the graph, so torch and an exported ONNX graph take the same raw pixels.
- :class:`Backbone`: a ready-to-run encoder on one runtime (torch eager or ONNX Runtime).

:class:`BackboneSpec` describes a backbone without loading its weights (identity, preprocessing,
dimension), so a stage can decide whether its output is current before paying for a model load.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

# re-exported: Preprocess lives with the decoding, which must not need torch (decoder processes)
from sbe.data.preprocess import Preprocess, Resample, ResizeMode  # noqa: F401
from sbe.errors import SbeError
from sbe.models.backbones.pooling import GEM_P


def check_gem_p(p: float) -> float:
    """``p`` as a float if it is a usable GeM exponent (finite, >= 1: 1 is average pooling).

    Raises:
        SbeError: anything else (the message names the ``gem_p`` setting).
    """
    p = float(p)
    if not math.isfinite(p) or p < 1:
        raise SbeError(f"gem_p must be a finite number >= 1 (1 = average pooling), got {p}")
    return p


class Normalize(nn.Module):
    """uint8 NHWC pixels -> float NCHW ``(x - mean) / std`` (mean and std in 0-255 units)."""

    mean: torch.Tensor  # buffers, (1, 3, 1, 1) float32
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images_u8_nhwc: torch.Tensor) -> torch.Tensor:
        x = images_u8_nhwc.permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std


class Encoder(nn.Module):
    """A frozen image encoder with its input normalisation inside.

    ``forward`` takes uint8 (B, crop, crop, 3) RGB and returns float32 (B, dim).
    """

    dim: int
    preprocess: Preprocess
    #: the module is convolutional (torch on CPU runs it faster in channels_last layout)
    convolutional: bool = False
    #: set by the torch runtime when it moved a convolutional encoder to channels_last
    channels_last: bool = False


class BackboneSpec(ABC):
    """A backbone described without loading its weights.

    Attributes:
        name: the spec string that rebuilds it (``efficientnet-lite0``, ``hf:<id or path>``).
        dim: embedding dimension.
        preprocess: the input preparation the model expects.
        pooling: the resolved pooling mode (never ``"auto"``).
        gem_p: the GeM exponent (used, and recorded in the identity, when ``pooling == "gem"``).
    """

    name: str
    dim: int
    preprocess: Preprocess
    pooling: str
    gem_p: float = GEM_P

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON dict that :func:`sbe.models.backbones.load_backbone` rebuilds this backbone from."""

    @abstractmethod
    def weights_fingerprint(self) -> str:
        """A cheap string that changes when the weights change (for caches keyed on weights)."""

    @abstractmethod
    def build(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Encoder:
        """Load the weights and return the encoder in eval mode on ``device``.

        Args:
            device: where the weights go.
            dtype: parameter dtype (float32 on CPU; bfloat16/float16 is worth it on GPU).
        """

    def _identity(self, **extra: Any) -> dict[str, Any]:
        """The identity fields every spec shares (name, dim, preprocess, pooling), then
        ``extra`` in the order given, then ``gem_p`` when pooling is GeM."""
        ident: dict[str, Any] = {
            "name": self.name,
            "dim": self.dim,
            "preprocess": self.preprocess.to_dict(),
            "pooling": self.pooling,
            **extra,
        }
        if self.pooling == "gem":
            ident["gem_p"] = float(self.gem_p)
        return ident

    def num_parameters(self) -> int | None:
        """Parameter count if known without loading (used for batch-size and ONNX decisions)."""
        return None


class Backbone(ABC):
    """A frozen image encoder, ready to run.

    Implementations take uint8 RGB batches already resized and cropped to ``preprocess.crop``
    (shape (B, crop, crop, 3)) and do the normalisation themselves, so the same input works for
    every runtime (torch, ONNX Runtime).

    Attributes:
        name: spec string (``efficientnet-lite0``, ``hf:...``).
        dim: embedding dimension.
        preprocess: what :meth:`Preprocess.apply` must do to an image before :meth:`embed`.
        runtime: ``"torch"`` or ``"onnx"``.
        device: ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
        default_batch_size: a batch size that keeps this runtime busy.
    """

    name: str
    dim: int
    preprocess: Preprocess
    runtime: str = "torch"
    device: str = "cpu"
    default_batch_size: int = 32
    spec: BackboneSpec | None = None
    #: ``fp32``, or ``int8`` (a statically quantised ONNX graph; CPU only)
    precision: str = "fp32"
    #: for ``int8``: the digest of the calibration sample the graph was quantised on
    calibration: str | None = None

    @abstractmethod
    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            images: uint8 array of shape (B, crop, crop, 3), RGB, HWC.

        Returns:
            float32 array of shape (B, dim); not normalised.
        """

    def embed_pil(self, images: list[Image.Image]) -> np.ndarray:
        """Embed decoded PIL images (any size): :meth:`Preprocess.apply`, then :meth:`embed`."""
        batch = np.stack([self.preprocess.apply(im) for im in images])
        return self.embed(batch)

    def identity(self) -> dict[str, Any]:
        """What a downstream stage must know to reproduce these embeddings.

        ``load_backbone(identity)`` rebuilds the same backbone (on any runtime or device).
        """
        if self.spec is not None:
            return self.spec.identity()
        return {"name": self.name, "dim": self.dim, "preprocess": self.preprocess.to_dict()}
