"""Shared fixtures: small generated data only, so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _landmarks() -> Path:
    """The real-photo folder the tests use (it may not exist: tests then skip or expect the note).

    The library's own variable: ``$SBE_LANDMARKS`` overrides ``../shared/data/landmarks-mini``;
    set it empty to run the suite (and the library's auto-detection, see
    ``sbe.training.evaluation.default_landmarks_dir``) as on a fresh clone without ``../shared``
    (``SBE_LANDMARKS= pytest``).
    """
    env = os.environ.get("SBE_LANDMARKS")
    if env is None:
        return SHARED / "data" / "landmarks-mini"
    return Path(env) if env else Path(__file__).resolve().parent / "no-landmarks-folder"


LANDMARKS = _landmarks()

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only adds barrier waits (badly so on a busy CPU)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def landmarks_dir() -> Path:
    if not LANDMARKS.is_dir():
        pytest.skip(f"landmarks-mini not found at {LANDMARKS} (see $SBE_LANDMARKS)")
    return LANDMARKS


# The ten-city world: the suite's assertions on labelling accuracy and corrupt packaged photos
# were set on it; the gazetteer world (the default) has its own tests (test_synth_world.py,
# test_geo_*) and runs in `make demo`.
TINY_WORLD = """
workdir = "w"
[synth]
places = "cities10"
buildings = 40
image_size = 96
packaged = "packaged_images.parquet"
packaged_buildings = 6
"""
TINY_CONFIG = (
    TINY_WORLD
    + """[split]
cell_size_m = 150
[train]
epochs = 3
[geo]
epochs = 3
[cluster]
k = 3
[evaluate]
landmarks = "{landmarks}"
"""
)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """A whole pipeline run on a tiny synthetic world (about 20-40 s), shared by the session.

    Returns:
        ``(config, outcomes)``: the loaded :class:`sbe.config.SbeConfig` and the stage outcomes.
    """
    from sbe.config import load_config
    from sbe.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("tiny-pipeline")
    path = root / "tiny.toml"
    # the evaluation's real-photo folder is explicit, so the tests see what a fresh clone sees
    path.write_text(TINY_CONFIG.format(landmarks=LANDMARKS.as_posix()))
    cfg = load_config(path)
    outcomes = run_pipeline(cfg, show_progress=False)
    return cfg, outcomes
