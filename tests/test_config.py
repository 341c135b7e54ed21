from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sbe.cli import app
from sbe.config import ConfigError, load_config


def test_defaults_and_workdir_relative_to_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "sub" / "c.toml"
    cfg_file.parent.mkdir()
    cfg_file.write_text('workdir = "w"\n[ingest]\noutput = "imgs"\n')
    cfg = load_config(cfg_file)
    ingest = cfg.section("ingest")
    assert ingest.output == (tmp_path / "sub" / "w" / "imgs").resolve()
    assert ingest.inputs == [(tmp_path / "sub" / "w" / "raw").resolve()]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[backbone]\nbatchsize = 3\n")
    with pytest.raises(ConfigError, match=r"backbone\.batchsize: unknown key"):
        load_config(f)


def test_bad_value_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[backbone]\ndevice = "tpu"\n')
    with pytest.raises(ConfigError, match=r"backbone\.device"):
        load_config(f)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[bakbone]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"bakbone: unknown key"):
        load_config(f)


def test_split_ratios_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="split"):
        load_config(None, {"split": {"train_ratio": 0.9}})


def test_overrides_win_and_none_is_ignored(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[synth]\nbuildings = 10\n")
    cfg = load_config(f, {"synth": {"buildings": 20, "seed": None}})
    assert cfg.synth.buildings == 20 and cfg.synth.seed == 0


def test_config_show_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[train]\nepochs = 3\n")
    r = CliRunner().invoke(app, ["config", "show", "--config", str(f)])
    assert r.exit_code == 0, r.output
    assert "[train]" in r.output and "epochs = 3" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    r = CliRunner().invoke(app, ["config", "show", "--config", str(bad)])
    assert r.exit_code == 2
    assert "train.epoch: unknown key" in r.output


def test_hashed_when_set_compares_values_of_any_type_with_their_defaults() -> None:
    from pathlib import Path

    from pydantic import Field

    from sbe.config import IndexConfig
    from sbe.config.base import HASHED_WHEN_SET, Section

    class Later(Section):
        kept: int = 1
        path: Path = Field(Path("x"), json_schema_extra=HASHED_WHEN_SET)
        items: list[int] = Field(default_factory=list, json_schema_extra=HASHED_WHEN_SET)
        pair: tuple[int, int] = Field((1, 2), json_schema_extra=HASHED_WHEN_SET)

    assert Later().hashed_settings() == {"kept": 1}
    assert Later(items=[3], pair=(1, 3)).hashed_settings() == {
        "kept": 1,
        "items": [3],
        "pair": [1, 3],
    }
    assert Later(path=Path("y")).hashed_settings() == {"kept": 1, "path": "y"}
    # the index's local-feature settings came later: an index built before them stays current
    base = IndexConfig().hashed_settings()
    assert "local_features" not in base and "local_features_per_row" not in base
    assert IndexConfig(local_features=True).hashed_settings()["local_features"] is True


def test_embed_shard_sets_the_two_validated_fields() -> None:
    import pytest
    from pydantic import ValidationError

    from sbe.config import EmbedConfig

    c = EmbedConfig(shard="1/4")
    assert (c.shard_index, c.shard_count, c.shard) == (1, 4, None)
    assert {"shard_index", "shard_count"} <= c.model_fields_set
    with pytest.raises(ValidationError, match="shard_index 4 must be < shard_count"):
        EmbedConfig(shard="4/4")
    with pytest.raises(ValidationError, match="K/N"):
        EmbedConfig(shard="x")
