"""Reading GeoJSON FeatureCollections (camera metadata, building footprints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sbe.errors import SbeError


def read_feature_collection(path: Path, what: str = "") -> dict[str, Any]:
    """The parsed FeatureCollection of a GeoJSON file.

    Args:
        path: the ``.geojson``/``.json`` file.
        what: what the features are, for the error message (``"images"`` -> "... of images").

    Raises:
        SbeError: unreadable, not JSON, or not a FeatureCollection (one line naming the file).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SbeError(f"{path}: not a readable GeoJSON file ({e})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        of = f" of {what}" if what else ""
        raise SbeError(f"{path}: expected a GeoJSON FeatureCollection{of}")
    return data
