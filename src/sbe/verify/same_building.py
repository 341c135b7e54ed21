"""The calibrated "same building?" answer of search hits, from an index's ``calibration.json``.

Imports no model runtime (no torch): an id search with a calibration stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from sbe.verify.calibration import Calibration


def load_calibration(path: str | os.PathLike[str]) -> Calibration | None:
    """An index's ``calibration.json`` (:class:`~sbe.verify.calibration.Calibration`), or
    ``None`` when there is none.

    Raises:
        SbeError: the file exists but is not a calibration (names the file).
    """
    p = Path(path)
    if not p.is_file():
        return None
    return Calibration.load(p)  # its errors name the file


def same_building_columns(
    calibration: Calibration, similarity: np.ndarray, matches: np.ndarray | None
) -> dict[str, np.ndarray]:
    """``same_building`` / ``same_building_probability`` of every hit.

    Args:
        calibration: the fitted calibration.
        similarity: float (Q, k) global similarities (NaN = no hit).
        matches: int (Q, k) verified matches (-1 = not checked) when re-ranking ran, else None.

    Returns:
        ``same_building`` (object (Q, k): True/False, ``None`` where it cannot be told: no hit,
        or a calibration that needs match counts for a hit that has none) and
        ``same_building_probability`` (float (Q, k), NaN there).
    """
    sims = np.asarray(similarity, dtype=np.float64)
    ok = np.isfinite(sims)
    m = None
    if calibration.uses_matches:
        if matches is None:
            ok &= False
        else:
            m = np.asarray(matches, dtype=np.float64)
            ok &= m >= 0
    prob = np.full(sims.shape, np.nan)
    if ok.any():
        prob[ok] = calibration.probability(sims[ok], None if m is None else m[ok])
    same = np.full(sims.shape, None, dtype=object)
    for idx in zip(*np.nonzero(ok), strict=True):
        same[idx] = bool(prob[idx] >= calibration.threshold)
    return {"same_building": same, "same_building_probability": prob}


class _Answer(Protocol):
    """A search answer (``sbe.index.search.SearchResult``) the decision is added to."""

    @property
    def similarity(self) -> np.ndarray: ...

    @property
    def columns(self) -> dict[str, np.ndarray]: ...

    def match_counts(self) -> np.ndarray | None: ...

    def with_columns(self, **columns: np.ndarray) -> Any: ...


A = TypeVar("A", bound=_Answer)


def with_same_building(result: A, calibration: Calibration | None) -> A:
    """``result`` with :func:`same_building_columns` added (once: a result that has them, or no
    calibration, comes back as it is). Match counts are used when re-ranking ran."""
    if calibration is None or "same_building" in result.columns:
        return result
    columns = same_building_columns(calibration, result.similarity, result.match_counts())
    return cast(A, result.with_columns(**columns))
