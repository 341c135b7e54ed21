from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sbe.training.losses import (
    LOSSES,
    EmbeddingLoss,
    LossSettings,
    build_loss,
    informative_triplets,
    register,
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(12, 6, generator=g), dim=1)
    labels = torch.arange(6).repeat_interleave(2)
    a = torch.arange(12)
    p = a ^ 1  # the other image of the same identity
    n = (a + 2) % 12
    return emb, labels, (a, p, n)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_triplet_loss_matches_hand_computation(distance: str) -> None:
    emb, labels, trip = _batch()
    margin = 0.3
    loss = build_loss("triplet", LossSettings(margin=margin, distance=distance))
    a, p, n = (emb[t] for t in trip)
    if distance == "cosine":
        per = torch.relu((a * n).sum(1) - (a * p).sum(1) + margin)
    else:
        per = torch.relu((a - p).norm(dim=1) - (a - n).norm(dim=1) + margin)
    expected = per[per > 0].mean()  # pml's default reducer averages the non-zero triplets
    torch.testing.assert_close(loss(emb, labels, trip), expected, atol=1e-5, rtol=1e-5)
    active = informative_triplets(emb, trip, margin, distance)
    assert torch.equal(active, per > 0)


@pytest.mark.parametrize("name", ["triplet", "multi_similarity", "supcon"])
def test_losses_prefer_separated_embeddings_and_give_gradients(name: str) -> None:
    _, labels, trip = _batch()
    loss = build_loss(name, LossSettings(margin=0.2))
    g = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(6, 6, generator=g), dim=1)
    good = F.normalize(centres[labels] + 0.05 * torch.randn(12, 6, generator=g), dim=1)
    bad = F.normalize(torch.randn(12, 6, generator=g), dim=1)
    x = bad.clone().requires_grad_(True)
    value = loss(x, labels, trip)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert float(loss(good, labels, trip)) < float(value.detach())


def test_unknown_loss_and_registration() -> None:
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_loss("nope")

    class Spread(EmbeddingLoss):
        def forward(self, embeddings, labels, triplets):  # type: ignore[override]
            return (embeddings @ embeddings.T).mean()

    register("spread_test")(lambda s: Spread())
    try:
        emb, labels, trip = _batch()
        assert float(build_loss("spread_test")(emb, labels, trip)) == pytest.approx(
            float((emb @ emb.T).mean())
        )
    finally:
        LOSSES.pop("spread_test")
