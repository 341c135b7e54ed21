from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from geotoy import write_toy_split
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import load_config
from sbe.errors import SbeError
from sbe.geo.heads import GeoHeads
from sbe.stages import geo as geo_stage
from sbe.storage import DirLock, LockedError, load_manifest

SMALL = {
    "epochs": 12,
    "hidden_dim": 64,
    "batch_size": 32,
    "background_centres": 150,
    "centres_per_sample": 10,
    "patience": 0,
    "device": "cpu",
}


def geo_cfg(split_dir: Path, out: Path, **kw):
    return load_config(None, {"geo": {"input": split_dir, "output": out, **SMALL, **kw}}).section(
        "geo"
    )


@pytest.fixture(scope="module")
def toy_split(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy") / "split"
    write_toy_split(d, cities=8, buildings_per_city=40, images_per_building=2, dim=32, seed=0)
    return d


@pytest.fixture(scope="module")
def trained(toy_split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("geo") / "geo"
    geo_stage.train(geo_cfg(toy_split, out))
    return out


def test_toy_split_is_geography_held_out(toy_split) -> None:
    tables = {s: pq.read_table(toy_split / f"{s}.parquet") for s in ("train", "val", "test")}
    cells = {s: set(t.column("cell_id").to_pylist()) for s, t in tables.items()}
    assert not cells["train"] & cells["test"] and not cells["train"] & cells["val"]
    assert tables["train"].column("capture_date").null_count > 0
    assert load_manifest(toy_split).extra["backbone"]["dim"] == 32


@pytest.mark.slow
def test_train_writes_outputs_and_beats_most_common(trained) -> None:
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "metrics.jsonl"} <= names
    assert "_manifest.json" in names and not any(n.startswith(".tmp-") for n in names)
    metrics = json.loads((trained / "metrics.json").read_text())
    epochs = (trained / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == metrics["selection"]["epochs_run"] == SMALL["epochs"]
    assert 1 <= metrics["selection"]["best_epoch"] <= SMALL["epochs"]
    test = metrics["test"]
    model, base = test["model"], test["baselines"]["most_common"]
    for key in ("acc_200km", "acc_750km"):
        assert model["location"][key] > base["location"][key] + 0.2
    assert model["climate"]["fine_acc"] > base["climate"]["fine_acc"] + 0.2
    assert model["season"]["mean_error_days"] < base["season"]["mean_error_days"]
    nn = test["baselines"]["nearest_neighbour"]
    assert nn["location"]["n"] == model["location"]["n"] == test["n"]
    heads = GeoHeads.from_pretrained(trained)
    assert heads.config.input_space == "backbone" and heads.config.backbone["name"] == "toy"
    assert heads.config.num_centres > heads.config.num_data_centres  # background centres exist
    m = load_manifest(trained)
    assert (
        m.rows["test"] == test["n"]
        and m.extra["test"]["acc_750km"] == model["location"]["acc_750km"]
    )


@pytest.mark.slow
def test_rerun_is_up_to_date_and_lock_is_exclusive(trained, toy_split) -> None:
    again = geo_stage.train(geo_cfg(toy_split, trained))
    assert again.up_to_date
    with DirLock(trained), pytest.raises(LockedError):
        geo_stage.train(geo_cfg(toy_split, trained))


@pytest.mark.slow
def test_cli_evaluate_and_predict(trained, toy_split) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["geo", "evaluate", "--model", str(trained), "--split", "val", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert (
        report["split"] == "val"
        and report["n"] == pq.read_metadata(toy_split / "val.parquet").num_rows
    )
    assert set(report["baselines"]) == {"most_common", "nearest_neighbour"}
    assert set(report["model"]["location"]) >= {"acc_1km", "acc_2500km", "median_km", "mean_km"}
    cal = report["model"]["calibration"]
    assert 0.0 <= cal["hpd50_coverage"] <= cal["hpd90_coverage"] <= 1.0
    assert (
        "season_seasonal" in report["model"] and "season_flat" in report["baselines"]["most_common"]
    )
    res = runner.invoke(app, ["geo", "evaluate", "--model", str(trained)])
    assert (
        res.exit_code == 0 and "within 750 km" in res.output and "nearest neighbour" in res.output
    )

    res = runner.invoke(
        app,
        ["geo", "predict", "--model", str(trained), "--embeddings", str(toy_split / "test.parquet"),
         "--top-k", "3", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == pq.read_metadata(toy_split / "test.parquet").num_rows
    first = rows[0]
    assert 1 <= len(first["locations"]) <= 3 and first["source"] == "0"
    assert sum(loc["prob"] for loc in first["locations"]) <= 1.0 + 1e-6
    assert set(first["climate"]) == {
        "code", "name", "description", "prob", "coarse", "coarse_code", "coarse_name",
    }  # fmt: skip
    loc = first["locations"][0]
    assert 0 < loc["radius_50_km"] <= loc["radius_90_km"]
    assert 1 <= first["season"]["month"] <= 12
    assert first["season"]["date"].startswith("--")
    res = runner.invoke(
        app,
        ["geo", "predict", "--model", str(trained), "--embeddings", str(toy_split / "val.parquet")],
    )
    assert res.exit_code == 0 and "rank" in res.output
    # the toy heads have no real backbone: images are refused with a clear message
    res = runner.invoke(app, ["geo", "predict", "--model", str(trained), "image.jpg"])
    assert isinstance(res.exception, SbeError) and "--embeddings" in str(res.exception)


def test_missing_split_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(SbeError, match="sbe split"):
        geo_stage.train(geo_cfg(tmp_path / "nope", tmp_path / "out"))


@pytest.mark.slow
def test_train_on_projector_outputs(toy_split, tmp_path) -> None:
    projector_mod = pytest.importorskip("sbe.models.projector")
    proj = projector_mod.Projector(
        projector_mod.ProjectorConfig(input_dim=32, output_dim=16, hidden_dim=32)
    )
    proj.save_pretrained(tmp_path / "run" / "best")
    out = tmp_path / "geo"
    m = geo_stage.train(geo_cfg(toy_split, out, run=tmp_path / "run", epochs=3))
    assert m.extra["input_space"] == "projector"
    heads = GeoHeads.from_pretrained(out)
    assert heads.config.in_dim == 16 and (out / "projector" / "model.safetensors").is_file()
    rows = geo_stage.predict(out, embeddings_file=toy_split / "test.parquet", top_k=2)
    assert len(rows) == pq.read_metadata(toy_split / "test.parquet").num_rows


@pytest.mark.slow
def test_predict_images_through_the_recorded_backbone(trained, tmp_path, monkeypatch) -> None:
    import shutil

    import numpy as np
    from PIL import Image

    import sbe.models.backbones as backbones
    from sbe.models.backbones import Backbone, Preprocess

    class FakeBackbone(Backbone):
        name, dim = "fake", 32
        preprocess = Preprocess(resize=40, crop=32, mean=(0, 0, 0), std=(1, 1, 1))

        def embed(self, images: np.ndarray) -> np.ndarray:
            flat = images.reshape(len(images), -1)[:, : self.dim].astype(np.float32)
            return flat + 1.0

    seen: list[dict] = []

    def fake_load(identity, **kw):
        seen.append(identity)
        return FakeBackbone()

    monkeypatch.setattr(backbones, "load_backbone", fake_load)
    geo_dir = tmp_path / "geo"
    shutil.copytree(trained, geo_dir)
    cfg = json.loads((geo_dir / "config.json").read_text())
    cfg["backbone"] = {"name": "fake", "dim": 32}
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    paths = []
    for i, colour in enumerate([(200, 30, 30), (20, 90, 220)]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (64, 48), colour).save(p)
        paths.append(p)
    rows = geo_stage.predict(geo_dir, images=paths, top_k=2)
    assert seen == [{"name": "fake", "dim": 32}]
    assert [r["source"] for r in rows] == [str(p) for p in paths]
    assert all(1 <= len(r["locations"]) <= 2 for r in rows)
    with pytest.raises(SbeError, match="not a readable image"):
        geo_stage.predict(geo_dir, images=[tmp_path / "missing.jpg"])
    assert len(seen) == 1  # a bad path fails before the model loads
