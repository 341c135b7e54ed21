"""What the report shows, read from the other stages' outputs (no HTML here).

Each function reads one kind of output and returns plain data. Only a missing or unreadable input
(no folder, no file, no valid manifest, a file that is not JSON or not parquet) raises
:class:`~sbe.report.readers.Unavailable`, whose reason the page prints in place of the section. An
output that is present but not what this version writes (a missing column, a missing key) is a bug
or a version mismatch, not an absence: it raises (:class:`~sbe.report.readers.Malformed` where it
is checked, else the original error) and fails the report.

The dataset, training and metrics sections are read here; the gallery (:mod:`.gallery`), the
geolocation (:mod:`.geoloc`), the clusters (:mod:`.clusters`) and the run facts
(:mod:`.runfacts`) in their own modules. This module names them all (``__all__``), so the page
builder reads every section through one namespace.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbe.report.clusters import Clusters, ClusterSample, cluster_samples
from sbe.report.gallery import (
    Gallery,
    GalleryQuery,
    Tile,
    image_bytes_by_id,
    ingest_parts,
    pick_queries,
    retrieval_gallery,
    top_k_excluding_self,
)
from sbe.report.geoloc import Geolocation, GeoPredictor, geo_metrics, geolocation, map_buildings
from sbe.report.places import Places, world_places
from sbe.report.readers import (
    Malformed,
    ReportInputs,
    ReportOptions,
    ThumbSettings,
    Unavailable,
    manifest_of,
    need_dir,
    parquet_schema,
    read_json,
    read_jsonl,
    read_parquet,
    require_columns,
)
from sbe.report.runfacts import (
    STAGE_DIRS,
    RunFacts,
    StageTime,
    evaluated_landmarks_dir,
    input_files,
    run_facts,
    stage_dirs,
)
from sbe.report.thumbs import file_thumbnail_uri

__all__ = [
    "STAGE_DIRS", "ClusterSample", "Clusters", "Gallery", "GalleryQuery", "GeoCurves",
    "GeoPredictor", "Geolocation", "LandmarkPhoto", "Malformed", "Places", "ReportInputs",
    "ReportOptions", "RetrievalMetrics", "RunFacts", "SplitSummary", "StageCounts", "StageTime", "SynthWorld",
    "ThumbSettings", "Tile", "TrainingCurves", "Unavailable", "cluster_samples",
    "evaluated_landmarks_dir", "geo_curves", "geo_metrics", "geolocation", "image_bytes_by_id",
    "ingest_parts", "input_files", "landmark_photos", "manifest_of", "map_buildings", "need_dir",
    "parquet_schema", "pick_queries", "read_json", "read_jsonl", "read_parquet", "require_columns",
    "retrieval_gallery", "retrieval_metrics", "run_facts", "split_summary", "stage_counts",
    "stage_dirs", "synth_world", "top_k_excluding_self", "training_curves",
    "world_places",
]  # fmt: skip


# ---- 1. dataset ------------------------------------------------------------------------------


@dataclass
class SplitSummary:
    """Per-split counts and leakage distances from ``split/_manifest.json``."""

    splits: dict[str, dict[str, Any]]
    leakage: dict[str, dict[str, Any]]
    grouping: dict[str, Any]
    rows: dict[str, int]
    skipped: dict[str, int]


def split_summary(split_dir: Path | None) -> SplitSummary:
    m = manifest_of(split_dir, "split output", "split")
    return SplitSummary(
        splits=dict(m.extra.get("splits") or {}),
        leakage=dict(m.extra.get("leakage") or {}),
        grouping=dict(m.extra.get("grouping") or {}),
        rows=dict(m.rows),
        skipped=dict(m.skipped),
    )


@dataclass
class StageCounts:
    """Rows, skips by reason (with examples) and counted warnings of one stage."""

    stage: str
    rows: dict[str, int]
    skipped: dict[str, int]
    skip_examples: dict[str, list[str]]
    warnings: dict[str, int]


def stage_counts(path: Path | None, what: str, stage: str) -> StageCounts:
    m = manifest_of(path, what, stage)
    warnings = m.extra.get("warnings") if isinstance(m.extra.get("warnings"), dict) else {}
    return StageCounts(
        stage=stage,
        rows=dict(m.rows),
        skipped=dict(m.skipped),
        skip_examples={k: list(v) for k, v in m.skip_examples.items()},
        warnings=dict(warnings or {}),
    )


@dataclass
class SynthWorld:
    """The synthetic world (``sbe synth``): cities with their share of images, counts, preview."""

    rows: dict[str, int]
    cities: dict[str, int]
    difficulty: float | None
    seed: int | None
    image_size: int | None
    preview_uri: str | None


def synth_world(raw_dir: Path | None, preview_px: int = 960) -> SynthWorld:
    m = manifest_of(raw_dir, "synthetic world (raw)", None)
    if m.stage != "synth":
        raise Unavailable(f"{raw_dir} was not written by `sbe synth` (real data)")
    assert raw_dir is not None
    preview = Path(raw_dir) / "preview.png"
    uri = file_thumbnail_uri(preview, preview_px, 80, square=False) if preview.is_file() else None
    return SynthWorld(
        rows=dict(m.rows),
        cities=dict(m.extra.get("cities") or {}),
        difficulty=m.extra.get("difficulty", m.config.get("difficulty")),
        seed=m.config.get("seed"),
        image_size=m.config.get("image_size"),
        preview_uri=uri,
    )


# ---- 2. training curves ----------------------------------------------------------------------


@dataclass
class TrainingCurves:
    """Per-epoch training records of ``RUN/metrics.jsonl``.

    Attributes:
        epochs: epoch numbers (1-based). loss: mean train loss per epoch.
        val: per-epoch val metrics (``map@r``, ``recall@1``, ...), aligned with ``epochs``.
        baseline: the raw backbone on the val queries; init: the head before training (epoch 0).
        best_epoch: the selected epoch. steps / step_loss: the step records.
        bands: per epoch, the bandit's choices of difficulty band (empty without a curriculum).
    """

    epochs: list[int]
    loss: list[float]
    val: list[dict[str, float]]
    baseline: dict[str, float]
    init: dict[str, float]
    best_epoch: int | None
    steps: list[int]
    step_loss: list[float]
    bands: list[dict[str, Any]] = field(default_factory=list)


def training_curves(run_dir: Path | None) -> TrainingCurves:
    folder = need_dir(run_dir, "training run")
    records = read_jsonl(folder / "metrics.jsonl", "training metrics (metrics.jsonl)")
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        raise Unavailable(f"{folder / 'metrics.jsonl'} has no epoch records yet")
    base = next((r for r in records if r.get("kind") == "baseline"), {})
    init = next((r for r in records if r.get("kind") == "init"), {})
    steps = [r for r in records if r.get("kind") == "step" and "loss" in r]
    best = epochs[-1].get("best_epoch")
    with contextlib.suppress(Unavailable):
        best = read_json(folder / "run.json", "run.json").get("best_epoch", best)
    bands = []
    for r in epochs:
        b = r.get("bands")
        if isinstance(b, dict) and b:
            bands.append({"epoch": r["epoch"], **b})
    return TrainingCurves(
        epochs=[int(r["epoch"]) for r in epochs],
        loss=[float(r.get("loss", float("nan"))) for r in epochs],
        val=[dict(r.get("val") or {}) for r in epochs],
        baseline=dict(base.get("val") or {}),
        init=dict(init.get("val") or {}),
        best_epoch=best,
        steps=[int(r["step"]) for r in steps],
        step_loss=[float(r["loss"]) for r in steps],
        bands=bands,
    )


@dataclass
class GeoCurves:
    """Per-epoch records of ``GEO_DIR/metrics.jsonl``."""

    epochs: list[int]
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int | None


def geo_curves(geo_dir: Path | None) -> GeoCurves:
    folder = need_dir(geo_dir, "geo output")
    records = read_jsonl(folder / "metrics.jsonl", "geo training metrics (metrics.jsonl)")
    if not records:
        raise Unavailable(f"{folder / 'metrics.jsonl'} is empty")
    best = None
    with contextlib.suppress(Unavailable):  # metrics.json comes last: an unfinished run has none
        best = read_json(folder / "metrics.json", "geo metrics")["selection"]["best_epoch"]
    nan = float("nan")
    return GeoCurves(
        epochs=[int(r.get("epoch", i + 1)) for i, r in enumerate(records)],
        train_loss=[float(r.get("train_loss", nan)) for r in records],
        val_loss=[float(r.get("val_loss", nan)) for r in records],
        best_epoch=best,
    )


# ---- 3. metrics ------------------------------------------------------------------------------


@dataclass
class RetrievalMetrics:
    """Backbone vs projector on the test split (``RUN/evaluate/test.json``, else ``run.json``)."""

    source: str
    queries: int | None
    images: int | None
    identities: int | None
    backbone: dict[str, float]
    projector: dict[str, float]
    landmarks: dict[str, Any] | None


def retrieval_metrics(run_dir: Path | None) -> RetrievalMetrics:
    folder = need_dir(run_dir, "training run")
    ev_path = folder / "evaluate" / "test.json"
    landmarks = None
    if ev_path.is_file():
        ev = read_json(ev_path, "evaluation")
        ret = ev.get("retrieval") or {}
        landmarks = ev.get("landmarks")
        source = str(ev_path)
    else:
        run = read_json(folder / "run.json", "run.json (the run did not finish)")
        ret = run.get("test") or {}
        source = str(folder / "run.json")
    if "backbone" not in ret or "projector" not in ret:
        raise Unavailable(f"no test metrics in {source}")
    return RetrievalMetrics(
        source=source,
        queries=ret.get("queries"),
        images=ret.get("images"),
        identities=ret.get("identities"),
        backbone=dict(ret["backbone"]),
        projector=dict(ret["projector"]),
        landmarks=landmarks,
    )


@dataclass
class LandmarkPhoto:
    """One real photo of the landmarks check."""

    landmark: str
    name: str
    path: str
    uri: str | None


def landmark_photos(
    folder: Path | None, thumb: ThumbSettings, per_landmark: int = 5
) -> list[LandmarkPhoto]:
    """Thumbnails of a ``labels.csv`` (``path``, ``landmark``[, ``landmark_name``]) photo folder."""
    if folder is None:
        raise Unavailable("no real-photo folder found (set [report] landmarks or $SBE_LANDMARKS)")
    labels = Path(folder) / "labels.csv"
    try:
        with labels.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        raise Unavailable(f"no labels.csv in {folder}") from None
    out: list[LandmarkPhoto] = []
    taken: dict[str, int] = {}
    for r in rows:
        lm = r.get("landmark") or ""
        if not r.get("path") or taken.get(lm, 0) >= per_landmark:
            continue
        taken[lm] = taken.get(lm, 0) + 1
        out.append(
            LandmarkPhoto(
                landmark=lm,
                name=r.get("landmark_name") or lm,
                path=r["path"],
                uri=file_thumbnail_uri(Path(folder) / r["path"], thumb.max_px, thumb.quality),
            )
        )
    if not out:
        raise Unavailable(f"{labels} lists no photos")
    return out
