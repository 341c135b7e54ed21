"""The library's own settings objects match the config sections they are built from."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from sbe.config import GeoConfig, TrainConfig
from sbe.geo.settings import GeoSettings
from sbe.training.settings import TrainSettings

SRC = Path(__file__).resolve().parents[1] / "src" / "sbe"


def test_train_settings_defaults_are_the_sections() -> None:
    section = TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    assert names == set(TrainConfig.model_fields) - {"input", "neighbors", "output", "resume"}
    assert TrainSettings() == TrainSettings.of(section)
    changed = TrainSettings.of(section.model_copy(update={"lr": 0.5, "loss": "triplet"}))
    assert (changed.lr, changed.loss) == (0.5, "triplet")
    assert TrainSettings.of({"epochs": 3}).epochs == 3


def test_geo_settings_defaults_are_the_sections() -> None:
    section = GeoConfig()
    names = {f.name for f in dataclasses.fields(GeoSettings)}
    assert names <= set(GeoConfig.model_fields)
    assert GeoSettings() == GeoSettings.of(section)
    assert GeoSettings.of(section.model_copy(update={"hidden_dim": 64}), seed=7).hidden_dim == 64
    with pytest.raises(TypeError):
        GeoSettings.of(GeoSettings(), nope=1)


def test_library_does_not_import_the_config_schema() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for pkg in ("training", "geo")
        for p in sorted((SRC / pkg).rglob("*.py"))
        if "sbe.config" in p.read_text()
    ]
    assert offenders == []
    # and importing them does not load it either
    code = "import sys, sbe.training.loop, sbe.training.tuning, sbe.geo.build, sbe.geo.trainer;"
    code += "print('sbe.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_record_round_trips_and_tolerates_other_versions() -> None:
    from sbe.geo.heads import GeoHeadsConfig
    from sbe.geo.settings import GeoSettings

    cfg = GeoHeadsConfig(in_dim=8, hidden_dim=4, extra={"a": 1})
    assert GeoHeadsConfig.from_dict(cfg.to_dict()) == cfg
    # a key a later version added is ignored; one it lacks keeps its default
    old = {k: v for k, v in cfg.to_dict().items() if k != "season_south_min"}
    back = GeoHeadsConfig.from_dict({**old, "added_later": 3})
    assert back.season_south_min == GeoHeadsConfig(in_dim=8).season_south_min
    s = GeoSettings.of({"hidden_dim": 64, "unrelated": 1}, seed=7)
    assert (s.hidden_dim, s.seed, s.dropout) == (64, 7, GeoSettings().dropout)
    assert GeoSettings.of(s) is s and GeoSettings.of(s, lr=0.5).lr == 0.5
    assert s.replace(dropout=0.3).dropout == 0.3
    with pytest.raises(TypeError):
        s.replace(nope=1)
