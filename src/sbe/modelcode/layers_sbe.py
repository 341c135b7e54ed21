"""The projection head and the pooling of a published sbe model: torch only.

This file is copied verbatim into every published model folder (``modeling_sbe.py`` imports it)
and is also the one implementation the ``sbe`` library uses (``sbe.models.projector`` and
``sbe.models.backbones.pooling`` re-export it), so a published model computes what training and
the backbone stage computed, operation for operation. It imports only torch, so library code
that needs the head or the pooling does not pay for importing transformers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


# --------------------------------------------------------------------------- projection head


class SbeProjector(nn.Module):
    """The projection head, built from the run's saved projector config.

    ``num_hidden_layers`` blocks of Linear -> [LayerNorm] -> activation -> [Dropout], a Linear to
    ``output_dim``, plus an optional residual Linear from the input; the output is L2-normalised.
    Parameter names match the training code's projector, so its weights load strictly.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = int(cfg["input_dim"])
        for _ in range(int(cfg["num_hidden_layers"])):
            layers.append(nn.Linear(width, int(cfg["hidden_dim"])))
            if cfg["layer_norm"]:
                layers.append(nn.LayerNorm(int(cfg["hidden_dim"])))
            layers.append(ACTIVATIONS[cfg["activation"]]())
            if float(cfg["dropout"]) > 0:
                layers.append(nn.Dropout(float(cfg["dropout"])))
            width = int(cfg["hidden_dim"])
        layers.append(nn.Linear(width, int(cfg["output_dim"])))
        self.mlp = nn.Sequential(*layers)
        self.residual = (
            nn.Linear(int(cfg["input_dim"]), int(cfg["output_dim"])) if cfg["residual"] else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) float -> (B, output_dim) float32 with unit rows."""
        y = self.mlp(x)
        if self.residual is not None:
            y = y + self.residual(x)
        return F.normalize(y.float(), dim=-1)


# --------------------------------------------------------------------------- pooling
#
# Modes: ``cls`` (the first token, the class token of ViT-style models); ``pooler`` (the model's
# own ``pooler_output``: DINOv2/v3 the layer-normed CLS token, CLIP the post-layernorm CLS token,
# SigLIP the attention-pooling head); ``mean`` (the mean of the patch tokens, CLS and register
# tokens excluded, or of a conv map); ``gem``: generalised mean (Radenovic et al. 2018) of the
# patch tokens or conv map, ``(mean(clamp(x, eps) ** p)) ** (1 / p)`` with p = 3. GeM assumes
# non-negative features, as conv maps after an activation are; on transformer tokens, which are
# signed, the negative part is clamped away, so prefer ``mean`` or ``cls`` there.

POOLING_MODES: tuple[str, ...] = ("auto", "cls", "pooler", "mean", "gem")
GEM_P = 3.0
GEM_EPS = 1e-6


def gem(
    features: torch.Tensor, p: float | torch.Tensor = GEM_P, eps: float = GEM_EPS
) -> torch.Tensor:
    """Generalised-mean pooling over the token axis.

    Args:
        features: float (B, N, C).
        p: exponent (1 = mean, large = max); a tensor when it is learned.
        eps: lower clamp, so the power and root stay defined.

    Returns:
        float (B, C).
    """
    x = features.clamp(min=eps)
    # mean(x ** p) ** (1 / p), taken relative to each channel's peak: eps ** p underflows float32
    # past p ~ 6.5, and an all-eps channel would then give 0 ** (1 / p) (a NaN gradient)
    peak = x.amax(dim=1, keepdim=True)
    return (peak * (x / peak).pow(p).mean(dim=1, keepdim=True).pow(1.0 / p)).squeeze(1)


def pool(
    hidden: torch.Tensor,
    mode: str,
    *,
    pooler_output: torch.Tensor | None = None,
    num_prefix_tokens: int = 1,
    gem_p: float = GEM_P,
) -> torch.Tensor:
    """Pool a backbone output to one float32 vector per image.

    Args:
        hidden: (B, T, C) tokens, or (B, C, H, W) conv features.
        mode: ``cls``, ``pooler``, ``mean`` or ``gem`` (see the comment above).
        pooler_output: (B, C) from the model, required for ``pooler``.
        num_prefix_tokens: tokens before the patch tokens (CLS + registers); ignored for conv maps.
        gem_p: exponent of ``gem``.

    Returns:
        float32 (B, C).

    Raises:
        ValueError: the mode does not apply to this output (e.g. ``cls`` without a class token).
    """
    if mode == "pooler":
        if pooler_output is None:
            raise ValueError("pooling 'pooler': this model returns no pooler_output")
        return pooler_output.flatten(1).float()
    if hidden.dim() == 4:
        if mode == "cls":
            raise ValueError("pooling 'cls': a convolutional feature map has no class token")
        tokens = hidden.flatten(2).transpose(1, 2)
    elif hidden.dim() == 3:
        if mode == "cls":
            if num_prefix_tokens < 1:
                raise ValueError("pooling 'cls': this model has no class token")
            return hidden[:, 0].float()
        tokens = hidden[:, num_prefix_tokens:]
    else:
        raise ValueError(f"expected (B, T, C) or (B, C, H, W) features, got {tuple(hidden.shape)}")
    tokens = tokens.float()
    if mode == "mean":
        return tokens.mean(dim=1)
    if mode == "gem":
        return gem(tokens, gem_p)
    raise ValueError(f"unknown pooling {mode!r}; choose from {POOLING_MODES[1:]}")


def pool_feature_map(feats: torch.Tensor, mode: str, gem_p: float = GEM_P) -> torch.Tensor:
    """Pool a conv feature map (B, C, H, W) -> float32 (B, C): ``mean`` (global average over H
    and W) or ``gem`` (over the H*W positions). EfficientNet-Lite pools with this."""
    if mode == "gem":
        return gem(feats.flatten(2).transpose(1, 2).float(), gem_p)
    if mode == "mean":
        return feats.float().mean(dim=(2, 3))
    raise ValueError(f"a conv feature map pools with mean or gem, not {mode!r}")


def pool_tokens(
    outputs: Any, pooling: str, num_prefix_tokens: int = 1, gem_p: float = GEM_P
) -> torch.Tensor:
    """One vector per image from a transformers vision model's outputs.

    Args:
        outputs: the model output (``last_hidden_state`` (B, T, C) or (B, C, H, W), maybe
            ``pooler_output``).
        pooling: a mode of :func:`pool`, or ``auto`` = ``pooler`` when the model has one, else
            ``cls``.
        num_prefix_tokens: tokens before the patch tokens (CLS + registers).
        gem_p: exponent of generalised-mean pooling.

    Returns:
        float32 tensor (B, C).
    """
    pooled = getattr(outputs, "pooler_output", None)
    if pooling == "auto":
        pooling = "pooler" if pooled is not None else "cls"
    return pool(
        outputs.last_hidden_state,
        pooling,
        pooler_output=pooled,
        num_prefix_tokens=num_prefix_tokens,
        gem_p=gem_p,
    )
