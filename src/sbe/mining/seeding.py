"""k-means++ seeding on unit vectors: the one implementation (index clustering, geo centres).

Each next centre is drawn with probability proportional to its squared distance to the nearest
centre so far (Arthur & Vassilvitskii 2007), which spreads the start over all groups; random
starts often put two centres in one group and never recover.
"""

from __future__ import annotations

import numpy as np


def kmeans_plus_plus_indices(x: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Rows of ``x`` chosen as k-means++ starting centres.

    Args:
        x: (N, D) unit vectors, float32 or float64 (distances are computed in this dtype and
            accumulated in float64: on unit vectors ``|x - c|^2 = 2 - 2 cos``).
        k: centres to choose (<= N; rows may repeat only when every remaining distance is 0).
        rng: the random generator (its draws, in order: one ``integers`` for the first centre,
            then one ``choice`` per further centre, or ``integers`` when all distances are 0).

    Returns:
        ``k`` row indices, in the order chosen.
    """
    n = len(x)

    def dist2(i: int) -> np.ndarray:
        return np.maximum(2.0 - 2.0 * (x @ x[i]), 0.0).astype(np.float64)

    chosen = [int(rng.integers(n))]
    d2 = dist2(chosen[0])
    for _ in range(1, k):
        total = d2.sum()
        nxt = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        d2 = np.minimum(d2, dist2(nxt))
    return chosen
