"""Joint training: geo heads on the projector output (``[train] geo_weight``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from sbe.config import TrainConfig
from sbe.models.projector import Projector
from sbe.stages import train as train_stage
from sbe.training.checkpoint import EXTRA_NAME
from sbe.training.data import load_split
from sbe.training.loop import Trainer


def _cfg(split: Path, out: Path, **kw) -> TrainConfig:
    base = dict(input=split, neighbors=None, output=out, epochs=3, device="cpu", seed=1)
    return TrainConfig(**{**base, **kw})


def test_joint_geo_loss_is_trained_and_logged(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    split = cfg.workdir / "split"
    torch.set_num_threads(1)
    m = train_stage.run(_cfg(split, tmp_path / "joint", geo_weight=0.5, lr=1e-3))
    assert m.rows["epochs"] >= 1
    epochs = [
        json.loads(x)
        for x in (tmp_path / "joint" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "epoch"
    ]
    geo = [e["geo_loss"] for e in epochs]
    assert all(torch.isfinite(torch.tensor(g)) for g in geo)
    assert geo[-1] < geo[0]  # the heads learn
    # the run's model is the projector alone, loadable as usual
    assert Projector.from_pretrained(tmp_path / "joint" / "best").config.output_dim == 256
    plain = [
        json.loads(x)
        for x in (cfg.workdir / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "epoch"
    ]
    assert all("geo_loss" not in e for e in plain)


def test_joint_geo_resume_is_exact(tiny_pipeline, tmp_path: Path) -> None:
    cfg, _ = tiny_pipeline
    split = cfg.workdir / "split"
    torch.set_num_threads(1)
    train, val = load_split(split, "train"), load_split(split, "val")

    def trainer(out: Path) -> Trainer:
        c = _cfg(split, out, geo_weight=0.5, lr=1e-3, patience=0)
        return Trainer(c, train, val, run_dir=out, geo=train_stage._joint_geo(c))

    trainer(tmp_path / "whole").fit()
    trainer(tmp_path / "cut").fit(stop_after_epoch=1)
    trainer(tmp_path / "cut").fit(resume=True)
    a = Projector.from_pretrained(tmp_path / "whole" / "last").state_dict()
    b = Projector.from_pretrained(tmp_path / "cut" / "last").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the jointly trained heads resume exactly too
    ha = load_file(str(tmp_path / "whole" / "last" / EXTRA_NAME))
    hb = load_file(str(tmp_path / "cut" / "last" / EXTRA_NAME))
    assert ha.keys() == hb.keys() and len(ha) > 0
    for k in ha:
        assert torch.equal(ha[k], hb[k]), k


def test_joint_geo_heads_follow_the_geo_section(tmp_path: Path) -> None:
    """With the whole config given, [geo]'s head and loss settings shape the joint heads."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from geotoy import write_toy_split

    from sbe.config import load_config
    from sbe.stages.base import run_stage
    from sbe.stages.train import TrainStage

    split = tmp_path / "split"
    write_toy_split(split, cities=4, buildings_per_city=10, images_per_building=3, dim=16, seed=0)
    torch.set_num_threads(1)
    train = {
        "input": split,
        "neighbors": None,
        "output": tmp_path / "run",
        "epochs": 1,
        "hidden_dim": 16,
        "output_dim": 8,
        "identities_per_batch": 4,
        "images_per_identity": 2,
        "min_steps_per_epoch": 2,
        "geo_weight": 0.5,
        "device": "cpu",
    }

    def run(hidden: int):
        full = load_config(None, {"train": train, "geo": {"hidden_dim": hidden, "lr": 0.01}})
        return run_stage(TrainStage(), full.section("train"), full_config=full)[0]

    m = run(24)
    heads = load_file(str(tmp_path / "run" / "last" / EXTRA_NAME))
    widths = {v.shape[0] for k, v in heads.items() if k.endswith("weight") and v.ndim == 2}
    assert 24 in widths
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["geo_heads"]["hidden_dim"] == 24 and info["geo_heads"]["lr"] == 0.01
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["optimizer"]["param_groups"][-1]["initial_lr"] == 0.01  # the heads' group
    assert run(24).up_to_date
    # another [geo] head is another run
    assert not run(32).up_to_date and not m.up_to_date
