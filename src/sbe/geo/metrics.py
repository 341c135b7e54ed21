"""Geo evaluation: great-circle accuracy at thresholds, climate accuracy / macro-F1, season error,
and the two baselines every report carries (training-set mode, nearest-neighbour retrieval)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbe.geo.koppen import coarse_of
from sbe.geo.mvmf import nearest_by_dot
from sbe.geo.season import circular_error_days, circular_mean_doy
from sbe.sphere import haversine_km, latlon_to_unit

THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)


def location_metrics(
    pred_lat: np.ndarray,
    pred_lon: np.ndarray,
    true_lat: np.ndarray,
    true_lon: np.ndarray,
    thresholds_km: tuple[float, ...] = THRESHOLDS_KM,
) -> dict[str, float]:
    """Share of rows within each threshold (``acc_<t>km``, 0-1), ``median_km``, ``mean_km``.

    A prediction counts when its great-circle error is ``<=`` the threshold.
    """
    err = haversine_km(
        np.asarray(pred_lat, np.float64),
        np.asarray(pred_lon, np.float64),
        np.asarray(true_lat, np.float64),
        np.asarray(true_lon, np.float64),
    )
    out: dict[str, float] = {"n": int(err.size)}
    for t in thresholds_km:
        out[f"acc_{t:g}km"] = float(np.mean(err <= t)) if err.size else math.nan
    out["median_km"] = float(np.median(err)) if err.size else math.nan
    out["mean_km"] = float(np.mean(err)) if err.size else math.nan
    return out


def macro_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in ``true`` or ``pred``."""
    pred = np.asarray(pred)
    true = np.asarray(true)
    classes = np.union1d(pred, true)
    if classes.size == 0:
        return math.nan
    f1 = []
    for c in classes:
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        denom = 2 * tp + fp + fn
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def climate_metrics(
    pred_fine: np.ndarray, true_fine: np.ndarray, pred_coarse: np.ndarray | None = None
) -> dict[str, float]:
    """Fine and coarse top-1 accuracy and macro-F1.

    Args:
        pred_fine, true_fine: (N,) fine class indices.
        pred_coarse: (N,) coarse prediction; default the group of ``pred_fine``.
    """
    pred_fine = np.asarray(pred_fine)
    true_fine = np.asarray(true_fine)
    pc = coarse_of(pred_fine) if pred_coarse is None else np.asarray(pred_coarse)
    tc = coarse_of(true_fine)
    n = int(true_fine.size)
    return {
        "n": n,
        "fine_acc": float(np.mean(pred_fine == true_fine)) if n else math.nan,
        "fine_macro_f1": macro_f1(pred_fine, true_fine),
        "coarse_acc": float(np.mean(pc == tc)) if n else math.nan,
        "coarse_macro_f1": macro_f1(pc, tc),
    }


def season_metrics(
    pred_doy: np.ndarray, true_doy: np.ndarray, true_lat: np.ndarray
) -> dict[str, float]:
    """Circular day-of-year error on rows with a date (true_doy finite), overall and per hemisphere.

    Returns:
        ``n``, ``mean_error_days``, ``median_error_days``, ``within_30d`` (0-1), and
        ``north_mean_error_days`` / ``south_mean_error_days`` with their ``n``.
    """
    true_doy = np.asarray(true_doy, np.float64)
    has = np.isfinite(true_doy)
    err = circular_error_days(np.asarray(pred_doy, np.float64)[has], true_doy[has])
    lat = np.asarray(true_lat, np.float64)[has]
    out: dict[str, float] = {
        "n": int(err.size),
        "mean_error_days": float(err.mean()) if err.size else math.nan,
        "median_error_days": float(np.median(err)) if err.size else math.nan,
        "within_30d": float(np.mean(err <= 30.0)) if err.size else math.nan,
    }
    for name, mask in (("north", lat >= 0), ("south", lat < 0)):
        out[f"{name}_n"] = int(mask.sum())
        out[f"{name}_mean_error_days"] = float(err[mask].mean()) if mask.any() else math.nan
    return out


@dataclass
class PointPredictions:
    """One predictor's point outputs for N rows (location, climate, season).

    Attributes:
        lat, lon: (N,) degrees. fine: (N,) climate class. coarse: (N,) group or None (from fine).
        doy: (N,) 0-based day of year.
    """

    lat: np.ndarray
    lon: np.ndarray
    fine: np.ndarray
    doy: np.ndarray
    coarse: np.ndarray | None = None


