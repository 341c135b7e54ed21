"""``sbe run``: the whole pipeline in order, each stage skipped when its output is up to date.

synth (or raw tars) -> ingest -> backbone -> split -> neighbors -> train -> evaluate -> geo ->
publish -> embed -> aggregate -> index -> cluster -> report.

Every stage reads its input from the previous stage's output: :func:`wire` derives the input paths
from the output paths, so a config only names where things go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from sbe import stages
from sbe.config import PIPELINE_STAGES, ConfigError, SbeConfig
from sbe.config.commands import RunOptions, ServeOptions
from sbe.errors import SbeError
from sbe.progress import progress_bar, progress_session
from sbe.stages import Stage, get_stage
from sbe.stages.summary import Summary, Table
from sbe.storage import Manifest
from sbe.storage.artifacts import BackboneDir, GeoDir, ReportDir, RunDir

Log = Callable[[str], None] | None


@dataclass
class StageOutcome:
    """What happened to one stage of a pipeline run."""

    stage: str
    status: str  # "done" | "up to date" | "skipped"
    seconds: float = 0.0
    manifest: Manifest | None = None
    reason: str = ""
    results: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What ``sbe run --json`` prints: stage, status, seconds, rows, skips (and the reason)."""
        m = self.manifest
        return {
            "stage": self.stage,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "rows": dict(m.rows) if m is not None else {},
            "skips": dict(m.skipped) if m is not None else {},
            "reason": self.reason,
        }


def _skipped(cfg: SbeConfig) -> dict[str, str]:
    """Stages ``sbe run`` will not run, with the reason: the user's skips, the stages the config
    turns off (:meth:`~sbe.stages.base.Stage.disabled_reason`), and what follows from them."""
    reasons: dict[str, str] = {}
    for name in PIPELINE_STAGES:
        stage = get_stage(name)
        if name in cfg.pipeline.skip:
            reasons[name] = "skipped by [pipeline] skip"
            continue
        if (off := stage.disabled_reason(cfg)) is not None:
            reasons[name] = off
            continue
        for inp in stage.inputs:
            if inp.follows and inp.stage in reasons:
                reasons[name] = f"{inp.stage} is skipped"
                break
    return reasons


def wire(cfg: SbeConfig) -> SbeConfig:
    """Point each stage's declared inputs at its upstream stages' outputs (paths stay relative).

    An input whose upstream stage does not run keeps its configured value, or becomes ``None`` when
    the field is optional (e.g. ``publish.geo`` when ``geo`` is skipped).
    """
    c = cfg.model_copy(deep=True)
    not_run = set(_skipped(c))
    for name in PIPELINE_STAGES:
        stage = get_stage(name)
        section = getattr(c, stage.section_name())
        for inp in stage.inputs:
            annotation = type(section).model_fields[inp.field].annotation
            optional = type(None) in get_args(annotation)
            if inp.stage in not_run:
                if optional:
                    setattr(section, inp.field, None)
                continue
            value = getattr(getattr(c, get_stage(inp.stage).section_name()), inp.attr)
            if value is None:
                continue
            if get_origin(annotation) is list:
                value = [value]
            setattr(section, inp.field, value)
        stage.wire(c, not_run)
    return c


def _skip_reason(stage: Stage, cfg: SbeConfig, skipped: dict[str, str]) -> str | None:
    if stage.name in skipped:
        return skipped[stage.name]
    return stage.skip_reason(cfg)


