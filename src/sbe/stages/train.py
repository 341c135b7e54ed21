"""``sbe train``: fit the projection head on ``split/train``, select it on ``split/val``, test once.

Output folder (``cfg.output``, the *run*):

- ``best/``: the selected projector (``config.json`` + ``model.safetensors``);
- ``last/``: the latest end-of-epoch checkpoint (resumable with ``resume=True``);
- ``metrics.jsonl``: baseline, step and epoch records;
- ``run.json``: config, backbone identity, input folders, best epoch and validation score, and the
  test-split metrics of the selected projector next to the raw backbone's;
- ``_manifest.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from sbe.config import SbeConfig, TrainConfig, section_dict
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.stages.base import Input, Stage, StageContext
from sbe.storage import (
    DirLock,
    Manifest,
    StageTimer,
    config_hash,
    fingerprint_paths,
    manifest_is_current,
    write_json_atomic,
    write_manifest,
)
from sbe.training.data import backbone_identity, load_split, split_path
from sbe.training.evaluation import compare_on_split
from sbe.training.loop import METRICS_NAME, RESUME_FREE_KEYS, JointGeo, Trainer, resolve_device

STAGE = "train"
RUN_JSON = "run.json"


def _hash(cfg: TrainConfig) -> str:
    return config_hash({k: v for k, v in section_dict(cfg).items() if k not in RESUME_FREE_KEYS})


def _joint_geo(cfg: TrainConfig) -> JointGeo:
    """Geo heads on the projector output, trained with it (``[train] geo_weight``).

    The heads use the ``[geo]`` defaults (centres from the train split's coordinates); labels
    are the train rows' location, Köppen-Geiger class and capture date.
    """
    from sbe.config import GeoConfig
    from sbe.geo.build import heads_from_config, loss_from_config
    from sbe.geo.labels import labels_from_table

    geo_cfg = GeoConfig(seed=cfg.seed)
    names = pq.read_schema(split_path(cfg.input, "train")).names
    columns = [c for c in ("target_lat", "target_lon", "capture_date") if c in names]
    table = pq.read_table(split_path(cfg.input, "train"), columns=columns)
    lat = table.column("target_lat").to_numpy()
    lon = table.column("target_lon").to_numpy()
    # seeded here, not by whatever ran before: the same config gives the same heads
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        heads = heads_from_config(geo_cfg, lat, lon, in_dim=cfg.output_dim)
    return JointGeo(
        heads=heads,
        loss=loss_from_config(geo_cfg),
        labels=labels_from_table(table),
        weight=cfg.geo_weight,
        lr=geo_cfg.lr,
    )


def run(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    console: Callable[[str], None] | None = None,
    show_progress: bool | None = None,
) -> Manifest:
    """Train (or resume) a projector run in ``cfg.output``.

    Args:
        cfg: the resolved ``train`` config section.
        resume: continue the run in ``cfg.output`` from its last checkpoint.
        console: receives progress lines (``None`` = silent).
        show_progress: live progress bar (``None`` = only on a terminal).

    Returns:
        The run's manifest (``up_to_date`` when the same config already finished on the same
        inputs); ``extra`` holds the best validation score and the test metrics.

    Raises:
        SbeError: missing inputs, an existing run without ``resume``, or a changed config on resume.
    """
    timer = StageTimer()
    say = console or (lambda _m: None)
    out = Path(cfg.output)
    use_neighbors = cfg.curriculum == "bands"
    if use_neighbors and cfg.neighbors is None:
        raise SbeError("curriculum 'bands' needs a neighbours folder (--neighbors DIR)")
    input_files = [split_path(cfg.input, s) for s in ("train", "val")]
    test_file = split_path(cfg.input, "test")
    if test_file.is_file():
        input_files.append(test_file)
    if use_neighbors:
        input_files += [Path(cfg.neighbors) / f"{s}.parquet" for s in ("train",)]
    for f in input_files:
        if not f.is_file():
            raise SbeError(f"input not found: {f}")
    inputs = fingerprint_paths(input_files)
    h = _hash(cfg)

    with DirLock(out):
        current = manifest_is_current(out, STAGE, h, inputs)
        if current is not None and not resume:
            return current
        if not resume and ((out / "last").exists() or (out / ".old-last").exists()):
            raise SbeError(
                f"{out} already holds a training run (unfinished, or made with other settings or "
                "inputs); pass --resume to continue it, or choose a new --out"
            )
        train = load_split(cfg.input, "train", cfg.neighbors if use_neighbors else None)
        val = load_split(cfg.input, "val")
        say(
            f"train: {len(train):,} images of {len(set(train.building_ids.tolist())):,} identities;"
            f" val: {len(val):,} images"
        )
        geo = _joint_geo(cfg) if cfg.geo_weight > 0 else None
        trainer = Trainer(
            cfg, train, val, run_dir=out, console=say, show_progress=show_progress, geo=geo
        )
        result = trainer.fit(resume=resume)

        device = resolve_device(cfg.device)
        best = Projector.from_pretrained(out / "best", device=device)
        test: dict[str, Any] | None = None
        if test_file.is_file():
            test = compare_on_split(best, load_split(cfg.input, "test"), device=device)
            say(
                "test ({} queries): backbone R@1 {:.4f} mAP@R {:.4f} | projector R@1 {:.4f} "
                "mAP@R {:.4f}".format(
                    test["queries"],
                    test["backbone"]["recall@1"],
                    test["backbone"]["map@r"],
                    test["projector"]["recall@1"],
                    test["projector"]["map@r"],
                )
            )
        identity = backbone_identity(cfg.input)
        record = {
            "config": section_dict(cfg),
            "backbone": identity,
            "input": str(cfg.input),
            "neighbors": str(cfg.neighbors) if use_neighbors else None,
            "projector": best.config.model_dump(),
            "best_epoch": trainer.best_epoch,
            "best_val_map@r": trainer.best_score,
            "val_queries": len(trainer.val_queries),
            "epochs_completed": trainer.epoch,
            "stopped_early": trainer.stopped_early,
            "val_baseline": result.baseline or None,
            "test": test,
        }
        write_json_atomic(out / RUN_JSON, record)
        outputs = [
            "best/config.json",
            "best/model.safetensors",
            "last/trainer_state.json",
            METRICS_NAME,
            RUN_JSON,
        ]
        rows = {
            "train_images": len(train),
            "val_images": len(val),
            "epochs": trainer.epoch,
            "best_epoch": trainer.best_epoch,
        }
        if test is not None:
            rows["test_images"] = test["images"]
        manifest = Manifest(
            stage=STAGE,
            config=section_dict(cfg),
            config_hash=h,
            inputs=inputs,
            outputs=outputs,
            rows=rows,
            wall_seconds=timer.seconds,
            extra={
                "backbone": identity,
                "best_val_map@r": trainer.best_score,
                "test": test,
            },
        )
        write_manifest(out, manifest)
        return manifest


class TrainStage(Stage):
    """``sbe train``: see the module docstring."""

    name = "train"
    inputs = (Input("input", "split"), Input("neighbors", "neighbors"))
    examples = (
        "sbe train --in work/split --neighbors work/neighbors --out work/run",
        "sbe train --in work/split --out work/run --loss triplet --epochs 10",
    )
    legacy = True  # not yet on StageContext: locks and commits by itself

    def wire(self, cfg: SbeConfig, skipped: set[str]) -> None:
        # the band curriculum reads an existing neighbours folder even when its stage is skipped
        if "neighbors" in skipped and cfg.train.curriculum == "bands":
            cfg.train.neighbors = cfg.neighbors.output

    def run(self, cfg: Any, ctx: StageContext) -> Manifest:
        return run(cfg, resume=ctx.resuming, console=ctx.log, show_progress=ctx.show_progress)
