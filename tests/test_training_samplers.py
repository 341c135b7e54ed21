from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbe.training.samplers import PKSampler, UCB1Bandit


def _labels(rng: np.random.Generator, n_ids: int, max_imgs: int) -> np.ndarray:
    counts = rng.integers(1, max_imgs + 1, size=n_ids)
    return rng.permutation(np.repeat(np.arange(n_ids) * 10 + 5, counts))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 1000),
    n_ids=st.integers(4, 40),
    max_imgs=st.integers(2, 7),
    P=st.integers(2, 8),
    K=st.integers(2, 5),
)
def test_pk_batches_invariants(seed: int, n_ids: int, max_imgs: int, P: int, K: int) -> None:
    rng = np.random.default_rng(seed)
    labels = _labels(rng, n_ids, max_imgs)
    counts = {lab: int((labels == lab).sum()) for lab in np.unique(labels)}
    if sum(c >= 2 for c in counts.values()) < 2:
        return
    s = PKSampler(labels, P, K)
    s.start_epoch(rng)
    seen: list[int] = []
    for _ in range(s.steps_per_epoch):
        b = s.sample(rng)
        assert b.rows.shape == (s.P * s.K,)
        raw = labels[b.rows]
        groups = raw.reshape(s.P, s.K)
        # P distinct identities, K images each, all from the same identity, each eligible
        assert (groups == groups[:, :1]).all()
        assert len(set(groups[:, 0].tolist())) == s.P
        for g in groups:
            assert counts[g[0]] >= 2
            # images distinct up to the identity's image count
            assert len(set(b.rows[np.isin(b.rows, np.flatnonzero(labels == g[0]))])) == min(
                counts[g[0]], s.K
            )
        # triplets: positive same identity but another image, negative another identity
        assert (raw[b.anchors] == raw[b.positives]).all()
        assert (b.rows[b.anchors] != b.rows[b.positives]).all()
        assert (raw[b.anchors] != raw[b.negatives]).all()
        seen.extend(groups[:, 0].tolist())
    # identities come from shuffled passes: none repeats within one pass
    per_pass = (len(s.eligible) // s.P) * s.P
    for start in range(0, len(seen), per_pass):
        chunk = seen[start : start + per_pass]
        assert len(chunk) == len(set(chunk))
    # default epoch length: one pass over the eligible images
    n_rows = sum(c for c in counts.values() if c >= 2)
    assert s.steps_per_epoch == -(-n_rows // (s.P * s.K))
    with pytest.raises(RuntimeError):
        s.sample(rng)


def test_same_seed_same_batches() -> None:
    labels = _labels(np.random.default_rng(0), 50, 5)
    out = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        s = PKSampler(labels, 8, 3)
        s.start_epoch(rng)
        out.append(np.concatenate([s.sample(rng).rows for _ in range(3)]))
    np.testing.assert_array_equal(out[0], out[1])


def test_band_negatives_and_fallback_counted() -> None:
    # 6 identities x 2 images; every row lists all other-identity rows, band = identity parity
    labels = np.repeat(np.arange(6), 2)
    n = len(labels)
    nb = np.array([[j for j in range(n) if labels[j] != labels[i]] for i in range(n)], np.int32)
    band = (labels[nb] % 2).astype(np.int8)
    band[labels == 0] = 0  # identity 0's rows: no band-1 neighbour at all
    s = PKSampler(labels, 6, 2, neighbor_rows=nb, neighbor_band=band)
    assert s.n_bands == 2 and s.available_bands.tolist() == [True, True]
    rng = np.random.default_rng(0)
    s.start_epoch(rng)
    b = s.sample(rng, band=1)
    pk = s.P * s.K
    assert b.rows.shape == (2 * pk,) and (b.negatives == pk + b.anchors).all()
    neg_lab = labels[b.rows[b.negatives]]
    anc_lab = labels[b.rows[b.anchors]]
    assert (neg_lab != anc_lab).all()
    # band-1 negatives are odd identities; identity 0 fell back (counted), all others did not
    assert (neg_lab[b.from_band] % 2 == 1).all()
    assert (~b.from_band == (anc_lab == 0)).all()
    assert b.fallbacks == 2


def test_bandit_warmup_is_uniform_then_prefers_higher_reward() -> None:
    rng = np.random.default_rng(0)
    bandit = UCB1Bandit(3, exploration=0.5, warmup_steps=600)
    true_reward = np.array([0.2, 0.8, 0.4])
    for _ in range(600):
        arm = bandit.select(rng)
        bandit.update(arm, rng.binomial(1, true_reward[arm]))
    # warm-up: uniform regardless of rewards (chi-square-ish bound, generous)
    assert np.all(np.abs(bandit.counts - 200) < 50), bandit.counts
    before = bandit.counts.copy()
    for _ in range(600):
        arm = bandit.select(rng)
        bandit.update(arm, rng.binomial(1, true_reward[arm]))
    after = bandit.counts - before
    assert after.argmax() == 1 and after[1] > 0.6 * 600, after
    np.testing.assert_allclose(bandit.mean_rewards(), true_reward, atol=0.1)


def test_bandit_tries_unseen_arms_first_and_respects_availability() -> None:
    rng = np.random.default_rng(0)
    bandit = UCB1Bandit(4, warmup_steps=0)
    avail = np.array([True, False, True, True])
    picks = []
    for _ in range(3):
        arm = bandit.select(rng, avail)
        bandit.update(arm, 0.0)
        picks.append(arm)
    assert picks == [0, 2, 3]
    assert all(bandit.select(rng, avail) != 1 for _ in range(20))


def test_bandit_state_round_trip() -> None:
    rng = np.random.default_rng(0)
    a = UCB1Bandit(3, warmup_steps=2)
    for r in (0.1, 0.9, 0.5, 0.3):
        a.update(a.select(rng), r)
    b = UCB1Bandit(3, warmup_steps=2)
    b.load_state_dict(a.state_dict())
    assert b.counts.tolist() == a.counts.tolist()
    assert b.select(np.random.default_rng(1)) == a.select(np.random.default_rng(1))
    with pytest.raises(ValueError):
        UCB1Bandit(4).load_state_dict(a.state_dict())


def test_needs_two_eligible_identities() -> None:
    with pytest.raises(ValueError, match="at least 2 identities"):
        PKSampler(np.array([1, 1, 2, 3]), 2, 2)


class _StuckRng:
    """A generator whose batch draws always land on the same rows (to reach the stuck path)."""

    def __init__(self, rows: list[int]) -> None:
        self.rows = np.array(rows)
        self.real = np.random.default_rng(0)

    def integers(self, low: int, high: int | None = None, size: int | None = None) -> Any:
        if size is None:
            return self.real.integers(low, high)
        return np.resize(self.rows, size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_fallback_never_gives_an_anchor_its_own_identity_when_rejection_is_stuck() -> None:
    # rows 0..4 of identities 0, 1, 1, 2, 2; no anchor has a band neighbour, so all fall back
    labels = np.array([0, 1, 1, 2, 2])
    nb = np.full((5, 2), -1)
    s = PKSampler(labels, 2, 2, neighbor_rows=nb, neighbor_band=np.zeros((5, 2), np.int8))
    anchors = np.array([1, 0])  # identities 1 and 0
    # every rejection round draws rows 1, 0: each anchor's own identity, so both stay stuck
    neg, from_band = s.band_negatives(anchors, 0, _StuckRng([1, 0]))  # type: ignore[arg-type]
    assert not from_band.any()
    assert (labels[neg] != labels[anchors]).all(), (labels[neg], labels[anchors])
