"""Learnable GeM trained for real: ``fit_gem_exponent`` moves p toward the pooling that
separates identities (toys where the right answer is known), deterministically under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbe.models.backbones.pooling import pool_feature_map
from sbe.training.metrics import retrieval_metrics
from sbe.verify.gem import GeM, GemFitSettings, fit_gem_exponent


def toy_maps(
    kind: str, strength: float, ids: int = 24, k: int = 4, c: int = 32, hw: int = 6, seed: int = 0
):
    """Non-negative (ids*k, c, hw, hw) feature maps and their identity labels.

    ``peaky``: the identity's channel pattern, times ``strength``, sits at 2 random positions;
    every position also carries a per-image distractor pattern (spread evenly, so average
    pooling keeps it).
    ``spread``: the identity's pattern is spread evenly over the map; 2 random positions carry a
    per-image distractor times ``strength`` (a large exponent would pick it out).
    """
    rng = np.random.default_rng(seed)
    patterns = rng.random((ids, c)).astype(np.float32)
    labels = np.repeat(np.arange(ids), k)
    x = np.zeros((ids * k, c, hw, hw), np.float32)
    for i, label in enumerate(labels):
        s = patterns[label]
        if kind == "peaky":
            x[i] = rng.random(c)[:, None, None] * rng.uniform(0.5, 1.0, (1, hw, hw))
            strong = s
        else:
            x[i] = s[:, None, None] * rng.uniform(0.8, 1.2, (1, hw, hw))
            strong = rng.random(c).astype(np.float32)
        for _ in range(2):
            h, w = rng.integers(0, hw, 2)
            x[i, :, h, w] += strength * strong
    return x, labels


def map_at_r(maps: np.ndarray, labels: np.ndarray, p: float) -> float:
    pooled = pool_feature_map(torch.from_numpy(maps), "gem", p)
    return retrieval_metrics(pooled, labels, ks=(1,))["map@r"]


def test_sparse_identity_signal_raises_p_and_retrieval(one_torch_thread: None) -> None:
    maps, labels = toy_maps("peaky", 1.5)
    p = fit_gem_exponent(maps, labels, GemFitSettings(steps=100, seed=0))
    assert 5.0 < p <= 16.0  # measured 6.66
    # the learned exponent retrieves far better than the fixed p = 3 it started from (0.99 vs 0.24)
    assert map_at_r(maps, labels, p) > map_at_r(maps, labels, 3.0) + 0.5
    # deterministic under a seed (same batches, same steps), float16 maps accepted
    assert fit_gem_exponent(maps, labels, GemFitSettings(steps=100, seed=0)) == p
    p16 = fit_gem_exponent(maps.astype(np.float16), labels, GemFitSettings(steps=100, seed=0))
    assert p16 == pytest.approx(p, abs=0.05)
    # a fixed temperature and the other losses agree on the direction
    assert fit_gem_exponent(maps, labels, GemFitSettings(steps=100, learn_temperature=False)) > 5.0
    assert fit_gem_exponent(maps, labels, GemFitSettings(steps=100, loss="multi_similarity")) > 4.0


def test_evenly_spread_identity_signal_lowers_p_to_average_pooling(one_torch_thread: None):
    maps, labels = toy_maps("spread", 4.0)
    p = fit_gem_exponent(maps, labels, GemFitSettings(steps=100, seed=0))
    assert 1.0 <= p < 1.5  # projected onto [1, p_max]: never below average pooling
    assert map_at_r(maps, labels, p) > map_at_r(maps, labels, 3.0) + 0.5  # 1.0 vs 0.11


def test_bounds_and_bad_input(one_torch_thread: None) -> None:
    maps, labels = toy_maps("peaky", 1.5, ids=6)
    assert fit_gem_exponent(maps, labels, GemFitSettings(steps=60, lr=0.5, p_max=4.0)) <= 4.0
    with pytest.raises(ValueError, match="N labels"):
        fit_gem_exponent(maps, labels[:-1])
    with pytest.raises(ValueError, match="N labels"):
        fit_gem_exponent(maps[:, :, 0], labels)
    with pytest.raises(ValueError, match="p_init"):
        fit_gem_exponent(maps, labels, GemFitSettings(p_init=0.5))
    with pytest.raises(ValueError, match="at least 2 identities"):
        fit_gem_exponent(maps[:5], np.arange(5))
    # the layer the fit trains: p = 1 is average pooling
    x = torch.from_numpy(maps[:3])
    torch.testing.assert_close(GeM(1.0)(x), x.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)


def test_gem_layer_is_stable_at_large_exponents() -> None:
    """Relative to each channel's peak: no underflow of eps ** p, no NaN gradient on a dead
    channel, and the same value as the textbook formula where that one is finite."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((2, 4, 5, 5), dtype=np.float32) * 3)
    x[:, 0] = 0.0  # a dead channel (all activations clamp to eps)
    for p in (1.0, 3.0, 12.0):
        gem = GeM(p, learnable=True)
        y = gem(x)
        naive = x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        torch.testing.assert_close(y[:, 1:], naive[:, 1:], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(y[:, 0], torch.full((2,), 1e-6), rtol=1e-4, atol=1e-9)
        y.sum().backward()
        assert gem.p.grad is not None and torch.isfinite(gem.p.grad)


def test_the_shipped_gem_is_exact_and_finite_at_large_p() -> None:
    from sbe.modelcode.layers_sbe import gem

    x = torch.rand(2, 49, 8) * 3
    x[0, :, 0] = 0  # a dead channel
    for p in (1.0, 3.0, 16.0):
        ref = x.clamp(min=1e-6).double().pow(p).mean(1).pow(1 / p)
        assert torch.allclose(gem(x, p).double(), ref, rtol=1e-5, atol=1e-9)
    p = torch.tensor(16.0, requires_grad=True)
    gem(x, p).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad)
    # the trainable layer pools exactly as the backbones do
    maps = x.transpose(1, 2).reshape(2, 8, 7, 7)
    assert torch.equal(GeM(4.0)(maps), gem(x, torch.tensor(4.0)))
