"""ONNX Runtime: the CPU runtime for every backbone, exported from the torch encoder once.

The exported graph takes uint8 NHWC pixels (the normalisation is inside it) with a dynamic batch
axis. An export is verified against torch on probe images of two batch sizes (every row's cosine
similarity must be >= :data:`MIN_COSINE`) before it is renamed into the cache, so a cached file is
always a verified one. The cache key covers the backbone identity, its weights fingerprint and the
torch/onnx versions; the folder is ``$SBE_CACHE/onnx`` (see :mod:`sbe.models.backbones.cache`).

On 2 CPU cores ONNX Runtime runs EfficientNet-Lite0 several times faster than torch eager (fused
conv + activation kernels, no Python per layer); numbers in ``docs/backbone.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbe.device import usable_cores
from sbe.errors import SbeError
from sbe.models.backbones.base import Backbone, BackboneSpec, Encoder
from sbe.models.backbones.cache import cache_dir
from sbe.storage import atomic_path

MIN_COSINE = 0.9999
#: bump when the exported wrapper changes, so old cache entries are not reused
EXPORT_FORMAT = 1
OPSET = 17
#: protobuf's 2 GiB limit on one ONNX file; bigger models stay on torch
MAX_EXPORT_BYTES = 1_900_000_000
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"


class OnnxExportError(SbeError):
    """The encoder could not be exported, or the export disagreed with torch."""


class _Rejected(Exception):
    """One export attempt failed; the temp file is discarded by ``atomic_path``."""


#: CPU cores this process may run on (respects taskset/cgroup affinity); kept under its old name
available_cores = usable_cores


def probe_images(n: int, side: int, seed: int = 0) -> np.ndarray:
    """Deterministic photo-like uint8 images (gradients, a block, noise) for export checks.

    Returns:
        uint8 (n, side, side, 3).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / max(side - 1, 1)
    out = np.empty((n, side, side, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(0, 1, 3)
        img = np.stack([xx * a + yy * (1 - a), yy * b + (1 - xx) * (1 - b), (xx + yy) * c / 2], -1)
        x0, y0 = rng.integers(0, side // 2, 2)
        img[y0 : y0 + side // 3, x0 : x0 + side // 4] = rng.uniform(0, 1, 3)
        img = img * 255 + rng.normal(0, 12, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def cache_path(spec: BackboneSpec) -> Path:
    """Where the verified export of ``spec`` lives (the file may not exist yet)."""
    key = {
        "identity": spec.identity(),
        "weights": spec.weights_fingerprint(),
        "torch": torch.__version__,
        # the installed version, read without importing onnx (2 s of every cached load; the
        # exporter imports it when it runs)
        "onnx": importlib.metadata.version("onnx"),
        "format": EXPORT_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name.removeprefix("hf:").rstrip("/"))[-48:]
    return cache_dir("onnx") / f"{slug.strip('_') or 'model'}-{digest}.onnx"


def make_session(path: str | os.PathLike[str], threads: int | None = None):
    """An ONNX Runtime CPU session using ``threads`` intra-op threads (default: every core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or available_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads would otherwise spin for a while after each batch and steal the cores
    # that the JPEG decoder threads need between batches.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null (C++ and Python writes alike) for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _export(encoder: Encoder, path: Path, *, dynamo: bool) -> None:
    crop = encoder.preprocess.crop
    example = torch.from_numpy(probe_images(2, crop, seed=1))
    # The exporters print progress and, on failure, the whole traced graph; keep that out of the
    # user's terminal (a failure is reported in one line by the caller).
    with (
        warnings.catch_warnings(),
        _quiet_fds(),
        torch.inference_mode(False),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        # the two exporters take different options for the variable batch dimension
        options: dict[str, Any] = (
            {
                "dynamic_shapes": ({0: torch.export.Dim("batch", max=4096)},),
                "external_data": False,
                "verbose": False,
            }
            if dynamo
            else {
                "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                "opset_version": OPSET,
            }
        )
        torch.onnx.export(
            encoder,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=dynamo,
            **options,
        )


def agreement(encoder: Encoder, session) -> float:
    """Smallest per-row cosine similarity between torch and ONNX Runtime on probe images.

    Two batch sizes (3 and 1), both different from the export's, so a batch axis frozen at
    export time fails here. A non-finite or wrongly shaped output counts as -1.
    """
    worst = 1.0
    for n, seed in ((3, 2), (1, 3)):
        x = probe_images(n, encoder.preprocess.crop, seed=seed)
        with torch.inference_mode():
            ref = encoder(torch.from_numpy(x)).float().numpy()
        out = session.run(None, {INPUT_NAME: x})[0]
        if out.shape != ref.shape or not np.isfinite(out).all():
            return -1.0
        num = (ref * out).sum(1)
        den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        cos = np.where(den > 0, num / np.maximum(den, 1e-30), float(np.allclose(ref, out)))
        worst = min(worst, float(cos.min()))
    return worst


def export_verified(spec: BackboneSpec, encoder: Encoder | None = None) -> Path:
    """The cached, verified ONNX export of ``spec``; exports and verifies it on a cache miss.

    Args:
        spec: the backbone.
        encoder: the built fp32 CPU encoder, if the caller has one (saves a load).

    Returns:
        Path of the ``.onnx`` file.

    Raises:
        OnnxExportError: too big for one ONNX file, not exportable, or disagreeing with torch.
    """
    final = cache_path(spec)
    if final.is_file():
        return final
    if encoder is None:
        encoder = spec.build(torch.device("cpu"), torch.float32)
    n_bytes = sum(p.numel() * 4 for p in encoder.parameters())
    if n_bytes > MAX_EXPORT_BYTES:
        raise OnnxExportError(
            f"{spec.name}: {n_bytes / 1e9:.1f} GB of fp32 weights exceed one ONNX file; "
            "use --runtime torch"
        )
    problems: list[str] = []
    for dynamo in (False, True):
        how = "dynamo" if dynamo else "torchscript"
        try:
            with atomic_path(final) as tmp:
                try:
                    _export(encoder, tmp, dynamo=dynamo)
                    cos = agreement(encoder, make_session(tmp))
                except Exception as e:  # exporter failures come in many types
                    raise _Rejected(f"{how} export: {str(e).splitlines()[0][:300]}") from None
                if cos < MIN_COSINE:
                    raise _Rejected(f"{how} export: cosine to torch {cos:.6f} < {MIN_COSINE}")
            return final  # renamed into the cache only after passing the check
        except _Rejected as e:
            problems.append(str(e))
    raise OnnxExportError(f"{spec.name}: no ONNX export agrees with torch: {'; '.join(problems)}")


class OnnxBackbone(Backbone):
    """A backbone run by ONNX Runtime on the CPU.

    Args:
        spec: the backbone (its identity is this backbone's identity).
        path: a verified export (see :func:`export_verified`).
        threads: intra-op threads (default: every available core).
    """

    runtime = "onnx"
    device = "cpu"
    default_batch_size = 32

    def __init__(
        self,
        spec: BackboneSpec,
        path: str | os.PathLike[str],
        threads: int | None = None,
        *,
        precision: str = "fp32",
        calibration: str | None = None,
    ) -> None:
        self.spec = spec
        self.name, self.dim, self.preprocess = spec.name, spec.dim, spec.preprocess
        self.path = Path(path)
        self.threads = threads or available_cores()
        #: ``fp32`` or ``int8``; for ``int8``, ``calibration`` is the sample's digest
        self.precision, self.calibration = precision, calibration
        self.session = make_session(self.path, self.threads)

    @classmethod
    def from_spec(
        cls, spec: BackboneSpec, *, encoder: Encoder | None = None, threads: int | None = None
    ) -> OnnxBackbone:
        """Load the cached export of ``spec`` (exporting and verifying it first if missing)."""
        return cls(spec, export_verified(spec, encoder), threads)

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.uint8)
        return self.session.run(None, {INPUT_NAME: x})[0].astype(np.float32, copy=False)
