"""The difficulty dial: one number in [0, 1] mapped to every knob of the world and the camera.

Higher difficulty means more near-duplicate neighbour buildings (a terrace built from one plan),
more homogeneous neighbourhoods, heavier occlusion and stronger nuisance variation (viewpoint,
zoom, weather, exposure). Identity always stays in the facade itself; only its visibility changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


@dataclass(frozen=True)
class Knobs:
    """Everything the difficulty dial controls.

    Attributes:
        duplicate_prob: probability that a building copies a nearby building's plan (then mutates
            a few details).
        duplicate_mutations: mean number of details changed in such a copy.
        theme_prob: probability that a building's palette comes from its neighbourhood's theme
            instead of the whole city's.
        tree_density: multiplier on the city's street-tree density.
        cars_per_10m: parked cars per 10 m of kerb.
        pedestrians_per_view: mean number of pedestrians in front of the facade.
        max_view_angle_deg: largest angle between a camera ray to the target and the facade normal.
        fov_range_deg: horizontal field of view range (zoom nuisance), degrees.
        weather_severity: multiplier on the odds of rain, fog and snow.
        exposure_range: +- relative exposure change.
        colour_cast: +- per-channel white-balance gain.
        blur_prob: probability of a soft (defocused / motion-blurred) capture.
        crop_jitter: +- principal-point shift, fraction of the image side.
        camera_strength: how strongly the camera generation of a capture year shows (0 = all
            cameras alike, 1 = the full :data:`sbe.synth.capture.CAMERA_MODELS` looks).
    """

    duplicate_prob: float
    duplicate_mutations: float
    theme_prob: float
    tree_density: float
    cars_per_10m: float
    pedestrians_per_view: float
    max_view_angle_deg: float
    fov_range_deg: tuple[float, float]
    weather_severity: float
    exposure_range: float
    colour_cast: float
    blur_prob: float
    crop_jitter: float
    camera_strength: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: every scalar knob's value at difficulty 0 and at difficulty 1 (linear in between)
KNOB_RANGES: dict[str, tuple[float, float]] = {
    "duplicate_prob": (0.02, 0.8),
    "duplicate_mutations": (4.0, 1.2),
    "theme_prob": (0.1, 0.95),
    "tree_density": (0.4, 1.7),
    "cars_per_10m": (0.15, 1.1),
    "pedestrians_per_view": (0.1, 3.0),
    "max_view_angle_deg": (30.0, 65.0),
    "weather_severity": (0.4, 2.2),
    "exposure_range": (0.1, 0.45),
    "colour_cast": (0.03, 0.16),
    "blur_prob": (0.05, 0.5),
    "crop_jitter": (0.0, 0.08),
    "camera_strength": (0.3, 1.6),
}


def knobs_for(difficulty: float) -> Knobs:
    """The knob values at ``difficulty`` in [0, 1] (0.5 is the calibrated default)."""
    d = min(1.0, max(0.0, float(difficulty)))
    scalars: dict[str, Any] = {k: _lerp(lo, hi, d) for k, (lo, hi) in KNOB_RANGES.items()}
    # the zoom range widens at both ends: narrower and wider fields of view
    return Knobs(fov_range_deg=(_lerp(58.0, 38.0, d), _lerp(66.0, 88.0, d)), **scalars)