def score(
    pred: PointPredictions,
    true_lat: np.ndarray,
    true_lon: np.ndarray,
    true_fine: np.ndarray,
    true_doy: np.ndarray,
    seasonal: np.ndarray | None = None,
) -> dict[str, Any]:
    """All metrics of one predictor: ``{"location": ..., "climate": ..., "season": ...}``.

    With ``seasonal`` (a (N,) mask of rows whose true climate has seasons) the season metrics
    are also given for those rows (``season_seasonal``) and the others (``season_flat``).
    """
    out = {
        "location": location_metrics(pred.lat, pred.lon, true_lat, true_lon),
        "climate": climate_metrics(pred.fine, true_fine, pred.coarse),
        "season": season_metrics(pred.doy, true_doy, true_lat),
    }
    if seasonal is not None:
        doy, t, lat = (np.asarray(a, np.float64) for a in (pred.doy, true_doy, true_lat))
        for name, m in (("season_seasonal", seasonal), ("season_flat", ~seasonal)):
            out[name] = season_metrics(doy[m], t[m], lat[m])
    return out


def spatial_mode(lat: np.ndarray, lon: np.ndarray, radius_km: float = 25.0) -> tuple[float, float]:
    """The training location with the most training rows within ``radius_km`` ("most common
    location"), checked over up to 2000 evenly spaced candidate rows."""
    xyz = latlon_to_unit(lat, lon)
    n = len(xyz)
    cand = np.unique(np.linspace(0, n - 1, min(n, 2000)).astype(np.int64))
    cos_r = math.cos(radius_km / 6371.0)
    counts = np.zeros(len(cand), dtype=np.int64)
    for s in range(0, n, 8192):  # 8192 x 2000 float64 blocks: ~130 MB
        counts += ((xyz[s : s + 8192] @ xyz[cand].T) >= cos_r).sum(axis=0)
    best = cand[int(np.argmax(counts))]
    return float(lat[best]), float(lon[best])


def most_common_baseline(
    train_lat: np.ndarray,
    train_lon: np.ndarray,
    train_fine: np.ndarray,
    train_doy: np.ndarray,
    n: int,
) -> PointPredictions:
    """Predict the same thing for every row: the training set's densest location (25 km), most
    common climate class and circular-mean day of year."""
    lat, lon = spatial_mode(np.asarray(train_lat), np.asarray(train_lon))
    fine = int(np.bincount(np.asarray(train_fine, dtype=np.int64)).argmax())
    doy = circular_mean_doy(train_doy)
    return PointPredictions(
        lat=np.full(n, lat), lon=np.full(n, lon), fine=np.full(n, fine), doy=np.full(n, doy)
    )


def nearest_rows(query: np.ndarray, gallery: np.ndarray, max_block: int = 32_000_000) -> np.ndarray:
    """Index of the most similar gallery row (cosine) for each query row (exact).

    Args:
        query: (Q, D) float. gallery: (G, D) float (both normalised inside).
        max_block: similarities computed at once (query rows x gallery rows), bounds memory.

    Returns:
        int64 (Q,).
    """
    g = _normalise(np.asarray(gallery, np.float32))
    q = _normalise(np.asarray(query, np.float32))
    return nearest_by_dot(q, g, chunk=max(1, min(4096, max_block // max(1, len(g)))))


def nearest_neighbour_baseline(
    query_emb: np.ndarray,
    train_emb: np.ndarray,
    train_lat: np.ndarray,
    train_lon: np.ndarray,
    train_fine: np.ndarray,
    train_doy: np.ndarray,
) -> PointPredictions:
    """Copy location, climate and season of the closest training embedding (season: the closest
    training embedding that has a date)."""
    nn = nearest_rows(query_emb, train_emb)
    train_doy = np.asarray(train_doy, np.float64)
    dated = np.flatnonzero(np.isfinite(train_doy))
    if dated.size:
        doy = train_doy[dated[nearest_rows(query_emb, np.asarray(train_emb)[dated])]]
    else:
        doy = np.full(len(query_emb), np.nan)
    return PointPredictions(
        lat=np.asarray(train_lat)[nn],
        lon=np.asarray(train_lon)[nn],
        fine=np.asarray(train_fine)[nn],
        doy=doy,
    )


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
