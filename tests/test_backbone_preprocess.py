"""Backbone input preparation and pooling: pure functions, no model weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sbe.errors import SbeError
from sbe.models.backbones.base import Preprocess
from sbe.models.backbones.hf import preprocess_from_processor_config
from sbe.models.backbones.pooling import gem, pool

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _img(w: int, h: int) -> Image.Image:
    """Left half red, right half blue: the crop position is visible in the output."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2 :, 2] = 255
    return Image.fromarray(a)


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(8, 300),
    h=st.integers(8, 300),
    crop=st.integers(4, 64),
    extra=st.integers(0, 32),
    mode=st.sampled_from(["short_side", "squash"]),
    resample=st.sampled_from(["bilinear", "bicubic", "nearest"]),
)
def test_apply_always_gives_the_crop(w, h, crop, extra, mode, resample):
    pp = Preprocess(crop + extra, crop, (0, 0, 0), (1, 1, 1), resize_mode=mode, resample=resample)
    out = pp.apply(_img(w, h))
    assert out.shape == (crop, crop, 3) and out.dtype == np.uint8


def test_short_side_keeps_aspect_and_centres_the_crop():
    # 400x100 -> short side 50 -> 200x50 -> centre crop 50: the middle, where red meets blue.
    pp = Preprocess(50, 50, (0, 0, 0), (1, 1, 1))
    out = pp.apply(_img(400, 100))
    assert out[:, :20, 0].mean() > 200 and out[:, -20:, 2].mean() > 200
    # squash instead shrinks the whole width into 50 px: still half red, half blue
    sq = Preprocess(50, 50, (0, 0, 0), (1, 1, 1), resize_mode="squash").apply(_img(400, 100))
    assert abs(int((sq[..., 0] > 128).sum()) - int((sq[..., 2] > 128).sum())) < 200


def test_preprocess_round_trips_through_json_dict():
    pp = Preprocess(256, 224, (1.5, 2, 3), (4, 5, 6), resize_mode="squash", resample="bicubic")
    assert Preprocess.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError):
        Preprocess(100, 224, (0, 0, 0), (1, 1, 1))


def test_dinov2_style_processor_config():
    cfg = {
        "image_processor_type": "BitImageProcessor",
        "size": {"shortest_edge": 256},
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        **IMAGENET,
    }
    pp = preprocess_from_processor_config(cfg)
    assert (pp.resize, pp.crop, pp.resize_mode, pp.resample) == (256, 224, "short_side", "bicubic")
    np.testing.assert_allclose(pp.mean, [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(pp.std, [58.395, 57.12, 57.375], rtol=1e-6)


def test_siglip_and_dinov3_style_configs_squash_without_crop():
    sig = preprocess_from_processor_config(
        {"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    )
    assert (sig.resize, sig.crop, sig.resize_mode) == (384, 384, "squash")
    assert sig.mean == (127.5,) * 3 and sig.std == (127.5,) * 3
    # DINOv3's processor needs torchvision: the JSON alone must be enough.
    d3 = preprocess_from_processor_config(
        {
            "image_processor_type": "DINOv3ViTImageProcessorFast",
            "size": {"height": 224, "width": 224},
        }
    )
    assert (d3.resize, d3.crop, d3.resize_mode) == (224, 224, "squash")


def test_missing_keys_take_the_processor_class_defaults():
    # Only the type given: CLIP's class defaults are shortest edge 224, crop 224, CLIP statistics.
    pp = preprocess_from_processor_config({"image_processor_type": "CLIPImageProcessor"})
    assert (pp.resize, pp.crop, pp.resize_mode) == (224, 224, "short_side")
    np.testing.assert_allclose(pp.mean[0], 0.48145466 * 255, rtol=1e-6)


def test_no_normalize_and_no_rescale():
    pp = preprocess_from_processor_config(
        {"size": {"height": 32, "width": 32}, "do_normalize": False, "do_rescale": True}
    )
    assert pp.mean == (0, 0, 0) and pp.std == pytest.approx((255.0,) * 3)
    raw = preprocess_from_processor_config(
        {"size": 32, "do_rescale": False, "image_mean": [100, 100, 100], "image_std": [2, 2, 2]}
    )
    assert raw.mean == (100, 100, 100) and raw.std == (2, 2, 2) and raw.resize == 32


def test_unsupported_processor_settings_are_clear_errors():
    with pytest.raises(SbeError, match="non-square"):
        preprocess_from_processor_config({"size": {"height": 224, "width": 320}})
    with pytest.raises(SbeError, match="do_resize"):
        preprocess_from_processor_config({"do_resize": False})


def test_pool_modes_on_tokens():
    torch.manual_seed(0)
    hidden = torch.randn(2, 1 + 4 + 9, 8)  # CLS, 4 registers, 9 patches
    assert torch.equal(pool(hidden, "cls", num_prefix_tokens=5), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, "mean", num_prefix_tokens=5), hidden[:, 5:].mean(1))
    assert not torch.allclose(pool(hidden, "mean", num_prefix_tokens=1), hidden[:, 5:].mean(1))
    pooled = torch.randn(2, 8)
    assert torch.equal(pool(hidden, "pooler", pooler_output=pooled), pooled)
    with pytest.raises(ValueError, match="pooler"):
        pool(hidden, "pooler")
    with pytest.raises(ValueError, match="class token"):
        pool(hidden, "cls", num_prefix_tokens=0)


def test_gem_between_mean_and_max_and_conv_maps():
    x = torch.rand(3, 10, 4) + 0.01
    g = gem(x, 3.0)
    assert torch.all(g >= x.mean(1) - 1e-6) and torch.all(g <= x.amax(1) + 1e-6)
    torch.testing.assert_close(gem(x, 1.0), x.mean(1))
    fmap = torch.rand(2, 4, 3, 3)
    torch.testing.assert_close(pool(fmap, "mean"), fmap.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="class token"):
        pool(fmap, "cls")
