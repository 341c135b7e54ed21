"""The geometry of one view and its text metadata: the `d` line (17 numbers) and the `t` line.

``d DatasetID TargetID PatchID StreetViewID  target_lat target_lon target_height  nx ny nz
camera_lat camera_lon camera_height  distance heading pitch roll``, then our extension
``t YYYY-MM-DD`` (capture date of the panorama; the upstream format has no date).
Distances are metres; the normal is a horizontal unit vector (x east, y north, z 0) pointing from
the facade toward the street; heading is the bearing camera -> target (0 = north, [0, 360));
pitch = atan2(target height - camera height, horizontal distance); distance is the straight-line
(3-D) camera-to-target distance; roll is always 0.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from sbe.synth.camera import Camera, look_at
from sbe.synth.plan import DatasetPlan, View

D_FIELDS: tuple[str, ...] = (
    "dataset_id", "target_id", "patch_id", "panorama_id",
    "target_lat", "target_lon", "target_height", "normal_x", "normal_y", "normal_z",
    "camera_lat", "camera_lon", "camera_height", "camera_distance", "heading", "pitch", "roll",
)  # fmt: skip


@dataclass(frozen=True)
class ViewGeometry:
    """Where the camera and the target of one view are.

    Attributes:
        target_enu, camera_enu: (east, north, up) metres in the region's local frame.
        target_lat, target_lon, camera_lat, camera_lon: degrees.
        normal: (x east, y north, z) unit vector of the facade.
        distance_m: 3-D camera-to-target distance.
        horizontal_m: horizontal camera-to-target distance.
        heading_deg: bearing camera -> target, [0, 360).
        pitch_deg: elevation of the target seen from the camera.
        view_angle_deg: angle between the facade normal and the direction target -> camera.
    """

    target_enu: np.ndarray
    camera_enu: np.ndarray
    target_lat: float
    target_lon: float
    camera_lat: float
    camera_lon: float
    normal: tuple[float, float, float]
    distance_m: float
    horizontal_m: float
    heading_deg: float
    pitch_deg: float
    view_angle_deg: float

    def camera(self, view: View, image_size: int) -> Camera:
        """The rendering camera (aimed at the target, plus the view's zoom, roll and jitter)."""
        return Camera(
            position=(
                float(self.camera_enu[0]),
                float(self.camera_enu[1]),
                float(self.camera_enu[2]),
            ),
            heading_deg=self.heading_deg,
            pitch_deg=self.pitch_deg,
            fov_deg=view.fov_deg,
            size=image_size,
            roll_deg=view.roll_deg,
            shift=(view.shift[0] * image_size, view.shift[1] * image_size),
        )


def view_geometry(plan: DatasetPlan, view: View) -> ViewGeometry:
    """Compute the geometry of ``view`` from the region plan."""
    t = plan.targets[view.target_id]
    line = plan.lines[t.line]
    target = line.point(t.u, t.v)
    cam = np.asarray(plan.panoramas[view.panorama_id].position, dtype=np.float64)
    heading, pitch, dist, horiz = look_at(cam, target)
    n = np.asarray(line.normal)
    rel = cam[:2] - target[:2]
    ang = math.degrees(math.acos(max(-1.0, min(1.0, float(rel @ n) / max(1e-9, horiz)))))
    tlat, tlon = plan.latlon(float(target[0]), float(target[1]))
    clat, clon = plan.latlon(float(cam[0]), float(cam[1]))
    return ViewGeometry(
        target_enu=target,
        camera_enu=cam,
        target_lat=tlat,
        target_lon=tlon,
        camera_lat=clat,
        camera_lon=clon,
        normal=(float(n[0]), float(n[1]), 0.0),
        distance_m=dist,
        horizontal_m=horiz,
        heading_deg=heading,
        pitch_deg=pitch,
        view_angle_deg=ang,
    )


def _heading_str(h: float) -> str:
    s = f"{h:.4f}"
    return "0.0000" if float(s) >= 360.0 else s


def d_line(plan: DatasetPlan, view: View, geom: ViewGeometry) -> str:
    """The `d` line: ``d`` + the 17 numbers of :data:`D_FIELDS`, space-separated."""
    nx, ny, nz = geom.normal
    vals = [
        str(plan.dataset_id), str(view.target_id), str(view.patch_id), str(view.panorama_id),
        f"{geom.target_lat:.8f}", f"{geom.target_lon:.8f}", f"{geom.target_enu[2]:.3f}",
        f"{nx:.6f}", f"{ny:.6f}", f"{nz:.6f}",
        f"{geom.camera_lat:.8f}", f"{geom.camera_lon:.8f}", f"{geom.camera_enu[2]:.3f}",
        f"{geom.distance_m:.3f}", _heading_str(geom.heading_deg), f"{geom.pitch_deg:.4f}", "0",
    ]  # fmt: skip
    return "d " + " ".join(vals)


def t_line(date: dt.date) -> str:
    """Our extension: ``t YYYY-MM-DD``, the panorama's capture date."""
    return f"t {date.isoformat()}"


def metadata_text(plan: DatasetPlan, view: View, geom: ViewGeometry) -> str:
    """The full `.txt` member: the `d` line, then the `t` line, newline-terminated."""
    date = plan.drives[plan.panoramas[view.panorama_id].drive].conditions.date
    return f"{d_line(plan, view, geom)}\n{t_line(date)}\n"


def parse_d_line(text: str) -> dict[str, float]:
    """Parse the first line of a `.txt` member (strict: exactly ``d`` + 17 numbers).

    Raises:
        ValueError: the line is not a well-formed `d` line.
    """
    first = text.splitlines()[0].split() if text.strip() else []
    if len(first) != 18 or first[0] != "d":
        raise ValueError(f"expected 'd' + 17 numbers, got {len(first)} tokens")
    return {k: float(v) for k, v in zip(D_FIELDS, first[1:], strict=True)}
