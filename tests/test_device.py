"""sbe.device: the one device resolver and the affinity-aware core count."""

from __future__ import annotations

import os

import pytest
import torch

from sbe.device import resolve_device, usable_cores
from sbe.errors import SbeError


def test_auto_and_cpu() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_missing_gpu_is_a_clear_error(name: str) -> None:
    with pytest.raises(SbeError, match="sees no GPU"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "mps"])
def test_unknown_device(name: str) -> None:
    with pytest.raises(SbeError, match="device"):
        resolve_device(name)


def test_every_copy_is_the_same_function() -> None:
    from sbe.geo import trainer
    from sbe.models.backbones import eager
    from sbe.models.published import embedder
    from sbe.training import loop

    for mod in (trainer, eager, embedder, loop):
        assert mod.resolve_device is resolve_device


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_usable_cores_follows_affinity() -> None:
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(old)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, old)
    assert usable_cores() == len(old)
