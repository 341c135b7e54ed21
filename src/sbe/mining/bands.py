"""Difficulty bands: how close a neighbour is, relative to the anchor's own neighbourhood.

A raw distance means different things in dense and sparse parts of the space, so each neighbour's
distance is divided by the anchor's *local scale*, the distance to its ``k0``-th neighbour. The
ratios of a seeded sample of train anchors give the band edges (percentiles), and every split is
banded with the train edges: band 0 = closest = hardest negatives, the last band = farthest.

All functions work on padded (n, k) arrays (NaN = no neighbour); nothing loops per anchor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD_BAND = -1


def local_scale(distance: np.ndarray, k0: int) -> np.ndarray:
    """Per-anchor scale: the distance to its ``k0``-th neighbour (1-based).

    With fewer than ``k0`` neighbours the last one is used. A scale that is not positive (the
    first ``k0`` are exact duplicates of the anchor) falls back to the first positive distance,
    and to 1.0 when there is none, so ratios are always finite.

    Args:
        distance: float (n, k), ascending along each row, NaN padding at the end.
        k0: rank of the neighbour that sets the scale, 1 <= k0 <= k.

    Returns:
        float32 (n,), positive.
    """
    d = np.asarray(distance, dtype=np.float32)
    n, _k = d.shape
    valid = np.isfinite(d)
    n_valid = valid.sum(axis=1)
    pos = np.clip(np.minimum(k0, n_valid) - 1, 0, None)
    scale = d[np.arange(n), pos]
    scale = np.where(n_valid > 0, scale, np.nan)
    positive = valid & (d > 0)
    first_pos = d[np.arange(n), np.argmax(positive, axis=1)]
    first_pos = np.where(positive.any(axis=1), first_pos, 1.0)
    bad = ~(scale > 0)  # NaN or <= 0
    return np.where(bad, first_pos, scale).astype(np.float32)


def distance_ratios(distance: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``distance / scale`` per neighbour: float32 (n, k), NaN where there is no neighbour."""
    return (np.asarray(distance, dtype=np.float32) / scale[:, None]).astype(np.float32)


def calibrate_band_edges(ratios: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Band edges: the given percentiles of the pooled (finite) ratios.

    Args:
        ratios: any shape; NaN entries (padding) are ignored.
        percentiles: increasing, in (0, 100); ``len(percentiles) + 1`` bands result.

    Returns:
        float64 (len(percentiles),), non-decreasing.
    """
    r = np.asarray(ratios, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if len(r) == 0:
        raise ValueError("no neighbour ratios to calibrate band edges on")
    return np.percentile(r, list(percentiles))


def assign_bands(ratios: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band per neighbour: number of edges <= ratio, so 0 .. len(edges); -1 where NaN.

    Returns:
        int8, same shape as ``ratios``.
    """
    r = np.asarray(ratios)
    band = np.searchsorted(np.asarray(edges, dtype=np.float64), r, side="right").astype(np.int8)
    band[~np.isfinite(r)] = PAD_BAND
    return band
