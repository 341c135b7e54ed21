"""The base of every config section: strict models whose paths resolve against a work directory.

The field types shared by several sections (devices, engines, precision) and :data:`RUNTIME`, the
marker of fields that stay out of the config hash, live here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
)

Device = Literal["auto", "cpu", "cuda"]
Engine = Literal["local", "ray"]
#: backbone arithmetic on the CPU: float32, or ONNX Runtime static INT8 calibrated on the input
Precision = Literal["fp32", "int8"]
PRECISION_HELP = (
    "fp32, or int8 = ONNX Runtime static quantisation calibrated on a seeded sample of the input "
    "(CPU only; docs/backbone.md)"
)

#: ``json_schema_extra`` of a field that says how, not what: it stays out of the config hash, so
#: changing it never makes a finished stage redo its work (devices, threads, workers, logging).
RUNTIME: dict[str, Any] = {"hashed": False}
#: marks a setting added after work folders existed: hashed only when it differs from its
#: default, so a folder made before it (the same output) stays up to date
HASHED_WHEN_SET: dict[str, Any] = {"hashed": "when set"}


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    # the validators are built on first use: `sbe --help` only reads the fields
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, defer_build=True
    )

    #: names of fields holding paths that are resolved against the work directory
    _path_fields: tuple[str, ...] = ()
    #: command lines shown at the end of the command's ``--help`` (the CLI is generated from here)
    examples: ClassVar[tuple[str, ...]] = ()

    def resolved(self, workdir: Path) -> Self:
        """A copy with every path field made absolute (relative paths are under ``workdir``)."""
        updates: dict[str, Any] = {}
        for name in self._path_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, list):
                updates[name] = [_under(workdir, v) for v in value]
            else:
                updates[name] = _under(workdir, value)
        return self.model_copy(update=updates)

    def hashed_settings(self) -> dict[str, Any]:
        """The settings that decide what a stage computes: every field but paths and runtime ones.

        Paths stay out because a stage fingerprints the files it reads (and where its output goes
        does not change it); fields marked :data:`RUNTIME` stay out because they say how, not what;
        fields marked :data:`HASHED_WHEN_SET` stay out while they hold their default.
        """
        data = self.model_dump(mode="json")
        skip = set(self._path_fields)
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            hashed = extra.get("hashed") if isinstance(extra, dict) else None
            at_default = getattr(self, name) == info.get_default(call_default_factory=True)
            if hashed is False or (hashed == "when set" and at_default):
                skip.add(name)
        return {k: v for k, v in data.items() if k not in skip}


def _under(workdir: Path, p: Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else (workdir / p)
