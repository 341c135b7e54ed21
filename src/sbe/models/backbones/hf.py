"""Any Hugging Face vision model as a backbone: ``hf:<model id or local folder>``.

The model comes from ``transformers`` (``AutoModel``; for a two-tower CLIP/SigLIP checkpoint only
the vision tower is loaded). Its input preparation (resize rule, crop, resampling filter, mean and
std) is read from the checkpoint's ``preprocessor_config.json`` without instantiating an image
processor, because several processors need torchvision, which this project cannot use; keys the
file leaves out take the processor class's defaults (its PIL variant), then generic defaults.

Pooling (see :mod:`sbe.models.backbones.pooling`): ``auto`` resolves per model family to what the
family was trained to expose: the layer-normed CLS token for DINOv2/DINOv3 (identical to their
``pooler_output``), ``pooler`` for CLIP (post-layernorm CLS) and SigLIP (attention-pool head),
``cls`` for plain ViTs, ``mean`` for models without a class token.

Remote code is never trusted: checkpoints that need ``trust_remote_code`` are refused by
transformers itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from sbe.errors import SbeError
from sbe.models.backbones.base import (
    BackboneSpec,
    Encoder,
    Normalize,
    Preprocess,
    Resample,
    ResizeMode,
    check_gem_p,
)
from sbe.models.backbones.pooling import GEM_P, POOLING_MODES, pool

HF_PREFIX = "hf:"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: model_type -> pooling used for ``auto``
AUTO_POOLING: dict[str, str] = {
    "dinov2": "cls",
    "dinov2_with_registers": "cls",
    "dinov3_vit": "cls",
    "clip": "pooler",
    "clip_vision_model": "pooler",
    "siglip": "pooler",
    "siglip_vision_model": "pooler",
    "siglip2": "pooler",
    "siglip2_vision_model": "pooler",
    "vit": "cls",
}
#: families whose token sequence has no class token
NO_CLS_TOKEN = frozenset({"siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model"})


def _dtype_kwarg() -> str:
    """``from_pretrained`` takes ``dtype`` since transformers 4.56 (``torch_dtype`` before)."""
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


# PIL.Image.Resampling codes as stored in processor configs.
_RESAMPLE: dict[int, Resample] = {
    0: "nearest",
    1: "lanczos",
    2: "bilinear",
    3: "bicubic",
    4: "bilinear",
    5: "bilinear",
}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info/warning chatter and progress bars during a load."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def _processor_class_defaults(processor_type: str | None) -> dict[str, Any]:
    """Defaults of the processor class named in the config (its PIL variant), or ``{}``."""
    if not processor_type:
        return {}
    import transformers

    base = processor_type.removesuffix("Fast").removesuffix("Pil")
    for name in (f"{base}Pil", base):
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        try:
            with quiet_transformers():
                proc = cls()
        except Exception:  # needs torchvision or other extras: try the next candidate
            continue
        out: dict[str, Any] = {}
        for key in (
            "size",
            "crop_size",
            "do_center_crop",
            "do_resize",
            "do_rescale",
            "rescale_factor",
            "do_normalize",
            "image_mean",
            "image_std",
            "resample",
        ):
            value = getattr(proc, key, None)
            if value is None:
                continue
            if hasattr(value, "__dataclass_fields__") or hasattr(value, "items"):
                value = {k: v for k, v in dict(_as_dict(value)).items() if v is not None}
            out[key] = value
        return out
    return {}


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return dict(value.items())


def preprocess_from_processor_config(
    cfg: dict[str, Any], *, image_size: int | None = None
) -> Preprocess:
    """Translate a Hugging Face ``preprocessor_config.json`` into a :class:`Preprocess`.

    Args:
        cfg: the JSON dict (missing keys take the processor class's defaults, then generic ones:
            resize to ``image_size`` square, no crop, rescale 1/255, ImageNet mean/std, bilinear).
        image_size: the model's native input side, used when the config gives no size.

    Returns:
        The equivalent preparation, normalisation in 0-255 units.

    Raises:
        SbeError: a setting this pipeline cannot reproduce (non-square crop, no resizing).
    """
    merged = {**_processor_class_defaults(cfg.get("image_processor_type")), **cfg}
    if not merged.get("do_resize", True):
        raise SbeError("image processor has do_resize=false: variable input sizes are unsupported")
    size = merged.get("size")
    if size is None:
        if image_size is None:
            raise SbeError("image processor config gives no size and the model no image_size")
        size = {"height": image_size, "width": image_size}
    if isinstance(size, int | float):
        size = {"height": int(size), "width": int(size)}
    size = {k: v for k, v in _as_dict(size).items() if v is not None}
    mode: ResizeMode
    if "shortest_edge" in size:
        mode, resize = "short_side", int(size["shortest_edge"])
    elif "height" in size and "width" in size:
        if int(size["height"]) != int(size["width"]):
            raise SbeError(f"non-square processor size {size} is unsupported")
        mode, resize = "squash", int(size["height"])
    else:
        raise SbeError(f"unsupported processor size {size}")
    crop = resize
    if merged.get("do_center_crop"):
        cs = merged.get("crop_size")
        if isinstance(cs, int | float):
            cs = {"height": int(cs), "width": int(cs)}
        if cs:
            cs = _as_dict(cs)
            if int(cs["height"]) != int(cs["width"]):
                raise SbeError(f"non-square crop_size {cs} is unsupported")
            crop = int(cs["height"])
    # A short-side resize without a crop leaves non-square images non-square; the model input here
    # is always square, so the centre square is taken (exact for square inputs such as 640x640).
    scale = float(merged.get("rescale_factor", 1 / 255)) if merged.get("do_rescale", True) else 1.0
    if merged.get("do_normalize", True):
        mean = tuple(float(m) / scale for m in merged.get("image_mean", IMAGENET_MEAN))
        std = tuple(float(s) / scale for s in merged.get("image_std", IMAGENET_STD))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0 / scale,) * 3
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    resample = _RESAMPLE.get(int(merged.get("resample", 2)), "bilinear")
    # One value per RGB channel (a single value was repeated above).
    return Preprocess(
        resize=resize,
        crop=crop,
        mean=cast("tuple[float, float, float]", mean),
        std=cast("tuple[float, float, float]", std),
        resize_mode=mode,
        resample=resample,
    )


#: the smallest input side an ``hf:`` backbone is asked to take
MIN_HF_IMAGE_SIZE = 16


def rescaled_preprocess(pp: Preprocess, image_size: int) -> Preprocess:
    """The processor's preparation at another input side: the crop becomes ``image_size`` and the
    resize scales with it (short side 256 -> crop 224 becomes 293 -> 256), normalisation unchanged.

    Raises:
        SbeError: ``image_size`` below :data:`MIN_HF_IMAGE_SIZE`.
    """
    if image_size < MIN_HF_IMAGE_SIZE:
        raise SbeError(
            f"image_size {image_size} is too small: use 0 (the processor's {pp.crop} px) or at "
            f"least {MIN_HF_IMAGE_SIZE} px"
        )
    resize = image_size
    if pp.resize_mode == "short_side":
        resize = max(image_size, round(pp.resize * image_size / pp.crop))
    return dataclasses.replace(pp, resize=resize, crop=image_size)


class HFEncoder(Encoder):
    """uint8 NHWC -> normalise -> transformers vision model -> pooled float32 (B, dim)."""

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        dim: int,
        pooling: str,
        num_prefix_tokens: int,
        interpolate_pos_encoding: bool,
        gem_p: float = GEM_P,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.dim = dim
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens
        self.gem_p = gem_p
        self.normalize = Normalize(preprocess.mean, preprocess.std)
        self._kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}

    def forward(self, images_u8_nhwc: torch.Tensor) -> torch.Tensor:
        param = next(self.model.parameters())
        x = self.normalize(images_u8_nhwc).to(param.dtype)
        out = self.model(pixel_values=x, return_dict=True, **self._kwargs)
        return pool(
            out.last_hidden_state,
            self.pooling,
            pooler_output=getattr(out, "pooler_output", None),
            num_prefix_tokens=self.num_prefix_tokens,
            gem_p=self.gem_p,
        )


class HFSpec(BackboneSpec):
    """A transformers vision model, described from its config files (no weights loaded).

    Args:
        source: hub id (``facebook/dinov2-base``) or local folder, without the ``hf:`` prefix.
        pooling: ``auto``, ``cls``, ``pooler``, ``mean`` or ``gem``.
        revision: hub commit to pin (identities record it so a rebuild gets the same weights).
        image_size: input side in px (0 = the processor's crop); another size scales the
            processor's resize in proportion and crops to it; patch models interpolate their
            position embeddings (a model that cannot is refused when it loads).
        gem_p: the GeM exponent (>= 1) when ``pooling == "gem"``.

    Raises:
        SbeError: unreadable config, a pooling the model cannot give, ``image_size`` below 16,
            ``gem_p`` below 1.
    """

    def __init__(
        self,
        source: str,
        pooling: str = "auto",
        revision: str | None = None,
        *,
        image_size: int = 0,
        gem_p: float = GEM_P,
    ) -> None:
        from transformers import AutoConfig

        if pooling not in POOLING_MODES:
            raise SbeError(f"unknown pooling {pooling!r}; choose from {POOLING_MODES}")
        self.local = _is_local(source)
        self.source = str(Path(source).expanduser().resolve()) if self.local else source
        self.revision = None if self.local else revision
        try:
            with quiet_transformers():
                config = AutoConfig.from_pretrained(self.source, revision=self.revision)
        except (OSError, ValueError) as e:
            raise SbeError(f"cannot load the model config of hf:{source}: {e}") from None
        if not self.local and self.revision is None:
            self.revision = getattr(config, "_commit_hash", None)
        self.config = config
        self.vision_config = getattr(config, "vision_config", None) or config
        self.model_type = str(config.model_type)
        self.name = f"{HF_PREFIX}{self.source}"

        vc = self.vision_config
        hidden = getattr(vc, "hidden_size", None)
        if hidden is None and getattr(vc, "hidden_sizes", None):
            hidden = vc.hidden_sizes[-1]
        if hidden is None:
            raise SbeError(f"hf:{source}: cannot tell the feature size from its config")
        self.dim = int(hidden)
        self.num_prefix_tokens = (0 if self.model_type in NO_CLS_TOKEN else 1) + int(
            getattr(vc, "num_register_tokens", 0) or 0
        )
        if pooling == "auto":
            pooling = AUTO_POOLING.get(self.model_type, "cls" if self.num_prefix_tokens else "mean")
        if pooling == "cls" and self.model_type in NO_CLS_TOKEN:
            raise SbeError(
                f"hf:{source} ({self.model_type}) has no class token; use pooler or mean"
            )
        self.pooling = pooling
        self.gem_p = check_gem_p(gem_p)
        self.preprocess = preprocess_from_processor_config(
            self._processor_config(), image_size=getattr(vc, "image_size", None)
        )
        #: the processor's own crop (the size the model was trained at)
        self.native_crop = self.preprocess.crop
        if image_size and image_size != self.preprocess.crop:
            self.preprocess = rescaled_preprocess(self.preprocess, image_size)

    def _processor_config(self) -> dict[str, Any]:
        if self.local:
            local = Path(self.source) / "preprocessor_config.json"
            path: str | None = str(local) if local.is_file() else None
        else:
            from transformers.utils import cached_file

            path = cached_file(
                self.source,
                "preprocessor_config.json",
                revision=self.revision,
                _raise_exceptions_for_missing_entries=False,
            )
        if path is None:
            warnings.warn(
                f"hf:{self.source} has no preprocessor_config.json: resizing to the model's "
                "image_size with ImageNet mean/std",
                stacklevel=3,
            )
            return {}
        return json.loads(Path(path).read_text())

    def identity(self) -> dict[str, Any]:
        return self._identity(
            num_prefix_tokens=self.num_prefix_tokens,
            model_type=self.model_type,
            revision=self.revision,
        )

    def weights_fingerprint(self) -> str:
        if not self.local:
            return f"revision:{self.revision}"
        root = Path(self.source)
        files = sorted(
            p
            for p in root.iterdir()
            if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".pt", ".pth")
        )
        return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)

    def _load_model(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        from transformers import AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        # A two-tower checkpoint (CLIP, SigLIP): load only the vision tower's class, which reads
        # its weights out of the full checkpoint and leaves the text tower on disk.
        cls = AutoModel
        if self.vision_config is not self.config:
            # transformers types the mapping's values as any auto class's (tokenizer pairs too);
            # this one holds model classes, used here only through AutoModel's from_pretrained call.
            cls = cast("type[AutoModel]", MODEL_MAPPING.get(type(self.vision_config), AutoModel))
        dtype_kwarg: dict[str, Any] = {_dtype_kwarg(): dtype}
        try:
            with quiet_transformers():
                model, info = cls.from_pretrained(
                    self.source,
                    revision=self.revision,
                    output_loading_info=True,
                    **dtype_kwarg,
                )
        except (OSError, ValueError) as e:
            raise SbeError(f"cannot load hf:{self.source}: {e}") from None
        missing = [k for k in info.get("missing_keys", []) if k]
        # A missing pooler only matters when it is used (ViT checkpoints often lack one).
        if self.pooling != "pooler":
            missing = [k for k in missing if "pooler" not in k and "head" not in k]
        if missing:
            raise SbeError(
                f"hf:{self.source}: weights missing for {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                "they would be random"
            )
        if (
            hasattr(model, "vision_model")
            and cls is AutoModel
            and self.vision_config is not self.config
        ):
            model = model.vision_model
        return model.to(device).eval().requires_grad_(False)

    def build(self, device: torch.device, dtype: torch.dtype = torch.float32) -> HFEncoder:
        model = self._load_model(device, dtype)
        image_size = getattr(self.vision_config, "image_size", None)
        accepts = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        interpolate = accepts and image_size is not None and int(image_size) != self.preprocess.crop
        enc = HFEncoder(
            model,
            self.preprocess,
            self.dim,
            self.pooling,
            self.num_prefix_tokens,
            interpolate,
            self.gem_p,
        ).to(device)
        enc.normalize.float()
        self._check(enc, device)
        return enc

    def _check(self, enc: HFEncoder, device: torch.device) -> None:
        """One tiny forward: the dim and the prefix-token count must be what the config says."""
        crop = self.preprocess.crop
        x = torch.zeros((1, crop, crop, 3), dtype=torch.uint8, device=device)
        with torch.inference_mode():
            try:
                out = enc.model(
                    pixel_values=enc.normalize(x).to(next(enc.model.parameters()).dtype),
                    return_dict=True,
                    **enc._kwargs,
                )
            except (RuntimeError, ValueError) as e:
                if crop == self.native_crop:
                    raise
                # e.g. fixed position embeddings the model cannot interpolate
                raise SbeError(
                    f"hf:{self.source} does not run at image_size {crop} "
                    f"({str(e).splitlines()[0][:200]}); use image_size 0 "
                    f"(its processor's {self.native_crop} px)"
                ) from None
            try:
                feats = enc(x)
            except ValueError as e:
                raise SbeError(f"hf:{self.source}: {e}") from None
        if feats.shape[-1] != self.dim:
            raise SbeError(
                f"hf:{self.source}: features are {feats.shape[-1]}-d, config says {self.dim}"
            )
        hidden = out.last_hidden_state
        patch = getattr(self.vision_config, "patch_size", None)
        if hidden.dim() == 3 and isinstance(patch, int) and self.pooling != "pooler":
            n_patches = (crop // patch) ** 2
            prefix = hidden.shape[1] - n_patches
            if prefix != self.num_prefix_tokens:
                raise SbeError(
                    f"hf:{self.source}: {prefix} tokens precede the {n_patches} patch tokens, "
                    f"expected {self.num_prefix_tokens}; use pooling 'pooler'"
                )

    def num_parameters(self) -> int | None:
        return None
