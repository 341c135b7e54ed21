"""``sbe tune``: Optuna search over the projector's head, loss and sampler settings.

The study lives in an Optuna storage (by default ``sqlite:///OUT/study.db``); several workers
started with the same ``--storage`` and study name share it (``load_if_exists``); give each worker
its own ``seed`` so their samplers differ. The TPE sampler is seeded, a median pruner stops weak
trials after ``pruner_warmup_epochs`` using the per-epoch validation mAP@R, and every trial is
scored on the same fixed validation query set.

Outputs in ``cfg.output``: ``best_params.toml`` (a ``[train]`` snippet to paste into a config),
``best_params.json`` (score, trial number, counts), ``_manifest.json``. The output folder is
locked while a worker runs: workers that share a study run at the same time each need their own
``--out`` (and the same ``--storage``). A finished worker is up to date until its settings, the
base ``[train]`` settings or the splits change (``restart`` runs its trials again).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import tomli_w

from sbe.config import TrainConfig, TuneConfig
from sbe.errors import SbeError
from sbe.stages.base import Input, Stage, StageContext, run_stage
from sbe.stages.summary import Summary
from sbe.storage import Manifest, atomic_path, fingerprint_paths, write_json_atomic
from sbe.storage.artifacts import TuneDir
from sbe.training.data import load_split, split_path
from sbe.training.loop import RESUME_FREE_KEYS
from sbe.training.settings import TrainSettings
from sbe.training.tuning import make_objective

STAGE = "tune"


def storage_url(cfg: TuneConfig) -> str:
    return cfg.storage or f"sqlite:///{Path(cfg.output).resolve() / 'study.db'}"


class TuneStage(Stage):
    """``sbe tune``: see the module docstring.

    Args:
        base: the ``[train]`` section trials start from when the context has no full config
            (``ctx.full_config.train`` wins when given); ``None``: the ``[train]`` defaults.
    """

    name = "tune"
    inputs = (Input("input", "split"), Input("neighbors", "neighbors"))

    def __init__(self, base: TrainConfig | None = None) -> None:
        self.base = base

    def result_lines(self, m: Manifest, results: dict[str, Any], cfg: Any) -> Summary:
        best = f"best val mAP@R {m.extra['best_value']:.4f} (trial {m.extra['best_trial']})"
        return [f"{best} -> {TuneDir(cfg.output).path(TuneDir.BEST_TOML)}"]

    def run(self, cfg: TuneConfig, ctx: StageContext) -> Manifest:
        """Run ``cfg.trials`` trials of the shared study and write the best parameters so far.

        Returns:
            The manifest (``extra``: the study summary, also in ``ctx.results``).
        """
        if ctx.full_config is not None:
            base: TrainConfig = ctx.full_config.train
        else:
            base = self.base if self.base is not None else TrainConfig()
        out = ctx.out_dir
        curricula = list(cfg.curricula)
        nb_dir = Path(cfg.neighbors) if cfg.neighbors is not None else None
        has_nb = nb_dir is not None and (nb_dir / "train.parquet").is_file()
        if "bands" in curricula and not has_nb:
            curricula = [c for c in curricula if c != "bands"]
            ctx.log("no neighbour table found: the band curriculum is left out of the search")
        if not curricula:
            raise SbeError("no curriculum left to search (bands needs --neighbors)")
        read = [split_path(cfg.input, s) for s in ("train", "val")]
        if "bands" in curricula:
            read.append(nb_dir / "train.parquet")  # type: ignore[operator]
        train_settings = TrainSettings.of(base)
        hashed = {k: v for k, v in train_settings.to_dict().items() if k not in RESUME_FREE_KEYS}
        done = ctx.check(
            fingerprint_paths(read), train=hashed, storage=storage_url(cfg), curricula=curricula
        )
        if done is not None:
            ctx.results.update(done.extra)
            return done
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
            ctx.log(f"trial {trial.number}: val mAP@R {score:.4f}  {params}")

        objective = make_objective(
            train_settings,
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
        params = dict(best.params)
        with atomic_path(out / TuneDir.BEST_TOML) as tmp:
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
        write_json_atomic(out / TuneDir.BEST_JSON, summary)
        ctx.results.update(summary)
        return ctx.commit(
            outputs=[TuneDir.BEST_TOML, TuneDir.BEST_JSON], rows=counts, extra=summary
        )


def run(
    cfg: TuneConfig,
    base: TrainConfig | None = None,
    *,
    console: Callable[[str], None] | None = None,
    **options: Any,
) -> Manifest:
    """Run the :class:`TuneStage` from Python.

    Args:
        cfg: the resolved ``tune`` section.
        base: the resolved ``train`` section trials start from (``options["full_config"]``'s
            wins when given).
        console: receives one line per trial.
        **options: :func:`sbe.stages.base.run_stage` options.
    """
    options.setdefault("log", console)
    return run_stage(TuneStage(base), cfg, **options)[0]
