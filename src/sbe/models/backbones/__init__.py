"""Frozen image encoders behind one interface (:class:`Backbone`), and :func:`load_backbone`.

Example:
    >>> bb = load_backbone("efficientnet-lite0")          # ONNX Runtime on CPU, torch on GPU
    >>> vecs = bb.embed(uint8_batch)                       # (B, 224, 224, 3) -> (B, 1280) float32
    >>> same = load_backbone(bb.identity())                # rebuilt from the recorded identity
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from sbe.errors import SbeError
from sbe.models.backbones.base import Backbone, BackboneSpec, Encoder, Preprocess
from sbe.models.backbones.efficientnet import VARIANTS as EFFICIENTNET_VARIANTS
from sbe.models.backbones.efficientnet import EfficientNetLiteBackbone, EfficientNetSpec
from sbe.models.backbones.hf import HF_PREFIX, HFSpec
from sbe.models.backbones.int8 import PRECISIONS, check_precision, int8_backbone
from sbe.models.backbones.pooling import GEM_P

if TYPE_CHECKING:
    import numpy as np

DEFAULT_BACKBONE = "efficientnet-lite0"
RUNTIMES = ("auto", "torch", "onnx")

#: identity keys that must match when a backbone is rebuilt from a recorded identity
_IDENTITY_KEYS = ("name", "dim", "preprocess", "pooling", "gem_p", "weights")


def resolve_spec(
    spec_or_identity: str | dict[str, Any],
    pooling: str = "auto",
    *,
    image_size: int = 0,
    gem_p: float = GEM_P,
) -> BackboneSpec:
    """Describe a backbone (no weights loaded) from a spec string or a recorded identity.

    Args:
        spec_or_identity: ``efficientnet-lite0``, ``efficientnet-lite2``, ``hf:<id or path>``, or
            an identity dict from :meth:`Backbone.identity`.
        pooling: ``auto`` or an explicit mode; with an identity, ``auto`` means the recorded one.
        image_size: input side in px (0 = the model's default); with an identity, ignored: the
            recorded ``preprocess`` crop is used (the rebuilt preprocessing must then equal the
            recorded one).
        gem_p: GeM exponent for ``pooling="gem"``; with an identity, the recorded ``gem_p``.

    Raises:
        SbeError: unknown backbone, a size or exponent the backbone refuses, or an identity the
            current files no longer reproduce (its name, dim, preprocessing, pooling, GeM
            exponent or weights package differ from what they give now).
    """
    identity: dict[str, Any] | None = None
    if isinstance(spec_or_identity, dict):
        identity = spec_or_identity
        if "name" not in identity:
            raise SbeError("backbone identity has no 'name'")
        name = str(identity["name"])
        if pooling == "auto":
            pooling = identity.get("pooling", "auto")
        gem_p = float(identity.get("gem_p", GEM_P))
        recorded = identity.get("preprocess")
        crop = recorded.get("crop") if isinstance(recorded, dict) else None
        image_size = int(crop) if isinstance(crop, int | float) else 0
    else:
        name = str(spec_or_identity).strip()
    if name in EFFICIENTNET_VARIANTS:
        spec: BackboneSpec = EfficientNetSpec(name, pooling, image_size=image_size, gem_p=gem_p)
    elif name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX):
        revision = identity.get("revision") if identity else None
        spec = HFSpec(
            name[len(HF_PREFIX) :],
            pooling,
            revision=revision,
            image_size=image_size,
            gem_p=gem_p,
        )
    else:
        raise SbeError(
            f"unknown backbone {name!r}: use {', '.join(sorted(EFFICIENTNET_VARIANTS))} "
            f"or {HF_PREFIX}<model id or local folder>"
        )
    if identity is not None:
        now = spec.identity()
        changed = [k for k in _IDENTITY_KEYS if k in identity and identity[k] != now.get(k)]
        if changed:
            raise SbeError(
                f"backbone {name}: the recorded identity no longer matches its files "
                f"({', '.join(changed)} differ: recorded {[identity[k] for k in changed]}, "
                f"now {[now.get(k) for k in changed]})"
            )
    return spec


def load_backbone(
    spec_or_identity: str | dict[str, Any] | BackboneSpec = DEFAULT_BACKBONE,
    *,
    runtime: str = "auto",
    device: str = "auto",
    pooling: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
    calibration: np.ndarray | str | None = None,
) -> Backbone:
    """Build a ready-to-run backbone.

    Args:
        spec_or_identity: a spec string, a recorded identity dict, or a :class:`BackboneSpec`.
        runtime: ``onnx`` (CPU only), ``torch``, or ``auto`` = ONNX Runtime on CPU and torch on GPU
            (if the ONNX export fails or disagrees with torch, ``auto`` warns and uses torch).
        device: ``auto`` (GPU when visible), ``cpu`` or ``cuda``.
        pooling: ``auto``, ``cls``, ``pooler``, ``mean`` or ``gem``.
        threads: ONNX Runtime intra-op threads (default: every available core).
        precision: ``fp32``, or ``int8``: the ONNX graph statically quantised on ``calibration``
            (CPU only; see :mod:`sbe.models.backbones.int8`).
        calibration: for ``int8``: uint8 (N, crop, crop, 3) calibration images, or the digest of
            a sample an earlier run quantised with (then the model must be in the cache).

    Returns:
        A :class:`Backbone` whose ``identity()`` rebuilds it (the network; ``precision`` and
        ``calibration`` are attributes of the backbone, not part of the identity).

    Raises:
        SbeError: unknown backbone, runtime or precision, GPU requested but missing, ONNX export
            refused with ``runtime="onnx"``, ``int8`` without calibration or on a GPU.
    """
    from sbe.models.backbones.eager import TorchBackbone, resolve_device
    from sbe.models.backbones.onnx import OnnxBackbone, OnnxExportError

    if runtime not in RUNTIMES:
        raise SbeError(f"unknown runtime {runtime!r}; choose from {RUNTIMES}")
    check_precision(precision)
    spec = (
        spec_or_identity
        if isinstance(spec_or_identity, BackboneSpec)
        else resolve_spec(spec_or_identity, pooling)
    )
    dev = resolve_device(device)
    chosen = runtime
    if chosen == "auto":
        chosen = "onnx" if dev.type == "cpu" else "torch"
    if precision == "int8":
        if dev.type != "cpu" or chosen != "onnx":
            raise SbeError(
                "precision int8 runs on the CPU through ONNX Runtime; use --device cpu with "
                "--runtime auto or onnx, or --precision fp32"
            )
        # no silent fallback: the user asked for the quantised model
        return int8_backbone(spec, calibration, threads=threads)
    if chosen == "onnx":
        if dev.type != "cpu":
            raise SbeError("runtime 'onnx' runs on the CPU; use --runtime torch with a GPU")
        try:
            return OnnxBackbone.from_spec(spec, threads=threads)
        except OnnxExportError as e:
            if runtime != "auto":
                raise
            warnings.warn(f"{e}; running on torch instead", stacklevel=2)
    return TorchBackbone(spec, device=str(dev))


__all__ = [
    "DEFAULT_BACKBONE",
    "PRECISIONS",
    "Backbone",
    "BackboneSpec",
    "EfficientNetLiteBackbone",
    "EfficientNetSpec",
    "Encoder",
    "HFSpec",
    "Preprocess",
    "load_backbone",
    "resolve_spec",
]
