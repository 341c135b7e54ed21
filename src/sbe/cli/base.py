"""What every command shares: the consoles, ``--quiet``/``--verbose``, errors and result printing."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from sbe.report.cells import is_numeric

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
#: set by the command that runs: ``main`` prints a traceback only when ``verbose``
state = {"verbose": False}

INTERRUPTED = (
    "interrupted: finished stages and parts are kept; the folder that was being written is resumed "
    "or redone on the next run: to continue, run the same command again"
)


def error(message: str) -> None:
    """Print ``error: message`` on stderr, one line."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)


def say(message: Any) -> None:
    """One log line on stderr (records that are not text are shown as JSON)."""
    from sbe.progress import log_line

    log_line(message if isinstance(message, str) else json.dumps(message, default=str))


def render(summary: list[Any]) -> None:
    """Print a command's summary (:mod:`sbe.stages.summary`): lines, and tables as rich tables."""
    for item in summary:
        if isinstance(item, str):
            out.print(item, markup=False, soft_wrap=True)
            continue
        # as wide as its title (a query's path), so the title is not folded mid-name
        table = Table(
            title=item.title,
            title_justify="left",
            show_header=item.header,
            min_width=len(item.title),
        )
        for i, col in enumerate(item.columns):
            column = [row[i] for row in item.rows]
            right = i > 0 and bool(column) and all(is_numeric(c) for c in column)
            table.add_column(
                col, justify="right" if right else "left", style="bold" if i == 0 else None
            )
        for row in item.rows:
            table.add_row(*row)
        out.print(table)
