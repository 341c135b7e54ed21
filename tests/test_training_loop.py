from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from toydata import ToySpec, write_toy_dataset

from sbe.config import TrainConfig
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.training.checkpoint import recover_dir, write_dir_atomic
from sbe.training.data import EmbeddingSet, load_split
from sbe.training.loop import Trainer, init_residual, param_groups, warmup_cosine
from sbe.training.metrics import retrieval_metrics
from sbe.training.whitening import learned_whitening, pca_projection

TINY = ToySpec(identities=60, dim=16, families=6, identity_dims=6, nuisance_dims=4, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EmbeddingSet]:
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root / "split", root / "nb", TINY, k=8)
    return {
        "train": load_split(root / "split", "train", root / "nb"),
        "val": load_split(root / "split", "val"),
    }


def tiny_cfg(**kw: object) -> TrainConfig:
    base = dict(
        device="cpu",
        epochs=4,
        identities_per_batch=6,
        images_per_identity=3,
        hidden_dim=32,
        output_dim=8,
        ucb_warmup_steps=3,
        warmup_steps=3,
        patience=0,
        log_every=2,
        min_steps_per_epoch=1,
    )
    return TrainConfig(**{**base, **kw})


def _records(path: Path) -> list[dict]:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for r in recs:
        r.pop("seconds", None)
        r.pop("train_seconds", None)
    return recs


