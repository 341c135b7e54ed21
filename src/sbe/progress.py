"""Progress bars with throughput and ETA (rich), shared by every long stage.

A stage asks for a bar with :func:`progress_bar`. Inside :func:`progress_session` (what ``sbe run``
uses) every stage's bar joins one shared display instead of opening its own, so a whole pipeline
shows as one progress display.

When stderr is not a terminal (SLURM, nohup, a pipe) there is no live display; a bar then prints one
plain line every ``SBE_PROGRESS_EVERY`` seconds (30 by default) while it advances, so a log file
shows that a long stage is alive, how far it is and when it should end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

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
#: what ``enabled=None`` means (``None`` = a display on a terminal, plain lines elsewhere)
_default: bool | None = None
#: seconds since an arbitrary start; tests replace it with a fake clock
clock: Callable[[], float] = time.monotonic
DEFAULT_EVERY = 30.0


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


class PlainBar(Bar):
    """A bar without a display: one plain line on stderr at most every ``every`` seconds.

    Args:
        description: the bar's name, e.g. ``"backbone"``.
        total: the count at the end (``None`` = unknown: no percentage or ETA).
        unit: what is counted, e.g. ``"images"``.
        every: seconds between lines.
    """

    def __init__(self, description: str, total: float | None, unit: str, every: float) -> None:
        super().__init__(None, None)
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.completed = 0.0
        self._start = self._last = clock()

    def advance(self, n: float = 1) -> None:
        self.completed += n
        now = clock()
        if now - self._last >= self.every:
            self._last = now
            log_line(self.line(now))

    def set_description(self, text: str) -> None:
        self.description = text

    def set_total(self, total: float | None) -> None:
        self.total = total

    def log(self, text: str) -> None:
        log_line(text)

    def line(self, now: float) -> str:
        """E.g. ``backbone: 4,096/10,000 images (41%), 312.4 images/s, 0:00:13, ETA 0:00:19``."""
        elapsed = max(now - self._start, 1e-9)
        rate = self.completed / elapsed
        text = f"{self.description}: {self.completed:,.0f}"
        if self.total:
            text += f"/{self.total:,.0f} {self.unit} ({self.completed / self.total:.0%})"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.1f} {self.unit}/s, {_hms(elapsed)}"
        if self.total and rate > 0:
            text += f", ETA {_hms(max(self.total - self.completed, 0) / rate)}"
        return text


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_every() -> float:
    """Seconds between plain progress lines: ``$SBE_PROGRESS_EVERY`` or 30."""
    try:
        value = float(os.environ.get("SBE_PROGRESS_EVERY", DEFAULT_EVERY))
    except ValueError:
        return DEFAULT_EVERY
    return value if value >= 0 else DEFAULT_EVERY


@contextlib.contextmanager
def progress_default(enabled: bool | None) -> Iterator[None]:
    """Within the block, bars asked for with ``enabled=None`` behave as ``enabled`` (``--quiet``)."""
    global _default
    before, _default = _default, enabled
    try:
        yield
    finally:
        _default = before


def log_line(text: str) -> None:
    """Print a plain line to stderr, above any live progress display."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def progress_session(enabled: bool | None = None) -> Iterator[Progress | None]:
    """One live display for a sequence of stages; bars opened inside it become its tasks."""
    global _session
    if enabled is None:
        enabled = _default if _default is not None else sys.stderr.isatty()
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

    By default (``enabled=None``) it is a live display only when stderr is a terminal; elsewhere it
    prints a plain line every :func:`progress_every` seconds (:class:`PlainBar`). Inside a
    :func:`progress_session` it is a task of the shared display, removed when the block ends.
    """
    if enabled is None:
        enabled = _default
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
        yield PlainBar(description, total, unit, progress_every())
        return
    progress = _new_progress()
    with progress:
        yield Bar(progress, progress.add_task(description, total=total, unit=unit))
