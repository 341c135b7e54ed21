"""Shared fixtures: small generated data only, so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
LANDMARKS = SHARED / "data" / "landmarks-mini"

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def landmarks_dir() -> Path:
    if not LANDMARKS.is_dir():
        pytest.skip(f"landmarks-mini not found at {LANDMARKS}")
    return LANDMARKS
