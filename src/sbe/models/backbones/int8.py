"""INT8 backbones on the CPU: ONNX Runtime static quantisation calibrated on the user's images.

The verified float32 export (:func:`sbe.models.backbones.onnx.export_verified`) is quantised with
:func:`onnxruntime.quantization.quantize_static` in QDQ format (uint8 activations, int8 weights,
one scale per output channel), its activation ranges measured on a *calibration sample*: a few
dozen to a few hundred of the user's own images, drawn with a fixed seed from the stage's input
and preprocessed exactly as for the model (:func:`calibration_sample`). The quantised graph is
checked against the float32 one on that sample (mean cosine >= :data:`MIN_MEAN_COSINE`) before it
is renamed into the cache, like the float32 export.

Cache key: the float32 export's key (backbone identity, weights, torch/onnx versions), the
calibration sample's digest (:func:`calibration_digest`: the sha256 of its pixels), the
quantisation settings and the onnxruntime version. Because the key is computable from the digest
alone, a run that recorded the digest can reload the same INT8 model without its images
(``load_backbone(..., precision="int8", calibration=digest)``).

Example:
    >>> sample = calibration_sample(len(jpegs), jpegs.__getitem__, spec.preprocess, size=128)
    >>> bb = load_backbone("efficientnet-lite0", precision="int8", calibration=sample)
    >>> bb.calibration == calibration_digest(sample)
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbe.data.preprocess import Preprocess, decode_batch
from sbe.errors import SbeError
from sbe.models.backbones.base import BackboneSpec, Encoder
from sbe.storage import atomic_path

if TYPE_CHECKING:
    from sbe.models.backbones.onnx import OnnxBackbone

PRECISIONS = ("fp32", "int8")
#: images in a calibration sample unless the caller says otherwise
DEFAULT_CALIBRATION_SIZE = 128
CALIBRATION_SEED = 0
#: the quantised graph must keep at least this mean cosine to float32 on the calibration sample
MIN_MEAN_COSINE = 0.98
#: bump when the quantisation recipe changes, so old cache entries are not reused
INT8_FORMAT = 1
#: images per calibration forward pass (bounds the calibrator's memory)
CALIBRATION_BATCH = 16


class Int8Error(SbeError):
    """The INT8 model could not be built, or it disagreed with float32."""


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`SbeError`."""
    if precision not in PRECISIONS:
        raise SbeError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def calibration_digest(images: np.ndarray) -> str:
    """The identity of a calibration sample: sha256 of its shape and pixels (16 hex digits).

    Args:
        images: uint8 (N, crop, crop, 3).
    """
    x = np.ascontiguousarray(images, dtype=np.uint8)
    h = hashlib.sha256(repr(x.shape).encode())
    h.update(x.tobytes())
    return h.hexdigest()[:16]


def calibration_indices(n: int, size: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0) -> np.ndarray:
    """Which of ``n`` inputs form the calibration sample: ``size`` of them, seeded, sorted.

    Returns:
        int64 (min(n, size),) increasing positions in ``0 .. n-1``.
    """
    if n <= size:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def calibration_sample(
    n: int,
    read: Callable[[int], bytes],
    preprocess: Preprocess,
    *,
    size: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = CALIBRATION_SEED,
) -> np.ndarray:
    """Decode a seeded sample of ``size`` of the ``n`` input images, preprocessed for the model.

    Undecodable images are left out (the sample is then a little smaller); the same input, size
    and seed always give the same pixels, hence the same :func:`calibration_digest`.

    Args:
        n: number of input images.
        read: ``read(i)`` returns the encoded bytes of image ``i`` (may raise ``OSError``).
        preprocess: the backbone's preprocessing.
        size: images to draw (fewer if the input is smaller).
        seed: the draw's seed.

    Returns:
        uint8 (k, crop, crop, 3), k <= size.

    Raises:
        SbeError: no image of the sample decodes.
    """
    picks = calibration_indices(n, size, seed)
    batch, ok, _ = decode_batch(preprocess, lambda j: read(int(picks[j])), 0, len(picks))
    if not ok:
        raise SbeError(f"no decodable image among the {len(picks)} drawn to calibrate INT8")
    return batch


