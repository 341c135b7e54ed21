"""Backbone vs projector, on the same queries: a split of the pipeline and a folder of real photos.

Both comparisons rank by cosine similarity with the query excluded from its gallery (see
:mod:`sbe.training.metrics`); the raw backbone embedding and the projector output are scored on
exactly the same queries and gallery.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbe.data.images import ImageDecodeError, decode_rgb
from sbe.errors import SbeError
from sbe.models.backbones.base import Backbone
from sbe.models.projector import Projector
from sbe.storage.lineage import BackboneIdentity
from sbe.training.data import EmbeddingSet
from sbe.training.metrics import eligible_queries, retrieval_metrics

DEFAULT_KS = (1, 5, 10, 100)


def compare_on_split(
    projector: Projector,
    data: EmbeddingSet,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Recall@K and mAP@R of the raw backbone and of the projector on one split.

    Queries are every image whose identity has at least two images in the split; the gallery is
    the whole split (singletons included as distractors).

    Returns:
        ``{"images", "identities", "queries", "backbone": {...}, "projector": {...}}``.
    """
    queries = eligible_queries(data.building_ids)
    raw = retrieval_metrics(data.embeddings, data.building_ids, queries, ks, device=device)
    projector = projector.to(device)
    z = projector.project(data.embeddings.numpy())
    proj = retrieval_metrics(z, data.building_ids, queries, ks, device=device)
    return {
        "images": len(data),
        "identities": len(np.unique(data.building_ids)),
        "queries": int(raw.pop("queries")),
        "backbone": raw,
        "projector": {k: v for k, v in proj.items() if k != "queries"},
    }


def backbone_from_identity(
    identity: BackboneIdentity | dict[str, Any], device: str = "cpu"
) -> Backbone:
    """Rebuild the backbone that produced a run's inputs from its saved identity.

    Uses :func:`sbe.models.backbones.load_backbone`.

    Args:
        identity: the run's :class:`~sbe.storage.lineage.BackboneIdentity` (or its dict form).
        device: where to run it.

    Raises:
        SbeError: the identity names a backbone that cannot be rebuilt here.
    """
    if isinstance(identity, BackboneIdentity):
        identity = identity.to_dict()
    from sbe.models.backbones import load_backbone

    return load_backbone(identity, device=device)


def read_landmarks(directory: str | os.PathLike[str]) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images and labels of a landmarks folder (``labels.csv`` with ``path`` and ``landmark``).

    Returns:
        ``(paths, labels int64 (N,), landmark names by label)``.
    """
    directory = Path(directory)
    table = directory / "labels.csv"
    if not table.is_file():
        raise SbeError(f"{table} not found (expected columns path, landmark)")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = sorted({r["landmark"] for r in rows})
    paths = [directory / r["path"] for r in rows]
    labels = np.array([names.index(r["landmark"]) for r in rows], dtype=np.int64)
    return paths, labels, names


def embed_images(backbone: Backbone, paths: list[Path], batch_size: int = 16) -> np.ndarray:
    """Backbone embeddings (N, dim) float32 of image files (decoded at reduced JPEG scale)."""
    p = backbone.preprocess
    out = []
    for s in range(0, len(paths), batch_size):
        imgs = []
        for path in paths[s : s + batch_size]:
            try:
                imgs.append(decode_rgb(path.read_bytes(), min_side=p.resize))
            except ImageDecodeError as e:
                raise SbeError(f"cannot decode {path}: {e}") from None
        out.append(backbone.embed_pil(imgs))
    return np.concatenate(out).astype(np.float32)


def _loo(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    m = retrieval_metrics(x, labels, ks=(1,), full_map=True)
    n = int(m["queries"])
    return {
        "p@1": m["recall@1"],
        "correct@1": round(m["recall@1"] * n),
        "map": m["map"],
        "map@r": m["map@r"],
    }


def landmarks_check(
    directory: str | os.PathLike[str],
    backbone: Backbone,
    projector: Projector,
    *,
    cached_embeddings: np.ndarray | None = None,
) -> dict[str, Any]:
    """Leave-one-out retrieval on real photos: backbone vs projector.

    Every photo is a query against all the others; P@1 (= Recall@1) and mAP over the full
    ranking, plus mAP@R.

    Args:
        directory: folder with ``labels.csv`` and the images.
        backbone: the backbone the projector was trained on (same identity).
        projector: the trained head.
        cached_embeddings: backbone embeddings of the photos, if already computed.

    Returns:
        ``{"images", "landmarks", "backbone": {...}, "projector": {...}, "lost", "gained"}`` where
        ``lost``/``gained`` count queries whose top-1 turned wrong/right with the projector.
    """
    paths, labels, names = read_landmarks(directory)
    x = embed_images(backbone, paths) if cached_embeddings is None else cached_embeddings
    z = projector.project(x)
    top_raw = _top1_correct(x, labels)
    top_proj = _top1_correct(z, labels)
    return {
        "images": len(paths),
        "landmarks": len(names),
        "backbone": _loo(x, labels),
        "projector": _loo(z, labels),
        "lost": int((top_raw & ~top_proj).sum()),
        "gained": int((~top_raw & top_proj).sum()),
    }


def _top1_correct(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return labels[sims.argmax(1)] == labels


_REPO_ROOT = Path(__file__).resolve().parents[3]


def default_landmarks_dir() -> Path | None:
    """``$SBE_LANDMARKS``, else ``../shared/data/landmarks-mini`` beside the repository.

    ``SBE_LANDMARKS=`` (set, empty) means none: runs as on a fresh clone without ``../shared``.
    """
    env = os.environ.get("SBE_LANDMARKS")
    if env == "":
        return None
    candidates = [Path(env)] if env else []
    candidates.append(_REPO_ROOT.parent / "shared" / "data" / "landmarks-mini")
    for c in candidates:
        if (c / "labels.csv").is_file():
            return c
    return None
