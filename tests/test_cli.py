"""The generated CLI: options from the config models, help, errors, ``run --json``, progress lines.

Most tests replace ``sbe.stages.run_stage`` by a recorder, so they check what the command line turns
into (the config section a stage receives) without running a stage.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sbe.stages
from sbe import progress
from sbe.cli import app, main
from sbe.config import PIPELINE_STAGES
from sbe.errors import SbeError
from sbe.storage import LockedError, Manifest

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``run_stage`` call of a command: the stage name, its section and the options."""
    seen: list[dict[str, Any]] = []

    def fake(stage: Any, cfg: Any, **options: Any) -> tuple[Manifest, dict[str, Any]]:
        seen.append({"stage": stage.name, "cfg": cfg, **options})
        return Manifest(stage=stage.name, rows={"things": 3}), {}

    monkeypatch.setattr(sbe.stages, "run_stage", fake)
    return seen


def raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def fake(*_a: Any, **_k: Any) -> None:
        raise exc

    monkeypatch.setattr(sbe.stages, "run_stage", fake)


def test_options_come_from_the_config_fields(calls, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["split", "--in", "b", "--out", "s", "--identity", "target", "--cell-size-m", "800"]
    r = runner.invoke(app, [*args, "--no-singletons-in-test", "--salt", "x", "--set", "seed=1"])
    assert r.exit_code == 2 and "split.seed: unknown key" in r.stderr  # --set names the key
    r = runner.invoke(app, [*args, "--no-singletons-in-test", "--set", "salt=x"])
    assert r.exit_code == 0, r.output
    cfg = calls[-1]["cfg"]
    assert (cfg.input, cfg.output) == (tmp_path / "b", tmp_path / "s")  # relative to the cwd
    assert cfg.identity == "target" and cfg.cell_size_m == 800.0 and cfg.salt == "x"
    assert cfg.singletons_in_test is False and cfg.train_ratio == 0.7  # untouched: the default
    assert calls[-1]["restart"] is False and calls[-1]["log"] is None
    # --input/--output are the same options as --in/--out, on every stage
    assert runner.invoke(app, ["cluster", "--input", "b", "--output", "c", "--restart"]).exit_code == 0  # fmt: skip
    assert (calls[-1]["cfg"].input, calls[-1]["cfg"].output) == (tmp_path / "b", tmp_path / "c")
    assert calls[-1]["restart"] is True
    # lists: repeatable or comma-separated; another section through --set; the positional OUT
    assert runner.invoke(app, ["neighbors", "--band-percentiles", "5,50", "--band-percentiles", "90"]).exit_code == 0  # fmt: skip
    assert calls[-1]["cfg"].band_percentiles == [5.0, 50.0, 90.0]
    r = runner.invoke(app, ["synth", "world", "-n", "7", "--preview", "--set", "synth.seed=4"])
    assert r.exit_code == 0, r.output
    cfg = calls[-1]["cfg"]
    assert (cfg.output, cfg.buildings, cfg.preview, cfg.seed) == (tmp_path / "world", 7, True, 4)


def test_config_file_values_stay_unless_a_flag_is_given(calls, tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('workdir = "w"\n[neighbors]\nk = 9\nspace = "embedding"\n')
    assert runner.invoke(app, ["neighbors", "-c", str(f), "--pca-components", "4"]).exit_code == 0
    cfg = calls[-1]["cfg"]
    assert (cfg.k, cfg.space, cfg.pca_components) == (9, "embedding", 4)
    assert cfg.output == tmp_path / "w" / "neighbors"  # config paths: under its workdir
    assert runner.invoke(app, ["neighbors", "-c", str(f), "--workdir", str(tmp_path / "o")]).exit_code == 0  # fmt: skip
    assert calls[-1]["cfg"].output == tmp_path / "o" / "neighbors"


def test_bad_values_are_usage_errors_naming_the_key(calls) -> None:
    r = runner.invoke(app, ["split", "--identity", "x"])
    assert r.exit_code == 2 and "split.identity" in r.stderr and "'building'" in r.stderr
    r = runner.invoke(app, ["split", "--cell-size-m", "abc"])
    assert r.exit_code == 2 and "--cell-size-m" in r.stderr
    r = runner.invoke(app, ["synth", "--difficulty", "1.5"])
    assert r.exit_code == 2 and "synth.difficulty" in r.stderr
    assert runner.invoke(app, ["embed", "--shard", "x"]).exit_code == 2
    assert runner.invoke(app, ["run", "-c", "x.toml", "--restart", "nope"]).exit_code == 2
    assert calls == []


def test_help_shows_types_choices_real_defaults_and_examples() -> None:
    r = runner.invoke(app, ["split", "--help"], env=WIDE)
    assert r.exit_code == 0
    text = r.stdout
    assert "--cell-size-m" in text and "[default: 500.0]" in text and "building|target" in text
    assert "--in,--input" in text and "--out,--output" in text and "[default: backbone]" in text
    assert "--singletons-in-test" in text and "--no-singletons-in-test" in text
    assert "Examples:" in text and "sbe split --in work/backbone --out work/split" in text
    assert "(>= 0, <= 1)" in text  # bounds of --train-ratio
    r = runner.invoke(app, ["evaluate", "--help"], env=WIDE)
    assert "[default: 1, 5, 10, 100]" in r.stdout and "sbe evaluate --run work/run" in r.stdout
    # rich markup is escaped: "[train]" in a docstring is printed, not swallowed
    r = runner.invoke(app, ["tune", "--help"], env=WIDE)
    assert "settings of [train]" in r.stdout
    r = runner.invoke(app, ["geo", "train", "--help"], env=WIDE)
    assert "sbe geo train --in work/split --out work/geo" in r.stdout
    assert "--resume" in runner.invoke(app, ["train", "--help"], env=WIDE).stdout


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["backbone", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    code = (
        "import sys\nfrom sbe.cli import main\n"
        f"sys.argv = ['sbe', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'faiss', 'onnxruntime', 'sbe.stages.train')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "HEAVY []" in r.stdout


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """``sbe ARGS`` through the console entry point: (exit code, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["sbe", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def test_an_output_under_a_file_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "f").write_text("x")
    code, lines = run_main(monkeypatch, capsys, "cluster", "--in", str(tmp_path), "--out", str(tmp_path / "f" / "c"))  # fmt: skip
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: cannot write {tmp_path / 'f' / 'c'}: Not a directory")
    code, lines = run_main(monkeypatch, capsys, "cluster", "--in", str(tmp_path), "--out", str(tmp_path / "f"))  # fmt: skip
    assert code == 1 and lines[0].startswith(f"error: cannot write {tmp_path / 'f'}: File exists")


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/out/part.parquet"),
            "error: cannot write /data/out/part.parquet: No space left on device (free some space",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/ro/x"),
            "error: cannot write /ro/x: Read-only file system",
        ),
        (
            SbeError("run.json not found in /r: run `sbe train` first"),
            "error: run.json not found in /r",
        ),
        (LockedError("/o is being written by another run (pid 7)"), "error: /o is being written"),
    ],
)
def test_user_errors_are_one_line_exit_1(exc, line, monkeypatch, capsys) -> None:
    raising(monkeypatch, exc)
    code, lines = run_main(monkeypatch, capsys, "split")
    assert code == 1 and len(lines) == 1 and lines[0].startswith(line), lines
    code, lines = run_main(monkeypatch, capsys, "split", "--verbose")
    assert code == 1 and lines[0].startswith("Traceback") and lines[-1].startswith(line)


def test_config_errors_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    code, lines = run_main(monkeypatch, capsys, "split", "-c", str(tmp_path / "none.toml"))
    assert code == 2 and lines == [f"error: config: config file not found: {tmp_path / 'none.toml'}"]  # fmt: skip
    code, lines = run_main(monkeypatch, capsys, "split", "--set", "novalue")
    assert code == 2 and len(lines) == 1 and "--set expects" in lines[0]
    code, lines = run_main(monkeypatch, capsys, "run")
    assert code == 2 and lines == ["error: config: sbe run needs --config FILE (or run `sbe demo`)"]


def test_ctrl_c_says_what_is_kept_and_exits_130(monkeypatch) -> None:
    raising(monkeypatch, KeyboardInterrupt())
    r = runner.invoke(app, ["split"])
    assert r.exit_code == 130
    assert "finished stages and parts are kept" in r.stderr and "same command again" in r.stderr


def test_quiet_and_verbose(calls) -> None:
    r = runner.invoke(app, ["cluster", "-q"])
    assert r.exit_code == 0 and "things" in r.stdout and r.stderr == ""
    assert calls[-1]["log"] is None
    assert runner.invoke(app, ["cluster", "-v"]).exit_code == 0
    assert callable(calls[-1]["log"])
    r = runner.invoke(app, ["cluster", "--json"])
    assert json.loads(r.stdout)["rows"] == {"things": 3}


def test_plain_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys) -> None:
    now = [100.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setenv("SBE_PROGRESS_EVERY", "10")
    with progress.progress_bar("backbone", 1000, unit="images") as bar:
        for _ in range(8):  # 100 images every 4 s: a line at 12 s, 24 s
            now[0] += 4
            bar.advance(100)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "backbone: 300/1,000 images (30%), 25.0 images/s, 0:00:12, ETA 0:00:28",
        "backbone: 600/1,000 images (60%), 25.0 images/s, 0:00:24, ETA 0:00:16",
    ]
    with progress.progress_default(False), progress.progress_bar("quiet", 10) as bar:
        now[0] += 60
        bar.advance(5)
    assert capsys.readouterr().err == ""


def test_run_json_and_key_numbers(tiny_pipeline) -> None:
    cfg, _ = tiny_pipeline
    config = str(cfg.workdir.parent / "tiny.toml")
    r = runner.invoke(app, ["run", "--config", config, "--json", "--restart", "cluster"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    stages = {s["stage"]: s for s in out["stages"]}
    assert len(stages) == 14 and set(stages["cluster"]) >= {"status", "seconds", "rows", "skips"}
    assert stages["cluster"]["status"] == "done" and stages["cluster"]["rows"]
    before = PIPELINE_STAGES[: PIPELINE_STAGES.index("cluster")]  # the report after it reruns
    assert {stages[n]["status"] for n in before} == {"up to date"}
    assert any(k["what"] == "test Recall@1 (projector)" for k in out["key_numbers"])
    report = cfg.workdir.resolve() / "report" / "report.html"
    assert out["report"] == str(report)
    r = runner.invoke(app, ["run", "--config", config])
    assert r.exit_code == 0 and f"report: {report}\n" in r.stdout  # in full, not cut by a table
    assert "[14/14] report" in r.stderr


def test_demo_applies_set_and_refuses_a_config_file(tmp_path: Path, monkeypatch, capsys) -> None:
    import sbe.pipeline

    seen = {}

    def fake_run(opts, cfg, **_):
        seen["cfg"] = cfg
        return {}, []

    monkeypatch.setattr(sbe.pipeline, "_run_and_report", fake_run)
    runner = CliRunner()
    r = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--set", "train.epochs=2"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].train.epochs == 2 and seen["cfg"].workdir == (tmp_path / "d").resolve()
    (tmp_path / "x.toml").write_text("[train]\nepochs = 4\n")
    code, lines = run_main(monkeypatch, capsys, "demo", "--config", str(tmp_path / "x.toml"))
    assert code == 2 and lines == [
        "error: config: sbe demo runs the built-in config; run your own with sbe run --config FILE"
    ]
