"""Season as day of year on the circle: encoding, von Mises loss, circular errors.

Day of year is 0-based (1 January = 0) and the angle is ``θ = 2π · doy / 365.25``, so the last day of
a leap year sits just before 1 January and the error between 31 December and 1 January is one day.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

YEAR_DAYS = 365.25
LOG_2PI = math.log(2.0 * math.pi)
#: first day of each month (0-based) in a non-leap year, for day -> month
_MONTH_START = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30])


def day_of_year(dates: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """0-based day of year of an Arrow date column; NaN where the date is null.

    Returns:
        float64 (N,).
    """
    if isinstance(dates, pa.ChunkedArray):
        dates = dates.combine_chunks()
    doy = pc.subtract(pc.day_of_year(dates), 1)
    return doy.to_numpy(zero_copy_only=False).astype(np.float64)


def day_of_year_of(date: dt.date) -> int:
    """0-based day of year of one date."""
    return date.timetuple().tm_yday - 1


def doy_to_angle(doy: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Angle in radians, ``2π · doy / 365.25``."""
    return doy * (2.0 * math.pi / YEAR_DAYS)


def angle_to_doy(theta: np.ndarray) -> np.ndarray:
    """0-based day of year in [0, 365.25) from an angle in radians (any range)."""
    return np.mod(np.asarray(theta, dtype=np.float64), 2.0 * math.pi) * (YEAR_DAYS / (2 * math.pi))


MONTH_NAMES: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


def doy_to_date(doy: float) -> tuple[str, str]:
    """A 0-based day of the year as a calendar day of a common year.

    Returns:
        ``("--MM-DD", "14 July")``: the ISO 8601 month-day and an English label. Day 365 (the
        last of a leap year) wraps to 1 January.
    """
    d = dt.date(2001, 1, 1) + dt.timedelta(days=round(float(doy)) % 365)
    return f"--{d.month:02d}-{d.day:02d}", f"{d.day} {MONTH_NAMES[d.month - 1]}"


def doy_to_month(doy: np.ndarray) -> np.ndarray:
    """Month 1..12 of a 0-based day of year (non-leap calendar)."""
    d = np.clip(np.floor(np.asarray(doy, dtype=np.float64)), 0, 364).astype(np.int64)
    return np.searchsorted(_MONTH_START, d, side="right")


def circular_error_days(pred_doy: np.ndarray, true_doy: np.ndarray) -> np.ndarray:
    """Absolute difference in days on the 365.25-day circle, in [0, 182.625]."""
    d = np.mod(np.asarray(pred_doy, dtype=np.float64) - true_doy, YEAR_DAYS)
    return np.minimum(d, YEAR_DAYS - d)


def log_i0(kappa: Tensor) -> Tensor:
    """``log I₀(κ)`` for κ ≥ 0, stable for large κ: ``log(i0e(κ)) + κ``."""
    return torch.log(torch.special.i0e(kappa)) + kappa


def season_params(raw: Tensor) -> tuple[Tensor, Tensor]:
    """Season head output (B, 3) -> mean angle (B,) in radians and concentration κ (B,) > 0."""
    raw = raw.float()
    mu = torch.atan2(raw[:, 1], raw[:, 0])
    kappa = torch.nn.functional.softplus(raw[:, 2]) + 1e-3
    return mu, kappa


def von_mises_nll(raw: Tensor, theta: Tensor) -> Tensor:
    """Per-row von Mises NLL ``-κ cos(θ - μ) + log 2π + log I₀(κ)``.

    Args:
        raw: (B, 3) head output: (cos-like, sin-like, raw concentration).
        theta: (B,) true angles in radians.

    Returns:
        float32 (B,).
    """
    mu, kappa = season_params(raw)
    return -kappa * torch.cos(theta.float() - mu) + LOG_2PI + log_i0(kappa)


def cosine_loss(raw: Tensor, theta: Tensor) -> Tensor:
    """Per-row ``1 - cos(θ - μ)`` (the direction only; the concentration output is ignored)."""
    mu, _ = season_params(raw)
    return 1.0 - torch.cos(theta.float() - mu)


def predicted_doy(
    raw: Tensor, log_hemi: Tensor | None = None, south_min: float = 0.5
) -> np.ndarray:
    """0-based day of year of each row's predicted date, float64 (B,).

    Args:
        raw: (B, 3) season head output.
        log_hemi: (B, 2) log P(north), log P(south) for a hemisphere-aware head, else ``None``.
        south_min: P(south) above which the date is the local season shifted by half a year.
    """
    return angle_to_doy(calendar_angle(raw, log_hemi, south_min).detach().cpu().numpy())


