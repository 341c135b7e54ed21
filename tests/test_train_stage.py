from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from toydata import ToySpec, write_toy_dataset
from typer.testing import CliRunner, Result

from sbe.cli import app
from sbe.config import TrainConfig
from sbe.errors import SbeError
from sbe.models.projector import Projector
from sbe.storage import load_manifest
from sbe.training.data import load_split
from sbe.training.metrics import retrieval_metrics

SPEC = ToySpec(identities=60, dim=16, families=6, identity_dims=6, nuisance_dims=4, seed=5)
CONFIG = """
[train]
hidden_dim = 32
output_dim = 8
identities_per_batch = 6
images_per_identity = 3
warmup_steps = 3
ucb_warmup_steps = 3
min_steps_per_epoch = 1
lr = 0.003
device = "cpu"

[tune]
device = "cpu"
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_toy_dataset(root / "split", root / "nb", SPEC, k=8)
    (root / "sbe.toml").write_text(CONFIG)
    return root


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_of(r: Result) -> str:
    """The user-facing error a command raised (``sbe.cli.main`` prints it as one line)."""
    assert r.exit_code != 0 and isinstance(r.exception, SbeError), r.output
    return str(r.exception)


def test_train_cli_run_folder_and_rerun(world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = ["train", "--in", world / "split", "--out", run, "-c", world / "sbe.toml"]
    r = invoke(*base, "--epochs", "6", "--neighbors", world / "nb", "--curriculum", "bands")
    assert r.exit_code == 0, r.output
    info = json.loads((run / "run.json").read_text())
    assert info["backbone"]["name"] == "toy" and info["config"]["curriculum"] == "bands"
    assert 1 <= info["best_epoch"] <= 6 and info["epochs_completed"] == 6
    test = info["test"]
    # trained head clearly beats the raw embeddings on the held-out identities
    assert test["projector"]["recall@1"] > test["backbone"]["recall@1"] + 0.1
    assert test["projector"]["map@r"] > test["backbone"]["map@r"]
    # the reported test numbers are those of best/ on the test split
    head = Projector.from_pretrained(run / "best")
    data = load_split(world / "split", "test")
    ref = retrieval_metrics(head.project(data.embeddings.numpy()), data.building_ids, ks=[1])
    assert test["projector"]["recall@1"] == pytest.approx(ref["recall@1"])
    m = load_manifest(run)
    assert m is not None and m.stage == "train" and m.rows["best_epoch"] == info["best_epoch"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "baseline"
    assert [x["epoch"] for x in lines if x["kind"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    assert all("bands" in x for x in lines if x["kind"] == "epoch")

    # same command again: nothing to do
    r = invoke(
        *base, "--epochs", "6", "--neighbors", world / "nb", "--curriculum", "bands", "--json"
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["up_to_date"] is True
    # other settings into the same folder: the run starts over with them
    r = invoke(*base, "--epochs", "2", "--json")
    assert r.exit_code == 0, r.output
    again = json.loads((run / "run.json").read_text())
    assert again["epochs_completed"] == 2 and again["config"]["curriculum"] == "none"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["kind"] == "epoch"] == [1, 2]


def test_train_cli_resume_after_interruption(world: Path, tmp_path: Path) -> None:
    from sbe.config import load_config
    from sbe.training.loop import Trainer

    run = tmp_path / "run"
    cfg = load_config(
        world / "sbe.toml",
        {"train": {"input": world / "split", "output": run, "epochs": 3}},
    ).section("train")
    assert isinstance(cfg, TrainConfig)
    # simulate a run killed after epoch 1
    Trainer(cfg, load_split(cfg.input, "train"), load_split(cfg.input, "val"), run_dir=run).fit(
        stop_after_epoch=1
    )
    base = [
        "train",
        "--in",
        world / "split",
        "--out",
        run,
        "-c",
        world / "sbe.toml",
        "--epochs",
        "3",
    ]
    r = invoke(*base, "--resume")
    assert r.exit_code == 0, r.output
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_completed"] == 3
    # the raw backbone's validation metrics logged before the interruption stay in the record
    baseline = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert baseline["kind"] == "baseline"
    assert info["val_baseline"] == baseline["val"] and info["val_baseline"]["map@r"] > 0
    # resuming settings that differ from the checkpoint's is refused
    assert "cannot resume" in error_of(invoke(*base, "--resume", "--loss", "triplet"))


def test_evaluate_json_and_table(world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = invoke(
        "train", "--in", world / "split", "--out", run, "-c", world / "sbe.toml", "--epochs", "2"
    )
    assert r.exit_code == 0, r.output
    r = invoke(
        "evaluate", "--run", run, "--split", "val", "--json", "--landmarks", tmp_path / "none"
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    ret = res["retrieval"]
    assert set(ret["backbone"]) == {"recall@1", "recall@5", "recall@10", "recall@100", "map@r"}
    data = load_split(world / "split", "val")
    raw = retrieval_metrics(data.embeddings, data.building_ids, ks=[1, 5, 10, 100])
    for k, v in ret["backbone"].items():
        assert v == pytest.approx(raw[k])
    assert ret["queries"] == raw["queries"]
    assert "skipped" in res["landmarks"]
    assert (run / "evaluate" / "val.json").is_file()
    r = invoke("evaluate", "--run", run)
    assert r.exit_code == 0 and "map@r" in r.output and "projector" in r.output
    assert "run.json" in error_of(invoke("evaluate", "--run", tmp_path / "nope"))


@pytest.mark.slow
def test_tune_shared_study_and_best_params(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    args = [
        "tune",
        "--in",
        world / "split",
        "--neighbors",
        world / "nb",
        "--out",
        out,
        "--trials",
        "2",
        "--epochs",
        "2",
        "-c",
        world / "sbe.toml",
    ]
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.output
    assert (out / "study.db").is_file()
    # a second worker on the same storage adds its trials to the same study
    r = invoke(*args, "--seed", "1", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "best_params.json").read_text())
    assert summary["trials_complete"] + summary["trials_pruned"] == 4
    params = tomllib.loads((out / "best_params.toml").read_text())["train"]
    TrainConfig(**params)  # a valid [train] snippet
    assert 0 < summary["best_value"] <= 1
    assert np.isfinite(summary["best_value"])
