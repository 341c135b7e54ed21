"""Generalised-mean (GeM) pooling of a conv feature map, fixed or with a learnable exponent.

``GeM(x) = (mean_hw clamp(x, eps) ** p) ** (1 / p)`` per channel (Radenović, Tolias, Chum,
"Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018): p = 1 is average pooling,
p -> inf max pooling; p = 3 is the usual fixed choice for retrieval. The learnable form trains
``p`` with the rest of the head (one scalar, kept >= 1).

The EfficientNet-Lite backbones already pool with fixed p = 3 when asked for ``pooling="gem"``
(:func:`sbe.models.backbones.pooling.gem`); this module is the layer a trained head would use.
"""

from __future__ import annotations

import torch
from torch import nn

from sbe.models.backbones.pooling import GEM_EPS, GEM_P


class GeM(nn.Module):
    """GeM pooling of (B, C, H, W) -> (B, C).

    Args:
        p: the exponent (initial value when learnable).
        learnable: train ``p`` (a parameter) or keep it fixed (a buffer).
        eps: lower clamp of the activations (keeps the power and root defined).
    """

    def __init__(self, p: float = GEM_P, learnable: bool = False, eps: float = GEM_EPS) -> None:
        super().__init__()
        if p < 1:
            raise ValueError(f"GeM exponent must be >= 1, got {p}")
        t = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(t)
        else:
            self.register_buffer("p", t)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"GeM expects (B, C, H, W), got {tuple(x.shape)}")
        p = self.p.clamp(min=1.0)
        return x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.3f}, learnable={isinstance(self.p, nn.Parameter)}"
