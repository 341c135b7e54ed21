"""INT8 backbone (issue 19): built from tiny images, cached, deterministic, close to fp32."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from sbe.config import BackboneConfig, EmbedConfig
from sbe.errors import SbeError
from sbe.models.backbones import int8 as q
from sbe.models.backbones import load_backbone, resolve_spec
from sbe.models.backbones.onnx import OnnxBackbone, probe_images
from sbe.storage import config_hash


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBE_CACHE", str(tmp_path_factory.mktemp("sbe-cache")))
        yield


def tiny_jpegs(n: int, seed: int) -> list[bytes]:
    """``n`` photo-like 64x48 JPEGs (the model upsamples them to 224)."""
    out = []
    for img in probe_images(n, 64, seed=seed):
        buf = io.BytesIO()
        Image.fromarray(img[:48]).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def spec():
    return resolve_spec("efficientnet-lite0")


@pytest.fixture(scope="module")
def sample(spec):
    data = tiny_jpegs(10, seed=5)
    return q.calibration_sample(len(data), data.__getitem__, spec.preprocess, size=8)


@pytest.fixture(scope="module")
def quantised(spec, sample):
    path, digest = q.quantize_verified(spec, sample)
    return path, digest


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibration_sample_is_seeded_and_sized(spec):
    a, b = q.calibration_indices(100, 8, seed=0), q.calibration_indices(100, 8, seed=0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 8 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, q.calibration_indices(100, 8, seed=1))
    assert np.array_equal(q.calibration_indices(5, 8), np.arange(5))
    data = tiny_jpegs(10, seed=5)
    s = q.calibration_sample(len(data), data.__getitem__, spec.preprocess, size=8)
    assert s.shape == (8, 224, 224, 3) and s.dtype == np.uint8
    again = q.calibration_sample(len(data), data.__getitem__, spec.preprocess, size=8)
    assert q.calibration_digest(s) == q.calibration_digest(again)


def test_undecodable_images_are_left_out(spec):
    data = [*tiny_jpegs(3, seed=1), b"not a jpeg"]
    s = q.calibration_sample(len(data), data.__getitem__, spec.preprocess, size=4)
    assert len(s) == 3
    with pytest.raises(SbeError, match="no decodable image"):
        q.calibration_sample(2, lambda i: b"junk", spec.preprocess, size=2)


def test_quantised_model_is_cached_and_deterministic(spec, sample, quantised, monkeypatch):
    path, digest = quantised
    assert path.is_file() and digest == q.calibration_digest(sample)
    assert path == q.int8_cache_path(spec, digest)
    first = _sha(path)

    # a cache hit does not quantise again, with the images or with the digest alone
    def boom(*a, **k):
        raise AssertionError("quantised again on a cache hit")

    monkeypatch.setattr(q, "_quantize", boom)
    assert q.quantize_verified(spec, sample) == (path, digest)
    assert q.quantize_verified(spec, calibration=digest) == (path, digest)
    monkeypatch.undo()

    # rebuilding from the same images gives the same file
    path.unlink()
    again, _ = q.quantize_verified(spec, sample)
    assert again == path and _sha(again) == first

    # a different calibration sample is a different cache entry
    other = sample[::-1].copy()
    assert q.int8_cache_path(spec, q.calibration_digest(other)) != path


def test_int8_is_close_to_fp32_and_reloads_by_digest(spec, sample, quantised):
    _, digest = quantised
    fp32 = load_backbone(spec, runtime="onnx", device="cpu")
    i8 = load_backbone(spec, device="cpu", precision="int8", calibration=sample)
    assert isinstance(i8, OnnxBackbone) and (i8.precision, i8.calibration) == ("int8", digest)
    assert fp32.precision == "fp32" and fp32.calibration is None
    assert i8.identity() == fp32.identity()  # the network; precision is a load option
    x = probe_images(6, 224, seed=11)  # not in the calibration sample
    a, b = fp32.embed(x), i8.embed(x)
    assert b.shape == a.shape == (6, 1280) and b.dtype == np.float32
    assert q.mean_cosine(a, b) >= 0.97
    assert not np.allclose(a, b)  # it really is another graph
    by_digest = load_backbone(spec, device="cpu", precision="int8", calibration=digest)
    assert np.array_equal(by_digest.embed(x), b)  # deterministic, same cached file


def test_int8_needs_calibration_it_can_find(spec):
    with pytest.raises(SbeError, match="needs calibration"):
        load_backbone(spec, device="cpu", precision="int8")
    with pytest.raises(SbeError, match="not in the cache"):
        load_backbone(spec, device="cpu", precision="int8", calibration="0123456789abcdef")
    with pytest.raises(SbeError, match="must be uint8"):
        q.quantize_verified(spec, np.zeros((2, 32, 32, 3), np.uint8))


def test_bad_precision_is_rejected(spec):
    with pytest.raises(SbeError, match="unknown precision 'int4'"):
        load_backbone(spec, device="cpu", precision="int4")
    with pytest.raises(SbeError, match="ONNX Runtime"):
        load_backbone(spec, runtime="torch", device="cpu", precision="int8", calibration="x")
    for cls in (BackboneConfig, EmbedConfig):
        with pytest.raises(ValidationError, match="precision"):
            cls(precision="int4")


@pytest.mark.parametrize("cls", [BackboneConfig, EmbedConfig])
def test_precision_changes_the_config_hash(cls):
    fp32, int8 = cls(), cls(precision="int8")
    assert fp32.precision == "fp32"  # the default (docs/backbone.md has the measurement)
    assert config_hash(fp32.hashed_settings()) != config_hash(int8.hashed_settings())
    more = cls(precision="int8", calibration_images=64)
    assert config_hash(int8.hashed_settings()) != config_hash(more.hashed_settings())


def test_backbone_precision_is_in_the_stage_hash():
    """precision and the calibration size decide the output: both are hashed, threads are not."""
    base = BackboneConfig().hashed_settings()
    assert BackboneConfig(precision="int8").hashed_settings() != base
    assert BackboneConfig(precision="int8", calibration_images=64).hashed_settings() != (
        BackboneConfig(precision="int8").hashed_settings()
    )
    assert BackboneConfig(threads=1).hashed_settings() == base


def test_embed_stage_int8_reembeds_records_the_digest_and_reloads(tmp_path, monkeypatch):
    """sbe embed --precision int8: calibrated on the input, parts redone, digest reloads."""
    import pyarrow.parquet as pq
    from test_publish_fixtures import make_run, packaged_parquet, publish

    from sbe.models.published import load_embedder
    from sbe.stages import embed as stage

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_run(tmp_path / "run", resolve_spec("efficientnet-lite0").identity())
    model = publish(tmp_path / "run", tmp_path / "model")
    inp = packaged_parquet(tmp_path / "p.parquet", 40, row_group_size=7, size=120)
    cfg = EmbedConfig(input=inp, output=tmp_path / "out", model=model)
    m32 = stage.run(cfg)
    int8 = cfg.model_copy(update={"precision": "int8", "calibration_images": 40})
    m8 = stage.run(int8)
    assert m32.extra["precision"] == "fp32" and "calibration" not in m32.extra
    assert m8.extra["precision"] == "int8" and m8.extra["images_this_run"] == 40  # all redone
    assert stage.run(int8).up_to_date
    digest = m8.extra["calibration"]
    data = pq.read_table(inp, columns=["image_bytes"])["image_bytes"].to_pylist()[:5]
    a, _ = load_embedder(model, "cpu").embed_bytes(data)
    b, _ = load_embedder(model, "cpu", precision="int8", calibration=digest).embed_bytes(data)
    assert a.shape == b.shape == (5, 16) and q.mean_cosine(a, b) >= 0.98
    ray = int8.model_copy(update={"engine": "ray", "output": tmp_path / "ray"})
    with pytest.raises(SbeError, match="--engine local"):
        stage.run(ray)