def run_pipeline(
    cfg: SbeConfig,
    *,
    log: Callable[[str], None] | None = None,
    show_progress: bool | None = None,
    restart: Collection[str] = (),
) -> list[StageOutcome]:
    """Run every stage of the pipeline in order; finished stages are skipped, unfinished resumed.

    Args:
        cfg: the full config; inputs are re-derived from outputs with :func:`wire`.
        log: receives one line per stage event (``None`` = silent).
        show_progress: one live display for all stages (``None`` = only on a terminal).
        restart: stages to run from scratch (no up-to-date check, no resume).

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
    skipped = _skipped(cfg)
    outcomes: list[StageOutcome] = []
    n = len(PIPELINE_STAGES)
    with (
        progress_session(show_progress),
        progress_bar("pipeline", n, unit="stages", enabled=show_progress) as bar,
    ):
        emit = say
        for i, name in enumerate(PIPELINE_STAGES, 1):
            stage = get_stage(name)
            bar.set_description(f"pipeline: {name}")
            reason = _skip_reason(stage, cfg, skipped)
            if reason:
                outcomes.append(StageOutcome(name, "skipped", reason=reason))
                emit(f"[{i:2d}/{n}] {name:<10} skipped ({reason})")
                bar.advance()
                continue
            t0 = time.perf_counter()
            try:
                manifest, results = stages.run_stage(
                    stage,
                    cfg.section(stage.section_name()),
                    log=lambda s: emit(f"      {s}"),
                    show_progress=show_progress,
                    restart=name in restart,
                    full_config=cfg,
                )
            except SbeError as e:
                raise SbeError(f"stage {name} failed: {e}") from e
            seconds = time.perf_counter() - t0
            status = "up to date" if manifest.up_to_date else "done"
            outcomes.append(StageOutcome(name, status, seconds, manifest, results=results))
            rows = ", ".join(f"{k} {v:,}" for k, v in list(manifest.rows.items())[:3])
            emit(f"[{i:2d}/{n}] {name:<10} {status} in {seconds:.1f} s  {rows}")
            bar.advance()
    return outcomes


def demo_config(
    workdir: str | Path, overrides: dict[str, dict[str, Any]] | None = None
) -> SbeConfig:
    """The built-in demo config (``sbe/configs/demo.toml``) with its outputs under ``workdir``
    and ``overrides`` (``{section: {key: value}}``, e.g. from ``--set``) applied."""
    import tomllib
    from importlib import resources

    from sbe.config import load_config_data

    data = tomllib.loads(resources.files("sbe.configs").joinpath("demo.toml").read_text())
    data["workdir"] = Path(workdir).expanduser().resolve()
    return load_config_data(data, overrides)


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def key_numbers(cfg: SbeConfig) -> list[tuple[str, str, str]]:
    """The headline numbers of a finished run, read from the stages' outputs.

    Returns:
        ``(what, value, compared with)`` rows for a summary table (the report's path, which would
        not fit a table cell, is :func:`report_file`).
    """
    cfg = wire(cfg)
    res = cfg.resolved()
    rows: list[tuple[str, str, str]] = []
    run = _read_json(RunDir(res.train.output).run_json) or {}
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
    evaluate = RunDir(res.evaluate.run).evaluate_dir()
    ev = _read_json(evaluate.result_path(res.evaluate.split)) or {}
    lm = ev.get("landmarks") or {}
    if "projector" in lm and "backbone" in lm:
        rows.append(
            (
                "real photos P@1 (landmarks-mini)",
                f"{lm['projector']['correct@1']}/{lm['images']}",
                f"backbone {lm['backbone']['correct@1']}/{lm['images']}",
            )
        )
    geo = _read_json(GeoDir(res.geo.output).path(GeoDir.METRICS)) or {}
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
    bb = BackboneDir(res.backbone.output).manifest()
    extra = bb.extra if bb is not None else {}
    ips = extra.get("images_per_second")
    if ips:
        rt = extra.get("runtime", "")
        rows.append(
            ("backbone throughput", f"{ips:,.0f} images/s", f"{rt} on {extra.get('device', '')}")
        )
    return rows


def report_file(cfg: SbeConfig) -> Path | None:
    """The finished run's ``report.html`` (``None`` when there is none)."""
    report = ReportDir(wire(cfg).resolved().report.output).path(ReportDir.REPORT)
    return report if report.is_file() else None


# ---- what the `sbe` commands run (sbe.cli.gen calls these; each returns (payload, summary)) ----


