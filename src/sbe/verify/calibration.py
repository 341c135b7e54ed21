"""A calibrated "same building?" answer for a pair of photos.

From labelled pairs (global cosine similarity, optionally the verified local-match count of the
pair, and whether the two photos show the same building) fit a probability
``P(same | similarity[, matches])`` and a decision threshold that reaches a stated precision
(default 0.95) on the fitting pairs. The fit is a few numbers, saved and loaded as JSON.

Methods:
    ``logistic``: logistic regression on ``similarity`` (and ``log1p(matches)``); smooth, two or
        three parameters, extrapolates monotonically.
    ``isotonic``: the logistic model's linear score mapped through an isotonic (monotone
        step) fit of the labels: no shape assumption, exact on the fitting data, flat beyond it.

Fit on one split (val) and check on another (test): ``benchmarks/calibration.py``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sbe.errors import SbeError
from sbe.storage import write_json_atomic

Method = Literal["logistic", "isotonic"]
FORMAT = "sbe-same-building-calibration/1"


def _features(similarity: np.ndarray, matches: np.ndarray | None) -> np.ndarray:
    s = np.asarray(similarity, dtype=np.float64).reshape(-1, 1)
    if matches is None:
        return s
    m = np.log1p(np.asarray(matches, dtype=np.float64).reshape(-1, 1).clip(min=0))
    return np.hstack([s, m])


@dataclass
class Calibration:
    """A fitted pair -> probability map and its threshold.

    Attributes:
        method: ``logistic`` or ``isotonic``.
        features: ``["similarity"]`` or ``["similarity", "log1p_matches"]``.
        coef, intercept: the logistic model (linear score ``coef . x + intercept``).
        iso_x, iso_y: the isotonic step function of the linear score (``isotonic`` only).
        threshold: probability at or above which a pair is called "same building".
        target_precision: the precision the threshold was chosen for.
        fit: counts and the precision/recall reached on the fitting pairs.
    """

    method: Method
    features: list[str]
    coef: list[float]
    intercept: float
    threshold: float
    target_precision: float
    iso_x: list[float] = field(default_factory=list)
    iso_y: list[float] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_matches(self) -> bool:
        return len(self.features) == 2

    def _check(self, matches: np.ndarray | None) -> None:
        if self.uses_matches and matches is None:
            raise SbeError("this calibration was fitted with match counts: pass matches (re-rank)")
        if not self.uses_matches and matches is not None:
            raise SbeError("this calibration was fitted without match counts: pass matches=None")

    def probability(
        self, similarity: np.ndarray | float, matches: np.ndarray | float | None = None
    ) -> np.ndarray:
        """P(same building) of pairs.

        Args:
            similarity: float (n,) global cosine similarities.
            matches: int (n,) verified match counts, if the calibration uses them.

        Returns:
            float64 (n,) in [0, 1].
        """
        self._check(None if matches is None else np.asarray(matches))
        x = _features(
            np.atleast_1d(similarity), None if matches is None else np.atleast_1d(matches)
        )
        z = x @ np.asarray(self.coef) + self.intercept
        if self.method == "isotonic":
            return np.interp(z, self.iso_x, self.iso_y)
        return 1.0 / (1.0 + np.exp(-z))

    def same(
        self, similarity: np.ndarray | float, matches: np.ndarray | float | None = None
    ) -> np.ndarray:
        """bool (n,): the pairs called "same building" (probability >= threshold)."""
        return self.probability(similarity, matches) >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: a threshold no pair reaches (``inf``) and an undefined precision (NaN)
        are ``None``, so the dict serialises anywhere (the service's strict JSON included)."""
        return finite_json({"format": FORMAT, **asdict(self)})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the calibration as JSON (atomic)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a calibration written by :meth:`save`.

        Raises:
            SbeError: missing file or another format.
        """
        p = Path(path)
        if not p.is_file():
            raise SbeError(f"{p} not found: fit a calibration first (fit_calibration)")
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise SbeError(f"{p} is not readable JSON: {e}") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise SbeError(f"{p} is not a same-building calibration ({FORMAT})")
        if data.get("threshold") is None:  # no threshold reached the target: nothing is called
            data["threshold"] = float("inf")
        try:
            return cls(**data)
        except TypeError as e:
            raise SbeError(f"{p}: malformed calibration ({e})") from None


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float (inf, NaN), at any depth, replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def threshold_for_precision(prob: np.ndarray, same: np.ndarray, target: float) -> float:
    """The lowest probability threshold whose called pairs reach ``target`` precision.

    Pairs are called in decreasing probability; the threshold is the probability of the longest
    prefix (cut between distinct values) whose precision is >= ``target``. If none is, the
    threshold is above every probability (nothing is called).

    Args:
        prob: float (n,) probabilities.
        same: bool (n,) labels.
        target: precision in (0, 1].

    Returns:
        The threshold (``inf`` when no prefix reaches the target).
    """
    order = np.argsort(-prob, kind="stable")
    p, y = prob[order], same[order].astype(np.float64)
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    # Only cut where the next probability differs: ties are called together.
    cut = np.r_[p[1:] < p[:-1], True]
    ok = np.nonzero(cut & (precision >= target))[0]
    return float(p[ok[-1]]) if len(ok) else float("inf")


def precision_recall(called: np.ndarray, same: np.ndarray) -> dict[str, Any]:
    """Precision, recall and counts of a set of calls against labels.

    Returns:
        ``precision``, ``recall``, ``called``, ``positives``, ``pairs``, and
        ``precision_ci95``: the 95 % Wilson interval of the precision (``[low, high]``; ``None``
        when nothing is called), which says how far a precision measured on few calls can be
        trusted.
    """
    from scipy.stats import binomtest

    tp = int((called & same).sum())
    n_called = int(called.sum())
    positives = int(same.sum())
    ci = None
    if n_called:
        low, high = binomtest(tp, n_called).proportion_ci(0.95, method="wilson")
        ci = [round(float(low), 4), round(float(high), 4)]
    return {
        "precision": tp / n_called if n_called else float("nan"),
        "recall": tp / positives if positives else float("nan"),
        "called": n_called,
        "positives": positives,
        "pairs": len(same),
        "precision_ci95": ci,
    }


def fit_calibration(
    similarity: np.ndarray,
    same: np.ndarray,
    matches: np.ndarray | None = None,
    *,
    method: Method = "logistic",
    target_precision: float = 0.95,
) -> Calibration:
    """Fit P(same building | pair) and the threshold reaching ``target_precision``.

    Args:
        similarity: float (n,) global cosine similarities of the pairs.
        same: bool (n,) whether each pair shows one building.
        matches: int (n,) verified local matches of the pairs (with re-ranking), or None.
        method: ``logistic`` or ``isotonic`` (module docstring).
        target_precision: precision the threshold is chosen for, on these pairs.

    Returns:
        The :class:`Calibration` (its ``fit`` holds precision/recall on these pairs).

    Raises:
        SbeError: labels of only one kind, or mismatched lengths.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(same, dtype=bool)
    x = _features(similarity, matches)
    if len(x) != len(y) or len(y) == 0:
        raise SbeError(f"calibration needs equal, non-empty pair lists (got {len(x)}, {len(y)})")
    if y.all() or not y.any():
        raise SbeError("calibration needs both same-building and different-building pairs")
    if not 0 < target_precision <= 1:
        raise SbeError(f"target precision must be in (0, 1], got {target_precision}")
    # Large C: hardly any regularisation; the model has 2-3 parameters and many pairs.
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    coef = [float(c) for c in lr.coef_[0]]
    intercept = float(lr.intercept_[0])
    names = ["similarity"] + (["log1p_matches"] if matches is not None else [])
    cal = Calibration(
        method, names, coef, intercept, threshold=float("inf"), target_precision=target_precision
    )
    if method == "isotonic":
        z = x @ np.asarray(coef) + intercept
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y)
        cal.iso_x = [float(v) for v in iso.X_thresholds_]
        cal.iso_y = [float(v) for v in iso.y_thresholds_]
    elif method != "logistic":
        raise SbeError(f"unknown calibration method {method!r}; choose logistic or isotonic")
    prob = cal.probability(similarity, matches)
    cal.threshold = threshold_for_precision(prob, y, target_precision)
    cal.fit = precision_recall(prob >= cal.threshold, y)
    return cal
