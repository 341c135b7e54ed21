"""Closed-form linear projections used to initialise the projector's residual path.

- :func:`pca_projection`: the top principal directions (unsupervised).
- :func:`learned_whitening`: supervised whitening (as in Radenović et al., "Fine-tuning CNN Image
  Retrieval with No Human Annotation", 2018): whiten by the *within-identity* covariance (so
  nuisance variation that images of one building share is scaled down), then keep the top
  principal directions of the whitened data (where identities differ most). On CNN features this
  alone is a strong retrieval baseline; metric learning then refines it.

Both return ``(weight (k, D), bias (k,))`` for ``y = weight @ x + bias``, scaled so that the
outputs on the fitting data have unit mean square norm.
"""

from __future__ import annotations

import numpy as np
import torch

from sbe.training.metrics import dense_labels

#: rows used to estimate covariances (a random subset above this)
MAX_FIT_ROWS = 200_000


def _subset(
    x: torch.Tensor, labels: np.ndarray | None, seed: int
) -> tuple[torch.Tensor, np.ndarray | None]:
    n = x.shape[0]
    if n <= MAX_FIT_ROWS:
        return x.double().cpu(), labels
    take = np.sort(np.random.default_rng(seed).choice(n, MAX_FIT_ROWS, replace=False))
    idx = torch.from_numpy(take)
    return x[idx.to(x.device)].double().cpu(), None if labels is None else labels[take]


def _finish(
    w: torch.Tensor, mu: torch.Tensor, xc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    scale = ((xc @ w.T) ** 2).sum(1).mean().clamp_min(1e-24).sqrt()
    w = w / scale
    return w.float(), (-(w @ mu)).float()


def pca_projection(x: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred projection on the top ``k`` principal directions of ``x`` (N, D).

    Directions beyond the data's rank are zero rows.
    """
    xs, _ = _subset(x, None, seed)
    mu = xs.mean(0)
    xc = xs - mu
    _, _, vt = torch.linalg.svd(xc, full_matrices=False)
    w = torch.zeros(k, xs.shape[1], dtype=torch.float64)
    r = min(k, vt.shape[0])
    w[:r] = vt[:r]
    return _finish(w, mu, xc)


def learned_whitening(
    x: torch.Tensor,
    labels: np.ndarray,
    k: int,
    shrinkage: float = 0.1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised whitening fitted on labelled embeddings.

    Args:
        x: (N, D) embeddings (any float dtype).
        labels: (N,) identity per row; identities with one image do not enter the
            within-identity covariance (but do enter the mean and the principal directions).
        k: output size.
        shrinkage: added to the within-identity covariance's eigenvalues, as a fraction of their
            mean (regularises directions the training identities barely vary in).
        seed: subset choice above ``MAX_FIT_ROWS`` rows.

    Returns:
        ``(weight (k, D), bias (k,))`` float32.
    """
    xs, lab = _subset(x, np.asarray(labels), seed)
    assert lab is not None
    dense = dense_labels(lab)
    counts = np.bincount(dense)
    d = xs.shape[1]
    mu = xs.mean(0)
    dense_t = torch.from_numpy(dense)
    sums = torch.zeros(len(counts), d, dtype=torch.float64).index_add_(0, dense_t, xs)
    centres = sums / torch.from_numpy(counts).double()[:, None]
    keep = torch.from_numpy(counts[dense] >= 2)
    resid = (xs - centres[dense_t])[keep]
    if resid.shape[0] < 2:
        raise ValueError("learned whitening needs identities with at least two images")
    cw = resid.T @ resid / resid.shape[0]
    cw += shrinkage * torch.trace(cw) / d * torch.eye(d, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(cw)
    p = evecs @ torch.diag(evals.clamp_min(1e-12).rsqrt()) @ evecs.T  # Cw^(-1/2), symmetric
    xc = xs - mu
    _, _, vt = torch.linalg.svd(xc @ p, full_matrices=False)
    w = torch.zeros(k, d, dtype=torch.float64)
    r = min(k, vt.shape[0])
    w[:r] = vt[:r] @ p
    return _finish(w, mu, xc)
