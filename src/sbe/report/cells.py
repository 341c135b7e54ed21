"""How a table cell reads, shared by the report's tables and the CLI's."""

from __future__ import annotations

import re
from typing import Any

_NUMERIC = re.compile(r"^[+-]?[\d,.]+%?( \([\d,./]+\))?$|^-$")


def is_numeric(cell: Any) -> bool:
    """Whether a table cell reads as a number (``1,234``, ``61.1%``, ``+0.01``, ``12 (3/4)``,
    ``-``): it is then right-aligned."""
    return bool(_NUMERIC.match(str(cell).strip()))
