"""Principal component analysis in numpy: fit on a sample, apply in chunks, save as safetensors."""

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
        """Exact PCA from the covariance matrix, accumulated in float64 over row chunks.

        Args:
            x: (n, D) features (any float dtype), n >= 2.
            n_components: d <= D.

        Returns:
            The fitted :class:`Pca`.
        """
        n, dim = x.shape
        if n < 2:
            raise ValueError("PCA needs at least 2 rows")
        d = min(n_components, dim)
        mean = np.zeros(dim)
        for s in range(0, n, _CHUNK_ROWS):
            mean += x[s : s + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
        mean /= n
        cov = np.zeros((dim, dim))
        for s in range(0, n, _CHUNK_ROWS):
            c = x[s : s + _CHUNK_ROWS].astype(np.float64) - mean
            cov += c.T @ c
        cov /= n - 1
        evals, evecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(evals)[::-1][:d]
        comps = evecs[:, order].T
        flip = np.sign(comps[np.arange(d), np.argmax(np.abs(comps), axis=1)])
        comps *= np.where(flip == 0, 1.0, flip)[:, None]
        total = float(np.clip(evals, 0, None).sum())
        ratio = np.clip(evals[order], 0, None) / total if total > 0 else np.zeros(d)
        return cls(mean.astype(np.float32), comps.astype(np.float32), ratio)

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


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (``{}`` when missing or unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (OSError, ValueError, RuntimeError):
        return {}
