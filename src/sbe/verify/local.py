"""Local features (DISK) and their matching (LightGlue), with an optional RANSAC check.

Two photos of the same building share many local features that agree on one epipolar geometry;
two photos of different buildings share few. :class:`LocalMatcher` turns that into a number, the
*verified match count* of a pair, used by :mod:`sbe.verify.rerank` to re-order a global ranking.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
from PIL import Image

from sbe.data.images import ImageDecodeError, decode_opened, open_image
from sbe.errors import SbeError
from sbe.settings import Record
from sbe.verify.weights import load_disk, load_lightglue

#: an image as bytes (encoded), a PIL image, or uint8 HWC RGB.
ImageInput = bytes | Image.Image | np.ndarray
RansacMode = Literal["none", "fundamental", "homography"]
DESC_DIM = 128
#: fewest matches a geometric model is fitted to (8-point fundamental; below it, no inliers).
MIN_RANSAC = 8
#: images with a shorter side (after scaling) give no features: DISK's U-Net needs room for its
#: downsampling (a 6 x 5 px image crashes its instance norm), and so few pixels verify nothing.
MIN_SIDE = 32


@dataclass(frozen=True)
class LocalSettings(Record):
    """How local features are extracted and matched.

    Args:
        max_keypoints: keypoints kept per image (strongest DISK detections).
        max_side: the image is scaled so its longer side is at most this (px) before extraction.
        ransac: geometric check of the matches: ``fundamental`` (any 3D scene; the default),
            ``homography`` (planar facades) or ``none`` (raw LightGlue matches).
        ransac_px: RANSAC inlier threshold, px in the scaled image.
        filter_threshold: LightGlue match-confidence threshold.
        threads: torch CPU threads while extracting/matching (None = leave as is).
    """

    # measured on landmarks-mini: the best P@1 (24/26) at 0.77 s per query (docs/verify.md)
    max_keypoints: int = 256
    max_side: int = 320
    ransac: RansacMode = "fundamental"
    ransac_px: float = 3.0
    filter_threshold: float = 0.1
    threads: int | None = None


@dataclass
class LocalFeatures:
    """DISK features of one image.

    Attributes:
        keypoints: float32 (N, 2), x, y in px of the scaled image.
        descriptors: float16 (N, 128), L2-normalised.
        image_size: (width, height) of the scaled image, px.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.keypoints)


