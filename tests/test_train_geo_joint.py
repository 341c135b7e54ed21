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
