"""World to pixels for the scene renderer: points along a street line, polygons clipped to the
part in front of the camera, and line segments (see :class:`sbe.synth.camera.Camera`)."""

from __future__ import annotations

import numpy as np

from sbe.synth.camera import Camera
from sbe.synth.plan import Line


def line_points(line: Line, u: np.ndarray, w: float, v: float = 0.0) -> np.ndarray:
    """World points (N, 3) at positions ``u`` along a line, ``w`` toward the street, ``v`` up."""
    u = np.asarray(u, dtype=np.float64)
    e = line.origin[0] + u * line.tangent[0] + w * line.normal[0]
    n = line.origin[1] + u * line.tangent[1] + w * line.normal[1]
    return np.stack([e, n, np.full_like(u, v)], axis=1)


def _clip_near(cam_pts: np.ndarray, near: float) -> np.ndarray:
    """Clip a polygon in camera coordinates to depth >= ``near`` (Sutherland-Hodgman)."""
    inside = cam_pts[:, 2] >= near
    if inside.all():
        return cam_pts
    out: list[np.ndarray] = []
    n = len(cam_pts)
    for i in range(n):
        a, b = cam_pts[i], cam_pts[(i + 1) % n]
        ina, inb = inside[i], inside[(i + 1) % n]
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.asarray(out).reshape(-1, 3)


def project_polygon(cam: Camera, pts: np.ndarray, near: float = 0.3) -> list[tuple[float, float]]:
    """Project a world polygon (N, 3) to pixels, clipped to the part in front of the camera."""
    cam_pts = (np.asarray(pts, dtype=np.float64) - np.asarray(cam.position)) @ cam.rotation().T
    clipped = _clip_near(cam_pts, near)
    if len(clipped) < 3:
        return []
    hom = clipped @ cam.intrinsics().T
    xy = hom[:, :2] / hom[:, 2:3]
    return list(map(tuple, xy.tolist()))


def project_segments(cam: Camera, a: np.ndarray, b: np.ndarray, near: float = 0.5) -> list[tuple]:
    """Project world segments a[i] -> b[i] (each (N, 3)); segments not fully in front are dropped."""
    rot, k, c = cam.rotation(), cam.intrinsics(), np.asarray(cam.position)
    ca, cb = (a - c) @ rot.T, (b - c) @ rot.T
    ok = (ca[:, 2] >= near) & (cb[:, 2] >= near)
    ha, hb = ca[ok] @ k.T, cb[ok] @ k.T
    pa, pb = ha[:, :2] / ha[:, 2:3], hb[:, :2] / hb[:, 2:3]
    return [
        ((x0, y0), (x1, y1)) for (x0, y0), (x1, y1) in zip(pa.tolist(), pb.tolist(), strict=True)
    ]
