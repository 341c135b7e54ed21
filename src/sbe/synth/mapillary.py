"""Mapillary-style metadata for the views of a synthetic world (what an API v4 download gives).

One GeoJSON ``FeatureCollection`` (``mapillary.geojson``), one feature per view: ``id`` (the image
id as digits, the ingest table's ``image_id``), ``geometry`` (Point, lon/lat from a noisy "GPS"),
``compass_angle`` (degrees clockwise from north, noisy), ``captured_at`` (ms since the epoch),
``sequence`` (one per drive), ``camera_type`` and ``is_pano``. The noise is drawn per panorama
(every crop of one capture shares its GPS fix and compass error): Gaussian, ``gps_noise_m``
standard deviation on each of east and north, ``compass_noise_deg`` on the angle. Seeded: the same
world and settings give the same file.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbe.sphere import offset_latlon
from sbe.storage import atomic_path
from sbe.storage.schemas import make_uid
from sbe.synth.metadata import view_geometry
from sbe.synth.world import WorldPlan

MAPILLARY_NAME = "mapillary.geojson"


@dataclass(frozen=True)
class MetadataNoise:
    """Sensor noise of the simulated capture.

    Attributes:
        gps_noise_m: standard deviation of the position error, metres, per axis (east, north);
            1.5 gives a median horizontal error of 1.8 m, about what Mapillary's
            structure-from-motion ``computed_geometry`` achieves (raw phone GPS is worse).
        compass_noise_deg: standard deviation of the compass error, degrees.
    """

    gps_noise_m: float = 1.5
    compass_noise_deg: float = 3.0


def view_features(world: WorldPlan, noise: MetadataNoise, seed: int) -> list[dict[str, Any]]:
    """The GeoJSON features of every view of ``world`` (see the module docstring).

    Returns:
        Features in (dataset, patch) order; ``properties`` also carry the true position and
        heading under ``true_*`` for scoring (a real download has no such fields).
    """
    feats: list[dict[str, Any]] = []
    for plan in world.datasets:
        rng = np.random.default_rng([seed, 5393, plan.dataset_id])
        panos = sorted(plan.panoramas)
        err = {
            p: (
                *rng.normal(0.0, noise.gps_noise_m, 2),
                float(rng.normal(0.0, noise.compass_noise_deg)),
            )
            for p in panos
        }
        for view in plan.views:
            g = view_geometry(plan, view)
            de, dn, dh = err[view.panorama_id]
            lat, lon = offset_latlon(
                np.asarray(plan.lat0),
                np.asarray(plan.lon0),
                np.asarray(g.camera_enu[0] + de),
                np.asarray(g.camera_enu[1] + dn),
            )
            pano = plan.panoramas[view.panorama_id]
            drive = plan.drives[pano.drive]
            when = dt.datetime.combine(drive.conditions.date, dt.time(10, 0), dt.UTC)
            ms = int(when.timestamp() * 1000) + 2000 * view.panorama_id
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Point",
                        "coordinates": [round(float(lon), 8), round(float(lat), 8)],
                    },
                    "properties": {
                        "id": str(make_uid(plan.dataset_id, view.patch_id)),
                        "compass_angle": round(float((g.heading_deg + dh) % 360.0), 3),
                        "captured_at": ms,
                        "sequence": f"synth{plan.dataset_id:04d}d{drive.id:03d}",
                        "camera_type": "perspective",
                        "is_pano": False,
                        "true_lat": round(g.camera_lat, 8),
                        "true_lon": round(g.camera_lon, 8),
                        "true_compass_angle": round(g.heading_deg, 3),
                    },
                }
            )
    return feats


def write_mapillary(world: WorldPlan, noise: MetadataNoise, seed: int, path: str | Path) -> int:
    """Write :func:`view_features` as one FeatureCollection, atomically; returns the count."""
    feats = view_features(world, noise, seed)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return len(feats)
