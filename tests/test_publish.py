"""sbe publish: the model folder loads offline with AutoModel (trust_remote_code) and reproduces
the pipeline's embeddings; the backbone is referenced (loaded once, weights intact) or bundled."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_publish_fixtures import (
    efficientnet_identity,
    hf_identity,
    jpeg,
    make_run,
    publish,
    tiny_dinov2,
)

from sbe.data.images import decode_rgb
from sbe.errors import SbeError
from sbe.geo.predict import predict_geo
from sbe.models.backbones import load_backbone
from sbe.models.projector import Projector
from sbe.models.published import load_embedder
from sbe.models.published.card import backbone_licence, model_licence, render_card

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def auto_model(folder: Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder), trust_remote_code=True)


def pipeline_embedding(data: bytes, identity: dict, run_dir: Path) -> np.ndarray:
    """What the pipeline computes: decode at the backbone's size, backbone (stored as float16),
    then the run's projector."""
    backbone = load_backbone(identity, runtime="torch", device="cpu")
    img = decode_rgb(data, min_side=backbone.preprocess.decode_side)
    feats = backbone.embed(backbone.preprocess.apply(img)[None]).astype(np.float16)
    return Projector.from_pretrained(run_dir / "best").project(feats)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def photo_bytes(landmarks_dir: Path, i: int = 0) -> bytes:
    return sorted(landmarks_dir.rglob("*.jpg"))[i].read_bytes()


@pytest.mark.slow
def test_efficientnet_model_matches_pipeline(tmp_path: Path, landmarks_dir: Path) -> None:
    identity = efficientnet_identity()
    make_run(tmp_path / "run", identity)
    folder = publish(tmp_path / "run", tmp_path / "model")
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "configuration_sbe.py",
        "modeling_sbe.py",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
    } <= names
    assert "backbone" not in names  # referenced, not copied
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["auto_map"]["AutoModel"] == "modeling_sbe.SbeEmbeddingModel"
    assert cfg["model_type"] == "sbe_embedding"

    model = auto_model(folder)
    assert type(model).__module__.startswith("transformers_modules")  # the folder's own code
    # the backbone is not part of the HF state dict, so transformers never initialises it
    assert all(k.startswith("projector.") for k in model.state_dict())
    data = [photo_bytes(landmarks_dir, i) for i in (0, 7)]
    want = np.concatenate([pipeline_embedding(d, identity, tmp_path / "run") for d in data])
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for p, d in zip(paths, data, strict=True):
        p.write_bytes(d)
    got_hf = model.embed_images(paths)  # files: decoded at reduced JPEG scale, like the pipeline
    got_api = load_embedder(folder, "cpu").embed_images(data)
    assert got_hf.shape == got_api.shape == (2, 16)
    assert cosine(got_hf, want).min() >= 0.999
    assert cosine(got_api, want).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(got_api, axis=1), 1.0, atol=1e-5)

    # the loaded backbone's weights are the original ImageNet weights, loaded once
    original = load_backbone(identity, runtime="torch", device="cpu")
    loaded = model.get_backbone()
    assert loaded is model.get_backbone()
    ref = dict(original.encoder.net.state_dict()) if hasattr(original, "encoder") else None
    if ref is None:
        from sbe.models.backbones.efficientnet import load_state_dict

        ref = load_state_dict("efficientnet-lite0")
    got = loaded.net.state_dict()
    shared = [k for k in ref if k in got]
    assert len(shared) > 200
    assert all(torch.equal(ref[k].cpu(), got[k].cpu()) for k in shared)


