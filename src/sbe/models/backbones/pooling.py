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

The maths lives in :mod:`sbe.modelcode.layers_sbe` (shipped with published models), so
the backbone stage and a published model pool identically; this module re-exports it.
"""

from __future__ import annotations

from typing import Literal

from sbe.modelcode.layers_sbe import (  # noqa: F401  (re-exported)
    GEM_EPS,
    GEM_P,
    POOLING_MODES,
    gem,
    pool,
    pool_feature_map,
    pool_tokens,
)

PoolingMode = Literal["cls", "pooler", "mean", "gem"]
