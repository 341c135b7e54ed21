"""``sbe report``: one self-contained HTML page over the outputs of the other stages.

Writes ``OUT/report.html`` (inline CSS, SVG charts, ``data:`` JPEG thumbnails; nothing is fetched
at view time) and ``OUT/_manifest.json``. Every section degrades on its own: a missing input
becomes a visible "not available: <reason>" note. A rerun with unchanged inputs and settings does
nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sbe.config import ReportConfig, SbeConfig
from sbe.errors import SbeError
from sbe.report.build import ReportOptions, build_report
from sbe.report.gather import ReportInputs, ThumbSettings, evaluated_landmarks_dir, input_files
from sbe.settings import same_named
from sbe.stages.base import Input, Stage, StageContext, settings_from, stage_function
from sbe.stages.summary import Summary, manifest_table
from sbe.storage import Manifest, atomic_path, fingerprint_paths
from sbe.storage.artifacts import ReportDir

STAGE = "report"
REPORT_FILE = ReportDir.REPORT


def landmarks_dir(cfg: ReportConfig) -> Path | None:
    """The configured real-photo folder, else the one the evaluation used, else auto-detected."""
    if cfg.landmarks is not None:
        return Path(cfg.landmarks)
    used = evaluated_landmarks_dir(cfg.run)
    if used is not None:
        return used
    from sbe.training.evaluation import default_landmarks_dir

    return default_landmarks_dir()


def inputs_of(cfg: ReportConfig) -> ReportInputs:
    """The report's inputs from its config section (absolute paths)."""
    return settings_from(ReportInputs, cfg, landmarks=landmarks_dir(cfg))


def _geo_predict(geo_dir: Path, embeddings: np.ndarray) -> list[dict[str, Any]]:
    # the geo stage's own prediction path (heads + optional projector copy), top mode only
    from sbe.geo.predict import predict_embeddings

    return predict_embeddings(geo_dir, embeddings, top_k=3)  # the map draws the top-3 modes


class ReportStage(Stage):
    """``sbe report``: see the module docstring."""

    name = "report"
    wired_alone = True  # `sbe report --workdir DIR` finds every stage's output there
    inputs = (
        Input("raw", "synth"),
        Input("images", "ingest"),
        Input("backbone", "backbone"),
        Input("split", "split"),
        Input("neighbors", "neighbors"),
        Input("run", "train"),
        Input("geo", "geo"),
        Input("model", "publish"),
        Input("embeddings", "embed"),
        Input("buildings", "aggregate"),
        Input("clusters", "cluster"),
        Input("index", "index"),
    )

    def wire(self, cfg: SbeConfig, skipped: set[str]) -> None:
        if cfg.report.landmarks is None and cfg.evaluate.landmarks is not None:
            cfg.report.landmarks = cfg.evaluate.landmarks

    def summary(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        missing = {k: v for k, v in m.extra.get("sections", {}).items() if v}
        lines = [f"{name}: not available: {'; '.join(why)}" for name, why in missing.items()]
        return [manifest_table(m), *lines, f"report: {Path(cfg.output) / REPORT_FILE}"]

    def run(self, cfg: ReportConfig, ctx: StageContext) -> Manifest:
        """Write ``cfg.output/report.html`` from the other stages' outputs.

        Returns:
            The manifest (``up_to_date`` when inputs and settings did not change); ``rows`` has
            the report's size in bytes and the number of sections, ``extra.sections`` what was
            unavailable.

        Raises:
            SbeError: not a single input exists (a wrong work directory).
        """
        inputs = inputs_of(cfg)
        files = input_files(inputs)
        if not input_files(replace(inputs, landmarks=None)):
            raise SbeError(
                f"nothing to report: no stage output found (split at {cfg.split}, run at "
                f"{cfg.run}); check --workdir or the config"
            )
        # which photo folder is used (and where the work folder is: the subtitle) decide the page
        workdir = Path(cfg.split).parent
        landmarks = str(inputs.landmarks) if inputs.landmarks is not None else None
        if (done := ctx.check(fingerprint_paths(files), landmarks=landmarks)) is not None:
            return done
        built = build_report(
            inputs,
            same_named(
                ReportOptions,
                cfg,
                thumb=ThumbSettings(cfg.thumb_px, cfg.jpeg_quality),
                subtitle=str(workdir),
            ),
            geo_predict=_geo_predict,
        )
        data = built.html.encode("utf-8")
        with atomic_path(ctx.out_dir / REPORT_FILE) as tmp:
            tmp.write_bytes(data)
        ctx.settings["landmarks"] = landmarks
        return ctx.commit(
            outputs=[REPORT_FILE],
            rows={
                "bytes": len(data),
                "sections": len(built.status),
                "complete sections": len(built.available),
            },
            extra={"sections": built.status},
        )


run = stage_function(ReportStage)
