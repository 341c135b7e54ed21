"""Run facts: every stage's wall time and rows from its manifest, the backbone's identity and speed,
and the list of input files whose change should redo the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbe.report.readers import ReportInputs, Unavailable, read_json
from sbe.storage import load_manifest

#: (stage, ReportInputs attribute, sub-folder) in pipeline order
STAGE_DIRS: tuple[tuple[str, str, str], ...] = (
    ("synth", "raw", ""),
    ("ingest", "images", ""),
    ("backbone", "backbone", ""),
    ("split", "split", ""),
    ("neighbors", "neighbors", ""),
    ("train", "run", ""),
    ("evaluate", "run", "evaluate"),
    ("geo", "geo", ""),
    ("publish", "model", ""),
    ("embed", "embeddings", ""),
    ("aggregate", "buildings", ""),
    ("index", "index", ""),
    ("cluster", "clusters", ""),
)


@dataclass
class StageTime:
    stage: str
    folder: str
    seconds: float | None
    created_at: str | None
    rows: dict[str, int]
    note: str = ""


@dataclass
class RunFacts:
    backbone: dict[str, Any] | None
    backbone_images_per_second: float | None
    backbone_runtime: str | None
    backbone_device: str | None
    stages: list[StageTime]
    sbe_versions: list[str]


def stage_dirs(inputs: ReportInputs) -> list[tuple[str, Path | None]]:
    """``(stage, output folder)`` of every stage the report knows, in pipeline order."""
    out = []
    for stage, attr, sub in STAGE_DIRS:
        base = getattr(inputs, attr)
        out.append((stage, (Path(base) / sub) if base is not None and sub else base))
    return out


def run_facts(inputs: ReportInputs) -> RunFacts:
    stages = []
    versions: set[str] = set()
    for stage, folder in stage_dirs(inputs):
        m = load_manifest(folder) if folder is not None and Path(folder).is_dir() else None
        if m is None or m.stage != stage:
            why = "no output" if m is None else f"{folder} is a {m.stage} output"
            stages.append(StageTime(stage, str(folder or "-"), None, None, {}, why))
            continue
        versions.add(m.sbe_version)
        stages.append(StageTime(stage, str(folder), m.wall_seconds, m.created_at, dict(m.rows)))
    bb = load_manifest(inputs.backbone) if inputs.backbone is not None else None
    extra = bb.extra if bb is not None and bb.stage == "backbone" else {}
    if not any(s.seconds is not None for s in stages):
        raise Unavailable("no stage manifest found")
    ips = extra.get("images_per_second")
    return RunFacts(
        backbone=extra.get("backbone"),
        backbone_images_per_second=float(ips) if ips else None,
        backbone_runtime=extra.get("runtime"),
        backbone_device=extra.get("device"),
        stages=stages,
        sbe_versions=sorted(versions),
    )


def input_files(inputs: ReportInputs) -> list[Path]:
    """Every file the report reads whose change should redo it (existing ones only)."""
    candidates: list[Path] = []
    for stage, folder in stage_dirs(inputs):
        # embed rewrites its manifest and state.json on every rerun, even an up-to-date one:
        # its finished parts stand for it instead
        if folder is not None and stage != "embed":
            candidates.append(Path(folder) / "_manifest.json")
    if inputs.raw is not None:
        candidates += [Path(inputs.raw) / "preview.png", Path(inputs.raw) / "truth.parquet"]
    if inputs.split is not None:
        candidates.append(Path(inputs.split) / "test.parquet")
    if inputs.run is not None:
        r = Path(inputs.run)
        candidates += [r / "metrics.jsonl", r / "run.json", r / "best" / "model.safetensors"]
        candidates.append(r / "evaluate" / "test.json")
    if inputs.geo is not None:
        g = Path(inputs.geo)
        candidates += [g / "metrics.json", g / "metrics.jsonl", g / "model.safetensors"]
    if inputs.clusters is not None:
        candidates.append(Path(inputs.clusters) / "assignments.parquet")
    if inputs.buildings is not None:
        candidates.append(Path(inputs.buildings) / "buildings.parquet")
    if inputs.embeddings is not None:
        candidates += sorted((Path(inputs.embeddings) / "parts").glob("*.parquet"))
    if inputs.landmarks is not None:
        candidates.append(Path(inputs.landmarks) / "labels.csv")
    return [p for p in candidates if p.is_file()]


def evaluated_landmarks_dir(run_dir: Path | None) -> Path | None:
    """The real-photo folder the evaluation used (recorded in ``RUN/evaluate/test.json``)."""
    if run_dir is None:
        return None
    try:
        ev = read_json(Path(run_dir) / "evaluate" / "test.json", "evaluation")
    except Unavailable:
        return None
    folder = (ev.get("landmarks") or {}).get("folder")
    if folder and (Path(folder) / "labels.csv").is_file():
        return Path(folder)
    return None
