"""Fault injection for crash-consistency tests: stop a stage right after its N-th file commit.

Every durable write in ``sbe`` ends in ``os.replace`` (temp file -> final name, see
``sbe.storage.atomic``). :func:`crash_after` lets the first ``n`` replaces happen and then raises
:class:`SimulatedCrash` (a ``BaseException``: no ``except Exception`` in the code catches it, so the
run stops there the way a kill would; ``finally`` blocks still run, so locks are released as the
kernel would release them). :func:`crash_matrix` runs a stage with a crash at *every* commit point,
with the same and with changed settings, reruns it with the original settings and checks the output
equals a clean run's, file by file (contents, not row counts), with no temp file left.

Run stages in-process (``workers = 1``) so that every replace goes through this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

#: manifest keys that differ between two clean runs of the same work (``config`` holds absolute
#: paths; ``config_hash``, which is compared, covers every setting that decides the output)
VOLATILE_MANIFEST_KEYS = {"wall_seconds", "created_at", "inputs", "files", "extra", "config"}
#: file names that are bookkeeping, not output
BOOKKEEPING = {".lock"}


class SimulatedCrash(BaseException):
    """Raised by :func:`crash_after` in place of a kill."""


@contextlib.contextmanager
def count_replaces() -> Iterator[list[str]]:
    """Record the destination of every ``os.replace`` / ``os.rename`` inside the block."""
    seen: list[str] = []
    real_replace, real_rename = os.replace, os.rename

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        real_replace(src, dst, *a, **k)
        seen.append(str(dst))

    def rename(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        real_rename(src, dst, *a, **k)
        seen.append(str(dst))

    os.replace, os.rename = replace, rename  # type: ignore[assignment]
    try:
        yield seen
    finally:
        os.replace, os.rename = real_replace, real_rename  # type: ignore[assignment]


@contextlib.contextmanager
def crash_after(n: int) -> Iterator[None]:
    """Let ``n`` replaces/renames complete, then raise :class:`SimulatedCrash` (``n=0``: at once)."""
    real_replace, real_rename = os.replace, os.rename
    done = 0

    def _maybe_crash() -> None:
        if done >= n:
            raise SimulatedCrash(f"simulated crash after {n} file commits")

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        nonlocal done
        _maybe_crash()
        real_replace(src, dst, *a, **k)
        done += 1
        _maybe_crash()

    def rename(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        nonlocal done
        _maybe_crash()
        real_rename(src, dst, *a, **k)
        done += 1
        _maybe_crash()

    os.replace, os.rename = replace, rename  # type: ignore[assignment]
    try:
        yield
    finally:
        os.replace, os.rename = real_replace, real_rename  # type: ignore[assignment]


def _normalise_manifest(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE_MANIFEST_KEYS}


def output_files(folder: Path) -> dict[str, Path]:
    """Every file below ``folder`` by relative path, bookkeeping excluded."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in BOOKKEEPING
    }


def assert_same_output(
    expected: Path,
    actual: Path,
    *,
    ignore: Callable[[str], bool] = lambda _name: False,
    compare: dict[str, Callable[[Path, Path], None]] | None = None,
) -> None:
    """Assert two output folders hold the same files with the same contents.

    Parquet files are compared as tables (their footers carry timestamps), ``_manifest.json``
    without its volatile keys, JSON files as data, everything else byte for byte. ``compare`` maps
    a relative name to a custom comparison; ``ignore`` drops names that legitimately differ.
    """
    want = {k: v for k, v in output_files(expected).items() if not ignore(k)}
    got = {k: v for k, v in output_files(actual).items() if not ignore(k)}
    temps = [k for k in got if Path(k).name.startswith(".tmp-")]
    assert not temps, f"temporary files left behind: {temps}"
    assert sorted(got) == sorted(want), f"file sets differ: {sorted(set(got) ^ set(want))}"
    for name, a in want.items():
        b = got[name]
        if compare and name in compare:
            compare[name](a, b)
        elif Path(name).name == "_manifest.json":
            assert _normalise_manifest(a) == _normalise_manifest(b), name
        elif name.endswith(".parquet"):
            ta, tb = pq.read_table(a), pq.read_table(b)
            assert ta.schema.remove_metadata() == tb.schema.remove_metadata(), name
            assert ta.equals(tb), f"{name}: contents differ"
        elif name.endswith(".json"):
            assert json.loads(a.read_text()) == json.loads(b.read_text()), name
        else:
            assert a.read_bytes() == b.read_bytes(), f"{name}: bytes differ"


@dataclass
class CrashReport:
    """What :func:`crash_matrix` tried: crash points per settings variant."""

    stage: str
    points: dict[str, int] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(self.points.values())


def crash_matrix(
    stage: str,
    run: Callable[[Path, dict[str, Any]], Any],
    work: Path,
    *,
    changed: dict[str, Any],
    output: str = "out",
    same_output: Callable[[Path, Path], None] | None = None,
    max_points: int | None = None,
) -> CrashReport:
    """Crash ``run`` at every commit point, with the same and with changed settings, and recover.

    Args:
        stage: a name for the report.
        run: ``run(workdir, overrides)`` runs the stage with its output at ``workdir / output``;
            ``overrides`` are the changed settings (``{}`` = the original ones).
        work: a scratch folder (one sub-folder per case is made in it).
        changed: the settings of the interrupted run in the "changed settings" case.
        output: the output folder's name inside each workdir.
        same_output: the comparison (default :func:`assert_same_output`).
        max_points: cap the crash points tried per variant (the first ones and the last ones).

    Returns:
        The crash points tried per variant (``same``, ``changed``).
    """
    check = same_output or assert_same_output
    clean = work / "clean"
    with count_replaces() as commits:
        run(clean, {})
    n_points = len(commits)
    assert n_points > 0, f"{stage}: a clean run committed no file"
    points = list(range(n_points))
    if max_points is not None and n_points > max_points:
        half = max_points // 2
        points = points[:half] + points[-(max_points - half) :]
    report = CrashReport(stage)
    for variant, settings in (("same", {}), ("changed", changed)):
        for n in points:
            case = work / f"{variant}-{n}"
            if variant == "changed":
                shutil.copytree(clean, case)  # a finished run, then an interrupted change
            with contextlib.suppress(SimulatedCrash), crash_after(n):
                run(case, settings)
            run(case, {})
            check(clean / output, case / output)
        report.points[variant] = len(points)
    _append_report(report, changed, n_points)
    return report


def _append_report(report: CrashReport, changed: dict[str, Any], n_points: int) -> None:
    """One JSON line per matrix in ``$SBE_CRASH_REPORT`` (``benchmarks/crash_consistency.py``)."""
    target = os.environ.get("SBE_CRASH_REPORT")
    if not target:
        return
    line = {
        "stage": report.stage,
        "commit_points": n_points,
        "crash_points": report.points,
        "runs": report.runs,
        "changed": {k: str(v) for k, v in changed.items()},
    }
    with open(target, "a") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