def parquet_calibration(
    path: str | os.PathLike[str],
    column: str,
    *,
    size: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = CALIBRATION_SEED,
) -> Callable[[Preprocess], np.ndarray]:
    """A calibration sample drawn from an image-bytes column of a parquet file, made on demand.

    Only the row groups holding the drawn rows are read.

    Args:
        path: the parquet file (e.g. ``sbe embed``'s packaged images).
        column: its encoded-image column.
        size, seed: as for :func:`calibration_sample`.

    Returns:
        ``make(preprocess) -> uint8 (k, crop, crop, 3)``.
    """
    import pyarrow.parquet as pq

    from sbe.storage.parquet import read_parquet_rows

    def make(preprocess: Preprocess) -> np.ndarray:
        picks = calibration_indices(pq.ParquetFile(path).metadata.num_rows, size, seed)
        got = read_parquet_rows(path, picks.tolist(), [column])
        data: list[bytes | None] = [got[int(p)][column] for p in picks]

        def read(i: int) -> bytes:
            if data[i] is None:
                raise OSError("no image bytes")
            return data[i]  # type: ignore[return-value]

        return calibration_sample(len(data), read, preprocess, size=len(data), seed=seed)

    return make


class _Reader:
    """A :class:`onnxruntime.quantization.CalibrationDataReader` over uint8 image batches."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self.images, self.input_name = images, input_name
        self._it: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, len(self.images), CALIBRATION_BATCH):
            yield {self.input_name: self.images[s : s + CALIBRATION_BATCH]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def _settings() -> dict[str, Any]:
    return {
        "format": "QDQ",
        "activations": "QUInt8",
        "weights": "QInt8",
        "per_channel": True,
        "calibrate": "MinMax",
        "version": INT8_FORMAT,
    }


def int8_cache_path(spec: BackboneSpec, calibration: str) -> Path:
    """Where the INT8 model of ``spec`` calibrated on sample ``calibration`` lives (maybe absent).

    Args:
        spec: the backbone.
        calibration: a :func:`calibration_digest`.
    """
    import onnxruntime as ort

    from sbe.models.backbones.onnx import cache_path

    fp32 = cache_path(spec)
    key = {"fp32": fp32.name, "calibration": calibration, "ort": ort.__version__, **_settings()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return fp32.with_name(f"{fp32.stem}-int8-{digest}.onnx")


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine similarity of two (N, D) arrays (a zero row counts as 0)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    cos = np.where(den > 0, (a64 * b64).sum(1) / np.maximum(den, 1e-30), 0.0)
    return float(cos.mean()) if len(cos) else 1.0


def _run(session: Any, images: np.ndarray, input_name: str) -> np.ndarray:
    out = [
        session.run(None, {input_name: images[s : s + CALIBRATION_BATCH]})[0]
        for s in range(0, len(images), CALIBRATION_BATCH)
    ]
    return np.concatenate(out).astype(np.float32, copy=False)


def quantize_verified(
    spec: BackboneSpec,
    images: np.ndarray | None = None,
    *,
    calibration: str | None = None,
    encoder: Encoder | None = None,
) -> tuple[Path, str]:
    """The cached INT8 model of ``spec``; quantises and verifies it on a cache miss.

    Args:
        spec: the backbone (its float32 export is made first if missing).
        images: the calibration sample, uint8 (N, crop, crop, 3); needed on a cache miss.
        calibration: the sample's digest, when the images are not at hand (cache hit only).
        encoder: the built float32 CPU encoder, if the caller has one (saves a load on a miss).

    Returns:
        ``(path of the .onnx file, calibration digest)``.

    Raises:
        Int8Error: no images for a cache miss, quantisation failed, or the INT8 model's mean
            cosine to float32 on the sample is below :data:`MIN_MEAN_COSINE`.
    """
    from sbe.models.backbones.onnx import INPUT_NAME, export_verified, make_session

    if images is not None:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        crop = spec.preprocess.crop
        if images.ndim != 4 or images.shape[1:] != (crop, crop, 3) or len(images) == 0:
            raise Int8Error(
                f"{spec.name}: calibration images must be uint8 (N, {crop}, {crop}, 3) with N > 0, "
                f"got {images.shape}"
            )
        digest = calibration_digest(images)
        if calibration is not None and calibration != digest:
            raise Int8Error(f"calibration images have digest {digest}, not {calibration}")
    elif calibration is not None:
        digest = calibration
    else:
        raise Int8Error(f"{spec.name}: INT8 needs calibration images (or a cached digest)")
    final = int8_cache_path(spec, digest)
    if final.is_file():
        return final, digest
    if images is None:
        raise Int8Error(
            f"the INT8 model of {spec.name} calibrated on sample {digest} is not in the cache "
            f"({final.parent}); rerun the stage that calibrated it, or use --precision fp32"
        )
    fp32 = export_verified(spec, encoder)
    ref = _run(make_session(fp32), images, INPUT_NAME)
    with atomic_path(final) as tmp:
        _quantize(fp32, tmp, images)
        got = _run(make_session(tmp), images, INPUT_NAME)
        cos = mean_cosine(ref, got) if np.isfinite(got).all() else -1.0
        if cos < MIN_MEAN_COSINE:
            # atomic_path discards the temp file: a rejected model never enters the cache
            raise Int8Error(
                f"{spec.name}: the INT8 model's mean cosine to float32 on the calibration sample "
                f"is {cos:.4f} < {MIN_MEAN_COSINE}; use --precision fp32"
            )
    return final, digest


def _quantize(fp32: Path, out: Path, images: np.ndarray) -> None:
    """QDQ static quantisation of ``fp32`` into ``out``, calibrated on ``images``."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from sbe.models.backbones.onnx import INPUT_NAME, _quiet_fds

    with tempfile.TemporaryDirectory(prefix="sbe-int8-", dir=out.parent) as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        with _quiet_fds():
            # folds constants and fuses BatchNorm into Conv, so the quantiser sees the graph the
            # float32 session runs; shape inference lets it quantise every conv
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(out),
                _Reader(images, INPUT_NAME),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                # the calibrator writes augmented models here instead of the working directory
                calibration_cache_path=None,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        for leftover in Path(tmpdir).iterdir():
            leftover.unlink(missing_ok=True)


__all__ = [
    "DEFAULT_CALIBRATION_SIZE",
    "MIN_MEAN_COSINE",
    "PRECISIONS",
    "Int8Error",
    "calibration_digest",
    "calibration_indices",
    "calibration_sample",
    "check_precision",
    "int8_backbone",
    "int8_cache_path",
    "mean_cosine",
    "parquet_calibration",
    "quantize_verified",
]


def int8_backbone(
    spec: BackboneSpec,
    calibration: np.ndarray | str | None,
    *,
    encoder: Encoder | None = None,
    threads: int | None = None,
) -> OnnxBackbone:
    """The statically quantised ONNX Runtime backbone of ``spec`` (:func:`quantize_verified`).

    Args:
        calibration: uint8 (N, crop, crop, 3) images, or the digest of a cached sample.
        encoder: the torch encoder to export (built from ``spec`` when ``None``).
        threads: ONNX Runtime intra-op threads.
    """
    from sbe.models.backbones.onnx import OnnxBackbone

    if isinstance(calibration, str):
        path, digest = quantize_verified(spec, calibration=calibration, encoder=encoder)
    else:
        path, digest = quantize_verified(spec, calibration, encoder=encoder)
    return OnnxBackbone(spec, path, threads, precision="int8", calibration=digest)