@pytest.mark.parametrize(
    ("loss", "curriculum"),
    [("triplet", "bands"), ("multi_similarity", "none"), ("supcon", "bands")],
)
def test_resume_ends_with_the_same_weights(
    toy: dict[str, EmbeddingSet], tmp_path: Path, loss: str, curriculum: str
) -> None:
    cfg = tiny_cfg(loss=loss, curriculum=curriculum)
    full = Trainer(cfg, toy["train"], toy["val"], run_dir=tmp_path / "a").fit()
    part = Trainer(cfg, toy["train"], toy["val"], run_dir=tmp_path / "b").fit(stop_after_epoch=2)
    assert part.epochs_completed == 2
    # a kill during the next epoch leaves step records behind; resume must drop them
    with open(tmp_path / "b" / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "epoch": 3, "step": 999}\n{"kind": "ep')
    resumed = Trainer(cfg, toy["train"], toy["val"], run_dir=tmp_path / "b").fit(resume=True)
    assert resumed.epochs_completed == full.epochs_completed == 4
    for name in ("last/model.safetensors", "best/model.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert _records(tmp_path / "a" / "metrics.jsonl") == _records(tmp_path / "b" / "metrics.jsonl")
    assert resumed.best_score == full.best_score and resumed.best_epoch == full.best_epoch
    if curriculum == "bands":
        st_a = json.loads((tmp_path / "a" / "last" / "trainer_state.json").read_text())
        st_b = json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())
        assert st_a["trainer"]["bandit"] == st_b["trainer"]["bandit"]
        assert st_a["numpy_rng"] == st_b["numpy_rng"]


def test_resume_refuses_changed_settings(toy: dict[str, EmbeddingSet], tmp_path: Path) -> None:
    Trainer(tiny_cfg(), toy["train"], toy["val"], run_dir=tmp_path).fit(stop_after_epoch=1)
    with pytest.raises(SbeError, match="lr"):
        Trainer(tiny_cfg(lr=0.5), toy["train"], toy["val"], run_dir=tmp_path).fit(resume=True)
    with pytest.raises(SbeError, match="nothing to resume"):
        Trainer(tiny_cfg(), toy["train"], toy["val"], run_dir=tmp_path / "x").fit(resume=True)


def _scripted(trainer: Trainer, scores: list[float], snapshot_at: float) -> dict:
    """Replace validation by a script of mAP@R values (the first one scores the initial head)."""
    baseline = trainer.validate(use_backbone=True)
    it = iter(scores)
    snap: dict[str, torch.Tensor] = {}

    def fake_validate(use_backbone: bool = False) -> dict[str, float]:
        if use_backbone:
            return baseline
        s = next(it)
        if s == snapshot_at:
            snap.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return {**baseline, "map@r": s}

    trainer.validate = fake_validate  # type: ignore[method-assign]
    return snap


def test_early_stopping_on_validation_map(toy: dict[str, EmbeddingSet], tmp_path: Path) -> None:
    trainer = Trainer(tiny_cfg(epochs=7, patience=3), toy["train"], toy["val"], run_dir=tmp_path)
    best_weights = _scripted(trainer, [0.4, 0.5, 0.6, 0.55, 0.58, 0.59, 0.9, 0.95], 0.6)
    res = trainer.fit()
    assert res.stopped_early and res.epochs_completed == 5
    assert res.best_epoch == 2 and res.best_score == 0.6
    saved = Projector.from_pretrained(tmp_path / "best").state_dict()
    for k, v in best_weights.items():
        assert torch.equal(saved[k], v)
    recs = _records(tmp_path / "metrics.jsonl")
    assert [r["kind"] for r in recs[:2]] == ["baseline", "init"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["best_epoch"] for r in epochs] == [1, 2, 2, 2, 2]
    assert epochs[-1]["stopped_early"]


def test_initial_head_can_win_selection(toy: dict[str, EmbeddingSet], tmp_path: Path) -> None:
    trainer = Trainer(tiny_cfg(epochs=5, patience=2), toy["train"], toy["val"], run_dir=tmp_path)
    init_weights = _scripted(trainer, [0.9, 0.5, 0.6, 0.7], 0.9)
    res = trainer.fit()
    assert res.best_epoch == 0 and res.epochs_completed == 2 and res.stopped_early
    saved = Projector.from_pretrained(tmp_path / "best").state_dict()
    for k, v in init_weights.items():
        assert torch.equal(saved[k], v)


def test_band_curriculum_logs_counts_and_rewards(
    toy: dict[str, EmbeddingSet], tmp_path: Path
) -> None:
    cfg = tiny_cfg(loss="triplet", curriculum="bands", epochs=3, ucb_warmup_steps=5)
    trainer = Trainer(cfg, toy["train"], toy["val"], run_dir=tmp_path)
    trainer.fit()
    epochs = [r for r in _records(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"]
    steps = trainer.sampler.steps_per_epoch
    for r in epochs:
        b = r["bands"]
        assert sum(b["chosen_this_epoch"]) == steps
        assert len(b["counts"]) == trainer.sampler.n_bands
        assert b["band_negatives"] + b["fallback_negatives"] == steps * trainer.sampler.batch_rows
        assert all(m is None or 0.0 <= m <= 1.0 for m in b["mean_reward"])
    assert sum(epochs[-1]["bands"]["counts"]) == 3 * steps
    assert trainer.bandit is not None and trainer.bandit.total == 3 * steps


def test_training_beats_raw_backbone(toy: dict[str, EmbeddingSet]) -> None:
    trainer = Trainer(tiny_cfg(epochs=8, lr=3e-3), toy["train"], toy["val"])
    res = trainer.fit()
    assert res.best_score > res.baseline["map@r"] + 0.1


def test_bands_need_neighbors(toy: dict[str, EmbeddingSet]) -> None:
    with pytest.raises(SbeError, match="neighbour"):
        Trainer(tiny_cfg(curriculum="bands"), toy["val"], toy["val"])


@pytest.mark.parametrize("kind", ["pca", "whitening"])
def test_closed_form_projections_centre_and_scale(toy: dict[str, EmbeddingSet], kind: str) -> None:
    x = toy["train"].embeddings
    if kind == "pca":
        w, b = pca_projection(x, 8)
    else:
        w, b = learned_whitening(x, toy["train"].building_ids, 8, shrinkage=0.1)
    assert w.shape == (8, x.shape[1]) and b.shape == (8,)
    y = x.float() @ w.T + b
    torch.testing.assert_close(y.mean(0), torch.zeros(8), atol=1e-3, rtol=0)
    assert float((y**2).sum(1).mean()) == pytest.approx(1.0, rel=1e-3)


def test_learned_whitening_removes_shared_nuisance(toy: dict[str, EmbeddingSet]) -> None:
    # the toy world hides identities under large nuisance directions shared by all of them
    tr, va = toy["train"], toy["val"]
    w, b = learned_whitening(tr.embeddings, tr.building_ids, 8, shrinkage=0.1)
    raw = retrieval_metrics(va.embeddings, va.building_ids, ks=[1])
    lw = retrieval_metrics(va.embeddings.float() @ w.T + b, va.building_ids, ks=[1])
    pw, pb = pca_projection(tr.embeddings, 8)
    pca = retrieval_metrics(va.embeddings.float() @ pw.T + pb, va.building_ids, ks=[1])
    assert lw["map@r"] > raw["map@r"] + 0.2 and lw["map@r"] > pca["map@r"] + 0.2


def test_residual_init_makes_the_head_that_projection(toy: dict[str, EmbeddingSet]) -> None:
    cfg = tiny_cfg()
    trainer = Trainer(cfg, toy["train"], toy["val"])
    head = Projector(trainer.model.config)
    w, b = learned_whitening(
        toy["train"].embeddings, toy["train"].building_ids, 8, cfg.whitening_shrinkage
    )
    init_residual(head, w, b)
    x = toy["val"].embeddings.float()
    torch.testing.assert_close(head.eval()(x), torch.nn.functional.normalize(x @ w.T + b, dim=1))
    # the trainer did the same from its config (default init: whitening)
    torch.testing.assert_close(trainer.model.eval()(x), head(x))


def test_residual_learning_rate_scale(toy: dict[str, EmbeddingSet]) -> None:
    head = Projector(Trainer(tiny_cfg(), toy["train"], toy["val"]).model.config)
    groups = param_groups(head, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    assert groups[1]["params"] == list(head.residual.parameters())  # type: ignore[union-attr]
    frozen = param_groups(head, 1e-3, 0.0)
    assert len(frozen) == 1 and not any(p.requires_grad for p in head.residual.parameters())  # type: ignore[union-attr]
    # a frozen residual path stays exactly at its initialisation through training
    trainer = Trainer(tiny_cfg(residual_lr_scale=0.0, epochs=2), toy["train"], toy["val"])
    before = trainer.model.residual.weight.clone()  # type: ignore[union-attr]
    trainer.fit()
    assert torch.equal(trainer.model.residual.weight, before)  # type: ignore[union-attr]


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_dir_swap_recovers_after_a_kill(tmp_path: Path) -> None:
    final = tmp_path / "last"
    write_dir_atomic(final, lambda d: (d / "a.txt").write_text("1"))
    write_dir_atomic(final, lambda d: (d / "a.txt").write_text("2"))
    assert (final / "a.txt").read_text() == "2"
    # simulate a kill between the two renames, with a half-written temp folder around
    final.rename(tmp_path / ".old-last")
    (tmp_path / ".tmp-last.123.abc").mkdir()
    recover_dir(final)
    assert (final / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]

    def boom(d: Path) -> None:
        (d / "a.txt").write_text("3")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_dir_atomic(final, boom)
    assert (final / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_sampling_is_index_only(toy: dict[str, EmbeddingSet]) -> None:
    trainer = Trainer(tiny_cfg(curriculum="bands"), toy["train"], toy["val"])
    trainer.sampler.start_epoch(np.random.default_rng(0))
    batch = trainer.sampler.sample(np.random.default_rng(0), band=0)
    assert batch.rows.dtype == np.int64 and batch.rows.ndim == 1
    assert trainer.embeddings.dtype == torch.float16
    assert trainer.embeddings.data_ptr() == toy["train"].embeddings.data_ptr()  # no copy on CPU
