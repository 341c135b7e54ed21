from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import PIPELINE_STAGES, load_config
from sbe.pipeline import demo_config, key_numbers, run_pipeline, wire


def test_every_stage_runs_once_then_is_up_to_date(tiny_pipeline) -> None:
    cfg, outcomes = tiny_pipeline
    assert [o.stage for o in outcomes] == list(PIPELINE_STAGES)
    assert all(o.status == "done" for o in outcomes), [
        (o.stage, o.status, o.reason) for o in outcomes
    ]
    w = cfg.workdir
    for rel in (
        "raw/_manifest.json",
        "images/_manifest.json",
        "backbone/_manifest.json",
        "split/test.parquet",
        "neighbors/train.parquet",
        "run/best/model.safetensors",
        "run/evaluate/test.json",
        "geo/metrics.json",
        "model/config.json",
        "embeddings/state.json",
        "buildings/buildings.parquet",
        "index/index.faiss",
        "clusters/assignments.parquet",
    ):
        assert (w / rel).exists(), rel
    again = run_pipeline(cfg, show_progress=False)
    assert [o.status for o in again] == ["up to date"] * len(PIPELINE_STAGES)


def test_key_numbers_come_from_the_outputs(tiny_pipeline) -> None:
    cfg, _ = tiny_pipeline
    rows = {what: (value, versus) for what, value, versus in key_numbers(cfg)}
    run = json.loads((cfg.workdir / "run" / "run.json").read_text())
    assert rows["test Recall@1 (projector)"][0] == f"{run['test']['projector']['recall@1']:.3f}"
    assert "backbone" in rows["test mAP@R (projector)"][1]
    assert "geo: within 200 km / 750 km" in rows
    assert rows["backbone throughput"][0].endswith("images/s")


def test_run_cli_reuses_finished_outputs(tiny_pipeline) -> None:
    cfg, _ = tiny_pipeline
    result = CliRunner().invoke(app, ["run", "--config", str(cfg.workdir.parent / "tiny.toml")])
    assert result.exit_code == 0, result.output
    assert "key numbers" in result.output
    assert "test Recall@1" in result.output


def test_wire_derives_inputs_from_outputs(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[synth]\noutput = "gen"\npackaged = "new.parquet"\n[ingest]\noutput = "rows"\n'
        '[backbone]\noutput = "vecs"\n[pipeline]\nskip = ["geo"]\n'
    )
    cfg = wire(load_config(f))
    assert cfg.ingest.inputs == [Path("gen")]
    assert cfg.backbone.input == Path("rows") and cfg.split.input == Path("vecs")
    assert cfg.embed.input == Path("new.parquet") and cfg.publish.geo is None
    assert cfg.index.input == cfg.aggregate.output == cfg.cluster.input


def test_demo_config_is_valid(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "demo")
    assert cfg.workdir == (tmp_path / "demo").resolve()
    assert cfg.pipeline.source == "synth" and cfg.synth.packaged is not None
    assert cfg.section("report").output == (tmp_path / "demo" / "report").resolve()
