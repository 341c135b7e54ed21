"""``sbe train``: fit the projection head on ``split/train``, select it on ``split/val``, test once.

Output folder (``cfg.output``, the *run*):

- ``best/``: the selected projector (``config.json`` + ``model.safetensors``);
- ``last/``: the latest end-of-epoch checkpoint;
- ``metrics.jsonl``: baseline, step and epoch records;
- ``run.json``: config, backbone identity, input folders, best epoch and validation score, the
  raw backbone's validation metrics, and the test-split metrics of the selected projector next
  to the raw backbone's;
- ``_manifest.json``.

Resume: a run killed part-way (``_in_progress.json`` with the same settings and inputs) continues
from ``last/`` when run again (``sbe run`` or ``sbe train``, no flag needed) and ends with the same
weights as an uninterrupted run; other settings or inputs (or ``restart``) start the run over.
``resume=True`` (``sbe train --resume``) continues ``last/`` whatever left it (e.g. a
``Trainer`` run from Python), refusing changed settings.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from sbe.config import SbeConfig, TrainConfig, section_dict
from sbe.errors import SbeError
from sbe.geo.settings import GeoSettings
from sbe.models.projector import Projector
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.stages.summary import Summary
from sbe.storage import Manifest, config_hash, fingerprint_paths, write_json_atomic
from sbe.storage.artifacts import NeighborsDir, RunDir, SplitDir
from sbe.training.checkpoint import STATE_NAME
from sbe.training.data import load_split
from sbe.training.evaluation import compare_on_split
from sbe.training.loop import METRICS_NAME, JointGeo, Trainer, resolve_device
from sbe.training.settings import TrainSettings

STAGE = "train"
RUN_JSON = RunDir.RUN_JSON
#: what a fresh start removes (the evaluate/ sub-folder is another stage's and stays)
RUN_FILES = (RunDir.BEST, RunDir.LAST, ".old-best", ".old-last", METRICS_NAME, RUN_JSON)


def joint_geo_settings(cfg: TrainConfig, geo: Any | None = None) -> GeoSettings:
    """The geo heads' settings for joint training (``[train] geo_weight > 0``).

    From the ``[geo]`` section ``geo`` when given (``sbe run``, ``sbe train -c CONFIG``): its
    head and loss fields apply: ``hidden_dim``, ``dropout``, ``background_centres``,
    ``centres_per_sample``, ``log_kappa_min``, ``log_kappa_max``, ``background_log_kappa``,
    ``gallery_max``, ``coastal_fallback_px``, ``location_weight``, ``climate_weight``,
    ``season_weight``, ``season_loss``, ``season_hemisphere``, ``label_smoothing`` and ``lr`` (the
    heads' learning rate). The rest of ``[geo]`` (epochs, batch size, weight decay, warm-up,
    clipping, patience, selection, seed) does not: the heads follow the projector's schedule and
    selection, and ``seed`` is ``[train] seed``. Without a section: the ``[geo]`` defaults.
    """
    return GeoSettings.of(geo if geo is not None else GeoSettings(), seed=cfg.seed)


def _joint_geo(cfg: TrainConfig, geo: Any | None = None) -> JointGeo:
    """Geo heads on the projector output, trained with it (``[train] geo_weight``).

    The heads follow :func:`joint_geo_settings` (centres from the train split's coordinates);
    labels are the train rows' location, Köppen-Geiger class and capture date.
    """
    from sbe.geo.build import heads_from_config, loss_from_config
    from sbe.geo.labels import labels_from_table

    settings = joint_geo_settings(cfg, geo)
    train_file = SplitDir(cfg.input).split_path("train")
    names = pq.read_schema(train_file).names
    columns = [c for c in ("target_lat", "target_lon", "capture_date") if c in names]
    table = pq.read_table(train_file, columns=columns)
    lat = table.column("target_lat").to_numpy()
    lon = table.column("target_lon").to_numpy()
    # seeded here, not by whatever ran before: the same config gives the same heads
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        heads = heads_from_config(settings, lat, lon, in_dim=cfg.output_dim)
    return JointGeo(
        heads=heads,
        loss=loss_from_config(settings),
        labels=labels_from_table(table, fallback_px=settings.coastal_fallback_px),
        weight=cfg.geo_weight,
        lr=settings.lr,
        settings=settings.to_dict(),
    )


def _checkpoint_key(run_dir: Path) -> str | None:
    """The run key stored in ``last/`` (``None``: no readable checkpoint)."""
    try:
        payload = json.loads((RunDir(run_dir).last / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None
    key = (payload.get("trainer") or {}).get("key")
    return key if isinstance(key, str) else None


def _clear_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


class TrainStage(Stage):
    """``sbe train``: see the module docstring.

    Args:
        resume: continue ``last/`` even when no interrupted run of this stage is recorded
            (``sbe train --resume``); changed settings are refused.
    """

    name = "train"
    inputs = (Input("input", "split"), Input("neighbors", "neighbors"))

    def __init__(self, resume: bool = False) -> None:
        self.resume = resume

    def wire(self, cfg: SbeConfig, skipped: set[str]) -> None:
        # the band curriculum reads an existing neighbours folder even when its stage is skipped
        if "neighbors" in skipped and cfg.train.curriculum == "bands":
            cfg.train.neighbors = cfg.neighbors.output

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        return [f"best val mAP@R {m.extra.get('best_val_map@r', float('nan')):.4f}"]

    def run(self, cfg: TrainConfig, ctx: StageContext) -> Manifest:
        """Train (or continue) the run in ``cfg.output``, test its best head, write ``run.json``.

        Returns:
            The manifest; ``extra`` holds the backbone, the best validation score and the test
            metrics (also in ``ctx.results``).

        Raises:
            SbeError: missing inputs, or ``resume`` with changed settings or nothing to resume.
        """
        out = ctx.out_dir
        use_neighbors = cfg.curriculum == "bands"
        if use_neighbors and cfg.neighbors is None:
            raise SbeError("curriculum 'bands' needs a neighbours folder (--neighbors DIR)")
        split_dir = SplitDir(cfg.input)
        input_files = [split_dir.require_split(s) for s in ("train", "val")]
        test_file = split_dir.split_path("test")
        if test_file.is_file():
            input_files.append(test_file)
        if use_neighbors:
            input_files.append(NeighborsDir(cfg.neighbors).require_split("train"))  # type: ignore[arg-type]
        geo_section = ctx.full_config.geo if ctx.full_config is not None else None
        geo_settings = joint_geo_settings(cfg, geo_section) if cfg.geo_weight > 0 else None
        extra = {"geo": geo_settings.to_dict()} if geo_settings is not None else {}
        if (done := ctx.check(fingerprint_paths(input_files), **extra)) is not None:
            ctx.results.update(done.extra)
            return done
        # what a checkpoint must match to be continued: settings and inputs
        key = config_hash({"config": ctx.hash, "inputs": [i.model_dump() for i in ctx.inputs]})
        resume = self.resume or cfg.resume or (ctx.resuming and _checkpoint_key(out) == key)
        if not resume:
            _clear_run(out)
        train = load_split(cfg.input, "train", cfg.neighbors if use_neighbors else None)
        val = load_split(cfg.input, "val")
        ctx.log(
            f"train: {len(train):,} images of {len(set(train.building_ids.tolist())):,} identities;"
            f" val: {len(val):,} images"
        )
        geo = _joint_geo(cfg, geo_section) if cfg.geo_weight > 0 else None
        trainer = Trainer(
            TrainSettings.of(cfg),
            train,
            val,
            run_dir=out,
            console=ctx.log,
            show_progress=ctx.show_progress,
            geo=geo,
            key=key,
        )
        result = trainer.fit(resume=resume)

        device = resolve_device(cfg.device)
        run_dir = RunDir(out)
        best = Projector.from_pretrained(run_dir.best, device=device)
        test: dict[str, Any] | None = None
        if test_file.is_file():
            test = compare_on_split(best, load_split(cfg.input, "test"), device=device)
            ctx.log(
                "test ({} queries): backbone R@1 {:.4f} mAP@R {:.4f} | projector R@1 {:.4f} "
                "mAP@R {:.4f}".format(
                    test["queries"],
                    test["backbone"]["recall@1"],
                    test["backbone"]["map@r"],
                    test["projector"]["recall@1"],
                    test["projector"]["map@r"],
                )
            )
        versus = _val_versus_backbone(trainer.best_score, result.baseline)
        if versus["head_below_backbone"]:
            ctx.log(
                f"train: WARNING: the head ends below the raw backbone on val (mAP@R "
                f"{versus['head_map@r']:.4f} < {versus['backbone_map@r']:.4f}): the backbone "
                "alone retrieves better; `sbe publish` refuses this run without --force "
                "(more data, a larger area or other settings may help)"
            )
        backbone = split_dir.backbone()
        identity = backbone.to_dict() if backbone is not None else None
        record = {
            "config": section_dict(cfg),
            "backbone": identity,
            # relative to the run folder, so a moved work folder keeps working (RunDir resolves)
            "input": run_dir.relative(cfg.input),
            "neighbors": run_dir.relative(cfg.neighbors) if use_neighbors else None,  # type: ignore[arg-type]
            "projector": best.config.model_dump(),
            "geo_heads": geo_settings.to_dict() if geo_settings is not None else None,
            "best_epoch": trainer.best_epoch,
            "best_val_map@r": trainer.best_score,
            "val_queries": len(trainer.val_queries),
            "epochs_completed": trainer.epoch,
            "stopped_early": trainer.stopped_early,
            "val_baseline": result.baseline or None,
            "val_vs_backbone": versus,
            "test": test,
        }
        write_json_atomic(run_dir.run_json, record)
        rows = {
            "train_images": len(train),
            "val_images": len(val),
            "epochs": trainer.epoch,
            "best_epoch": trainer.best_epoch,
        }
        if test is not None:
            rows["test_images"] = test["images"]
        summary = {
            "backbone": identity,
            "best_val_map@r": trainer.best_score,
            "test": test,
            "val_vs_backbone": versus,
        }
        ctx.results.update(summary)
        return ctx.commit(
            outputs=[
                *(f"{RunDir.BEST}/{n}" for n in RunDir.PROJECTOR_FILES),
                f"{RunDir.LAST}/{STATE_NAME}",
                METRICS_NAME,
                RUN_JSON,
            ],
            rows=rows,
            extra=summary,
        )


def _val_versus_backbone(head: float, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The selected head's val mAP@R against the raw backbone's (``None`` when not measured)."""
    base = (baseline or {}).get("map@r")
    return {
        "head_map@r": head,
        "backbone_map@r": base,
        "head_below_backbone": base is not None and head < base,
    }


def run(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    console: Callable[[str], None] | None = None,
    **options: Any,
) -> Manifest:
    """Train (or continue) a projector run in ``cfg.output`` (the :class:`TrainStage`).

    Args:
        cfg: the resolved ``train`` config section.
        resume: continue the checkpoint in ``cfg.output`` whatever left it (a killed run of
            this stage is continued without it).
        console: receives progress lines (``None`` = silent).
        **options: :func:`sbe.stages.base.run_stage` options (``show_progress``, ``restart``,
            ``full_config``: its ``[geo]`` section shapes joint geo heads).

    Returns:
        The run's manifest (``up_to_date`` when the same config already finished on the same
        inputs); ``extra`` holds the best validation score and the test metrics.
    """
    options.setdefault("log", console)
    return run_stage(TrainStage(resume=resume), cfg, **options)[0]