def circular_mean_doy(doy: np.ndarray) -> float:
    """Circular mean of days of year (NaNs ignored); NaN if none."""
    d = np.asarray(doy, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    th = doy_to_angle(d)
    return float(angle_to_doy(np.arctan2(np.sin(th).mean(), np.cos(th).mean())))


# ---- hemisphere-aware season ----------------------------------------------------------------
#
# What a photo shows is the *local* season (leaves, snow, sun height); the calendar date is that
# season shifted by half a year in the southern hemisphere. With ``log_hemi`` = (log P(north),
# log P(south)) per row, the head's direction is read as the local season and the date density is
#   p(θ) = P(north) · VM(θ; μ, κ) + P(south) · VM(θ; μ + π, κ).


def hemisphere_von_mises_nll(raw: Tensor, theta: Tensor, log_hemi: Tensor) -> Tensor:
    """Per-row NLL of the two-hemisphere von Mises mixture.

    Args:
        raw: (B, 3) season head output. theta: (B,) true calendar angles in radians.
        log_hemi: (B, 2) log-probabilities of (north, south).

    Returns:
        float32 (B,).
    """
    mu, kappa = season_params(raw)
    theta = theta.float()
    base = LOG_2PI + log_i0(kappa)
    north = kappa * torch.cos(theta - mu) - base
    south = -kappa * torch.cos(theta - mu) - base  # cos(θ - μ - π) = -cos(θ - μ)
    both = torch.stack([north, south], dim=1) + log_hemi.float()
    return -torch.logsumexp(both, dim=1)


def hemisphere_cosine_loss(raw: Tensor, theta: Tensor, log_hemi: Tensor) -> Tensor:
    """Per-row expected ``1 - cos`` under the hemisphere probabilities: ``1 - (1 - 2 P(south)) cos(θ - μ)``."""
    mu, _ = season_params(raw)
    p_south = log_hemi[:, 1].float().exp()
    return 1.0 - (1.0 - 2.0 * p_south) * torch.cos(theta.float() - mu)


def calendar_angle(raw: Tensor, log_hemi: Tensor | None, south_min: float = 0.5) -> Tensor:
    """Predicted calendar angle (B,): the head's direction, plus π where P(south) exceeds
    ``south_min`` (0.5: where south is more likely)."""
    mu, _ = season_params(raw)
    if log_hemi is None:
        return mu
    if south_min == 0.5:
        south = (log_hemi[:, 1] > log_hemi[:, 0]).to(mu.dtype)
    else:
        south = (log_hemi[:, 1].exp() > south_min).to(mu.dtype)
    return mu + math.pi * south


def fit_south_min(
    local_doy: np.ndarray,
    p_south: np.ndarray,
    true_doy: np.ndarray,
    grid: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
) -> float:
    """The P(south) threshold of :func:`calendar_angle` with the smallest mean date error.

    Held-out geography makes the location head's hemisphere unreliable; where it is, shifting
    the date only on confident rows (or never: 1.0) errs less. Fit on the validation split.

    Args:
        local_doy: (N,) predicted local-season days. p_south: (N,) P(south).
        true_doy: (N,) true calendar days (NaN rows are ignored).

    Returns:
        The threshold (the smallest of equally good ones).
    """
    ok = np.isfinite(true_doy)
    best, best_err = 0.5, math.inf
    for t in grid:
        pred = np.where(p_south[ok] > t, local_doy[ok] + YEAR_DAYS / 2, local_doy[ok])
        err = float(circular_error_days(pred, true_doy[ok]).mean()) if ok.any() else 0.0
        if err < best_err - 1e-9:
            best, best_err = t, err
    return best


# ---- closed-form season read-out --------------------------------------------------------------


def local_angle(theta: np.ndarray, south: np.ndarray) -> np.ndarray:
    """The local season's angle: the calendar angle, plus π in the southern hemisphere."""
    return np.asarray(theta, dtype=np.float64) + math.pi * np.asarray(south, dtype=np.float64)


def fit_season_readout(
    train_x: np.ndarray,
    train_local: np.ndarray,
    val_x: np.ndarray,
    val_local: np.ndarray,
    lambdas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge regression from embeddings to the (cos, sin) of the local season, in closed form.

    A frozen backbone keeps the season cues of a photo (foliage, snow, light) nearly linearly;
    a ridge fit finds them exactly in one step, where the few hundred gradient steps of the heads
    (shaped mostly by the location loss) do not. Rows whose season cannot be seen (climates
    without seasons) pull their prediction toward the origin, so the length of the read-out is a
    confidence. The ridge weight is chosen on the validation rows (smallest mean circular error).

    Args:
        train_x, val_x: (N, D) features (rows with a date only).
        train_local, val_local: (N,) local-season angles in radians (:func:`local_angle`).
        lambdas: ridge weights tried.

    Returns:
        ``(w, b, lam)``: (D, 2) float32 weights, (2,) float32 bias and the chosen ridge weight.
    """
    x = np.asarray(train_x, dtype=np.float64)
    y = np.stack([np.cos(train_local), np.sin(train_local)], axis=1)
    if len(x) < 2:
        return np.zeros((x.shape[1], 2), np.float32), np.zeros(2, np.float32), math.nan
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc = x - mx
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    proj = evecs.T @ (xc.T @ (y - my))  # (D, 2) in the eigenbasis
    best: tuple[float, np.ndarray, np.ndarray, float] | None = None
    vx = np.asarray(val_x, dtype=np.float64)
    for lam in lambdas:
        w = evecs @ (proj / (np.maximum(evals, 0.0) + lam)[:, None])
        b = my - mx @ w
        if len(vx):
            p = vx @ w + b
            err = float(
                circular_error_days(
                    angle_to_doy(np.arctan2(p[:, 1], p[:, 0])), angle_to_doy(np.asarray(val_local))
                ).mean()
            )
        else:
            err = 0.0
        if best is None or err < best[0] - 1e-9:
            best = (err, w, b, lam)
    assert best is not None
    _, w, b, lam = best
    return w.astype(np.float32), b.astype(np.float32), float(lam)