def test_hf_dinov2_model_matches_pipeline(tmp_path: Path) -> None:
    dino = tiny_dinov2(tmp_path / "dino")
    identity = hf_identity(dino)
    make_run(tmp_path / "run", identity, num_hidden_layers=2, layer_norm=False, dropout=0.0)
    folder = publish(tmp_path / "run", tmp_path / "model")

    rng = np.random.default_rng(3)
    data = [jpeg(rng, size=60) for _ in range(4)]
    want = np.concatenate([pipeline_embedding(d, identity, tmp_path / "run") for d in data])
    model = auto_model(folder)
    assert model._frozen == {}  # nothing loaded before it is needed
    got_hf = model.embed_images([decode_rgb(d) for d in data])
    got_api = load_embedder(folder, "cpu").embed_images(data)
    assert cosine(got_hf, want).min() >= 0.999
    assert cosine(got_api, want).min() >= 0.999

    from transformers import Dinov2Model

    original = Dinov2Model.from_pretrained(str(dino)).state_dict()
    loaded = model.get_backbone().model.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    assert all(k.startswith("projector.") for k in model.state_dict())


def test_bundled_backbone_loads_without_its_source(tmp_path: Path) -> None:
    dino = tiny_dinov2(tmp_path / "dino", seed=5)
    identity = hf_identity(dino)
    make_run(tmp_path / "run", identity)
    folder = publish(tmp_path / "run", tmp_path / "model", bundle_backbone=True)
    from transformers import Dinov2Model

    original = Dinov2Model.from_pretrained(str(dino)).state_dict()
    rng = np.random.default_rng(0)
    data = [jpeg(rng) for _ in range(3)]
    before = load_embedder(folder, "cpu").embed_images(data)
    shutil.rmtree(dino)  # the referenced source is gone; the bundled copy must be used
    assert (folder / "backbone").is_dir()
    assert not list((folder / "backbone").rglob("*.bin"))  # safetensors only
    model = auto_model(folder)
    loaded = model.get_backbone().model.state_dict()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    np.testing.assert_allclose(load_embedder(folder, "cpu").embed_images(data), before, atol=1e-6)

    # without the bundle, the missing source is a clear error
    folder2 = publish(tmp_path / "run", tmp_path / "model2")
    with pytest.raises(SbeError, match="cannot load"):
        load_embedder(folder2, "cpu")


def test_architecture_comes_from_the_saved_config(tmp_path: Path) -> None:
    """Layer count, LayerNorm and dropout shift the parameter names; all must round-trip, and a
    config that disagrees with the weights is refused (never patched up from shapes)."""
    dino = tiny_dinov2(tmp_path / "dino")
    identity = hf_identity(dino)
    x = torch.randn(5, 32)
    for i, kw in enumerate(
        [
            {"num_hidden_layers": 0},
            {"num_hidden_layers": 3, "layer_norm": False, "dropout": 0.0},
            {"num_hidden_layers": 2, "layer_norm": True, "dropout": 0.2, "hidden_dim": 40},
        ]
    ):
        proj = make_run(tmp_path / f"run{i}", identity, **kw)
        folder = publish(tmp_path / f"run{i}", tmp_path / f"model{i}")
        model = load_embedder(folder, "cpu").model
        with torch.no_grad():
            got = model(backbone_embeddings=x).embeddings
            want = proj.eval()(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert model.config.projector == proj.config.model_dump()

    cfg_path = tmp_path / "run2" / "best" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_dim"] = 48  # the weights are 40 wide
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SbeError, match="do not match"):
        publish(tmp_path / "run2", tmp_path / "model_bad")
    bad = tmp_path / "model_bad"  # nothing published: no model file, no manifest
    assert not (bad / "config.json").exists() and not (bad / "_manifest.json").exists()


