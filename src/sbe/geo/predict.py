"""Predictions of trained geo heads from embeddings: top-k locations, climate class, season.

Library code shared by ``sbe geo predict``, the report and the published model's helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbe.errors import SbeError
from sbe.geo.heads import GeoHeads, GeoPrediction
from sbe.geo.koppen import (
    COARSE_CODES,
    COARSE_NAMES,
    COMMON_NAMES,
    FINE_CODES,
    FINE_NAMES,
    coarse_of,
)
from sbe.geo.season import doy_to_date, doy_to_month
from sbe.geo.trainer import resolve_device, torch_threads

#: sub-folder of a GEO_DIR holding the projector copy when the heads read projector outputs
PROJECTOR_DIR = "projector"


def load_projector(directory: Path) -> Any:
    """``Projector.from_pretrained(directory)`` (the training engineer's module)."""
    try:
        from sbe.models.projector import Projector
    except ImportError as e:  # pragma: no cover - the module ships with sbe
        raise SbeError(f"the projector module is not available: {e}") from None
    if not (directory / "config.json").is_file():
        raise SbeError(f"no trained projector in {directory}")
    return Projector.from_pretrained(directory)


def features_of(emb: np.ndarray, projector: Any | None) -> np.ndarray:
    """Heads input: projector output, or L2-normalised backbone embeddings. float32 (N, D)."""
    emb = np.asarray(emb, dtype=np.float32)
    if projector is not None:
        return projector.project(emb)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def load_geo_dir(geo_dir: Path) -> tuple[GeoHeads, Any | None]:
    """Heads and (when trained on projector outputs) the projector copy from a ``GEO_DIR``."""
    heads = GeoHeads.from_pretrained(geo_dir)
    projector = None
    if heads.config.input_space == "projector":
        projector = load_projector(geo_dir / PROJECTOR_DIR)
    return heads, projector


def predict_embeddings(
    geo_dir: str | Path, embeddings: np.ndarray, *, top_k: int = 5, threads: int = 1
) -> list[dict[str, Any]]:
    """Predictions for raw (backbone) embeddings: top-k locations, climate class, season.

    Returns:
        one dict per row, see :func:`describe`.
    """
    heads, projector = load_geo_dir(Path(geo_dir))
    x = features_of(embeddings, projector)
    device = resolve_device("auto")
    heads.to(device)
    with torch_threads(threads):
        pred = heads.predict(torch.from_numpy(x).to(device), top_k=top_k, regions=True)
    return describe(pred)


def describe(pred: GeoPrediction) -> list[dict[str, Any]]:
    """Decoded predictions as plain dicts, with names rather than indices.

    Args:
        pred: from :meth:`GeoHeads.predict` with ``regions=True`` (without, the locations carry
            the component-weight share as ``prob`` and no radii).

    Returns:
        one dict per row:

        - ``locations``: the top-k modes of the location mixture, best first, each
          ``{lat, lon, prob, radius_50_km, radius_90_km}``: ``prob`` is the share of the mixture
          closer to this mode than to the other modes (the shares of a row sum to 1), the radii
          hold 50 % / 90 % of that share around the mode;
        - ``climate``: ``code`` (Köppen-Geiger, e.g. ``Csb``), ``name`` (e.g. ``warm-summer
          Mediterranean``), ``description`` (e.g. ``temperate, dry summer, warm summer``),
          ``prob``, ``coarse`` (group index), ``coarse_code`` and ``coarse_name``;
        - ``season``: ``day_of_year`` (0-based), ``date`` (``--MM-DD``), ``date_label``
          (``14 July``), ``month`` (1-12) and ``kappa`` (the von Mises concentration).
    """
    reg = pred.regions
    rows = []
    months = doy_to_month(pred.doy)
    top_k = pred.modes.lat.shape[1]
    for i in range(len(pred.fine)):
        locs = []
        for j in range(top_k):
            if not np.isfinite(pred.modes.lat[i, j]):
                continue
            loc: dict[str, Any] = {
                "lat": round(float(pred.modes.lat[i, j]), 5),
                "lon": round(float(pred.modes.lon[i, j]), 5),
                "prob": round(float(pred.modes.prob[i, j] if reg is None else reg.mass[i, j]), 4),
            }
            if reg is not None:
                for li, lv in enumerate(reg.levels):
                    loc[f"radius_{round(100 * lv)}_km"] = round(float(reg.radius_km[i, j, li]), 2)
            locs.append(loc)
        f = int(pred.fine[i])
        g = int(coarse_of(np.array([f]))[0])
        iso, label = doy_to_date(float(pred.doy[i]))
        rows.append(
            {
                "locations": locs,
                "climate": {
                    "code": FINE_CODES[f],
                    "name": COMMON_NAMES[f],
                    "description": FINE_NAMES[f],
                    "prob": round(float(pred.fine_prob[i]), 4),
                    "coarse": g,
                    "coarse_code": COARSE_CODES[g],
                    "coarse_name": COARSE_NAMES[g],
                },
                "season": {
                    "day_of_year": round(float(pred.doy[i]), 1),
                    "date": iso,
                    "date_label": label,
                    "month": int(months[i]),
                    "kappa": round(float(pred.season_kappa[i]), 3),
                },
            }
        )
    return rows


def predict_geo(embedder: Any, images: list[Any], top_k: int = 5) -> Any:
    """Location (top-k MvMF modes), climate zone and season of images, with a published model.

    Args:
        embedder: a :class:`sbe.models.published.Embedder` whose folder ships geo heads
            (published with ``--geo``).
        images: paths, encoded bytes or PIL images.
        top_k: location modes per image.

    Returns:
        :class:`sbe.geo.heads.GeoPrediction` for the N images.

    Raises:
        SbeError: the model has no geo heads.
    """
    if not embedder.has_geo:
        raise SbeError(f"{embedder.model_dir} has no geo heads (publish with --geo GEO_DIR)")
    if embedder._geo is None:
        embedder._geo = GeoHeads.from_pretrained(embedder.geo_dir, device=embedder.device)
    heads = embedder._geo
    x = embedder.geo_features(images, projector_space=heads.config.input_space == "projector")
    if len(x) == 0:
        x = torch.zeros((0, heads.config.in_dim))
    return heads.predict(x.to(embedder.device), top_k=top_k)
