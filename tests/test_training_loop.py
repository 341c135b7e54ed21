from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sbe.config import TrainConfig
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.training.checkpoint import recover_dir, write_dir_atomic
from sbe.training.data import EmbeddingSet, load_split
from sbe.training.loop import Trainer, init_residual_pca, warmup_cosine
from sbe.training.toydata import ToySpec, write_toy_dataset

TINY = ToySpec(identities=60, dim=16, families=6, identity_dims=6, nuisance_dims=4, seed=3)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only adds barrier waits (badly so on a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def test_early_stopping_on_validation_map(
    toy: dict[str, EmbeddingSet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.59, 0.9, 0.95])
    trainer = Trainer(tiny_cfg(epochs=7, patience=3), toy["train"], toy["val"], run_dir=tmp_path)
    baseline = trainer.validate(use_backbone=True)
    best_weights: dict[str, torch.Tensor] = {}

    def fake_validate(use_backbone: bool = False) -> dict[str, float]:
        if use_backbone:
            return baseline
        s = next(scores)
        if s == 0.6:
            best_weights.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return {**baseline, "map@r": s}

    monkeypatch.setattr(trainer, "validate", fake_validate)
    res = trainer.fit()
    assert res.stopped_early and res.epochs_completed == 5
    assert res.best_epoch == 2 and res.best_score == 0.6
    saved = Projector.from_pretrained(tmp_path / "best").state_dict()
    for k, v in best_weights.items():
        assert torch.equal(saved[k], v)
    epochs = [r for r in _records(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["best_epoch"] for r in epochs] == [1, 2, 2, 2, 2]
    assert epochs[-1]["stopped_early"]


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


def test_pca_init_starts_as_centred_projection(toy: dict[str, EmbeddingSet]) -> None:
    cfg = tiny_cfg()
    trainer = Trainer(cfg, toy["train"], toy["val"])
    x = toy["train"].embeddings.float()
    head = Projector(trainer.model.config)
    init_residual_pca(head, toy["train"].embeddings, seed=0)
    head.eval()
    y = head.residual(x)  # type: ignore[misc]
    torch.testing.assert_close(y.mean(0), torch.zeros(cfg.output_dim), atol=1e-3, rtol=0)
    assert float((y**2).sum(1).mean().detach()) == pytest.approx(1.0, rel=1e-3)
    # MLP branch starts at zero: the head's output is the normalised PCA projection
    torch.testing.assert_close(head(x), torch.nn.functional.normalize(y, dim=1))


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
