"""One vector per image from a backbone's token sequence or feature map.

Modes:
    ``cls``: the first token (the class token of ViT-style models).
    ``pooler``: the model's own ``pooler_output`` (DINOv2/v3: the layer-normed CLS token; CLIP: the
        post-layernorm CLS token; SigLIP: the attention-pooling head).
    ``mean``: the mean of the patch tokens (CLS and register tokens excluded) or of a conv map.
    ``gem``: generalised mean (Radenović et al. 2018) of the patch tokens or conv map,
        ``(mean(clamp(x, eps) ** p)) ** (1 / p)`` with p = 3. It assumes non-negative features,
        as conv maps after an activation are; on transformer tokens, which are signed, the
        negative part is clamped away, so prefer ``mean`` or ``cls`` there.
"""

from __future__ import annotations

from typing import Literal

import torch

PoolingMode = Literal["cls", "pooler", "mean", "gem"]
POOLING_MODES: tuple[str, ...] = ("auto", "cls", "pooler", "mean", "gem")
GEM_P = 3.0
GEM_EPS = 1e-6


def gem(features: torch.Tensor, p: float = GEM_P, eps: float = GEM_EPS) -> torch.Tensor:
    """Generalised-mean pooling over the token axis.

    Args:
        features: float (B, N, C).
        p: exponent (1 = mean, large = max).
        eps: lower clamp, so the power and root stay defined.

    Returns:
        float (B, C).
    """
    return features.clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p)


def pool(
    hidden: torch.Tensor,
    mode: PoolingMode,
    *,
    pooler_output: torch.Tensor | None = None,
    num_prefix_tokens: int = 1,
    gem_p: float = GEM_P,
) -> torch.Tensor:
    """Pool a backbone output to one float32 vector per image.

    Args:
        hidden: (B, T, C) tokens, or (B, C, H, W) conv features.
        mode: ``cls``, ``pooler``, ``mean`` or ``gem`` (module docstring).
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
