"""Principal component analysis in numpy: fit in one streaming pass, apply in chunks, save as safetensors."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load_file, save_file

from sbe.storage import atomic_path

_CHUNK_ROWS = 16_384


@dataclass
class Pca:
    """A linear projection onto the top principal components.

    Attributes:
        mean: float32 (D,) feature mean.
        components: float32 (d, D), orthonormal rows, most variance first; each row's
            largest-magnitude loading is positive (a deterministic sign).
        explained_variance_ratio: float64 (d,) share of the total variance per component.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int) -> Pca:
        """Exact PCA of an in-memory matrix (see :class:`CovarianceAccumulator` for streams).

        Args:
            x: (n, D) features (any float dtype), n >= 2.
            n_components: d <= D.
        """
        acc = CovarianceAccumulator(x.shape[1])
        for s in range(0, len(x), _CHUNK_ROWS):
            acc.update(x[s : s + _CHUNK_ROWS])
        return acc.pca(n_components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project (n, D) features to float32 (n, d), chunk by chunk."""
        out = np.empty((len(x), self.out_dim), dtype=np.float32)
        ct = self.components.T
        for s in range(0, len(x), _CHUNK_ROWS):
            out[s : s + _CHUNK_ROWS] = (x[s : s + _CHUNK_ROWS].astype(np.float32) - self.mean) @ ct
        return out

    def save(self, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
        """Write atomically as safetensors (``metadata``: string key/values for provenance)."""
        tensors = {
            "mean": self.mean,
            "components": self.components,
            "explained_variance_ratio": self.explained_variance_ratio.astype(np.float64),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata or {})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pca:
        t = load_file(str(path))
        return cls(t["mean"], t["components"], t["explained_variance_ratio"])


class CovarianceAccumulator:
    """Mean and covariance of rows seen batch by batch, in float64, in O(D^2) memory.

    Sums are taken around a shift (the first batch's mean), which keeps the one-pass formula
    ``cov = (S2 - S1 S1^T / n) / (n - 1)`` accurate.

    Args:
        dim: feature dimension D.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self._shift: np.ndarray | None = None
        self._s1 = np.zeros(dim)
        self._s2 = np.zeros((dim, dim))

    def update(self, x: np.ndarray) -> None:
        """Add (m, D) rows (any numeric dtype)."""
        if len(x) == 0:
            return
        c = np.asarray(x, dtype=np.float64)
        if self._shift is None:
            self._shift = c.mean(axis=0)
        c = c - self._shift
        self._s1 += c.sum(axis=0)
        self._s2 += c.T @ c
        self.n += len(c)

    def pca(self, n_components: int) -> Pca:
        """The top ``n_components`` principal components of everything added so far."""
        if self.n < 2 or self._shift is None:
            raise ValueError("PCA needs at least 2 rows")
        d = min(n_components, self.dim)
        mean = self._shift + self._s1 / self.n
        cov = (self._s2 - np.outer(self._s1, self._s1) / self.n) / (self.n - 1)
        evals, evecs = np.linalg.eigh((cov + cov.T) / 2)  # ascending
        order = np.argsort(evals)[::-1][:d]
        comps = evecs[:, order].T
        flip = np.sign(comps[np.arange(d), np.argmax(np.abs(comps), axis=1)])
        comps *= np.where(flip == 0, 1.0, flip)[:, None]
        total = float(np.clip(evals, 0, None).sum())
        ratio = np.clip(evals[order], 0, None) / total if total > 0 else np.zeros(d)
        return Pca(mean.astype(np.float32), comps.astype(np.float32), ratio)


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (``{}`` when missing or unreadable)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (OSError, ValueError, RuntimeError, SafetensorError):
        return {}
