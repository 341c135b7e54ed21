"""Helpers (no tests) shared by the publish / embed / aggregate / Ray tests: tiny models, training
runs, published folders and packaged parquets, all generated in temp dirs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from sbe.config import PublishConfig
from sbe.models.projector import Projector, ProjectorConfig


def efficientnet_identity() -> dict[str, Any]:
    """The identity the backbone stage records for EfficientNet-Lite0."""
    from sbe.models.backbones import resolve_spec

    return resolve_spec("efficientnet-lite0").identity()


def tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer DINOv2 (hidden 32, 28 px input) saved with save_pretrained,
    plus a processor config (short side 32, centre crop 28, ImageNet mean/std)."""
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
    )
    Dinov2Model(cfg).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "BitImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": 32},
                "resample": 2,
                "do_center_crop": True,
                "crop_size": {"height": 28, "width": 28},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
            }
        )
    )
    return folder


def hf_identity(path: Path, pooling: str = "auto") -> dict[str, Any]:
    """The identity the backbone stage records for ``hf:<path>``."""
    from sbe.models.backbones import resolve_spec

    return resolve_spec(f"hf:{path}", pooling=pooling).identity()


def make_run(
    run_dir: Path,
    backbone: dict[str, Any],
    *,
    output_dim: int = 16,
    hidden_dim: int = 24,
    num_hidden_layers: int = 1,
    layer_norm: bool = True,
    dropout: float = 0.1,
    seed: int = 0,
) -> Projector:
    """A fake finished training run: ``best/`` projector with random weights + ``run.json``."""
    torch.manual_seed(seed)
    proj = Projector(
        ProjectorConfig(
            input_dim=backbone["dim"],
            output_dim=output_dim,
            hidden_dim=hidden_dim,
            num_hidden_layers=num_hidden_layers,
            layer_norm=layer_norm,
            dropout=dropout,
        )
    )
    with torch.no_grad():  # LayerNorm starts at identity; perturb so a wrong key would show
        for p in proj.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    proj.eval().save_pretrained(run_dir / "best")
    # the layout sbe train writes
    run = {
        "config": {"output_dim": output_dim},
        "backbone": backbone,
        "input": str(run_dir / "split"),
        "projector": proj.config.model_dump(),
        "best_epoch": 3,
        "best_val_map@r": 0.8125,
        "epochs_completed": 5,
        "stopped_early": False,
        "test": {
            "queries": 40,
            "images": 120,
            "backbone": {"recall@1": 0.5517, "map@r": 0.4021},
            "projector": {"recall@1": 0.7431, "map@r": 0.6518},
        },
    }
    (run_dir / "run.json").write_text(json.dumps(run))
    return proj


def publish(run_dir: Path, out: Path, **kw: Any) -> Path:
    from sbe.stages import publish as publish_stage

    publish_stage.run(PublishConfig(run=run_dir, output=out, **kw))
    return out


def jpeg(rng: np.random.Generator, size: int = 40, quality: int = 85) -> bytes:
    """A small random JPEG: smooth colour blobs, so every image is distinct."""
    base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size + 8), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def packaged_parquet(
    path: Path,
    n: int,
    *,
    seed: int = 0,
    osmid: str = "int64",
    bad: dict[int, bytes | None] | None = None,
    is_valid: list[bool | None] | None = None,
    row_group_size: int | None = None,
    images_per_building: int = 3,
    size: int = 40,
    locations: bool = False,
) -> Path:
    """A packaged input parquet: image_bytes, OSMID (int64 or string), optional is_valid/lat/lon.

    ``bad`` maps row index -> bytes (corrupt) or None (null) to plant failures.
    """
    rng = np.random.default_rng(seed)
    images: list[bytes | None] = [jpeg(rng, size) for _ in range(n)]
    for i, b in (bad or {}).items():
        images[i] = b
    ids = np.arange(n) // images_per_building + 1000
    cols: dict[str, Any] = {
        "image_bytes": pa.array(images, pa.binary()),
        "OSMID": pa.array(ids, pa.int64())
        if osmid == "int64"
        else pa.array([f"way/{i}" for i in ids], pa.string()),
    }
    if is_valid is not None:
        cols["is_valid"] = pa.array(is_valid, pa.bool_())
    if locations:
        b = ids - 1000
        cols["lat"] = pa.array(45.0 + 0.001 * b, pa.float64())
        cols["lon"] = pa.array(-73.5 - 0.001 * b, pa.float64())
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size or n or 1)
    return path


def make_tiny_model(root: Path) -> Path:
    """A published model on a tiny random DINOv2 (16-d embeddings): fast enough for any test."""
    dino = tiny_dinov2(root / "dino")
    make_run(root / "run", hf_identity(dino))
    return publish(root / "run", root / "model")
