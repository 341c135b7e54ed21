"""``_manifest.json``: what a stage did, from what, with which settings; and whether a rerun can skip."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sbe import __version__
from sbe.storage.atomic import write_json_atomic
from sbe.storage.lineage import Lineage

MANIFEST_NAME = "_manifest.json"
MAX_SKIP_EXAMPLES = 5


class InputFingerprint(BaseModel):
    """Identity of one input file: cheap to take, changes when the file is rewritten."""

    path: str
    size: int
    mtime_ns: int


def fingerprint_file(path: str | os.PathLike[str]) -> InputFingerprint:
    p = Path(path).resolve()
    st = p.stat()
    return InputFingerprint(path=str(p), size=st.st_size, mtime_ns=st.st_mtime_ns)


def fingerprint_paths(
    paths: Iterable[str | os.PathLike[str]], pattern: str = "*"
) -> list[InputFingerprint]:
    """Fingerprint files, expanding folders to the files in them that match ``pattern`` (sorted).

    Files whose name starts with ``.`` or ``_`` (temps, locks, manifests) are not inputs.
    """
    out: list[InputFingerprint] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob(pattern)):
                if f.is_file() and not f.name.startswith((".", "_")):
                    out.append(fingerprint_file(f))
        elif p.exists():
            out.append(fingerprint_file(p))
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return out


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a config dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class SkipLog:
    """Counts skipped records by reason and keeps a few examples of each for the manifest."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str | None = None, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        if example is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < MAX_SKIP_EXAMPLES:
                ex.append(example)

    def merge(self, counts: dict[str, int], examples: dict[str, list[str]] | None = None) -> None:
        for reason, n in counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for reason, exs in (examples or {}).items():
            ex = self.examples.setdefault(reason, [])
            ex.extend(exs[: MAX_SKIP_EXAMPLES - len(ex)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Manifest(BaseModel):
    """The record written next to every stage's output as ``_manifest.json``."""

    stage: str
    sbe_version: str = __version__
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    inputs: list[InputFingerprint] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    files: dict[str, int] = Field(default_factory=dict)
    """Every file under ``outputs`` (relative path -> size in bytes) when the stage committed."""
    rows: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    skip_examples: dict[str, list[str]] = Field(default_factory=dict)
    wall_seconds: float = 0.0
    created_at: str = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    up_to_date: bool = Field(default=False, exclude=True)
    """Set (not saved) when a rerun found the output current and skipped the work."""
    extra: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage | None = None
    """The stages this output descends from and its backbone (``None`` in old manifests)."""

    def with_skips(self, skips: SkipLog) -> Manifest:
        self.skipped = dict(sorted(skips.counts.items()))
        self.skip_examples = {k: v for k, v in sorted(skips.examples.items())}
        return self


def output_files(out_dir: str | os.PathLike[str], outputs: Iterable[str]) -> dict[str, int]:
    """Sizes of the files named by ``outputs`` (a folder counts as every file below it).

    Names starting with ``.`` or ``_`` (temps, locks, manifests) are never outputs.
    """
    root = Path(out_dir)
    files: dict[str, int] = {}
    for name in outputs:
        p = root / name
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(
                    part.startswith((".", "_")) for part in f.relative_to(root).parts
                ):
                    files[f.relative_to(root).as_posix()] = f.stat().st_size
        elif p.is_file():
            files[Path(name).as_posix()] = p.stat().st_size
    return files


def outputs_match(out_dir: str | os.PathLike[str], manifest: Manifest) -> bool:
    """Whether every output the manifest lists is on disk with the size it had at commit."""
    root = Path(out_dir)
    if not all((root / o).exists() for o in manifest.outputs):
        return False
    for name, size in manifest.files.items():
        try:
            if (root / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def write_manifest(out_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    write_json_atomic(path, manifest.model_dump(mode="json"))
    return path


def load_manifest(out_dir: str | os.PathLike[str]) -> Manifest | None:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValueError:
        return None


def manifest_is_current(
    out_dir: str | os.PathLike[str],
    stage: str,
    cfg_hash: str,
    inputs: list[InputFingerprint],
) -> Manifest | None:
    """Return the existing manifest if the stage's output is up to date, else ``None``.

    Current means: same stage, same effective config, the same input files with the same size and
    mtime, and every output file it lists still present with its committed size.
    """
    old = load_manifest(out_dir)
    if old is None or old.stage != stage or old.config_hash != cfg_hash:
        return None
    if [i.model_dump() for i in old.inputs] != [i.model_dump() for i in inputs]:
        return None
    if not outputs_match(out_dir, old):
        return None
    old.up_to_date = True
    return old


class StageTimer:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self._t0, 3)
