"""What a command shows when it finishes, as data (lines and tables); the CLI only renders it.

The stage that writes a manifest's ``extra`` keys is the one that reads them back here, so a
renamed key changes one module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sbe.storage import Manifest


@dataclass
class Table:
    """A table of text cells.

    Attributes:
        title: shown above it.
        columns: column names (numbers are right-aligned when shown).
        rows: one list of cells per row (``len(columns)`` each).
        header: show the column names (a key/value table does not).
    """

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    header: bool = True


#: a command's result: lines of text and tables, in order
Summary = list[str | Table]


def manifest_table(m: Manifest) -> Table:
    """A stage's summary: rows, skips by reason, wall time."""
    rows = [["status", "up to date (inputs and config unchanged): nothing redone"]] * m.up_to_date
    rows += [[k, f"{v:,}"] for k, v in m.rows.items()]
    if m.skipped:
        rows.append(["skipped", ", ".join(f"{k}: {v:,}" for k, v in m.skipped.items())])
    return Table(
        f"sbe {m.stage}",
        ["what", "value"],
        [*rows, ["wall time", f"{m.wall_seconds:.1f} s"]],
        False,
    )


def number(value: Any, kind: str = "") -> str:
    """A metric as text: ``%`` (a share), ``f`` (3 decimals), else grouped with one decimal."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return {"%": f"{100 * value:.1f}%", "f": f"{value:.3f}"}.get(kind, f"{value:,.1f}")
