"""The training loop: P x K batches by index, one loss, UCB band curriculum, model selection on
validation mAP@R, early stopping, exact resume.

:class:`Trainer` is usable without the CLI (``Trainer(cfg, train, val, run_dir=...).fit()``) and
without a run folder (``run_dir=None``: nothing is written, as in hyper-parameter search).

Run folder (when given):

- ``best/``: the projector with the best validation mAP@R so far (``save_pretrained``);
- ``last/``: the latest end-of-epoch checkpoint (see :mod:`sbe.training.checkpoint`);
- ``metrics.jsonl``: one JSON object per line; ``kind`` is ``baseline`` (raw backbone on the
  validation queries), ``init`` (the head before training, epoch 0), ``step`` (every
  ``log_every`` steps) or ``epoch``.

Model selection considers the initial head (epoch 0) and every epoch; the best validation mAP@R
wins.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbe.device import resolve_device
from sbe.errors import SbeError
from sbe.models.projector import Projector, ProjectorConfig
from sbe.progress import progress_bar
from sbe.storage import atomic_path
from sbe.training.checkpoint import (
    load_checkpoint,
    recover_dir,
    save_checkpoint,
    write_dir_atomic,
)
from sbe.training.data import EmbeddingSet
from sbe.training.losses import Triplets, build_loss, informative_triplets
from sbe.training.metrics import retrieval_metrics, sample_queries
from sbe.training.samplers import Batch, PKSampler, UCB1Bandit
from sbe.training.schedule import FitResult, residual_param_groups, warmup_cosine_scheduler
from sbe.training.schedule import warmup_cosine as warmup_cosine
from sbe.training.settings import TrainSettings
from sbe.training.whitening import learned_whitening, pca_projection

METRICS_NAME = "metrics.jsonl"
VAL_KS = (1, 5, 10)
#: settings that may change between an interrupted run and its resume (the paths are old
#: checkpoints' keys: settings written before the library had its own settings object) between an interrupted run and its resume
RESUME_FREE_KEYS = frozenset({"device", "log_every", "input", "neighbors", "output"})


def projector_config(cfg: TrainSettings, input_dim: int) -> ProjectorConfig:
    """The head architecture of ``cfg`` on ``input_dim``-d backbone embeddings."""
    # every architecture field but the input size has a same-named training setting
    names = set(ProjectorConfig.model_fields) - {"model_type", "input_dim"}
    return ProjectorConfig(input_dim=input_dim, **{n: getattr(cfg, n) for n in names})


@torch.no_grad()
def init_residual(model: Projector, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Start the head as the linear map ``weight @ x + bias`` on its residual path.

    The MLP's last Linear starts at zero, so at step 0 the head *is* that (closed-form) projection
    and training learns corrections on top of it. Starting from a projection of the backbone
    (rather than a random one) keeps features the training data does not exercise, which matters
    on photos unlike the training data.
    """
    if model.residual is None:
        raise ValueError("a residual initialisation needs residual=True")
    dev = model.residual.weight.device
    model.residual.weight.copy_(weight.to(dev))
    model.residual.bias.copy_(bias.to(dev))
    model.output_layer.weight.zero_()
    model.output_layer.bias.zero_()


param_groups = residual_param_groups  # the name callers know


