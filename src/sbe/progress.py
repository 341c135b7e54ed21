"""Progress bars with throughput and ETA (rich), shared by every long stage."""

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
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``312.4 images/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class Bar:
    """Handle returned by :func:`progress_bar`; ``advance(n)`` and ``set_description``."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._p, self._t = progress, task_id

    def advance(self, n: float = 1) -> None:
        if self._p is not None:
            self._p.advance(self._t, n)

    def set_description(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._t, description=text)

    def set_total(self, total: float | None) -> None:
        if self._p is not None:
            self._p.update(self._t, total=total)


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None, unit: str = "images", enabled: bool | None = None
) -> Iterator[Bar]:
    """A progress bar on stderr showing count, rate and ETA; silent when ``enabled`` is False.

    By default it is shown only when stderr is a terminal, so logs and tests stay clean.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield Bar(None, None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task_id = progress.add_task(description, total=total)
        yield Bar(progress, task_id)
