"""Hyper-parameter search space and objective for Optuna.

Every trial trains on the same data with :class:`~sbe.training.loop.Trainer` and is scored the way
runs are selected: validation mAP@R on the fixed, seeded query set (the query count and seed come
from the base ``[train]`` config and are never tuned), reported after every epoch so that a pruner
can stop weak trials early. The objective is the trial's *best* epoch, like model selection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna

from sbe.training.data import EmbeddingSet
from sbe.training.loop import Trainer
from sbe.training.settings import TrainSettings

#: settings that define the evaluation; trials must share them to be comparable
FIXED_KEYS = ("val_queries", "seed")


def suggest_params(
    trial: optuna.Trial,
    losses: Sequence[str],
    curricula: Sequence[str],
) -> dict[str, Any]:
    """Draw one point of the search space (head, loss, sampler, optimiser).

    Conditional parameters are only drawn where they matter (e.g. ``margin`` for the triplet loss,
    UCB settings for the band curriculum).
    """
    p: dict[str, Any] = {}
    p["num_hidden_layers"] = trial.suggest_int("num_hidden_layers", 0, 2)
    if p["num_hidden_layers"] > 0:
        p["hidden_dim"] = trial.suggest_categorical("hidden_dim", [256, 512, 1024, 2048])
        p["activation"] = trial.suggest_categorical("activation", ["gelu", "relu", "silu"])
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.4)
        p["layer_norm"] = trial.suggest_categorical("layer_norm", [True, False])
    p["residual"] = trial.suggest_categorical("residual", [True, False])
    if p["residual"]:
        p["residual_init"] = trial.suggest_categorical(
            "residual_init", ["whitening", "pca", "random"]
        )
        if p["residual_init"] == "whitening":
            p["whitening_shrinkage"] = trial.suggest_float(
                "whitening_shrinkage", 0.01, 3.0, log=True
            )
        p["residual_lr_scale"] = trial.suggest_categorical(
            "residual_lr_scale", [0.0, 0.01, 0.1, 1.0]
        )
    p["loss"] = trial.suggest_categorical("loss", list(losses))
    if p["loss"] == "triplet":
        p["margin"] = trial.suggest_float("margin", 0.05, 0.6)
        p["distance"] = trial.suggest_categorical("distance", ["cosine", "euclidean"])
    elif p["loss"] == "multi_similarity":
        p["ms_beta"] = trial.suggest_float("ms_beta", 10.0, 80.0, log=True)
        p["ms_base"] = trial.suggest_float("ms_base", 0.3, 0.8)
    elif p["loss"] == "supcon":
        p["temperature"] = trial.suggest_float("temperature", 0.02, 0.3, log=True)
    p["identities_per_batch"] = trial.suggest_categorical("identities_per_batch", [32, 64, 128])
    p["images_per_identity"] = trial.suggest_categorical("images_per_identity", [2, 4, 6])
    p["curriculum"] = trial.suggest_categorical("curriculum", list(curricula))
    if p["curriculum"] == "bands":
        p["ucb_exploration"] = trial.suggest_float("ucb_exploration", 0.05, 3.0, log=True)
        p["ucb_warmup_steps"] = trial.suggest_int("ucb_warmup_steps", 0, 300, step=50)
    p["lr"] = trial.suggest_float("lr", 1e-5, 3e-3, log=True)
    p["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    return p


def make_objective(
    base: TrainSettings | Any,
    train: EmbeddingSet,
    val: EmbeddingSet,
    *,
    epochs: int,
    losses: Sequence[str],
    curricula: Sequence[str],
    device: str,
    on_trial_end: Callable[[optuna.Trial, float, dict[str, Any]], None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective maximising the trial's best validation mAP@R.

    Args:
        base: the settings every trial starts from (:class:`TrainSettings`, or an object with its
            names such as the ``[train]`` section); its ``val_queries`` and ``seed`` fix the
            evaluation.
        train, val: data loaded once for all trials.
        epochs: epochs per trial (early stopping off; the pruner decides instead).
        losses, curricula: the choices open to the search.
        device: where trials train.
        on_trial_end: called with ``(trial, score, params)`` after a completed trial.
    """

    start = TrainSettings.of(base)

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, losses, curricula)
        cfg = start.replace(**params, epochs=epochs, patience=0, device=device)

        def report(epoch: int, score: float) -> None:
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} (mAP@R {score:.4f})")

        result = Trainer(cfg, train, val, run_dir=None, show_progress=False).fit(
            on_epoch_end=report
        )
        trial.set_user_attr("best_epoch", result.best_epoch)
        if on_trial_end is not None:
            on_trial_end(trial, result.best_score, params)
        return result.best_score

    return objective
