"""Generated split and neighbour files for tests, benchmarks and development.

Identities are Gaussian clusters in D dimensions, hidden under large *nuisance* directions shared
by all identities (think lighting and viewpoint) and a common offset, so raw cosine similarity is
dominated by nuisance and a learned projection that removes it clearly beats it. Identities come
in *families* (similar-looking buildings), which gives the neighbour table hard negatives.

The files follow ``split_schema`` / ``neighbors_schema`` exactly (columns that training does not
read are filled with zeros), so the training stage reads them like real pipeline output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from sbe.storage import Manifest, fixed_size_list, write_manifest, write_part
from sbe.storage.schemas import FINGERPRINT_DIM, SPLITS, neighbors_schema, split_schema


@dataclass(frozen=True)
class ToySpec:
    """Shape of a generated world.

    Attributes:
        identities: number of identities (buildings).
        dim: embedding size D.
        min_images, max_images: images per identity, uniform in this range (1 = singletons).
        families: identities per family share a centre (hard negatives).
        identity_dims: rank of the subspace identities vary in.
        nuisance_dims: rank of the shared nuisance subspace.
        nuisance_scale: nuisance size relative to the identity signal.
        family_spread: distance of an identity from its family centre (relative).
        noise: isotropic noise per coordinate (relative).
        seed: everything is a function of it.
    """

    identities: int = 300
    dim: int = 64
    min_images: int = 1
    max_images: int = 6
    families: int = 30
    identity_dims: int = 16
    nuisance_dims: int = 8
    nuisance_scale: float = 3.0
    family_spread: float = 0.6
    noise: float = 0.15
    seed: int = 0


def make_embeddings(spec: ToySpec) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``(embeddings float32 (N, D), building_ids int64 (N,))``, rows in random order."""
    if spec.identity_dims + spec.nuisance_dims > spec.dim:
        raise ValueError("identity_dims + nuisance_dims must not exceed dim")
    rng = np.random.default_rng(spec.seed)
    basis, _ = np.linalg.qr(rng.standard_normal((spec.dim, spec.dim)))
    id_basis = basis[:, : spec.identity_dims]
    nu_basis = basis[:, spec.identity_dims : spec.identity_dims + spec.nuisance_dims]
    fam = rng.standard_normal((spec.families, spec.identity_dims))
    fam_of = rng.integers(0, spec.families, size=spec.identities)
    centres = fam[fam_of] + spec.family_spread * rng.standard_normal(
        (spec.identities, spec.identity_dims)
    )
    n_img = rng.integers(spec.min_images, spec.max_images + 1, size=spec.identities)
    owner = np.repeat(np.arange(spec.identities), n_img)
    n = len(owner)
    signal = centres[owner] @ id_basis.T
    nuisance = spec.nuisance_scale * rng.standard_normal((n, spec.nuisance_dims)) @ nu_basis.T
    offset = 2.0 * rng.standard_normal(spec.dim)
    x = offset + signal + nuisance + spec.noise * rng.standard_normal((n, spec.dim))
    perm = rng.permutation(n)
    ids = (1_000_000 + owner[perm]).astype(np.int64)
    return x[perm].astype(np.float32), ids


