"""Street-view camera generations: how the capture hardware of a year renders colour and detail.

Street-level imagery of one place spans many years and several camera generations, each with its
own colour response, contrast, sharpness, vignetting and compression. Every building seen in
different years shows that shift, in the same way, which is exactly what a learned embedding has
to see through (and what a raw ImageNet backbone does not).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CameraModel:
    """The look of one camera generation (at full strength).

    Attributes:
        name: short identifier, recorded in the ground truth.
        first_year, last_year: years in service (inclusive).
        gains: per-channel colour response (R, G, B).
        saturation: colour saturation factor.
        gamma: tone curve exponent (> 1 darkens mid-tones).
        contrast: contrast around mid-grey.
        softness: optical/sensor blur as a down-and-up scale factor (1 = sharp).
        vignette: corner darkening, 0-1.
        jpeg_quality: quality of the in-camera compression pass (None = none).
        sharpen: the camera applies an unsharp mask.
    """

    name: str
    first_year: int
    last_year: int
    gains: tuple[float, float, float]
    saturation: float
    gamma: float
    contrast: float
    softness: float
    vignette: float
    jpeg_quality: int | None
    sharpen: bool


CAMERA_MODELS: tuple[CameraModel, ...] = (
    CameraModel("gen1", 2007, 2011, (1.12, 1.0, 0.8), 0.68, 1.15, 0.86, 1.9, 0.9, 40, False),
    CameraModel("gen2", 2012, 2016, (0.93, 1.0, 1.12), 0.95, 1.0, 1.0, 1.25, 0.4, 70, False),
    CameraModel("gen3", 2017, 2030, (1.0, 0.99, 1.02), 1.32, 0.84, 1.2, 1.0, 0.0, None, True),
)


def camera_model_for(year: int) -> CameraModel:
    """The camera generation in service in ``year`` (the closest one outside the range)."""
    for m in CAMERA_MODELS:
        if m.first_year <= year <= m.last_year:
            return m
    return CAMERA_MODELS[0] if year < CAMERA_MODELS[0].first_year else CAMERA_MODELS[-1]