def test_card_preprocessor_rerun_and_refusals(tmp_path: Path) -> None:
    dino = tiny_dinov2(tmp_path / "dino")
    identity = hf_identity(dino)
    make_run(tmp_path / "run", identity)
    from sbe.config import PublishConfig
    from sbe.stages import publish as stage

    m1 = stage.run(PublishConfig(run=tmp_path / "run", output=tmp_path / "model"))
    folder = tmp_path / "model"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: other")  # unknown data: the restrictive licence
    for number in ("0.7431", "0.6518", "0.5517", "0.8125"):  # from run.json
        assert number in card
    # no manifest says what was read: no made-up data line
    assert "Not recorded" in card and "3D Street View" not in card and "Apache-2.0" in card
    prep = json.loads((folder / "preprocessor_config.json").read_text())
    assert prep["size"] == {"shortest_edge": 32} and prep["crop_size"]["height"] == 28
    np.testing.assert_allclose(prep["image_mean"], [0.485, 0.456, 0.406], atol=1e-9)

    # AutoImageProcessor reads it; its pixels give (nearly) the same embedding
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(str(folder))
    model = auto_model(folder)
    img = decode_rgb(jpeg(np.random.default_rng(1), size=64))
    pixels = proc(images=[img], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        via_proc = model(pixel_values=pixels).embeddings.numpy()
    assert cosine(via_proc, model.embed_images([img]))[0] > 0.99

    # unchanged inputs: nothing redone; changed weights: republished
    m2 = stage.run(PublishConfig(run=tmp_path / "run", output=folder))
    assert m2.up_to_date and not m1.up_to_date
    make_run(tmp_path / "run", identity, seed=9)
    m3 = stage.run(PublishConfig(run=tmp_path / "run", output=folder))
    assert not m3.up_to_date
    assert not list(tmp_path.glob(".tmp-*")) and not list(folder.glob(".tmp-*"))

    # never replace a folder that is not a published model
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SbeError, match="not a published model"):
        publish(tmp_path / "run", other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(SbeError, match=r"no trained run in .*: pass --run DIR or run `sbe train`"):
        publish(tmp_path / "nowhere", tmp_path / "m4")


def test_sibling_folders_published_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Publishing ``m`` while ``m2`` is being built must not touch ``m2``'s temporary folder."""
    from sbe.stages import publish as stage

    identity = hf_identity(tiny_dinov2(tmp_path / "dino"))
    make_run(tmp_path / "run", identity)
    real_write = stage.write_folder
    calls: list[Path] = []

    def write_then_publish_sibling(dest: Path, **kw: object) -> None:
        real_write(dest, **kw)  # type: ignore[arg-type]
        calls.append(dest)
        if len(calls) == 1:  # m2's build is on disk, not yet verified: publish m meanwhile
            publish(tmp_path / "run", tmp_path / "m")

    monkeypatch.setattr(stage, "write_folder", write_then_publish_sibling)
    publish(tmp_path / "run", tmp_path / "m2")
    for name in ("m", "m2"):
        folder = tmp_path / name
        assert (folder / "_manifest.json").is_file() and (folder / "model.safetensors").is_file()
        assert not list(folder.glob(".tmp-*"))
        load_embedder(folder, "cpu")
    assert not list(tmp_path.glob(".tmp-*"))


def test_licences() -> None:
    assert backbone_licence("efficientnet-lite0").spdx == "apache-2.0"
    assert backbone_licence("hf:facebook/dinov2-base").spdx == "apache-2.0"
    dinov3 = backbone_licence("hf:facebook/dinov3-vit7b16-pretrain-lvd1689m")
    assert dinov3.spdx == "other" and "gated" in dinov3.text
    from sbe.models.published.card import CardInfo

    info = CardInfo(name="m", backbone={"name": "efficientnet-lite0"}, projector={})
    assert model_licence(CardInfo(**{**info.__dict__, "data_sources": ["synthetic"]})) == (
        "apache-2.0"
    )
    assert model_licence(CardInfo(**{**info.__dict__, "data_sources": ["streetview"]})) == "other"
    assert model_licence(info) == "other"  # unknown data: assume the restrictive licence
    with_osm = CardInfo(**{**info.__dict__, "data_sources": ["osm_footprints", "synthetic"]})
    assert model_licence(with_osm) == "odbl"
    mixed = CardInfo(**{**info.__dict__, "data_sources": ["osm_footprints", "mapillary"]})
    assert model_licence(mixed) == "other"
    card = render_card(CardInfo(**{**info.__dict__, "data_sources": ["mapillary", "webdataset"]}))
    assert "CC BY-SA 4.0" in card and "`webdataset` data: its licence is not recorded" in card


def test_geo_heads_ship_with_the_model(tmp_path: Path) -> None:
    from sbe.geo.heads import GeoHeads, GeoHeadsConfig

    dino = tiny_dinov2(tmp_path / "dino")
    identity = hf_identity(dino)
    make_run(tmp_path / "run", identity)
    geo_dir = tmp_path / "geo"
    torch.manual_seed(0)
    heads = GeoHeads(
        GeoHeadsConfig(
            in_dim=32, hidden_dim=16, num_centres=8, num_data_centres=4, backbone=identity
        )
    )
    heads.save_pretrained(geo_dir)
    metrics = {"test": {"model": {"location": {"median_km": 123.4, "acc_200km": 0.4567}}}}
    (geo_dir / "metrics.json").write_text(json.dumps(metrics))
    folder = publish(tmp_path / "run", tmp_path / "model", geo=geo_dir)
    assert (folder / "geo" / "model.safetensors").is_file()
    card = (folder / "README.md").read_text()
    assert "123.4" in card and "0.4567" in card
    emb = load_embedder(folder, "cpu")
    assert emb.identity()["geo"] is True
    data = [jpeg(np.random.default_rng(2)) for _ in range(3)]
    pred = predict_geo(emb, data, top_k=2)
    assert pred.modes.lat.shape == (3, 2)
    assert np.all(np.abs(pred.modes.lat) <= 90)
    # the same features through the heads directly give the same answer
    x = torch.nn.functional.normalize(
        emb.model(
            pixel_values=emb.model.normalize_uint8(np.stack([emb.decode(d) for d in data]))
        ).backbone_embeddings,
        dim=-1,
    )
    direct = GeoHeads.from_pretrained(geo_dir).predict(x, top_k=2)
    np.testing.assert_allclose(pred.modes.lat, direct.modes.lat, atol=1e-6)

    # heads trained on another backbone are refused
    other = GeoHeads(
        GeoHeadsConfig(
            in_dim=1280, num_centres=4, num_data_centres=2, backbone={"name": "x", "dim": 1280}
        )
    )
    other.save_pretrained(tmp_path / "geo2")
    with pytest.raises(SbeError, match="trained on backbone"):
        publish(tmp_path / "run", tmp_path / "model2", geo=tmp_path / "geo2")


def test_embedder_api_inputs_and_failures(tmp_path: Path, landmarks_dir: Path) -> None:
    from PIL import Image

    from sbe.data.images import ImageDecodeError

    dino = tiny_dinov2(tmp_path / "dino")
    make_run(tmp_path / "run", hf_identity(dino))
    emb = load_embedder(publish(tmp_path / "run", tmp_path / "model"), "cpu")
    path = sorted(landmarks_dir.rglob("*.jpg"))[3]
    data = path.read_bytes()
    pil = Image.open(io.BytesIO(data))
    vecs = emb.embed_images([path, str(path), data, pil])
    assert vecs.shape == (4, 16) and vecs.dtype == np.float32
    # bytes and paths decode identically; a full-size PIL image differs only by draft decoding
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-6)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert cosine(vecs[0], vecs[3]) > 0.99

    good, failures = emb.embed_bytes([data, b"not a jpeg", None, b"", data[: len(data) // 3], data])
    assert [p for p, _ in failures] == [1, 2, 3, 4]
    assert good.shape == (2, 16)
    np.testing.assert_allclose(good[1], vecs[0], atol=1e-6)
    with pytest.raises(ImageDecodeError, match="image 1"):
        emb.embed_images([data, b"junk"])
    assert emb.embed_images([]).shape == (0, 16)
    ident = emb.identity()
    assert ident["dim"] == 16 and ident["backbone"]["name"].startswith("hf:")
    assert len(ident["fingerprint"]) == 32


def test_cli_publish(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sbe.cli import app

    dino = tiny_dinov2(tmp_path / "dino")
    make_run(tmp_path / "run", hf_identity(dino))
    args = ["publish", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m"), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["stage"] == "publish" and not out["up_to_date"]
    assert out["extra"]["head_max_abs_diff"] <= 1e-5
    assert json.loads(CliRunner().invoke(app, args).output)["up_to_date"]


def _set_val(run_dir: Path, head: float, backbone: float) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    run["best_val_map@r"] = head
    run["val_baseline"] = {"map@r": backbone, "recall@1": 0.5, "queries": 10}
    (run_dir / "run.json").write_text(json.dumps(run))


def test_publish_refuses_a_head_below_the_backbone_unless_forced(tmp_path: Path) -> None:
    from sbe.config import PublishConfig
    from sbe.stages import publish as stage

    make_run(tmp_path / "run", efficientnet_identity())
    _set_val(tmp_path / "run", head=0.40, backbone=0.45)
    with pytest.raises(
        SbeError,
        match=r"run: the trained head is below the raw backbone .*0\.4000 < 0\.4500.*--force",
    ):
        stage.run(PublishConfig(run=tmp_path / "run", output=tmp_path / "model"))
    assert not (tmp_path / "model" / "README.md").exists()
    m = stage.run(PublishConfig(run=tmp_path / "run", output=tmp_path / "model", force=True))
    card = (tmp_path / "model" / "README.md").read_text()
    assert "**Warning: the head is below the raw backbone on validation** (0.4000 < 0.4500)" in card
    assert "published with `--force`" in card
    assert m.extra["val_vs_backbone"]["forced"] is True
    # a head above the backbone publishes without --force and says so plainly
    _set_val(tmp_path / "run", head=0.60, backbone=0.45)
    stage.run(PublishConfig(run=tmp_path / "run", output=tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text()
    assert "the selected head reaches mAP@R 0.6000, the raw backbone 0.4500" in card
    assert "Warning" not in card


def _manifest(folder: Path, stage: str, inputs: list[Path], extra: dict | None = None) -> None:
    from sbe.storage import InputFingerprint, Manifest, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    fps = [InputFingerprint(path=str(p), size=1, mtime_ns=0) for p in inputs]
    write_manifest(folder, Manifest(stage=stage, inputs=fps, extra=extra or {}))


def test_card_data_lines_follow_the_inputs(tmp_path: Path) -> None:
    """Footprint labels, Mapillary metadata, tars and own images each give their own line."""
    from sbe.stages.publish import data_sources

    w = tmp_path
    # own images (no tars) -> label with OSM footprints -> backbone -> split
    _manifest(w / "images", "ingest", [w / "photos" / "a.jpg"])
    _manifest(
        w / "labelled",
        "label",
        [w / "images" / "a.parquet", w / "osm" / "b.parquet"],
        {"data_sources": ["mapillary", "osm_footprints"]},
    )
    _manifest(w / "backbone", "backbone", [w / "labelled" / "a.parquet"])
    _manifest(w / "split", "split", [w / "backbone" / "a-0.parquet"])
    assert data_sources(w / "split") == ["mapillary", "osm_footprints", "own_images"]
    # 3D Street View tars
    _manifest(w / "i2", "ingest", [w / "tars" / "0001.tar"])
    _manifest(w / "s2", "split", [w / "i2" / "x.parquet"])
    assert data_sources(w / "s2") == ["streetview"]
    # an ingest that declares what it read is believed
    _manifest(w / "i3", "ingest", [w / "shards" / "0.tar"], {"data_sources": ["webdataset"]})
    _manifest(w / "s3", "split", [w / "i3" / "x.parquet"])
    assert data_sources(w / "s3") == ["webdataset"]


def test_train_says_when_the_head_is_below_the_backbone() -> None:
    from sbe.stages.train import _val_versus_backbone

    below = _val_versus_backbone(0.41, {"map@r": 0.45, "recall@1": 0.6})
    assert below == {"head_map@r": 0.41, "backbone_map@r": 0.45, "head_below_backbone": True}
    assert not _val_versus_backbone(0.5, {"map@r": 0.45})["head_below_backbone"]
    assert _val_versus_backbone(0.5, None)["backbone_map@r"] is None


def test_publish_carries_the_calibration_and_the_card_states_it(tmp_path: Path) -> None:
    from verifytoy import calibrate_run

    from sbe.verify.calibration import Calibration

    dino = tiny_dinov2(tmp_path / "dino")
    run = tmp_path / "run"
    make_run(run, hf_identity(dino))
    out = publish(run, tmp_path / "m0")
    assert not (out / "calibration.json").exists()  # nothing evaluated yet
    assert '"Same building?"' not in (out / "README.md").read_text()
    summary = calibrate_run(run)["calibration"]
    out = publish(run, tmp_path / "m")
    copied = out / "calibration.json"
    assert copied.read_bytes() == (run / "evaluate" / "calibration.json").read_bytes()
    cal = Calibration.load(copied)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert "calibration.json" in manifest["outputs"]
    assert manifest["extra"]["calibration"]["test"] == summary["test"]
    card = (out / "README.md").read_text()
    assert '## "Same building?"' in card
    sim = summary["similarity_threshold"]
    assert f"at least **{sim:.4f}**" in card
    assert f"| precision | {summary['test']['precision']:.3f} |" in card
    assert f"| recall | {summary['test']['recall']:.3f} |" in card
    low, high = summary["test"]["precision_ci95"]
    assert f"| precision, 95 % Wilson interval | {low:.3f} - {high:.3f} |" in card
    assert "precision of **0.950**" in card
    # the decision the card states is the one the file makes
    assert cal.same(sim + 1e-4)[0] and not cal.same(sim - 1e-4)[0]
    printed = _cli_publish(run, out)
    assert f"calibration.json: same building? at cosine >= {sim:.4f}" in printed
    # another calibration: publish is no longer up to date and carries the new one
    calibrate_run(run, target_precision=0.8)
    publish(run, out)
    assert Calibration.load(copied).target_precision == 0.8
    assert "precision of **0.800**" in (out / "README.md").read_text()
    # an evaluation without calibration: the file leaves the model too
    calibrate_run(run, calibrate=False)
    publish(run, out)
    assert not copied.exists() and '"Same building?"' not in (out / "README.md").read_text()
    assert "no calibration in the run" in _cli_publish(run, out)


def _cli_publish(run: Path, out: Path) -> str:
    from typer.testing import CliRunner

    from sbe.cli import app

    args = ["publish", "--run", str(run), "--out", str(out)]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


def test_publish_refuses_a_malformed_calibration(tmp_path: Path) -> None:
    from verifytoy import calibrate_run

    dino = tiny_dinov2(tmp_path / "dino")
    run = tmp_path / "run"
    make_run(run, hf_identity(dino))
    calibrate_run(run)
    (run / "evaluate" / "calibration.json").write_text("{not json")
    with pytest.raises(SbeError, match=r"calibration\.json is not readable JSON") as e:
        publish(run, tmp_path / "m")
    assert "\n" not in str(e.value)


def test_card_states_each_calibration_once() -> None:
    from sbe.models.published.card import _calibration_lines

    never = "\n".join(_calibration_lines({"threshold": None, "target_precision": 0.99}))
    assert "never calls two photos the same building" in never
    assert "n/a" not in never and "at least" not in never
    by_prob = "\n".join(
        _calibration_lines({"threshold": 0.7, "target_precision": 0.95, "fit": {"precision": 0.95}})
    )
    assert by_prob.count("at least 0.700") == 1 and "cosine" not in by_prob
    by_cos = "\n".join(
        _calibration_lines(
            {"threshold": 0.7, "similarity_threshold": 0.43, "target_precision": 0.95}
        )
    )
    assert "cosine similarity of their embeddings is at least **0.4300**" in by_cos
    assert by_cos.count("0.700") == 1
