"""Write a published model folder: HF config + code, projector (and geo heads) in safetensors,
preprocessor config, model card, and optionally a bundled copy of the backbone weights.

The folder is assembled by the caller in a temporary location and swapped into place whole.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sbe.modelcode import configuration_sbe, layers_sbe, modeling_sbe, processing_sbe
from sbe.modelcode.configuration_sbe import SbeEmbeddingConfig
from sbe.modelcode.modeling_sbe import (
    EFFICIENTNET_VARIANTS,
    HF_PREFIX,
    SbeEmbeddingModel,
)
from sbe.models.backbones.hf import quiet_transformers
from sbe.storage.artifacts import ModelDir

WEIGHTS_NAME = ModelDir.WEIGHTS
PREPROCESSOR_NAME = ModelDir.PREPROCESSOR
CARD_NAME = ModelDir.CARD
BACKBONE_DIR = ModelDir.BACKBONE
GEO_DIR = ModelDir.GEO
CODE_FILES = tuple(
    Path(m.__file__)
    for m in (configuration_sbe, layers_sbe, processing_sbe, modeling_sbe)
    if m.__file__
)

AUTO_MAP = {
    "AutoConfig": "configuration_sbe.SbeEmbeddingConfig",
    "AutoModel": "modeling_sbe.SbeEmbeddingModel",
}
_RESAMPLE_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}


def preprocessor_config(preprocess: dict[str, Any]) -> dict[str, Any]:
    """A ``BitImageProcessor`` config equivalent to the backbone's preprocessing.

    ``AutoImageProcessor.from_pretrained(folder)`` loads it; mean and std are rescaled from 0-255
    units to the processor's 0-1 units.
    """
    resize, crop = int(preprocess["resize"]), int(preprocess["crop"])
    squash = preprocess.get("resize_mode", "short_side") == "squash"
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": resize, "width": resize} if squash else {"shortest_edge": resize},
        "resample": _RESAMPLE_CODES[preprocess.get("resample", "bilinear")],
        "do_center_crop": True,
        "crop_size": {"height": crop, "width": crop},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) / 255 for m in preprocess["mean"]],
        "image_std": [float(s) / 255 for s in preprocess["std"]],
    }


def make_config(
    backbone: dict[str, Any],
    projector: dict[str, Any],
    geo: dict[str, Any] | None = None,
    bundled: bool = False,
) -> SbeEmbeddingConfig:
    """The HF config of a published model (validated; raises ``ValueError`` when inconsistent)."""
    cfg = SbeEmbeddingConfig(
        backbone=backbone,
        projector=projector,
        geo=geo,
        backbone_bundled=BACKBONE_DIR if bundled else None,
    )
    cfg.auto_map = dict(AUTO_MAP)
    cfg.architectures = ["SbeEmbeddingModel"]
    cfg.check()
    return cfg


def bundle_backbone(identity: dict[str, Any], dest: Path) -> None:
    """Copy the backbone's weights into ``dest`` (safetensors only, never pickles).

    Args:
        identity: the backbone identity (``efficientnet-lite*`` or ``hf:<id or path>``).
        dest: the folder to create (``<model>/backbone``).
    """
    name = identity["name"]
    dest.mkdir(parents=True, exist_ok=True)
    if name in EFFICIENTNET_VARIANTS:
        _, package, cls_name = EFFICIENTNET_VARIANTS[name]
        path = getattr(importlib.import_module(package), cls_name).get_model_file_path()
        # weights_only=True: a restricted unpickler that loads tensors and refuses code.
        state = torch.load(path, map_location="cpu", weights_only=True)
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(dest / f"{name}.safetensors"),
            metadata={"format": "pt", "source": Path(path).name},
        )
    elif name.startswith(HF_PREFIX):
        from transformers import AutoModel
        from transformers.utils import cached_file

        source = name[len(HF_PREFIX) :]
        revision = identity.get("revision")
        model = AutoModel.from_pretrained(source, revision=revision)
        model.save_pretrained(dest, safe_serialization=True)
        # the input preparation travels with the weights, so the copy describes itself
        prep = cached_file(
            source,
            PREPROCESSOR_NAME,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
        )
        if prep is not None:
            shutil.copyfile(prep, dest / PREPROCESSOR_NAME)
    else:
        raise ValueError(f"cannot bundle unknown backbone {name!r}")


def write_folder(
    dest: Path,
    *,
    config: SbeEmbeddingConfig,
    projector_state: dict[str, torch.Tensor],
    card: str,
    geo_dir: Path | None = None,
    bundle: bool = False,
) -> None:
    """Write every file of a published model into the (new, empty) folder ``dest``.

    Args:
        dest: target folder (created).
        config: from :func:`make_config`.
        projector_state: the projector's state dict (keys as in ``Projector.state_dict()``).
        card: the model card Markdown.
        geo_dir: folder with the geo heads' ``config.json`` + ``model.safetensors`` to include.
        bundle: also copy the backbone weights into ``backbone/``.
    """
    dest.mkdir(parents=True, exist_ok=False)
    config.save_pretrained(dest)
    for f in CODE_FILES:
        shutil.copyfile(f, dest / f.name)
    save_file(
        {f"projector.{k}": v.detach().cpu().contiguous() for k, v in projector_state.items()},
        str(dest / WEIGHTS_NAME),
        metadata={"format": "pt"},
    )
    (dest / PREPROCESSOR_NAME).write_text(
        json.dumps(preprocessor_config(config.backbone["preprocess"]), indent=2) + "\n"
    )
    (dest / CARD_NAME).write_text(card)
    if geo_dir is not None:
        (dest / GEO_DIR).mkdir()
        for name in ("config.json", WEIGHTS_NAME):
            shutil.copyfile(geo_dir / name, dest / GEO_DIR / name)
    if bundle:
        bundle_backbone(config.backbone, dest / BACKBONE_DIR)


def verify_projector(folder: Path, reference: torch.nn.Module, input_dim: int) -> float:
    """Load the folder's model (installed classes) and compare its head with ``reference``.

    Returns:
        The largest absolute difference of the two heads' outputs on random inputs.

    Raises:
        ValueError: the folder does not load strictly or its head computes something else.
    """
    with quiet_transformers():
        model = SbeEmbeddingModel.from_pretrained(str(folder))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((16, input_dim)).astype("f4"))
    with torch.no_grad():
        got = model(backbone_embeddings=x).embeddings
        want = reference.eval()(x)
    diff = float((got - want).abs().max())
    if not diff <= 1e-5:
        raise ValueError(
            f"the published head differs from the trained projector (max |diff| {diff})"
        )
    saved = load_file(str(folder / WEIGHTS_NAME))
    if len(saved) != len(reference.state_dict()):
        raise ValueError("the published weights do not cover the trained projector exactly")
    return diff
