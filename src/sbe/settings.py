"""Settings objects built from the same-named fields of another object (a config section, a
mapping, a broader settings object): one implementation for every ``X.of(source)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self, TypeVar

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


class Record:
    """Mixin of a dataclass that is stored as a JSON object and built from other objects.

    ``to_dict`` / ``from_dict`` round-trip it through JSON (keys of other versions are ignored,
    missing ones keep their defaults); ``of`` builds it from a config section, a mapping or a
    broader settings object (:func:`same_named`).
    """

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{name: value}``."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The record a :meth:`to_dict` (of this or another version) wrote."""
        return same_named(cls, data)

    @classmethod
    def of(cls, source: Any, **overrides: Any) -> Self:
        """Taken from ``source`` (an instance, a mapping, or any object with these attribute
        names, e.g. a config section), then ``overrides``."""
        if isinstance(source, cls):
            return dataclasses.replace(source, **overrides) if overrides else source  # type: ignore[type-var]
        return same_named(cls, source, **overrides)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