def run_stage_command(
    sec: Any, cfg: SbeConfig, *, name: str, restart: bool = False, log: Log = None, **_: Any
) -> tuple[dict[str, Any], Summary]:
    """One stage (``sbe split ...``). A stage that is ``wired_alone`` (``sbe report``) first
    wires its inputs to the other stages' outputs in the work directory; values set in the config
    file or on the command line win."""
    stage = get_stage(name)
    if stage.wired_alone:
        wired = wire(cfg)
        section = stage.section_name()
        given = {k: getattr(sec, k) for k in sec.model_fields_set}
        setattr(wired, section, getattr(wired, section).model_copy(update=given))
        cfg, sec = wired, wired.section(section)
    # looked up on the package at call time, so tests can stand in for the stage
    manifest, results = stages.run_stage(stage, sec, log=log, restart=restart, full_config=cfg)
    payload = {**results, "up_to_date": manifest.up_to_date, **manifest.model_dump(mode="json")}
    return payload, stage.summary(manifest, results, sec)


def run_command(
    opts: RunOptions, cfg: SbeConfig, *, config: Path | None = None, **kw: Any
) -> tuple[dict[str, Any], Summary]:
    """``sbe run``: the pipeline of ``--config``, one line per stage, then the key numbers."""
    if config is None:
        raise ConfigError("sbe run needs --config FILE (or run `sbe demo`)")
    return _run_and_report(opts, cfg, **kw)


def demo_command(
    opts: RunOptions, cfg: SbeConfig, *, workdir: Path | None = None, **kw: Any
) -> tuple[dict[str, Any], Summary]:
    """``sbe demo``: the pipeline of the built-in config (with any ``--set``), outputs under
    ``workdir``."""
    if kw.pop("config", None) is not None:
        raise ConfigError(
            "sbe demo runs the built-in config; run your own with sbe run --config FILE"
        )
    demo = demo_config(workdir or Path("work/demo"), kw.pop("overrides", None))
    return _run_and_report(opts, demo, **kw)


def _run_and_report(
    opts: RunOptions, cfg: SbeConfig, *, notes: Log = None, log: Log = None, **_: Any
) -> tuple[dict[str, Any], Summary]:
    """The pipeline, one line per stage on ``notes`` (stage detail on ``log``), then the key
    numbers."""
    workdir = cfg.workdir.expanduser().resolve()

    def show(line: str) -> None:  # the stages' own (indented) lines only with --verbose
        sink = log if line.startswith(" ") else notes
        if sink is not None:
            sink(line)

    show(f"workdir: {workdir}")
    t0 = time.perf_counter()
    outcomes = run_pipeline(cfg, log=show, restart=opts.restart)
    seconds = time.perf_counter() - t0
    rows = key_numbers(cfg)
    report = report_file(cfg)
    payload = {
        "workdir": str(workdir),
        "seconds": round(seconds, 3),
        "report": report and str(report),
        "stages": [o.to_json() for o in outcomes],
        "key_numbers": [
            dict(zip(("what", "value", "compared_with"), r, strict=True)) for r in rows
        ],
    }
    table = Table("key numbers", ["what", "value", "compared with"], [list(r) for r in rows])
    summary: Summary = [f"pipeline finished in {seconds:.1f} s", table]
    return payload, summary + ([f"report: {report}"] if report is not None else [])


def serve_command(opts: ServeOptions, cfg: SbeConfig, **_: Any) -> tuple[dict[str, Any], Summary]:
    """``sbe serve``: the search service on the index (default: the index stage's output)."""
    from sbe.service.command import serve
    from sbe.service.engine import ServiceSettings
    from sbe.stages.search import local_settings, rerank_settings

    index_dir = opts.index or cfg.resolved().index.output
    # `rerank=true` queries use the [verify] settings, as `sbe search --rerank` does
    settings = ServiceSettings(local=local_settings(cfg.verify), rerank=rerank_settings(cfg.verify))
    serve(
        index_dir,
        opts.model,
        opts.host,
        opts.port,
        opts.workers,
        photos=opts.photos,
        settings=settings,
    )
    return {}, []
