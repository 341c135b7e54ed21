"""Progress bars with throughput and ETA (rich), shared by every long stage.

A stage asks for a bar with :func:`progress_bar`. Inside :func:`progress_session` (what ``sbe run``
uses) every stage's bar joins one shared display instead of opening its own, so a whole pipeline
shows as one progress display.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)

_session: Progress | None = None


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``312.4 images/s`` (the unit is each task's ``unit`` field)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "items")
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {unit}/s", style="progress.data.speed")


def _new_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class Bar:
    """Handle returned by :func:`progress_bar`; ``advance(n)``, ``set_description``, ``set_total``."""

    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self._p, self._t = progress, task_id

    def advance(self, n: float = 1) -> None:
        if self._p is not None and self._t is not None:
            self._p.advance(self._t, n)

    def set_description(self, text: str) -> None:
        if self._p is not None and self._t is not None:
            self._p.update(self._t, description=text)

    def set_total(self, total: float | None) -> None:
        if self._p is not None and self._t is not None:
            self._p.update(self._t, total=total)

    def log(self, text: str) -> None:
        """Print a line above the live display (or to stderr without one)."""
        target = self._p.console if self._p is not None else console
        target.print(text, highlight=False, markup=False, soft_wrap=True)


def log_line(text: str) -> None:
    """Print a plain line to stderr, above any live progress display."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def progress_session(enabled: bool | None = None) -> Iterator[Progress | None]:
    """One live display for a sequence of stages; bars opened inside it become its tasks."""
    global _session
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or _session is not None:
        yield _session
        return
    progress = _new_progress()
    _session = progress
    try:
        with progress:
            yield progress
    finally:
        _session = None


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None, unit: str = "images", enabled: bool | None = None
) -> Iterator[Bar]:
    """A progress bar on stderr showing count, rate and ETA; silent when ``enabled`` is False.

    By default it is shown only when stderr is a terminal, so logs and tests stay clean. Inside a
    :func:`progress_session` it is a task of the shared display, removed when the block ends.
    """
    if enabled is False:
        yield Bar(None, None)
        return
    if _session is not None:
        task_id = _session.add_task(description, total=total, unit=unit)
        try:
            yield Bar(_session, task_id)
        finally:
            _session.remove_task(task_id)
        return
    if enabled is None and not sys.stderr.isatty():
        yield Bar(None, None)
        return
    progress = _new_progress()
    with progress:
        yield Bar(progress, progress.add_task(description, total=total, unit=unit))
