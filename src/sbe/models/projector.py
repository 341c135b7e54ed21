"""The projection head: backbone embedding -> L2-normalised identity embedding.

An MLP (``num_hidden_layers`` blocks of Linear -> optional LayerNorm -> activation -> Dropout,
then a Linear to ``output_dim``) plus an optional residual linear path from the input straight to
the output, followed by L2 normalisation. The residual path lets the head keep the backbone's
generic features (useful on photos unlike the training data) while the MLP learns corrections.

Saved like a Hugging Face model: ``config.json`` (the architecture, read back on load, never
guessed from tensor shapes) and ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from sbe.modelcode.layers_sbe import ACTIVATIONS, SbeProjector
from sbe.storage import atomic_path

__all__ = ["ACTIVATIONS", "CONFIG_NAME", "WEIGHTS_NAME", "Projector", "ProjectorConfig"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ProjectorConfig(BaseModel):
    """Architecture of a :class:`Projector` (JSON-serialisable; ``config.json`` on disk).

    Attributes:
        input_dim: backbone embedding size D.
        output_dim: identity embedding size.
        hidden_dim: width of every hidden block.
        num_hidden_layers: hidden blocks; 0 makes the MLP a single Linear(D -> output_dim).
        activation: non-linearity of the hidden blocks.
        dropout: dropout after each hidden activation (training only).
        layer_norm: LayerNorm after each hidden Linear.
        residual: add a Linear(D -> output_dim) path from the input to the MLP output.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: Literal["sbe-projector"] = "sbe-projector"
    input_dim: int = Field(ge=1)
    output_dim: int = Field(256, ge=2)
    hidden_dim: int = Field(1024, ge=1)
    num_hidden_layers: int = Field(1, ge=0)
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    dropout: float = Field(0.1, ge=0, lt=1)
    layer_norm: bool = True
    residual: bool = True

    def save(self, directory: str | os.PathLike[str]) -> None:
        with atomic_path(Path(directory) / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(self.model_dump(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ProjectorConfig:
        return cls.model_validate_json((Path(directory) / CONFIG_NAME).read_text())


class Projector(SbeProjector):
    """MLP projection head with an optional residual linear path; output is L2-normalised.

    The layers and ``forward`` are :class:`sbe.modelcode.layers_sbe.SbeProjector` (the
    copy shipped with published models); this class adds the typed config, batched numpy
    projection and saving.

    Example:
        >>> head = Projector(ProjectorConfig(input_dim=1280))
        >>> z = head(torch.randn(8, 1280))  # (8, 256), unit rows
    """

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__(config.model_dump())
        self.config = config

    @property
    def output_layer(self) -> nn.Linear:
        """The MLP's last Linear (its output is added to the residual path)."""
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        return last

    @torch.no_grad()
    def project(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Project a numpy matrix in batches (eval mode, no gradients).

        Args:
            x: array (N, input_dim), any float dtype (float16 storage is fine).
            batch_size: rows per forward pass.

        Returns:
            float32 array (N, output_dim), unit rows.
        """
        if x.ndim != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"expected shape (N, {self.config.input_dim}), got {x.shape}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = np.empty((len(x), self.config.output_dim), dtype=np.float32)
        try:
            for s in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size]))
                out[s : s + len(xb)] = self(xb.to(device).float()).cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], device: str | torch.device = "cpu"
    ) -> Projector:
        """Rebuild the architecture from ``config.json`` and load ``model.safetensors`` strictly."""
        directory = Path(directory)
        model = cls(ProjectorConfig.load(directory))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device="cpu"), strict=True)
        return model.to(device).eval()
