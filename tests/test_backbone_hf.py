"""``hf:`` backbones on tiny randomly initialised models saved to a temp dir (nothing downloaded)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sbe.errors import SbeError
from sbe.models.backbones import load_backbone, resolve_spec
from sbe.models.backbones import onnx as onnx_rt
from sbe.models.backbones.eager import TorchBackbone
from sbe.models.backbones.onnx import OnnxBackbone, OnnxExportError, probe_images

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
BIT = {
    "image_processor_type": "BitImageProcessor",
    "size": {"shortest_edge": 64},
    "crop_size": {"height": 56, "width": 56},
    "do_center_crop": True,
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    **IMAGENET,
}


@pytest.fixture(autouse=True, scope="module")
def _offline_and_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("SBE_CACHE", str(tmp_path_factory.getbasetemp() / "sbe-cache"))
        yield


def _save(root: Path, name: str, model, processor) -> Path:
    d = root / name
    model.save_pretrained(d)
    if isinstance(processor, dict):
        (d / "preprocessor_config.json").write_text(json.dumps(processor))
    elif processor is not None:  # a transformers image processor: its own saved format
        processor.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny DINOv2 (+registers), DINOv3, CLIP (tower and full), SigLIP and ViT checkpoints."""
    import transformers as tf

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    clip_text = dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    square64 = lambda t: {"image_processor_type": t, "size": {"height": 64, "width": 64}}  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            # image_size 70 != crop 56: the position embeddings are interpolated, as for real
            # DINOv2 checkpoints (518 px native, 224 px crop).
            "dinov2": (
                tf.Dinov2Model(tf.Dinov2Config(**SMALL, image_size=70, patch_size=14)),
                tf.BitImageProcessorPil(
                    size={"shortest_edge": 64},
                    crop_size={"height": 56, "width": 56},
                    do_center_crop=True,
                    resample=3,
                    **IMAGENET,
                ),
            ),
            "dinov2reg": (
                tf.Dinov2WithRegistersModel(
                    tf.Dinov2WithRegistersConfig(
                        **SMALL, image_size=56, patch_size=14, num_register_tokens=4
                    )
                ),
                BIT,
            ),
            "dinov3": (
                tf.DINOv3ViTModel(
                    tf.DINOv3ViTConfig(**SMALL, image_size=64, patch_size=16, num_register_tokens=4)
                ),
                {**square64("DINOv3ViTImageProcessorFast"), "resample": 2, **IMAGENET},
            ),
            "clip_vision": (
                tf.CLIPVisionModel(tf.CLIPVisionConfig(**SMALL, image_size=64, patch_size=16)),
                {
                    "image_processor_type": "CLIPImageProcessor",
                    "size": {"shortest_edge": 64},
                    "crop_size": {"height": 64, "width": 64},
                },
            ),
            "clip_full": (
                tf.CLIPModel(
                    tf.CLIPConfig(
                        vision_config=dict(**SMALL, image_size=64, patch_size=16),
                        text_config=clip_text,
                    )
                ),
                {
                    "image_processor_type": "CLIPImageProcessor",
                    "size": {"shortest_edge": 64},
                    "crop_size": {"height": 64, "width": 64},
                },
            ),
            "siglip": (
                tf.SiglipVisionModel(tf.SiglipVisionConfig(**SMALL, image_size=64, patch_size=16)),
                square64("SiglipImageProcessor"),
            ),
            "vit": (
                tf.ViTModel(tf.ViTConfig(**SMALL, image_size=64, patch_size=16)),
                square64("ViTImageProcessor"),
            ),
        }
        return {k: _save(root, k, m, p) for k, (m, p) in models.items()}


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize(
    "family, pooling, prefix",
    [
        ("dinov2", "cls", 1),
        ("dinov2reg", "cls", 5),
        ("dinov3", "cls", 5),
        ("clip_vision", "pooler", 1),
        ("clip_full", "pooler", 1),
        ("siglip", "pooler", 0),
        ("vit", "cls", 1),
    ],
)
def test_every_family_embeds_with_auto_pooling(tiny, family, pooling, prefix):
    bb = load_backbone(f"hf:{tiny[family]}", runtime="torch", device="cpu")
    ident = bb.identity()
    assert (ident["pooling"], ident["num_prefix_tokens"], ident["dim"]) == (pooling, prefix, 64)
    assert json.loads(json.dumps(ident)) == ident
    x = probe_images(3, bb.preprocess.crop)
    v = bb.embed(x)
    assert v.shape == (3, 64) and v.dtype == np.float32 and np.isfinite(v).all()
    assert _cos(v[:1], v[1:2])[0] < 0.9999  # different images, different vectors


@pytest.mark.parametrize(
    "family", ["dinov2", "dinov3", "siglip", pytest.param("dinov2reg", marks=pytest.mark.slow)]
)
def test_onnx_export_agrees_with_torch(tiny, family):
    # dinov2reg interpolates position embeddings with an antialiased bicubic resize that the
    # TorchScript exporter lacks: it exercises the dynamo fallback.
    bt = load_backbone(f"hf:{tiny[family]}", runtime="torch", device="cpu")
    bo = load_backbone(bt.identity(), runtime="onnx", device="cpu")
    assert isinstance(bo, OnnxBackbone) and bo.path.is_file()
    x = probe_images(5, bt.preprocess.crop, seed=7)
    assert _cos(bt.embed(x), bo.embed(x)).min() >= 0.9999
    # a second load reuses the verified export from the cache
    again = load_backbone(f"hf:{tiny[family]}", runtime="onnx", device="cpu")
    assert again.path == bo.path


