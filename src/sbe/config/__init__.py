"""Configuration: one TOML file, one pydantic model per stage, paths relative to a work directory.

Unknown keys and bad values are errors that name the key (``backbone.batch_size: ...``). Every
stage receives its own section with paths already resolved against the work directory.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from sbe.config.base import PRECISION_HELP, RUNTIME, Device, Engine, Precision, Section
from sbe.config.model_sections import (
    EvaluateConfig,
    GeoConfig,
    TrainConfig,
    TuneConfig,
    VerifyConfig,
)
from sbe.config.sections import (
    BackboneConfig,
    IngestConfig,
    LabelConfig,
    NeighborsConfig,
    SplitConfig,
    SynthConfig,
)
from sbe.config.serving_sections import (
    AggregateConfig,
    ClusterConfig,
    EmbedConfig,
    IndexConfig,
    PublishConfig,
    ReportConfig,
)

__all__ = [
    "PIPELINE_STAGES",
    "PRECISION_HELP",
    "RUNTIME",
    "SECTION_NAMES",
    "AggregateConfig",
    "BackboneConfig",
    "ClusterConfig",
    "ConfigError",
    "Device",
    "EmbedConfig",
    "Engine",
    "EvaluateConfig",
    "GeoConfig",
    "IndexConfig",
    "IngestConfig",
    "LabelConfig",
    "NeighborsConfig",
    "PipelineConfig",
    "PipelineStage",
    "Precision",
    "PublishConfig",
    "ReportConfig",
    "SbeConfig",
    "Section",
    "SplitConfig",
    "SynthConfig",
    "TrainConfig",
    "TuneConfig",
    "VerifyConfig",
    "config_to_toml_dict",
    "format_errors",
    "load_config",
    "load_config_data",
    "parse_sets",
    "section_dict",
]


PipelineStage = Literal[
    "synth",
    "ingest",
    "backbone",
    "split",
    "neighbors",
    "train",
    "evaluate",
    "geo",
    "publish",
    "embed",
    "aggregate",
    "index",
    "cluster",
    "report",
]
#: every stage of ``sbe run``, in order
PIPELINE_STAGES: tuple[str, ...] = get_args(PipelineStage)


class PipelineConfig(Section):
    """What ``sbe run`` runs: the stages in order, from synthetic data or from raw tars."""

    source: Literal["synth", "tars"] = Field(
        "synth", description="synth: generate the world first; tars: ingest [ingest] inputs"
    )
    skip: list[PipelineStage] = Field(default_factory=list, description="stages not to run")
    threads: int = Field(
        0, ge=0, description="torch/BLAS threads; 0 = one per core", json_schema_extra=RUNTIME
    )


class SbeConfig(BaseModel):
    """The whole pipeline's configuration (one TOML file, a section per stage)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)

    workdir: Path = Path(".")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    neighbors: NeighborsConfig = Field(default_factory=NeighborsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    geo: GeoConfig = Field(default_factory=GeoConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)

    def section(self, name: str) -> Section:
        """The named section with its paths resolved against the work directory."""
        sec = getattr(self, name)
        if not isinstance(sec, Section):
            raise KeyError(name)
        return sec.resolved(self.workdir.expanduser().resolve())

    def resolved(self) -> SbeConfig:
        """A copy with every section's paths made absolute (typed access: ``cfg.resolved().train``)."""
        workdir = self.workdir.expanduser().resolve()
        updates = {name: getattr(self, name).resolved(workdir) for name in SECTION_NAMES}
        return self.model_copy(update=updates)


SECTION_NAMES = tuple(n for n in SbeConfig.model_fields if n != "workdir")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> SbeConfig:
    """Load a TOML config (or the defaults), apply per-section overrides, validate.

    Args:
        path: TOML file; a relative ``workdir`` in it is taken relative to the file's folder.
            ``None`` means all defaults with the current directory as work directory.
        overrides: ``{section: {key: value}}`` from CLI flags; ``None`` values are ignored.
            Relative paths given here are resolved against the current directory (shell rules).

    Raises:
        ConfigError: unknown key or bad value, with the key named.
    """
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        base = path.resolve().parent
    wd = Path(data.get("workdir", ".")).expanduser()
    data["workdir"] = wd if wd.is_absolute() else (base / wd)
    return load_config_data(data, overrides)


def load_config_data(
    data: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None
) -> SbeConfig:
    """Validate already-parsed config data (e.g. a packaged TOML) with per-section overrides.

    Args:
        data: the parsed TOML (changed in place by the overrides).
        overrides: as in :func:`load_config`.

    Raises:
        ConfigError: unknown key or bad value, with the key named.
    """
    for section, values in (overrides or {}).items():
        sec = data.setdefault(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"{section}: expected a table")
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, Path) and not value.is_absolute():
                value = value.resolve()
            elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
                value = [v if v.is_absolute() else v.resolve() for v in value]
            sec[key] = value
    try:
        return SbeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None


def config_to_toml_dict(cfg: SbeConfig) -> dict[str, Any]:
    """The effective config as plain TOML-serialisable data (paths as strings, no nulls)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return clean(cfg.model_dump(mode="python"))


def section_dict(sec: BaseModel) -> dict[str, Any]:
    """A section as JSON-friendly data, for manifests and config hashes."""
    return sec.model_dump(mode="json")


def parse_sets(pairs: list[str] | None, section: str | None) -> dict[str, dict[str, Any]]:
    """``--set key=value`` (``key`` or ``section.key``) -> ``{section: {key: value}}``.

    A value is read as a TOML value (``3``, ``true``, ``[1, 5]``, ``"x"``), else taken as text; a
    relative path in it is under the work directory, as in a config file.

    Raises:
        ConfigError: a pair without ``=`` or without a section to go to.
    """
    result: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        sec, dot, field = key.strip().rpartition(".")
        if not sep or not field or not (dot or section):
            raise ConfigError(f"--set expects SECTION.KEY=VALUE (or KEY=VALUE), got {pair!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        result.setdefault(sec or section or "", {})[field] = value
    return result
