"""Index-only batch sampling: P identities x K images, plus band-chosen negatives.

Everything here produces row indices into one in-memory embedding matrix; no embedding is copied
per sample and nothing runs in worker processes. Randomness comes from a ``numpy.random.Generator``
the caller owns (and checkpoints).

The band curriculum: the neighbours stage lists, for every image, visually similar images of
other identities with a difficulty band (0 = closest = hardest). Each step, a UCB1 bandit picks
one band; every anchor's negative is drawn from its neighbours in that band (or, if it has none
there, from a random other identity, counted as a fallback). The bandit's reward is the share of
those band negatives that are *informative* (violate the margin), so it seeks bands that still
teach the model something, not bands with low loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbe.training.metrics import dense_labels


class UCB1Bandit:
    """UCB1 over difficulty bands, with a uniform warm-up.

    ``select`` returns ``argmax_b mean_b + c * sqrt(ln(total) / count_b)`` over the available
    bands (a band never tried scores +inf); during the first ``warmup_steps`` pulls it picks
    uniformly at random instead. Rewards are expected in [0, 1].

    Args:
        n_arms: number of bands.
        exploration: the constant c.
        warmup_steps: pulls made uniformly at random before UCB takes over.
    """

    def __init__(self, n_arms: int, exploration: float = 2.0, warmup_steps: int = 0) -> None:
        if n_arms < 1:
            raise ValueError("n_arms must be >= 1")
        self.n_arms = n_arms
        self.exploration = float(exploration)
        self.warmup_steps = int(warmup_steps)
        self.counts = np.zeros(n_arms, dtype=np.int64)
        self.reward_sums = np.zeros(n_arms, dtype=np.float64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def mean_rewards(self) -> np.ndarray:
        """Mean reward per band (NaN for a band never pulled)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.reward_sums / np.maximum(self.counts, 1), np.nan)

    def select(self, rng: np.random.Generator, available: np.ndarray | None = None) -> int:
        """Pick a band.

        Args:
            rng: the caller's generator (used during warm-up only).
            available: optional bool mask (n_arms,) of bands that may be chosen.
        """
        avail = np.ones(self.n_arms, bool) if available is None else np.asarray(available, bool)
        arms = np.flatnonzero(avail)
        if len(arms) == 0:
            raise ValueError("no band available")
        if self.total < self.warmup_steps:
            return int(arms[rng.integers(len(arms))])
        unseen = arms[self.counts[arms] == 0]
        if len(unseen):
            return int(unseen[0])
        total = max(self.total, 1)
        means = self.reward_sums[arms] / self.counts[arms]
        bonus = self.exploration * np.sqrt(math.log(total) / self.counts[arms])
        return int(arms[int(np.argmax(means + bonus))])

    def update(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1
        self.reward_sums[arm] += float(reward)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_arms": self.n_arms,
            "exploration": self.exploration,
            "warmup_steps": self.warmup_steps,
            "counts": self.counts.tolist(),
            "reward_sums": self.reward_sums.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n_arms"]) != self.n_arms:
            raise ValueError(f"bandit state has {state['n_arms']} arms, expected {self.n_arms}")
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.reward_sums = np.asarray(state["reward_sums"], dtype=np.float64)


@dataclass
class Batch:
    """Row indices of one training step and the triplets defined on them.

    The first P*K entries of ``rows`` are the P identities' K images each (identity p occupies
    positions p*K .. p*K+K-1); with a band curriculum, P*K more rows follow: the negative of
    anchor i is at position P*K + i.

    Attributes:
        rows: int64 (B,) row indices into the embedding matrix.
        labels: int64 (B,) dense identity of each row.
        anchors, positives, negatives: int64 (T,) positions in the batch forming triplets.
        from_band: bool (T,) True where the negative came from the chosen band (not a fallback).
        band: the band chosen for this step, -1 without a curriculum.
    """

    rows: np.ndarray
    labels: np.ndarray
    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    from_band: np.ndarray
    band: int = -1

    @property
    def fallbacks(self) -> int:
        return int((~self.from_band).sum()) if self.band >= 0 else 0


@dataclass
class _EpochPlan:
    identity_batches: np.ndarray  # (steps, P) group ids
    member_order: np.ndarray  # rows of eligible groups, shuffled within each group
    offsets: np.ndarray  # (steps, P) random start inside each group
    step: int = 0


class PKSampler:
    """Draws P identities x K images per step by index; optional band-chosen negatives.

    Identities with at least two images are *eligible* as anchors; every row (singletons
    included) can serve as a negative. Identities are drawn in chunks of P from shuffled passes over
    the eligible identities (a batch never repeats an identity). An epoch is ``steps_per_epoch``
    steps; by default as many as one pass over the eligible images takes
    (``ceil(images / (P*K))``), but at least ``min_steps_per_epoch`` so that small datasets still
    get enough updates between two validations. Within an identity, its K images are K consecutive entries (with wrap-around)
    of a per-epoch shuffle of its images, so they are distinct whenever it has K or more.

    Args:
        labels: (N,) identity of each row (any integers).
        identities_per_batch: P.
        images_per_identity: K.
        steps_per_epoch: 0 = automatic (see above).
        min_steps_per_epoch: lower bound of the automatic epoch length.
        neighbor_rows, neighbor_band: (N, k) neighbour table for the band curriculum, or None.
    """

    def __init__(
        self,
        labels: np.ndarray,
        identities_per_batch: int,
        images_per_identity: int,
        steps_per_epoch: int = 0,
        min_steps_per_epoch: int = 1,
        neighbor_rows: np.ndarray | None = None,
        neighbor_band: np.ndarray | None = None,
    ) -> None:
        self.labels = dense_labels(labels)
        self.n_rows = len(self.labels)
        counts = np.bincount(self.labels)
        self.eligible = np.flatnonzero(counts >= 2)  # dense group ids
        if len(self.eligible) < 2:
            raise ValueError("training needs at least 2 identities with 2 or more images each")
        self.P = min(int(identities_per_batch), len(self.eligible))
        self.K = int(images_per_identity)
        n_eligible_rows = int(counts[self.eligible].sum())
        auto = max(int(min_steps_per_epoch), math.ceil(n_eligible_rows / (self.P * self.K)))
        self.steps_per_epoch = int(steps_per_epoch) or auto
        # group g's rows live at member_order[starts[g] : starts[g] + counts[g]]
        self.counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.neighbor_rows = neighbor_rows
        self.neighbor_band = neighbor_band
        self.n_bands = 0
        self.available_bands = np.zeros(0, bool)
        if neighbor_band is not None:
            valid = neighbor_band[neighbor_band >= 0]
            self.n_bands = int(valid.max()) + 1 if valid.size else 0
            self.available_bands = np.bincount(valid, minlength=self.n_bands) > 0
        self._plan: _EpochPlan | None = None

    @property
    def batch_rows(self) -> int:
        """Rows per batch before band negatives (P*K)."""
        return self.P * self.K

    def start_epoch(self, rng: np.random.Generator) -> None:
        """Draw this epoch's identity order and in-identity shuffles (all vectorised)."""
        n_el = len(self.eligible)
        per_perm = n_el // self.P
        n_perms = math.ceil(self.steps_per_epoch / per_perm)
        chunks = [
            rng.permutation(self.eligible)[: per_perm * self.P].reshape(per_perm, self.P)
            for _ in range(n_perms)
        ]
        batches = np.concatenate(chunks)[: self.steps_per_epoch]
        # shuffle images within each identity: sort by (label, random key)
        order = np.lexsort((rng.random(self.n_rows), self.labels))
        offsets = rng.integers(0, 1 << 62, size=batches.shape, dtype=np.int64)
        self._plan = _EpochPlan(batches, order, offsets)

    def sample(self, rng: np.random.Generator, band: int = -1) -> Batch:
        """The next batch of the current epoch.

        Args:
            rng: the caller's generator (negatives are drawn from it).
            band: difficulty band for this step's negatives; -1 = no curriculum (each anchor's
                negative is a random image of another identity in the batch).
        """
        plan = self._plan
        if plan is None or plan.step >= self.steps_per_epoch:
            raise RuntimeError("call start_epoch() first (or the epoch is over)")
        groups = plan.identity_batches[plan.step]  # (P,)
        off = plan.offsets[plan.step]
        plan.step += 1
        P, K = self.P, self.K
        cnt = self.counts[groups]  # (P,)
        j = np.arange(K)
        pos = self._starts[groups][:, None] + (off[:, None] + j[None, :]) % cnt[:, None]
        rows = plan.member_order[pos].reshape(-1)  # (P*K,)
        labels = self.labels[rows]
        anchors = np.arange(P * K)
        # positive: the next slot, cycling over the identity's distinct images (slots repeat
        # images only when the identity has fewer than K), so it is always another image
        distinct = np.minimum(K, cnt)[anchors // K]
        positives = (anchors // K) * K + (anchors % K + 1) % distinct
        if band < 0:
            other = (anchors // K + rng.integers(1, P, size=P * K)) % P
            negatives = other * K + rng.integers(0, K, size=P * K)
            return Batch(
                rows=rows,
                labels=labels,
                anchors=anchors,
                positives=positives,
                negatives=negatives,
                from_band=np.zeros(P * K, bool),
                band=-1,
            )
        neg_rows, from_band = self.band_negatives(rows, band, rng)
        all_rows = np.concatenate([rows, neg_rows])
        return Batch(
            rows=all_rows,
            labels=self.labels[all_rows],
            anchors=anchors,
            positives=positives,
            negatives=P * K + anchors,
            from_band=from_band,
            band=band,
        )

    def band_negatives(
        self, anchor_rows: np.ndarray, band: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """One negative row per anchor from its neighbours in ``band``.

        Returns:
            ``(rows, from_band)``: int64 (A,) negative rows and bool (A,) marking those drawn
            from the band; the others are random rows of another identity (fallbacks).
        """
        if self.neighbor_rows is None or self.neighbor_band is None:
            raise RuntimeError("band negatives need a neighbour table")
        nb = self.neighbor_rows[anchor_rows]  # (A, k)
        ok = (self.neighbor_band[anchor_rows] == band) & (nb >= 0)
        a_lab = self.labels[anchor_rows]
        ok &= self.labels[np.maximum(nb, 0)] != a_lab[:, None]
        keys = np.where(ok, rng.random(ok.shape), -1.0)
        pick = keys.argmax(axis=1)
        from_band = ok.any(axis=1)
        neg = nb[np.arange(len(anchor_rows)), pick].astype(np.int64)
        fb = np.flatnonzero(~from_band)
        if len(fb):
            neg[fb] = self._random_other(a_lab[fb], rng)
        return neg, from_band

    def _random_other(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random row of a different identity for each label (vectorised rejection)."""
        out = rng.integers(0, self.n_rows, size=len(labels))
        bad = self.labels[out] == labels
        for _ in range(32):
            if not bad.any():
                break
            out[bad] = rng.integers(0, self.n_rows, size=int(bad.sum()))
            bad = self.labels[out] == labels
        # pathological (one identity holds nearly every row): draw each stuck row's negative
        # among the rows of *other* identities than its own anchor's
        for i in np.flatnonzero(bad):
            other = np.flatnonzero(self.labels != labels[i])
            out[i] = other[rng.integers(len(other))]
        return out
