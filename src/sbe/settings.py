"""Settings objects built from the same-named fields of another object (a config section, a
mapping, a broader settings object): one implementation for every ``X.of(source)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = object()


def same_named(cls: type[T], source: Any, /, *, strict: bool = False, **overrides: Any) -> T:
    """``cls(**values)`` with each init field of the dataclass ``cls`` read from ``source``.

    Args:
        cls: a dataclass.
        source: a mapping (keys) or any object (attributes).
        strict: a field ``source`` lacks is an ``AttributeError``/``KeyError`` (so a renamed
            field cannot quietly fall back to its default); else it keeps its default.
        overrides: values given directly (they win over ``source``).

    Returns:
        The new ``cls`` instance; names ``source`` has beyond ``cls``'s fields are ignored.
    """
    if isinstance(source, Mapping):
        get = source.__getitem__ if strict else lambda k: source.get(k, _MISSING)
    else:
        get = (lambda k: getattr(source, k)) if strict else lambda k: getattr(source, k, _MISSING)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    values = {f.name: get(f.name) for f in fields if f.init and f.name not in overrides}
    return cls(**{k: v for k, v in values.items() if v is not _MISSING}, **overrides)