def test_preprocess_comes_from_the_processor_config(tiny):
    spec = resolve_spec(f"hf:{tiny['dinov2']}")
    pp = spec.preprocess
    assert (pp.resize, pp.crop, pp.resize_mode, pp.resample) == (64, 56, "short_side", "bicubic")
    np.testing.assert_allclose(pp.mean, [123.675, 116.28, 103.53], rtol=1e-6)


def test_pooling_modes_are_what_they_claim(tiny):
    """cls / mean / gem / pooler against the transformers model run by hand."""
    from transformers import AutoModel

    path = tiny["dinov2reg"]
    x = probe_images(2, 56, seed=3)
    model = AutoModel.from_pretrained(path).eval()
    spec = resolve_spec(f"hf:{path}")
    mean = torch.tensor(spec.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.preprocess.std).view(1, 3, 1, 1)
    pix = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std
    with torch.inference_mode():
        out = model(pixel_values=pix)
    h = out.last_hidden_state  # CLS, 4 registers, 16 patches
    assert h.shape[1] == 1 + 4 + 16
    expected = {
        "cls": h[:, 0],
        "pooler": out.pooler_output,
        "mean": h[:, 5:].mean(1),
        "gem": h[:, 5:].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3),
    }
    got = {}
    for mode, want in expected.items():
        bb = load_backbone(f"hf:{path}", runtime="torch", device="cpu", pooling=mode)
        assert bb.identity()["pooling"] == mode
        got[mode] = bb.embed(x)
        np.testing.assert_allclose(got[mode], want.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got["mean"], got["cls"])
    # the registers are excluded: the mean over all non-CLS tokens differs
    assert not np.allclose(got["mean"], h[:, 1:].mean(1).numpy(), atol=1e-4)


def test_full_clip_checkpoint_uses_its_vision_tower(tiny):
    from transformers import CLIPModel

    x = probe_images(2, 64, seed=5)
    bb = load_backbone(f"hf:{tiny['clip_full']}", runtime="torch", device="cpu")
    full = CLIPModel.from_pretrained(tiny["clip_full"]).eval()
    pp = bb.preprocess
    mean = torch.tensor(pp.mean).view(1, 3, 1, 1)
    std = torch.tensor(pp.std).view(1, 3, 1, 1)
    pix = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std
    with torch.inference_mode():
        want = full.vision_model(pixel_values=pix).pooler_output.numpy()
    np.testing.assert_allclose(bb.embed(x), want, rtol=1e-4, atol=1e-5)


def test_identity_rebuilds_and_detects_changed_files(tiny, tmp_path):
    import shutil

    src = tmp_path / "model"
    shutil.copytree(tiny["vit"], src)
    bb = load_backbone(f"hf:{src}", runtime="torch", device="cpu", pooling="mean")
    ident = bb.identity()
    x = probe_images(2, 64)
    again = load_backbone(ident, runtime="torch", device="cpu")
    assert again.identity() == ident
    np.testing.assert_array_equal(again.embed(x), bb.embed(x))
    cfg = json.loads((src / "preprocessor_config.json").read_text())
    cfg["image_mean"] = [0.1, 0.1, 0.1]
    (src / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(SbeError, match="no longer matches"):
        load_backbone(ident, runtime="torch", device="cpu")


def test_bad_requests_are_clear_errors(tiny, tmp_path):
    with pytest.raises(SbeError, match="no class token"):
        resolve_spec(f"hf:{tiny['siglip']}", pooling="cls")
    with pytest.raises(SbeError, match="unknown backbone"):
        resolve_spec("resnet50")
    with pytest.raises(SbeError, match="cannot load"):
        resolve_spec(f"hf:{tmp_path / 'nothing-here'}")
    with pytest.raises(SbeError, match="unknown pooling"):
        resolve_spec(f"hf:{tiny['vit']}", pooling="max")
    with pytest.raises(SbeError, match="runtime"):
        load_backbone(f"hf:{tiny['vit']}", runtime="tensorrt")


def test_a_disagreeing_export_is_refused_and_never_cached(tiny, monkeypatch):
    spec = resolve_spec(f"hf:{tiny['vit']}", pooling="gem")  # an identity not exported before
    path = onnx_rt.cache_path(spec)

    class Wrong:
        def run(self, _names, feeds):
            x = feeds[onnx_rt.INPUT_NAME]
            return [np.random.default_rng(0).normal(size=(len(x), 64)).astype(np.float32)]

    # Both exporters "succeed" (a placeholder file) and both outputs disagree with torch.
    monkeypatch.setattr(onnx_rt, "_export", lambda enc, p, dynamo: Path(p).write_bytes(b"x"))
    monkeypatch.setattr(onnx_rt, "make_session", lambda *a, **k: Wrong())
    with pytest.raises(OnnxExportError, match="cosine"):
        load_backbone(spec, runtime="onnx", device="cpu")
    assert not path.exists() and not list(path.parent.glob(".tmp-*"))
    with pytest.warns(UserWarning, match="running on torch"):
        bb = load_backbone(spec, runtime="auto", device="cpu")
    assert isinstance(bb, TorchBackbone)


def test_cuda_requested_without_gpu_is_a_clear_error(tiny, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SbeError, match="no GPU"):
        load_backbone(f"hf:{tiny['vit']}", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SbeError, match="CPU"):
        load_backbone(f"hf:{tiny['vit']}", runtime="onnx", device="cuda")