@dataclass
class JointGeo:
    """An auxiliary geographic task trained with the projector (``[train] geo_weight``).

    The heads read the projector's output, so the geo loss shapes the retrieval embedding; only
    the projector is saved as the run's model. Built by the train stage (see ``sbe.geo.build``).

    Attributes:
        heads: a module mapping (B, output_dim) embeddings to the geo outputs; ``clamp_()`` is
            called after each optimiser step when it has one.
        loss: ``loss(outputs, labels) -> (loss, parts)``.
        labels: per-train-row targets, indexable by a (B,) row tensor, with ``.to(device)``.
        weight: the geo loss's weight beside the metric loss.
        lr: learning rate of the heads.
        settings: JSON-ready settings the heads and loss were built with; stored in checkpoints
            so that a resume with other heads is refused.
    """

    heads: torch.nn.Module
    loss: Callable[[Any, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    labels: Any
    weight: float
    lr: float = 1e-3
    settings: dict[str, Any] | None = None


class Trainer:
    """Trains a :class:`Projector` on one split, selects it on another.

    Args:
        cfg: the settings (:class:`TrainSettings`, or any object with its attribute names,
            such as the ``[train]`` section, converted with :meth:`TrainSettings.of`).
        train: training split (its neighbour table is needed for ``curriculum = "bands"``).
        val: validation split: the fixed, seeded query set (``cfg.val_queries`` eligible rows) is
            searched against the whole split, query excluded.
        run_dir: where checkpoints and ``metrics.jsonl`` go; ``None`` writes nothing.
        console: receives one summary line per epoch (``None`` = silent).
        show_progress: live progress bar (``None`` = only when stderr is a terminal).
        geo: an auxiliary geographic task trained jointly (``None`` = identity loss only).
        key: stored in checkpoints: identifies the run (settings and inputs) for callers that
            decide whether a checkpoint may be continued.
    """

    def __init__(
        self,
        cfg: TrainSettings | Any,
        train: EmbeddingSet,
        val: EmbeddingSet,
        *,
        run_dir: str | Path | None = None,
        console: Callable[[str], None] | None = None,
        show_progress: bool | None = None,
        geo: JointGeo | None = None,
        key: str = "",
    ) -> None:
        cfg = self.cfg = TrainSettings.of(cfg)
        self.key = key
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.console = console or (lambda _msg: None)
        self.show_progress = show_progress
        self.device = resolve_device(cfg.device)
        if val.dim != train.dim:
            raise SbeError(f"train has {train.dim}-d embeddings but val has {val.dim}-d")
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)

        self.model = Projector(projector_config(cfg, train.dim)).to(self.device)
        if cfg.residual and cfg.residual_init != "random":
            if cfg.residual_init == "pca":
                w, b = pca_projection(train.embeddings, cfg.output_dim, cfg.seed)
            else:
                w, b = learned_whitening(
                    train.embeddings,
                    train.building_ids,
                    cfg.output_dim,
                    cfg.whitening_shrinkage,
                    cfg.seed,
                )
            init_residual(self.model, w, b)
        self.embeddings = train.embeddings.to(self.device)

        use_bands = cfg.curriculum == "bands"
        if use_bands and not train.has_neighbors:
            raise SbeError("curriculum 'bands' needs the neighbour table (--neighbors DIR)")
        self.sampler = PKSampler(
            train.building_ids,
            cfg.identities_per_batch,
            cfg.images_per_identity,
            cfg.steps_per_epoch,
            cfg.min_steps_per_epoch,
            neighbor_rows=train.neighbor_rows if use_bands else None,
            neighbor_band=train.neighbor_band if use_bands else None,
        )
        self.bandit: UCB1Bandit | None = None
        if use_bands:
            if self.sampler.n_bands == 0:
                raise SbeError("the neighbour table has no banded neighbours")
            self.bandit = UCB1Bandit(
                self.sampler.n_bands, cfg.ucb_exploration, cfg.ucb_warmup_steps
            )
        # TrainSettings extends LossSettings: the loss reads its own fields of it
        self.loss_fn = build_loss(cfg.loss, cfg).to(self.device)
        groups = param_groups(self.model, cfg.lr, cfg.residual_lr_scale)
        self.geo = geo
        if geo is not None:
            geo.heads.to(self.device)
            geo.labels = geo.labels.to(self.device)
            # no weight decay on the heads: their learned log-concentrations must not shrink
            groups.append(
                {"params": list(geo.heads.parameters()), "lr": geo.lr, "weight_decay": 0.0}
            )
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._clipped = [p for g in groups for p in g["params"]]  # projector (+ geo heads)
        self.total_steps = cfg.epochs * self.sampler.steps_per_epoch
        self.scheduler = warmup_cosine_scheduler(self.optimizer, cfg.warmup_steps, self.total_steps)
        self.use_amp = cfg.amp and self.device.type == "cuda"

        self.val = val
        self.val_embeddings = val.embeddings.to(self.device)
        self.val_queries = sample_queries(val.building_ids, cfg.val_queries, cfg.seed)
        if len(self.val_queries) == 0:
            raise SbeError("the validation split has no identity with 2 or more images")

        self.epoch = 0
        self.global_step = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_early = False

    # ---- evaluation --------------------------------------------------------------------------

    def validate(self, use_backbone: bool = False) -> dict[str, float]:
        """Retrieval on the fixed validation queries (gallery = the whole validation split)."""
        z = self.val_embeddings if use_backbone else self.embed(self.val_embeddings)
        return retrieval_metrics(
            z, self.val.building_ids, self.val_queries, VAL_KS, device=self.device
        )

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
        """Project a (N, D) tensor on the training device in eval mode; returns (N, out) float32."""
        was_training = self.model.training
        self.model.eval()
        try:
            parts = [
                self.model(x[s : s + batch_size].to(self.device).float())
                for s in range(0, len(x), batch_size)
            ]
        finally:
            self.model.train(was_training)
        return torch.cat(parts)

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "bandit": self.bandit.state_dict() if self.bandit else None,
            "config": self.cfg.to_dict(),
            "geo": self.geo.settings if self.geo is not None else None,
            "key": self.key,
        }

    def _load_state(self, st: dict[str, Any]) -> None:
        saved = {k: v for k, v in st["config"].items() if k not in RESUME_FREE_KEYS}
        now = {k: v for k, v in self.cfg.to_dict().items() if k not in RESUME_FREE_KEYS}
        changed = sorted(k for k in now if saved.get(k) != now[k])
        geo_now = self.geo.settings if self.geo is not None else None
        if st.get("geo", geo_now) != geo_now:
            changed.append("geo heads")
        if changed:
            raise SbeError(
                "cannot resume: the training settings changed since the checkpoint "
                f"({', '.join(changed)}); start a new run folder instead"
            )
        self.epoch = int(st["epoch"])
        self.global_step = int(st["global_step"])
        self.best_score = -math.inf if st["best_score"] is None else float(st["best_score"])
        self.best_epoch = int(st["best_epoch"])
        self.bad_epochs = int(st["bad_epochs"])
        self.stopped_early = bool(st["stopped_early"])
        if self.bandit is not None and st["bandit"] is not None:
            self.bandit.load_state_dict(st["bandit"])

    def _metrics_path(self) -> Path | None:
        return self.run_dir / METRICS_NAME if self.run_dir is not None else None

    def _log(self, record: dict[str, Any]) -> None:
        path = self._metrics_path()
        if path is not None:
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _truncate_log(self, keep_through_epoch: int) -> None:
        """Drop records written after the checkpoint we resume from (a killed epoch's steps)."""
        path = self._metrics_path()
        if path is None or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if rec.get("kind") == "baseline" or rec.get("epoch", 0) <= keep_through_epoch:
                kept.append(line)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{x}\n" for x in kept))

    def _logged_baseline(self) -> dict[str, float]:
        """The raw backbone's validation metrics the interrupted run logged ({} if none)."""
        path = self._metrics_path()
        if path is None or not path.exists():
            return {}
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "baseline":
                return dict(rec.get("val") or {})
        return {}

    def has_checkpoint(self) -> bool:
        return self.run_dir is not None and (self.run_dir / "last").is_dir()

    def _checkpoint_objects(self) -> dict[str, Any]:
        """The live objects a checkpoint saves and restores (keyword arguments of
        :func:`save_checkpoint` / :func:`load_checkpoint`)."""
        return {
            "model": self.model,
            "extra": self.geo.heads if self.geo is not None else None,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": self.rng,
        }

    # ---- training ----------------------------------------------------------------------------

    def fit(
        self,
        *,
        resume: bool = False,
        stop_after_epoch: int | None = None,
        on_epoch_end: Callable[[int, float], None] | None = None,
    ) -> FitResult:
        """Train until ``cfg.epochs`` or early stopping.

        Args:
            resume: continue from ``run_dir/last`` (exactly: same weights as an uninterrupted run).
            stop_after_epoch: return after this epoch as if interrupted (tests, time slicing).
            on_epoch_end: called with ``(epoch, val mAP@R)`` for the initial head (epoch 0) and
                after every epoch; may raise to abort (e.g. Optuna's ``TrialPruned``).

        Returns:
            The best validation score and epoch, and this call's epoch records.
        """
        cfg = self.cfg
        history: list[dict[str, Any]] = []
        baseline: dict[str, float] = {}
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            recover_dir(self.run_dir / "last")
            recover_dir(self.run_dir / "best")
        if resume:
            if not self.has_checkpoint():
                raise SbeError(f"nothing to resume: no checkpoint in {self.run_dir}/last")
            assert self.run_dir is not None  # has_checkpoint() needs a run folder
            st = load_checkpoint(self.run_dir / "last", **self._checkpoint_objects())
            self._load_state(st)
            self._truncate_log(self.epoch)
            baseline = self._logged_baseline()
            self.console(f"resumed after epoch {self.epoch} (best mAP@R {self.best_score:.4f})")
        else:
            path = self._metrics_path()
            if path is not None:
                with atomic_path(path) as tmp:
                    tmp.write_text("")
            baseline = self.validate(use_backbone=True)
            self._log({"kind": "baseline", "epoch": 0, "val": baseline})
            self.console(
                f"backbone on val: mAP@R {baseline['map@r']:.4f}  R@1 {baseline['recall@1']:.4f}"
                f"  ({baseline['queries']} queries)"
            )
            # the initial head (a closed-form projection, or random) is the first candidate
            init = self.validate()
            self.best_score, self.best_epoch = init["map@r"], 0
            if self.run_dir is not None:
                write_dir_atomic(self.run_dir / "best", self.model.save_pretrained)
            self._log({"kind": "init", "epoch": 0, "val": init, "init": cfg.residual_init})
            self.console(
                f"initial head ({cfg.residual_init if cfg.residual else 'random'}): "
                f"mAP@R {init['map@r']:.4f}  R@1 {init['recall@1']:.4f}"
            )
            if on_epoch_end is not None:
                on_epoch_end(0, init["map@r"])

        while self.epoch < cfg.epochs and not self.stopped_early:
            if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                break
            rec = self._train_epoch()
            history.append(rec)
            if on_epoch_end is not None:
                on_epoch_end(self.epoch, rec["val"]["map@r"])
        return FitResult(
            best_score=self.best_score,
            best_epoch=self.best_epoch,
            epochs_completed=self.epoch,
            stopped_early=self.stopped_early,
            baseline=baseline,
            history=history,
        )

    def _gather(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, Triplets, torch.Tensor]:
        """Batch indices -> float32 inputs (B, D), labels (B,), triplet positions and rows."""
        rows = torch.from_numpy(batch.rows).to(self.device, non_blocking=True)
        labels = torch.from_numpy(batch.labels).to(self.device, non_blocking=True)
        a, p, n = (
            torch.from_numpy(t).to(self.device, non_blocking=True)
            for t in (batch.anchors, batch.positives, batch.negatives)
        )
        return self.embeddings.index_select(0, rows).float(), labels, (a, p, n), rows

    def _optimise(
        self, x: torch.Tensor, labels: torch.Tensor, triplets: Triplets, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimiser step; returns the identity loss, the batch's embeddings, the geo loss."""
        with torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp
        ):
            z = self.model(x)
        loss = self.loss_fn(z, labels, triplets)
        total, geo_loss = loss, None
        if self.geo is not None:
            # outside autocast: the MvMF loss needs float32
            geo_loss, _ = self.geo.loss(self.geo.heads(z.float()), self.geo.labels[rows])
            total = loss + self.geo.weight * geo_loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self._clipped, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        # Optional hook of the heads (keeps learned concentrations in range).
        clamp = getattr(self.geo.heads, "clamp_", None) if self.geo is not None else None
        if clamp is not None:
            clamp()
        return loss, z, geo_loss

    def _train_epoch(self) -> dict[str, Any]:
        cfg = self.cfg
        epoch = self.epoch + 1
        t_epoch = time.perf_counter()
        self.model.train()
        self.sampler.start_epoch(self.rng)
        steps = self.sampler.steps_per_epoch
        n_bands = self.sampler.n_bands
        band_counts = np.zeros(max(n_bands, 1), np.int64)
        band_negatives = fallbacks = 0
        loss_sum = torch.zeros((), device=self.device)
        geo_sum = torch.zeros((), device=self.device)
        active_sum = 0.0
        data_s = compute_s = 0.0  # host wall time; asynchronous (indicative only) on a GPU
        with progress_bar(
            f"epoch {epoch}/{cfg.epochs}", total=steps, unit="steps", enabled=self.show_progress
        ) as bar:
            t_loop = time.perf_counter()
            for _ in range(steps):
                t0 = time.perf_counter()
                band = (
                    self.bandit.select(self.rng, self.sampler.available_bands)
                    if self.bandit
                    else -1
                )
                batch = self.sampler.sample(self.rng, band)
                x, labels, triplets, rows = self._gather(batch)
                t1 = time.perf_counter()
                loss, z, geo_loss = self._optimise(x, labels, triplets, rows)
                t2 = time.perf_counter()
                data_s += t1 - t0
                compute_s += t2 - t1
                self.global_step += 1
                loss_sum += loss.detach()
                if geo_loss is not None:
                    geo_sum += geo_loss.detach()
                if self.bandit is not None:
                    active = (
                        informative_triplets(z.detach(), triplets, cfg.margin, cfg.distance)
                        .cpu()
                        .numpy()
                    )
                    drawn = batch.from_band
                    reward = float(active[drawn].mean()) if drawn.any() else 0.0
                    self.bandit.update(band, reward)
                    band_counts[band] += 1
                    band_negatives += int(drawn.sum())
                    fallbacks += batch.fallbacks
                    active_sum += reward
                if self.global_step % cfg.log_every == 0:
                    lv = float(loss.detach())
                    self._log(
                        {
                            "kind": "step",
                            "epoch": epoch,
                            "step": self.global_step,
                            "loss": lv,
                            "lr": self.scheduler.get_last_lr()[0],
                            "band": band,
                        }
                    )
                    bar.set_description(
                        f"epoch {epoch}/{cfg.epochs} loss {lv:.4f}"
                        + (f" band {band}" if band >= 0 else "")
                    )
                bar.advance(1)
            loop_s = time.perf_counter() - t_loop

        val = self.validate()
        score = val["map@r"]
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            if self.run_dir is not None:
                write_dir_atomic(self.run_dir / "best", self.model.save_pretrained)
        else:
            self.bad_epochs += 1
            if cfg.patience and self.bad_epochs >= cfg.patience:
                self.stopped_early = True
        self.epoch = epoch
        rec: dict[str, Any] = {
            "kind": "epoch",
            "epoch": epoch,
            "step": self.global_step,
            "loss": float(loss_sum) / steps,
            "lr": self.scheduler.get_last_lr()[0],
            "val": val,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "seconds": round(time.perf_counter() - t_epoch, 3),
            "train_seconds": {
                "loop": round(loop_s, 3),
                "sampling": round(data_s, 3),
                "forward_backward": round(compute_s, 3),
            },
        }
        if self.geo is not None:
            rec["geo_loss"] = float(geo_sum) / steps
        if self.bandit is not None:
            means = self.bandit.mean_rewards()
            rec["bands"] = {
                "chosen_this_epoch": band_counts.tolist(),
                "counts": self.bandit.counts.tolist(),
                "mean_reward": [None if np.isnan(m) else round(float(m), 4) for m in means],
                "band_negatives": band_negatives,
                "fallback_negatives": fallbacks,
                "mean_informative": active_sum / steps,
            }
        self._log(rec)
        if self.run_dir is not None:
            save_checkpoint(
                self.run_dir / "last", **self._checkpoint_objects(), state=self.state_dict()
            )
        msg = (
            f"epoch {epoch:>3}/{cfg.epochs}  loss {rec['loss']:.4f}  val mAP@R {score:.4f}"
            f"  R@1 {val['recall@1']:.4f}  best {self.best_score:.4f}@{self.best_epoch}"
            f"  {rec['seconds']:.1f}s"
        )
        if self.geo is not None:
            msg += f"  geo loss {rec['geo_loss']:.3f}"
        if self.bandit is not None:
            fb = fallbacks / max(1, fallbacks + band_negatives)
            msg += f"  bands {band_counts.tolist()} fallback {fb:.0%}"
        if self.stopped_early:
            msg += f"  (early stop: {cfg.patience} epochs without improvement)"
        self.console(msg)
        return rec
