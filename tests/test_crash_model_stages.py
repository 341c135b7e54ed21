"""Crash consistency of train, evaluate, geo and publish: a kill at any commit point, then a rerun,
gives the output of a clean run (weights compared as tensors, JSON without wall times).

A rerun after a kill with the same settings continues the interrupted training (train's ``last/``
checkpoint, geo's per-epoch ``_checkpoint/``) and must still end with bit-identical weights.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from faults import (
    VOLATILE_MANIFEST_KEYS,
    SimulatedCrash,
    count_replaces,
    crash_after,
    crash_matrix,
    output_files,
)
from geotoy import write_toy_split
from safetensors.torch import load_file
from toydata import TINY_TRAIN as TRAIN

from sbe.config import load_config
from sbe.stages import evaluate as evaluate_stage
from sbe.stages import geo as geo_stage
from sbe.stages import publish as publish_stage
from sbe.stages import train as train_stage
from sbe.stages.base import run_stage

#: keys holding wall times or clock readings: they differ between two clean runs
TIMING_KEYS = {"seconds", "train_seconds", "wall_seconds", "created_at", "started_at"}

GEO = {
    "epochs": 3,
    "hidden_dim": 32,
    "batch_size": 64,
    "background_centres": 40,
    "centres_per_sample": 10,
    "gallery_max": 200,
    "patience": 0,
    "device": "cpu",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("crash-model") / "split"
    write_toy_split(d, cities=6, buildings_per_city=12, images_per_building=3, dim=16, seed=0)
    return d


def _normalise(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, dict):
        return {k: _normalise(v, old, new) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_normalise(v, old, new) for v in obj]
    if isinstance(obj, str):
        return obj.replace(old, new)
    return obj


def _json_of(path: Path, name: str, old: str, new: str) -> list[Any]:
    """The JSON documents of a file (one per line for .jsonl), normalised for comparison."""
    text = path.read_text()
    if name.endswith(".jsonl"):
        docs = [json.loads(x) for x in text.splitlines() if x.strip()]
    else:
        docs = [json.loads(text)]
    docs = [_normalise(d, old, new) for d in docs]
    if Path(name).name == "_manifest.json":
        docs = [{k: v for k, v in d.items() if k not in VOLATILE_MANIFEST_KEYS} for d in docs]
    return docs


def same_output(expected: Path, actual: Path, roots: tuple[Path, Path] | None = None) -> None:
    """Same files; weights equal as tensors; JSON equal without wall times (paths of the case
    folder read as the clean one's); everything else byte for byte."""
    want, got = output_files(expected), output_files(actual)
    temps = [k for k in got if any(part.startswith(".tmp-") for part in Path(k).parts)]
    assert not temps, f"temporary files left behind: {temps}"
    assert sorted(got) == sorted(want), f"file sets differ: {sorted(set(got) ^ set(want))}"
    # paths inside the case's work folder read as the clean one's
    clean_root, case_root = roots or (expected.parent, actual.parent)
    old, new = str(case_root.resolve()), str(clean_root.resolve())
    for name, a in want.items():
        b = got[name]
        if name.endswith(".safetensors"):
            ta, tb = load_file(str(a)), load_file(str(b))
            assert ta.keys() == tb.keys(), name
            for k in ta:
                assert torch.equal(ta[k], tb[k]), f"{name}: {k} differs"
        elif name.endswith((".json", ".jsonl")):
            assert _json_of(a, name, "", "") == _json_of(b, name, old, new), name
        else:
            assert a.read_bytes() == b.read_bytes(), f"{name}: bytes differ"


def train_cfg(split: Path, out: Path, **kw: Any):
    return load_config(None, {"train": {**TRAIN, "input": split, "output": out, **kw}}).section(
        "train"
    )


def geo_cfg(split: Path, out: Path, **kw: Any):
    return load_config(None, {"geo": {**GEO, "input": split, "output": out, **kw}}).section("geo")


def test_train_crash_matrix(split: Path, tmp_path: Path) -> None:
    def run(work: Path, changed: dict[str, Any]) -> None:
        train_stage.run(train_cfg(split, work / "out", **changed))

    report = crash_matrix(
        "train", run, tmp_path, changed={"lr": 1e-3}, same_output=same_output, max_points=10
    )
    assert report.points["same"] >= 6


def test_train_continues_a_killed_run(split: Path, tmp_path: Path) -> None:
    """A kill after epoch 1's checkpoint: the rerun continues from it (no flag) and ends equal."""
    clean, cut = tmp_path / "clean" / "out", tmp_path / "cut" / "out"
    train_stage.run(train_cfg(split, clean))
    with count_replaces() as seen:
        train_stage.run(train_cfg(split, tmp_path / "probe" / "out"))
    # the first rename of last/ into place ends epoch 1's checkpoint
    after_epoch_1 = next(i for i, d in enumerate(seen) if d.endswith("/last")) + 1
    with contextlib.suppress(SimulatedCrash), crash_after(after_epoch_1):
        train_stage.run(train_cfg(split, cut))
    lines: list[str] = []
    train_stage.run(train_cfg(split, cut), console=lines.append)
    assert any(line.startswith("resumed after epoch 1") for line in lines), lines
    same_output(clean, cut)
    info = json.loads((cut / "run.json").read_text())
    assert info["val_baseline"] is not None and info["epochs_completed"] == 2
    # restart: from scratch, same result again
    lines.clear()
    train_stage.run(train_cfg(split, cut), console=lines.append, restart=True)
    assert not any("resumed" in line for line in lines)
    same_output(clean, cut)


def test_evaluate_crash_matrix(split: Path, tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    train_stage.run(train_cfg(split, trained))

    def run(work: Path, changed: dict[str, Any]) -> None:
        if not (work / "out").exists():
            shutil.copytree(trained, work / "out")
        cfg = load_config(
            None, {"evaluate": {"run": work / "out", "landmarks": work / "none", **changed}}
        ).section("evaluate")
        evaluate_stage.run(cfg)

    def same_evaluation(expected: Path, actual: Path) -> None:
        roots = (expected.parent, actual.parent)
        same_output(expected / "evaluate", actual / "evaluate", roots)
        # the calibration (on by default) is part of the commit the matrix checks
        assert (actual / "evaluate" / "calibration.json").is_file()

    report = crash_matrix(
        "evaluate", run, tmp_path / "m", changed={"ks": [1, 5]}, same_output=same_evaluation
    )
    assert report.points["same"] >= 2


def test_geo_crash_matrix(split: Path, tmp_path: Path) -> None:
    def run(work: Path, changed: dict[str, Any]) -> None:
        geo_stage.train(geo_cfg(split, work / "out", **changed))

    report = crash_matrix(
        "geo", run, tmp_path, changed={"hidden_dim": 48}, same_output=same_output, max_points=12
    )
    assert report.points["same"] == 12


def test_geo_continues_a_killed_run_exactly(split: Path, tmp_path: Path) -> None:
    clean, cut = tmp_path / "clean" / "out", tmp_path / "cut" / "out"
    geo_stage.train(geo_cfg(split, clean))
    with count_replaces() as seen:
        geo_stage.train(geo_cfg(split, tmp_path / "probe" / "out"))
    # kill right after epoch 2's checkpoint is in place
    swaps = [i for i, d in enumerate(seen) if d.endswith("/_checkpoint")]
    with contextlib.suppress(SimulatedCrash), crash_after(swaps[1] + 1):
        geo_stage.train(geo_cfg(split, cut))
    assert (cut / "_checkpoint").is_dir() and not (cut / "model.safetensors").exists()
    lines: list[str] = []
    run_stage(geo_stage.GeoStage(), geo_cfg(split, cut), log=lines.append)
    assert "geo: resumed after epoch 2" in lines, lines
    assert sum(line.startswith("geo epoch") for line in lines) == GEO["epochs"] - 2
    same_output(clean, cut)
    assert not (cut / "_checkpoint").exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from test_publish_fixtures import hf_identity, make_run, tiny_dinov2
    from verifytoy import calibrate_run

    root = tmp_path_factory.mktemp("publish-runs")
    identity = hf_identity(tiny_dinov2(root / "dino"))
    make_run(root / "run", identity)
    calibrate_run(root / "run")  # publish copies its calibration.json into the model
    make_run(root / "run2", identity, seed=9)
    return root / "run", root / "run2"


def test_publish_crash_matrix(runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, run_b = runs

    def run(work: Path, changed: dict[str, Any]) -> None:
        cfg = load_config(
            None, {"publish": {"run": run_a, "output": work / "out", **changed}}
        ).section("publish")
        publish_stage.run(cfg)

    report = crash_matrix(
        "publish", run, tmp_path, changed={"run": run_b}, same_output=same_output, max_points=8
    )
    assert report.points["same"] == 8
    assert (tmp_path / "clean" / "out" / "calibration.json").is_file()
