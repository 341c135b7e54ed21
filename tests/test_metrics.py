from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbe.training.metrics import (
    eligible_queries,
    retrieval_metrics,
    sample_queries,
)


def brute_force(x: np.ndarray, labels: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Reference: one query at a time, plain Python over a full sort."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    rec = {k: [] for k in ks}
    ap_r, ap_full = [], []
    for q in range(len(x)):
        others = [i for i in range(len(x)) if i != q]
        r = sum(labels[i] == labels[q] for i in others)
        if r == 0:
            continue
        sims = [(float(x[q] @ x[i]), i) for i in others]
        ranked = [i for _, i in sorted(sims, key=lambda t: -t[0])]
        rel = [labels[i] == labels[q] for i in ranked]
        for k in ks:
            rec[k].append(any(rel[:k]))
        hits, s_r, s_full = 0, 0.0, 0.0
        for pos, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                s_full += hits / pos
                if pos <= r:
                    s_r += hits / pos
        ap_r.append(s_r / r)
        ap_full.append(s_full / r)
    out = {f"recall@{k}": float(np.mean(v)) for k, v in rec.items()}
    out["map@r"] = float(np.mean(ap_r))
    out["map"] = float(np.mean(ap_full))
    return out


def test_hand_made_case() -> None:
    # 1-d directions on the unit circle: angle decides the ranking.
    ang = np.array([0.0, 0.1, 1.0, 1.1, 3.0])
    x = np.stack([np.cos(ang), np.sin(ang)], 1)
    labels = np.array([7, 7, 8, 9, 8])
    m = retrieval_metrics(x, labels, ks=[1, 2], full_map=True)
    # queries: rows 0,1 (label 7) and 2,4 (label 8); row 3 is a singleton
    assert m["queries"] == 4
    # row 0 -> 1 (hit); row 1 -> 0 (hit); row 2 -> 3 (miss), 1, 0, 4; row 4 -> 3 (miss), 2 (hit)
    assert m["recall@1"] == pytest.approx(2 / 4)
    assert m["recall@2"] == pytest.approx(3 / 4)
    # AP@R (R=1 for all four): 1, 1, 0, 0
    assert m["map@r"] == pytest.approx(0.5)
    # full AP: row 2 finds its relevant (row 4) last at rank 4 -> 1/4; row 4 at rank 2 -> 1/2
    assert m["map"] == pytest.approx((1 + 1 + 0.25 + 0.5) / 4)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    n_labels=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    block=st.sampled_from([1, 7, 1 << 20]),
)
def test_matches_brute_force(n: int, n_labels: int, seed: int, block: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    labels = rng.integers(0, n_labels, size=n)
    ks = [1, 3, 100]
    got = retrieval_metrics(x, labels, ks=ks, full_map=True, block_elements=block * n)
    ref_rows = eligible_queries(labels)
    if len(ref_rows) == 0:
        assert got["queries"] == 0
        return
    ref = brute_force(x, labels, ks)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, abs=1e-5), key
    assert got["queries"] == len(ref_rows)


def test_query_subset_and_self_exclusion() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4))
    labels = np.repeat(np.arange(10), 3)
    full = retrieval_metrics(x, labels, ks=[1])
    # identical vectors per label: every query's nearest non-self item is relevant
    same = retrieval_metrics(np.repeat(rng.standard_normal((10, 4)), 3, axis=0), labels, ks=[1])
    assert same["recall@1"] == 1.0 and same["map@r"] == pytest.approx(1.0)
    sub = retrieval_metrics(x, labels, queries=np.array([0, 5, 9]), ks=[1])
    assert sub["queries"] == 3
    assert 0 <= full["map@r"] <= 1


def test_sample_queries_fixed_and_eligible() -> None:
    labels = np.array([1, 1, 2, 3, 3, 3, 4, 5, 5])
    rows = eligible_queries(labels)
    assert rows.tolist() == [0, 1, 3, 4, 5, 7, 8]
    a = sample_queries(labels, 4, seed=3)
    b = sample_queries(labels, 4, seed=3)
    assert a.tolist() == b.tolist() and len(a) == 4
    assert set(a.tolist()) <= set(rows.tolist())
    assert sample_queries(labels, 100, seed=0).tolist() == rows.tolist()