def to_rgb_array(image: ImageInput, max_side: int) -> np.ndarray:
    """Decode/convert an image to uint8 (H, W, 3) RGB with its longer side at most ``max_side``.

    Raises:
        SbeError: bytes that do not decode.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            # Reduced-scale JPEG decoding down to (a little above) the size we need: the short
            # side that gives a long side of max_side.
            opened = open_image(bytes(image))
            w0, h0 = opened.size
            img = decode_opened(opened, max(1, math.ceil(max_side * min(w0, h0) / max(w0, h0))))
        except ImageDecodeError as e:
            raise SbeError(f"cannot decode image bytes for verification: {e}") from None
    elif isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise SbeError(f"expected uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
        img = Image.fromarray(arr)
    w, h = img.size
    scale = max_side / max(w, h)
    if scale < 1:
        img = img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
        )
    return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)


class LocalMatcher:
    """DISK extractor + LightGlue matcher (+ RANSAC), offline weights, CPU or GPU.

    Args:
        settings: :class:`LocalSettings`.
        device: torch device.
    """

    def __init__(self, settings: LocalSettings | None = None, device: str | torch.device = "cpu"):
        self.settings = settings or LocalSettings()
        self.device = torch.device(device)
        self.disk = load_disk(self.device)
        # Early stopping / pruning stay at kornia's defaults (they only skip work on easy pairs).
        self.lightglue = load_lightglue(
            self.device, filter_threshold=self.settings.filter_threshold
        )

    def _threads(self) -> _Threads:
        return _Threads(self.settings.threads)

    @torch.inference_mode()
    def extract(self, image: ImageInput) -> LocalFeatures:
        """DISK keypoints and descriptors of one image (see :class:`LocalFeatures`); none for an
        image whose shorter side is under :data:`MIN_SIDE` px once scaled."""
        rgb = to_rgb_array(image, self.settings.max_side)
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_SIDE:
            return LocalFeatures(
                keypoints=np.zeros((0, 2), np.float32),
                descriptors=np.zeros((0, DESC_DIM), np.float16),
                image_size=(w, h),
            )
        x = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        with self._threads():
            feats = self.disk(x, n=self.settings.max_keypoints, pad_if_not_divisible=True)[0]
        return LocalFeatures(
            keypoints=feats.keypoints.float().cpu().numpy().astype(np.float32),
            descriptors=feats.descriptors.cpu().numpy().astype(np.float16),
            image_size=(w, h),
        )

    @torch.inference_mode()
    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        """LightGlue matches of two feature sets.

        Returns:
            int64 (M, 2): index into ``a`` and into ``b`` of each match.
        """
        if len(a) == 0 or len(b) == 0:
            return np.zeros((0, 2), dtype=np.int64)

        def side(f: LocalFeatures) -> dict[str, torch.Tensor]:
            return {
                "keypoints": torch.from_numpy(f.keypoints)[None].to(self.device),
                "descriptors": torch.from_numpy(f.descriptors.astype(np.float32))[None].to(
                    self.device
                ),
                "image_size": torch.tensor([f.image_size], dtype=torch.float32, device=self.device),
            }

        with self._threads():
            out = self.lightglue({"image0": side(a), "image1": side(b)})
        return out["matches"][0].cpu().numpy().astype(np.int64)

    def verified_matches(self, a: LocalFeatures, b: LocalFeatures) -> int:
        """Matches of ``a`` and ``b`` that survive the RANSAC check of the settings."""
        m = self.match(a, b)
        return count_inliers(
            a.keypoints[m[:, 0]],
            b.keypoints[m[:, 1]],
            self.settings.ransac,
            self.settings.ransac_px,
        )


def count_inliers(p0: np.ndarray, p1: np.ndarray, mode: RansacMode, px: float = 3.0) -> int:
    """Matches consistent with one fundamental matrix / homography (OpenCV MAGSAC++).

    Args:
        p0, p1: float32 (M, 2) matched points, px.
        mode: ``none`` returns M; ``fundamental``/``homography`` count RANSAC inliers
            (0 when fewer than 8 matches: too few to tell a geometry from chance).
        px: inlier threshold, px.

    Returns:
        The number of verified matches.
    """
    n = len(p0)
    if mode == "none":
        return n
    if n < MIN_RANSAC:
        return 0
    p0 = np.ascontiguousarray(p0, dtype=np.float64)
    p1 = np.ascontiguousarray(p1, dtype=np.float64)
    # Seeded so the same pair always gives the same count.
    if mode not in ("fundamental", "homography"):
        raise ValueError(f"unknown RANSAC mode {mode!r}; choose none, fundamental or homography")
    cv2.setRNGSeed(0)
    mask: Any
    try:
        if mode == "fundamental":
            _, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, px, 0.999, 10000)
        else:
            _, mask = _homography(p0, p1, px)
    except cv2.error:
        # A degenerate configuration (e.g. a photo matched with itself: every point maps onto
        # itself and no fundamental matrix is defined) trips OpenCV's assertion; a homography
        # describes it, and when that fails too, nothing verifies.
        try:
            _, mask = _homography(p0, p1, px)
        except cv2.error:
            return 0
    return 0 if mask is None else int(mask.sum())


def _homography(p0: np.ndarray, p1: np.ndarray, px: float) -> tuple[Any, Any]:
    """OpenCV MAGSAC++ homography: ``(H, inlier mask)``."""
    return cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, px, maxIters=10000, confidence=0.999)


class _Threads:
    """Temporarily set torch's CPU thread count."""

    def __init__(self, n: int | None):
        self.n = n
        self.old = torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n:
            torch.set_num_threads(self.old)


def noise_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """A uint8 (size, size, 3) image of uniform noise (a "different scene" for tests)."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
