"""EfficientNet-Lite, the offline default: input scaling, ONNX agreement, caches, identity."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import LANDMARKS

from sbe.data.images import decode_rgb
from sbe.errors import SbeError
from sbe.models.backbones import EfficientNetLiteBackbone, load_backbone, resolve_spec
from sbe.models.backbones import efficientnet as eff
from sbe.models.backbones.cache import cache_dir
from sbe.models.backbones.onnx import OnnxBackbone
from sbe.training.metrics import retrieval_metrics


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBE_CACHE", str(tmp_path_factory.getbasetemp() / "sbe-cache"))
        yield


@pytest.fixture(scope="module")
def landmarks():
    """The 26 real landmark photos (6 identities) as RGB images, with integer labels."""
    if not LANDMARKS.is_dir():
        pytest.skip(f"landmarks-mini not found at {LANDMARKS}")
    with open(LANDMARKS / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    # reduced-scale JPEG decode: the Berlin photos are 3264 px wide, the model needs 260 at most
    images = [decode_rgb((LANDMARKS / r["path"]).read_bytes(), min_side=260) for r in rows]
    labels = np.unique([r["landmark"] for r in rows], return_inverse=True)[1]
    return images, labels


def test_stem_batchnorm_statistics_confirm_tflite_scaling(landmarks):
    """The stem BatchNorm's running stats match photos scaled (x-127)/128, not ImageNet's."""
    images, _ = landmarks
    pp = eff.default_preprocess("efficientnet-lite0")
    batch = np.stack([pp.apply(im) for im in images])
    lite = eff.stem_statistics_gap("efficientnet-lite0", batch, eff.LITE_MEAN, eff.LITE_STD)
    imnet = eff.stem_statistics_gap(
        "efficientnet-lite0", batch, eff.IMAGENET_MEAN, eff.IMAGENET_STD
    )
    assert lite["mean_shift"] < 0.5 * imnet["mean_shift"]
    assert lite["log_std_ratio"] < 0.5 * imnet["log_std_ratio"]
    assert pp.mean == eff.LITE_MEAN and pp.std == eff.LITE_STD


@pytest.mark.slow  # exports EfficientNet-Lite0 to ONNX on a cold cache (~5 s)
def test_default_backbone_retrieves_landmarks(landmarks):
    images, labels = landmarks
    bb = load_backbone("efficientnet-lite0", device="cpu")
    assert isinstance(bb, OnnxBackbone) and bb.dim == 1280
    vecs = bb.embed_pil(images)
    m = retrieval_metrics(vecs, labels, ks=(1,), full_map=True)
    # leave-one-out on 26 photos of 6 landmarks; chance P@1 is about 0.2
    assert m["recall@1"] >= 0.8 and m["map"] >= 0.75


def test_onnx_agrees_with_torch_on_real_photos(landmarks):
    images, _ = landmarks
    onnx_bb = load_backbone("efficientnet-lite0", runtime="onnx", device="cpu")
    torch_bb = load_backbone("efficientnet-lite0", runtime="torch", device="cpu")
    batch = np.stack([onnx_bb.preprocess.apply(im) for im in images[:6]])
    a, b = onnx_bb.embed(batch), torch_bb.embed(batch)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.9999
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_pooling_choices_and_identity():
    spec = resolve_spec("efficientnet-lite0")
    assert spec.identity()["pooling"] == "mean"
    gem = load_backbone("efficientnet-lite0", runtime="torch", device="cpu", pooling="gem")
    mean = EfficientNetLiteBackbone("efficientnet-lite0", device="cpu")
    x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    g, m = gem.embed(x), mean.embed(x)
    assert g.shape == m.shape == (2, 1280)
    # GeM (p=3) lies between the mean and the max of each channel: never below the mean
    assert (g >= m - 1e-4).all() and not np.allclose(g, m)
    rebuilt = load_backbone(gem.identity(), runtime="torch", device="cpu")
    np.testing.assert_allclose(rebuilt.embed(x), g, rtol=1e-5, atol=1e-6)
    with pytest.raises(SbeError, match="pools with"):
        resolve_spec("efficientnet-lite0", pooling="cls")
    with pytest.raises(SbeError, match="variant"):
        eff.EfficientNetSpec("efficientnet-lite9")


def test_weights_are_cached_as_safetensors(monkeypatch):
    eff.load_state_dict("efficientnet-lite0")
    cached = list(cache_dir("weights").glob("efficientnet-lite0-*.safetensors"))
    assert len(cached) == 1

    def no_unpickling(*a, **k):
        raise AssertionError("torch.load must not run once the safetensors copy exists")

    monkeypatch.setattr(torch, "load", no_unpickling)
    state = eff.load_state_dict("efficientnet-lite0")
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
