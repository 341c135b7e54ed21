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

LITE_PREPROCESS = {
    "resize": 224,
    "crop": 224,
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
    "resize_mode": "short_side",
    "resample": "bilinear",
}
IMAGENET_PREPROCESS = {
    "resize": 32,
    "crop": 28,
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "resize_mode": "short_side",
    "resample": "bilinear",
}


def efficientnet_identity() -> dict[str, Any]:
    return {
        "name": "efficientnet-lite0",
        "dim": 1280,
        "preprocess": dict(LITE_PREPROCESS),
        "pooling": "mean",
    }


def tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer DINOv2 (hidden 32, 28 px input) saved with save_pretrained."""
    from transformers import Dinov2Config, Dinov2Model

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
    return folder


def hf_identity(path: Path, pooling: str = "cls") -> dict[str, Any]:
    return {
        "name": f"hf:{path}",
        "dim": 32,
        "preprocess": dict(IMAGENET_PREPROCESS),
        "pooling": pooling,
    }


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
    run = {
        "backbone": backbone,
        "best_epoch": 3,
        "best_score": 0.8125,
        "select_on": "recall@1",
        "test_metrics": {"recall@1": 0.7431, "recall@5": 0.9012, "map": 0.6518},
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
