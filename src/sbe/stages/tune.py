"""``sbe tune``: Optuna search over the projector's head, loss and sampler settings.

The study lives in an Optuna storage (by default ``sqlite:///OUT/study.db``); several workers
started with the same ``--storage`` and study name share it (``load_if_exists``); give each worker
its own ``seed`` so their samplers differ. The TPE sampler is seeded, a median pruner stops weak
trials after ``pruner_warmup_epochs`` using the per-epoch validation mAP@R, and every trial is
scored on the same fixed validation query set.

Outputs in ``cfg.output``: ``best_params.toml`` (a ``[train]`` snippet to paste into a config),
``best_params.json`` (score, trial number, counts), ``_manifest.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import tomli_w

from sbe.config import TrainConfig, TuneConfig, section_dict
from sbe.errors import SbeError
from sbe.storage import (
    Manifest,
    StageTimer,
    atomic_path,
    config_hash,
    fingerprint_paths,
    write_json_atomic,
    write_manifest,
)
from sbe.training.data import load_split, split_path
from sbe.training.tuning import make_objective

STAGE = "tune"


def storage_url(cfg: TuneConfig) -> str:
    return cfg.storage or f"sqlite:///{Path(cfg.output).resolve() / 'study.db'}"


def run(
    cfg: TuneConfig, base: TrainConfig, *, console: Callable[[str], None] | None = None
) -> Manifest:
    """Run ``cfg.trials`` trials of the shared study and write the best parameters so far.

    Args:
        cfg: the resolved ``tune`` section.
        base: the resolved ``train`` section trials start from.
        console: receives one line per trial.
    """
    timer = StageTimer()
    say = console or (lambda _m: None)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    curricula = list(cfg.curricula)
    nb_dir = Path(cfg.neighbors) if cfg.neighbors is not None else None
    has_nb = nb_dir is not None and (nb_dir / "train.parquet").is_file()
    if "bands" in curricula and not has_nb:
        curricula = [c for c in curricula if c != "bands"]
        say("no neighbour table found: the band curriculum is left out of the search")
    if not curricula:
        raise SbeError("no curriculum left to search (bands needs --neighbors)")
    inputs = [split_path(cfg.input, s) for s in ("train", "val")]
    train = load_split(cfg.input, "train", nb_dir if "bands" in curricula else None)
    val = load_split(cfg.input, "val")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage_url(cfg),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=3, n_warmup_steps=cfg.pruner_warmup_epochs
        ),
        direction="maximize",
        load_if_exists=True,
    )

    def trial_done(trial: optuna.Trial, score: float, params: dict[str, Any]) -> None:
        say(f"trial {trial.number}: val mAP@R {score:.4f}  {params}")

    objective = make_objective(
        base,
        train,
        val,
        epochs=cfg.epochs,
        losses=cfg.losses,
        curricula=curricula,
        device=cfg.device,
        on_trial_end=trial_done,
    )
    study.optimize(objective, n_trials=cfg.trials, catch=())

    states = [t.state for t in study.trials]
    counts = {
        "trials_complete": sum(s == optuna.trial.TrialState.COMPLETE for s in states),
        "trials_pruned": sum(s == optuna.trial.TrialState.PRUNED for s in states),
        "trials_failed": sum(s == optuna.trial.TrialState.FAIL for s in states),
    }
    if counts["trials_complete"] == 0:
        raise SbeError("no trial completed")
    best = study.best_trial
    params = {k: v for k, v in best.params.items()}
    with atomic_path(out / "best_params.toml") as tmp:
        tmp.write_text(
            f"# best of {counts['trials_complete']} complete trials of study "
            f"{cfg.study_name!r}: val mAP@R {best.value:.4f} (trial {best.number}, "
            f"{cfg.epochs} epochs)\n" + tomli_w.dumps({"train": params})
        )
    summary = {
        "study": cfg.study_name,
        "storage": storage_url(cfg),
        "best_value": best.value,
        "best_trial": best.number,
        "best_epoch": best.user_attrs.get("best_epoch"),
        "params": params,
        "metric": "val map@r (fixed seeded query set)",
        **counts,
    }
    write_json_atomic(out / "best_params.json", summary)
    manifest = Manifest(
        stage=STAGE,
        config={"tune": section_dict(cfg), "train": section_dict(base)},
        config_hash=config_hash({"tune": section_dict(cfg), "train": section_dict(base)}),
        inputs=fingerprint_paths(inputs),
        outputs=["best_params.toml", "best_params.json"],
        rows=counts,
        wall_seconds=timer.seconds,
        extra=summary,
    )
    write_manifest(out, manifest)
    return manifest
