from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sbe.models.projector import Projector, ProjectorConfig


@pytest.mark.parametrize(
    ("layers", "layer_norm", "residual", "activation"),
    [(0, False, False, "relu"), (1, True, True, "gelu"), (3, False, True, "silu")],
)
def test_forward_shape_and_unit_norm(
    layers: int, layer_norm: bool, residual: bool, activation: str
) -> None:
    cfg = ProjectorConfig(
        input_dim=12,
        output_dim=5,
        hidden_dim=7,
        num_hidden_layers=layers,
        layer_norm=layer_norm,
        residual=residual,
        activation=activation,
    )
    head = Projector(cfg)
    z = head(torch.randn(9, 12))
    assert z.shape == (9, 5)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(9))
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in head.modules())
    assert n_linear == layers + 1 + int(residual)
    assert (head.residual is not None) == residual
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in head.modules()) == (
        layers if layer_norm else 0
    )


def test_save_load_round_trip_reads_architecture_from_config(tmp_path: Path) -> None:
    cfg = ProjectorConfig(
        input_dim=10, output_dim=4, hidden_dim=6, num_hidden_layers=2, activation="silu"
    )
    head = Projector(cfg).eval()
    head.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and saved["activation"] == "silu"
    assert (tmp_path / "model.safetensors").is_file()
    loaded = Projector.from_pretrained(tmp_path)
    assert loaded.config == cfg
    x = np.random.default_rng(0).standard_normal((5, 10)).astype(np.float16)
    np.testing.assert_allclose(loaded.project(x), head.project(x), atol=1e-6)
    assert not list(tmp_path.glob(".tmp-*"))


def test_load_refuses_weights_that_do_not_match_config(tmp_path: Path) -> None:
    Projector(ProjectorConfig(input_dim=10, output_dim=4, hidden_dim=6)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_dim"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="size mismatch"):
        Projector.from_pretrained(tmp_path)


def test_project_batches_and_keeps_training_mode() -> None:
    head = Projector(ProjectorConfig(input_dim=8, output_dim=3, hidden_dim=4, dropout=0.5))
    head.train()
    x = np.random.default_rng(1).standard_normal((23, 8)).astype(np.float32)
    a = head.project(x, batch_size=5)
    b = head.project(x, batch_size=100)
    assert a.dtype == np.float32 and a.shape == (23, 3)
    np.testing.assert_allclose(a, b, atol=1e-6)  # eval mode: dropout off, batching irrelevant
    assert head.training
    with pytest.raises(ValueError, match="expected shape"):
        head.project(x[:, :4])


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        ProjectorConfig(input_dim=4, hidden=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ProjectorConfig(input_dim=4, activation="tanh")  # type: ignore[arg-type]
