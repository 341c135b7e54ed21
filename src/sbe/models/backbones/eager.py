"""Torch runtime: the encoder in eager mode, fp32 on CPU, bf16/fp16 on GPU."""

from __future__ import annotations

import numpy as np
import torch

from sbe.device import resolve_device
from sbe.models.backbones.base import Backbone, BackboneSpec, Encoder


def gpu_compute_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it (Ampere and newer), else float16."""
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def default_batch_size(num_parameters: int, device: torch.device) -> int:
    """A batch that keeps the device busy without running out of memory.

    CPU: throughput is flat above ~16 images, larger batches only add latency and memory.
    GPU: ViT-B-sized models saturate an H100 around 256 images at 224 px in bf16; bigger models
    get proportionally smaller batches (activation memory grows with width and depth).
    """
    if device.type != "cuda":
        return 16
    if num_parameters <= 150_000_000:
        return 256
    if num_parameters <= 500_000_000:
        return 128
    if num_parameters <= 1_500_000_000:
        return 64
    return 16


class TorchBackbone(Backbone):
    """An :class:`Encoder` run by torch: ``inference_mode``, autocast on GPU.

    On CUDA the weights of transformer backbones are loaded directly in bf16 (fp16 on GPUs
    without bf16), which halves their memory compared with fp32 weights under autocast; the
    uint8 batch is copied to the GPU (4x less traffic than float) and normalised there.

    Args:
        spec: what to build.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        encoder: an already built encoder for ``spec`` (skips loading the weights again).
    """

    runtime = "torch"

    def __init__(
        self, spec: BackboneSpec, device: str = "auto", encoder: Encoder | None = None
    ) -> None:
        dev = resolve_device(device)
        self.spec = spec
        self.name, self.dim, self.preprocess = spec.name, spec.dim, spec.preprocess
        self.device = str(dev)
        self._device = dev
        self.amp_dtype = gpu_compute_dtype(dev) if dev.type == "cuda" else None
        if encoder is None:
            encoder = spec.build(dev, dtype=self.amp_dtype or torch.float32)
        else:
            encoder = encoder.to(dev)
        if dev.type == "cpu" and encoder.convolutional:
            # torch's Module.to overloads omit memory_format, which it accepts at runtime.
            encoder = encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            encoder.channels_last = True
        self.encoder = encoder
        n_params = sum(p.numel() for p in encoder.parameters())
        self.default_batch_size = default_batch_size(n_params, dev)

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(images, dtype=np.uint8)
        # a read-only batch (e.g. decoded from an immutable buffer) is copied: torch needs to own it
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if self._device.type == "cuda":
            x = x.pin_memory().to(self._device, non_blocking=True)
        with torch.autocast(
            device_type=self._device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            y = self.encoder(x)
        return y.float().cpu().numpy()
