from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sbe.models.projector import Projector, ProjectorConfig
from sbe.training.evaluation import (
    backbone_from_identity,
    embed_images,
    landmarks_check,
    read_landmarks,
)


def test_read_landmarks(landmarks_dir: Path) -> None:
    paths, labels, names = read_landmarks(landmarks_dir)
    assert len(paths) == 26 and len(names) == 6
    assert all(p.is_file() for p in paths)
    assert np.bincount(labels).min() >= 2  # every landmark has a second view


def test_landmarks_check_counts_are_consistent(landmarks_dir: Path) -> None:
    _, labels, _ = read_landmarks(landmarks_dir)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 12))
    x = (centres[labels] + 0.9 * rng.standard_normal((26, 12))).astype(np.float32)
    head = Projector(ProjectorConfig(input_dim=12, output_dim=6, hidden_dim=8))
    res = landmarks_check(landmarks_dir, backbone=None, projector=head, cached_embeddings=x)  # type: ignore[arg-type]
    b, p = res["backbone"], res["projector"]
    assert res["images"] == 26 and res["landmarks"] == 6
    assert p["correct@1"] == b["correct@1"] - res["lost"] + res["gained"]
    assert b["p@1"] == pytest.approx(b["correct@1"] / 26)
    # a head that is the identity map on its input cannot change any ranking
    eye = Projector(
        ProjectorConfig(input_dim=12, output_dim=12, num_hidden_layers=0, residual=False)
    )
    with torch.no_grad():
        eye.output_layer.weight.copy_(torch.eye(12))
        eye.output_layer.bias.zero_()
    same = landmarks_check(landmarks_dir, backbone=None, projector=eye, cached_embeddings=x)  # type: ignore[arg-type]
    assert same["lost"] == same["gained"] == 0
    assert same["projector"] == pytest.approx(same["backbone"])


@pytest.mark.slow
def test_real_photos_with_efficientnet_lite0(landmarks_dir: Path) -> None:
    paths, _, _ = read_landmarks(landmarks_dir)
    backbone = backbone_from_identity({"name": "efficientnet-lite0", "dim": 1280})
    x = embed_images(backbone, paths)
    assert x.shape == (26, 1280) and np.isfinite(x).all()
    head = Projector(ProjectorConfig(input_dim=1280))
    res = landmarks_check(landmarks_dir, backbone, head, cached_embeddings=x)
    # the landmarks README measures P@1 0.846 for these features; our decode/crop is close
    assert res["backbone"]["p@1"] >= 0.8