def band_neighbors(
    embeddings: np.ndarray,
    building_ids: np.ndarray,
    k: int = 20,
    k0: int = 10,
    percentiles: tuple[float, ...] = (5, 10, 20, 40, 60, 85),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k nearest other-identity neighbours (faiss, L2 on unit rows) with difficulty bands.

    A neighbour's band is the position of ``distance / L(anchor)`` among the percentiles of all
    such ratios, where ``L`` is the distance to the anchor's ``k0``-th neighbour (band 0 = the
    closest, hardest).

    Returns:
        ``(rows int32 (N, k), distance float16 (N, k), band int8 (N, k))``, padded with -1.
    """
    x = embeddings.astype(np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    n = len(x)
    extra = min(n, k + 1 + int(np.bincount(np.unique(building_ids, return_inverse=True)[1]).max()))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, idx = index.search(x, extra)
    dist = np.sqrt(np.maximum(dist, 0))
    keep = (idx >= 0) & (building_ids[np.maximum(idx, 0)] != building_ids[:, None])
    # stable compaction of the kept neighbours to the left
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    rows = np.take_along_axis(idx, order, axis=1)
    d = np.take_along_axis(dist, order, axis=1)
    valid = np.take_along_axis(keep, order, axis=1)
    rows = np.where(valid, rows, -1).astype(np.int32)
    kk = min(k0, k) - 1
    scale = np.where(valid[:, kk], d[:, kk], np.nan)
    scale = np.where(
        np.isfinite(scale) & (scale > 0), scale, np.nanmax(d[valid]) if valid.any() else 1.0
    )
    ratio = d / scale[:, None]
    edges = np.percentile(ratio[valid], percentiles) if valid.any() else np.zeros(len(percentiles))
    band = np.searchsorted(edges, ratio, side="right").astype(np.int8)
    band = np.where(valid, band, -1).astype(np.int8)
    d = np.where(valid, d, -1).astype(np.float16)
    return rows, d, band


def _split_table(emb: np.ndarray, ids: np.ndarray) -> pa.Table:
    schema = split_schema(emb.shape[1])
    n = len(ids)
    cols: dict[str, pa.Array] = {}
    for f in schema:
        if f.name == "building_id":
            cols[f.name] = pa.array(ids, pa.int64())
        elif f.name in ("image_id", "patch_id"):
            cols[f.name] = pa.array(np.arange(n, dtype=np.int64))
        elif f.name == "target_uid" or f.name == "target_id":
            cols[f.name] = pa.array(ids, pa.int64())
        elif f.name == "embedding":
            cols[f.name] = fixed_size_list(emb.astype(np.float16))
        elif f.name == "fingerprint":
            cols[f.name] = fixed_size_list(np.zeros((n, FINGERPRINT_DIM), np.uint8))
        elif f.name == "capture_date":
            cols[f.name] = pa.nulls(n, pa.date32())
        elif f.name == "tar_file":
            cols[f.name] = pa.array(["toy.tar"] * n)
        else:
            cols[f.name] = (
                pa.array(np.zeros(n), f.type)
                if pa.types.is_floating(f.type)
                else pa.array(np.zeros(n, np.int64), f.type)
            )
    return pa.table(cols, schema=schema)


def write_toy_dataset(
    split_dir: str | os.PathLike[str],
    neighbors_dir: str | os.PathLike[str] | None,
    spec: ToySpec,
    *,
    k: int = 20,
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> dict[str, int]:
    """Write ``split_dir/{train,val,test}.parquet`` (+ neighbour files) for a generated world.

    Identities are split by the given ratios (whole identities per split). Returns rows per split.
    """
    emb, ids = make_embeddings(spec)
    uniq = np.unique(ids)
    rng = np.random.default_rng(spec.seed + 1)
    shuffled = rng.permutation(uniq)
    cut1 = round(ratios[0] * len(uniq))
    cut2 = cut1 + round(ratios[1] * len(uniq))
    parts = {"train": shuffled[:cut1], "val": shuffled[cut1:cut2], "test": shuffled[cut2:]}
    identity = {"name": "toy", "dim": spec.dim, "seed": spec.seed}
    split_dir = Path(split_dir)
    rows: dict[str, int] = {}
    for split in SPLITS:
        mask = np.isin(ids, parts[split])
        e, i = emb[mask], ids[mask]
        write_part(_split_table(e, i), split_dir / f"{split}.parquet", {"backbone": identity})
        rows[split] = int(mask.sum())
        if neighbors_dir is not None:
            nr, nd, nb = band_neighbors(e, i, k=k, k0=max(1, k // 2))
            table = pa.table(
                [fixed_size_list(nr), fixed_size_list(nd), fixed_size_list(nb)],
                schema=neighbors_schema(k),
            )
            write_part(table, Path(neighbors_dir) / f"{split}.parquet", {"split": split})
    write_manifest(
        split_dir, Manifest(stage="split", rows=rows, extra={"backbone": identity, "toy": True})
    )
    if neighbors_dir is not None:
        write_manifest(neighbors_dir, Manifest(stage="neighbors", rows=rows, extra={"k": k}))
    return rows


#: [train] settings of a seconds-long training run on toy data (tests of what wraps training)
TINY_TRAIN = {
    "neighbors": None,
    "epochs": 2,
    "hidden_dim": 16,
    "output_dim": 8,
    "identities_per_batch": 6,
    "images_per_identity": 2,
    "warmup_steps": 2,
    "min_steps_per_epoch": 3,
    "lr": 3e-3,
    "patience": 0,
    "log_every": 2,
    "val_queries": 50,
    "device": "cpu",
}
