"""``sbe run``: the whole pipeline in order, each stage skipped when its output is up to date.

synth (or raw tars) -> ingest -> backbone -> split -> neighbors -> train -> evaluate -> geo ->
publish -> embed -> aggregate -> index -> cluster -> report.

Every stage reads its input from the previous stage's output: :func:`wire` derives the input paths
from the output paths, so a config only names where things go.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbe.config import PIPELINE_STAGES, SbeConfig
from sbe.errors import SbeError
from sbe.progress import progress_bar, progress_session
from sbe.storage import Manifest


@dataclass
class StageOutcome:
    """What happened to one stage of a pipeline run."""

    stage: str
    status: str  # "done" | "up to date" | "skipped"
    seconds: float = 0.0
    manifest: Manifest | None = None
    reason: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def wire(cfg: SbeConfig) -> SbeConfig:
    """Point each stage's input at the output of the stage before it (paths stay workdir-relative)."""
    c = cfg.model_copy(deep=True)
    skip = set(c.pipeline.skip)
    if c.pipeline.source == "synth":
        c.ingest.inputs = [c.synth.output]
        if c.synth.packaged is not None:
            c.embed.input = c.synth.packaged
    c.backbone.input = c.ingest.output
    c.split.input = c.backbone.output
    c.neighbors.input = c.split.output
    c.train.input = c.split.output
    if "neighbors" in skip and c.train.curriculum == "none":
        c.train.neighbors = None
    else:
        c.train.neighbors = c.neighbors.output
    c.evaluate.run = c.train.output
    c.geo.input = c.split.output
    c.publish.run = c.train.output
    c.publish.geo = None if "geo" in skip else c.geo.output
    c.embed.model = c.publish.output
    c.aggregate.input = [c.embed.output]
    c.index.input = c.aggregate.output
    c.cluster.input = c.aggregate.output
    c.report.raw = c.synth.output if c.pipeline.source == "synth" else None
    c.report.images = c.ingest.output
    c.report.backbone = c.backbone.output
    c.report.split = c.split.output
    c.report.neighbors = c.neighbors.output
    c.report.run = c.train.output
    c.report.geo = c.geo.output
    c.report.model = c.publish.output
    c.report.embeddings = c.embed.output
    c.report.buildings = c.aggregate.output
    c.report.clusters = c.cluster.output
    c.report.index = c.index.output
    if c.report.landmarks is None and c.evaluate.landmarks is not None:
        c.report.landmarks = c.evaluate.landmarks
    return c


def _call(
    stage: str, cfg: SbeConfig, log: Callable[[str], None]
) -> tuple[Manifest, dict[str, Any]]:
    sec = cfg.section(stage)
    if stage == "train":
        from sbe.stages import train

        return train.run(sec, console=log), {}
    if stage == "evaluate":
        from sbe.stages import evaluate

        results, manifest = evaluate.run(sec)
        return manifest, results
    if stage == "geo":
        from sbe.stages import geo

        return geo.train(sec), {}
    module = importlib.import_module(f"sbe.stages.{stage}")
    return module.run(sec), {}


def _skip_reason(stage: str, cfg: SbeConfig) -> str | None:
    if stage in cfg.pipeline.skip:
        return "skipped by [pipeline] skip"
    if stage == "synth" and cfg.pipeline.source != "synth":
        return "source is raw tars"
    if stage == "embed":
        path = cfg.section("embed").input
        if not Path(path).is_file():
            return f"no packaged images at {path}"
    if stage in ("aggregate", "index", "cluster") and "embed" in cfg.pipeline.skip:
        return "embed is skipped"
    return None


