"""Pinhole camera geometry: projection, plane homographies, and the `d` line's angles.

World frame: a local east-north-up frame in metres around a map region's centre. A camera looks
along its heading (degrees clockwise from north) tilted by its pitch (degrees, positive up); images
are square, ``size`` pixels, with a horizontal field of view ``fov_deg``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


def bearing_deg(east_m: float, north_m: float) -> float:
    """Bearing of the vector (east, north), degrees clockwise from north in [0, 360)."""
    b = math.degrees(math.atan2(east_m, north_m)) % 360.0
    return 0.0 if b >= 360.0 else b


@dataclass(frozen=True)
class Camera:
    """A pinhole camera.

    Attributes:
        position: (east, north, up) in metres, shape (3,).
        heading_deg: viewing bearing, degrees clockwise from north.
        pitch_deg: tilt, degrees, positive up.
        fov_deg: horizontal field of view, degrees.
        size: image side, pixels.
        roll_deg: rotation about the viewing axis (visual nuisance only; the `d` line says 0).
        shift: principal point offset (dx, dy) in pixels (crop jitter).
    """

    position: tuple[float, float, float]
    heading_deg: float
    pitch_deg: float
    fov_deg: float
    size: int
    roll_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    @functools.cached_property
    def focal_px(self) -> float:
        return 0.5 * self.size / math.tan(math.radians(self.fov_deg) / 2.0)

    @functools.cached_property
    def _rot(self) -> np.ndarray:
        h, p, r = (math.radians(a) for a in (self.heading_deg, self.pitch_deg, self.roll_deg))
        sh, ch, sp, cp = math.sin(h), math.cos(h), math.sin(p), math.cos(p)
        fwd = np.array([sh * cp, ch * cp, sp])
        right = np.array([ch, -sh, 0.0])
        up = np.array([-sh * sp, -ch * sp, cp])  # right x forward
        if r:
            right, up = (
                math.cos(r) * right + math.sin(r) * up,
                -math.sin(r) * right + math.cos(r) * up,
            )
        return np.stack([right, up, fwd])

    def rotation(self) -> np.ndarray:
        """World-to-camera rotation, shape (3, 3): rows are the right, up and forward axes."""
        return self._rot

    @functools.cached_property
    def _k(self) -> np.ndarray:
        f = self.focal_px
        cx = self.size / 2.0 + self.shift[0]
        cy = self.size / 2.0 + self.shift[1]
        return np.array([[f, 0.0, cx], [0.0, -f, cy], [0.0, 0.0, 1.0]])

    def intrinsics(self) -> np.ndarray:
        """Camera coordinates (right, up, forward) to homogeneous pixels (x right, y down)."""
        return self._k

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points.

        Args:
            points: (N, 3) east/north/up in metres.

        Returns:
            ``(pixels (N, 2), depth (N,))``; depth <= 0 means behind the camera.
        """
        cam = (np.asarray(points, dtype=np.float64) - np.asarray(self.position)) @ self.rotation().T
        hom = cam @ self.intrinsics().T
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            pix = hom[:, :2] / hom[:, 2:3]
        return pix, depth

    def plane_homography(
        self, origin: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray
    ) -> np.ndarray:
        """Homography from plane coordinates (u, v, 1) in metres to homogeneous pixels.

        The plane is ``origin + u * axis_u + v * axis_v`` (world metres).
        """
        rot = self.rotation()
        m = np.stack(
            [rot @ axis_u, rot @ axis_v, rot @ (np.asarray(origin) - np.asarray(self.position))],
            axis=1,
        )
        return self.intrinsics() @ m

    def ray(self, x: float, y: float) -> np.ndarray:
        """World direction (unnormalised) of the ray through pixel (x, y)."""
        k_inv = np.linalg.inv(self.intrinsics())
        return self.rotation().T @ (k_inv @ np.array([x, y, 1.0]))


def texture_to_plane(ppm: float, u_left: float, v_top: float) -> np.ndarray:
    """Affine map from texture pixels (x right, y down) to plane metres (u right, v up)."""
    return np.array([[1.0 / ppm, 0.0, u_left], [0.0, -1.0 / ppm, v_top], [0.0, 0.0, 1.0]])


def pil_perspective_coeffs(tex_to_img: np.ndarray, offset: tuple[int, int] = (0, 0)) -> tuple:
    """Coefficients for ``PIL.Image.transform(..., PERSPECTIVE)``.

    PIL maps each *output* pixel to an input pixel, so this inverts ``tex_to_img`` (texture pixel
    -> output pixel). ``offset`` is the top-left corner of the output box inside the full image
    (to render only into a sub-box).
    """
    inv = np.linalg.inv(tex_to_img)
    if offset != (0, 0):
        inv = inv @ np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]], [0.0, 0.0, 1.0]])
    inv = inv / inv[2, 2]
    return tuple(float(c) for c in inv.reshape(-1)[:8])


def look_at(camera_enu: np.ndarray, target_enu: np.ndarray) -> tuple[float, float, float, float]:
    """Heading, pitch and distances from a camera to a target.

    Args:
        camera_enu: (east, north, up) metres.
        target_enu: (east, north, up) metres.

    Returns:
        ``(heading_deg in [0, 360), pitch_deg, distance_3d_m, distance_horizontal_m)``.
    """
    d = np.asarray(target_enu, dtype=np.float64) - np.asarray(camera_enu, dtype=np.float64)
    horiz = math.hypot(d[0], d[1])
    return (
        bearing_deg(d[0], d[1]),
        math.degrees(math.atan2(d[2], horiz)),
        float(np.linalg.norm(d)),
        horiz,
    )
