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


def test_raw_tars_turn_synth_off_and_keep_the_configured_inputs(tmp_path: Path) -> None:
    from sbe.pipeline import _skipped

    f = tmp_path / "c.toml"
    f.write_text(
        '[pipeline]\nsource = "tars"\n[ingest]\ninputs = ["/data/3dsv"]\n'
        '[embed]\ninput = "mine.parquet"\n[report]\nraw = "gen"\n'
    )
    cfg = load_config(f)
    assert _skipped(cfg) == {"synth": "source is raw tars"}
    wired = wire(cfg)
    # synth does not run: the ingest and embed inputs stay as configured, the report has no world
    assert wired.ingest.inputs == [Path("/data/3dsv")] and wired.embed.input == Path("mine.parquet")
    assert wired.report.raw is None and wired.backbone.input == wired.ingest.output


def test_demo_config_is_valid(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "demo")
    assert cfg.workdir == (tmp_path / "demo").resolve()
    assert cfg.pipeline.source == "synth" and cfg.synth.packaged is not None
    assert cfg.section("report").output == (tmp_path / "demo" / "report").resolve()


def test_a_moved_work_folder_keeps_working(tiny_pipeline, tmp_path: Path) -> None:
    """Recorded paths are relative to their output folder: after the whole work folder is copied
    and then moved (its first place and the original both gone), ``sbe run`` finds every stage up
    to date, what the outputs record resolves in the new place, and publish, embed, aggregate,
    index, search and the report rerun from there."""
    import shutil

    import pyarrow.parquet as pq

    from sbe.stages import search as search_stage
    from sbe.storage.artifacts import EmbedDir, IndexDir, RunDir

    cfg, _ = tiny_pipeline
    original = cfg.workdir.parent
    first = tmp_path / "first"
    shutil.copytree(original, first)
    # a copy is up to date (the original is still there), but for evaluate when it read the
    # landmarks photos (a folder outside the work folder, now at another relative path) and the
    # report, which reads evaluate's result
    again = run_pipeline(load_config(first / "tiny.toml"), show_progress=False)
    assert [o.status for o in again if o.stage not in ("evaluate", "report")] == ["up to date"] * (
        len(PIPELINE_STAGES) - 2
    ), [(o.stage, o.status, o.reason) for o in again]
    moved = tmp_path / "moved"
    first.rename(moved)
    hidden = original.with_name(original.name + "-hidden")
    original.rename(hidden)  # absolute paths the original recorded now lead nowhere
    try:
        w = moved / "w"
        outcomes = run_pipeline(load_config(moved / "tiny.toml"), show_progress=False)
        assert [o.status for o in outcomes] == ["up to date"] * len(PIPELINE_STAGES), [
            (o.stage, o.status, o.reason) for o in outcomes
        ]
        # what the outputs record resolves inside the moved folder
        run = RunDir(w / "run")
        assert run.split_dir().root == w / "split"
        assert run.require_backbone().name == run.run_record().to_dict()["backbone"]["name"]
        embed = EmbedDir(w / "embeddings")
        assert embed.model_dir() == w / "model"
        packaged = embed.input_path()
        assert packaged is not None and packaged.is_relative_to(w) and packaged.is_file()
        # the lineage names every stage upstream, and the backbone
        assert run.lineage().stages[-4:] == ["backbone", "split", "neighbors", "train"]
        assert run.lineage().backbone == run.require_backbone()
        index_lineage = IndexDir(w / "index").lineage()
        assert index_lineage.stages[-4:] == ["publish", "embed", "aggregate", "index"]
        assert index_lineage.backbone == run.require_backbone()
        # rerun from the new place: what the new model and embeddings feed is redone
        restarted = run_pipeline(
            load_config(moved / "tiny.toml"), show_progress=False, restart=("publish", "embed")
        )
        redone = ("publish", "embed", "aggregate", "index", "cluster", "report")
        assert [o.status for o in restarted] == [
            "done" if o.stage in redone else "up to date" for o in restarted
        ], [(o.stage, o.status, o.reason) for o in restarted]
        assert "- run: `../run`" in (w / "model" / "README.md").read_text()
        # an image query finds the model through the index's relative record
        image = tmp_path / "query.jpg"
        image.write_bytes(
            pq.read_table(packaged, columns=["image_bytes"])["image_bytes"][0].as_py()
        )
        _, _, result = search_stage.run_query(w / "index", images=[image], k=2)
        assert len(result.hits(0)) == 2
    finally:
        hidden.rename(original)