def run_pipeline(
    cfg: SbeConfig,
    *,
    log: Callable[[str], None] | None = None,
    show_progress: bool | None = None,
) -> list[StageOutcome]:
    """Run every stage of the pipeline in order.

    Args:
        cfg: the full config; inputs are re-derived from outputs with :func:`wire`.
        log: receives one line per stage event (``None`` = silent).
        show_progress: one live display for all stages (``None`` = only on a terminal).

    Returns:
        One :class:`StageOutcome` per stage, in pipeline order.

    Raises:
        SbeError: a stage failed; the message names the stage.
    """
    cfg = wire(cfg)
    say = log or (lambda _s: None)
    if cfg.pipeline.threads:
        import torch

        torch.set_num_threads(cfg.pipeline.threads)
    outcomes: list[StageOutcome] = []
    with (
        progress_session(show_progress),
        progress_bar("pipeline", len(PIPELINE_STAGES), unit="stages", enabled=show_progress) as bar,
    ):
        emit = say
        for i, stage in enumerate(PIPELINE_STAGES, 1):
            bar.set_description(f"pipeline: {stage}")
            reason = _skip_reason(stage, cfg)
            if reason:
                outcomes.append(StageOutcome(stage, "skipped", reason=reason))
                emit(f"[{i:2d}/{len(PIPELINE_STAGES)}] {stage:<10} skipped ({reason})")
                bar.advance()
                continue
            t0 = time.perf_counter()
            try:
                manifest, results = _call(stage, cfg, lambda s: emit(f"      {s}"))
            except SbeError as e:
                raise SbeError(f"stage {stage} failed: {e}") from e
            seconds = time.perf_counter() - t0
            status = "up to date" if manifest.up_to_date else "done"
            outcomes.append(StageOutcome(stage, status, seconds, manifest, results=results))
            rows = ", ".join(f"{k} {v:,}" for k, v in list(manifest.rows.items())[:3])
            emit(f"[{i:2d}/{len(PIPELINE_STAGES)}] {stage:<10} {status} in {seconds:.1f} s  {rows}")
            bar.advance()
    return outcomes


def demo_config(workdir: str | Path) -> SbeConfig:
    """The built-in demo config (``sbe/configs/demo.toml``) with its outputs under ``workdir``."""
    import tomllib
    from importlib import resources

    from sbe.config import load_config_data

    data = tomllib.loads(resources.files("sbe.configs").joinpath("demo.toml").read_text())
    data["workdir"] = Path(workdir).expanduser().resolve()
    return load_config_data(data)


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def key_numbers(cfg: SbeConfig) -> list[tuple[str, str, str]]:
    """The headline numbers of a finished run, read from the stages' outputs.

    Returns:
        ``(what, value, compared with)`` rows for a summary table.
    """
    cfg = wire(cfg)
    rows: list[tuple[str, str, str]] = []
    run = _read_json(cfg.section("train").output / "run.json") or {}
    test = run.get("test") or {}
    if test:
        b, p = test["backbone"], test["projector"]
        n = test.get("queries", 0)
        rows.append(
            (
                "test Recall@1 (projector)",
                f"{p['recall@1']:.3f}",
                f"backbone {b['recall@1']:.3f}, {n} queries",
            )
        )
        rows.append(("test mAP@R (projector)", f"{p['map@r']:.3f}", f"backbone {b['map@r']:.3f}"))
    ev = _read_json(cfg.section("evaluate").run / "evaluate" / "test.json") or {}
    lm = ev.get("landmarks") or {}
    if "projector" in lm and "backbone" in lm:
        rows.append(
            (
                "real photos P@1 (landmarks-mini)",
                f"{lm['projector']['correct@1']}/{lm['images']}",
                f"backbone {lm['backbone']['correct@1']}/{lm['images']}",
            )
        )
    geo = _read_json(cfg.section("geo").output / "metrics.json") or {}
    gt = geo.get("test") or {}
    if gt:
        m, base = gt["model"], gt["baselines"]
        loc, mc, nn = (
            m["location"],
            base["most_common"]["location"],
            base["nearest_neighbour"]["location"],
        )
        rows.append(
            (
                "geo: within 200 km / 750 km",
                f"{loc['acc_200km']:.1%} / {loc['acc_750km']:.1%}",
                f"most common {mc['acc_200km']:.1%} / {mc['acc_750km']:.1%}, "
                f"nearest neighbour {nn['acc_200km']:.1%} / {nn['acc_750km']:.1%}",
            )
        )
        cl, mcc = m["climate"], base["most_common"]["climate"]
        rows.append(
            ("geo: climate accuracy", f"{cl['fine_acc']:.1%}", f"most common {mcc['fine_acc']:.1%}")
        )
    bb = _read_json(cfg.section("backbone").output / "_manifest.json") or {}
    ips = (bb.get("extra") or {}).get("images_per_second")
    if ips:
        rt = bb["extra"].get("runtime", "")
        rows.append(
            (
                "backbone throughput",
                f"{ips:,.0f} images/s",
                f"{rt} on {bb['extra'].get('device', '')}",
            )
        )
    report = cfg.section("report").output / "report.html"
    if report.is_file():
        rows.append(("report", str(report), "open in a browser (self-contained)"))
    return rows
